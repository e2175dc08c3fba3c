//! The remote tier ([`Remote`]): a store shared by machines and teams — S3 or any
//! S3-compatible service, or a directory — with the local store's object layout (`cas/`, `ac/`)
//! plus `leases/<fingerprint>`, who is running a fingerprint now.
//!
//! A remote is untrusted. A download reads the record strictly, validates the manifest before
//! fetching a byte of its blobs, streams each blob into the local `tmp/` while hashing it and
//! accepts it only if the digest matches; the local record is written last. Publishing mirrors
//! the local write order — blobs, then the manifest, then the record, each create-if-absent — so
//! an upload cut off at any point leaves no record. Blobs above [`PART`] go up in parts and
//! blobs above [`RANGE`] come down in ranges, several at once; every request is retried with
//! backoff by `object_store` ([`retry`]).

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, PutResult, UpdateVersion, WriteMultipart,
};
use serde::{Deserialize, Serialize};

use super::{Manifest, Record, Store, StoreError, cas};
use crate::hash::{Digest, Fingerprint};

/// Blobs larger than this are uploaded in parts of this size (S3's minimum is 5 MiB).
pub const PART: u64 = 8 << 20;
/// S3's limit on the parts of one upload.
const MAX_PARTS: u64 = 10_000;
/// Blobs larger than this are downloaded in ranges of this size, several at once. Larger than
/// a part: each ranged read costs the server a lookup of the whole object (the test server
/// slows down in proportion), while 64 MiB ranges still keep 8 streams busy on a checkpoint.
pub const RANGE: u64 = 64 << 20;
/// Blobs up to this size are published without asking whether the remote has them.
const SMALL: u64 = 1 << 20;
/// Transfers in flight at once: blobs, or parts of one large blob.
const PARALLEL: usize = 8;
/// How long a lease lives without a heartbeat (`FLOW_LEASE_SECONDS` overrides it).
pub const LEASE_SECONDS: u64 = 60;

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

/// Which way bytes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Download,
    Upload,
}

/// How far a transfer has come.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Transfer {
    pub direction: Direction,
    pub done: u64,
    pub total: u64,
    pub seconds: f64,
}

/// Receives [`Transfer`] reports (at most every [`REPORT_EVERY`], and once at the end).
pub type OnTransfer = Arc<dyn Fn(Transfer) + Send + Sync>;

const REPORT_EVERY: Duration = Duration::from_millis(200);

/// Counts bytes of one transfer and reports them, throttled.
struct Meter {
    direction: Direction,
    total: u64,
    done: AtomicU64,
    started: Instant,
    last: Mutex<Instant>,
    on: OnTransfer,
}

impl Meter {
    fn new(direction: Direction, total: u64, on: OnTransfer) -> Self {
        let now = Instant::now();
        Self { direction, total, done: AtomicU64::new(0), started: now, last: Mutex::new(now), on }
    }

    fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let mut last = self.last.lock().expect("meter lock");
        if last.elapsed() >= REPORT_EVERY {
            *last = Instant::now();
            drop(last);
            self.report(done);
        }
    }

    fn report(&self, done: u64) {
        (self.on)(Transfer {
            direction: self.direction,
            done,
            total: self.total,
            seconds: self.started.elapsed().as_secs_f64(),
        });
    }

    fn finish(&self) {
        if self.total > 0 {
            self.report(self.done.load(Ordering::Relaxed));
        }
    }
}

/// What publishing a record found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// This call wrote the record; `bytes` of blobs were uploaded for it.
    Created { bytes: u64 },
    /// The remote already had a record for the fingerprint.
    AlreadyThere,
}

/// Who holds a lease: written into `leases/<fingerprint>` and renewed by a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    pub stage: String,
    pub workflow: String,
    /// RFC 3339, UTC, by the holder's clock (shown to people; expiry never trusts it).
    pub started: String,
    /// The holder renews at least this often: a lease unchanged for longer has expired.
    pub ttl_seconds: u64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stage `{}` of `{}` on {} (pid {}) since {}",
            self.stage, self.workflow, self.host, self.pid, self.started
        )
    }
}

impl Holder {
    /// This process, running `stage` of `workflow`.
    pub fn me(stage: &str, workflow: &str, ttl: Duration) -> Self {
        Self {
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            stage: stage.to_owned(),
            workflow: workflow.to_owned(),
            started: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            ttl_seconds: ttl.as_secs().max(1),
        }
    }
}

/// The outcome of trying to take a lease.
pub enum Claim {
    Taken(Lease),
    /// Nobody holds it (only from [`Remote::lease`], which never takes one).
    Free,
    /// Someone else's lease: `version` identifies this state of it, so a waiter can tell a
    /// heartbeat (a new version) from silence. `holder` is `None` when the object is not a lease
    /// this flow can read; it still counts as held until it expires.
    Held {
        holder: Option<Holder>,
        version: String,
    },
}

/// A lease this process holds. Its heartbeat renews it until [`Lease::release`]; if the process
/// dies, renewals stop and the lease expires.
pub struct Lease {
    objects: Arc<dyn ObjectStore>,
    path: ObjectPath,
    version: Arc<Mutex<UpdateVersion>>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Stops the heartbeat and deletes the lease, unless someone took it over meanwhile.
    pub async fn release(self) {
        self.heartbeat.abort();
        let ours = self.version.lock().expect("lease lock").e_tag.clone();
        match self.objects.head(&self.path).await {
            Ok(meta) if meta.e_tag == ours => {
                if let Err(e) = self.objects.delete(&self.path).await {
                    tracing::warn!(lease = %self.path, error = %e, "could not release the lease; it will expire");
                }
            }
            _ => {}
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.abort();
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
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry());
                for (key, value) in aws_settings() {
                    let key = key.parse().map_err(|e: object_store::Error| bad(e.to_string()))?;
                    builder = builder.with_config(key, value);
                }
                // Every request carries the SHA-256 of its body, which S3 checks on receipt: a
                // part damaged in transit is refused rather than stored under a digest it does
                // not have. Signing hashes the body anyway, so this costs no second pass.
                if builder.get_config_value(&AmazonS3ConfigKey::Checksum).is_none() {
                    builder = builder.with_checksum_algorithm(Checksum::SHA256);
                }
                (Arc::new(Persistent(Arc::new(builder.build().map_err(|e| bad(e.to_string()))?))), prefix)
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
    fn locate(&self, e: StoreError) -> StoreError {
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

    /// Downloads the artifact of `record` into `local` — manifest first (validated), then the
    /// blobs `local` lacks, each verified — and then writes the local record. Nothing of a
    /// corrupt or hostile artifact is kept apart from blobs that verified.
    pub async fn fetch(&self, local: &Store, record: &Record, on: OnTransfer) -> Result<(), StoreError> {
        let _shared = local.gc_lock(false)?;
        let artifact = record.artifact;
        let manifest_key = cas::blob_path(&artifact).to_string();
        let manifest_bytes = cas::blob(self.objects.as_ref(), &artifact)
            .await
            .map_err(|e| self.locate(e))?
            .ok_or_else(|| self.locate(StoreError::Missing { key: manifest_key.clone() }))?;
        let manifest = Manifest::parse(&manifest_bytes)
            .map_err(|source| self.locate(StoreError::BadManifest { key: manifest_key, source }))?;
        let needed: BTreeMap<Digest, u64> =
            manifest.files().filter(|f| !local.blob_file(&f.3).is_file()).map(|f| (f.3, f.1)).collect();
        let meter = Meter::new(Direction::Download, needed.values().sum(), on);
        futures::stream::iter(needed)
            .map(|(digest, size)| self.download(local, digest, size, &meter))
            .buffer_unordered(PARALLEL)
            .try_collect::<()>()
            .await?;
        meter.finish();
        cas::put_blob(local.objects(), manifest_bytes).await?;
        cas::put_record(local.objects(), record).await?;
        local.mark_on_remote(&self.id(), &record.fingerprint)?;
        Ok(())
    }

    /// Downloads one blob into `local`'s `cas/`, verified. Small blobs stream in one request;
    /// large ones arrive as ranges, several at once, written in place.
    async fn download(&self, local: &Store, digest: Digest, size: u64, meter: &Meter) -> Result<(), StoreError> {
        let path = cas::blob_path(&digest);
        let tmp = tempfile::NamedTempFile::new_in(local.root().join("tmp"))?;
        let actual = if size > RANGE {
            let file = tmp.as_file();
            file.set_len(size)?;
            let ranges: Vec<std::ops::Range<u64>> =
                (0..size).step_by(RANGE as usize).map(|s| s..(s + RANGE).min(size)).collect();
            let path = &path;
            futures::stream::iter(ranges)
                .map(|range| async move {
                    let bytes =
                        self.objects.get_range(path, range.clone()).await.map_err(|e| self.object_error(path, e))?;
                    if bytes.len() as u64 != range.end - range.start {
                        return Err(
                            self.locate(StoreError::Corrupt { key: path.to_string(), actual: Digest::of(&bytes) })
                        );
                    }
                    file.write_all_at(&bytes, range.start)?;
                    meter.add(bytes.len() as u64);
                    Ok(())
                })
                .buffer_unordered(PARALLEL)
                .try_collect::<()>()
                .await?;
            crate::hash::file::hash_file(tmp.path())?.0
        } else {
            let mut stream = match self.objects.get(&path).await {
                Ok(r) => r.into_stream(),
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(self.locate(StoreError::Missing { key: path.to_string() }));
                }
                Err(e) => return Err(self.object_error(&path, e)),
            };
            let mut hasher = blake3::Hasher::new();
            let mut file = tmp.as_file();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.object_error(&path, e))?;
                // A remote that sends more than the manifest declares is cut off, not believed.
                if hasher.count() + chunk.len() as u64 > size {
                    return Err(self
                        .locate(StoreError::Corrupt { key: path.to_string(), actual: Digest::from_hasher(&hasher) }));
                }
                hasher.update(&chunk);
                std::io::Write::write_all(&mut file, &chunk)?;
                meter.add(chunk.len() as u64);
            }
            Digest::from_hasher(&hasher)
        };
        if actual != digest {
            return Err(self.locate(StoreError::Corrupt { key: path.to_string(), actual }));
        }
        local.adopt_blob(tmp, &digest)
    }

    /// Writes `bytes` at `path` unless an object is there. A retried create can find its own
    /// first attempt in place ([`Persistent`]): a blob's key names its content, and a record
    /// found in place is published either way.
    async fn create(&self, path: &ObjectPath, bytes: Bytes) -> Result<cas::Put, StoreError> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.objects.put_opts(path, PutPayload::from(bytes), opts).await {
            Ok(_) => Ok(cas::Put::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(cas::Put::AlreadyThere),
            Err(e) => Err(self.object_error(path, e)),
        }
    }

    /// Publishes `record` (which `local` holds) to the remote: the blobs the remote lacks, then
    /// the manifest, then the record, each create-if-absent. Local blobs are verified as they
    /// are read, so a damaged local copy is never published.
    pub async fn publish(&self, local: &Store, record: &Record, on: OnTransfer) -> Result<Published, StoreError> {
        let fp = record.fingerprint;
        if cas::has(self.objects.as_ref(), &cas::record_path(&fp)).await.map_err(|e| self.locate(e))? {
            local.mark_on_remote(&self.id(), &fp)?;
            return Ok(Published::AlreadyThere);
        }
        let manifest = local.manifest(&record.artifact).await?;
        let files: BTreeMap<Digest, u64> = manifest.files().map(|f| (f.3, f.1)).collect();
        // Small blobs go straight to a create-if-absent put (one request; the remote answers
        // "already there" for those it has); larger ones are asked about first, so bytes the
        // remote holds are not sent again.
        let missing: Vec<(Digest, u64)> = futures::stream::iter(files)
            .map(|(d, size)| async move {
                let has = size > SMALL
                    && cas::has(self.objects.as_ref(), &cas::blob_path(&d)).await.map_err(|e| self.locate(e))?;
                Ok::<_, StoreError>((!has).then_some((d, size)))
            })
            .buffer_unordered(PARALLEL * 4)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await?;
        let meter = Meter::new(Direction::Upload, missing.iter().map(|(_, s)| s).sum(), on);
        let sent: Vec<u64> = futures::stream::iter(missing)
            .map(|(digest, size)| self.upload(local.blob_file(&digest), digest, size, &meter))
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;
        let bytes = sent.iter().sum();
        meter.finish();
        let manifest = Bytes::from(manifest.bytes());
        self.create(&cas::blob_path(&Digest::of(&manifest)), manifest).await?;
        let put = self.create(&cas::record_path(&fp), cas::record_bytes(record)).await?;
        local.mark_on_remote(&self.id(), &fp)?;
        Ok(match put {
            cas::Put::Created => Published::Created { bytes },
            cas::Put::AlreadyThere => Published::AlreadyThere,
        })
    }

    /// Uploads one local blob: small ones in one request, large ones in parts, several parts
    /// in flight. The content is hashed as it is read; on a mismatch the upload is aborted.
    /// Returns the bytes sent: 0 when the remote already had the blob.
    async fn upload(&self, file: PathBuf, digest: Digest, size: u64, meter: &Meter) -> Result<u64, StoreError> {
        let path = cas::blob_path(&digest);
        let corrupt = |actual| StoreError::Corrupt { key: format!("{} (local)", cas::blob_path(&digest)), actual };
        if size <= PART {
            let bytes = Bytes::from(tokio::fs::read(&file).await?);
            let actual = Digest::of(&bytes);
            if actual != digest {
                return Err(corrupt(actual));
            }
            let n = bytes.len() as u64;
            let put = self.create(&path, bytes).await?;
            meter.add(n);
            return Ok(if put == cas::Put::Created { n } else { 0 });
        }
        // S3 allows 10,000 parts: a file over 78 GiB gets larger parts (up to S3's 5 TiB).
        let part = PART.max(size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20));
        let upload = self.objects.put_multipart(&path).await.map_err(|e| self.object_error(&path, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part as usize);
        let source = Arc::new(fs_err::File::open(&file)?.into_parts().0);
        let mut hasher = blake3::Hasher::new();
        let mut offset = 0u64;
        let result = async {
            while offset < size {
                let len = part.min(size - offset) as usize;
                // Reading and hashing block: off the runtime's threads, which drive the
                // parts already in flight.
                let (file, mut h) = (Arc::clone(&source), std::mem::take(&mut hasher));
                let (chunk, h) = tokio::task::spawn_blocking(move || {
                    let mut chunk = vec![0u8; len];
                    file.read_exact_at(&mut chunk, offset)?;
                    h.update_rayon(&chunk);
                    Ok::<_, std::io::Error>((chunk, h))
                })
                .await
                .expect("the read task does not panic")?;
                hasher = h;
                writer.wait_for_capacity(PARALLEL).await.map_err(|e| self.object_error(&path, e))?;
                writer.write(&chunk);
                offset += len as u64;
                meter.add(len as u64);
            }
            Ok::<_, StoreError>(())
        }
        .await;
        let actual = Digest::from_hasher(&hasher);
        if let Err(e) = result {
            let _ = writer.abort().await;
            return Err(e);
        }
        if actual != digest {
            let _ = writer.abort().await;
            return Err(corrupt(actual));
        }
        writer.finish().await.map_err(|e| self.object_error(&path, e))?;
        Ok(size)
    }

    fn lease_path(fp: &Fingerprint) -> ObjectPath {
        ObjectPath::from(format!("leases/{fp}"))
    }

    /// Tries to take the lease of `fp` (create-if-absent); never [`Claim::Free`].
    pub async fn claim(&self, fp: &Fingerprint, me: &Holder) -> Result<Claim, StoreError> {
        let path = Self::lease_path(fp);
        let body = Bytes::from(serde_json::to_vec(me).expect("holders serialise"));
        loop {
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            match self.objects.put_opts(&path, PutPayload::from(body.clone()), opts).await {
                Ok(r) => {
                    return Ok(Claim::Taken(self.lease_for(
                        path,
                        me,
                        UpdateVersion { e_tag: r.e_tag, version: r.version },
                    )));
                }
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(self.object_error(&path, e)),
            }
            match self.lease(fp).await? {
                // A retried create whose first attempt took effect.
                Claim::Held { holder: Some(h), version } if h == *me => {
                    return Ok(Claim::Taken(self.lease_at(path, me, version)));
                }
                held @ Claim::Held { .. } => return Ok(held),
                // Released between our create and our read: try again.
                Claim::Free | Claim::Taken(_) => {}
            }
        }
    }

    /// Who holds the lease of `fp`, without taking it.
    pub async fn lease(&self, fp: &Fingerprint) -> Result<Claim, StoreError> {
        let path = Self::lease_path(fp);
        match self.objects.get(&path).await {
            Ok(r) => {
                let version = r.meta.e_tag.clone().unwrap_or_else(|| r.meta.last_modified.to_rfc3339());
                let bytes = r.bytes().await.map_err(|e| self.object_error(&path, e))?;
                Ok(Claim::Held { holder: serde_json::from_slice(&bytes).ok(), version })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Claim::Free),
            Err(e) => Err(self.object_error(&path, e)),
        }
    }

    /// Takes over the lease of `fp` if it is still in the state `version` (its holder stopped
    /// renewing it). `None` if someone else renewed or took it first.
    pub async fn take_over(&self, fp: &Fingerprint, me: &Holder, version: &str) -> Result<Option<Lease>, StoreError> {
        let path = Self::lease_path(fp);
        let body = PutPayload::from(serde_json::to_vec(me).expect("holders serialise"));
        let expected = UpdateVersion { e_tag: Some(version.to_owned()), version: None };
        let opts = PutOptions { mode: PutMode::Update(expected), ..Default::default() };
        match self.objects.put_opts(&path, body, opts).await {
            Ok(r) => Ok(Some(self.lease_for(path, me, UpdateVersion { e_tag: r.e_tag, version: r.version }))),
            Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
                match self.lease(fp).await? {
                    // A retried update whose first attempt took effect.
                    Claim::Held { holder: Some(h), version } if h == *me => Ok(Some(self.lease_at(path, me, version))),
                    _ => Ok(None),
                }
            }
            // Backends without conditional updates (a `file://` remote): delete, then create;
            // of two machines racing here, the create lets only one win.
            Err(object_store::Error::NotImplemented { .. }) => {
                match self.objects.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.object_error(&path, e)),
                }
                match self.claim(fp, me).await? {
                    Claim::Taken(lease) => Ok(Some(lease)),
                    Claim::Held { .. } | Claim::Free => Ok(None),
                }
            }
            Err(e) => Err(self.object_error(&path, e)),
        }
    }

    /// Starts the heartbeat of a lease of ours found at `version`.
    fn lease_at(&self, path: ObjectPath, me: &Holder, version: String) -> Lease {
        self.lease_for(path, me, UpdateVersion { e_tag: Some(version), version: None })
    }

    /// Starts the heartbeat of a lease just written, now at `version`.
    fn lease_for(&self, path: ObjectPath, me: &Holder, version: UpdateVersion) -> Lease {
        let version = Arc::new(Mutex::new(version));
        let (objects, beat_path, beat_version) = (Arc::clone(&self.objects), path.clone(), Arc::clone(&version));
        let body = Bytes::from(serde_json::to_vec(me).expect("holders serialise"));
        let every = Duration::from_secs(me.ttl_seconds).div_f64(4.0);
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let current = beat_version.lock().expect("lease lock").clone();
                let mode = if current.e_tag.is_some() { PutMode::Update(current) } else { PutMode::Overwrite };
                let opts = PutOptions { mode, ..Default::default() };
                match objects.put_opts(&beat_path, PutPayload::from(body.clone()), opts).await {
                    Ok(r) => {
                        *beat_version.lock().expect("lease lock") = UpdateVersion { e_tag: r.e_tag, version: r.version }
                    }
                    Err(object_store::Error::NotImplemented { .. }) => {
                        let opts = PutOptions { mode: PutMode::Overwrite, ..Default::default() };
                        if let Ok(r) = objects.put_opts(&beat_path, PutPayload::from(body.clone()), opts).await {
                            *beat_version.lock().expect("lease lock") =
                                UpdateVersion { e_tag: r.e_tag, version: r.version };
                        }
                    }
                    Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
                        // The previous renewal may have taken effect with its answer lost.
                        match objects.get(&beat_path).await {
                            Ok(r) if r.meta.e_tag.is_some() => {
                                let e_tag = r.meta.e_tag.clone();
                                if r.bytes().await.is_ok_and(|b| b == body) {
                                    *beat_version.lock().expect("lease lock") = UpdateVersion { e_tag, version: None };
                                    continue;
                                }
                            }
                            _ => {}
                        }
                        tracing::warn!(lease = %beat_path, "lost the lease (another machine took it over); still running");
                        return;
                    }
                    Err(e) => tracing::warn!(lease = %beat_path, error = %e, "could not renew the lease; retrying"),
                }
            }
        });
        Lease { objects: Arc::clone(&self.objects), path, version, heartbeat }
    }
}

/// A lease not renewed for this long belongs to a dead run, whatever its time-to-live (waiters
/// cap it at an hour), with an hour's margin for clocks that disagree.
pub const LEASE_STALE: Duration = Duration::from_secs(2 * 3600);

/// What [`Remote::gc`] did (or would do, when `dry_run`).
#[derive(Debug, Default)]
pub struct RemoteGc {
    pub dry_run: bool,
    pub kept_records: usize,
    pub removed_records: usize,
    pub removed_blobs: usize,
    pub freed_bytes: u64,
    /// Leases present: while any is, no blob is deleted (its run may be uploading).
    pub live_leases: usize,
    pub removed_leases: usize,
}

impl Remote {
    /// Deletes records that are neither in `keep` nor written after `cutoff`, then the blobs no
    /// kept record needs — but only blobs older than `cutoff` (an upload in progress writes its
    /// blobs before its record), and none at all while a lease is live (renewed within
    /// [`LEASE_STALE`]). Leases older than that were left by dead runs and are deleted.
    pub async fn gc(
        &self,
        keep: &std::collections::HashSet<Fingerprint>,
        cutoff: SystemTime,
        dry_run: bool,
    ) -> Result<RemoteGc, StoreError> {
        let mut report = RemoteGc { dry_run, ..Default::default() };
        let recent = |meta: &object_store::ObjectMeta| SystemTime::from(meta.last_modified) >= cutoff;
        let list = |prefix: &'static str| {
            let prefix = ObjectPath::from(prefix);
            async move {
                self.objects
                    .list(Some(&prefix))
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| self.object_error(&prefix, e))
            }
        };
        let delete = |path: ObjectPath| async move {
            match self.objects.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.object_error(&path, e)),
            }
        };
        let stale = SystemTime::now() - LEASE_STALE;
        for lease in list("leases").await? {
            if SystemTime::from(lease.last_modified) >= stale {
                report.live_leases += 1;
            } else {
                report.removed_leases += 1;
                if !dry_run {
                    delete(lease.location).await?;
                }
            }
        }
        let mut live = std::collections::HashSet::new();
        for meta in list("ac").await? {
            let fp = meta
                .location
                .filename()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<Fingerprint>().ok());
            let keep_it = fp.is_some_and(|fp| keep.contains(&fp)) || recent(&meta);
            let record = match fp {
                Some(fp) if keep_it => self.record(&fp).await.ok().flatten(),
                _ => None,
            };
            let Some(record) = record else {
                report.removed_records += 1;
                if !dry_run {
                    delete(meta.location).await?;
                }
                continue;
            };
            report.kept_records += 1;
            live.insert(record.artifact);
            // A manifest that cannot be read keeps nothing alive: its record is unusable anyway.
            if let Ok(Some(bytes)) = cas::blob(self.objects.as_ref(), &record.artifact).await
                && let Ok(manifest) = Manifest::parse(&bytes)
            {
                live.extend(manifest.files().map(|f| f.3));
            }
        }
        if report.live_leases > 0 {
            return Ok(report);
        }
        for meta in list("cas").await? {
            let digest = meta.location.filename().and_then(|n| n.parse::<Digest>().ok());
            if digest.is_some_and(|d| live.contains(&d)) || recent(&meta) {
                continue;
            }
            report.removed_blobs += 1;
            report.freed_bytes += meta.size;
            if !dry_run {
                delete(meta.location).await?;
            }
        }
        Ok(report)
    }
}

/// An S3 store whose requests are tried again where object_store gives up at once: conditional
/// puts (create-if-absent, update-if-unchanged), which it cannot know to be idempotent, and
/// requests that failed on a pooled connection the peer had closed ("connection was not
/// ready"), which its error classifier does not recognise. Only fast failures are tried again:
/// one that took a second or more has been through object_store's own retries with backoff,
/// and a remote that is down should cost seconds, not minutes. A conditional put tried again
/// may find its own first attempt in place; callers resolve that (see [`Remote::claim`]).
#[derive(Debug)]
struct Persistent(Arc<dyn ObjectStore>);

/// Attempts after the first, and the pause before the first of them (doubling).
const AGAIN: u32 = 3;
const AGAIN_AFTER: Duration = Duration::from_millis(100);

impl Persistent {
    async fn again<T, Fut: std::future::Future<Output = object_store::Result<T>>>(
        mut request: impl FnMut() -> Fut,
    ) -> object_store::Result<T> {
        let mut pause = AGAIN_AFTER;
        for _ in 0..AGAIN {
            let started = Instant::now();
            match request().await {
                Err(object_store::Error::Generic { .. }) if started.elapsed() < Duration::from_secs(1) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                done => return done,
            }
        }
        request().await
    }
}

impl std::fmt::Display for Persistent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Persistent {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Self::again(|| self.0.put_opts(location, payload.clone(), opts.clone())).await
    }
    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        Self::again(|| self.0.get_opts(location, options.clone())).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectPath>> {
        self.0.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&ObjectPath>) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

/// Each request is retried up to 6 times with exponential backoff (0.1 s doubling, at most 5 s
/// apart): transient faults are ridden out, while a remote that is down costs a stage about
/// 6 s before it runs here instead (object_store's default would wait up to 3 minutes).
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 6,
        retry_timeout: Duration::from_secs(60),
    }
}

/// The lease time-to-live: `FLOW_LEASE_SECONDS`, else [`LEASE_SECONDS`].
pub fn lease_ttl() -> Duration {
    let secs = std::env::var("FLOW_LEASE_SECONDS").ok().and_then(|s| s.parse::<u64>().ok()).filter(|&s| s > 0);
    Duration::from_secs(secs.unwrap_or(LEASE_SECONDS))
}

/// S3 settings from the AWS config and credentials files, for what the environment leaves
/// unset (the environment wins, as in the AWS CLI): the profile's access key, secret and session
/// token from `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`), and its `region` and
/// `endpoint_url` from `AWS_CONFIG_FILE` (default `~/.aws/config`). The profile is
/// `AWS_PROFILE`, else `default`.
pub fn aws_settings() -> Vec<(String, String)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let home = env("HOME").map(PathBuf::from).unwrap_or_default();
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let credentials =
        env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from).unwrap_or_else(|| home.join(".aws/credentials"));
    let config = env("AWS_CONFIG_FILE").map(PathBuf::from).unwrap_or_else(|| home.join(".aws/config"));
    let section = |file: &Path, name: &str| -> Vec<(String, String)> {
        let Ok(ini) = ini::Ini::load_from_file(file) else { return Vec::new() };
        ini.section(Some(name))
            .map(|s| s.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
            .unwrap_or_default()
    };
    let config_section = if profile == "default" { "default".to_owned() } else { format!("profile {profile}") };
    let mut out = Vec::new();
    let wanted = [
        (&credentials, profile.as_str(), "aws_access_key_id", "AWS_ACCESS_KEY_ID"),
        (&credentials, profile.as_str(), "aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        (&credentials, profile.as_str(), "aws_session_token", "AWS_SESSION_TOKEN"),
        (&config, config_section.as_str(), "region", "AWS_REGION"),
        (&config, config_section.as_str(), "endpoint_url", "AWS_ENDPOINT_URL"),
    ];
    for (file, name, key, var) in wanted {
        let already = env(var).is_some() || (var == "AWS_REGION" && env("AWS_DEFAULT_REGION").is_some());
        if already {
            continue;
        }
        if let Some((_, v)) = section(file, name).into_iter().find(|(k, _)| k == key) {
            out.push((format!("aws_{}", key.trim_start_matches("aws_")), v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, PutMultipartOptions, PutResult,
    };

    use super::*;
    use crate::store::Provenance;

    /// A local store holding one committed artifact of `files`.
    async fn local(files: &[(&str, Vec<u8>)]) -> (tempfile::TempDir, Store, Record) {
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

    fn quiet() -> OnTransfer {
        Arc::new(|_| {})
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| ((i as u64 * 2654435761) >> 7) as u8 ^ seed).collect()
    }

    /// Checks the artifact of `record` in `store` file by file against `files`.
    async fn holds(store: &Store, record: &Record, files: &[(&str, Vec<u8>)]) {
        let dir = store.materialize(&record.artifact).await.unwrap();
        for (name, bytes) in files {
            assert_eq!(&fs_err::read(dir.join(name)).unwrap(), bytes, "{name}");
        }
    }

    #[tokio::test]
    async fn publish_then_fetch_restores_the_artifact_bit_for_bit() {
        // Three files: one empty, one small, one of several parts (multipart up, ranges down).
        let files = vec![
            ("empty", vec![]),
            ("dir/small.txt", b"hello".to_vec()),
            ("big.bin", pattern(2 * PART as usize + 123, 7)),
        ];
        let (_a, a, record) = local(&files).await;
        let remote = Remote::with_objects("mem://", Arc::new(InMemory::new()), "team");
        let reports = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&reports);
        let on: OnTransfer = Arc::new(move |t| seen.lock().unwrap().push(t));
        let bytes = 2 * PART + 123 + 5;
        assert_eq!(remote.publish(&a, &record, Arc::clone(&on)).await.unwrap(), Published::Created { bytes });
        let last = *reports.lock().unwrap().last().unwrap();
        assert_eq!((last.direction, last.done, last.total), (Direction::Upload, bytes, bytes));
        assert_eq!(remote.publish(&a, &record, quiet()).await.unwrap(), Published::AlreadyThere);

        let (_b, b, _) = local(&[("other", b"x".to_vec())]).await;
        let got = remote.record(&record.fingerprint).await.unwrap().unwrap();
        assert_eq!(got, record);
        remote.fetch(&b, &got, on).await.unwrap();
        assert_eq!(b.record(&record.fingerprint).await.unwrap().unwrap(), record);
        holds(&b, &record, &files).await;
        assert!(b.known_on_remote(&remote.id(), &record.fingerprint));
        assert!(b.verify(false).await.unwrap().problems.is_empty());
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
            if location.as_ref().starts_with("ac/") {
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
        async fn copy_opts(
            &self,
            from: &ObjectPath,
            to: &ObjectPath,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, options).await
        }
    }

    #[tokio::test]
    async fn an_interrupted_publish_leaves_no_record_and_the_next_one_completes_it() {
        let files = vec![("a", b"alpha".to_vec()), ("b", pattern(PART as usize + 1, 3))];
        let (_a, a, record) = local(&files).await;
        let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let cut = Remote::with_objects("mem://", Arc::new(NoRecords(Arc::clone(&memory))), "");
        assert!(cut.publish(&a, &record, quiet()).await.is_err());
        assert!(!a.known_on_remote(&cut.id(), &record.fingerprint));
        let remote = Remote::with_objects("mem://", memory, "");
        assert!(remote.record(&record.fingerprint).await.unwrap().is_none(), "no record after the cut");
        // Blobs and manifest made it; the next publish sends nothing again but the record.
        assert_eq!(remote.publish(&a, &record, quiet()).await.unwrap(), Published::Created { bytes: 0 });
        let (_b, b, _) = local(&[]).await;
        remote.fetch(&b, &remote.record(&record.fingerprint).await.unwrap().unwrap(), quiet()).await.unwrap();
        holds(&b, &record, &files).await;
    }

    #[tokio::test]
    async fn a_blob_longer_or_different_than_declared_is_cut_off_and_nothing_is_kept() {
        let files = vec![("f", b"twelve bytes".to_vec())];
        let (_a, a, record) = local(&files).await;
        let remote = Remote::with_objects("mem://bucket", Arc::new(InMemory::new()), "p");
        remote.publish(&a, &record, quiet()).await.unwrap();
        let digest = Digest::of(b"twelve bytes");
        let (_b, b, _) = local(&[]).await;
        for poison in [b"twelve bytes and more".to_vec(), b"twelve bytez".to_vec()] {
            remote.objects().put(&cas::blob_path(&digest), PutPayload::from(poison)).await.unwrap();
            let err = remote.fetch(&b, &record, quiet()).await.unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { key, .. } if key == &format!("mem://bucket/cas/{}/{digest}", digest.shard())),
                "{err}"
            );
            assert!(b.record(&record.fingerprint).await.unwrap().is_none());
            assert!(!b.blob_file(&digest).exists());
            assert_eq!(fs_err::read_dir(b.root().join("tmp")).unwrap().count(), 0, "no temporary file is left");
        }
    }

    #[tokio::test]
    async fn leases_are_exclusive_renewed_taken_over_only_from_a_stale_version_and_released() {
        let remote = Remote::with_objects("mem://", Arc::new(InMemory::new()), "");
        let fp: Fingerprint = Digest::of(b"fp").hex().parse().unwrap();
        let me = Holder::me("train", "wf", Duration::from_secs(1));
        let other = Holder { host: "elsewhere".into(), pid: 7, ..me.clone() };
        assert!(matches!(remote.lease(&fp).await.unwrap(), Claim::Free));
        let Claim::Taken(lease) = remote.claim(&fp, &me).await.unwrap() else { panic!("a free lease is taken") };
        let Claim::Held { holder, version } = remote.claim(&fp, &other).await.unwrap() else {
            panic!("a taken lease is held")
        };
        assert_eq!(holder.unwrap(), me);
        // The heartbeat (every ttl/4) changes the version: a waiter sees the holder is alive,
        // and a takeover from the old version fails.
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if matches!(remote.lease(&fp).await.unwrap(), Claim::Held { version: v, .. } if v != version) {
                break;
            }
        }
        assert!(remote.take_over(&fp, &other, &version).await.unwrap().is_none());
        // Once the holder is gone, its last version can be taken over, exactly once.
        drop(lease);
        let Claim::Held { version: last, .. } = remote.lease(&fp).await.unwrap() else { panic!("still there") };
        let taken = remote.take_over(&fp, &other, &last).await.unwrap().expect("a silent lease is taken over");
        assert!(remote.take_over(&fp, &me, &last).await.unwrap().is_none());
        let Claim::Held { holder, .. } = remote.lease(&fp).await.unwrap() else { panic!("taken over") };
        assert_eq!(holder.unwrap().host, "elsewhere");
        taken.release().await;
        assert!(matches!(remote.lease(&fp).await.unwrap(), Claim::Free));
    }

    #[tokio::test]
    async fn remote_gc_keeps_what_is_named_or_recent_and_spares_blobs_while_a_lease_lives() {
        let remote = Remote::with_objects("mem://", Arc::new(InMemory::new()), "");
        let (_a, a, kept) = local(&[("k", b"keep me".to_vec())]).await;
        let (_b, b, dropped) = local(&[("d", b"drop me".to_vec())]).await;
        remote.publish(&a, &kept, quiet()).await.unwrap();
        remote.publish(&b, &dropped, quiet()).await.unwrap();
        let keep = HashSet::from([kept.fingerprint]);
        // Everything was written after the cutoff: nothing goes.
        let r = remote.gc(&keep, SystemTime::now() - Duration::from_secs(3600), false).await.unwrap();
        assert_eq!((r.kept_records, r.removed_records, r.removed_blobs), (2, 0, 0));
        // With everything older than the cutoff but a live lease: the unnamed record goes, every
        // blob stays (the leased run may be uploading), and the lease is left alone.
        let everything = SystemTime::now() + Duration::from_secs(3600);
        let fp: Fingerprint = Digest::of(b"running").hex().parse().unwrap();
        let Claim::Taken(lease) = remote.claim(&fp, &Holder::me("s", "w", Duration::from_secs(60))).await.unwrap()
        else {
            panic!("a free lease is taken")
        };
        let r = remote.gc(&keep, everything, false).await.unwrap();
        assert_eq!(
            (r.kept_records, r.removed_records, r.removed_blobs, r.live_leases, r.removed_leases),
            (1, 1, 0, 1, 0)
        );
        assert!(remote.record(&dropped.fingerprint).await.unwrap().is_none());
        lease.release().await;
        // A dry run deletes nothing; the real one removes the dropped file and its manifest.
        let dry = remote.gc(&keep, everything, true).await.unwrap();
        assert_eq!(dry.removed_blobs, 2);
        let r = remote.gc(&keep, everything, false).await.unwrap();
        assert_eq!((r.kept_records, r.removed_records, r.removed_blobs, r.live_leases), (1, 0, 2, 0));
        let (_c, c, _) = local(&[]).await;
        remote.fetch(&c, &kept, quiet()).await.unwrap();
        holds(&c, &kept, &[("k", b"keep me".to_vec())]).await;
    }
}
