//! `flow apply`: the scheduler. It walks the selected DAG and admits stages; what happens to a
//! stage once admitted is its [`StageRun`]'s business.
//!
//! Each stage whose inputs are all known is first looked up (lookups are not limited: they are
//! cheap and make a no-op apply fast); a miss queues to run, in declaration order as far as
//! slots allow: at most `jobs` local stages at once, one per GPU unless their `gpu_share:` lets
//! several share one (a CPU stage may overtake one waiting for a GPU), the cores split between
//! the built-in stages that start together ([`super::resources`]); Slurm stages take no slot.
//! A failure skips the stage's dependents and, without `--keep-going`, stops new starts. The
//! lock file is written at the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::event::{Event, StageOutcome, Status, Summary};
use super::fingerprint::Recipe;
use super::lockfile::{LockFile, Locked};
use super::process::Placement;
use super::resources::{Cpus, GpuSlots, gpu_wanted};
use super::stage_run::{Done, StageRun};
use super::{ExecError, Prepared};
use crate::hash::Digest;
use crate::spec::executor::Executor;
use crate::store::{StoreError, Tiered};

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Local stages running at once (at least one).
    pub jobs: usize,
    pub keep_going: bool,
    /// Publish every artifact to the remote as it is produced or found.
    pub push: bool,
    /// Run a stage even when another machine holds its lease.
    pub no_wait: bool,
}

/// Receives every [`Event`] of a run.
pub type Sink = Arc<dyn Fn(&Event) + Send + Sync>;

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
pub async fn apply(
    p: Arc<Prepared>,
    tiers: Arc<Tiered>,
    opts: Options,
    sink: Sink,
    cancel: impl Future<Output = ()> + Send + 'static,
) -> Result<Summary, ExecError> {
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let cancel_task = tokio::spawn(async move {
        cancel.await;
        let _ = cancel_tx.send(true);
    });
    let summary = Scheduler::new(p, Arc::clone(&tiers), opts, sink, cancel_rx).run().await;
    cancel_task.abort();
    super::launcher::shut_down();
    // Last, when no stage creates files any more (`Store::clear_scratch`). What is left, the
    // next apply or `flow gc` removes.
    if let Err(e) = tiers.local().sweep() {
        tracing::warn!(error = %e, "cannot remove the scratch directories of committed runs");
    }
    summary
}

/// The state of one apply's walk over the DAG.
struct Scheduler {
    p: Arc<Prepared>,
    tiers: Arc<Tiered>,
    opts: Options,
    sink: Sink,
    cancel: watch::Receiver<bool>,
    started: Instant,
    /// Per selected stage, its selected dependencies without an artifact yet.
    waiting: HashMap<usize, usize>,
    artifacts: BTreeMap<usize, Digest>,
    /// Stages whose inputs are known, to look up.
    ready: BTreeSet<usize>,
    /// Stages that missed, waiting for a slot.
    to_run: BTreeSet<usize>,
    runs: HashMap<usize, Arc<StageRun>>,
    recipes: HashMap<usize, Recipe>,
    placements: HashMap<usize, Placement>,
    tasks: JoinSet<Report>,
    /// Local stages running.
    running: usize,
    /// Lookups not answered yet.
    looking: usize,
    gpus: GpuSlots,
    cpus: Cpus,
    finished: BTreeSet<usize>,
    summary: Summary,
    /// A failure stopped new starts.
    stopping: bool,
    lock: LockFile,
    /// Stages whose process has succeeded say so here, before they commit: their slot is free.
    exited: (mpsc::UnboundedSender<usize>, mpsc::UnboundedReceiver<usize>),
}

impl Scheduler {
    fn new(p: Arc<Prepared>, tiers: Arc<Tiered>, opts: Options, sink: Sink, cancel: watch::Receiver<bool>) -> Self {
        let selected: BTreeSet<usize> = p.selected.iter().copied().collect();
        let waiting: HashMap<usize, usize> = p
            .selected
            .iter()
            .map(|&i| (i, p.dag.dependencies(i).iter().filter(|d| selected.contains(d)).count()))
            .collect();
        let ready = p.selected.iter().copied().filter(|i| waiting[i] == 0).collect();
        let lock = p.lock.clone();
        Self {
            opts: Options { jobs: opts.jobs.max(1), ..opts },
            p,
            tiers,
            sink,
            cancel,
            started: Instant::now(),
            waiting,
            artifacts: BTreeMap::new(),
            ready,
            to_run: BTreeSet::new(),
            runs: HashMap::new(),
            recipes: HashMap::new(),
            placements: HashMap::new(),
            tasks: JoinSet::new(),
            running: 0,
            looking: 0,
            gpus: GpuSlots::new(crate::ml::device::gpu_count()),
            cpus: Cpus::new(),
            finished: BTreeSet::new(),
            summary: Summary::default(),
            stopping: false,
            lock,
            exited: mpsc::unbounded_channel(),
        }
    }

    async fn run(mut self) -> Result<Summary, ExecError> {
        let (workflow, stages, jobs) = (self.p.workflow.name.clone(), self.p.selected.len(), self.opts.jobs);
        (self.sink)(&Event::RunStarted { workflow, stages, jobs });
        loop {
            self.look_up_ready();
            self.admit();
            tokio::select! {
                Some(i) = self.exited.1.recv() => self.release(i),
                joined = self.tasks.join_next() => {
                    let Some(joined) = joined else { break };
                    if let Some(done) = self.received(joined.expect("stage tasks do not panic")) {
                        self.finish_stage(done);
                    }
                }
            }
        }
        self.finish()
    }

    fn cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    fn on_cluster(&self, i: usize) -> bool {
        matches!(self.p.workflow.stages[i].executor, Executor::Slurm(_))
    }

    /// A built-in stage computing here, on this machine's cores.
    fn builtin_here(&self, i: usize) -> bool {
        !self.on_cluster(i) && !self.p.workflow.stages[i].is_command()
    }

    /// Starts the lookup of every ready stage.
    fn look_up_ready(&mut self) {
        while !self.stopping && !self.cancelled() {
            let Some(i) = self.ready.pop_first() else { break };
            let p = &self.p;
            let recipe = p.recipe(i, |j| self.artifacts.get(&j).copied()).expect("ready stages have all inputs");
            let run = Arc::new(StageRun {
                p: Arc::clone(p),
                tiers: Arc::clone(&self.tiers),
                index: i,
                fingerprint: recipe.fingerprint(),
                force: p.force.contains(&i),
                push: self.opts.push,
                no_wait: self.opts.no_wait,
                sink: Arc::clone(&self.sink),
                cancel: self.cancel.clone(),
                upstream: p.upstream(i).map(|j| (j, self.artifacts[&j])).collect(),
                exited: self.exited.0.clone(),
                said: Default::default(),
            });
            tracing::debug!(stage = %p.name(i), fingerprint = %run.fingerprint, "ready");
            tracing::trace!(recipe = %String::from_utf8_lossy(&crate::hash::canonical_json(&recipe)), "recipe");
            self.recipes.insert(i, recipe);
            self.runs.insert(i, Arc::clone(&run));
            self.looking += 1;
            self.tasks.spawn(async move { Report::Looked { index: i, hit: run.cached(Instant::now()).await } });
        }
    }

    /// Starts the queued stages that fit. Stages ready together start together, so that they
    /// split the cores: local lookups take milliseconds, so nothing starts while one is out; a
    /// remote lookup may be a long download, so with a remote nothing waits for them.
    fn admit(&mut self) {
        if self.stopping || self.cancelled() || (self.looking > 0 && self.tiers.remote().is_none()) {
            return;
        }
        let mut starting = Vec::new();
        while let Some(i) = self.to_run.iter().copied().find(|&i| self.admissible(i)) {
            self.to_run.remove(&i);
            let mut placement = Placement::default();
            if !self.on_cluster(i) {
                self.running += 1;
                placement.gpu = self.gpus.take(gpu_wanted(&self.p, i));
                if self.builtin_here(i) { self.cpus.start_builtin(i) } else { self.cpus.start_command() }
            }
            starting.push((i, placement));
        }
        if starting.is_empty() {
            return;
        }
        // Stages admitted together split the cores from their first step.
        self.rebalance();
        for (i, mut placement) in starting {
            if let Some((threads, file)) = self.cpus.share(i) {
                placement.threads = Some(threads);
                placement.share = file;
            }
            self.placements.insert(i, placement.clone());
            let run = Arc::clone(&self.runs[&i]);
            self.tasks.spawn(async move { Report::Ran(run.run(placement).await) });
        }
    }

    /// Splits the cores again and rewrites the running built-in stages' share files. Should
    /// writing fail (no temporary directory), stages start with their share and keep the
    /// threads they started with.
    fn rebalance(&mut self) {
        if let Err(e) = self.cpus.rebalance() {
            tracing::warn!("the stages' shares of the cores cannot be written: {e}");
        }
    }

    /// Slurm stages take no local slot: the cluster schedules them. Two trainings on one GPU
    /// would compete for its memory, so a GPU stage also waits until a GPU has its share free.
    fn admissible(&self, i: usize) -> bool {
        self.on_cluster(i) || (self.running < self.opts.jobs && self.gpus.fits(gpu_wanted(&self.p, i)))
    }

    /// Books a task's report; the stage's outcome if it has one now.
    fn received(&mut self, report: Report) -> Option<Done> {
        match report {
            Report::Looked { index, hit: Ok(None) } => {
                self.looking -= 1;
                self.to_run.insert(index);
                None
            }
            Report::Looked { index, hit: Ok(Some(outcome)) } => {
                self.looking -= 1;
                Some(Done { index, outcome, store_error: false })
            }
            Report::Looked { index, hit: Err(e) } => {
                self.looking -= 1;
                Some(self.runs[&index].store_failure(Instant::now(), &e))
            }
            Report::Ran(done) => {
                self.release(done.index);
                Some(done)
            }
        }
    }

    /// Gives back, once, what stage `i` was placed on: its slot, its GPU share, its cores. After
    /// a success that is when its process ends, before its commit: hashing and linking its
    /// output need none of them, and the next stage starts meanwhile.
    fn release(&mut self, i: usize) {
        let Some(placement) = self.placements.remove(&i) else { return };
        self.running -= usize::from(!self.on_cluster(i));
        if let Some(gpu) = placement.gpu {
            self.gpus.give(gpu, self.p.workflow.stages[i].gpu_share.thousandths());
        }
        if self.builtin_here(i) {
            self.cpus.end_builtin(i);
            self.rebalance();
        } else if !self.on_cluster(i) {
            self.cpus.end_command();
            self.rebalance();
        }
    }

    /// Records a stage's outcome: on success its artifact, lock entry and newly ready
    /// dependents; on failure its skipped descendants, and a stop unless `--keep-going`.
    fn finish_stage(&mut self, done: Done) {
        let i = done.index;
        self.finished.insert(i);
        self.summary.count(done.outcome.status);
        self.summary.store_error |= done.store_error;
        match done.outcome.status {
            Status::Ran | Status::Cached | Status::Downloaded => {
                let artifact = done.outcome.artifact.expect("successful stages have an artifact");
                let fingerprint = done.outcome.fingerprint.expect("successful stages have a fingerprint");
                self.artifacts.insert(i, artifact);
                let recipe = self.recipes.remove(&i).expect("started stages have a recipe");
                let locked = Locked { fingerprint, artifact, needs: self.p.need_names(i), recipe };
                self.lock.stages.insert(self.p.name(i).to_owned(), locked);
                (self.sink)(&Event::Stage(done.outcome));
                for d in self.p.dag.dependents(i) {
                    if let Some(w) = self.waiting.get_mut(&d) {
                        *w -= 1;
                        if *w == 0 {
                            self.ready.insert(d);
                        }
                    }
                }
            }
            status => {
                (self.sink)(&Event::Stage(done.outcome));
                let why = format!("`{}` failed", self.p.name(i));
                for d in self.descendants(i) {
                    if self.finished.insert(d) {
                        self.summary.count(Status::Skipped);
                        (self.sink)(&Event::Stage(skipped(&self.p, d, why.clone())));
                    }
                }
                if status == Status::Failed && (!self.opts.keep_going || done.store_error) {
                    self.stopping = true;
                }
            }
        }
    }

    /// The selected stages downstream of `i`, in run order.
    fn descendants(&self, i: usize) -> Vec<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = self.p.dag.dependents(i);
        while let Some(d) = stack.pop() {
            if self.waiting.contains_key(&d) && seen.insert(d) {
                stack.extend(self.p.dag.dependents(d));
            }
        }
        self.p.selected.iter().copied().filter(|d| seen.contains(d)).collect()
    }

    /// Reports the stages that never got an outcome, writes the lock file and the summary.
    fn finish(mut self) -> Result<Summary, ExecError> {
        self.summary.interrupted = self.cancelled();
        let why = if self.summary.interrupted { "interrupted" } else { "the run stopped after a failure" };
        for &i in &self.p.selected {
            if !self.finished.contains(&i) {
                self.summary.count(Status::Skipped);
                (self.sink)(&Event::Stage(skipped(&self.p, i, why.into())));
            }
        }
        // Only stages still in the workflow keep an entry.
        self.lock.stages.retain(|name, _| self.p.workflow.index(name).is_some());
        self.lock.write(&self.p.lock_path)?;
        self.summary.seconds = self.started.elapsed().as_secs_f64();
        (self.sink)(&Event::RunFinished(self.summary.clone()));
        Ok(self.summary)
    }
}

fn skipped(p: &Prepared, i: usize, reason: String) -> StageOutcome {
    StageOutcome {
        stage: p.name(i).to_owned(),
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
