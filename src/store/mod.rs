//! The artifact store ([`Store`]): content-addressed blobs, manifests and run records under one
//! root (default `cache/` at the project root), plus the local-only extras: materialised
//! read-only artifact trees, per-fingerprint run locks, scratch directories and logs.
//!
//! Layout (docs/store.md):
//! ```text
//! cas/<2 hex>/<64 hex>     blobs: file contents and manifests, by blake3; write-once
//! ac/<fingerprint>.json    run records; written last, create-if-absent
//! artifacts/<digest>/      materialised artifacts (hard links to blobs where modes agree)
//! locks/runs               per-fingerprint run locks: one byte each (released when a process dies)
//! scratch/<fingerprint>/   the working directory of a run: `attempt-XXXXXX/` per attempt
//!                          (its output; a task file beside it), `resume/` kept across attempts
//! logs/<fingerprint>.log   the output of the last run of a fingerprint
//! state/files.json         the stat cache of input file digests
//! state/remotes/<id>/<fp>  marks: the remote named <id> holds the record of <fp>
//! ```
//!
//! Records and manifests go through `object_store` (`LocalFileSystem` here, S3 for remotes),
//! whose create-if-absent puts give the write-once guarantee. Output files enter `cas/` as hard
//! links from the run's scratch directory, which is on the same filesystem, and that directory
//! becomes the artifact's tree: a 10 GB checkpoint is never copied. The write order blobs →
//! manifest → record means a crash at any point leaves no record that points at missing data.
//!
//! This file holds the store's layout, its errors and its locks; each other job has its file:
//! committing a run ([`commit`]), read-only artifact trees ([`tree`]), scratch directories of run
//! attempts ([`scratch`]), artifacts arriving from another tier ([`import`]), `flow verify`
//! ([`verify`]) and `flow gc` ([`gc`]). The shared tier is [`remote::Remote`], and [`tiered`]
//! puts the two together.

pub mod cas;
mod commit;
mod gc;
mod import;
pub mod manifest;
pub mod record;
pub mod remote;
mod scratch;
pub mod tiered;
mod tree;
pub mod trust;
mod verify;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

pub use commit::Provenance;
pub use gc::GcReport;
pub use import::Import;
pub use manifest::{Entry, Manifest, ManifestError};
pub use record::Record;
pub use tiered::{Hit, Published, Tiered};
pub use verify::VerifyReport;

use crate::hash::{Digest, Fingerprint};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("store I/O failed")]
    Io(#[from] io::Error),
    #[error("store object `{key}` could not be accessed")]
    Object {
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("store object `{key}` is corrupt: its content hashes to {actual}")]
    Corrupt { key: String, actual: Digest },
    #[error("store object `{key}` is missing")]
    Missing { key: String },
    #[error("run record `{key}` is invalid: {why}")]
    BadRecord { key: String, why: String },
    #[error("manifest `{key}` is invalid")]
    BadManifest {
        key: String,
        #[source]
        source: ManifestError,
    },
    #[error("{what} was interrupted")]
    Interrupted { what: String },
    #[error("run record `{key}` is not trusted: {why}")]
    Untrusted { key: String, why: String },
    #[error("remote `{url}` cannot be used: {why}")]
    BadRemote { url: String, why: String },
    #[error("stage output `{path}` is not allowed: {why}")]
    BadOutput { path: PathBuf, why: String },
}

/// A local artifact store rooted at a directory.
pub struct Store {
    root: PathBuf,
    objects: Arc<dyn ObjectStore>,
    /// Empty scratch directories this process can rename into place ([`scratch`]).
    spares: std::sync::Mutex<Vec<PathBuf>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

/// The file whose bytes are the run locks of fingerprints ([`Store::try_lock`]).
const RUN_LOCKS: &str = "runs";

/// The byte of [`RUN_LOCKS`] that is `fp`'s run lock: 63 bits of the fingerprint, so two
/// fingerprints share one (and wait for each other) with odds of 2⁻⁶³.
fn lock_offset(fp: &Fingerprint) -> i64 {
    let digest = fp.digest();
    i64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("32 bytes")) & i64::MAX
}

/// Holds a fingerprint's run lock until dropped.
pub struct RunLock {
    _file: std::fs::File,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for dir in ["cas", "ac", "artifacts", "locks", "scratch", "logs", "state", "tmp"] {
            fs_err::create_dir_all(root.join(dir))?;
        }
        let root = fs_err::canonicalize(root)?;
        let objects = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| StoreError::Object { key: root.display().to_string(), source: e })?;
        Ok(Self { root, objects: Arc::new(objects), spares: std::sync::Mutex::default() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn objects(&self) -> &dyn ObjectStore {
        self.objects.as_ref()
    }

    /// Where the blob `digest` lives (whether or not it is there).
    pub fn blob_file(&self, digest: &Digest) -> PathBuf {
        self.root.join("cas").join(digest.shard()).join(digest.hex())
    }

    pub fn artifact_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("artifacts").join(digest.hex())
    }

    pub fn scratch_dir(&self, fp: &Fingerprint) -> PathBuf {
        self.root.join("scratch").join(fp.to_string())
    }

    pub fn log_path(&self, fp: &Fingerprint) -> PathBuf {
        self.root.join("logs").join(format!("{fp}.log"))
    }

    /// Local bookkeeping: the stat cache, what remotes are known to hold.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn stat_cache_path(&self) -> PathBuf {
        self.state_dir().join("files.json")
    }

    /// The run record of `fp`, if any.
    ///
    /// Read straight from the file rather than through `object_store`, whose local backend
    /// hops to a blocking thread per call: a no-op apply of 10,000 stages does 10,000 of
    /// these. Writes still go through `object_store` for its create-if-absent semantics.
    pub async fn record(&self, fp: &Fingerprint) -> Result<Option<Record>, StoreError> {
        let key = cas::record_path(fp);
        let bytes = match std::fs::read(self.root.join(key.as_ref())) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io(e)),
        };
        Record::parse(&bytes, *fp).map(Some).map_err(|why| StoreError::BadRecord { key: key.to_string(), why })
    }

    /// Reads, verifies and validates the manifest of `artifact`.
    pub async fn manifest(&self, artifact: &Digest) -> Result<Manifest, StoreError> {
        let key = cas::blob_path(artifact).to_string();
        let bytes = cas::blob(self.objects(), artifact).await?.ok_or(StoreError::Missing { key: key.clone() })?;
        Manifest::parse(&bytes).map_err(|source| StoreError::BadManifest { key, source })
    }

    /// Takes the run lock of `fp` if no other process holds it: one byte of `locks/runs`, at an
    /// offset the fingerprint gives, under an open-file-description lock (released when the
    /// file is closed, so when the process dies). One file for every fingerprint: a stage's
    /// first run creates no lock file (each file created costs on a busy disk).
    pub fn try_lock(&self, fp: &Fingerprint) -> Result<Option<RunLock>, StoreError> {
        use nix::fcntl::{FcntlArg, fcntl};
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.root.join("locks").join(RUN_LOCKS))?
            .into_parts()
            .0;
        let lock = nix::libc::flock {
            l_type: nix::libc::F_WRLCK as i16,
            l_whence: nix::libc::SEEK_SET as i16,
            l_start: lock_offset(fp),
            l_len: 1,
            l_pid: 0,
        };
        match fcntl(&file, FcntlArg::F_OFD_SETLK(&lock)) {
            Ok(_) => Ok(Some(RunLock { _file: file })),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(None),
            Err(e) => Err(StoreError::Io(e.into())),
        }
    }

    /// Takes the store-wide lock shared (commits) or exclusive (gc), so gc never deletes a blob
    /// between a commit's ingest and its record.
    fn gc_lock(&self, exclusive: bool) -> Result<std::fs::File, StoreError> {
        let file = fs_err::File::create(self.root.join("locks").join("gc"))?.into_parts().0;
        if exclusive {
            file.lock()?
        } else {
            file.lock_shared()?
        }
        Ok(file)
    }
}
