//! `flow plan`: per stage, whether it is cached or will run, and why — diffed against the lock
//! file's record of the last successful apply (like Snakemake's `reason:` and Dagster's stale
//! causes).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::fingerprint::{Needed, Recipe};
use super::lockfile::Locked;
use super::{ExecError, Prepared};
use crate::hash::{Digest, Fingerprint};
use crate::store::Store;
use crate::store::remote::Remote;

#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub stage: String,
    #[serde(flatten)]
    pub state: State,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum State {
    Cached {
        fingerprint: Fingerprint,
        artifact: Digest,
    },
    /// Not in the local store; the remote has it and apply will download it.
    WillDownload {
        fingerprint: Fingerprint,
        artifact: Digest,
    },
    WillRun {
        fingerprint: Option<Fingerprint>,
        reasons: Vec<Reason>,
    },
}

/// Why a stage will run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// `--force` names it.
    Forced,
    /// Never applied from this workflow (no lock entry) and no record in the store.
    NoRecord,
    /// The lock file names this fingerprint but the store has no record of it (gc'd, another
    /// machine, or never pushed).
    RecordMissing,
    KindChanged {
        old: String,
        new: String,
    },
    KindVersionChanged {
        old: u32,
        new: u32,
    },
    ParamChanged {
        key: String,
        old: Option<Value>,
        new: Option<Value>,
    },
    InputStageChanged {
        role: String,
        stage: String,
    },
    InputStageWillRun {
        role: String,
        stage: String,
    },
    NeedsChanged {
        role: String,
    },
    FileAdded {
        path: String,
    },
    FileRemoved {
        path: String,
    },
    FileChanged {
        path: String,
    },
    CommandChanged,
    EnvChanged {
        name: String,
    },
    SaltChanged,
    OutputsChanged,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map_or("(unset)".to_owned(), |v| v.to_string());
        match self {
            Reason::Forced => write!(f, "forced"),
            Reason::NoRecord => write!(f, "no record"),
            Reason::RecordMissing => write!(f, "the lock file's artifact is not in the store"),
            Reason::KindChanged { old, new } => write!(f, "kind changed: {old} → {new}"),
            Reason::KindVersionChanged { old, new } => write!(f, "kind version changed: {old} → {new}"),
            Reason::ParamChanged { key, old, new } => write!(f, "with.{key} changed: {} → {}", show(old), show(new)),
            Reason::InputStageChanged { role, stage } => write!(f, "input stage `{stage}` ({role}) changed"),
            Reason::InputStageWillRun { role, stage } => write!(f, "input stage `{stage}` ({role}) will run"),
            Reason::NeedsChanged { role } => write!(f, "needs.{role} changed"),
            Reason::FileAdded { path } => write!(f, "file `{path}` added"),
            Reason::FileRemoved { path } => write!(f, "file `{path}` removed"),
            Reason::FileChanged { path } => write!(f, "file `{path}` changed"),
            Reason::CommandChanged => write!(f, "command changed"),
            Reason::EnvChanged { name } => write!(f, "env `{name}` changed"),
            Reason::SaltChanged => write!(f, "store salt changed"),
            Reason::OutputsChanged => write!(f, "declared outputs changed"),
        }
    }
}

/// Plans every selected stage without running anything. With a remote, a stage missing locally
/// is looked up there (one request per such stage); a remote that cannot be read counts as
/// not having it.
pub async fn plan(
    p: &Prepared,
    store: &Store,
    remote: Option<&Remote>,
    force: &BTreeSet<String>,
) -> Result<Vec<Planned>, ExecError> {
    let mut artifacts: BTreeMap<usize, Digest> = BTreeMap::new();
    let mut out = Vec::new();
    for &i in &p.selected {
        let stage = &p.workflow.stages[i];
        let locked = p.lock.stages.get(&stage.name);
        let recipe = p.recipe(i, |j| artifacts.get(&j).copied());
        let Some(recipe) = recipe else {
            let mut reasons: Vec<Reason> = p
                .need_names(i)
                .into_iter()
                .flat_map(|(role, names)| names.into_iter().map(move |n| (role.clone(), n)))
                .filter(|(_, n)| p.index(n).is_some_and(|j| !artifacts.contains_key(&j)))
                .map(|(role, stage)| Reason::InputStageWillRun { role, stage })
                .collect();
            reasons.dedup();
            out.push(Planned { stage: stage.name.clone(), state: State::WillRun { fingerprint: None, reasons } });
            continue;
        };
        let fp = recipe.fingerprint();
        let record = if force.contains(&stage.name) { None } else { store.record(&fp).await? };
        let shared = match (&record, remote) {
            (None, Some(remote)) if !force.contains(&stage.name) => remote.record(&fp).await.ok().flatten(),
            _ => None,
        };
        let state = match (record, shared) {
            (Some(r), _) => {
                artifacts.insert(i, r.artifact);
                State::Cached { fingerprint: fp, artifact: r.artifact }
            }
            (None, Some(r)) => {
                artifacts.insert(i, r.artifact);
                State::WillDownload { fingerprint: fp, artifact: r.artifact }
            }
            (None, None) => {
                let reasons = if force.contains(&stage.name) {
                    vec![Reason::Forced]
                } else {
                    explain(&recipe, fp, locked, &p.need_names(i))
                };
                State::WillRun { fingerprint: Some(fp), reasons }
            }
        };
        out.push(Planned { stage: stage.name.clone(), state });
    }
    Ok(out)
}

/// Why `recipe` misses, compared with the lock file's entry for the same stage.
pub fn explain(
    recipe: &Recipe,
    fp: Fingerprint,
    locked: Option<&Locked>,
    names: &BTreeMap<String, Vec<String>>,
) -> Vec<Reason> {
    let Some(old) = locked else { return vec![Reason::NoRecord] };
    if old.fingerprint == fp {
        return vec![Reason::RecordMissing];
    }
    let (a, b) = (&old.recipe, recipe);
    let mut reasons = Vec::new();
    if a.kind != b.kind {
        reasons.push(Reason::KindChanged { old: a.kind.clone(), new: b.kind.clone() });
    }
    if a.kind_version != b.kind_version {
        reasons.push(Reason::KindVersionChanged { old: a.kind_version, new: b.kind_version });
    }
    diff_params("", Some(&a.params), Some(&b.params), &mut reasons);
    let roles: BTreeSet<&String> = a.needs.keys().chain(b.needs.keys()).collect();
    for role in roles {
        let (was, now) = (a.needs.get(role), b.needs.get(role));
        if was == now {
            continue;
        }
        let old_names = old.needs.get(role);
        let new_names = names.get(role);
        match (was, now, old_names == new_names) {
            (Some(Needed::One(_)), Some(Needed::One(_)), true) => reasons.push(Reason::InputStageChanged {
                role: role.clone(),
                stage: new_names.and_then(|n| n.first()).cloned().unwrap_or_default(),
            }),
            (Some(Needed::Many(x)), Some(Needed::Many(y)), true) if x.len() == y.len() => {
                for ((dx, dy), stage) in x.iter().zip(y).zip(new_names.into_iter().flatten()) {
                    if dx != dy {
                        reasons.push(Reason::InputStageChanged { role: role.clone(), stage: stage.clone() });
                    }
                }
            }
            _ => reasons.push(Reason::NeedsChanged { role: role.clone() }),
        }
    }
    let paths: BTreeSet<&String> = a.inputs.keys().chain(b.inputs.keys()).collect();
    for path in paths {
        match (a.inputs.get(path), b.inputs.get(path)) {
            (None, Some(_)) => reasons.push(Reason::FileAdded { path: path.clone() }),
            (Some(_), None) => reasons.push(Reason::FileRemoved { path: path.clone() }),
            (Some(x), Some(y)) if x != y => reasons.push(Reason::FileChanged { path: path.clone() }),
            _ => {}
        }
    }
    if a.command != b.command {
        reasons.push(Reason::CommandChanged);
    }
    let names: BTreeSet<&String> = a.env.keys().chain(b.env.keys()).collect();
    for name in names {
        if a.env.get(name) != b.env.get(name) {
            reasons.push(Reason::EnvChanged { name: name.clone() });
        }
    }
    if a.salt != b.salt {
        reasons.push(Reason::SaltChanged);
    }
    if a.outputs != b.outputs {
        reasons.push(Reason::OutputsChanged);
    }
    if reasons.is_empty() && a.v != b.v {
        reasons.push(Reason::KindVersionChanged { old: a.v, new: b.v });
    }
    reasons
}

fn diff_params(prefix: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Reason>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                diff_params(&key, x.get(k), y.get(k), out);
            }
        }
        (x, y) if x != y => out.push(Reason::ParamChanged { key: prefix.to_owned(), old: x.cloned(), new: y.cloned() }),
        _ => {}
    }
}
