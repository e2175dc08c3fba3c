//! [`Event`]s: the interface between the executor and the reporters in `cli`. The executor
//! never prints; everything a user sees of a run is rendered from these.

use std::path::PathBuf;

use serde::Serialize;

use crate::hash::{Digest, Fingerprint};
use crate::stages::Progress;
use crate::store::remote::Transfer;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        workflow: String,
        stages: usize,
        jobs: usize,
    },
    /// Another process holds the stage's run lock (`holder` absent), or another machine holds
    /// its lease on the remote (`holder` says who); this one waits for its result.
    StageWaiting {
        stage: String,
        fingerprint: Fingerprint,
        #[serde(skip_serializing_if = "Option::is_none")]
        holder: Option<String>,
    },
    StageStarted {
        stage: String,
        fingerprint: Fingerprint,
    },
    /// The stage was submitted to Slurm as batch job `job`.
    StageSubmitted {
        stage: String,
        job: String,
    },
    /// A running built-in stage reported progress (training step, loss, throughput).
    StageProgress {
        stage: String,
        progress: Progress,
    },
    /// Bytes of the stage's artifact moving to or from the remote.
    StageTransfer {
        stage: String,
        #[serde(flatten)]
        transfer: Transfer,
    },
    /// Something the run survived but a user should know: a corrupt or unreadable remote
    /// object (the stage runs here instead), a lease taken over from a silent holder.
    Notice {
        stage: String,
        message: String,
    },
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
    /// Restored from the remote (verified) into the local store.
    Downloaded,
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
    /// With `--push`: bytes uploaded to the remote for this artifact (0 when the remote
    /// already had it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub ran: usize,
    pub cached: usize,
    pub downloaded: usize,
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
            Status::Downloaded => self.downloaded += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
        }
    }
}
