//! Artifacts as directory trees: materialised read-only trees of hard links to blobs (built in
//! `tmp/`, renamed into place, verified as they are linked), checkouts as ordinary writable
//! copies, and the file-mode helpers that seal and unseal them.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Entry, Manifest, Store, StoreError, cas};
use crate::hash::Digest;
use crate::hash::file::hash_file;

impl Store {
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
    pub(super) fn build_tree(&self, manifest: &Manifest, dir: &Path, verify: bool) -> Result<(), StoreError> {
        let tmp = tempfile::Builder::new().prefix("tree-").tempdir_in(self.root.join("tmp"))?;
        for entry in &manifest.entries {
            let target = tmp.path().join(entry.path());
            if let Some(parent) = target.parent().filter(|p| *p != tmp.path()) {
                fs_err::create_dir_all(parent)?;
            }
            match entry {
                Entry::File { digest, executable, .. } => {
                    let blob = self.blob_file(digest);
                    let meta = match std::fs::metadata(&blob) {
                        Ok(m) if m.is_file() => m,
                        _ => return Err(StoreError::Missing { key: cas::blob_path(digest).to_string() }),
                    };
                    if verify {
                        let (actual, _) = hash_file(&blob)?;
                        if actual != *digest {
                            return Err(StoreError::Corrupt { key: cas::blob_path(digest).to_string(), actual });
                        }
                    }
                    let blob_exec = meta.mode() & 0o111 != 0;
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
        self.place_tree(&tmp.keep(), dir)
    }

    /// Seals the tree `from` (one built in `tmp/`, or a finished output directory whose files are
    /// hard links to their blobs) and renames it to `dir`. Its root is sealed only once in
    /// place: a directory that is not writable cannot move to another parent (its `..` entry
    /// changes), except for root.
    pub(super) fn place_tree(&self, from: &Path, dir: &Path) -> Result<(), StoreError> {
        seal_dirs(from)?;
        fs_err::set_permissions(from, std::fs::Permissions::from_mode(0o755))?;
        match fs_err::rename(from, dir) {
            Ok(()) => Ok(fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o555))?),
            // Another process materialised it first: theirs is as good as ours.
            Err(_) if dir.is_dir() => self.remove_tree(from),
            Err(e) => Err(e.into()),
        }
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

    pub(super) fn remove_tree(&self, dir: &Path) -> Result<(), StoreError> {
        // Most trees hold no sealed directory: try the plain removal first, and walk the tree
        // making directories writable only when it is refused.
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(_) => {
                unseal_dirs(dir)?;
                fs_err::remove_dir_all(dir)?;
                Ok(())
            }
        }
    }
}

pub(super) fn set_readonly(path: &Path, executable: bool) -> io::Result<()> {
    let mode = if executable { 0o555 } else { 0o444 };
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Makes every directory under `dir` read-only, so stages see their inputs as such.
pub(super) fn seal_dirs(dir: &Path) -> io::Result<()> {
    set_dir_modes(dir, 0o555)
}

pub(super) fn unseal_dirs(dir: &Path) -> io::Result<()> {
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

pub(super) fn remove_file_forcibly(path: &Path) -> io::Result<()> {
    match fs_err::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
