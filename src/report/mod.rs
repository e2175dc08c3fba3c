//! `flow report`: one self-contained HTML page of a workflow's state — its DAG with each stage
//! coloured by state, and for each stage its kind, parameters, fingerprint and artifact, why it
//! ran or will run, where and how long it ran, its files, its log tail, its curves, its eval
//! tables and what went into it (docs/report.md).
//!
//! [`collect`] gathers a [`Page`] from the store (and, after an apply, from what the apply saw);
//! [`layout`] places the DAG; [`html`] renders the page with maud, the data as one JSON
//! document and the script and styles inline, so the file opens anywhere with no network.

mod collect;
mod html;
pub mod layout;

use std::collections::BTreeMap;

use serde::Serialize;

pub use collect::{Applied, collect};
pub use html::render;

/// What the page shows.
#[derive(Debug, Serialize)]
pub struct Page {
    pub workflow: String,
    pub file: String,
    /// RFC 3339, UTC.
    pub generated: String,
    pub flow_version: String,
    /// Stages by state.
    pub counts: BTreeMap<&'static str, usize>,
    pub stages: Vec<StageView>,
    /// `[from, to]` by index into `stages`.
    pub edges: Vec<[usize; 2]>,
}

/// A stage's state on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shown {
    /// This apply ran it.
    Ran,
    /// Its artifact is in the local store (this apply found it, or an earlier one made it).
    Cached,
    /// This apply took it from the remote.
    Downloaded,
    /// Its last run failed (or was interrupted): no artifact for its current inputs.
    Failed,
    /// This apply did not run it because a stage it needs failed.
    Skipped,
    WillRun,
    WillDownload,
}

impl Shown {
    pub fn as_str(self) -> &'static str {
        match self {
            Shown::Ran => "ran",
            Shown::Cached => "cached",
            Shown::Downloaded => "downloaded",
            Shown::Failed => "failed",
            Shown::Skipped => "skipped",
            Shown::WillRun => "will_run",
            Shown::WillDownload => "will_download",
        }
    }
}

/// One stage as the page shows it. Absent facts are left out of the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    pub name: String,
    pub kind: String,
    pub state: Shown,
    pub place: layout::Place,
    pub params: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// Why it ran in this apply, or why it will run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// For a failed or skipped stage: what happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub executor: String,
    /// The stage's run record: device, host, time, duration, size, summary metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<(String, u64)>,
    /// Files of the artifact not listed (past [`collect::MAX_FILES`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub more_files: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
    /// Scalar name → `[step, value]` points (at most [`collect::MAX_POINTS`] a curve).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub curves: BTreeMap<String, Vec<(u64, f64)>>,
    /// An eval's `metrics.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<serde_json::Value>,
    /// Rows of an eval's `samples.jsonl` and `answers.jsonl` (the first few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<serde_json::Value>,
    /// The shape of the model in its artifact (`config.json`), for what went into a merge or a
    /// growth and what came out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<serde_json::Value>,
    /// Role → the stages it names (indices into the page's stages).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, Vec<usize>>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
