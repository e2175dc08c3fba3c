//! The [`Registry`] of built-in kinds, and what it checks of a workflow the language has
//! already validated: that every stage's kind exists, that its `needs:` roles are ones the kind
//! reads, that its `with:` (over the applicable `defaults:`) are parameters the kind accepts,
//! and that `gpu_share:` is only set on kinds that take a GPU. The result is one [`Checked`]
//! per stage.

use std::path::Path;

use serde_json::{Map, Value};

use super::{Kind, Roles, anneal, command, compare, corpus, data, eval, grow, init, merge, pretrain, sft, tasks};
use crate::spec::{SpecError, SpecErrors, Stage, Workflow};

/// A stage after its kind has checked it.
#[derive(Debug, Clone)]
pub struct Checked {
    pub kind_version: u32,
    /// The canonical parameters: `with:` over `defaults:`, every default filled in.
    pub params: Value,
    /// Whether the kind computes on the stage's device (a `command` stage or a data kind does
    /// not), and so takes a GPU slot on CUDA.
    pub uses_device: bool,
    /// Paths under the output that must exist and be non-empty after a run: the kind's own,
    /// or a command stage's `outputs:`.
    pub outputs: Vec<String>,
}

impl Checked {
    /// Why a finished run's output is incomplete: the first of the required outputs that is
    /// missing, or is an empty file or directory.
    pub fn missing_output(&self, out: &Path) -> Option<String> {
        self.outputs.iter().find_map(|o| {
            let path = out.join(o);
            let empty = match std::fs::metadata(&path) {
                Err(_) => return Some(format!("declared output `{o}` is missing")),
                Ok(m) if m.is_dir() => std::fs::read_dir(&path).map_or(true, |mut d| d.next().is_none()),
                Ok(m) => m.len() == 0,
            };
            empty.then(|| format!("declared output `{o}` is empty"))
        })
    }
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
                Box::new(compare::Compare),
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

    /// Checks every stage against its kind; returns one [`Checked`] per stage in workflow
    /// order, or every error found.
    pub fn check(&self, workflow: &Workflow) -> Result<Vec<Checked>, SpecErrors> {
        let mut errors = Vec::new();
        for key in workflow.defaults.keys() {
            if !self.kinds.iter().any(|k| k.about().defaults.contains(&key.as_str())) {
                let message = format!("no stage kind takes a default `{key}`");
                errors.push(workflow.error_at_key(&["defaults", key], message, "unknown default"));
            }
        }
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for stage in &workflow.stages {
            let mut found = Vec::new();
            if let Some(checked) = self.stage(workflow, stage, &mut found) {
                out.push(checked);
            }
            // The members of a matrix stage share what is written: say what is wrong there once,
            // naming the first member it was found in.
            for e in found {
                let said = (e.location.clone(), e.message.replace(&stage.name, stage.written_as()));
                if !seen.contains(&said) {
                    seen.push(said);
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() { Ok(out) } else { Err(SpecErrors { file: workflow.path.display().to_string(), errors }) }
    }

    /// Checks one stage; `None` when it has errors (pushed to `errors`).
    fn stage(&self, workflow: &Workflow, stage: &Stage, errors: &mut Vec<SpecError>) -> Option<Checked> {
        let err = |keys: &[&str], message: String, label: &str| {
            let mut path = vec!["stages", stage.written_as()];
            path.extend_from_slice(keys);
            workflow.error_at(&path, message, label)
        };
        let Some(kind_impl) = self.kind(&stage.kind) else {
            let names = self.names();
            let help = match crate::spec::closest(&stage.kind, &names) {
                Some(near) => format!("did you mean `{near}`? Available kinds: {}", names.join(", ")),
                None => format!("available kinds: {}", names.join(", ")),
            };
            let message = format!("unknown kind `{}` in stage `{}`", stage.kind, stage.written_as());
            errors.push(err(&["kind"], message, "unknown kind").with_help(help));
            return None;
        };
        let kind = kind_impl.about();
        if let Roles::Fixed(roles) = kind.roles {
            for (role, need) in &stage.needs {
                match roles.iter().find(|r| r.name == role) {
                    None => {
                        let names: Vec<&str> = roles.iter().map(|r| r.name).collect();
                        let message = format!("kind `{}` has no role `{role}`", kind.name);
                        errors.push(err(&["needs", role], message, "unknown role").with_help(format!(
                            "`{}` reads: {}",
                            kind.name,
                            names.join(", ")
                        )));
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
                let message =
                    format!("stage `{}` of kind `{}` needs a `{}` role", stage.written_as(), kind.name, r.name);
                errors.push(err(&["needs"], message, "missing role"));
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
                let mut keys: Vec<&str> = match e.path.first() {
                    Some(first) => stage.param_path(first)[2..].to_vec(),
                    None => vec!["with"],
                };
                keys.extend(e.path.iter().skip(1).map(String::as_str));
                // Name the parameter unless the message already does.
                let key = e.path.join(".");
                let message = if key.is_empty() || e.message.contains(&format!("`{key}`")) {
                    format!("stage `{}`: {}", stage.name, e.message)
                } else {
                    format!("stage `{}`, parameter `{key}`: {}", stage.name, e.message)
                };
                errors.push(err(&keys, message, "invalid parameter"));
                return None;
            }
        };
        if stage.own_gpu_share && !kind.device {
            let message =
                format!("`gpu_share` on stage `{}`, whose kind `{}` takes no GPU", stage.written_as(), kind.name);
            errors.push(err(&["gpu_share"], message, "not a GPU stage"));
            return None;
        }
        let outputs = if stage.is_command() {
            stage.outputs.clone()
        } else {
            kind.outputs.iter().map(|o| o.to_string()).collect()
        };
        errors.is_empty().then_some(Checked { kind_version: kind.version, params, uses_device: kind.device, outputs })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn check(text: &str) -> Result<Vec<Checked>, Vec<String>> {
        let workflow = crate::spec::parse(Path::new("wf.yaml"), text.as_bytes().to_vec(), &[]).expect("valid YAML");
        Registry::builtin()
            .check(&workflow)
            .map_err(|e| e.errors.iter().map(|e| format!("{} {}", e.location.as_ref().unwrap(), e.message)).collect())
    }

    #[test]
    fn kinds_fill_their_defaults_and_say_what_they_leave() {
        let checked = check(
            "version: 1\ndefaults: {seed: 9}\nstages:\n  t: {kind: corpus}\n  m: {kind: init, needs: {tokenizer: t}, with: {layers: 1, hidden: 16, heads: 2, ffn: 32}}\n  c: {kind: command, run: 'true', outputs: [a.txt]}\n",
        )
        .unwrap();
        assert_eq!(checked[0].params["seed"], 9, "a kind that takes `seed` gets the default");
        assert!(checked[0].params["documents"].is_u64(), "every default is filled in: {}", checked[0].params);
        assert_eq!((checked[1].uses_device, checked[2].uses_device), (true, false));
        assert_eq!(checked[1].outputs, crate::stages::MODEL);
        assert_eq!(checked[2].outputs, ["a.txt"]);
    }

    #[test]
    fn kinds_roles_and_parameters_are_checked_with_locations_and_suggestions() {
        let errors = check(
            "version: 1\ndefaults: {sede: 1}\nstages:\n  t: {kind: corpas}\n  d: {kind: data, needs: {tokenizer: [t], src: t}}\n  m: {kind: init, with: {layerz: 1}}\n  e: {kind: eval, needs: {model: m}, gpu_share: 0.5, with: {windows: 0}}\n  c: {kind: command, run: 'true', gpu_share: 0.5}\n",
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "wf.yaml:2:12 no stage kind takes a default `sede`",
                "wf.yaml:4:13 unknown kind `corpas` in stage `t`",
                "wf.yaml:5:48 kind `data` has no role `src`",
                "wf.yaml:5:38 role `tokenizer` of kind `data` takes one stage, not a list",
                "wf.yaml:6:6 stage `m` of kind `init` needs a `tokenizer` role",
                "wf.yaml:6:34 stage `m`: unknown field `layerz`, expected one of `layers`, `hidden`, `heads`, `kv_heads`, `ffn`, `tie_embeddings`, `rope_theta`, `max_positions`, `norm_eps`, `seed`",
                "wf.yaml:7:70 stage `e`, parameter `windows`: must be positive",
                "wf.yaml:8:46 `gpu_share` on stage `c`, whose kind `command` takes no GPU",
            ]
        );
    }

    /// A matrix key is a parameter like any in `with:`, reported at the matrix, once for a
    /// mistake every member shares and per member for a value only some have.
    #[test]
    fn matrix_keys_are_checked_as_parameters_of_the_kind() {
        let errors = check("version: 1\nstages:\n  t: {kind: corpus, matrix: {documnts: [1, 2]}}\n").unwrap_err();
        assert_eq!(
            errors,
            [
                "wf.yaml:3:40 stage `t@documnts=1`: unknown field `documnts`, expected one of `families`, `documents`, `seed`"
            ]
        );
        let errors = check(
            "version: 1\nstages:\n  t: {kind: corpus}\n  e: {kind: eval, needs: {model: t, data: t}, matrix: {windows: [8, 0, -1]}}\n",
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "wf.yaml:4:65 stage `e@windows=0`, parameter `windows`: must be positive",
                "wf.yaml:4:65 stage `e@windows=-1`, parameter `windows`: invalid value: integer `-1`, expected usize",
            ]
        );
    }
}
