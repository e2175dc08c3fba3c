//! `flow apply`: the scheduler. Walks the selected DAG, runs ready stages concurrently (at most
//! `jobs` at once here, one per GPU unless stages say they share, with the cores split between
//! them; Slurm stages are all submitted), skips the dependents of failures, and commits each
//! successful run to the store. Every state change is reported as an [`Event`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::event::{Event, StageOutcome, Status, Summary};
use super::leftovers;
use super::lockfile::Locked;
use super::runner::{self, Exit, ProcessSpec};
use super::slurm::{self, JobEvent};
use super::{ExecError, Prepared};
use crate::hash::{Digest, Fingerprint};
use crate::spec::Workflow;
use crate::spec::executor::Executor;
use crate::stages::command::env_value;
use crate::stages::{Progress, Task, WHOLE_GPU};
use crate::store::remote::{self, Claim, Holder, Lease, OnTransfer, Published, Remote};
use crate::store::{Provenance, Record, Store, StoreError};

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub jobs: usize,
    pub keep_going: bool,
    pub force: BTreeSet<String>,
    /// The shared tier: looked up after the local store, and published to with `push`.
    pub remote: Option<Arc<Remote>>,
    pub push: bool,
    /// Run a stage even when another machine holds its lease.
    pub no_wait: bool,
}

pub type Sink = Arc<dyn Fn(&Event) + Send + Sync>;

/// Lines of a failed stage's log shown with its failure.
const LOG_TAIL: usize = 20;

struct Done {
    index: usize,
    outcome: StageOutcome,
    store_error: bool,
}

/// What a stage task reports back to the scheduler.
enum Report {
    /// The cache lookup: a hit (`Some`), or a miss that must run.
    Looked {
        index: usize,
        hit: Result<Option<StageOutcome>, StoreError>,
    },
    Ran(Done),
}

/// Applies the prepared workflow. Resolves when every selected stage has an outcome; `cancel`
/// resolving stops it (running stages are killed, nothing partial is committed).
///
/// Each ready stage is first looked up in the store (lookups are not limited: they are cheap
/// and make a no-op apply fast); misses queue to run, in declaration order as far as slots
/// allow: at most `jobs` local stages at once and one per GPU unless their `gpu_share:` lets
/// several share one (a CPU stage may overtake one waiting for a GPU); Slurm stages take no
/// slot. Once a failure stops the run, nothing queued starts.
pub async fn apply(
    p: Arc<Prepared>,
    store: Arc<Store>,
    opts: Options,
    sink: Sink,
    cancel: impl Future<Output = ()> + Send + 'static,
) -> Result<Summary, ExecError> {
    let started = Instant::now();
    let jobs = opts.jobs.max(1);
    sink(&Event::RunStarted { workflow: p.workflow.name.clone(), stages: p.selected.len(), jobs });
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let cancel_task = tokio::spawn(async move {
        cancel.await;
        let _ = cancel_tx.send(true);
    });
    let selected: BTreeSet<usize> = p.selected.iter().copied().collect();
    let mut waiting: HashMap<usize, usize> = p
        .selected
        .iter()
        .map(|&i| (i, p.dag.dependencies(i).iter().filter(|d| selected.contains(d)).count()))
        .collect();
    let mut artifacts: BTreeMap<usize, Digest> = BTreeMap::new();
    let mut ready: BTreeSet<usize> = p.selected.iter().copied().filter(|i| waiting[i] == 0).collect();
    let mut to_run: BTreeSet<usize> = BTreeSet::new();
    let mut runs: HashMap<usize, Arc<StageRun>> = HashMap::new();
    let mut recipes = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut running = 0usize;
    let mut summary = Summary::default();
    let mut stopping = false;
    let mut lock = p.lock.clone();
    let mut finished: BTreeSet<usize> = BTreeSet::new();
    let on_cluster = |i: usize| matches!(p.checked[i].executor, Executor::Slurm(_));
    let mut gpus = GpuSlots::new(crate::ml::device::gpu_count());
    let mut cpus = Cpus::new();
    let builtin_here = |i: usize| !on_cluster(i) && !p.checked[i].shell;
    // Lookups not answered yet. Stages ready together start together, so that they split the
    // cores: local lookups take milliseconds, so nothing starts while one is out; a remote
    // lookup may be a long download, so with a remote nothing waits for them.
    let mut looking = 0usize;

    loop {
        let cancelled = *cancel_rx.borrow();
        while let Some(i) = ready.pop_first().filter(|_| !stopping && !cancelled) {
            let recipe = p.recipe(i, |j| artifacts.get(&j).copied()).expect("ready stages have all inputs");
            let upstream = p.workflow.stages[i]
                .needs
                .values()
                .flat_map(|n| &n.stages)
                .map(|(name, _)| {
                    let j = p.index(name).expect("validated need");
                    (j, artifacts[&j])
                })
                .collect();
            let run = Arc::new(StageRun {
                p: Arc::clone(&p),
                store: Arc::clone(&store),
                index: i,
                fingerprint: recipe.fingerprint(),
                force: opts.force.contains(&p.workflow.stages[i].name),
                remote: opts.remote.clone(),
                push: opts.push,
                no_wait: opts.no_wait,
                sink: Arc::clone(&sink),
                cancel: cancel_rx.clone(),
                upstream,
                gpu: OnceLock::new(),
                threads: OnceLock::new(),
            });
            tracing::debug!(stage = %p.workflow.stages[i].name, fingerprint = %run.fingerprint, "ready");
            tracing::trace!(recipe = %String::from_utf8_lossy(&crate::hash::canonical_json(&recipe)), "recipe");
            recipes.insert(i, recipe);
            runs.insert(i, Arc::clone(&run));
            looking += 1;
            tasks.spawn(async move { Report::Looked { index: i, hit: run.cached(Instant::now()).await } });
        }
        // Slurm stages take no local slot: the cluster schedules them, so all that are ready
        // are submitted together.
        // Two trainings on one GPU would compete for its memory, so a GPU stage also waits
        // until a GPU has its share free.
        if !stopping && !cancelled && (looking == 0 || opts.remote.is_some()) {
            let admissible = |i: usize, running: usize, gpus: &GpuSlots| {
                on_cluster(i) || (running < jobs && gpus.fits(gpu_wanted(&p, i)))
            };
            while let Some(i) = to_run.iter().copied().find(|&i| admissible(i, running, &gpus)) {
                to_run.remove(&i);
                running += usize::from(!on_cluster(i));
                let run = Arc::clone(&runs[&i]);
                if !on_cluster(i)
                    && let Some(gpu) = gpus.take(gpu_wanted(&p, i))
                {
                    let _ = run.gpu.set(gpu);
                }
                if builtin_here(i) {
                    let startable = |j: &&usize| builtin_here(**j) && gpus.fits(gpu_wanted(&p, **j));
                    let others = to_run.iter().filter(startable).count().min(jobs.saturating_sub(running));
                    if let Some(threads) = cpus.take(1 + others) {
                        let _ = run.threads.set(threads);
                    }
                }
                tasks.spawn(async move { Report::Ran(run.run().await) });
            }
        }
        let Some(joined) = tasks.join_next().await else { break };
        let report = joined.expect("stage tasks do not panic");
        looking -= usize::from(matches!(report, Report::Looked { .. }));
        let done = match report {
            Report::Looked { index, hit: Ok(None) } => {
                to_run.insert(index);
                continue;
            }
            Report::Looked { index, hit: Ok(Some(outcome)) } => Done { index, outcome, store_error: false },
            Report::Looked { index, hit: Err(e) } => runs[&index].store_failure(Instant::now(), &e),
            Report::Ran(done) => {
                running -= usize::from(!on_cluster(done.index));
                if let Some(&gpu) = runs[&done.index].gpu.get() {
                    gpus.give(gpu, p.checked[done.index].gpu_share);
                }
                if let Some(&threads) = runs[&done.index].threads.get() {
                    cpus.give(threads);
                }
                done
            }
        };
        let i = done.index;
        finished.insert(i);
        summary.count(done.outcome.status);
        summary.store_error |= done.store_error;
        match done.outcome.status {
            Status::Ran | Status::Cached | Status::Downloaded => {
                let artifact = done.outcome.artifact.expect("successful stages have an artifact");
                let fingerprint = done.outcome.fingerprint.expect("successful stages have a fingerprint");
                artifacts.insert(i, artifact);
                let recipe = recipes.remove(&i).expect("started stages have a recipe");
                lock.stages.insert(
                    p.workflow.stages[i].name.clone(),
                    Locked { fingerprint, artifact, needs: p.need_names(i), recipe },
                );
                sink(&Event::Stage(done.outcome));
                for d in p.dag.dependents(i) {
                    if let Some(w) = waiting.get_mut(&d) {
                        *w -= 1;
                        if *w == 0 {
                            ready.insert(d);
                        }
                    }
                }
            }
            status => {
                let name = done.outcome.stage.clone();
                sink(&Event::Stage(done.outcome));
                for d in descendants(&p, i, &selected) {
                    if finished.insert(d) {
                        summary.count(Status::Skipped);
                        sink(&Event::Stage(skipped(&p, d, format!("`{name}` failed"))));
                    }
                }
                if status == Status::Failed && (!opts.keep_going || done.store_error) {
                    stopping = true;
                }
            }
        }
    }
    summary.interrupted = *cancel_rx.borrow();
    for &i in &p.selected {
        if !finished.contains(&i) {
            let why = if summary.interrupted { "interrupted" } else { "the run stopped after a failure" };
            summary.count(Status::Skipped);
            sink(&Event::Stage(skipped(&p, i, why.into())));
        }
    }
    cancel_task.abort();
    // Only stages still in the workflow keep an entry.
    lock.stages.retain(|name, _| p.index(name).is_some());
    lock.write(&p.lock_path)?;
    summary.seconds = started.elapsed().as_secs_f64();
    sink(&Event::RunFinished(summary.clone()));
    Ok(summary)
}

fn descendants(p: &Prepared, i: usize, selected: &BTreeSet<usize>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = p.dag.dependents(i);
    while let Some(d) = stack.pop() {
        if selected.contains(&d) && seen.insert(d) {
            out.push(d);
            stack.extend(p.dag.dependents(d));
        }
    }
    let rank: HashMap<usize, usize> = p.selected.iter().enumerate().map(|(r, &s)| (s, r)).collect();
    out.sort_by_key(|d| rank[d]);
    out
}

fn skipped(p: &Prepared, i: usize, reason: String) -> StageOutcome {
    StageOutcome {
        stage: p.workflow.stages[i].name.clone(),
        status: Status::Skipped,
        fingerprint: None,
        artifact: None,
        seconds: 0.0,
        reason: Some(reason),
        log: None,
        log_tail: Vec::new(),
        pushed: None,
    }
}

/// What the remote says about a stage that has no local record.
enum Turn {
    /// Its artifact was downloaded (or the wait for it was interrupted).
    Done(StageOutcome),
    /// Run it here, holding the lease if one was taken.
    Run(Option<Lease>),
}

/// One stage's journey: cache lookup (local, then remote), run lock, lease, run, commit, push.
struct StageRun {
    p: Arc<Prepared>,
    store: Arc<Store>,
    index: usize,
    fingerprint: Fingerprint,
    force: bool,
    remote: Option<Arc<Remote>>,
    push: bool,
    no_wait: bool,
    sink: Sink,
    cancel: watch::Receiver<bool>,
    /// Artifact digests of the stages this one needs, by stage index.
    upstream: BTreeMap<usize, Digest>,
    /// The GPU this run holds, if the scheduler gave it one.
    gpu: OnceLock<usize>,
    /// The threads its built-in stage process computes with, if the scheduler chose them.
    threads: OnceLock<usize>,
}

impl StageRun {
    fn name(&self) -> &str {
        &self.p.workflow.stages[self.index].name
    }

    fn outcome(&self, status: Status, artifact: Option<Digest>, seconds: f64) -> StageOutcome {
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

    async fn run(&self) -> Done {
        let started = Instant::now();
        match self.attempt(started).await {
            Ok(outcome) => Done { index: self.index, outcome, store_error: false },
            Err(e) => self.store_failure(started, &e),
        }
    }

    fn store_failure(&self, started: Instant, e: &StoreError) -> Done {
        let mut outcome = self.outcome(Status::Failed, None, started.elapsed().as_secs_f64());
        outcome.reason = Some(error_chain(e));
        Done { index: self.index, outcome, store_error: true }
    }

    /// The local record, else the remote's (downloaded). With `--push`, a local hit the remote
    /// is not known to have is published.
    async fn cached(&self, started: Instant) -> Result<Option<StageOutcome>, StoreError> {
        if self.force {
            return Ok(None);
        }
        let Some(record) = self.store.record(&self.fingerprint).await? else {
            tracing::debug!(stage = self.name(), "no local record");
            return self.downloaded(started).await;
        };
        tracing::debug!(stage = self.name(), artifact = %record.artifact, "record found");
        self.store.materialize(&record.artifact).await?;
        let mut outcome = self.outcome(Status::Cached, Some(record.artifact), started.elapsed().as_secs_f64());
        if let Some(remote) = self.publishing()
            && !self.store.known_on_remote(&remote.id(), &self.fingerprint)
        {
            outcome.pushed = Some(self.publish(remote, &record).await?);
        }
        Ok(Some(outcome))
    }

    /// The remote to publish to, with `--push`.
    fn publishing(&self) -> Option<&Remote> {
        self.remote.as_deref().filter(|_| self.push)
    }

    /// Runs a transfer unless Ctrl-C comes first; a transfer cut off writes no record, here or
    /// on the remote.
    async fn unless_cancelled<T>(&self, transfer: impl Future<Output = T>) -> Option<T> {
        let mut cancel = self.cancel.clone();
        tokio::select! {
            done = transfer => Some(done),
            _ = cancel.wait_for(|c| *c) => None,
        }
    }

    async fn publish(&self, remote: &Remote, record: &Record) -> Result<u64, StoreError> {
        let publishing = remote.publish(&self.store, record, self.on_transfer());
        let Some(published) = self.unless_cancelled(publishing).await else {
            return Err(StoreError::Interrupted { what: format!("publishing to {}", remote.url()) });
        };
        let published = published?;
        Ok(match published {
            Published::Created { bytes } => bytes,
            Published::AlreadyThere => 0,
        })
    }

    fn on_transfer(&self) -> OnTransfer {
        on_transfer(&self.sink, self.name())
    }

    fn notice(&self, message: String) {
        (self.sink)(&Event::Notice { stage: self.name().to_owned(), message });
    }

    /// Downloads the remote's artifact of this fingerprint, if it has one. A remote object
    /// that is missing, corrupt or hostile is reported and not used: the stage then runs here.
    /// Only local failures (a full disk) are errors.
    async fn downloaded(&self, started: Instant) -> Result<Option<StageOutcome>, StoreError> {
        let Some(remote) = self.remote.as_deref() else { return Ok(None) };
        let fetched = async {
            let Some(record) = remote.record(&self.fingerprint).await? else { return Ok(None) };
            remote.fetch(&self.store, &record, self.on_transfer()).await?;
            Ok(Some(record))
        };
        let Some(fetched) = self.unless_cancelled(fetched).await else {
            return Ok(Some(self.failed_outcome(started, "interrupted".into(), None)));
        };
        let record = match fetched {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(None),
            Err(e @ StoreError::Io(_)) => return Err(e),
            Err(e) => {
                self.notice(format!("{}; running it here", error_chain(&e)));
                return Ok(None);
            }
        };
        self.store.materialize(&record.artifact).await?;
        Ok(Some(self.outcome(Status::Downloaded, Some(record.artifact), started.elapsed().as_secs_f64())))
    }

    /// Before running: download a result that appeared meanwhile, or take the fingerprint's
    /// lease (with `--push`), or wait while another machine's live lease is renewed — taking
    /// it over once its holder has been silent for the lease's time-to-live.
    async fn turn(&self, remote: &Remote, started: Instant) -> Result<Turn, StoreError> {
        let ttl = remote::lease_ttl();
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
            if let Some(hit) = self.downloaded(started).await? {
                return Ok(Turn::Done(hit));
            }
        }
    }

    /// A lease was just taken: the holder before us may have published and released between
    /// our lookup and our claim, so look once more.
    async fn taken(&self, lease: Lease, started: Instant) -> Result<Turn, StoreError> {
        match self.downloaded(started).await {
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

    /// Runs the stage: takes its run lock, looks once more (another process may have
    /// finished it meanwhile), settles with the remote, runs the process, commits the output
    /// and publishes it. The lease, if taken, is released whatever happens.
    async fn attempt(&self, started: Instant) -> Result<StageOutcome, StoreError> {
        let store = Arc::clone(&self.store);
        let fp = self.fingerprint;
        // Another process may be running this fingerprint: wait for its lock, then look again.
        // Polling (not a blocking flock) keeps the wait cancellable by Ctrl-C.
        let mut delay = Duration::from_millis(5);
        let mut announced = false;
        let lock = loop {
            let try_store = Arc::clone(&store);
            if let Some(lock) =
                tokio::task::spawn_blocking(move || try_store.try_lock(&fp)).await.expect("lock task")?
            {
                break lock;
            }
            if !announced {
                (self.sink)(&Event::StageWaiting { stage: self.name().to_owned(), fingerprint: fp, holder: None });
                announced = true;
            }
            if *self.cancel.borrow() {
                return Ok(self.failed_outcome(started, "interrupted".into(), None));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        };
        if let Some(hit) = self.cached(started).await? {
            return Ok(hit);
        }
        let lease = match self.remote.as_deref().filter(|_| !self.force) {
            Some(remote) => match self.turn(remote, started).await? {
                Turn::Done(outcome) => return Ok(outcome),
                Turn::Run(lease) => lease,
            },
            None => None,
        };
        let result = self.execute(started).await;
        if let Some(lease) = lease {
            lease.release().await;
        }
        drop(lock);
        result
    }

    /// Runs the process, commits its output and, with `--push`, publishes it.
    async fn execute(&self, started: Instant) -> Result<StageOutcome, StoreError> {
        let fp = self.fingerprint;
        if *self.cancel.borrow() {
            return Ok(self.failed_outcome(started, "interrupted".into(), None));
        }
        (self.sink)(&Event::StageStarted { stage: self.name().to_owned(), fingerprint: fp });
        let script = self.store.scratch_dir(&fp).join("job.sh");
        match slurm::cancel_leftover(&script).await {
            Ok(Some(job)) => self.notice(format!(
                "cancelled Slurm job {job}, left running by an earlier apply; this run resumes from its checkpoints"
            )),
            Ok(None) => {}
            Err(why) => return Ok(self.failed_outcome(started, why, None)),
        }
        let resume = self.store.resume_dir(&fp);
        match tokio::task::spawn_blocking({
            let resume = resume.clone();
            move || leftovers::end(&resume)
        })
        .await
        .expect("leftover check")
        {
            Ok(pids) if pids.is_empty() => {}
            Ok(pids) => {
                let list = pids.iter().map(i32::to_string).collect::<Vec<_>>().join(", ");
                let what = if pids.len() == 1 { "a process".to_owned() } else { format!("{} processes", pids.len()) };
                let label = if pids.len() == 1 { "pid" } else { "pids" };
                self.notice(format!(
                    "ended {what} left running by an earlier attempt of this stage ({label} {list}); this run resumes from its checkpoints"
                ))
            }
            Err(e) => return Ok(self.failed_outcome(started, e.to_string(), None)),
        }
        let attempt = self.store.fresh_attempt(&fp)?;
        let out = attempt.join("out");
        let log = self.store.log_path(&fp);
        let spec = self.process(&attempt, &resume)?;
        tracing::debug!(stage = self.name(), cwd = %spec.cwd.display(), out = %out.display(), "starting");
        let last = Arc::new(Mutex::new(None::<Progress>));
        let used = Arc::new(Mutex::new(None::<String>));
        let on_progress: runner::OnProgress = {
            let (sink, stage, last, used) =
                (Arc::clone(&self.sink), self.name().to_owned(), Arc::clone(&last), Arc::clone(&used));
            // The device report only feeds the record; progress events carry steps.
            Arc::new(move |progress: Progress| match progress.device {
                Some(device) => *used.lock().expect("progress lock") = Some(device),
                None => {
                    sink(&Event::StageProgress { stage: stage.clone(), progress: progress.clone() });
                    *last.lock().expect("progress lock") = Some(progress);
                }
            })
        };
        let exit = match &self.p.checked[self.index].executor {
            Executor::Local => runner::run(&spec, &log, self.cancel.clone(), on_progress).await?,
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
                let job = slurm::Job { spec: &spec, opts, name: self.name(), script: &script, log: &log };
                slurm::run(&job, self.cancel.clone(), on_progress, &on_job).await?
            }
        };
        tracing::debug!(stage = self.name(), ?exit, "exited");
        let seconds = started.elapsed().as_secs_f64();
        let why = match exit {
            Exit::Success => None,
            Exit::Code(c) => Some(format!("exited with code {c}")),
            Exit::Signal(s) => Some(format!("killed by signal {s}")),
            Exit::Cancelled => Some("interrupted".into()),
            Exit::Job(why) => Some(why),
        };
        // A run that exits 0 without what it promised must not become a cached artifact.
        let why = why.or_else(|| crate::stages::missing_output(&out, &self.p.checked[self.index].outputs));
        if let Some(why) = why {
            return Ok(self.failed_outcome(started, why, Some(log)));
        }
        let stage = &self.p.workflow.stages[self.index];
        let prov = Provenance {
            kind: stage.kind.clone(),
            stage: stage.name.clone(),
            workflow: self.p.workflow.name.clone(),
            seconds,
            device: used
                .lock()
                .expect("progress lock")
                .clone()
                .unwrap_or_else(|| self.p.checked[self.index].device.clone()),
            metrics: summary(last.lock().expect("progress lock").as_ref()),
        };
        let record = match self.store.commit(&fp, &out, prov, self.force).await {
            Ok(r) => r,
            // A stage that wrote something the store refuses (an escaping symlink, a FIFO)
            // failed; the store itself is fine.
            Err(StoreError::BadOutput { path, why }) => {
                let what = match path.strip_prefix(&out) {
                    Ok(rel) if !rel.as_os_str().is_empty() => format!("output `{}` rejected: {why}", rel.display()),
                    _ => format!("output rejected: {why}"),
                };
                return Ok(self.failed_outcome(started, what, Some(log)));
            }
            Err(e) => return Err(e),
        };
        self.store.clear_scratch(&fp)?;
        let pushed = match self.publishing() {
            Some(remote) => Some(self.publish(remote, &record).await?),
            None => None,
        };
        let mut outcome = self.outcome(Status::Ran, Some(record.artifact), started.elapsed().as_secs_f64());
        outcome.pushed = pushed;
        Ok(outcome)
    }

    fn failed_outcome(&self, started: Instant, why: String, log: Option<std::path::PathBuf>) -> StageOutcome {
        let mut o = self.outcome(Status::Failed, None, started.elapsed().as_secs_f64());
        o.reason = Some(why);
        o.log_tail = log.as_deref().map(|l| runner::tail(l, LOG_TAIL)).unwrap_or_default();
        o.log = log;
        o
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
                    .map(|(n, _)| self.store.artifact_dir(&self.upstream[&p.index(n).expect("validated need")]))
                    .collect();
                (role.clone(), dirs)
            })
            .collect()
    }

    /// The process that runs this stage in `attempt` (its output goes to `attempt/out`): `sh -c`
    /// for command stages, `flow run-stage` with a task file for built-in kinds.
    fn process(&self, attempt: &Path, resume: &Path) -> Result<ProcessSpec, StoreError> {
        let out = attempt.join("out");
        let p = &self.p;
        let stage = &p.workflow.stages[self.index];
        let checked = &p.checked[self.index];
        let inputs = self.input_dirs();
        let mut env = BTreeMap::new();
        env.insert("FLOW_OUT".to_owned(), out.display().to_string());
        env.insert("FLOW_STAGE".to_owned(), stage.name.clone());
        env.insert("FLOW_FINGERPRINT".to_owned(), self.fingerprint.to_string());
        // Kept across interrupted runs of this fingerprint (a crash, Ctrl-C, a requeued job),
        // removed once the artifact is committed: where a long command keeps its checkpoints.
        // Every process of the stage inherits it, which is how leftovers are found.
        fs_err::create_dir_all(resume)?;
        env.insert("FLOW_RESUME".to_owned(), resume.display().to_string());
        if !checked.shell {
            let task = Task {
                kind: stage.kind.clone(),
                stage: stage.name.clone(),
                params: checked.params.clone(),
                inputs,
                files: Workflow::input_files(stage).iter().map(|f| p.workflow.dir.join(f)).collect(),
                out: out.clone(),
                resume: resume.to_path_buf(),
                device: self.gpu.get().map_or_else(|| checked.device.clone(), |n| format!("cuda:{n}")),
            };
            if let Some(threads) = self.threads.get() {
                env.insert("RAYON_NUM_THREADS".to_owned(), threads.to_string());
            }
            let task_file = attempt.join("task.json");
            fs_err::write(&task_file, serde_json::to_vec_pretty(&task).expect("tasks serialise"))?;
            let program = std::env::current_exe()?;
            let args = vec!["run-stage".to_owned(), task_file.display().to_string()];
            return Ok(ProcessSpec { program, args, cwd: p.workflow.dir.clone(), env, protocol: true });
        }
        for (role, dirs) in &inputs {
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            if stage.needs[role].is_list {
                env.insert(format!("FLOW_IN_{role}_COUNT"), dirs.len().to_string());
                for (k, d) in dirs.iter().enumerate() {
                    env.insert(format!("FLOW_IN_{role}_{k}"), d.clone());
                }
            }
            env.insert(format!("FLOW_IN_{role}"), dirs.join(":"));
        }
        if let serde_json::Value::Object(params) = &checked.params {
            for (k, v) in params {
                env.insert(format!("FLOW_WITH_{k}"), env_value(v));
            }
        }
        for var in &stage.env {
            if let crate::spec::EnvVar::Set { name, value } = var {
                env.insert(name.clone(), value.clone());
            }
        }
        let run = stage.run.clone().expect("command stages have `run`");
        Ok(ProcessSpec {
            program: "sh".into(),
            args: vec!["-c".into(), run],
            cwd: p.workflow.dir.clone(),
            env,
            protocol: false,
        })
    }
}

/// The GPU share stage `i` needs on this machine, or `None` when it takes no GPU slot.
fn gpu_wanted(p: &Prepared, i: usize) -> Option<Want> {
    let c = &p.checked[i];
    if !c.uses_device || crate::ml::device::gpu_count() == 0 {
        return None;
    }
    let gpu = match c.device.as_str() {
        "cuda" | "auto" => None,
        d => Some(d.strip_prefix("cuda:").and_then(|n| n.parse().ok())?),
    };
    Some(Want { gpu, share: c.gpu_share })
}

/// A GPU stage's claim: a given GPU or any, and how much of it (thousandths).
#[derive(Clone, Copy)]
struct Want {
    gpu: Option<usize>,
    share: u16,
}

/// What is left of each GPU while stages run on it: a whole one per stage unless the stages
/// say they need less (`gpu_share:`), so that trainings never compete for one device's memory.
struct GpuSlots {
    /// Thousandths of each GPU not held by a running stage.
    free: Vec<u16>,
}

impl GpuSlots {
    fn new(count: usize) -> Self {
        Self { free: vec![WHOLE_GPU; count] }
    }

    /// Whether a stage wanting `want` can start now. A GPU this machine does not have never
    /// frees up: the stage starts and fails saying so.
    fn fits(&self, want: Option<Want>) -> bool {
        match want {
            None => true,
            Some(Want { gpu: None, share }) => self.free.iter().any(|&f| f >= share),
            Some(Want { gpu: Some(n), share }) => self.free.get(n).is_none_or(|&f| f >= share),
        }
    }

    /// Claims `want`, on the GPU with the most left when any will do (so that sharing stages
    /// spread out before they pile up), and says which GPU it got.
    fn take(&mut self, want: Option<Want>) -> Option<usize> {
        let Want { gpu, share } = want?;
        let n = match gpu {
            Some(n) => n,
            None => (0..self.free.len())
                .filter(|&n| self.free[n] >= share)
                .min_by_key(|&n| (std::cmp::Reverse(self.free[n]), n))?,
        };
        let free = self.free.get_mut(n).filter(|f| **f >= share)?;
        *free -= share;
        Some(n)
    }

    fn give(&mut self, n: usize, share: u16) {
        self.free[n] += share;
    }
}

/// The cores built-in stages compute on. Each stage process uses a fixed number of threads
/// (`RAYON_NUM_THREADS`, which candle and rayon read), set when it starts to its share of the
/// cores no running stage holds: two trainings that each spread over every core fight over
/// them (docs/benchmarks.md#stages-side-by-side).
/// A `RAYON_NUM_THREADS` set by the user is left to rule.
struct Cpus {
    total: usize,
    held: usize,
    user_set: bool,
}

impl Cpus {
    fn new() -> Self {
        let total = std::thread::available_parallelism().map_or(1, usize::from);
        Self { total, held: 0, user_set: std::env::var_os("RAYON_NUM_THREADS").is_some() }
    }

    /// Threads for a stage starting now with `starting - 1` others about to start beside it:
    /// an equal part of the free cores, and at least one.
    fn take(&mut self, starting: usize) -> Option<usize> {
        if self.user_set {
            return None;
        }
        let threads = (self.total.saturating_sub(self.held) / starting.max(1)).max(1);
        self.held += threads;
        Some(threads)
    }

    fn give(&mut self, threads: usize) {
        self.held -= threads;
    }
}

/// The record's metrics summary: the last progress report of the run.
fn summary(last: Option<&Progress>) -> serde_json::Map<String, serde_json::Value> {
    match last.map(serde_json::to_value) {
        Some(Ok(serde_json::Value::Object(m))) => m,
        _ => serde_json::Map::new(),
    }
}

/// Reports a stage's transfers as [`Event::StageTransfer`]s.
pub(super) fn on_transfer(sink: &Sink, stage: &str) -> OnTransfer {
    let (sink, stage) = (Arc::clone(sink), stage.to_owned());
    Arc::new(move |transfer| sink(&Event::StageTransfer { stage: stage.clone(), transfer }))
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Some errors (object_store's among them) repeat their source in their own message.
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{Cpus, GpuSlots, WHOLE_GPU, Want};

    #[test]
    fn built_in_stages_split_the_free_cores() {
        let mut cpus = Cpus { total: 4, held: 0, user_set: false };
        assert_eq!(cpus.take(1), Some(4), "a stage alone gets every core");
        assert_eq!(cpus.take(1), Some(1), "one more, however busy the cores, gets one");
        cpus.give(4);
        assert_eq!((cpus.take(2), cpus.take(1)), (Some(1), Some(2)), "three cores free, two stages starting");
        assert_eq!(cpus.held, 4);
        assert_eq!(Cpus { total: 4, held: 0, user_set: true }.take(1), None, "the user's RAYON_NUM_THREADS rules");
    }

    #[test]
    fn gpu_slots_hold_one_stage_per_gpu() {
        let whole = |gpu| Some(Want { gpu, share: WHOLE_GPU });
        let mut gpus = GpuSlots::new(2);
        assert!(gpus.fits(None) && gpus.fits(whole(None)) && gpus.fits(whole(Some(1))));
        assert_eq!(gpus.take(whole(Some(1))), Some(1));
        assert!(!gpus.fits(whole(Some(1))), "cuda:1 is held");
        assert_eq!(gpus.take(whole(None)), Some(0));
        assert!(!gpus.fits(whole(None)), "both are held");
        assert!(gpus.fits(None), "CPU stages never wait for a GPU");
        assert!(gpus.fits(whole(Some(5))), "a GPU the machine lacks does not block: the stage fails saying so");
        assert_eq!(gpus.take(whole(Some(5))), None);
        gpus.give(1, WHOLE_GPU);
        assert_eq!(gpus.take(whole(None)), Some(1));
        assert_eq!(GpuSlots::new(0).take(whole(None)), None);
    }

    #[test]
    fn stages_share_a_gpu_while_their_shares_fit() {
        let share = |gpu, share| Some(Want { gpu, share });
        let mut gpus = GpuSlots::new(2);
        // Sharing stages spread over the GPUs before they double up.
        assert_eq!(gpus.take(share(None, 500)), Some(0));
        assert_eq!(gpus.take(share(None, 500)), Some(1));
        assert_eq!(gpus.take(share(None, 300)), Some(0));
        assert!(!gpus.fits(share(None, WHOLE_GPU)), "no GPU is whole");
        assert!(!gpus.fits(share(Some(0), 250)), "cuda:0 has 200 left");
        assert_eq!(gpus.take(share(Some(0), 200)), Some(0));
        assert_eq!(gpus.take(share(None, 500)), Some(1));
        assert!(!gpus.fits(share(None, 1)), "both are full");
        gpus.give(0, 500);
        gpus.give(0, 300);
        gpus.give(0, 200);
        assert_eq!(gpus.take(share(None, WHOLE_GPU)), Some(0));
    }
}
