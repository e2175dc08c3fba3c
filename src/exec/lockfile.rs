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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self { version: LOCK_VERSION, ..Self::default() }),
            Err(source) => return Err(LockError::Read { path: path.to_owned(), source }),
        };
        let lock: LockFile =
            serde_json::from_slice(&bytes).map_err(|e| LockError::Parse { path: path.to_owned(), why: e.to_string() })?;
        if lock.version != LOCK_VERSION {
            return Err(LockError::Parse { path: path.to_owned(), why: format!("version {} is not supported", lock.version) });
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
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        std::fs::write(tmp.path(), &bytes).map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }
}
