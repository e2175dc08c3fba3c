//! Leases: `leases/<fingerprint>` on the remote says who is running a fingerprint now, so two
//! machines sharing a remote do not run it twice. A lease is taken by a create-if-absent put,
//! renewed by a heartbeat, and expires when its holder falls silent for its time-to-live —
//! measured on the waiting machine's clock, never the holder's — after which it may be taken
//! over, from exactly the state that was seen.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::Remote;
use crate::hash::Fingerprint;
use crate::store::StoreError;

/// How long a lease lives without a heartbeat (`FLOW_LEASE_SECONDS` overrides it).
pub const LEASE_SECONDS: u64 = 60;

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

/// The lease time-to-live: `FLOW_LEASE_SECONDS`, else [`LEASE_SECONDS`].
pub fn lease_ttl() -> Duration {
    let secs = std::env::var("FLOW_LEASE_SECONDS").ok().and_then(|s| s.parse::<u64>().ok()).filter(|&s| s > 0);
    Duration::from_secs(secs.unwrap_or(LEASE_SECONDS))
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;
    use crate::hash::Digest;

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
}
