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
use crate::store::{Hit, Tiered};

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
    /// The remote has a record of the fingerprint that is not used: not signed by a trusted
    /// key, or unreadable.
    RemoteNotUsed {
        why: String,
    },
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
            Reason::RemoteNotUsed { why } => write!(f, "the remote's record is not used: {why}"),
            Reason::OutputsChanged => write!(f, "declared outputs changed"),
        }
    }
}

/// Plans every selected stage without running anything. With a remote, a stage missing locally
/// is looked up there (one request per such stage); a remote that cannot be read counts as
/// not having it.
pub async fn plan(p: &Prepared, tiers: &Tiered) -> Result<Vec<Planned>, ExecError> {
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
                .filter(|(_, n)| p.workflow.index(n).is_some_and(|j| !artifacts.contains_key(&j)))
                .map(|(role, stage)| Reason::InputStageWillRun { role, stage })
                .collect();
            reasons.dedup();
            out.push(Planned { stage: stage.name.clone(), state: State::WillRun { fingerprint: None, reasons } });
            continue;
        };
        let fp = recipe.fingerprint();
        let forced = p.force.contains(&i);
        let hit = if forced { Hit::Miss { remote_problem: None } } else { tiers.lookup(&fp).await? };
        let state = match hit {
            Hit::Local(r) => {
                artifacts.insert(i, r.artifact);
                State::Cached { fingerprint: fp, artifact: r.artifact }
            }
            Hit::Remote(r) => {
                artifacts.insert(i, r.artifact);
                State::WillDownload { fingerprint: fp, artifact: r.artifact }
            }
            Hit::Miss { remote_problem } => {
                let mut reasons =
                    if forced { vec![Reason::Forced] } else { explain(&recipe, fp, locked, &p.need_names(i)) };
                // The remote has a record that cannot be used (untrusted, unreadable): say so.
                if let Some(e) = remote_problem {
                    reasons.push(Reason::RemoteNotUsed { why: super::error_chain(&e) });
                }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::exec::fingerprint::FINGERPRINT_VERSION;

    fn digest(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn recipe() -> Recipe {
        Recipe {
            v: FINGERPRINT_VERSION,
            kind: "pretrain".into(),
            kind_version: 1,
            params: json!({"lr": 0.001, "schedule": {"cosine": {"min_lr": 0.0}}}),
            needs: BTreeMap::from([
                ("model".into(), Needed::One(digest("m"))),
                ("data".into(), Needed::Many(vec![digest("d1"), digest("d2")])),
            ]),
            inputs: BTreeMap::from([("a.txt".into(), digest("a")), ("b.txt".into(), digest("b"))]),
            command: None,
            env: BTreeMap::new(),
            salt: None,
            outputs: vec![],
        }
    }

    fn names() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([("model".into(), vec!["init".into()]), ("data".into(), vec!["web".into(), "code".into()])])
    }

    fn locked(recipe: Recipe) -> Locked {
        Locked { fingerprint: recipe.fingerprint(), artifact: digest("art"), needs: names(), recipe }
    }

    /// The reasons `new` misses, against a lock file holding `old`, as people read them.
    fn why(old: &Recipe, new: &Recipe) -> Vec<String> {
        explain(new, new.fingerprint(), Some(&locked(old.clone())), &names()).iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn without_a_lock_entry_there_is_no_record_and_an_unchanged_recipe_lost_its_record() {
        let r = recipe();
        assert_eq!(explain(&r, r.fingerprint(), None, &names()), [Reason::NoRecord]);
        assert_eq!(why(&r, &r), ["the lock file's artifact is not in the store"]);
    }

    #[test]
    fn each_change_of_the_recipe_is_named() {
        let old = recipe();
        let mut new = recipe();
        new.kind_version = 2;
        new.params["schedule"]["cosine"]["min_lr"] = json!(0.0001);
        new.params["warmup"] = json!(10);
        new.needs.insert("model".into(), Needed::One(digest("m2")));
        new.needs.insert("data".into(), Needed::Many(vec![digest("d1"), digest("d3")]));
        new.inputs.remove("a.txt");
        new.inputs.insert("b.txt".into(), digest("b2"));
        new.inputs.insert("c.txt".into(), digest("c"));
        new.command = Some("python train.py".into());
        new.env.insert("TOKEN".into(), Some("blake3:x".into()));
        new.salt = Some("v2".into());
        new.outputs = vec!["model.pt".into()];
        assert_eq!(
            why(&old, &new),
            [
                "kind version changed: 1 → 2",
                "with.schedule.cosine.min_lr changed: 0.0 → 0.0001",
                "with.warmup changed: (unset) → 10",
                "input stage `code` (data) changed",
                "input stage `init` (model) changed",
                "file `a.txt` removed",
                "file `b.txt` changed",
                "file `c.txt` added",
                "command changed",
                "env `TOKEN` changed",
                "store salt changed",
                "declared outputs changed",
            ]
        );
    }

    #[test]
    fn a_different_kind_or_a_reshaped_role_is_named_as_such() {
        let old = recipe();
        let mut new = recipe();
        new.kind = "anneal".into();
        new.needs.insert("data".into(), Needed::Many(vec![digest("d1")]));
        assert_eq!(why(&old, &new), ["kind changed: pretrain → anneal", "needs.data changed"]);
        // Only the recipe format changed: that is what is reported.
        let mut newer = recipe();
        newer.v = FINGERPRINT_VERSION + 1;
        assert_eq!(
            explain(&newer, newer.fingerprint(), Some(&locked(old)), &names()),
            [Reason::KindVersionChanged { old: FINGERPRINT_VERSION, new: FINGERPRINT_VERSION + 1 }]
        );
    }
}
