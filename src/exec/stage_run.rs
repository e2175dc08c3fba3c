//! One stage's life ([`StageRun`]): look it up in the tiered store, take its run lock, settle
//! with the remote's lease ([`super::lease`]), end what an earlier attempt left running, run the
//! process in a new attempt directory, commit the output, publish it. Every step reports an
//! [`Event`]; only store failures are errors.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::event::{Event, StageOutcome, Status};
use super::process::{Attempt, Placement};
use super::runner::{self, Exit, ProcessSpec};
use super::schedule::Sink;
use super::slurm::{self, JobEvent};
use super::{Prepared, error_chain, leftovers};
use crate::hash::{Digest, Fingerprint};
use crate::spec::executor::Executor;
use crate::stages::Progress;
use crate::store::remote::OnTransfer;
use crate::store::{Hit, Provenance, Published, Record, StoreError, Tiered};

/// Lines of a failed stage's log shown with its failure.
const LOG_TAIL: usize = 20;

/// A stage's final outcome, and whether a store failure caused it.
pub(super) struct Done {
    pub(super) index: usize,
    pub(super) outcome: StageOutcome,
    pub(super) store_error: bool,
}

/// One stage's journey through a run.
pub(super) struct StageRun {
    pub(super) p: Arc<Prepared>,
    pub(super) tiers: Arc<Tiered>,
    pub(super) index: usize,
    pub(super) fingerprint: Fingerprint,
    pub(super) force: bool,
    pub(super) push: bool,
    pub(super) no_wait: bool,
    pub(super) sink: Sink,
    pub(super) cancel: watch::Receiver<bool>,
    /// Artifact digests of the stages this one needs, by stage index.
    pub(super) upstream: BTreeMap<usize, Digest>,
    /// Told this stage's index when its process has succeeded, before the commit.
    pub(super) exited: tokio::sync::mpsc::UnboundedSender<usize>,
    /// Notices given: a stage looks its fingerprint up more than once (before and after its
    /// run lock), and says the same thing once.
    pub(super) said: Mutex<std::collections::BTreeSet<String>>,
}

/// What the process of an attempt reported beside its exit: the device it used, where it got
/// to, and the latest value of each scalar it reported.
#[derive(Default)]
struct Reported {
    device: Option<String>,
    step: Option<(u64, u64)>,
    scalars: BTreeMap<String, f64>,
    /// A line that could not be read was reported (once per attempt).
    malformed: bool,
}

impl Reported {
    /// The record's metrics: the step and total reached and each scalar's latest finite value.
    fn metrics(self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        if let Some((step, total)) = self.step {
            out.insert("step".into(), step.into());
            out.insert("total".into(), total.into());
        }
        for (name, v) in self.scalars {
            if let Some(n) = serde_json::Number::from_f64(v) {
                out.insert(name, n.into());
            }
        }
        out
    }
}

impl StageRun {
    pub(super) fn name(&self) -> &str {
        self.p.name(self.index)
    }

    pub(super) fn outcome(&self, status: Status, artifact: Option<Digest>, seconds: f64) -> StageOutcome {
        StageOutcome {
            stage: self.name().to_owned(),
            status,
            fingerprint: Some(self.fingerprint),
            artifact,
            seconds,
            reason: None,
            log: None,
            log_tail: Vec::new(),
            pushed: None,
        }
    }

    pub(super) fn failed_outcome(&self, started: Instant, why: String, log: Option<PathBuf>) -> StageOutcome {
        let mut o = self.outcome(Status::Failed, None, started.elapsed().as_secs_f64());
        o.reason = Some(why);
        o.log_tail = log.as_deref().map(|l| runner::tail(l, LOG_TAIL)).unwrap_or_default();
        o.log = log;
        o
    }

    pub(super) fn store_failure(&self, started: Instant, e: &StoreError) -> Done {
        let mut outcome = self.outcome(Status::Failed, None, started.elapsed().as_secs_f64());
        outcome.reason = Some(error_chain(e));
        Done { index: self.index, outcome, store_error: true }
    }

    pub(super) fn notice(&self, message: String) {
        if !self.said.lock().expect("notices lock").insert(message.clone()) {
            return;
        }
        (self.sink)(&Event::Notice { stage: self.name().to_owned(), message });
    }

    fn on_transfer(&self) -> OnTransfer {
        on_transfer(&self.sink, self.name())
    }

    /// Runs the stage where the scheduler placed it.
    pub(super) async fn run(&self, placement: Placement) -> Done {
        let started = Instant::now();
        match self.attempt(started, placement).await {
            Ok(outcome) => Done { index: self.index, outcome, store_error: false },
            Err(e) => self.store_failure(started, &e),
        }
    }

    /// Runs a transfer unless Ctrl-C comes first; a transfer cut off writes no record, here or
    /// on the remote.
    pub(super) async fn unless_cancelled<T>(&self, transfer: impl Future<Output = T>) -> Option<T> {
        let mut cancel = self.cancel.clone();
        tokio::select! {
            done = transfer => Some(done),
            _ = cancel.wait_for(|c| *c) => None,
        }
    }

    /// The stage's artifact if a tier has it: a local hit (published with `--push` if the
    /// remote is not known to have it), or a remote one, downloaded and verified. A remote
    /// object that is missing, corrupt or hostile is reported and not used: the stage then runs
    /// here. Only local failures (a full disk) are errors.
    pub(super) async fn cached(&self, started: Instant) -> Result<Option<StageOutcome>, StoreError> {
        if self.force {
            return Ok(None);
        }
        let interrupted = || Ok(Some(self.failed_outcome(started, "interrupted".into(), None)));
        // A local lookup is quick and always answers; one that may go to the remote can be cut.
        let hit = if self.tiers.remote().is_none() {
            self.tiers.lookup(&self.fingerprint).await
        } else {
            let Some(hit) = self.unless_cancelled(self.tiers.lookup(&self.fingerprint)).await else {
                return interrupted();
            };
            hit
        };
        let record = match hit? {
            Hit::Local(record) => return self.local_hit(record, started).await.map(Some),
            Hit::Remote(record) => record,
            Hit::Miss { remote_problem: None } => return Ok(None),
            Hit::Miss { remote_problem: Some(e) } => {
                self.notice(format!("{}; running it here", error_chain(&e)));
                return Ok(None);
            }
        };
        let Some(fetched) = self.unless_cancelled(self.tiers.backfill(&record, self.on_transfer())).await else {
            return interrupted();
        };
        match fetched {
            Ok(()) => {}
            Err(e @ StoreError::Io(_)) => return Err(e),
            Err(e) => {
                self.notice(format!("{}; running it here", error_chain(&e)));
                return Ok(None);
            }
        }
        self.tiers.local().materialize(&record.artifact).await?;
        Ok(Some(self.outcome(Status::Downloaded, Some(record.artifact), started.elapsed().as_secs_f64())))
    }

    async fn local_hit(&self, record: Record, started: Instant) -> Result<StageOutcome, StoreError> {
        tracing::debug!(stage = self.name(), artifact = %record.artifact, "record found");
        self.tiers.local().materialize(&record.artifact).await?;
        let mut outcome = self.outcome(Status::Cached, Some(record.artifact), started.elapsed().as_secs_f64());
        if self.push && !self.tiers.known_on_remote(&self.fingerprint) {
            outcome.pushed = Some(self.publish(&record).await?);
        }
        Ok(outcome)
    }

    /// Publishes `record` to the remote, cancellably; the bytes uploaded.
    async fn publish(&self, record: &Record) -> Result<u64, StoreError> {
        // Every input is built by now, so the recipe is known; without one the provenance is
        // thinner, never wrong.
        let recipe = self.p.recipe(self.index, |j| self.upstream.get(&j).copied());
        let built = recipe.map(|r| r.built(&self.p.need_names(self.index))).unwrap_or_default();
        let Some(published) = self.unless_cancelled(self.tiers.publish(record, &built, self.on_transfer())).await
        else {
            let url = self.tiers.remote().map(|r| r.url().to_owned()).unwrap_or_default();
            return Err(StoreError::Interrupted { what: format!("publishing to {url}") });
        };
        Ok(match published? {
            Published::Created { bytes } => bytes,
            Published::AlreadyThere => 0,
        })
    }

    /// Takes the run lock (another process may be running this fingerprint: wait for it, then
    /// look again), settles with the remote, runs the stage and releases the lease, if taken,
    /// whatever happens.
    async fn attempt(&self, started: Instant, placement: Placement) -> Result<StageOutcome, StoreError> {
        let Some(lock) = self.run_lock().await? else {
            return Ok(self.failed_outcome(started, "interrupted".into(), None));
        };
        if let Some(hit) = self.cached(started).await? {
            return Ok(hit);
        }
        let lease = match self.tiers.remote().filter(|_| !self.force) {
            Some(remote) => match self.turn(remote, started).await? {
                super::lease::Turn::Done(outcome) => return Ok(outcome),
                super::lease::Turn::Run(lease) => lease,
            },
            None => None,
        };
        let result = self.execute(started, placement).await;
        if let Some(lease) = lease {
            lease.release().await;
        }
        drop(lock);
        result
    }

    /// The fingerprint's run lock, polled (not a blocking flock) so that Ctrl-C can stop the
    /// wait; `None` when interrupted.
    async fn run_lock(&self) -> Result<Option<crate::store::RunLock>, StoreError> {
        let fp = self.fingerprint;
        let mut delay = Duration::from_millis(5);
        let mut announced = false;
        loop {
            let store = Arc::clone(self.tiers.local());
            if let Some(lock) = tokio::task::spawn_blocking(move || store.try_lock(&fp)).await.expect("lock task")? {
                return Ok(Some(lock));
            }
            if !announced {
                (self.sink)(&Event::StageWaiting { stage: self.name().to_owned(), fingerprint: fp, holder: None });
                announced = true;
            }
            if *self.cancel.borrow() {
                return Ok(None);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// Runs the process in a new attempt directory, commits its output and, with `--push`,
    /// publishes it.
    async fn execute(&self, started: Instant, placement: Placement) -> Result<StageOutcome, StoreError> {
        if *self.cancel.borrow() {
            return Ok(self.failed_outcome(started, "interrupted".into(), None));
        }
        (self.sink)(&Event::StageStarted { stage: self.name().to_owned(), fingerprint: self.fingerprint });
        if let Err(why) = self.end_leftovers().await {
            return Ok(self.failed_outcome(started, why, None));
        }
        let store = self.tiers.local();
        let resume = store.resume_dir(&self.fingerprint);
        let out = store.fresh_attempt(&self.fingerprint)?;
        let attempt = Attempt {
            p: &self.p,
            i: self.index,
            fingerprint: self.fingerprint,
            inputs: self.input_dirs(),
            out: &out,
            resume: &resume,
            placement,
        };
        let spec = attempt.spec()?;
        let log = store.log_path(&self.fingerprint);
        let (exit, reported) = self.run_process(&spec, &log).await?;
        tracing::debug!(stage = self.name(), ?exit, "exited");
        let why = match exit {
            Exit::Success => None,
            Exit::Code(c) => Some(format!("exited with code {c}")),
            Exit::Signal(s) => Some(format!("killed by signal {s}")),
            Exit::Cancelled => Some("interrupted".into()),
            Exit::Job(why) | Exit::Lost(why) => Some(why),
        };
        // A run that exits 0 without what it promised must not become a cached artifact.
        let why = why.or_else(|| self.p.checked[self.index].missing_output(&out));
        if let Some(why) = why {
            return Ok(self.failed_outcome(started, why, Some(log)));
        }
        // Only a success frees its place before its outcome: a failure must stop new starts
        // (without `--keep-going`) before any could take the place.
        let _ = self.exited.send(self.index);
        self.commit(started, &out, reported, log).await
    }

    /// Before a stage runs again, nothing of an earlier attempt may still be running: a Slurm
    /// job a killed apply left is cancelled, and local processes that outlived their
    /// supervisor are ended. Says so when it had to; the reason when it could not.
    async fn end_leftovers(&self) -> Result<(), String> {
        let store = self.tiers.local();
        let script = store.scratch_dir(&self.fingerprint).join("job.sh");
        if let Some(job) = slurm::cancel_leftover(&script).await? {
            self.notice(format!(
                "cancelled Slurm job {job}, left running by an earlier apply; this run resumes from its checkpoints"
            ));
        }
        // Only an attempt that did not commit leaves its directory: without one there is
        // nothing to look for, and a look at every process costs each stage milliseconds.
        if !store.has_attempts(&self.fingerprint) {
            return Ok(());
        }
        let resume = store.resume_dir(&self.fingerprint);
        let pids = tokio::task::spawn_blocking(move || leftovers::end(&resume))
            .await
            .expect("the leftover check does not panic")
            .map_err(|e| e.to_string())?;
        if !pids.is_empty() {
            let list = pids.iter().map(i32::to_string).collect::<Vec<_>>().join(", ");
            let (what, label) = match pids.len() {
                1 => ("a process".to_owned(), "pid"),
                n => (format!("{n} processes"), "pids"),
            };
            self.notice(format!(
                "ended {what} left running by an earlier attempt of this stage ({label} {list}); this run resumes from its checkpoints"
            ));
        }
        Ok(())
    }

    /// Artifact directories by role, in the order `needs:` names them.
    fn input_dirs(&self) -> BTreeMap<String, Vec<PathBuf>> {
        let p = &self.p;
        p.workflow.stages[self.index]
            .needs
            .iter()
            .map(|(role, need)| {
                let dirs = need
                    .stages
                    .iter()
                    .map(|(n, _)| {
                        let i = p.workflow.index(n).expect("validated need");
                        self.tiers.local().artifact_dir(&self.upstream[&i])
                    })
                    .collect();
                (role.clone(), dirs)
            })
            .collect()
    }

    /// Runs the process here or on Slurm, turning its reports into events.
    async fn run_process(&self, spec: &ProcessSpec, log: &std::path::Path) -> Result<(Exit, Reported), StoreError> {
        tracing::debug!(stage = self.name(), cwd = %spec.cwd.display(), "starting");
        let reported = Arc::new(Mutex::new(Reported::default()));
        let on_progress: runner::OnProgress = {
            let (sink, stage, reported) = (Arc::clone(&self.sink), self.name().to_owned(), Arc::clone(&reported));
            // The device report only feeds the record; progress events carry steps.
            Arc::new(move |line: Result<Progress, String>| {
                let mut r = reported.lock().expect("progress lock");
                match line {
                    Ok(Progress { device: Some(device), .. }) => r.device = Some(device),
                    Ok(progress) => {
                        r.step = Some((progress.step, progress.total));
                        r.scalars.extend(progress.scalars.iter().map(|(k, v)| (k.clone(), *v)));
                        drop(r);
                        sink(&Event::StageProgress { stage: stage.clone(), progress });
                    }
                    Err(why) if !r.malformed => {
                        r.malformed = true;
                        drop(r);
                        let message = format!(
                            "a progress line of its output was not read ({why}); see docs/protocol.md \
                             (further unreadable lines are not reported)"
                        );
                        sink(&Event::Notice { stage: stage.clone(), message });
                    }
                    Err(_) => {}
                }
            })
        };
        let exit = match &self.p.workflow.stages[self.index].executor {
            Executor::Local => runner::run(spec, log, self.cancel.clone(), on_progress).await?,
            Executor::Slurm(opts) => {
                let on_job = |event: JobEvent| match event {
                    JobEvent::Submitted(job) => {
                        (self.sink)(&Event::StageSubmitted { stage: self.name().to_owned(), job })
                    }
                    JobEvent::Requeued { job, restarts } => self.notice(format!(
                        "Slurm requeued job {job} (restart {restarts}); it resumes from its last checkpoint"
                    )),
                    JobEvent::Unanswered { job, seconds } => self.notice(format!(
                        "`scontrol` has not answered about Slurm job {job} lately ({seconds} s in); still asking"
                    )),
                };
                let script = self.tiers.local().scratch_dir(&self.fingerprint).join("job.sh");
                let job = slurm::Job { spec, opts, name: self.name(), script: &script, log };
                slurm::run(&job, self.cancel.clone(), on_progress, &on_job).await?
            }
        };
        let reported = std::mem::take(&mut *reported.lock().expect("progress lock"));
        Ok((exit, reported))
    }

    /// Commits a successful run's output with its provenance, clears its scratch directory
    /// and, with `--push`, publishes it.
    async fn commit(
        &self,
        started: Instant,
        out: &std::path::Path,
        reported: Reported,
        log: PathBuf,
    ) -> Result<StageOutcome, StoreError> {
        let stage = &self.p.workflow.stages[self.index];
        let prov = Provenance {
            kind: stage.kind.clone(),
            stage: stage.name.clone(),
            workflow: self.p.workflow.name.clone(),
            seconds: started.elapsed().as_secs_f64(),
            device: reported.device.clone().unwrap_or_else(|| stage.device.to_string()),
            metrics: reported.metrics(),
        };
        let store = self.tiers.local();
        let record = match store.commit(&self.fingerprint, out, prov, self.force).await {
            Ok(r) => r,
            // A stage that wrote something the store refuses (an escaping symlink, a FIFO)
            // failed; the store itself is fine.
            Err(StoreError::BadOutput { path, why }) => {
                let what = match path.strip_prefix(out) {
                    Ok(rel) if !rel.as_os_str().is_empty() => format!("output `{}` rejected: {why}", rel.display()),
                    _ => format!("output rejected: {why}"),
                };
                return Ok(self.failed_outcome(started, what, Some(log)));
            }
            Err(e) => return Err(e),
        };
        store.clear_scratch(&self.fingerprint)?;
        let pushed = if self.push { Some(self.publish(&record).await?) } else { None };
        let mut outcome = self.outcome(Status::Ran, Some(record.artifact), started.elapsed().as_secs_f64());
        outcome.pushed = pushed;
        Ok(outcome)
    }
}

/// Reports a stage's transfers as [`Event::StageTransfer`]s.
pub(super) fn on_transfer(sink: &Sink, stage: &str) -> OnTransfer {
    let (sink, stage) = (Arc::clone(sink), stage.to_owned());
    Arc::new(move |transfer| sink(&Event::StageTransfer { stage: stage.clone(), transfer }))
}
