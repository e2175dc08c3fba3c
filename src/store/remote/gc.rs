//! Garbage collection on the remote: records no lock file names and no recent run wrote go,
//! then the blobs no kept record needs — but never while a lease is live, since its run may be
//! uploading blobs before its record.

use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;

use super::Remote;
use crate::hash::{Digest, Fingerprint};
use crate::store::{Manifest, StoreError, cas};

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
        let mut kept = std::collections::HashSet::new();
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
            kept.insert(record.fingerprint);
            live.insert(record.artifact);
            // A manifest that cannot be read keeps nothing alive: its record is unusable anyway.
            if let Ok(Some(bytes)) = cas::blob(self.objects.as_ref(), &record.artifact).await
                && let Ok(manifest) = Manifest::parse(&bytes)
            {
                live.extend(manifest.files().map(|f| f.3));
            }
        }
        // Signatures go with their record (`att/<fingerprint>/<key id>.json`); a recent one may
        // belong to a record published since the records were listed.
        for meta in list("att").await? {
            let fp = meta.location.parts().nth(1).and_then(|p| p.as_ref().parse::<Fingerprint>().ok());
            if fp.is_some_and(|fp| kept.contains(&fp)) || recent(&meta) {
                continue;
            }
            if !dry_run {
                delete(meta.location).await?;
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::*;
    use crate::store::Tiered;
    use crate::store::remote::{Claim, Holder};
    use crate::store::tiered::tests::{holds, local, quiet};

    #[tokio::test]
    async fn remote_gc_keeps_what_is_named_or_recent_and_spares_blobs_while_a_lease_lives() {
        let remote = Arc::new(Remote::with_objects("mem://", Arc::new(InMemory::new()), ""));
        let signer = crate::store::trust::SecretKey::generate("gc").unwrap();
        let trust = crate::store::trust::Trust { signer: Some(signer), ..Default::default() };
        let tier = |store| Tiered::new(Arc::new(store), Some(Arc::clone(&remote))).with_trust(trust.clone());
        let signatures = |fp: Fingerprint| {
            let remote = Arc::clone(&remote);
            async move { remote.names(&crate::store::trust::attestations_of(&fp)).await.unwrap().len() }
        };
        let (_a, a, kept) = local(&[("k", b"keep me".to_vec())]).await;
        let (_b, b, dropped) = local(&[("d", b"drop me".to_vec())]).await;
        tier(a).publish(&kept, &crate::store::trust::Built::default(), quiet()).await.unwrap();
        tier(b).publish(&dropped, &crate::store::trust::Built::default(), quiet()).await.unwrap();
        let keep = HashSet::from([kept.fingerprint]);
        // Everything was written after the cutoff: nothing goes.
        let r = remote.gc(&keep, SystemTime::now() - Duration::from_secs(3600), false).await.unwrap();
        assert_eq!((r.kept_records, r.removed_records, r.removed_blobs), (2, 0, 0));
        assert_eq!((signatures(kept.fingerprint).await, signatures(dropped.fingerprint).await), (1, 1));
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
        assert_eq!(
            (signatures(kept.fingerprint).await, signatures(dropped.fingerprint).await),
            (1, 0),
            "a signature goes with its record"
        );
        lease.release().await;
        // A dry run deletes nothing; the real one removes the dropped file and its manifest.
        let dry = remote.gc(&keep, everything, true).await.unwrap();
        assert_eq!(dry.removed_blobs, 2);
        let r = remote.gc(&keep, everything, false).await.unwrap();
        assert_eq!((r.kept_records, r.removed_records, r.removed_blobs, r.live_leases), (1, 0, 2, 0));
        let (_c, c, _) = local(&[]).await;
        let c = tier(c);
        c.backfill(&kept, quiet()).await.unwrap();
        holds(c.local(), &kept, &[("k", b"keep me".to_vec())]).await;
    }
}
