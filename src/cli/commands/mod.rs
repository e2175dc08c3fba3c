//! One file per subcommand (uv's layout). Each takes its parsed arguments and returns the exit
//! code, or a [`Failure`] rendered once by `main`. What several commands share — reading and
//! preparing a workflow, finding a stage's current artifact — is here.

pub(super) mod apply;
pub(super) mod checkout;
pub(super) mod gc;
pub(super) mod graph;
pub(super) mod hash;
pub(super) mod key;
pub(super) mod launch;
pub(super) mod plan;
pub(super) mod report;
pub(super) mod run_stage;
pub(super) mod share;
pub(super) mod show;
pub(super) mod verify;

use std::path::{Path, PathBuf};

use super::exit;
use super::failure::Failure;
use super::root::cache_root;
use crate::exec::plan::State;
use crate::exec::{self, Prepared};
use crate::spec::{self, Override};
use crate::stages::Registry;
use crate::store::Record;

/// Reads `file` with its `--set` overrides and prepares it for `selection` in its store: the
/// one place a command turns a workflow file into something to plan or apply.
fn prepare(
    cache: Option<PathBuf>,
    file: &Path,
    sets: &[String],
    selection: &exec::Selection,
) -> Result<Prepared, Failure> {
    let workflow = spec::load(file, &overrides(sets))?;
    let root = cache_root(cache, Some(&workflow), &workflow.dir);
    Ok(exec::prepare(workflow, &Registry::builtin(), selection, &root)?)
}

fn overrides(sets: &[String]) -> Vec<Override> {
    sets.iter().map(|s| Override(s.clone())).collect()
}

/// The current artifact of `stage` in the local store, with the prepared workflow, or a
/// failure saying why there is none.
async fn current(
    cache: Option<PathBuf>,
    file: &Path,
    stage: &str,
    sets: &[String],
) -> Result<(Prepared, Record), Failure> {
    let workflow = spec::load(file, &overrides(sets))?;
    if let Some(members) = workflow.matrices.get(stage) {
        let message = format!("`{stage}` is a matrix stage of `{}`; name one of its members", file.display());
        return Err(Failure::new(exit::INVALID, message).hint(format!("its members: {}", members.join(", "))));
    }
    if workflow.index(stage).is_none() {
        return Err(Failure::new(exit::INVALID, format!("`{stage}` is not a stage of `{}`", file.display())));
    }
    let root = cache_root(cache, Some(&workflow), &workflow.dir);
    let selection = exec::Selection { targets: vec![stage.to_owned()], force: vec![] };
    let prepared = exec::prepare(workflow, &Registry::builtin(), &selection, &root)?;
    let tiers = crate::store::Tiered::new(prepared.store.clone(), None);
    let planned = exec::plan::plan(&prepared, &tiers).await?;
    let entry = planned.into_iter().find(|p| p.stage == stage).expect("the target is planned");
    match entry.state {
        State::Cached { fingerprint, .. } => {
            let record = prepared.store.record(&fingerprint).await?.expect("planned as cached");
            Ok((prepared, record))
        }
        State::WillDownload { .. } => {
            Err(Failure::new(exit::STAGE_FAILED, format!("stage `{stage}` is only on the remote"))
                .hint(format!("run `flow pull {} {stage}`", file.display())))
        }
        State::WillRun { reasons, .. } => {
            let why: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
            let message = format!("stage `{stage}` has no artifact for its current inputs ({})", why.join("; "));
            Err(Failure::new(exit::STAGE_FAILED, message)
                .hint(format!("run `flow apply {} --target {stage}`", file.display())))
        }
    }
}
