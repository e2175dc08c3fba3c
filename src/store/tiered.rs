//! The store as `flow` uses it: the local [`Store`] in front of an optional shared [`Remote`]
//! (turborepo's cache multiplexer, sccache's storage wrappers). One lookup answers local hit,
//! remote hit or miss; a remote hit is backfilled into the local tier, verified, in the local
//! write order (blobs, manifest, record); publishing copies a local artifact up in the same
//! order. `apply`, `plan`, `push` and `pull` all go through here, and the two tiers know
//! nothing of each other.
//!
//! The local tier remembers which fingerprints a remote is known to hold
//! (`state/remotes/<remote id>/<fingerprint>`), so that `--push` does not ask again.
//!
//! With [`Trust`] set, a remote record is a hit only when a trusted key signed it, and what is
//! published is signed ([`super::trust`]); the local store is trusted as it is.

use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::remote::transfer::{Meter, PARALLEL};
use super::remote::{Direction, OnTransfer, Remote};
use super::trust::{Built, Trust};
use super::{Record, Store, StoreError, cas};
use crate::hash::Fingerprint;

/// The local store over an optional remote.
#[derive(Debug, Clone)]
pub struct Tiered {
    local: Arc<Store>,
    remote: Option<Arc<Remote>>,
    trust: Trust,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Hit {
    /// The local store has a record.
    Local(Record),
    /// Only the remote has one; [`Tiered::backfill`] brings its artifact here.
    Remote(Record),
    /// Neither has one. A remote record that could not be read or parsed is not a hit: the
    /// problem is kept, to be reported, and the stage runs here.
    Miss { remote_problem: Option<StoreError> },
}

/// What publishing a record found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// This call wrote the record; `bytes` of blobs were uploaded for it.
    Created { bytes: u64 },
    /// The remote already had a record for the fingerprint.
    AlreadyThere,
}

impl Tiered {
    pub fn new(local: Arc<Store>, remote: Option<Arc<Remote>>) -> Self {
        Self { local, remote, trust: Trust::default() }
    }

    /// These tiers, checking and signing remote records as `trust` says.
    pub fn with_trust(self, trust: Trust) -> Self {
        Self { trust, ..self }
    }

    pub fn local(&self) -> &Arc<Store> {
        &self.local
    }

    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_deref()
    }

    /// The record of `fp`: locally, else on the remote. Only local failures are errors: the
    /// remote is untrusted and may be unreachable.
    pub async fn lookup(&self, fp: &Fingerprint) -> Result<Hit, StoreError> {
        if let Some(record) = self.local.record(fp).await? {
            return Ok(Hit::Local(record));
        }
        let Some(remote) = self.remote() else { return Ok(Hit::Miss { remote_problem: None }) };
        Ok(match remote.record(fp).await {
            Ok(Some(record)) => match super::trust::signer_of(remote, &self.trust, &record).await {
                Ok(_) => Hit::Remote(record),
                Err(e) if self.trust.require_signed => return Err(e),
                Err(e) => Hit::Miss { remote_problem: Some(e) },
            },
            Ok(None) => Hit::Miss { remote_problem: None },
            Err(e) => Hit::Miss { remote_problem: Some(e) },
        })
    }

    /// Copies the artifact of the remote's `record` into the local store — the manifest first
    /// (validated), then the blobs the local store lacks, each verified as it arrives — and then
    /// writes the local record. Nothing of a corrupt or hostile artifact is kept apart from
    /// blobs that verified.
    pub async fn backfill(&self, record: &Record, on: OnTransfer) -> Result<(), StoreError> {
        let remote = self.require_remote()?;
        let import = self.local.import()?;
        let (manifest, manifest_bytes) = remote.manifest(&record.artifact).await?;
        let lacking = import.lacking(&manifest);
        let meter = Meter::new(Direction::Download, lacking.values().sum(), on);
        futures::stream::iter(lacking)
            .map(|(digest, size)| {
                let (import, meter) = (&import, &meter);
                async move {
                    let tmp = import.blob_file()?;
                    remote.download(digest, size, tmp.path(), meter).await?;
                    import.adopt(tmp, &digest)
                }
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<()>()
            .await?;
        meter.finish();
        import.finish(manifest_bytes, record).await?;
        self.mark(remote, &record.fingerprint)
    }

    /// Publishes `record`, which the local store holds, to the remote: the blobs the remote
    /// lacks, then the manifest, then the record, each create-if-absent, so an upload cut off
    /// at any point leaves no record there. Local blobs are verified as they are read, so a
    /// damaged local copy is never published.
    pub async fn publish(&self, record: &Record, built: &Built, on: OnTransfer) -> Result<Published, StoreError> {
        let remote = self.require_remote()?;
        let fp = record.fingerprint;
        if remote.has_record(&fp).await? {
            if self.trust.signer.is_some() {
                let manifest = self.local.manifest(&record.artifact).await?;
                self.sign(remote, record, &manifest.bytes(), built).await?;
            }
            self.mark(remote, &fp)?;
            return Ok(Published::AlreadyThere);
        }
        let manifest = self.local.manifest(&record.artifact).await?;
        let lacking = remote.lacking(manifest.files().map(|f| (f.3, f.1)).collect()).await?;
        let meter = Meter::new(Direction::Upload, lacking.iter().map(|(_, s)| s).sum(), on);
        let sent: Vec<u64> = futures::stream::iter(lacking)
            .map(|(digest, size)| {
                let (file, meter) = (self.local.blob_file(&digest), &meter);
                async move { remote.upload(&file, digest, size, meter).await }
            })
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;
        meter.finish();
        remote.put_manifest(manifest.bytes().into()).await?;
        let put = remote.put_record(record).await?;
        self.sign(remote, record, &manifest.bytes(), built).await?;
        self.mark(remote, &fp)?;
        Ok(match put {
            cas::Put::Created => Published::Created { bytes: sent.iter().sum() },
            cas::Put::AlreadyThere => Published::AlreadyThere,
        })
    }

    /// With a signing key, signs the remote's record of `record.fingerprint` — this one, or
    /// another machine's of the same artifact, which this run reproduced. A record of another
    /// artifact is not signed: nothing here vouches for it. The signature comes after the
    /// record: a record without one is not used where signatures are checked, which is safe.
    async fn sign(&self, remote: &Remote, record: &Record, manifest: &[u8], built: &Built) -> Result<(), StoreError> {
        if self.trust.signer.is_none() {
            return Ok(());
        }
        let Some(there) = remote.record(&record.fingerprint).await? else { return Ok(()) };
        if there.artifact != record.artifact {
            return Ok(());
        }
        if let Some((path, bytes)) = self.trust.sign(&there, manifest, built) {
            remote.put_signature(&path, bytes).await?;
        }
        Ok(())
    }

    /// Whether the remote is known (from an earlier publish or download here) to hold `fp`.
    pub fn known_on_remote(&self, fp: &Fingerprint) -> bool {
        self.remote().is_some_and(|remote| self.mark_path(remote, fp).exists())
    }

    fn require_remote(&self) -> Result<&Remote, StoreError> {
        self.remote().ok_or_else(|| StoreError::BadRemote { url: String::new(), why: "no remote is configured".into() })
    }

    fn mark_path(&self, remote: &Remote, fp: &Fingerprint) -> PathBuf {
        self.local.state_dir().join("remotes").join(remote.id()).join(fp.to_string())
    }

    fn mark(&self, remote: &Remote, fp: &Fingerprint) -> Result<(), StoreError> {
        let mark = self.mark_path(remote, fp);
        fs_err::create_dir_all(mark.parent().expect("marks have a directory"))?;
        fs_err::write(mark, b"")?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
