//! Stage kinds: what each `kind:` accepts (roles in `needs:`, parameters in `with:`), its
//! version, and the [`Registry`] that checks a [`Workflow`] against them.
//!
//! A kind's [`Kind::params`] turns the stage's `with:` (plus any applicable `defaults:`) into
//! its canonical parameters — the exact JSON that enters the fingerprint — or says which key
//! is wrong and why. Kinds never touch the store or the scheduler.

pub mod anneal;
pub mod command;
pub mod corpus;
pub mod data;
pub mod eval;
pub mod grow;
pub mod init;
pub mod merge;
pub mod pretrain;
pub mod sft;
pub mod tasks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::spec::executor::{Executor, ExecutorError};
use crate::spec::{SpecErrors, Workflow};

/// What a built-in stage run receives. `exec` writes it as JSON; `flow run-stage` reads it in
/// the child process and calls the kind's [`Kind::run`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    pub kind: String,
    pub stage: String,
    /// The canonical parameters (as fingerprinted).
    pub params: Value,
    /// Role → the artifact directories of the stages it names, in order.
    pub inputs: BTreeMap<String, Vec<PathBuf>>,
    /// The stage's input files, absolute.
    pub files: Vec<PathBuf>,
    /// The empty directory the artifact is written to.
    pub out: PathBuf,
    /// A directory that survives an interrupted run of the same fingerprint (resume state).
    pub resume: PathBuf,
    pub device: String,
}

impl Task {
    /// The single directory of `role`.
    pub fn input(&self, role: &str) -> Result<&Path, StageError> {
        match self.inputs.get(role).map(Vec::as_slice) {
            Some([one]) => Ok(one),
            _ => Err(StageError::Input(format!("role `{role}` needs exactly one stage"))),
        }
    }

    pub fn params<P: DeserializeOwned>(&self) -> Result<P, StageError> {
        serde_json::from_value(self.params.clone()).map_err(|e| StageError::Input(format!("parameters: {e}")))
    }

    /// Opens the stage's device and reports which it is (the run record keeps it).
    pub fn open_device(&self, progress: &mut dyn FnMut(&Progress)) -> Result<candle_core::Device, StageError> {
        let device = crate::ml::device::select(&self.device).map_err(StageError::Input)?;
        progress(&Progress { device: Some(crate::ml::device::describe(&device)), ..Default::default() });
        Ok(device)
    }
}

/// A progress report from a running stage.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    pub step: u64,
    pub total: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tokens_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eta_s: Option<f64>,
    /// Set in a report of its own, before the first step: the device the stage runs on, as the
    /// run record names it (it is not shown as progress).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Tokenizer(#[from] crate::ml::tokenizer::TokenizerError),
    #[error(transparent)]
    Train(#[from] crate::ml::train::TrainError),
    #[error(transparent)]
    Synth(#[from] crate::synth::SynthError),
}

/// Deserialises `with:` into a kind's parameter struct (unknown keys and wrong types are errors
/// naming the key) and returns the canonical JSON: every default filled in.
pub fn typed<P: DeserializeOwned + Serialize>(with: &Map<String, Value>) -> Result<(P, Value), ParamError> {
    let de = Value::Object(with.clone());
    let p: P = serde_path_to_error::deserialize(de).map_err(|e| {
        let path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let message = e.inner().to_string();
        // Inside a `#[serde(flatten)]` group serde loses the key; the value it quotes finds it.
        let path = if path.is_empty() {
            with.iter()
                .find(|(_, v)| v.as_str().is_some_and(|v| message.contains(&format!("`{v}`"))))
                .map(|(k, _)| vec![k.clone()])
                .unwrap_or_default()
        } else {
            path
        };
        ParamError { path, message }
    })?;
    let mut canonical = serde_json::to_value(&p).expect("parameters serialise");
    // Every field serialises (defaults filled in), so a key of `with:` missing from the
    // canonical form is one the kind does not know.
    if let Value::Object(known) = &mut canonical {
        let names: Vec<&str> = known.keys().map(String::as_str).collect();
        if let Some(key) = with.keys().find(|k| !known.contains_key(*k)) {
            let hint = crate::spec::closest(key, &names).map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default();
            return Err(ParamError { path: vec![key.clone()], message: format!("unknown parameter `{key}`{hint}") });
        }
        for (key, default) in LATER_DEFAULTS {
            if known.get(*key).and_then(Value::as_str) == Some(default) {
                known.remove(*key);
            }
        }
    }
    Ok((p, canonical))
}

/// Parameters added after kinds were first released, with the default that keeps a stage
/// doing what it did before. At that default they are left out of the canonical parameters,
/// so fingerprints (and every cached artifact) from before they existed still hold.
const LATER_DEFAULTS: &[(&str, &str)] = &[("precision", "f32")];

/// The seed of every kind that takes one, unless `with:` or `defaults:` sets it.
pub fn default_seed() -> u64 {
    1
}

/// A parameter check that failed after deserialisation.
pub fn invalid(key: &str, message: impl Into<String>) -> ParamError {
    ParamError { path: vec![key.to_owned()], message: message.into() }
}

/// One role a kind reads from `needs:`.
#[derive(Debug, Clone, Copy)]
pub struct Role {
    pub name: &'static str,
    /// Whether the role takes a list of stages.
    pub list: bool,
    pub required: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Roles {
    /// Any role names (the `command` kind: roles only name environment variables).
    Any,
    Fixed(&'static [Role]),
}

/// A bad parameter: the key path under `with:` and what is wrong with it.
#[derive(Debug, Clone)]
pub struct ParamError {
    pub path: Vec<String>,
    pub message: String,
}

/// What the registry needs to know of a kind, besides its parameters.
#[derive(Debug)]
pub struct About {
    pub name: &'static str,
    /// Bumped whenever the kind's results for the same parameters and inputs would change.
    pub version: u32,
    pub roles: Roles,
    /// Whether stages of this kind are a shell command (`run:` and `env:`).
    pub shell: bool,
    /// Whether its stages compute on their `device:` (and so take a GPU slot on CUDA).
    pub device: bool,
    /// The `defaults:` keys that apply to this kind's stages.
    pub defaults: &'static [&'static str],
    /// Files every successful run leaves non-empty in its output; a run that exits 0 without
    /// them failed.
    pub outputs: &'static [&'static str],
}

pub trait Kind: Send + Sync {
    fn about(&self) -> &'static About;
    /// Validates `with:` (defaults already merged in) and returns the canonical parameters.
    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError>;
    /// Runs the stage in the current process (`flow run-stage`), writing its artifact to
    /// `task.out`. The `command` kind never gets here: it runs its shell command directly.
    fn run(&self, task: &Task, progress: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let _ = (task, progress);
        Err(StageError::Input(format!("kind `{}` does not run in-process", self.about().name)))
    }
}

/// What every kind that writes a model leaves: a folder any model-reading stage loads.
pub const MODEL: &[&str] = &["config.json", "model.safetensors", "tokenizer.json"];

/// Stage-level settings that may appear in `defaults:` without being a kind parameter.
const STAGE_DEFAULTS: &[&str] = &["device", "gpu_share", "executor"];

/// A stage after its kind has checked it.
#[derive(Debug, Clone)]
pub struct Checked {
    pub kind_version: u32,
    pub params: Value,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    /// Whether the kind computes on the device (a `command` stage or a data kind does not).
    pub uses_device: bool,
    /// Thousandths of one GPU the stage holds while it runs on CUDA (`gpu_share:`, default 1):
    /// stages share a GPU while their shares sum to at most one.
    pub gpu_share: u16,
    /// Runs `run:` through the shell rather than in `flow run-stage`.
    pub shell: bool,
    /// Where it runs (not part of the fingerprint).
    pub executor: Executor,
    /// Paths under the output that must exist and be non-empty after a run: the kind's own,
    /// or a command stage's `outputs:`.
    pub outputs: Vec<String>,
}

pub struct Registry {
    kinds: Vec<Box<dyn Kind>>,
}

impl Registry {
    pub fn builtin() -> Self {
        Self {
            kinds: vec![
                Box::new(command::Command),
                Box::new(corpus::Corpus),
                Box::new(data::Data),
                Box::new(init::Init),
                Box::new(pretrain::Pretrain),
                Box::new(anneal::Anneal),
                Box::new(eval::Eval),
                Box::new(merge::Merge),
                Box::new(grow::Grow),
                Box::new(tasks::Tasks),
                Box::new(sft::Sft),
            ],
        }
    }

    pub fn kind(&self, name: &str) -> Option<&dyn Kind> {
        self.kinds.iter().find(|k| k.about().name == name).map(|k| k.as_ref())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.about().name).collect()
    }

    /// Checks every stage's kind, roles, parameters and device; returns one [`Checked`] per
    /// stage in workflow order, or every error found.
    pub fn check(&self, workflow: &Workflow) -> Result<Vec<Checked>, SpecErrors> {
        let mut errors = Vec::new();
        for key in workflow.defaults.keys() {
            if !STAGE_DEFAULTS.contains(&key.as_str())
                && !self.kinds.iter().any(|k| k.about().defaults.contains(&key.as_str()))
            {
                errors.push(workflow.error_at_key(
                    &["defaults", key],
                    format!("no stage kind takes a default `{key}`"),
                    "unknown default",
                ));
            }
        }
        let default_device = workflow.defaults.get("device");
        let default_gpu_share = match workflow.defaults.get("gpu_share").map(gpu_share) {
            None => WHOLE_GPU,
            Some(Ok(share)) => share,
            Some(Err(e)) => {
                errors.push(workflow.error_at(&["defaults", "gpu_share"], e, "invalid share").with_help(SHARE_HELP));
                WHOLE_GPU
            }
        };
        let default_executor = workflow.defaults.get("executor");
        let executor_error = |mut keys: Vec<String>, e: ExecutorError| {
            let what = if e.path.is_empty() { String::new() } else { format!(" (`{}`)", e.path.join(".")) };
            keys.extend(e.path);
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            workflow.error_at(&refs, format!("invalid executor{what}: {}", e.message), "invalid executor")
        };
        let defaults_ok = match Executor::resolve(None, default_executor) {
            Ok(_) => true,
            Err(e) => {
                errors.push(executor_error(vec!["defaults".into(), "executor".into()], e));
                false
            }
        };
        let mut out = Vec::new();
        for stage in &workflow.stages {
            let at = |keys: &[&str]| {
                let mut path = vec!["stages", stage.name.as_str()];
                path.extend_from_slice(keys);
                path.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            };
            let err = |keys: &[&str], message: String, label: &str| {
                let path = at(keys);
                let refs: Vec<&str> = path.iter().map(String::as_str).collect();
                workflow.error_at(&refs, message, label)
            };
            let Some(kind_impl) = self.kind(&stage.kind) else {
                let names = self.names();
                let help = match crate::spec::closest(&stage.kind, &names) {
                    Some(near) => format!("did you mean `{near}`? Available kinds: {}", names.join(", ")),
                    None => format!("available kinds: {}", names.join(", ")),
                };
                errors.push(
                    err(&["kind"], format!("unknown kind `{}` in stage `{}`", stage.kind, stage.name), "unknown kind")
                        .with_help(help),
                );
                continue;
            };
            let kind = kind_impl.about();
            match (kind.shell, &stage.run) {
                (true, None) => errors.push(workflow.error_at_span(
                    stage.span,
                    format!("command stage `{}` has no `run`", stage.name),
                    "missing `run`",
                )),
                (false, Some(_)) => errors.push(
                    err(&["run"], "`run` is only allowed on `kind: command` stages".into(), "not a command stage")
                        .with_help(format!("kind `{}` is configured with `with:`", kind.name)),
                ),
                _ => {}
            }
            if !kind.shell && !stage.env.is_empty() {
                errors.push(err(
                    &["env"],
                    "`env` is only allowed on `kind: command` stages".into(),
                    "not a command stage",
                ));
            }
            if !kind.shell && !stage.outputs.is_empty() {
                errors.push(
                    err(
                        &["outputs"],
                        "`outputs` is only allowed on `kind: command` stages".into(),
                        "not a command stage",
                    )
                    .with_help(format!("kind `{}` checks what it writes itself", kind.name)),
                );
            }
            if let Roles::Fixed(roles) = kind.roles {
                for (role, need) in &stage.needs {
                    match roles.iter().find(|r| r.name == role) {
                        None => {
                            let names: Vec<&str> = roles.iter().map(|r| r.name).collect();
                            errors.push(
                                err(
                                    &["needs", role],
                                    format!("kind `{}` has no role `{role}`", kind.name),
                                    "unknown role",
                                )
                                .with_help(format!(
                                    "`{}` reads: {}",
                                    kind.name,
                                    names.join(", ")
                                )),
                            );
                        }
                        Some(r) if !r.list && need.is_list => errors.push(err(
                            &["needs", role],
                            format!("role `{role}` of kind `{}` takes one stage, not a list", kind.name),
                            "expected one stage",
                        )),
                        Some(_) => {}
                    }
                }
                for r in roles.iter().filter(|r| r.required && !stage.needs.contains_key(r.name)) {
                    errors.push(err(
                        &["needs"],
                        format!("stage `{}` of kind `{}` needs a `{}` role", stage.name, kind.name, r.name),
                        "missing role",
                    ));
                }
            }
            let mut with = Map::new();
            for (key, value) in &workflow.defaults {
                if kind.defaults.contains(&key.as_str()) {
                    with.insert(key.clone(), value.clone());
                }
            }
            with.extend(stage.with.clone());
            let params = match kind_impl.params(&with) {
                Ok(p) => p,
                Err(e) => {
                    let mut keys = vec!["with"];
                    keys.extend(e.path.iter().map(String::as_str));
                    // Name the parameter unless the message already does.
                    let key = e.path.join(".");
                    let message = if key.is_empty() || e.message.contains(&format!("`{key}`")) {
                        format!("stage `{}`: {}", stage.name, e.message)
                    } else {
                        format!("stage `{}`, parameter `{key}`: {}", stage.name, e.message)
                    };
                    errors.push(err(&keys, message, "invalid parameter"));
                    continue;
                }
            };
            let device = match stage
                .device
                .as_ref()
                .map(|d| Value::String(d.clone()))
                .or_else(|| default_device.cloned())
            {
                None => "auto".to_owned(),
                Some(Value::String(d)) if is_device(&d) => d,
                Some(other) => {
                    let keys: &[&str] = if stage.device.is_some() { &["device"] } else { &[] };
                    let e = if keys.is_empty() {
                        workflow.error_at(&["defaults", "device"], format!("invalid device {other}"), "invalid device")
                    } else {
                        err(keys, format!("invalid device {other}"), "invalid device")
                    };
                    errors.push(e.with_help("devices are `cpu`, `cuda`, `cuda:N` or `auto`"));
                    continue;
                }
            };
            let gpu_share = match stage.gpu_share.as_ref().map(gpu_share) {
                None => default_gpu_share,
                Some(_) if !kind.device => {
                    let message =
                        format!("`gpu_share` on stage `{}`, whose kind `{}` takes no GPU", stage.name, kind.name);
                    errors.push(err(&["gpu_share"], message, "not a GPU stage"));
                    continue;
                }
                Some(Ok(share)) => share,
                Some(Err(e)) => {
                    errors.push(err(&["gpu_share"], e, "invalid share").with_help(SHARE_HELP));
                    continue;
                }
            };
            let executor = match Executor::resolve(stage.executor.as_ref(), default_executor) {
                Ok(e) => e,
                Err(_) if !defaults_ok => continue,
                Err(e) => {
                    errors.push(executor_error(at(&["executor"]), e));
                    continue;
                }
            };
            let outputs =
                if kind.shell { stage.outputs.clone() } else { kind.outputs.iter().map(|o| o.to_string()).collect() };
            out.push(Checked {
                kind_version: kind.version,
                params,
                device,
                uses_device: kind.device,
                gpu_share,
                shell: kind.shell,
                executor,
                outputs,
            });
        }
        if errors.is_empty() { Ok(out) } else { Err(SpecErrors { file: workflow.path.display().to_string(), errors }) }
    }
}

/// Why a finished run's output is incomplete: the first of `outputs` that is missing, or is an
/// empty file or directory.
pub fn missing_output(out: &Path, outputs: &[String]) -> Option<String> {
    outputs.iter().find_map(|o| {
        let path = out.join(o);
        let empty = match std::fs::metadata(&path) {
            Err(_) => return Some(format!("declared output `{o}` is missing")),
            Ok(m) if m.is_dir() => std::fs::read_dir(&path).map_or(true, |mut d| d.next().is_none()),
            Ok(m) => m.len() == 0,
        };
        empty.then(|| format!("declared output `{o}` is empty"))
    })
}

/// One whole GPU, in the thousandths [`Checked::gpu_share`] counts.
pub const WHOLE_GPU: u16 = 1000;

const SHARE_HELP: &str = "a fraction of one GPU, such as 0.5 for two stages per GPU";

/// A `gpu_share:` value in thousandths of a GPU: a number over 0 and at most 1.
fn gpu_share(v: &Value) -> Result<u16, String> {
    match v.as_f64() {
        Some(x) if x > 0.0 && x <= 1.0 => Ok(((x * f64::from(WHOLE_GPU)).round() as u16).max(1)),
        _ => Err(format!("`gpu_share` must be a number over 0 and at most 1, not {v}")),
    }
}

/// Whether `d` names a device: `cpu`, `cuda`, `cuda:N` or `auto`.
pub fn is_device(d: &str) -> bool {
    matches!(d, "cpu" | "cuda" | "auto")
        || d.strip_prefix("cuda:").is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}
