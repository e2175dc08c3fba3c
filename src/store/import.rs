//! Artifacts arriving from another tier ([`Import`]): blobs land in `tmp/`, are adopted into
//! `cas/` only once verified by whoever fetched them, and the manifest and record are written
//! last. The import holds off `flow gc` until it is done, as a commit does.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::tree::set_readonly;
use super::{Manifest, Record, Store, StoreError, cas};
use crate::hash::Digest;

/// An artifact being copied into the store; see [`Store::import`].
pub struct Import<'a> {
    store: &'a Store,
    _gc: std::fs::File,
}

impl Store {
    /// Starts copying an artifact in from another tier.
    pub fn import(&self) -> Result<Import<'_>, StoreError> {
        Ok(Import { store: self, _gc: self.gc_lock(false)? })
    }
}

impl Import<'_> {
    /// The blobs of `manifest` the store lacks, with their sizes.
    pub fn lacking(&self, manifest: &Manifest) -> BTreeMap<Digest, u64> {
        manifest.files().filter(|f| !self.store.blob_file(&f.3).is_file()).map(|f| (f.3, f.1)).collect()
    }

    /// An empty temporary file for a blob to arrive in; removed unless adopted.
    pub fn blob_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        Ok(tempfile::NamedTempFile::new_in(self.store.root().join("tmp"))?)
    }

    /// Moves a blob that arrived in `tmp`, already verified against `digest`, into `cas/`.
    pub fn adopt(&self, tmp: tempfile::NamedTempFile, digest: &Digest) -> Result<(), StoreError> {
        let blob = self.store.blob_file(digest);
        fs_err::create_dir_all(blob.parent().expect("blob has a shard dir"))?;
        set_readonly(tmp.path(), false)?;
        tmp.persist(&blob).map_err(|e| e.error)?;
        Ok(())
    }

    /// Writes the manifest, then the record: from here on the artifact is complete.
    pub async fn finish(self, manifest: Bytes, record: &Record) -> Result<(), StoreError> {
        cas::put_blob(self.store.objects(), manifest).await?;
        cas::put_record(self.store.objects(), record).await?;
        Ok(())
    }
}
