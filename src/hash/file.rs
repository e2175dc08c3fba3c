//! Hashing files: [`hash_file`] (blake3, memory-mapped and multi-threaded for big files) and
//! [`StatCache`], which remembers digests by (device, inode, size, mtime, ctime) so unchanged
//! inputs are not re-read, as DVC's state database and git's index do.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Digest;

/// Files at least this big are memory-mapped and hashed on all cores (blake3's tree mode);
/// below it a plain read is cheaper than setting up the map and the thread pool.
const MMAP_THRESHOLD: u64 = 8 << 20;

/// Hashes a file's content. Returns the digest and the number of bytes hashed.
pub fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    let mut hasher = blake3::Hasher::new();
    let len = fs_err::metadata(path)?.len();
    if len >= MMAP_THRESHOLD {
        hasher.update_mmap_rayon(path).map_err(|e| with_path(e, path))?;
    } else {
        let mut file = fs_err::File::open(path)?;
        let mut buf = vec![0u8; len.clamp(4096, 1 << 20) as usize];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok((Digest::from_hasher(&hasher), hasher.count()))
}

fn with_path(err: io::Error, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{err} (hashing `{}`)", path.display()))
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    stamp: Stamp,
    digest: Digest,
}

/// A digest cache keyed by absolute path and validated by the file's stat data.
///
/// A file modified within [`RACY_WINDOW_NS`] of being hashed is not remembered: a write in the
/// same timestamp tick could change the content without changing the stamp (git's "racy clean"
/// problem), so such a file is simply hashed again next time.
#[derive(Default)]
pub struct StatCache {
    entries: HashMap<PathBuf, Entry>,
    dirty: bool,
}

const RACY_WINDOW_NS: i128 = 2_000_000_000;

impl StatCache {
    /// Loads the cache from `path`; a missing or unreadable cache is an empty one, since every
    /// entry can be recomputed.
    pub fn load(path: &Path) -> Self {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<(PathBuf, Entry)>>(&bytes).ok())
            .map(|list| list.into_iter().collect())
            .unwrap_or_default();
        Self { entries, dirty: false }
    }

    /// Writes the cache atomically (temp file + rename) if anything changed.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        fs_err::create_dir_all(dir)?;
        let mut list: Vec<_> = self.entries.iter().collect();
        list.sort_by(|a, b| a.0.cmp(b.0));
        let bytes = serde_json::to_vec(&list).map_err(io::Error::other)?;
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        fs_err::write(tmp.path(), bytes)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Hashes every path (in parallel where they miss the cache), in order.
    pub fn digests(&mut self, paths: &[PathBuf]) -> io::Result<Vec<Digest>> {
        use rayon::prelude::*;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i128;
        let looked: Vec<io::Result<(Stamp, Option<Digest>)>> = paths
            .iter()
            .map(|path| {
                let meta = fs_err::metadata(path)?;
                let stamp = Stamp::of(&meta);
                let hit = self.entries.get(path).filter(|e| e.stamp == stamp).map(|e| e.digest);
                Ok((stamp, hit))
            })
            .collect();
        let looked = looked.into_iter().collect::<io::Result<Vec<_>>>()?;
        let hashed: Vec<io::Result<Digest>> = paths
            .par_iter()
            .zip(looked.par_iter())
            .map(|(path, (_, hit))| match hit {
                Some(d) => Ok(*d),
                None => hash_file(path).map(|(d, _)| d),
            })
            .collect();
        let mut out = Vec::with_capacity(paths.len());
        for ((path, (stamp, hit)), digest) in paths.iter().zip(looked).zip(hashed) {
            let digest = digest?;
            if hit.is_none() && now - stamp.mtime_ns > RACY_WINDOW_NS {
                self.entries.insert(path.clone(), Entry { stamp, digest });
                self.dirty = true;
            }
            out.push(digest);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_file_matches_in_memory_hash_for_small_and_mapped_files() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0usize, 5, 100_000, MMAP_THRESHOLD as usize + 17] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.path().join(format!("f{size}"));
            std::fs::write(&path, &bytes).unwrap();
            let (digest, len) = hash_file(&path).unwrap();
            assert_eq!(digest, Digest::of(&bytes), "size {size}");
            assert_eq!(len, size as u64);
        }
    }

    #[test]
    fn stat_cache_notices_a_rewrite_with_the_same_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "one").unwrap();
        let mut cache = StatCache::default();
        let first = cache.digests(std::slice::from_ref(&path)).unwrap()[0];
        assert_eq!(first, Digest::of(b"one"));
        std::fs::write(&path, "two").unwrap();
        let second = cache.digests(std::slice::from_ref(&path)).unwrap()[0];
        assert_eq!(second, Digest::of(b"two"));
    }

    #[test]
    fn stat_cache_round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "old").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        let mut cache = StatCache::default();
        cache.digests(std::slice::from_ref(&path)).unwrap();
        let store = dir.path().join("state/files.json");
        cache.save(&store).unwrap();
        let reloaded = StatCache::load(&store);
        assert_eq!(reloaded.entries.len(), 1);
        assert_eq!(reloaded.entries[&path].digest, Digest::of(b"old"));
    }
}
