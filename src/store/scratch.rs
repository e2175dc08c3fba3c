//! Scratch directories of runs: `scratch/<fingerprint>/attempt-XXXXXX/`, each run attempt's
//! output directory (a built-in kind's task file beside it, `attempt-XXXXXX.task.json`), and
//! `resume/`, which outlives failed and interrupted attempts until the artifact is committed.
//! A committed run's scratch directory leaves `scratch/` at once: reused for the next stage if it
//! holds nothing but an empty `resume/`, otherwise set aside in `tmp/` and removed when the
//! apply ends.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Store, StoreError};
use crate::hash::Fingerprint;

/// How the directory of each run attempt under `scratch/<fingerprint>/` begins.
const ATTEMPT_PREFIX: &str = "attempt-";

/// How the name of a committed run's scratch directory begins once it is set aside in `tmp/`.
const DISCARDED_PREFIX: &str = "discarded-";

/// How the name of an empty scratch directory kept for reuse begins (in `tmp/`).
const SPARE_PREFIX: &str = "spare-";

/// Numbers this process's directories in `tmp/`; the pid tells processes apart.
static ASIDE: AtomicU64 = AtomicU64::new(0);

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

    /// A new attempt's empty output directory, `scratch/<fp>/attempt-XXXXXX/`, under a name no
    /// earlier attempt had: a process of an earlier attempt, however it survived, cannot write
    /// into this one's output. Earlier attempts' directories and task files are removed; the
    /// caller has made sure nothing of those attempts still runs.
    pub fn fresh_attempt(&self, fp: &Fingerprint) -> Result<PathBuf, StoreError> {
        let scratch = self.scratch_dir(fp);
        // Made here, it holds no earlier attempt to remove: the common case needs no listing.
        match self.make_scratch(&scratch) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                for entry in fs_err::read_dir(&scratch)? {
                    let entry = entry?;
                    if !entry.file_name().to_string_lossy().starts_with(ATTEMPT_PREFIX) {
                        continue;
                    }
                    if entry.file_type()?.is_dir() {
                        self.remove_tree(&entry.path())?;
                    } else {
                        fs_err::remove_file(entry.path())?;
                    }
                }
            }
            Err(_) => fs_err::create_dir_all(&scratch)?,
        }
        Ok(tempfile::Builder::new().prefix(ATTEMPT_PREFIX).tempdir_in(&scratch)?.keep())
    }

    /// Makes `scratch`: a spare renamed into place (it comes with its empty `resume/`), else a
    /// new directory. `AlreadyExists` when an earlier attempt's directory is there.
    fn make_scratch(&self, scratch: &Path) -> std::io::Result<()> {
        loop {
            // Its own statement: a guard in a `while let` would be held through the body.
            let spare = self.spares.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some(spare) = spare else { break };
            match std::fs::rename(&spare, scratch) {
                Ok(()) => return Ok(()),
                Err(e) if matches!(e.kind(), ErrorKind::DirectoryNotEmpty | ErrorKind::AlreadyExists) => {
                    self.spares.lock().unwrap_or_else(PoisonError::into_inner).push(spare);
                    return Err(ErrorKind::AlreadyExists.into());
                }
                // Swept by another apply on this store: try the next.
                Err(_) => {}
            }
        }
        std::fs::create_dir(scratch)
    }

    /// Takes a run's scratch directory, resume state included, out of `scratch/` once its
    /// artifact is committed. Holding nothing but an empty `resume/`, it becomes a spare for
    /// the next stage's scratch directory; otherwise [`Store::sweep`] removes it when the apply
    /// is done. Each directory made costs, and freeing inodes while stages make them makes
    /// every later one slower on ext4 without a journal, which skips each recently freed inode
    /// in turn (docs/benchmarks.md).
    pub fn clear_scratch(&self, fp: &Fingerprint) -> Result<(), StoreError> {
        let scratch = self.scratch_dir(fp);
        let n = ASIDE.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join("tmp");
        if holds_only_an_empty_resume(&scratch) {
            let spare = tmp.join(format!("{SPARE_PREFIX}{}-{n}", std::process::id()));
            if std::fs::rename(&scratch, &spare).is_ok() {
                self.spares.lock().unwrap_or_else(PoisonError::into_inner).push(spare);
                return Ok(());
            }
        }
        let aside = tmp.join(format!("{DISCARDED_PREFIX}{}-{n}", std::process::id()));
        match std::fs::rename(&scratch, &aside) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // A directory a crashed process left under the same name.
            Err(_) => self.remove_tree(&scratch),
        }
    }

    /// Removes the scratch directories set aside and the spares of [`Store::clear_scratch`]:
    /// this process's, and those of any process that ended before it could.
    pub fn sweep(&self) -> Result<(), StoreError> {
        self.spares.lock().unwrap_or_else(PoisonError::into_inner).clear();
        for entry in fs_err::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(DISCARDED_PREFIX) || name.starts_with(SPARE_PREFIX) {
                self.remove_tree(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// Whether `scratch` holds exactly one entry, an empty `resume/` directory.
fn holds_only_an_empty_resume(scratch: &Path) -> bool {
    let Ok(mut entries) = std::fs::read_dir(scratch) else { return false };
    let only_resume = match (entries.next(), entries.next()) {
        (Some(Ok(entry)), None) => entry.file_name() == "resume" && entry.file_type().is_ok_and(|t| t.is_dir()),
        _ => false,
    };
    only_resume && std::fs::read_dir(scratch.join("resume")).is_ok_and(|mut r| r.next().is_none())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn fingerprint(n: u8) -> Fingerprint {
        Fingerprint::of(&n)
    }

    /// What a committed run leaves: its attempt directory moved to `artifacts/`, `resume/`.
    fn committed(store: &Store, fp: &Fingerprint, resume_file: bool) {
        let out = store.fresh_attempt(fp).unwrap();
        fs_err::create_dir_all(store.resume_dir(fp)).unwrap();
        if resume_file {
            fs_err::write(store.resume_dir(fp).join("checkpoint"), "step 7").unwrap();
        }
        fs_err::remove_dir(out).unwrap();
        store.clear_scratch(fp).unwrap();
        assert!(!store.scratch_dir(fp).exists());
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs_err::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_committed_runs_empty_scratch_directory_becomes_the_next_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        committed(&store, &fingerprint(1), false);
        let [spare] = names(&store.root.join("tmp")).try_into().unwrap();
        assert!(spare.starts_with(SPARE_PREFIX), "{spare}");
        let ino = fs_err::metadata(store.root.join("tmp").join(&spare)).unwrap().ino();
        let out = store.fresh_attempt(&fingerprint(2)).unwrap();
        assert_eq!(fs_err::metadata(store.scratch_dir(&fingerprint(2))).unwrap().ino(), ino);
        assert!(names(&store.resume_dir(&fingerprint(2))).is_empty());
        assert!(names(&out).is_empty());
        assert!(names(&store.root.join("tmp")).is_empty());
    }

    #[test]
    fn an_earlier_attempts_directory_is_kept_and_the_spare_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fp = fingerprint(2);
        let earlier = store.fresh_attempt(&fp).unwrap();
        fs_err::create_dir_all(store.resume_dir(&fp)).unwrap();
        fs_err::write(store.resume_dir(&fp).join("checkpoint"), "step 7").unwrap();
        committed(&store, &fingerprint(1), false);
        let out = store.fresh_attempt(&fp).unwrap();
        assert!(!earlier.exists(), "the earlier attempt's directory is removed");
        assert_eq!(names(&store.resume_dir(&fp)), ["checkpoint"]);
        assert_eq!(
            names(&store.scratch_dir(&fp)),
            [out.file_name().unwrap().to_string_lossy().into_owned(), "resume".into()]
        );
        assert_eq!(store.spares.lock().unwrap().len(), 1, "the spare is kept for the next stage");
    }

    #[test]
    fn resume_state_is_never_handed_on_and_the_sweep_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        committed(&store, &fingerprint(1), true);
        let [aside] = names(&store.root.join("tmp")).try_into().unwrap();
        assert!(aside.starts_with(DISCARDED_PREFIX), "{aside}");
        store.fresh_attempt(&fingerprint(2)).unwrap();
        assert!(!store.resume_dir(&fingerprint(2)).exists(), "a new scratch directory has no resume state");
        committed(&store, &fingerprint(3), false);
        assert_eq!(names(&store.root.join("tmp")).len(), 2);
        store.sweep().unwrap();
        assert!(names(&store.root.join("tmp")).is_empty());
        assert!(store.spares.lock().unwrap().is_empty());
    }
}
