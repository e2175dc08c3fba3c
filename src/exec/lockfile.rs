//! The lock file `<workflow>.lock` beside a workflow: per stage, the fingerprint, artifact
//! digest and full recipe of its last successful apply. Commit it to git: it explains what
//! changed (`flow plan`) and names exactly the artifacts a teammate should fetch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fingerprint::Recipe;
use crate::hash::{Digest, Fingerprint};

pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LockFile {
    pub version: u32,
    pub stages: BTreeMap<String, Locked>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Locked {
    pub fingerprint: Fingerprint,
    pub artifact: Digest,
    /// Upstream stage names by role, to explain which input changed.
    pub needs: BTreeMap<String, Vec<String>>,
    pub recipe: Recipe,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read lock file `{path}`")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("lock file `{path}` is not valid: {why}")]
    Parse { path: PathBuf, why: String },
    #[error("cannot write lock file `{path}`")]
    Write { path: PathBuf, source: std::io::Error },
}

/// `workflows/train.yaml` → `workflows/train.lock`.
pub fn path_for(workflow: &Path) -> PathBuf {
    workflow.with_extension("lock")
}

impl LockFile {
    /// Reads the lock file; a missing one is empty.
    pub fn read(path: &Path) -> Result<Self, LockError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self { version: LOCK_VERSION, ..Self::default() });
            }
            Err(source) => return Err(LockError::Read { path: path.to_owned(), source }),
        };
        let lock: LockFile = serde_json::from_slice(&bytes)
            .map_err(|e| LockError::Parse { path: path.to_owned(), why: e.to_string() })?;
        if lock.version != LOCK_VERSION {
            return Err(LockError::Parse {
                path: path.to_owned(),
                why: format!("version {} is not supported", lock.version),
            });
        }
        Ok(lock)
    }

    /// Writes atomically: a temp file beside it, then rename.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let err = |source| LockError::Write { path: path.to_owned(), source };
        let mut bytes = serde_json::to_vec_pretty(self).expect("lock files serialise");
        bytes.push(b'\n');
        if std::fs::read(path).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // Named after the lock file, so one left by a process killed between these lines is
        // recognisable (and ignorable) beside the workflow.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir).map_err(err)?;
        std::fs::write(tmp.path(), &bytes).map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fingerprint::FINGERPRINT_VERSION;

    /// A lock file of `n` stages whose fingerprints all carry `tag`.
    fn lock(n: usize, tag: u8) -> LockFile {
        let recipe = Recipe {
            v: FINGERPRINT_VERSION,
            kind: "command".into(),
            kind_version: 1,
            params: serde_json::json!({"tag": tag}),
            needs: BTreeMap::new(),
            inputs: BTreeMap::new(),
            command: Some("x".repeat(200)),
            env: BTreeMap::new(),
            salt: None,
            outputs: Vec::new(),
        };
        let locked = |i: usize| Locked {
            fingerprint: recipe.fingerprint(),
            artifact: Digest::of(&[tag, i as u8]),
            needs: BTreeMap::new(),
            recipe: recipe.clone(),
        };
        LockFile { version: LOCK_VERSION, stages: (0..n).map(|i| (format!("s{i}"), locked(i))).collect() }
    }

    /// A reader racing a writer sees either the old lock file or the new one, never a torn one.
    /// Writing these ~1.5 MB files with a plain `write` (truncate, then fill) fails this test.
    #[test]
    fn readers_never_see_a_partial_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wf.lock");
        let (a, b) = (lock(2000, 1), lock(2000, 2));
        let bytes = |lock: &LockFile| {
            let other = dir.path().join("other.lock");
            lock.write(&other).unwrap();
            std::fs::read(&other).and_then(|b| std::fs::remove_file(&other).map(|()| b)).unwrap()
        };
        let (bytes_a, bytes_b) = (bytes(&a), bytes(&b));
        a.write(&path).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let reads = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let seen = std::fs::read(&path).unwrap();
                    assert!(seen == bytes_a || seen == bytes_b, "a torn lock file of {} bytes", seen.len());
                    reads += 1;
                }
                reads
            });
            for round in 0..100 {
                (if round % 2 == 0 { &b } else { &a }).write(&path).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap()
        });
        assert!(reads > 0);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["wf.lock"], "no temporary file is left behind");
    }
}
