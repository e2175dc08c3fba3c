//! From a validated workflow to one ready to plan or apply ([`Prepared`]): the kinds check it,
//! the DAG is built, `--target` and `--force` are resolved to stages, and only then is the store
//! opened and are the selected stages' input files hashed — so an invalid workflow or selection
//! leaves the store untouched. Each check is done here, once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ExecError;
use super::fingerprint::{FINGERPRINT_VERSION, Needed, Recipe, recipe_params};
use super::lockfile::{self, LockFile};
use crate::graph::Dag;
use crate::hash::Digest;
use crate::hash::file::StatCache;
use crate::spec::{EnvVar, Workflow};
use crate::stages::{Checked, Registry};
use crate::store::Store;

/// Which stages to plan or apply: `--target` (all when empty, with what they need) and
/// `--force` (run even if cached).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub targets: Vec<String>,
    pub force: Vec<String>,
}

/// A workflow ready to plan or apply, with its store.
pub struct Prepared {
    pub workflow: Workflow,
    pub dag: Dag,
    pub checked: Vec<Checked>,
    /// The selected stages (targets and their dependencies), in topological order.
    pub selected: Vec<usize>,
    /// Stages to run even when cached.
    pub force: BTreeSet<usize>,
    pub store: Arc<Store>,
    pub lock_path: PathBuf,
    pub lock: LockFile,
    inputs: Vec<BTreeMap<String, Digest>>,
}

/// Checks `workflow` against the kinds, builds its DAG, resolves `selection`, then opens the
/// store at `store_root` and hashes the selected stages' input files.
pub fn prepare(
    workflow: Workflow,
    registry: &Registry,
    selection: &Selection,
    store_root: &Path,
) -> Result<Prepared, ExecError> {
    let checked = registry.check(&workflow)?;
    let dag = Dag::build(&workflow)?;
    // A matrix stage's name stands for all its members.
    let select = |flag: &'static str, names: &[String]| -> Result<Vec<usize>, ExecError> {
        let mut out = Vec::new();
        for name in names {
            out.extend(workflow.select(name).ok_or_else(|| ExecError::UnknownStage {
                flag,
                stage: name.clone(),
                file: workflow.path.display().to_string(),
            })?);
        }
        Ok(out)
    };
    let targets = select("--target", &selection.targets)?;
    let force = select("--force", &selection.force)?.into_iter().collect();
    let selected = if targets.is_empty() {
        dag.order().to_vec()
    } else {
        let closure = dag.closure(&targets);
        dag.order().iter().copied().filter(|i| closure.contains(i)).collect()
    };
    let lock_path = lockfile::path_for(&workflow.path);
    let lock = LockFile::read(&lock_path)?;
    let store = Store::open(store_root).map_err(|source| ExecError::OpenStore { root: store_root.into(), source })?;
    let inputs = hash_inputs(&workflow, &selected, &store)?;
    Ok(Prepared { workflow, dag, checked, selected, force, store: Arc::new(store), lock_path, lock, inputs })
}

/// The digest of every input file of the selected stages, by workflow-relative path.
fn hash_inputs(
    workflow: &Workflow,
    selected: &[usize],
    store: &Store,
) -> Result<Vec<BTreeMap<String, Digest>>, ExecError> {
    let mut cache = StatCache::load(&store.stat_cache_path());
    let mut inputs = vec![BTreeMap::new(); workflow.stages.len()];
    for &i in selected {
        let stage = &workflow.stages[i];
        let files = stage.input_files();
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
    Ok(inputs)
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
            params: recipe_params(&self.checked[i].params),
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

    /// The indices of the stages `i` needs.
    pub fn upstream(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.workflow.stages[i]
            .needs
            .values()
            .flat_map(|n| &n.stages)
            .map(|(name, _)| self.workflow.index(name).expect("validated need"))
    }

    pub fn name(&self, i: usize) -> &str {
        &self.workflow.stages[i].name
    }
}
