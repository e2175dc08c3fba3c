//! Gathers a [`Page`]: the plan of every selected stage (its fingerprint, cached or not, and
//! why it will run), what an apply saw (ran, cached, downloaded, failed, skipped, and why each
//! stage that ran had to), and for each stage with an artifact its run record, files, curves
//! ([`History`]), eval tables and model shape, and its log tail.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::layout::layout;
use super::{Page, Shown, StageView};
use crate::exec::history::History;
use crate::exec::plan::{Planned, State, plan};
use crate::exec::{ExecError, Prepared, StageOutcome, Status};
use crate::hash::{Digest, Fingerprint};
use crate::spec::executor::Executor;
use crate::store::{Entry, Tiered};

/// Files of an artifact listed on the page.
pub(super) const MAX_FILES: usize = 200;
/// Points of one curve on the page (longer runs are thinned evenly, the last step kept).
pub(super) const MAX_POINTS: usize = 1000;
/// Lines of a log's tail, and characters of each.
const LOG_LINES: usize = 12;
const LOG_WIDTH: usize = 300;
/// Rows of an eval's samples and answers.
const MAX_SAMPLES: usize = 20;
/// Larger eval metrics files are not inlined.
const MAX_EVAL_BYTES: u64 = 256 * 1024;

/// What an apply saw, for the report written at its end.
#[derive(Debug, Default)]
pub struct Applied {
    /// The plan before the apply: why each stage that ran had to run.
    pub before: Vec<Planned>,
    pub outcomes: HashMap<String, StageOutcome>,
}

/// The page of `p`'s selected stages as the store has them now, with what `applied` saw.
pub async fn collect(p: &Prepared, tiers: &Tiered, applied: Option<&Applied>) -> Result<Page, ExecError> {
    let now = plan(p, tiers).await?;
    let now: HashMap<&str, &Planned> = now.iter().map(|x| (x.stage.as_str(), x)).collect();
    let before: HashMap<&str, &Planned> =
        applied.map(|a| a.before.iter().map(|x| (x.stage.as_str(), x)).collect()).unwrap_or_default();
    let places = layout(&p.dag, &p.selected);
    let index: HashMap<usize, usize> = p.selected.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut stages = Vec::with_capacity(p.selected.len());
    let mut edges = Vec::new();
    for (k, &i) in p.selected.iter().enumerate() {
        let stage = &p.workflow.stages[i];
        let planned = now[stage.name.as_str()];
        let outcome = applied.and_then(|a| a.outcomes.get(&stage.name));
        let mut view = view(p, i, planned, outcome, before.get(stage.name.as_str()).copied()).await?;
        view.place = places[k];
        view.inputs = stage
            .needs
            .iter()
            .map(|(role, need)| {
                let from =
                    need.stages.iter().filter_map(|(n, _)| p.workflow.index(n).and_then(|j| index.get(&j).copied()));
                (role.clone(), from.collect())
            })
            .collect();
        edges.extend(p.dag.dependencies(i).into_iter().filter_map(|d| index.get(&d).map(|&from| [from, k])));
        stages.push(view);
    }
    let mut counts = BTreeMap::new();
    for s in &stages {
        *counts.entry(s.state.as_str()).or_default() += 1;
    }
    Ok(Page {
        workflow: p.workflow.name.clone(),
        file: p.workflow.path.display().to_string(),
        generated: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        flow_version: env!("CARGO_PKG_VERSION").to_owned(),
        counts,
        stages,
        edges,
    })
}

async fn view(
    p: &Prepared,
    i: usize,
    planned: &Planned,
    outcome: Option<&StageOutcome>,
    before: Option<&Planned>,
) -> Result<StageView, ExecError> {
    let stage = &p.workflow.stages[i];
    let store = &p.store;
    let (fingerprint, artifact): (Option<Fingerprint>, Option<Digest>) = match &planned.state {
        State::Cached { fingerprint, artifact } => (Some(*fingerprint), Some(*artifact)),
        State::WillDownload { fingerprint, .. } => (Some(*fingerprint), None),
        State::WillRun { fingerprint, .. } => (*fingerprint, None),
    };
    let log = fingerprint.map(|fp| store.log_path(&fp)).filter(|l| l.is_file());
    let state = match outcome.map(|o| o.status) {
        Some(Status::Ran) => Shown::Ran,
        Some(Status::Cached) => Shown::Cached,
        Some(Status::Downloaded) => Shown::Downloaded,
        Some(Status::Failed) => Shown::Failed,
        Some(Status::Skipped) => Shown::Skipped,
        None => match &planned.state {
            State::Cached { .. } => Shown::Cached,
            State::WillDownload { .. } => Shown::WillDownload,
            // A log of its current fingerprint but no artifact: its last run did not succeed.
            State::WillRun { .. } if log.is_some() => Shown::Failed,
            State::WillRun { .. } => Shown::WillRun,
        },
    };
    let reasons = match (state, before.map(|b| &b.state), &planned.state) {
        (Shown::Ran, Some(State::WillRun { reasons, .. }), _) | (_, _, State::WillRun { reasons, .. }) => {
            reasons.iter().map(|r| r.to_string()).collect()
        }
        _ => Vec::new(),
    };
    let mut v = StageView {
        name: stage.name.clone(),
        kind: stage.kind.clone(),
        state,
        place: super::layout::Place { col: 0, row: 0 },
        params: p.checked[i].params.clone(),
        fingerprint: fingerprint.map(|f| f.to_string()),
        artifact: artifact.map(|a| a.to_string()),
        reasons,
        failure: outcome.and_then(|o| o.reason.clone()),
        executor: match &stage.executor {
            Executor::Local => "local".into(),
            Executor::Slurm(_) => "slurm".into(),
        },
        record: None,
        files: Vec::new(),
        more_files: 0,
        log_tail: log
            .as_deref()
            .map(|l| {
                crate::exec::runner::tail(l, LOG_LINES)
                    .into_iter()
                    .map(|s| s.chars().take(LOG_WIDTH).collect())
                    .collect()
            })
            .unwrap_or_default(),
        curves: BTreeMap::new(),
        eval: None,
        samples: Vec::new(),
        answers: Vec::new(),
        model: None,
        inputs: BTreeMap::new(),
    };
    let (Some(fp), Some(artifact)) = (fingerprint, artifact) else { return Ok(v) };
    let Some(record) = store.record(&fp).await? else { return Ok(v) };
    v.record = Some(serde_json::json!({
        "created": record.created,
        "host": record.host,
        "device": record.device,
        "seconds": record.seconds,
        "bytes": record.bytes,
        "flow_version": record.flow_version,
        "produced_by": format!("stage `{}` of workflow `{}`", record.stage, record.workflow),
        "metrics": record.metrics,
    }));
    let manifest = store.manifest(&artifact).await?;
    for entry in &manifest.entries {
        if v.files.len() == MAX_FILES {
            v.more_files += 1;
            continue;
        }
        match entry {
            Entry::File { path, size, .. } => v.files.push((path.clone(), *size)),
            Entry::Link { path, .. } => v.files.push((path.clone(), 0)),
        }
    }
    let dir = store.materialize(&artifact).await?;
    if let Ok(history) = History::of(store, &record) {
        v.curves = history
            .names()
            .into_iter()
            .filter(|n| *n != "tokens")
            .map(|n| (n.to_owned(), thin(history.series(n))))
            .collect();
    }
    v.eval = read_json(&dir.join("metrics.json"));
    v.samples = read_rows(&dir.join("samples.jsonl"));
    v.answers = read_rows(&dir.join("answers.jsonl"));
    v.model = read_json(&dir.join("config.json")).map(|c| {
        let keys = [
            "num_hidden_layers",
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
        ];
        keys.iter()
            .filter_map(|k| c.get(*k).map(|x| (k.to_string(), x.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    });
    Ok(v)
}

/// At most [`MAX_POINTS`] points, evenly spaced, the last one kept.
fn thin(points: Vec<(u64, f64)>) -> Vec<(u64, f64)> {
    let every = points.len().div_ceil(MAX_POINTS).max(1);
    let last = points.len().saturating_sub(1);
    points.into_iter().enumerate().filter(|(k, _)| k % every == 0 || *k == last).map(|(_, p)| p).collect()
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_EVAL_BYTES {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn read_rows(path: &Path) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines().take(MAX_SAMPLES).filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_curves_are_thinned_evenly_keeping_the_last_step() {
        let points: Vec<(u64, f64)> = (1..=2500).map(|s| (s, s as f64)).collect();
        let thinned = thin(points);
        assert_eq!(thinned.len(), 834);
        assert_eq!((thinned[0].0, thinned[1].0, thinned.last().unwrap().0), (1, 4, 2500));
        assert_eq!(thin(vec![(1, 1.0), (2, 2.0)]).len(), 2);
    }
}
