//! `flow verify`: every blob re-hashed, every record and manifest read strictly, every
//! materialised tree checked against its manifest; `--repair` drops what is corrupt so the next
//! apply re-runs it.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::tree::remove_file_forcibly;
use super::{Manifest, Store, StoreError, cas};
use crate::hash::file::hash_file;
use crate::hash::{Digest, Fingerprint};

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub blobs: usize,
    pub records: usize,
    pub problems: Vec<String>,
    pub repaired: usize,
}

impl Store {
    /// Re-hashes every blob, and checks every record's manifest and blobs and every
    /// materialised tree. With `repair`, deletes what is corrupt and the records that depend on
    /// it, so the next apply re-runs those stages.
    pub async fn verify(&self, repair: bool) -> Result<VerifyReport, StoreError> {
        use rayon::prelude::*;
        let mut report = VerifyReport::default();
        let blobs = self.list_blobs()?;
        report.blobs = blobs.len();
        let bad: Vec<(Digest, PathBuf)> = blobs
            .par_iter()
            .filter_map(|(d, p)| match hash_file(p) {
                Ok((actual, _)) if actual == *d => None,
                _ => Some((*d, p.clone())),
            })
            .collect();
        let corrupt: HashSet<Digest> = bad.iter().map(|(d, _)| *d).collect();
        for (d, _) in &bad {
            report.problems.push(format!("blob `{}` is corrupt", cas::blob_path(d)));
        }
        let present: HashSet<Digest> = blobs.iter().map(|(d, _)| *d).collect();
        let mut broken_records = Vec::new();
        for fp in self.list_records()? {
            let key = cas::record_path(&fp).to_string();
            report.records += 1;
            let record = match self.record(&fp).await {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    report.problems.push(format!("record `{key}`: {e}"));
                    broken_records.push((fp, None));
                    continue;
                }
            };
            let manifest = if corrupt.contains(&record.artifact) || !present.contains(&record.artifact) {
                report
                    .problems
                    .push(format!("record `{key}` points at a missing or corrupt manifest {}", record.artifact));
                broken_records.push((fp, Some(record.artifact)));
                continue;
            } else {
                match self.manifest(&record.artifact).await {
                    Ok(m) => m,
                    Err(e) => {
                        report.problems.push(format!("record `{key}`: {e}"));
                        broken_records.push((fp, Some(record.artifact)));
                        continue;
                    }
                }
            };
            let missing: Vec<Digest> =
                manifest.files().map(|f| f.3).filter(|d| corrupt.contains(d) || !present.contains(d)).collect();
            if !missing.is_empty() {
                report.problems.push(format!(
                    "record `{key}` (stage `{}`) needs {} missing or corrupt blob(s), e.g. {}",
                    record.stage,
                    missing.len(),
                    missing[0]
                ));
                broken_records.push((fp, Some(record.artifact)));
            } else if let Err(p) = self.check_tree(&record.artifact, &manifest) {
                report.problems.push(p);
                broken_records.push((fp, Some(record.artifact)));
            }
        }
        if repair {
            for (_, path) in &bad {
                remove_file_forcibly(path)?;
            }
            for (fp, artifact) in &broken_records {
                remove_file_forcibly(&self.root.join(cas::record_path(fp).as_ref()))?;
                if let Some(a) = artifact {
                    self.remove_tree(&self.artifact_dir(a))?;
                }
            }
            report.repaired = bad.len() + broken_records.len();
        }
        Ok(report)
    }

    /// Checks a materialised tree against its manifest; files that are hard links of their blob
    /// were covered by the blob check.
    fn check_tree(&self, artifact: &Digest, manifest: &Manifest) -> Result<(), String> {
        let dir = self.artifact_dir(artifact);
        if !dir.is_dir() {
            return Ok(());
        }
        for (path, _, _, digest) in manifest.files() {
            let file = dir.join(path);
            let (Ok(meta), Ok(blob)) = (fs_err::metadata(&file), fs_err::metadata(self.blob_file(&digest))) else {
                return Err(format!("artifact {artifact}: file `{path}` is missing"));
            };
            if meta.ino() == blob.ino() && meta.dev() == blob.dev() {
                continue;
            }
            match hash_file(&file) {
                Ok((d, _)) if d == digest => {}
                _ => return Err(format!("artifact {artifact}: file `{path}` was modified")),
            }
        }
        Ok(())
    }

    pub(super) fn list_blobs(&self) -> Result<Vec<(Digest, PathBuf)>, StoreError> {
        let mut out = Vec::new();
        for shard in fs_err::read_dir(self.root.join("cas"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for blob in fs_err::read_dir(shard.path())? {
                let blob = blob?;
                if let Some(d) = blob.file_name().to_str().and_then(|n| n.parse::<Digest>().ok()) {
                    out.push((d, blob.path()));
                }
            }
        }
        Ok(out)
    }

    pub(super) fn list_records(&self) -> Result<Vec<Fingerprint>, StoreError> {
        let mut out = Vec::new();
        for entry in fs_err::read_dir(self.root.join("ac"))? {
            let name = entry?.file_name();
            if let Some(fp) = name.to_str().and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse().ok()) {
                out.push(fp);
            }
        }
        Ok(out)
    }
}
