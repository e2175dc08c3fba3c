//! Execution: from a validated workflow to artifacts in the store.
//!
//! [`prepare`] checks the workflow against the kinds, builds the DAG, hashes input files and
//! reads the lock file. [`plan`](plan::plan) says per stage whether it is cached or will run,
//! and why. [`apply`](apply::apply) walks the DAG: for each ready stage it computes the
//! fingerprint ([`fingerprint`]), restores a hit, or runs the stage as a child process
//! ([`runner`]) and commits its output; it reports through [`Event`]s and updates the lock
//! file. [`share`] moves the artifacts a lock file names to and from the remote. This module is
//! the only one that decides what invalidates a cache entry.

pub mod apply;
pub mod event;
pub mod fingerprint;
mod leftovers;
pub mod lockfile;
pub mod plan;
pub mod runner;
pub mod share;
pub mod slurm;
pub mod supervisor;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

pub use event::{Event, StageOutcome, Status, Summary};
use fingerprint::{FINGERPRINT_VERSION, Needed, Recipe};
use lockfile::{LockError, LockFile};

use crate::graph::Dag;
use crate::hash::Digest;
use crate::hash::file::StatCache;
use crate::spec::{EnvVar, SpecError, SpecErrors, Workflow};
use crate::stages::{Checked, Registry};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    #[error(transparent)]
    Spec(#[from] SpecErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot hash the inputs of stage `{stage}`")]
    Inputs {
        stage: String,
        #[source]
        source: std::io::Error,
    },
}

/// A workflow ready to plan or apply.
pub struct Prepared {
    pub workflow: Workflow,
    pub dag: Dag,
    pub checked: Vec<Checked>,
    /// The selected stages (targets and their dependencies), in topological order.
    pub selected: Vec<usize>,
    pub lock_path: PathBuf,
    pub lock: LockFile,
    inputs: Vec<BTreeMap<String, Digest>>,
}

/// Checks `workflow` against the kinds, builds its DAG, selects `targets` (all stages when
/// empty) with their dependencies, and hashes the selected stages' input files.
pub fn prepare(
    workflow: Workflow,
    registry: &Registry,
    store: &Store,
    targets: &[String],
) -> Result<Prepared, ExecError> {
    let checked = registry.check(&workflow)?;
    let dag = Dag::build(&workflow)?;
    let selected = select(&workflow, &dag, targets)?;
    let lock_path = lockfile::path_for(&workflow.path);
    let lock = LockFile::read(&lock_path)?;
    let mut cache = StatCache::load(&store.stat_cache_path());
    let mut inputs = vec![BTreeMap::new(); workflow.stages.len()];
    for &i in &selected {
        let stage = &workflow.stages[i];
        let files = Workflow::input_files(stage);
        if files.is_empty() {
            continue;
        }
        let full: Vec<PathBuf> = files.iter().map(|f| workflow.dir.join(f)).collect();
        tracing::debug!(stage = %stage.name, files = full.len(), "hashing inputs");
        let digests = cache.digests(&full).map_err(|source| ExecError::Inputs { stage: stage.name.clone(), source })?;
        inputs[i] = files.iter().map(|f| f.to_string_lossy().into_owned()).zip(digests).collect();
    }
    // The stat cache only saves work; failing to write it must not fail the run.
    let _ = cache.save(&store.stat_cache_path());
    Ok(Prepared { workflow, dag, checked, selected, lock_path, lock, inputs })
}

fn select(workflow: &Workflow, dag: &Dag, targets: &[String]) -> Result<Vec<usize>, SpecErrors> {
    if targets.is_empty() {
        return Ok(dag.order().to_vec());
    }
    let mut idx = Vec::new();
    let mut errors = Vec::new();
    for t in targets {
        match workflow.index(t) {
            Some(i) => idx.push(i),
            None => errors.push(SpecError::whole(format!("target `{t}` is not a stage of this workflow"))),
        }
    }
    if !errors.is_empty() {
        return Err(SpecErrors { file: workflow.path.display().to_string(), errors });
    }
    let closure: BTreeSet<usize> = dag.closure(&idx);
    Ok(dag.order().iter().copied().filter(|i| closure.contains(i)).collect())
}

impl Prepared {
    /// The recipe of stage `i`, given the artifact digests of finished stages; `None` while an
    /// upstream artifact is unknown.
    pub fn recipe(&self, i: usize, artifact: impl Fn(usize) -> Option<Digest>) -> Option<Recipe> {
        let stage = &self.workflow.stages[i];
        let index = |name: &str| self.workflow.index(name).expect("validated need");
        let mut needs = BTreeMap::new();
        for (role, need) in &stage.needs {
            let digests: Option<Vec<Digest>> = need.stages.iter().map(|(n, _)| artifact(index(n))).collect();
            let digests = digests?;
            let needed = if need.is_list { Needed::Many(digests) } else { Needed::One(digests[0]) };
            needs.insert(role.clone(), needed);
        }
        let env = stage
            .env
            .iter()
            .map(|e| match e {
                EnvVar::Set { name, value } => (name.clone(), Some(value.clone())),
                // Only a digest of a passed-through value is kept: the recipe is written to the
                // lock file, which is committed, and such variables often hold secrets.
                EnvVar::Pass { name } => {
                    (name.clone(), std::env::var(name).ok().map(|v| format!("blake3:{}", Digest::of(v.as_bytes()))))
                }
            })
            .collect();
        Some(Recipe {
            v: FINGERPRINT_VERSION,
            kind: stage.kind.clone(),
            kind_version: self.checked[i].kind_version,
            params: self.checked[i].params.clone(),
            needs,
            inputs: self.inputs[i].clone(),
            command: stage.run.clone(),
            env,
            salt: self.workflow.store.salt.clone(),
            outputs: stage.outputs.clone(),
        })
    }

    /// Upstream stage names by role, as the lock file records them.
    pub fn need_names(&self, i: usize) -> BTreeMap<String, Vec<String>> {
        self.workflow.stages[i]
            .needs
            .iter()
            .map(|(role, n)| (role.clone(), n.stages.iter().map(|(s, _)| s.clone()).collect()))
            .collect()
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.workflow.index(name)
    }
}
