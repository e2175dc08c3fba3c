//! The artifact store ([`Store`]): content-addressed blobs, manifests and run records under one
//! root (default `cache/` at the project root), plus the local-only extras: materialised
//! read-only artifact trees, per-fingerprint run locks, scratch directories and logs.
//!
//! Layout (DESIGN §4):
//! ```text
//! cas/<2 hex>/<64 hex>     blobs: file contents and manifests, by blake3; write-once
//! ac/<fingerprint>.json    run records; written last, create-if-absent
//! artifacts/<digest>/      materialised artifacts (hard links to blobs where modes agree)
//! locks/<fingerprint>      per-fingerprint run locks (flock: released when a process dies)
//! scratch/<fingerprint>/   the working directory of a run: `attempt-XXXXXX/` per attempt
//!                          (its `out/` and task), `resume/` kept across attempts
//! logs/<fingerprint>.log   the output of the last run of a fingerprint
//! state/files.json         the stat cache of input file digests
//! state/remotes/<id>/<fp>  marks: the remote named <id> holds the record of <fp>
//! ```
//!
//! Records and manifests go through `object_store` (`LocalFileSystem` here, S3 for remotes),
//! whose create-if-absent puts give the write-once guarantee. Output files enter `cas/` by a
//! rename from the run's scratch directory, which is on the same filesystem: a 10 GB checkpoint
//! is never copied. The write order blobs → manifest → record means a crash at any point leaves
//! no record that points at missing data. The shared tier above it is [`remote::Remote`].

pub mod cas;
pub mod manifest;
pub mod record;
pub mod remote;

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

use crate::hash::file::hash_file;
use crate::hash::{Digest, Fingerprint};
pub use manifest::{Entry, Manifest, ManifestError};
pub use record::Record;

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
    #[error("remote `{url}` cannot be used: {why}")]
    BadRemote { url: String, why: String },
    #[error("stage output `{path}` is not allowed: {why}")]
    BadOutput { path: PathBuf, why: String },
}

/// A local artifact store rooted at a directory.
pub struct Store {
    root: PathBuf,
    objects: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

/// How the directory of each run attempt under `scratch/<fingerprint>/` begins.
const ATTEMPT_PREFIX: &str = "attempt-";

/// Holds a fingerprint's run lock until dropped.
pub struct RunLock {
    _file: std::fs::File,
}

/// Provenance recorded with an artifact.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub kind: String,
    pub stage: String,
    pub workflow: String,
    pub seconds: f64,
    pub device: String,
    pub metrics: serde_json::Map<String, serde_json::Value>,
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
        Ok(Self { root, objects: Arc::new(objects) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn objects(&self) -> &dyn ObjectStore {
        self.objects.as_ref()
    }

    fn blob_file(&self, digest: &Digest) -> PathBuf {
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

    pub fn stat_cache_path(&self) -> PathBuf {
        self.root.join("state").join("files.json")
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

    /// Moves a downloaded blob, already verified against `digest`, into `cas/`.
    fn adopt_blob(&self, tmp: tempfile::NamedTempFile, digest: &Digest) -> Result<(), StoreError> {
        let blob = self.blob_file(digest);
        fs_err::create_dir_all(blob.parent().expect("blob has a shard dir"))?;
        set_readonly(tmp.path(), false)?;
        tmp.persist(&blob).map_err(|e| e.error)?;
        Ok(())
    }

    fn remote_mark(&self, remote: &str, fp: &Fingerprint) -> PathBuf {
        self.root.join("state").join("remotes").join(remote).join(fp.to_string())
    }

    /// Remembers that the remote named `remote` ([`remote::Remote::id`]) has the record of
    /// `fp`, so a later `--push` does not ask it again.
    fn mark_on_remote(&self, remote: &str, fp: &Fingerprint) -> Result<(), StoreError> {
        let mark = self.remote_mark(remote, fp);
        fs_err::create_dir_all(mark.parent().expect("marks have a directory"))?;
        fs_err::write(mark, b"")?;
        Ok(())
    }

    /// Whether `fp` is known to be published on the remote named `remote`.
    pub fn known_on_remote(&self, remote: &str, fp: &Fingerprint) -> bool {
        self.remote_mark(remote, fp).exists()
    }

    /// Takes the run lock of `fp` if no other process holds it.
    pub fn try_lock(&self, fp: &Fingerprint) -> Result<Option<RunLock>, StoreError> {
        let file = fs_err::File::create(self.root.join("locks").join(fp.to_string()))?.into_parts().0;
        match file.try_lock() {
            Ok(()) => Ok(Some(RunLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
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

    /// Makes `artifact` available as a read-only tree and returns its path. Blobs are verified as
    /// they are linked in; an existing tree is returned as is.
    pub async fn materialize(&self, artifact: &Digest) -> Result<PathBuf, StoreError> {
        let dir = self.artifact_dir(artifact);
        if dir.is_dir() {
            return Ok(dir);
        }
        let _shared = self.gc_lock(false)?;
        let manifest = self.manifest(artifact).await?;
        self.build_tree(&manifest, &dir, true)?;
        Ok(dir)
    }

    /// Builds `dir` from `manifest` in a temporary directory, then renames it into place.
    fn build_tree(&self, manifest: &Manifest, dir: &Path, verify: bool) -> Result<(), StoreError> {
        let tmp = tempfile::Builder::new().prefix("tree-").tempdir_in(self.root.join("tmp"))?;
        for entry in &manifest.entries {
            let target = tmp.path().join(entry.path());
            if let Some(parent) = target.parent() {
                fs_err::create_dir_all(parent)?;
            }
            match entry {
                Entry::File { digest, executable, .. } => {
                    let blob = self.blob_file(digest);
                    if !blob.is_file() {
                        return Err(StoreError::Missing { key: cas::blob_path(digest).to_string() });
                    }
                    if verify {
                        let (actual, _) = hash_file(&blob)?;
                        if actual != *digest {
                            return Err(StoreError::Corrupt { key: cas::blob_path(digest).to_string(), actual });
                        }
                    }
                    let blob_exec = fs_err::metadata(&blob)?.mode() & 0o111 != 0;
                    if blob_exec == *executable {
                        fs_err::hard_link(&blob, &target).or_else(|_| fs_err::copy(&blob, &target).map(|_| ()))?;
                    } else {
                        fs_err::copy(&blob, &target)?;
                        set_readonly(&target, *executable)?;
                    }
                }
                Entry::Link { target: link, .. } => std::os::unix::fs::symlink(link, &target)?,
            }
        }
        seal_dirs(tmp.path())?;
        let tmp = tmp.keep();
        match fs_err::rename(&tmp, dir) {
            Ok(()) => Ok(()),
            // Another process materialised it first: theirs is as good as ours.
            Err(_) if dir.is_dir() => {
                unseal_dirs(&tmp)?;
                fs_err::remove_dir_all(&tmp)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Commits a finished run: ingests the files of `out` into `cas/`, writes the manifest, then
    /// the record, and materialises the artifact. `replace` overwrites an existing record
    /// (`--force`); otherwise an existing record wins and is returned.
    pub async fn commit(
        &self,
        fp: &Fingerprint,
        out: &Path,
        prov: Provenance,
        replace: bool,
    ) -> Result<Record, StoreError> {
        let _shared = self.gc_lock(false)?;
        let manifest = self.ingest(out)?;
        let manifest_bytes = Bytes::from(manifest.bytes());
        let artifact = cas::put_blob(self.objects(), manifest_bytes).await?;
        tracing::debug!(%fp, %artifact, files = manifest.entries.len(), bytes = manifest.total_size(), "committed blobs and manifest");
        let dir = self.artifact_dir(&artifact);
        if !dir.is_dir() {
            self.build_tree(&manifest, &dir, false)?;
        }
        let record = Record {
            fingerprint: *fp,
            artifact,
            kind: prov.kind,
            stage: prov.stage,
            workflow: prov.workflow,
            created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            seconds: prov.seconds,
            device: prov.device,
            flow_version: env!("CARGO_PKG_VERSION").to_owned(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            bytes: manifest.total_size(),
            metrics: prov.metrics,
        };
        if replace {
            let path = self.root.join(cas::record_path(fp).as_ref());
            let tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?;
            fs_err::write(tmp.path(), serde_json::to_vec_pretty(&record).expect("records serialise"))?;
            tmp.persist(&path).map_err(|e| e.error)?;
            return Ok(record);
        }
        match cas::put_record(self.objects(), &record).await? {
            cas::Put::Created => Ok(record),
            cas::Put::AlreadyThere => {
                self.record(fp).await?.ok_or(StoreError::Missing { key: cas::record_path(fp).to_string() })
            }
        }
    }

    /// Moves every file of `out` into `cas/` and returns the manifest describing them.
    fn ingest(&self, out: &Path) -> Result<Manifest, StoreError> {
        let mut entries = Vec::new();
        let mut files = Vec::new();
        let mut stack = vec![out.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for item in fs_err::read_dir(&dir)? {
                let item = item?;
                let path = item.path();
                let rel = path.strip_prefix(out).expect("walk stays under out");
                let rel_str = rel.to_str().ok_or_else(|| StoreError::BadOutput {
                    path: path.clone(),
                    why: "file names must be valid UTF-8".into(),
                })?;
                manifest::check_relative(rel_str)
                    .map_err(|why| StoreError::BadOutput { path: path.clone(), why: why.into() })?;
                let meta = fs_err::symlink_metadata(&path)?;
                let ft = meta.file_type();
                if ft.is_dir() {
                    stack.push(path);
                } else if ft.is_symlink() {
                    let target = fs_err::read_link(&path)?;
                    let Some(target) = target.to_str().map(str::to_owned) else {
                        return Err(StoreError::BadOutput { path, why: "symlink targets must be valid UTF-8".into() });
                    };
                    entries.push(Entry::Link { path: rel_str.to_owned(), target });
                } else if ft.is_file() {
                    let (digest, size) = hash_file(&path)?;
                    let executable = meta.mode() & 0o111 != 0;
                    entries.push(Entry::File { path: rel_str.to_owned(), size, executable, digest });
                    files.push((path, digest, executable));
                } else {
                    return Err(StoreError::BadOutput {
                        path,
                        why: "only files, directories and symlinks are allowed".into(),
                    });
                }
            }
        }
        let manifest = Manifest::new(entries);
        // The same rules as for a manifest read from a store (links must stay inside), checked
        // before anything enters `cas/`.
        manifest.validate().map_err(|e| StoreError::BadOutput { path: out.to_path_buf(), why: e.to_string() })?;
        for (path, digest, executable) in files {
            let blob = self.blob_file(&digest);
            if !blob.exists() {
                fs_err::create_dir_all(blob.parent().expect("blob has a shard dir"))?;
                set_readonly(&path, executable)?;
                // Rename is atomic: readers see the whole blob or none. A concurrent writer of
                // the same digest writes the same bytes.
                fs_err::rename(&path, &blob)?;
            }
        }
        Ok(manifest)
    }

    /// Copies an artifact out as an ordinary writable directory tree.
    pub async fn checkout(&self, artifact: &Digest, to: &Path) -> Result<usize, StoreError> {
        let manifest = self.manifest(artifact).await?;
        fs_err::create_dir_all(to)?;
        for entry in &manifest.entries {
            let target = to.join(entry.path());
            if let Some(parent) = target.parent() {
                fs_err::create_dir_all(parent)?;
            }
            match entry {
                Entry::File { digest, executable, .. } => {
                    let blob = self.blob_file(digest);
                    let (actual, _) = hash_file(&blob)?;
                    if actual != *digest {
                        return Err(StoreError::Corrupt { key: cas::blob_path(digest).to_string(), actual });
                    }
                    fs_err::copy(&blob, &target)?;
                    let mode = if *executable { 0o755 } else { 0o644 };
                    fs_err::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
                }
                Entry::Link { target: link, .. } => std::os::unix::fs::symlink(link, &target)?,
            }
        }
        Ok(manifest.entries.len())
    }

    /// Re-hashes every blob, and checks every record's manifest and blobs and every
    /// materialised tree. With `repair`, deletes what is corrupt and the records that depend on
    /// it, so the next apply re-runs those stages.
    pub async fn verify(&self, repair: bool) -> Result<VerifyReport, StoreError> {
        use rayon::prelude::*;
        let mut report = VerifyReport::default();
        let blobs = self.list_blobs()?;
        report.blobs = blobs.len();
        let bad: Vec<(Digest, PathBuf)> = blobs
            .par_iter()
            .filter_map(|(d, p)| match hash_file(p) {
                Ok((actual, _)) if actual == *d => None,
                _ => Some((*d, p.clone())),
            })
            .collect();
        let corrupt: HashSet<Digest> = bad.iter().map(|(d, _)| *d).collect();
        for (d, _) in &bad {
            report.problems.push(format!("blob `{}` is corrupt", cas::blob_path(d)));
        }
        let present: HashSet<Digest> = blobs.iter().map(|(d, _)| *d).collect();
        let mut broken_records = Vec::new();
        for fp in self.list_records()? {
            let key = cas::record_path(&fp).to_string();
            report.records += 1;
            let record = match self.record(&fp).await {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    report.problems.push(format!("record `{key}`: {e}"));
                    broken_records.push((fp, None));
                    continue;
                }
            };
            let manifest = if corrupt.contains(&record.artifact) || !present.contains(&record.artifact) {
                report
                    .problems
                    .push(format!("record `{key}` points at a missing or corrupt manifest {}", record.artifact));
                broken_records.push((fp, Some(record.artifact)));
                continue;
            } else {
                match self.manifest(&record.artifact).await {
                    Ok(m) => m,
                    Err(e) => {
                        report.problems.push(format!("record `{key}`: {e}"));
                        broken_records.push((fp, Some(record.artifact)));
                        continue;
                    }
                }
            };
            let missing: Vec<Digest> =
                manifest.files().map(|f| f.3).filter(|d| corrupt.contains(d) || !present.contains(d)).collect();
            if !missing.is_empty() {
                report.problems.push(format!(
                    "record `{key}` (stage `{}`) needs {} missing or corrupt blob(s), e.g. {}",
                    record.stage,
                    missing.len(),
                    missing[0]
                ));
                broken_records.push((fp, Some(record.artifact)));
            } else if let Err(p) = self.check_tree(&record.artifact, &manifest) {
                report.problems.push(p);
                broken_records.push((fp, Some(record.artifact)));
            }
        }
        if repair {
            for (_, path) in &bad {
                remove_file_forcibly(path)?;
            }
            for (fp, artifact) in &broken_records {
                remove_file_forcibly(&self.root.join(cas::record_path(fp).as_ref()))?;
                if let Some(a) = artifact {
                    self.remove_tree(&self.artifact_dir(a))?;
                }
            }
            report.repaired = bad.len() + broken_records.len();
        }
        Ok(report)
    }

    /// Checks a materialised tree against its manifest; files that are hard links of their blob
    /// were covered by the blob check.
    fn check_tree(&self, artifact: &Digest, manifest: &Manifest) -> Result<(), String> {
        let dir = self.artifact_dir(artifact);
        if !dir.is_dir() {
            return Ok(());
        }
        for (path, _, _, digest) in manifest.files() {
            let file = dir.join(path);
            let (Ok(meta), Ok(blob)) = (fs_err::metadata(&file), fs_err::metadata(self.blob_file(&digest))) else {
                return Err(format!("artifact {artifact}: file `{path}` is missing"));
            };
            if meta.ino() == blob.ino() && meta.dev() == blob.dev() {
                continue;
            }
            match hash_file(&file) {
                Ok((d, _)) if d == digest => {}
                _ => return Err(format!("artifact {artifact}: file `{path}` was modified")),
            }
        }
        Ok(())
    }

    fn list_blobs(&self) -> Result<Vec<(Digest, PathBuf)>, StoreError> {
        let mut out = Vec::new();
        for shard in fs_err::read_dir(self.root.join("cas"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for blob in fs_err::read_dir(shard.path())? {
                let blob = blob?;
                if let Some(d) = blob.file_name().to_str().and_then(|n| n.parse::<Digest>().ok()) {
                    out.push((d, blob.path()));
                }
            }
        }
        Ok(out)
    }

    fn list_records(&self) -> Result<Vec<Fingerprint>, StoreError> {
        let mut out = Vec::new();
        for entry in fs_err::read_dir(self.root.join("ac"))? {
            let name = entry?.file_name();
            if let Some(fp) = name.to_str().and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse().ok()) {
                out.push(fp);
            }
        }
        Ok(out)
    }

    /// Deletes everything not reachable from the records in `keep` or created after `cutoff`.
    pub async fn gc(
        &self,
        keep: &HashSet<Fingerprint>,
        cutoff: SystemTime,
        dry_run: bool,
    ) -> Result<GcReport, StoreError> {
        let _exclusive = self.gc_lock(true)?;
        let mut report = GcReport { dry_run, ..Default::default() };
        let mut live: HashSet<Digest> = HashSet::new();
        let mut live_artifacts: BTreeSet<Digest> = BTreeSet::new();
        for fp in self.list_records()? {
            let path = self.root.join(cas::record_path(&fp).as_ref());
            let recent = fs_err::metadata(&path)?.modified()? >= cutoff;
            let record = self.record(&fp).await.ok().flatten();
            match record {
                Some(r) if keep.contains(&fp) || recent => {
                    if let Ok(m) = self.manifest(&r.artifact).await {
                        live.insert(r.artifact);
                        live_artifacts.insert(r.artifact);
                        live.extend(m.files().map(|f| f.3));
                    }
                    report.kept_records += 1;
                }
                _ => {
                    report.removed_records += 1;
                    if !dry_run {
                        remove_file_forcibly(&path)?;
                        let _ = fs_err::remove_file(self.log_path(&fp));
                    }
                }
            }
        }
        for (digest, path) in self.list_blobs()? {
            if live.contains(&digest) {
                continue;
            }
            report.removed_blobs += 1;
            report.freed_bytes += fs_err::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                remove_file_forcibly(&path)?;
            }
        }
        // Scratch directories of runs that failed or were interrupted long ago; a running
        // fingerprint holds its lock and is left alone.
        for entry in fs_err::read_dir(self.root.join("scratch"))? {
            let entry = entry?;
            let Some(fp) = entry.file_name().to_str().and_then(|n| n.parse::<Fingerprint>().ok()) else { continue };
            if fs_err::metadata(entry.path())?.modified()? >= cutoff {
                continue;
            }
            if let Some(_lock) = self.try_lock(&fp)? {
                report.removed_scratch += 1;
                if !dry_run {
                    self.remove_tree(&entry.path())?;
                }
            }
        }
        for entry in fs_err::read_dir(self.root.join("artifacts"))? {
            let entry = entry?;
            let digest = entry.file_name().to_str().and_then(|n| n.parse::<Digest>().ok());
            if digest.is_some_and(|d| live_artifacts.contains(&d)) {
                continue;
            }
            report.removed_trees += 1;
            if !dry_run {
                self.remove_tree(&entry.path())?;
            }
        }
        Ok(report)
    }

    fn remove_tree(&self, dir: &Path) -> Result<(), StoreError> {
        if dir.exists() {
            unseal_dirs(dir)?;
            fs_err::remove_dir_all(dir)?;
        }
        Ok(())
    }

    /// Where the attempts of `fp` keep their checkpoints, from one attempt to the next until
    /// the artifact is committed (`$FLOW_RESUME`).
    pub fn resume_dir(&self, fp: &Fingerprint) -> PathBuf {
        self.scratch_dir(fp).join("resume")
    }

    /// A new attempt's directory, `scratch/<fp>/attempt-XXXXXX/` with an empty `out/`, under a
    /// name no earlier attempt had: a process of an earlier attempt, however it survived,
    /// cannot write into this one's output. Earlier attempts' directories are removed; the
    /// caller has made sure nothing of those attempts still runs.
    pub fn fresh_attempt(&self, fp: &Fingerprint) -> Result<PathBuf, StoreError> {
        let scratch = self.scratch_dir(fp);
        fs_err::create_dir_all(&scratch)?;
        for entry in fs_err::read_dir(&scratch)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(ATTEMPT_PREFIX) {
                self.remove_tree(&entry.path())?;
            }
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

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub blobs: usize,
    pub records: usize,
    pub problems: Vec<String>,
    pub repaired: usize,
}

#[derive(Debug, Default)]
pub struct GcReport {
    pub dry_run: bool,
    pub kept_records: usize,
    pub removed_records: usize,
    pub removed_blobs: usize,
    pub removed_trees: usize,
    pub removed_scratch: usize,
    pub freed_bytes: u64,
}

fn set_readonly(path: &Path, executable: bool) -> io::Result<()> {
    let mode = if executable { 0o555 } else { 0o444 };
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Makes every directory under `dir` read-only, so stages see their inputs as such.
fn seal_dirs(dir: &Path) -> io::Result<()> {
    set_dir_modes(dir, 0o555)
}

fn unseal_dirs(dir: &Path) -> io::Result<()> {
    set_dir_modes(dir, 0o755)
}

fn set_dir_modes(dir: &Path, mode: u32) -> io::Result<()> {
    if mode & 0o200 != 0 {
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    }
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            set_dir_modes(&entry.path(), mode)?;
        }
    }
    if mode & 0o200 == 0 {
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn remove_file_forcibly(path: &Path) -> io::Result<()> {
    match fs_err::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
