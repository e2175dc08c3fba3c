//! Stage kinds: what each `kind:` accepts (roles in `needs:`, parameters in `with:`), its
//! version, and the [`Registry`] that checks a [`Workflow`] against them.
//!
//! A kind's [`Kind::params`] turns the stage's `with:` (plus any applicable `defaults:`) into
//! its canonical parameters — the exact JSON that enters the fingerprint — or says which key
//! is wrong and why. Kinds never touch the store or the scheduler.

pub mod command;

use serde_json::{Map, Value};

use crate::spec::{SpecErrors, Workflow};

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

pub trait Kind: Send + Sync {
    fn name(&self) -> &'static str;
    /// Bumped whenever the kind's results for the same parameters and inputs would change.
    fn version(&self) -> u32;
    fn roles(&self) -> Roles;
    /// Whether stages of this kind are a shell command (`run:` and `env:`).
    fn is_command(&self) -> bool {
        false
    }
    /// Whether a `defaults:` key applies to this kind's stages.
    fn takes_default(&self, key: &str) -> bool;
    /// Validates `with:` (defaults already merged in) and returns the canonical parameters.
    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError>;
}

/// Stage-level settings that may appear in `defaults:` without being a kind parameter.
const STAGE_DEFAULTS: &[&str] = &["device"];

/// A stage after its kind has checked it.
#[derive(Debug, Clone)]
pub struct Checked {
    pub kind_version: u32,
    pub params: Value,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
}

pub struct Registry {
    kinds: Vec<Box<dyn Kind>>,
}

impl Registry {
    pub fn builtin() -> Self {
        Self { kinds: vec![Box::new(command::Command)] }
    }

    pub fn kind(&self, name: &str) -> Option<&dyn Kind> {
        self.kinds.iter().find(|k| k.name() == name).map(|k| k.as_ref())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }

    /// Checks every stage's kind, roles, parameters and device; returns one [`Checked`] per
    /// stage in workflow order, or every error found.
    pub fn check(&self, workflow: &Workflow) -> Result<Vec<Checked>, SpecErrors> {
        let mut errors = Vec::new();
        for key in workflow.defaults.keys() {
            if !STAGE_DEFAULTS.contains(&key.as_str()) && !self.kinds.iter().any(|k| k.takes_default(key)) {
                errors.push(workflow.error_at_key(&["defaults", key], format!("no stage kind takes a default `{key}`"), "unknown default"));
            }
        }
        let default_device = workflow.defaults.get("device");
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
            let Some(kind) = self.kind(&stage.kind) else {
                let names = self.names();
                let help = match crate::spec::closest(&stage.kind, &names) {
                    Some(near) => format!("did you mean `{near}`? Available kinds: {}", names.join(", ")),
                    None => format!("available kinds: {}", names.join(", ")),
                };
                errors.push(err(&["kind"], format!("unknown kind `{}` in stage `{}`", stage.kind, stage.name), "unknown kind").with_help(help));
                continue;
            };
            match (kind.is_command(), &stage.run) {
                (true, None) => errors.push(workflow.error_at_span(
                    stage.span,
                    format!("command stage `{}` has no `run`", stage.name),
                    "missing `run`",
                )),
                (false, Some(_)) => errors.push(
                    err(&["run"], "`run` is only allowed on `kind: command` stages".into(), "not a command stage")
                        .with_help(format!("kind `{}` is configured with `with:`", kind.name())),
                ),
                _ => {}
            }
            if !kind.is_command() && !stage.env.is_empty() {
                errors.push(err(&["env"], "`env` is only allowed on `kind: command` stages".into(), "not a command stage"));
            }
            if let Roles::Fixed(roles) = kind.roles() {
                for (role, need) in &stage.needs {
                    match roles.iter().find(|r| r.name == role) {
                        None => {
                            let names: Vec<&str> = roles.iter().map(|r| r.name).collect();
                            errors.push(
                                err(&["needs", role], format!("kind `{}` has no role `{role}`", kind.name()), "unknown role")
                                    .with_help(format!("`{}` reads: {}", kind.name(), names.join(", "))),
                            );
                        }
                        Some(r) if !r.list && need.is_list => errors.push(err(
                            &["needs", role],
                            format!("role `{role}` of kind `{}` takes one stage, not a list", kind.name()),
                            "expected one stage",
                        )),
                        Some(_) => {}
                    }
                }
                for r in roles.iter().filter(|r| r.required && !stage.needs.contains_key(r.name)) {
                    errors.push(err(&["needs"], format!("stage `{}` of kind `{}` needs a `{}` role", stage.name, kind.name(), r.name), "missing role"));
                }
            }
            let mut with = Map::new();
            for (key, value) in &workflow.defaults {
                if kind.takes_default(key) {
                    with.insert(key.clone(), value.clone());
                }
            }
            with.extend(stage.with.clone());
            let params = match kind.params(&with) {
                Ok(p) => p,
                Err(e) => {
                    let mut keys = vec!["with"];
                    keys.extend(e.path.iter().map(String::as_str));
                    errors.push(err(&keys, format!("stage `{}`: {}", stage.name, e.message), "invalid parameter"));
                    continue;
                }
            };
            let device = match stage.device.as_ref().map(|d| Value::String(d.clone())).or_else(|| default_device.cloned()) {
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
            out.push(Checked { kind_version: kind.version(), params, device });
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(SpecErrors { file: workflow.path.display().to_string(), errors })
        }
    }
}

fn is_device(d: &str) -> bool {
    matches!(d, "cpu" | "cuda" | "auto") || d.strip_prefix("cuda:").is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}
