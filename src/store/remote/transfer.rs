//! Moving blobs between a remote and local files: verified downloads (streamed, or in ranges
//! for large blobs), uploads hashed as they are read (in parts for large blobs), and the
//! [`Meter`] that reports their progress as [`Transfer`]s.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, WriteMultipart};
use serde::Serialize;

use super::Remote;
use crate::hash::Digest;
use crate::store::{StoreError, cas};

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
pub const PARALLEL: usize = 8;
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
pub struct Meter {
    direction: Direction,
    total: u64,
    done: AtomicU64,
    started: Instant,
    last: Mutex<Instant>,
    on: OnTransfer,
}

impl Meter {
    pub fn new(direction: Direction, total: u64, on: OnTransfer) -> Self {
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

    pub fn finish(&self) {
        if self.total > 0 {
            self.report(self.done.load(Ordering::Relaxed));
        }
    }
}

impl Remote {
    /// Of `files` (blob digest → size), those the remote lacks. Small blobs count as lacking
    /// without asking: their upload is one create-if-absent request, which the remote answers
    /// "already there" for those it has; larger ones are asked about, so bytes the remote holds
    /// are not sent again.
    pub async fn lacking(&self, files: BTreeMap<Digest, u64>) -> Result<Vec<(Digest, u64)>, StoreError> {
        futures::stream::iter(files)
            .map(|(d, size)| async move {
                let has = size > SMALL
                    && cas::has(self.objects.as_ref(), &cas::blob_path(&d)).await.map_err(|e| self.locate(e))?;
                Ok::<_, StoreError>((!has).then_some((d, size)))
            })
            .buffer_unordered(PARALLEL * 4)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await
    }

    /// Downloads blob `digest` of `size` bytes into the empty file `to`, verified: an error
    /// unless what arrived hashes to `digest`. Small blobs stream in one request, cut off past
    /// `size`; large ones arrive as ranges, several at once, written in place.
    pub async fn download(&self, digest: Digest, size: u64, to: &Path, meter: &Meter) -> Result<(), StoreError> {
        let path = cas::blob_path(&digest);
        let file = &fs_err::OpenOptions::new().write(true).open(to)?.into_parts().0;
        let actual = if size > RANGE {
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
            crate::hash::file::hash_file(to)?.0
        } else {
            let mut stream = match self.objects.get(&path).await {
                Ok(r) => r.into_stream(),
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(self.locate(StoreError::Missing { key: path.to_string() }));
                }
                Err(e) => return Err(self.object_error(&path, e)),
            };
            let mut hasher = blake3::Hasher::new();
            let mut file = file;
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
        Ok(())
    }

    /// Uploads one local blob: small ones in one request, large ones in parts, several parts
    /// in flight. The content is hashed as it is read; on a mismatch the upload is aborted.
    /// Returns the bytes sent: 0 when the remote already had the blob.
    pub async fn upload(&self, file: &Path, digest: Digest, size: u64, meter: &Meter) -> Result<u64, StoreError> {
        let path = cas::blob_path(&digest);
        let corrupt = |actual| StoreError::Corrupt { key: format!("{} (local)", cas::blob_path(&digest)), actual };
        if size <= PART {
            let bytes = Bytes::from(tokio::fs::read(file).await?);
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
        let source = Arc::new(fs_err::File::open(file)?.into_parts().0);
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
}
