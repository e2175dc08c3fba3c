//! [`Event`]s: the interface between the executor and the reporters in `cli`. The executor
//! never prints; everything a user sees of a run is rendered from these.

use std::path::PathBuf;

use serde::Serialize;

use crate::hash::{Digest, Fingerprint};
use crate::stages::Progress;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunStarted { workflow: String, stages: usize, jobs: usize },
    /// Another process holds the stage's run lock; this one waits for its result.
    StageWaiting { stage: String, fingerprint: Fingerprint },
    StageStarted { stage: String, fingerprint: Fingerprint },
    /// A running built-in stage reported progress (training step, loss, throughput).
    StageProgress { stage: String, progress: Progress },
    /// The stage's final state; one per selected stage.
    Stage(StageOutcome),
    #[serde(rename = "summary")]
    RunFinished(Summary),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ran,
    Cached,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageOutcome {
    pub stage: String,
    pub status: Status,
    pub fingerprint: Option<Fingerprint>,
    pub artifact: Option<Digest>,
    pub seconds: f64,
    /// For `failed`: what went wrong. For `skipped`: the stage whose failure caused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
    /// For `failed`: the last lines of the log.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub seconds: f64,
    pub interrupted: bool,
    /// A store or integrity problem stopped the run (exit code 3 rather than 1).
    pub store_error: bool,
}

impl Summary {
    pub fn count(&mut self, status: Status) {
        match status {
            Status::Ran => self.ran += 1,
            Status::Cached => self.cached += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
        }
    }
}
