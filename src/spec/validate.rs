//! The validator: checks the document tree against the language — top-level keys, stage names,
//! `needs`, `inputs`, `env`, `outputs` — collecting every error with its location. Where a stage
//! runs, and what only a command stage may say, is checked in [`super::placement`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use super::error::{Source, SpecError};
use super::inputs::expand;
use super::matrix::Matrix;
use super::names::{closest, is_identifier, is_stage_name};
use super::placement::{PLACEMENT, Placement};
use super::yaml::{Node, Span, Value};
use super::{EnvVar, ExportSettings, Input, Need, Stage, StoreSettings, VERSION};

pub(super) struct Validator<'a> {
    pub(super) sources: &'a [Source],
    pub(super) errors: Vec<SpecError>,
    pub(super) placement: Placement,
}

/// The workflow as read: name, store, defaults, and each stage with its `matrix:`, not yet
/// expanded.
pub(super) type Parts =
    (String, StoreSettings, ExportSettings, BTreeMap<String, serde_json::Value>, Vec<(Stage, Option<Matrix>)>);

impl<'a> Validator<'a> {
    pub(super) fn new(sources: &'a [Source]) -> Self {
        Self { sources, errors: Vec::new(), placement: Placement::default() }
    }

    pub(super) fn error(&mut self, span: Span, message: impl Into<String>, label: &str) {
        self.errors.push(SpecError::at(self.sources, span, message, label));
    }

    pub(super) fn error_help(&mut self, span: Span, message: impl Into<String>, label: &str, help: String) {
        self.errors.push(SpecError::at(self.sources, span, message, label).with_help(help));
    }

    /// Checks that `node` is a mapping whose keys are all in `allowed`; returns its entries.
    fn mapping<'n>(&mut self, node: &'n Node, what: &str, allowed: Option<&[&str]>) -> Option<&'n [(Node, Node)]> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.span,
                format!("{what} must be a mapping, not {}", node.value.type_name()),
                "expected a mapping",
            );
            return None;
        };
        for (k, _) in entries {
            match k.as_str() {
                None => self.error(k.span, format!("keys of {what} must be strings"), "not a string"),
                Some(key) => {
                    if let Some(allowed) = allowed
                        && !allowed.contains(&key)
                    {
                        let help = match closest(key, allowed) {
                            Some(near) => format!("did you mean `{near}`? {what} accepts: {}", allowed.join(", ")),
                            None => format!("{what} accepts: {}", allowed.join(", ")),
                        };
                        self.error_help(k.span, format!("unknown key `{key}` in {what}"), "unknown key", help);
                    }
                }
            }
        }
        Some(entries)
    }

    pub(super) fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            other => {
                self.error(
                    node.span,
                    format!("{what} must be a string, not {}", other.type_name()),
                    "expected a string",
                );
                None
            }
        }
    }

    pub(super) fn workflow(&mut self, root: &Node, dir: &Path, path: &Path) -> Option<Parts> {
        const TOP: &[&str] = &["version", "name", "description", "store", "export", "defaults", "stages"];
        let entries = self.mapping(root, "the workflow", Some(TOP))?;
        match root.get("version") {
            None => self.error_help(
                root.span,
                "missing `version`",
                "workflow starts here",
                format!("add `version: {VERSION}`"),
            ),
            Some(v) if !matches!(v.value, Value::Int(VERSION)) => self.error(
                v.span,
                format!("unsupported workflow version; this flow reads version {VERSION}"),
                "unsupported",
            ),
            Some(_) => {}
        }
        let name = match root.get("name") {
            Some(n) => self.string(n, "`name`").unwrap_or_default(),
            None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        if let Some(d) = root.get("description") {
            self.string(d, "`description`");
        }
        let store = root.get("store").map(|s| self.store(s)).unwrap_or_default();
        let export = root.get("export").map(|s| self.export(s)).unwrap_or_default();
        let mut defaults = BTreeMap::new();
        if let Some(node) = root.get("defaults")
            && let Some(entries) = self.mapping(node, "`defaults`", None)
        {
            for (k, v) in entries {
                if let Some(key) = k.as_str()
                    && let Some(json) = self.json(v)
                {
                    if PLACEMENT.contains(&key) {
                        self.placement_default(key, v.span, json);
                    } else {
                        defaults.insert(key.to_owned(), json);
                    }
                }
            }
        }
        let Some(stages_node) = root.get("stages") else {
            self.error_help(
                root.span,
                "missing `stages`",
                "workflow starts here",
                "a workflow needs at least one stage".into(),
            );
            return None;
        };
        let mut stages = Vec::new();
        if let Some(entries) = self.mapping(stages_node, "`stages`", None) {
            if entries.is_empty() {
                self.error(stages_node.span, "`stages` is empty", "no stages");
            }
            let names: BTreeSet<&str> = entries.iter().filter_map(|(k, _)| k.as_str()).collect();
            for (k, v) in entries {
                if let Some(name) = k.as_str()
                    && let Some(stage) = self.stage(name, k.span, v, dir, &names)
                {
                    stages.push(stage);
                }
            }
        }
        let _ = entries;
        Some((name, store, export, defaults, stages))
    }

    fn export(&mut self, node: &Node) -> ExportSettings {
        let mut out = ExportSettings::default();
        let Some(_) = self.mapping(node, "`export`", Some(&["tensorboard", "mlflow"])) else {
            return out;
        };
        if let Some(n) = node.get("tensorboard") {
            out.tensorboard = self.string(n, "`export.tensorboard`").map(PathBuf::from);
        }
        if let Some(n) = node.get("mlflow")
            && let Some(url) = self.string(n, "`export.mlflow`")
        {
            if url.starts_with("http://") || url.starts_with("https://") {
                out.mlflow = Some(url);
            } else {
                self.error(
                    n.span,
                    "`export.mlflow` must be a tracking server's `http://` or `https://` URL",
                    "not an HTTP URL",
                );
            }
        }
        out
    }

    fn store(&mut self, node: &Node) -> StoreSettings {
        let mut out = StoreSettings::default();
        let keys = ["local", "remote", "push", "salt", "trusted_keys", "require_signed"];
        let Some(_) = self.mapping(node, "`store`", Some(&keys)) else {
            return out;
        };
        if let Some(n) = node.get("local") {
            out.local = self.string(n, "`store.local`").map(PathBuf::from);
        }
        if let Some(n) = node.get("remote")
            && let Some(url) = self.string(n, "`store.remote`")
        {
            if url.starts_with("s3://") || url.starts_with("file:///") {
                out.remote = Some(url);
            } else {
                self.error(
                    n.span,
                    "`store.remote` must be `s3://bucket/prefix` or `file:///absolute/dir`",
                    "unsupported remote URL",
                );
            }
        }
        if let Some(n) = node.get("salt") {
            out.salt = self.string(n, "`store.salt`");
        }
        if let Some(n) = node.get("push") {
            out.push = self.boolean(n, "`store.push`");
        }
        if let Some(n) = node.get("require_signed") {
            out.require_signed = self.boolean(n, "`store.require_signed`");
        }
        if let Some(n) = node.get("trusted_keys") {
            match &n.value {
                Value::Seq(items) => {
                    for item in items {
                        if let Some(key) = self.string(item, "a trusted key") {
                            out.trusted_keys.push(key);
                        }
                    }
                }
                other => self.error(
                    n.span,
                    format!("`store.trusted_keys` must be a list of `NAME:BASE64` keys, not {}", other.type_name()),
                    "expected a list",
                ),
            }
        }
        out
    }

    fn boolean(&mut self, n: &Node, what: &str) -> bool {
        match n.value {
            Value::Bool(b) => b,
            ref other => {
                self.error(
                    n.span,
                    format!("{what} must be a boolean, not {}", other.type_name()),
                    "expected true or false",
                );
                false
            }
        }
    }

    fn stage(
        &mut self,
        name: &str,
        span: Span,
        node: &Node,
        dir: &Path,
        names: &BTreeSet<&str>,
    ) -> Option<(Stage, Option<Matrix>)> {
        const KEYS: &[&str] = &[
            "kind",
            "description",
            "matrix",
            "needs",
            "inputs",
            "with",
            "run",
            "env",
            "outputs",
            "device",
            "gpu_share",
            "executor",
        ];
        if !is_stage_name(name) {
            self.error_help(
                span,
                format!("invalid stage name `{name}`"),
                "invalid name",
                "stage names start with a letter or `_` and contain only letters, digits, `_` and `-` (at most 128)"
                    .into(),
            );
        }
        let what = format!("stage `{name}`");
        self.mapping(node, &what, Some(KEYS))?;
        let kind = match node.get("kind") {
            Some(k) => self.string(k, "`kind`"),
            None => {
                self.error(span, format!("stage `{name}` has no `kind`"), "missing `kind`");
                None
            }
        };
        if let Some(d) = node.get("description") {
            self.string(d, "`description`");
        }
        let mut needs = BTreeMap::new();
        if let Some(n) = node.get("needs")
            && let Some(entries) = self.mapping(n, &format!("`needs` of stage `{name}`"), None)
        {
            for (role_node, target) in entries {
                let Some(role) = role_node.as_str() else { continue };
                if !is_identifier(role) {
                    self.error_help(
                        role_node.span,
                        format!("invalid role name `{role}`"),
                        "invalid role",
                        "roles are identifiers (letters, digits, `_`), since each becomes an environment variable `FLOW_IN_<role>`".into(),
                    );
                }
                let (list, is_list): (Vec<&Node>, bool) = match &target.value {
                    Value::Seq(items) => (items.iter().collect(), true),
                    _ => (vec![target], false),
                };
                if is_list && list.is_empty() {
                    self.error(target.span, format!("role `{role}` names no stage"), "empty list");
                }
                let mut stages = Vec::new();
                for t in list {
                    let Some(dep) = self.string(t, &format!("`needs.{role}`")) else { continue };
                    // A member's name (`STAGE@KEY=VALUE`) is checked once the matrices are expanded.
                    let member_of = dep.split_once('@').map(|(stage, _)| stage);
                    if !names.contains(member_of.unwrap_or(&dep)) {
                        let help = closest(&dep, &names.iter().copied().collect::<Vec<_>>())
                            .map(|n| format!("did you mean `{n}`?"))
                            .unwrap_or_else(|| "`needs` names stages of this workflow".into());
                        self.error_help(
                            t.span,
                            format!("stage `{name}` needs unknown stage `{dep}`"),
                            "unknown stage",
                            help,
                        );
                    } else {
                        stages.push((dep, t.span));
                    }
                }
                needs.insert(role.to_owned(), Need { stages, is_list });
            }
        }
        let inputs = node.get("inputs").map(|n| self.inputs(name, n, dir)).unwrap_or_default();
        let mut with = serde_json::Map::new();
        if let Some(n) = node.get("with")
            && self.mapping(n, &format!("`with` of stage `{name}`"), None).is_some()
            && let Some(serde_json::Value::Object(map)) = self.json(n)
        {
            with = map;
        }
        let run = node.get("run").and_then(|r| {
            let run = self.string(r, "`run`")?;
            if run.trim().is_empty() {
                self.error(r.span, "`run` is empty", "empty command");
                return None;
            }
            Some(run)
        });
        let env = node.get("env").map(|e| self.env(e)).unwrap_or_default();
        let outputs = node.get("outputs").map(|o| self.outputs(o)).unwrap_or_default();
        let kind = kind?;
        self.command_keys(name, &kind, span, node);
        let (device, gpu_share, own_gpu_share) = self.device(node);
        let executor = self.executor(node);
        let matrix = match node.get("matrix") {
            Some(m) => Some(self.matrix(name, m, node.get("with"))?),
            None => None,
        };
        let stage = Stage {
            name: name.to_owned(),
            kind,
            needs,
            inputs,
            with,
            run,
            env,
            device,
            gpu_share,
            own_gpu_share,
            executor,
            outputs,
            span,
            member: None,
        };
        Some((stage, matrix))
    }

    /// `node` as JSON (values that JSON cannot hold, such as non-finite numbers, are errors).
    pub(super) fn json(&mut self, node: &Node) -> Option<serde_json::Value> {
        node.to_json().map_err(|e| self.error(e.span, e.message, "here")).ok()
    }

    fn outputs(&mut self, node: &Node) -> Vec<String> {
        let Value::Seq(items) = &node.value else {
            self.error(
                node.span,
                format!("`outputs` must be a list of paths, not {}", node.value.type_name()),
                "expected a list",
            );
            return Vec::new();
        };
        let mut out = BTreeSet::new();
        for item in items {
            let Some(path) = self.string(item, "an output") else { continue };
            // Trailing slashes only say "a directory"; the check is the same.
            let trimmed = path.trim_end_matches('/');
            let inside = !trimmed.is_empty()
                && !trimmed.starts_with('/')
                && Path::new(trimmed).components().all(|c| matches!(c, Component::Normal(_)));
            if !inside {
                self.error_help(
                    item.span,
                    format!("output `{path}` is not a path inside `$FLOW_OUT`"),
                    "not inside the output",
                    "outputs are relative paths without `.` or `..`, such as `model.pt` or `shards/`".into(),
                );
            } else if !out.insert(trimmed.to_owned()) {
                self.error(item.span, format!("output `{path}` is listed twice"), "repeated");
            }
        }
        out.into_iter().collect()
    }

    fn env(&mut self, node: &Node) -> Vec<EnvVar> {
        let mut out = Vec::new();
        match &node.value {
            Value::Seq(items) => {
                for item in items {
                    if let Some(name) = self.string(item, "an `env` entry") {
                        self.env_name(&name, item.span);
                        out.push(EnvVar::Pass { name });
                    }
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    let Some(name) = self.string(k, "an `env` name") else { continue };
                    self.env_name(&name, k.span);
                    let value = match &v.value {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        Value::Float(f) if f.is_finite() => f.to_string(),
                        Value::Float(_) => {
                            self.error(v.span, "an `env` value must be a finite number", "not finite");
                            continue;
                        }
                        Value::Bool(b) => b.to_string(),
                        other => {
                            self.error(
                                v.span,
                                format!("an `env` value must be a scalar, not {}", other.type_name()),
                                "expected a scalar",
                            );
                            continue;
                        }
                    };
                    out.push(EnvVar::Set { name, value });
                }
            }
            other => self.error(
                node.span,
                format!("`env` must be a list of names or a mapping, not {}", other.type_name()),
                "expected a list or mapping",
            ),
        }
        out
    }

    fn env_name(&mut self, name: &str, span: Span) {
        if !is_identifier(name) || name.starts_with("FLOW_") {
            self.error_help(
                span,
                format!("invalid environment variable name `{name}`"),
                "invalid name",
                "names are identifiers; `FLOW_` names are reserved for flow".into(),
            );
        }
    }

    fn inputs(&mut self, stage: &str, node: &Node, dir: &Path) -> Vec<Input> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Str(_) => vec![node],
            other => {
                self.error(
                    node.span,
                    format!("`inputs` must be a list of paths or globs, not {}", other.type_name()),
                    "expected a list",
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in items {
            let Some(pattern) = self.string(item, "an input") else { continue };
            match expand(dir, &pattern) {
                Ok(files) if files.is_empty() => self.error_help(
                    item.span,
                    format!("input `{pattern}` of stage `{stage}` matches no file"),
                    "matches nothing",
                    format!("paths are relative to the workflow's directory `{}`", dir.display()),
                ),
                Ok(files) => out.push(Input { pattern, files, span: item.span }),
                Err(e) => self.error(item.span, e.to_string(), "bad input"),
            }
        }
        out
    }
}
