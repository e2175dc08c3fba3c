//! The tiers together: a publish then a backfill restores an artifact bit for bit, an upload
//! cut before its record leaves none and is completed by the next, and a remote blob longer or
//! other than declared is never kept.

use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, PutMultipartOptions, PutResult,
};

use std::sync::Mutex;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload};

use super::*;
use crate::hash::Digest;
use crate::store::Provenance;
use crate::store::remote::Transfer;
use crate::store::remote::transfer::PART;

/// A local store holding one committed artifact of `files`.
pub(crate) async fn local(files: &[(&str, Vec<u8>)]) -> (tempfile::TempDir, Store, Record) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("cache")).unwrap();
    let out = dir.path().join("out");
    fs_err::create_dir_all(&out).unwrap();
    for (name, bytes) in files {
        fs_err::create_dir_all(out.join(name).parent().unwrap()).unwrap();
        fs_err::write(out.join(name), bytes).unwrap();
    }
    let fp: Fingerprint = Digest::of(format!("{files:?}").as_bytes()).hex().parse().unwrap();
    let prov = Provenance {
        kind: "command".into(),
        stage: "s".into(),
        workflow: "w".into(),
        seconds: 0.1,
        device: "cpu".into(),
        metrics: Default::default(),
    };
    let record = store.commit(&fp, &out, prov, false).await.unwrap();
    (dir, store, record)
}

pub(crate) fn quiet() -> OnTransfer {
    Arc::new(|_| {})
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i as u64 * 2654435761) >> 7) as u8 ^ seed).collect()
}

/// Checks the artifact of `record` in `store` file by file against `files`.
pub(crate) async fn holds(store: &Store, record: &Record, files: &[(&str, Vec<u8>)]) {
    let dir = store.materialize(&record.artifact).await.unwrap();
    for (name, bytes) in files {
        assert_eq!(&fs_err::read(dir.join(name)).unwrap(), bytes, "{name}");
    }
}

/// Two tiers over one in-memory remote at `url`/`prefix`: `a` holding an artifact of `files`,
/// and an empty `b`.
async fn pair(
    objects: Arc<dyn ObjectStore>,
    url: &str,
    files: &[(&str, Vec<u8>)],
) -> (Vec<tempfile::TempDir>, Tiered, Tiered, Record) {
    let remote = Arc::new(Remote::with_objects(url, objects, "p"));
    let (da, a, record) = local(files).await;
    let (db, b, _) = local(&[]).await;
    let a = Tiered::new(Arc::new(a), Some(Arc::clone(&remote)));
    let b = Tiered::new(Arc::new(b), Some(remote));
    (vec![da, db], a, b, record)
}

#[tokio::test]
async fn publish_then_backfill_restores_the_artifact_bit_for_bit() {
    // Three files: one empty, one small, one of several parts (multipart up, ranges down).
    let files =
        vec![("empty", vec![]), ("dir/small.txt", b"hello".to_vec()), ("big.bin", pattern(2 * PART as usize + 123, 7))];
    let (_dirs, a, b, record) = pair(Arc::new(InMemory::new()), "mem://", &files).await;
    let reports: Arc<Mutex<Vec<Transfer>>> = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&reports);
    let on: OnTransfer = Arc::new(move |t| seen.lock().unwrap().push(t));
    let bytes = 2 * PART + 123 + 5;
    assert_eq!(
        a.publish(&record, &crate::store::trust::Built::default(), Arc::clone(&on)).await.unwrap(),
        Published::Created { bytes }
    );
    let last = *reports.lock().unwrap().last().unwrap();
    assert_eq!((last.direction, last.done, last.total), (Direction::Upload, bytes, bytes));
    assert_eq!(
        a.publish(&record, &crate::store::trust::Built::default(), quiet()).await.unwrap(),
        Published::AlreadyThere
    );
    assert!(a.known_on_remote(&record.fingerprint));

    let Hit::Remote(got) = b.lookup(&record.fingerprint).await.unwrap() else { panic!("a remote hit") };
    assert_eq!(got, record);
    b.backfill(&got, on).await.unwrap();
    assert!(matches!(b.lookup(&record.fingerprint).await.unwrap(), Hit::Local(r) if r == record));
    holds(b.local(), &record, &files).await;
    assert!(b.known_on_remote(&record.fingerprint));
    assert!(b.local().verify(false).await.unwrap().problems.is_empty());
}

/// An object store that refuses to write run records, as a connection cut before the last
/// request would.
#[derive(Debug)]
struct NoRecords(Arc<dyn ObjectStore>);

impl std::fmt::Display for NoRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoRecords")
    }
}

#[async_trait::async_trait]
impl ObjectStore for NoRecords {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if location.parts().any(|part| part.as_ref() == "ac") {
            return Err(object_store::Error::Generic { store: "NoRecords", source: "connection reset".into() });
        }
        self.0.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &ObjectPath, options: GetOptions) -> object_store::Result<GetResult> {
        self.0.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.0.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&ObjectPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&ObjectPath>) -> object_store::Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &ObjectPath, to: &ObjectPath, options: CopyOptions) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn an_interrupted_publish_leaves_no_record_and_the_next_one_completes_it() {
    let files = vec![("a", b"alpha".to_vec()), ("b", pattern(PART as usize + 1, 3))];
    let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (_dirs, a, b, record) = pair(Arc::clone(&memory), "mem://", &files).await;
    let cut = Tiered::new(
        Arc::clone(a.local()),
        Some(Arc::new(Remote::with_objects("mem://", Arc::new(NoRecords(memory)), "p"))),
    );
    assert!(cut.publish(&record, &crate::store::trust::Built::default(), quiet()).await.is_err());
    assert!(!a.known_on_remote(&record.fingerprint));
    assert!(
        matches!(b.lookup(&record.fingerprint).await.unwrap(), Hit::Miss { remote_problem: None }),
        "no record after the cut"
    );
    // Blobs and manifest made it; the next publish sends nothing again but the record.
    assert_eq!(
        a.publish(&record, &crate::store::trust::Built::default(), quiet()).await.unwrap(),
        Published::Created { bytes: 0 }
    );
    b.backfill(&record, quiet()).await.unwrap();
    holds(b.local(), &record, &files).await;
}

#[tokio::test]
async fn a_blob_longer_or_different_than_declared_is_cut_off_and_nothing_is_kept() {
    let files = vec![("f", b"twelve bytes".to_vec())];
    let (_dirs, a, b, record) = pair(Arc::new(InMemory::new()), "mem://bucket", &files).await;
    a.publish(&record, &crate::store::trust::Built::default(), quiet()).await.unwrap();
    let digest = Digest::of(b"twelve bytes");
    let remote = b.remote().unwrap();
    for poison in [b"twelve bytes and more".to_vec(), b"twelve bytez".to_vec()] {
        remote.objects().put(&cas::blob_path(&digest), PutPayload::from(poison)).await.unwrap();
        let err = b.backfill(&record, quiet()).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key, .. } if key == &format!("mem://bucket/cas/{}/{digest}", digest.shard())),
            "{err}"
        );
        assert!(b.local().record(&record.fingerprint).await.unwrap().is_none());
        assert!(!b.local().blob_file(&digest).exists());
        assert_eq!(fs_err::read_dir(b.local().root().join("tmp")).unwrap().count(), 0, "no temporary file is left");
    }
}
