//! Committing a finished run: its output files enter `cas/` (hard-linked, never copied), then
//! the manifest, the artifact tree (the output directory itself, renamed into place, where it
//! holds exactly what the manifest says) and, last, the run record with its [`Provenance`].

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;

use super::tree::set_readonly;
use super::{Entry, Manifest, Record, Store, StoreError, cas, manifest};
use crate::hash::Fingerprint;
use crate::hash::file::hash_file;

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
        let (manifest, shape) = self.ingest(out)?;
        let manifest_bytes = Bytes::from(manifest.bytes());
        let artifact = cas::put_blob(self.objects(), manifest_bytes).await?;
        tracing::debug!(%fp, %artifact, files = manifest.entries.len(), bytes = manifest.total_size(), "committed blobs and manifest");
        let dir = self.artifact_dir(&artifact);
        if !dir.is_dir() {
            match shape {
                Shape::Tree => self.place_tree(out, &dir)?,
                Shape::Rebuild => self.build_tree(&manifest, &dir, false)?,
            }
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

    /// Links every file of `out` into `cas/`, leaving `out` a tree of hard links to blobs, and
    /// returns the manifest describing them.
    fn ingest(&self, out: &Path) -> Result<(Manifest, Shape), StoreError> {
        let mut entries = Vec::new();
        let mut files = Vec::new();
        let mut shape = Shape::Tree;
        let mut stack = vec![out.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut empty = dir != out;
            for item in fs_err::read_dir(&dir)? {
                empty = false;
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
            if empty {
                shape = Shape::Rebuild;
            }
        }
        let manifest = Manifest::new(entries);
        // The same rules as for a manifest read from a store (links must stay inside), checked
        // before anything enters `cas/`.
        manifest.validate().map_err(|e| StoreError::BadOutput { path: out.to_path_buf(), why: e.to_string() })?;
        for (path, digest, executable) in files {
            set_readonly(&path, executable)?;
            let blob = self.blob_file(&digest);
            // A hard link is atomic: readers see the whole blob or none. A concurrent writer of
            // the same digest writes the same bytes. The shard directory is made the first time
            // a blob lands in it rather than probed for every time.
            let linked = match std::fs::hard_link(&path, &blob) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs_err::create_dir_all(blob.parent().expect("blob has a shard dir"))?;
                    std::fs::hard_link(&path, &blob)
                }
                other => other,
            };
            match linked {
                Ok(()) => {}
                // The blob was there: the output shares it, unless it differs in the exec bit.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if (fs_err::metadata(&blob)?.mode() & 0o111 != 0) == executable {
                        fs_err::remove_file(&path)?;
                        fs_err::hard_link(&blob, &path)?;
                    }
                }
                // A file system without hard links: the file moves, and the tree is built by
                // copying.
                Err(_) => {
                    shape = Shape::Rebuild;
                    fs_err::rename(&path, &blob)?;
                }
            }
        }
        Ok((manifest, shape))
    }
}

/// Whether an output directory, once ingested, is exactly its artifact's tree. A manifest lists
/// files and symlinks, so a directory with nothing in it would be in the output but not in a
/// tree built from the manifest; and without hard links the files have moved.
enum Shape {
    Tree,
    Rebuild,
}
