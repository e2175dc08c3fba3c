//! Content-addressed objects over any `object_store` backend: blobs at `cas/<2 hex>/<64 hex>`
//! (verified on every read) and run records at `ac/<fingerprint>.json` (write-once).
//!
//! These few functions are the whole contract a backend must honour; the conformance tests at
//! the bottom run them against every backend flow supports.

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::StoreError;
use super::record::Record;
use crate::hash::{Digest, Fingerprint};

pub fn blob_path(digest: &Digest) -> ObjectPath {
    ObjectPath::from(format!("cas/{}/{}", digest.shard(), digest))
}

pub fn record_path(fp: &Fingerprint) -> ObjectPath {
    ObjectPath::from(format!("ac/{fp}.json"))
}

/// What a create-if-absent write found.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    Created,
    AlreadyThere,
}

/// Writes `bytes` at `path` unless an object is already there.
pub async fn put_once(store: &dyn ObjectStore, path: &ObjectPath, bytes: Bytes) -> Result<Put, StoreError> {
    let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
    match store.put_opts(path, PutPayload::from(bytes), opts).await {
        Ok(_) => Ok(Put::Created),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::AlreadyThere),
        Err(e) => Err(StoreError::Object { key: path.to_string(), source: e }),
    }
}

/// Stores `bytes` as a blob (create-if-absent: an existing blob has the same content by
/// construction). Returns its digest.
pub async fn put_blob(store: &dyn ObjectStore, bytes: Bytes) -> Result<Digest, StoreError> {
    let digest = Digest::of(&bytes);
    put_once(store, &blob_path(&digest), bytes).await?;
    Ok(digest)
}

/// Reads a blob and verifies its content against its digest; `None` if absent.
pub async fn blob(store: &dyn ObjectStore, digest: &Digest) -> Result<Option<Bytes>, StoreError> {
    let path = blob_path(digest);
    let bytes = match store.get(&path).await {
        Ok(r) => r.bytes().await.map_err(|e| StoreError::Object { key: path.to_string(), source: e })?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(StoreError::Object { key: path.to_string(), source: e }),
    };
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(StoreError::Corrupt { key: path.to_string(), actual });
    }
    Ok(Some(bytes))
}

pub async fn has(store: &dyn ObjectStore, path: &ObjectPath) -> Result<bool, StoreError> {
    match store.head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(StoreError::Object { key: path.to_string(), source: e }),
    }
}

/// Writes a run record, create-if-absent.
pub async fn put_record(store: &dyn ObjectStore, record: &Record) -> Result<Put, StoreError> {
    put_once(store, &record_path(&record.fingerprint), record_bytes(record)).await
}

/// A run record as stored.
pub fn record_bytes(record: &Record) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(record).expect("records always serialise"))
}

/// Reads and strictly parses the record of `fp`; `None` if there is none.
pub async fn record(store: &dyn ObjectStore, fp: &Fingerprint) -> Result<Option<Record>, StoreError> {
    let path = record_path(fp);
    let bytes = match store.get(&path).await {
        Ok(r) => r.bytes().await.map_err(|e| StoreError::Object { key: path.to_string(), source: e })?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(StoreError::Object { key: path.to_string(), source: e }),
    };
    Record::parse(&bytes, *fp).map(Some).map_err(|why| StoreError::BadRecord { key: path.to_string(), why })
}

#[cfg(test)]
pub(crate) mod conformance {
    //! The store contract, run against each backend.
    use std::sync::Arc;

    use futures::TryStreamExt;
    use object_store::memory::InMemory;

    use super::*;

    fn record(fp: Fingerprint, artifact: Digest) -> Record {
        Record {
            fingerprint: fp,
            artifact,
            kind: "command".into(),
            stage: "s".into(),
            workflow: "w".into(),
            created: "2026-11-26T00:00:00Z".into(),
            seconds: 0.5,
            device: "cpu".into(),
            flow_version: "0".into(),
            host: "h".into(),
            bytes: 3,
            metrics: Default::default(),
        }
    }

    pub(crate) async fn suite(store: Arc<dyn ObjectStore>) {
        let s = store.as_ref();
        // Roundtrip, and missing → none.
        let d = put_blob(s, Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(blob(s, &d).await.unwrap().unwrap(), Bytes::from_static(b"hello"));
        assert!(blob(s, &Digest::of(b"absent")).await.unwrap().is_none());
        assert!(has(s, &blob_path(&d)).await.unwrap());
        // Write-once: a second create of the same blob is a no-op.
        assert_eq!(put_once(s, &blob_path(&d), Bytes::from_static(b"hello")).await.unwrap(), Put::AlreadyThere);
        // Records are create-if-absent: the first writer wins.
        let fp: Fingerprint = Digest::of(b"fp").hex().parse().unwrap();
        assert!(super::record(s, &fp).await.unwrap().is_none());
        assert_eq!(put_record(s, &record(fp, d)).await.unwrap(), Put::Created);
        assert_eq!(put_record(s, &record(fp, Digest::of(b"other"))).await.unwrap(), Put::AlreadyThere);
        assert_eq!(super::record(s, &fp).await.unwrap().unwrap().artifact, d);
        // A record stored under the wrong fingerprint is rejected.
        let other: Fingerprint = Digest::of(b"fp2").hex().parse().unwrap();
        let bytes = serde_json::to_vec(&record(fp, d)).unwrap();
        s.put(&record_path(&other), PutPayload::from(bytes)).await.unwrap();
        assert!(matches!(super::record(s, &other).await, Err(StoreError::BadRecord { .. })));
        // Verification: a blob whose bytes changed is reported, never returned.
        let bad = Digest::of(b"original");
        s.put(&blob_path(&bad), PutPayload::from_static(b"tampered")).await.unwrap();
        assert!(matches!(blob(s, &bad).await, Err(StoreError::Corrupt { .. })));
        // Listing sees what was written.
        let listed: Vec<_> = s.list(Some(&ObjectPath::from("cas"))).try_collect().await.unwrap();
        assert_eq!(listed.len(), 2);
        // Multipart: a blob larger than one part survives the trip.
        let big: Vec<u8> = (0..12 << 20).map(|i: u32| (i % 251) as u8).collect();
        let big_digest = Digest::of(&big);
        let mut upload = object_store::WriteMultipart::new(s.put_multipart(&blob_path(&big_digest)).await.unwrap());
        upload.write(&big);
        upload.finish().await.unwrap();
        assert_eq!(blob(s, &big_digest).await.unwrap().unwrap().len(), big.len());
    }

    #[tokio::test]
    async fn in_memory_backend_conforms() {
        suite(Arc::new(InMemory::new())).await;
    }

    #[tokio::test]
    async fn local_filesystem_backend_conforms() {
        let dir = tempfile::tempdir().unwrap();
        suite(Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap())).await;
    }

    /// A real S3-compatible server: the one scripts/test.sh starts on loopback.
    #[tokio::test]
    #[ignore = "needs the S3-compatible server scripts/test.sh starts"]
    async fn s3_backend_conforms() {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} is unset: run the tests through scripts/test.sh"))
        };
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(var("FLOW_TEST_S3_ENDPOINT"))
            .with_bucket_name(var("FLOW_TEST_S3_BUCKET"))
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap();
        // A prefix of its own, so runs sharing the server never see each other's objects.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let prefix = format!("conformance-{}-{nanos}", std::process::id());
        suite(Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.as_str()))).await;
    }
}
