//! Scratch directories of runs: `scratch/<fingerprint>/attempt-XXXXXX/` for each run attempt
//! (its output and task file), and `resume/`, which outlives failed and interrupted attempts
//! until the artifact is committed.

use std::path::PathBuf;

use super::{Store, StoreError};
use crate::hash::Fingerprint;

/// How the directory of each run attempt under `scratch/<fingerprint>/` begins.
const ATTEMPT_PREFIX: &str = "attempt-";

impl Store {
    /// Where the attempts of `fp` keep their checkpoints, from one attempt to the next until
    /// the artifact is committed (`$FLOW_RESUME`).
    pub fn resume_dir(&self, fp: &Fingerprint) -> PathBuf {
        self.scratch_dir(fp).join("resume")
    }

    /// Whether an earlier attempt of `fp` left its directory: it did not commit, so something
    /// of it may still run.
    pub fn has_attempts(&self, fp: &Fingerprint) -> bool {
        fs_err::read_dir(self.scratch_dir(fp)).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(ATTEMPT_PREFIX)))
        })
    }

    /// A new attempt's directory, `scratch/<fp>/attempt-XXXXXX/` with an empty `out/`, under a
    /// name no earlier attempt had: a process of an earlier attempt, however it survived,
    /// cannot write into this one's output. Earlier attempts' directories are removed; the
    /// caller has made sure nothing of those attempts still runs.
    pub fn fresh_attempt(&self, fp: &Fingerprint) -> Result<PathBuf, StoreError> {
        let scratch = self.scratch_dir(fp);
        // Made here, it holds no earlier attempt to remove: the common case needs no listing.
        match std::fs::create_dir(&scratch) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                for entry in fs_err::read_dir(&scratch)? {
                    let entry = entry?;
                    if entry.file_name().to_string_lossy().starts_with(ATTEMPT_PREFIX) {
                        self.remove_tree(&entry.path())?;
                    }
                }
            }
            Err(_) => fs_err::create_dir_all(&scratch)?,
        }
        let dir = tempfile::Builder::new().prefix(ATTEMPT_PREFIX).tempdir_in(&scratch)?.keep();
        fs_err::create_dir(dir.join("out"))?;
        Ok(dir)
    }

    /// Removes a run's scratch directory after its artifact was committed.
    pub fn clear_scratch(&self, fp: &Fingerprint) -> Result<(), StoreError> {
        self.remove_tree(&self.scratch_dir(fp))
    }
}
