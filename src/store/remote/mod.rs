//! The remote tier ([`Remote`]): a store shared by machines and teams — S3 or any
//! S3-compatible service, or a directory — with the local store's object layout (`cas/`, `ac/`)
//! plus `leases/<fingerprint>`, who is running a fingerprint now.
//!
//! A remote is untrusted: records are read strictly, manifests validated before a byte of
//! their blobs is fetched, and every blob hashed as it arrives ([`transfer`]). The remote knows
//! nothing of the local store; moving an artifact between the two, in the write order that
//! keeps both consistent, is [`super::tiered`]'s job. One file per concern: where the remote is
//! and how to reach it ([`config`], [`retry`]), moving bytes ([`transfer`]), who runs what
//! ([`lease`]), and collecting garbage ([`gc`]).

mod config;
pub mod gc;
pub mod lease;
mod retry;
pub mod transfer;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

pub use lease::{Claim, Holder, Lease, lease_ttl};
pub use transfer::{Direction, OnTransfer, Transfer};

use super::{Manifest, Record, StoreError, cas};
use crate::hash::{Digest, Fingerprint};

/// A remote store.
pub struct Remote {
    url: String,
    objects: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

impl Remote {
    /// Opens the remote at `url`: `s3://bucket[/prefix]`, or `file:///dir` (a directory, such
    /// as a shared mount). S3 settings come from the standard AWS environment variables, then
    /// from the AWS config and credentials files (see [`aws_settings`]).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let bad = |why: String| StoreError::BadRemote { url: url.to_owned(), why };
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| bad("expected `s3://bucket/prefix` or `file:///dir`".into()))?;
        let (objects, prefix): (Arc<dyn ObjectStore>, &str) = match scheme {
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("the bucket name is missing".into()));
                }
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry::policy());
                for (key, value) in config::aws_settings() {
                    let key = key.parse().map_err(|e: object_store::Error| bad(e.to_string()))?;
                    builder = builder.with_config(key, value);
                }
                // Every request carries the SHA-256 of its body, which S3 checks on receipt: a
                // part damaged in transit is refused rather than stored under a digest it does
                // not have. Signing hashes the body anyway, so this costs no second pass.
                if builder.get_config_value(&AmazonS3ConfigKey::Checksum).is_none() {
                    builder = builder.with_checksum_algorithm(Checksum::SHA256);
                }
                (Arc::new(retry::Persistent::new(Arc::new(builder.build().map_err(|e| bad(e.to_string()))?))), prefix)
            }
            "file" => {
                let dir = Path::new(rest);
                if !dir.is_absolute() {
                    return Err(bad("a `file://` remote needs an absolute path: `file:///dir`".into()));
                }
                fs_err::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(e.to_string()))?;
                (Arc::new(fs), "")
            }
            other => {
                return Err(bad(format!(
                    "`{other}://` is not supported by this build of flow: remotes are `s3://` (AWS S3 and S3-compatible services) or `file://`"
                )));
            }
        };
        Ok(Self::with_objects(url, objects, prefix))
    }

    /// A remote over an existing object store, under `prefix`.
    pub fn with_objects(url: &str, objects: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        let objects: Arc<dyn ObjectStore> =
            if prefix.is_empty() { objects } else { Arc::new(object_store::prefix::PrefixStore::new(objects, prefix)) };
        Self { url: url.trim_end_matches('/').to_owned(), objects }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    /// A short stable name for this remote, for local bookkeeping of what it holds.
    pub fn id(&self) -> String {
        Digest::of(self.url.as_bytes()).hex()[..16].to_owned()
    }

    /// Names errors by the remote's full URL, so a user can find the object.
    pub(crate) fn locate(&self, e: StoreError) -> StoreError {
        let full = |key: String| format!("{}/{key}", self.url);
        match e {
            StoreError::Object { key, source } => StoreError::Object { key: full(key), source },
            StoreError::Corrupt { key, actual } => StoreError::Corrupt { key: full(key), actual },
            StoreError::Missing { key } => StoreError::Missing { key: full(key) },
            StoreError::BadRecord { key, why } => StoreError::BadRecord { key: full(key), why },
            StoreError::BadManifest { key, source } => StoreError::BadManifest { key: full(key), source },
            other => other,
        }
    }

    fn object_error(&self, path: &ObjectPath, source: object_store::Error) -> StoreError {
        self.locate(StoreError::Object { key: path.to_string(), source })
    }

    /// The remote's record of `fp`, strictly parsed; `None` if there is none.
    pub async fn record(&self, fp: &Fingerprint) -> Result<Option<Record>, StoreError> {
        cas::record(self.objects.as_ref(), fp).await.map_err(|e| self.locate(e))
    }

    /// The manifest of `artifact`, verified against its digest and validated as untrusted
    /// input, with its bytes as stored.
    pub async fn manifest(&self, artifact: &Digest) -> Result<(Manifest, Bytes), StoreError> {
        let key = cas::blob_path(artifact).to_string();
        let bytes = cas::blob(self.objects.as_ref(), artifact)
            .await
            .map_err(|e| self.locate(e))?
            .ok_or_else(|| self.locate(StoreError::Missing { key: key.clone() }))?;
        let manifest =
            Manifest::parse(&bytes).map_err(|source| self.locate(StoreError::BadManifest { key, source }))?;
        Ok((manifest, bytes))
    }

    /// Whether the remote holds a record of `fp` (not read: publishing only needs to know).
    pub async fn has_record(&self, fp: &Fingerprint) -> Result<bool, StoreError> {
        cas::has(self.objects.as_ref(), &cas::record_path(fp)).await.map_err(|e| self.locate(e))
    }

    /// Writes `bytes` at `path` unless an object is there. A retried create can find its own
    /// first attempt in place ([`retry`]): a blob's key names its content, and a record found
    /// in place is published either way.
    async fn create(&self, path: &ObjectPath, bytes: Bytes) -> Result<cas::Put, StoreError> {
        cas::put_once(self.objects.as_ref(), path, bytes).await.map_err(|e| self.locate(e))
    }

    /// Stores a manifest (create-if-absent), after the blobs it names.
    pub async fn put_manifest(&self, bytes: Bytes) -> Result<(), StoreError> {
        self.create(&cas::blob_path(&Digest::of(&bytes)), bytes).await.map(|_| ())
    }

    /// Stores a run record (create-if-absent), after its manifest: the last write of a publish.
    pub async fn put_record(&self, record: &Record) -> Result<cas::Put, StoreError> {
        self.create(&cas::record_path(&record.fingerprint), cas::record_bytes(record)).await
    }

    /// The object at `path`, if there is one: a signature beside a record.
    pub async fn object(&self, path: &ObjectPath) -> Result<Option<Bytes>, StoreError> {
        let fail = |e| self.object_error(path, e);
        match self.objects.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(fail)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(fail(e)),
        }
    }

    /// Writes (or replaces) a signature beside a record: one object per signing key, which
    /// only that key's holder writes.
    pub async fn put_signature(&self, path: &ObjectPath, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.objects.put(path, bytes.into()).await.map(drop).map_err(|e| self.object_error(path, e))
    }

    /// The names of the objects under `folder`.
    pub async fn names(&self, folder: &ObjectPath) -> Result<Vec<String>, StoreError> {
        use futures::TryStreamExt;
        let listed: Vec<object_store::ObjectMeta> =
            self.objects.list(Some(folder)).try_collect().await.map_err(|e| self.object_error(folder, e))?;
        Ok(listed.into_iter().filter_map(|m| m.location.filename().map(str::to_owned)).collect())
    }
}
