//! `flow push` and `flow pull`: move exactly the artifacts a lock file names between the local
//! store and the remote. A teammate commits the lock file; `pull` fetches its checkpoints
//! without running anything, `push` publishes what an apply without `--push` left local.

use std::time::Instant;

use super::error_chain;
use super::event::{Event, StageOutcome, Status, Summary};
use super::lockfile::{LockFile, Locked};
use super::schedule::Sink;
use super::stage_run::on_transfer;
use crate::store::{Hit, Published, StoreError, Tiered};

/// Publishes every artifact of `lock` that the local store holds. A stage without a local
/// record fails (nothing to publish); the others go on.
pub async fn push(lock: &LockFile, tiers: &Tiered, sink: &Sink) -> Result<Summary, StoreError> {
    let started = Instant::now();
    let mut summary = Summary::default();
    sink(&Event::RunStarted { workflow: String::new(), stages: lock.stages.len(), jobs: 1 });
    for (stage, locked) in &lock.stages {
        let begun = Instant::now();
        let mut outcome = outcome(stage, locked, Status::Cached);
        match tiers.local().record(&locked.fingerprint).await? {
            Some(record) => {
                let built = locked.recipe.built(&locked.needs);
                let published = tiers.publish(&record, &built, on_transfer(sink, stage)).await?;
                outcome.pushed = Some(match published {
                    Published::Created { bytes } => bytes,
                    Published::AlreadyThere => 0,
                });
            }
            None => {
                outcome.status = Status::Failed;
                outcome.reason = Some("not in the local store: run `flow apply` (or `flow pull`) first".into());
            }
        }
        outcome.seconds = begun.elapsed().as_secs_f64();
        finish(&mut summary, outcome, sink);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    sink(&Event::RunFinished(summary.clone()));
    Ok(summary)
}

/// Downloads the artifacts of `stages` (all of `lock` when empty) that the local store lacks,
/// each verified. A stage whose artifact the remote lacks or holds corrupt fails; the others go
/// on.
pub async fn pull(lock: &LockFile, stages: &[String], tiers: &Tiered, sink: &Sink) -> Result<Summary, StoreError> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let chosen: Vec<(&String, &Locked)> =
        lock.stages.iter().filter(|(name, _)| stages.is_empty() || stages.contains(name)).collect();
    sink(&Event::RunStarted { workflow: String::new(), stages: chosen.len(), jobs: 1 });
    for (stage, locked) in chosen {
        let begun = Instant::now();
        let mut outcome = outcome(stage, locked, Status::Cached);
        match tiers.lookup(&locked.fingerprint).await? {
            Hit::Local(record) => {
                tiers.local().materialize(&record.artifact).await?;
                outcome.artifact = Some(record.artifact);
            }
            Hit::Remote(record) if record.artifact != locked.artifact => {
                outcome.status = Status::Failed;
                outcome.reason = Some(format!(
                    "the remote's artifact {} differs from the lock file's {} (the stage is not deterministic); pull skipped",
                    record.artifact.short(),
                    locked.artifact.short()
                ));
            }
            Hit::Remote(record) => match tiers.backfill(&record, on_transfer(sink, stage)).await {
                Ok(()) => {
                    outcome.status = Status::Downloaded;
                    tiers.local().materialize(&locked.artifact).await?;
                }
                Err(e @ StoreError::Io(_)) => return Err(e),
                Err(e) => {
                    outcome.status = Status::Failed;
                    outcome.reason = Some(error_chain(&e));
                }
            },
            Hit::Miss { remote_problem } => {
                outcome.status = Status::Failed;
                outcome.reason = Some(match remote_problem {
                    Some(e) => error_chain(&e),
                    None => format!("the remote has no record of fingerprint {}", locked.fingerprint),
                });
            }
        }
        outcome.seconds = begun.elapsed().as_secs_f64();
        finish(&mut summary, outcome, sink);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    sink(&Event::RunFinished(summary.clone()));
    Ok(summary)
}

fn outcome(stage: &str, locked: &Locked, status: Status) -> StageOutcome {
    StageOutcome {
        stage: stage.to_owned(),
        status,
        fingerprint: Some(locked.fingerprint),
        artifact: Some(locked.artifact),
        seconds: 0.0,
        reason: None,
        log: None,
        log_tail: Vec::new(),
        pushed: None,
    }
}

fn finish(summary: &mut Summary, outcome: StageOutcome, sink: &Sink) {
    summary.count(outcome.status);
    sink(&Event::Stage(outcome));
}
