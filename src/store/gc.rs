//! `flow gc` on the local store: records no lock file names and no recent run wrote go, then
//! the blobs, trees and old scratch directories nothing kept needs. It holds the store-wide
//! lock exclusively, so no commit is between its blobs and its record meanwhile.

use std::collections::{BTreeSet, HashSet};
use std::time::SystemTime;

use super::tree::remove_file_forcibly;
use super::{Store, StoreError, cas};
use crate::hash::{Digest, Fingerprint};

#[derive(Debug, Default)]
pub struct GcReport {
    pub dry_run: bool,
    pub kept_records: usize,
    pub removed_records: usize,
    pub removed_blobs: usize,
    pub removed_trees: usize,
    pub removed_scratch: usize,
    pub freed_bytes: u64,
}

impl Store {
    /// Deletes everything not reachable from the records in `keep` or created after `cutoff`.
    pub async fn gc(
        &self,
        keep: &HashSet<Fingerprint>,
        cutoff: SystemTime,
        dry_run: bool,
    ) -> Result<GcReport, StoreError> {
        let _exclusive = self.gc_lock(true)?;
        let mut report = GcReport { dry_run, ..Default::default() };
        let mut live: HashSet<Digest> = HashSet::new();
        let mut live_artifacts: BTreeSet<Digest> = BTreeSet::new();
        for fp in self.list_records()? {
            let path = self.root.join(cas::record_path(&fp).as_ref());
            let recent = fs_err::metadata(&path)?.modified()? >= cutoff;
            let record = self.record(&fp).await.ok().flatten();
            match record {
                Some(r) if keep.contains(&fp) || recent => {
                    if let Ok(m) = self.manifest(&r.artifact).await {
                        live.insert(r.artifact);
                        live_artifacts.insert(r.artifact);
                        live.extend(m.files().map(|f| f.3));
                    }
                    report.kept_records += 1;
                }
                _ => {
                    report.removed_records += 1;
                    if !dry_run {
                        remove_file_forcibly(&path)?;
                        let _ = fs_err::remove_file(self.log_path(&fp));
                    }
                }
            }
        }
        for (digest, path) in self.list_blobs()? {
            if live.contains(&digest) {
                continue;
            }
            report.removed_blobs += 1;
            report.freed_bytes += fs_err::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                remove_file_forcibly(&path)?;
            }
        }
        // Scratch directories of runs that failed or were interrupted long ago; a running
        // fingerprint holds its lock and is left alone.
        for entry in fs_err::read_dir(self.root.join("scratch"))? {
            let entry = entry?;
            let Some(fp) = entry.file_name().to_str().and_then(|n| n.parse::<Fingerprint>().ok()) else { continue };
            if fs_err::metadata(entry.path())?.modified()? >= cutoff {
                continue;
            }
            if let Some(_lock) = self.try_lock(&fp)? {
                report.removed_scratch += 1;
                if !dry_run {
                    self.remove_tree(&entry.path())?;
                }
            }
        }
        if !dry_run {
            self.sweep()?;
        }
        for entry in fs_err::read_dir(self.root.join("artifacts"))? {
            let entry = entry?;
            let digest = entry.file_name().to_str().and_then(|n| n.parse::<Digest>().ok());
            if digest.is_some_and(|d| live_artifacts.contains(&d)) {
                continue;
            }
            report.removed_trees += 1;
            if !dry_run {
                self.remove_tree(&entry.path())?;
            }
        }
        Ok(report)
    }
}
