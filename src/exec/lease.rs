//! Settling with the remote before a stage runs: download a result that appeared meanwhile,
//! or take the fingerprint's lease (with `--push`), or wait while another machine's live lease
//! is renewed — taking it over once its holder has been silent for the lease's time-to-live,
//! measured on this machine's clock.

use std::time::{Duration, Instant};

use super::error_chain;
use super::event::{Event, StageOutcome};
use super::stage_run::StageRun;
use crate::store::StoreError;
use crate::store::remote::{Claim, Holder, Lease, Remote, lease_ttl};

/// What the remote says about a stage that has no local record.
pub(super) enum Turn {
    /// Its artifact was downloaded (or the wait for it was interrupted).
    Done(StageOutcome),
    /// Run it here, holding the lease if one was taken.
    Run(Option<Lease>),
}

impl StageRun {
    /// Before running: download a result that appeared meanwhile, or take the fingerprint's
    /// lease (with `--push`), or wait while another machine's live lease is renewed — taking
    /// it over once its holder has been silent for the lease's time-to-live.
    pub(super) async fn turn(&self, remote: &Remote, started: Instant) -> Result<Turn, StoreError> {
        let ttl = lease_ttl();
        let me = Holder::me(self.name(), &self.p.workflow.name, ttl);
        let poll = (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(2));
        let mut seen: Option<(String, Instant)> = None;
        let mut announced = None;
        // The caller has just looked the remote up; look again after each wait.
        loop {
            let claim = if self.push {
                remote.claim(&self.fingerprint, &me).await
            } else {
                remote.lease(&self.fingerprint).await
            };
            let (holder, version) = match claim {
                Ok(Claim::Taken(lease)) => return self.taken(lease, started).await,
                Ok(Claim::Free) => return Ok(Turn::Run(None)),
                Ok(Claim::Held { holder, version }) => (holder, version),
                Err(e) => {
                    self.notice(format!("cannot use leases: {}; running without one", error_chain(&e)));
                    return Ok(Turn::Run(None));
                }
            };
            if self.no_wait {
                return Ok(Turn::Run(None));
            }
            let who = holder.as_ref().map_or_else(|| "an unreadable lease".to_owned(), Holder::to_string);
            let expiry = holder.as_ref().map_or(ttl, |h| Duration::from_secs(h.ttl_seconds.clamp(1, 3600)));
            match &seen {
                // Expiry is measured on this machine's clock, from when this state of the lease
                // was first seen: clocks of other machines are never trusted.
                Some((v, since)) if *v == version => {
                    if since.elapsed() > expiry {
                        if !self.push {
                            return Ok(Turn::Run(None));
                        }
                        match remote.take_over(&self.fingerprint, &me, &version).await {
                            Ok(Some(lease)) => {
                                self.notice(format!(
                                    "took over the lease of {who}: not renewed for {}s",
                                    expiry.as_secs()
                                ));
                                return self.taken(lease, started).await;
                            }
                            Ok(None) => seen = None,
                            Err(e) => {
                                self.notice(format!(
                                    "cannot take over the lease: {}; running without one",
                                    error_chain(&e)
                                ));
                                return Ok(Turn::Run(None));
                            }
                        }
                    }
                }
                _ => seen = Some((version, Instant::now())),
            }
            if announced.as_ref() != Some(&who) {
                (self.sink)(&Event::StageWaiting {
                    stage: self.name().to_owned(),
                    fingerprint: self.fingerprint,
                    holder: Some(who.clone()),
                });
                announced = Some(who);
            }
            let mut cancel = self.cancel.clone();
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = cancel.changed() => {}
            }
            if *self.cancel.borrow() {
                return Ok(Turn::Done(self.failed_outcome(started, "interrupted".into(), None)));
            }
            if let Some(hit) = self.cached(started).await? {
                return Ok(Turn::Done(hit));
            }
        }
    }

    /// A lease was just taken: the holder before us may have published and released between
    /// our lookup and our claim, so look once more.
    async fn taken(&self, lease: Lease, started: Instant) -> Result<Turn, StoreError> {
        match self.cached(started).await {
            Ok(Some(hit)) => {
                lease.release().await;
                Ok(Turn::Done(hit))
            }
            Ok(None) => Ok(Turn::Run(Some(lease))),
            Err(e) => {
                lease.release().await;
                Err(e)
            }
        }
    }
}
