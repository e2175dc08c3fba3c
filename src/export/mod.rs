//! Exporters: consumers of a run's [`Event`] stream and of the store's run records, which send
//! every stage's metrics to the tools people look at them in — TensorBoard event files
//! ([`tensorboard`]) and an MLflow tracking server ([`mlflow`]). Like nextest's reporters they
//! sit outside the stages: a built-in kind and a user's command, both speaking the progress
//! protocol, are exported the same way.
//!
//! [`Exports`] runs them on a thread of its own, fed through a channel, so a slow disk or a
//! tracking server that is down never holds up a stage: an exporter that fails is reported once
//! and left out for the rest of the apply. A stage that ran is exported as it goes; one found in
//! a store (cached, downloaded) is exported from its record and [`History`] once, unless the
//! destination already holds that fingerprint.

pub mod mlflow;
pub mod tensorboard;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crate::exec::history::History;
use crate::exec::{Event, Prepared, StageOutcome, Status};
use crate::hash::Fingerprint;
use crate::stages::Progress;
use crate::store::Record;

/// Why an exporter stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write `{path}`")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Server(String),
}

/// One stage's run as a destination names it.
#[derive(Debug, Clone)]
pub struct Run {
    pub stage: String,
    pub kind: String,
    pub workflow: String,
    pub fingerprint: Fingerprint,
    /// The stage's canonical parameters.
    pub params: serde_json::Value,
}

/// How a run ended, as the destinations tag it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Ran,
    Cached,
    Downloaded,
    Failed,
    Interrupted,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Ran => "ran",
            End::Cached => "cached",
            End::Downloaded => "downloaded",
            End::Failed => "failed",
            End::Interrupted => "interrupted",
        }
    }
}

/// A destination of metrics.
pub trait Exporter: Send {
    /// How messages name it.
    fn name(&self) -> &'static str;
    /// Whether the destination already holds the finished run of `run.fingerprint`.
    fn exported(&mut self, run: &Run) -> Result<bool, ExportError>;
    /// A run starts (a fresh attempt: whatever an earlier attempt left is replaced).
    fn start(&mut self, run: &Run, at: SystemTime) -> Result<(), ExportError>;
    fn progress(&mut self, run: &Run, p: &Progress, at: SystemTime) -> Result<(), ExportError>;
    /// The run ended; `record` is its run record when it produced an artifact.
    fn finish(&mut self, run: &Run, end: End, record: Option<&Record>, at: SystemTime) -> Result<(), ExportError>;
}

/// Receives the warning of an exporter that stopped.
pub type Warn = Arc<dyn Fn(String) + Send + Sync>;

/// The exporters of one apply, on their thread.
pub struct Exports {
    tx: mpsc::Sender<Event>,
    done: mpsc::Receiver<()>,
    warn: Warn,
}

impl Exports {
    /// Starts `exporters` on a thread of their own.
    pub fn start(p: Arc<Prepared>, exporters: Vec<Box<dyn Exporter>>, warn: Warn) -> Self {
        let (tx, rx) = mpsc::channel::<Event>();
        let (done_tx, done) = mpsc::channel();
        let mut hub = Hub {
            p,
            exporters: exporters.into_iter().map(Some).collect(),
            runs: HashMap::new(),
            warn: Arc::clone(&warn),
        };
        std::thread::Builder::new()
            .name("flow-export".into())
            .spawn(move || {
                for event in rx {
                    hub.event(&event);
                }
                let _ = done_tx.send(());
            })
            .expect("a thread can be started");
        Self { tx, done, warn }
    }

    /// What passes an event on; it never blocks.
    pub fn sender(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let tx = self.tx.clone();
        move |event| {
            let _ = tx.send(event.clone());
        }
    }

    /// Lets the exporters finish what they were sent, waiting at most `wait`.
    pub fn finish(self, wait: Duration) {
        drop(self.tx);
        if self.done.recv_timeout(wait).is_err() {
            (self.warn)(format!(
                "the exports did not finish within {} s; metrics not yet sent are not exported (the next apply sends those of cached stages)",
                wait.as_secs()
            ));
        }
    }
}

struct Hub {
    p: Arc<Prepared>,
    /// `None` once an exporter failed.
    exporters: Vec<Option<Box<dyn Exporter>>>,
    /// The stages running now.
    runs: HashMap<String, Run>,
    warn: Warn,
}

impl Hub {
    fn run(&self, stage: &str, fingerprint: Fingerprint) -> Option<Run> {
        let i = self.p.workflow.index(stage)?;
        let s = &self.p.workflow.stages[i];
        Some(Run {
            stage: stage.to_owned(),
            kind: s.kind.clone(),
            workflow: self.p.workflow.name.clone(),
            fingerprint,
            params: self.p.checked[i].params.clone(),
        })
    }

    /// Calls `f` on every exporter still in use; one that fails is reported and dropped.
    fn each(&mut self, mut f: impl FnMut(&mut dyn Exporter) -> Result<(), ExportError>) {
        for slot in &mut self.exporters {
            let Some(e) = slot else { continue };
            if let Err(err) = f(e.as_mut()) {
                (self.warn)(format!(
                    "{} export stopped: {}; the apply goes on without it",
                    e.name(),
                    crate::exec::error_chain(&err)
                ));
                *slot = None;
            }
        }
    }

    fn event(&mut self, event: &Event) {
        let now = SystemTime::now();
        match event {
            Event::StageStarted { stage, fingerprint } => {
                let Some(run) = self.run(stage, *fingerprint) else { return };
                self.each(|e| e.start(&run, now));
                self.runs.insert(stage.clone(), run);
            }
            Event::StageProgress { stage, progress } => {
                if let Some(run) = self.runs.get(stage).cloned() {
                    self.each(|e| e.progress(&run, progress, now));
                }
            }
            Event::Stage(outcome) => self.outcome(outcome, now),
            _ => {}
        }
    }

    fn outcome(&mut self, o: &StageOutcome, now: SystemTime) {
        let record = || {
            let fp = o.fingerprint?;
            futures::executor::block_on(self.p.store.record(&fp)).ok().flatten()
        };
        match o.status {
            Status::Ran | Status::Failed => {
                let Some(run) = self.runs.remove(&o.stage) else { return };
                let end = match (o.status, o.reason.as_deref()) {
                    (Status::Ran, _) => End::Ran,
                    (_, Some("interrupted")) => End::Interrupted,
                    _ => End::Failed,
                };
                let record = if end == End::Ran { record() } else { None };
                self.each(|e| e.finish(&run, end, record.as_ref(), now));
            }
            Status::Cached | Status::Downloaded => {
                let (Some(fp), Some(record)) = (o.fingerprint, record()) else { return };
                let Some(run) = self.run(&o.stage, fp) else { return };
                let end = if o.status == Status::Cached { End::Cached } else { End::Downloaded };
                let mut history = None;
                let (store, warn) = (Arc::clone(&self.p.store), Arc::clone(&self.warn));
                self.each(|e| {
                    if e.exported(&run)? {
                        return Ok(());
                    }
                    let h = history.get_or_insert_with(|| {
                        History::of(&store, &record).unwrap_or_else(|err| {
                            warn(format!("the metrics of stage `{}` cannot be read: {err}", run.stage));
                            History::default()
                        })
                    });
                    replay(e, &run, end, &record, h)
                });
            }
            Status::Skipped => {}
        }
    }
}

/// Exports a finished run from its record and history, as if it had been watched.
fn replay(e: &mut dyn Exporter, run: &Run, end: End, record: &Record, history: &History) -> Result<(), ExportError> {
    let at = humantime::parse_rfc3339(&record.created).unwrap_or_else(|_| SystemTime::now());
    let started = at.checked_sub(Duration::from_secs_f64(record.seconds)).unwrap_or(at);
    e.start(run, started)?;
    for p in history.steps.values() {
        e.progress(run, p, at)?;
    }
    e.finish(run, end, Some(record), at)
}
