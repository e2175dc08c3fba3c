//! The workflow language: a YAML file → a validated [`Workflow`].
//!
//! [`load`] parses the file into a span-carrying tree ([`yaml`]), applies `--set` overrides,
//! checks the shape of everything the language itself defines (top-level keys, stage names,
//! `needs`, `inputs`, `run`, `env`) and expands input globs. What a kind accepts in `with:` is
//! checked one layer up, by `stages`, using [`Workflow::error_at`] so those errors point at the
//! file too. Every error is collected, so one run reports all of them.

pub mod error;
pub mod executor;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

pub use error::{Location, Source, SpecError, SpecErrors};
use yaml::{Node, Span, Value};

/// The only workflow format version so far.
pub const VERSION: i64 = 1;
/// Workflow files larger than this are rejected before parsing.
pub const MAX_FILE_BYTES: u64 = 8 << 20;

#[derive(Debug)]
pub struct Workflow {
    /// The path the workflow was loaded from, as given.
    pub path: PathBuf,
    /// The absolute directory holding the workflow: inputs and `run` commands are relative to it.
    pub dir: PathBuf,
    pub name: String,
    pub store: StoreSettings,
    /// `defaults:` — parameters applied to every stage whose kind accepts them.
    pub defaults: BTreeMap<String, serde_json::Value>,
    /// Stages in declaration order.
    pub stages: Vec<Stage>,
    sources: Vec<Source>,
    root: Node,
    index: HashMap<String, usize>,
}

#[derive(Debug, Default, Clone)]
pub struct StoreSettings {
    pub local: Option<PathBuf>,
    pub remote: Option<String>,
    pub push: bool,
    pub salt: Option<String>,
}

#[derive(Debug)]
pub struct Stage {
    pub name: String,
    pub kind: String,
    /// Role → the upstream stages it names, in the order written.
    pub needs: BTreeMap<String, Need>,
    pub inputs: Vec<Input>,
    /// `with:` after `--set` overrides (defaults are applied by `stages`).
    pub with: serde_json::Map<String, serde_json::Value>,
    pub run: Option<String>,
    pub env: Vec<EnvVar>,
    pub device: Option<String>,
    /// `gpu_share:` as written; `stages` checks it and falls back to `defaults.gpu_share`.
    pub gpu_share: Option<serde_json::Value>,
    /// `executor:` as written; `stages` resolves it against `defaults.executor`.
    pub executor: Option<serde_json::Value>,
    /// `outputs:` of a command stage: paths under `$FLOW_OUT` that must exist and be non-empty
    /// when it exits 0, sorted and without repeats.
    pub outputs: Vec<String>,
    /// The span of the stage's name in its `stages:` mapping.
    pub span: Span,
}

/// What a role of `needs:` names: one stage, or a list (order kept: merges may weigh by order).
#[derive(Debug, Clone)]
pub struct Need {
    pub stages: Vec<(String, Span)>,
    pub is_list: bool,
}

#[derive(Debug, Clone)]
pub struct Input {
    pub pattern: String,
    /// The matching files, relative to the workflow directory, sorted.
    pub files: Vec<PathBuf>,
    pub span: Span,
}

/// An environment variable of a `command` stage; its name and value enter the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvVar {
    /// `env: {NAME: value}` — set for the command.
    Set { name: String, value: String },
    /// `env: [NAME]` — passed through from the caller's environment.
    Pass { name: String },
}

/// A `--set STAGE.with.KEY=VALUE` (or `defaults.KEY=VALUE`) override.
#[derive(Debug, Clone)]
pub struct Override(pub String);

impl Workflow {
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.index(name).map(|i| &self.stages[i])
    }

    /// The position of stage `name` in [`Workflow::stages`].
    pub fn index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The span of the node at `keys` from the document root, if it exists.
    pub fn span(&self, keys: &[&str]) -> Option<Span> {
        self.root.path(keys).map(|n| n.span)
    }

    /// An error at the node at `keys`, or at the closest ancestor that exists.
    pub fn error_at(&self, keys: &[&str], message: impl Into<String>, label: impl Into<String>) -> SpecError {
        let span = (0..=keys.len()).rev().find_map(|n| self.span(&keys[..n])).unwrap_or(self.root.span);
        SpecError::at(&self.sources, span, message, label)
    }

    /// An error at the key (rather than the value) of the last element of `keys`.
    pub fn error_at_key(&self, keys: &[&str], message: impl Into<String>, label: impl Into<String>) -> SpecError {
        let (last, parent) = keys.split_last().expect("a key path is not empty");
        match self.root.path(parent).and_then(|n| n.key(last)) {
            Some(k) => SpecError::at(&self.sources, k.span, message, label),
            None => self.error_at(keys, message, label),
        }
    }

    pub fn error_at_span(&self, span: Span, message: impl Into<String>, label: impl Into<String>) -> SpecError {
        SpecError::at(&self.sources, span, message, label)
    }

    /// All files of all inputs of `stage`, deduplicated and sorted.
    pub fn input_files(stage: &Stage) -> Vec<PathBuf> {
        let set: BTreeSet<&PathBuf> = stage.inputs.iter().flat_map(|i| &i.files).collect();
        set.into_iter().cloned().collect()
    }
}

/// Loads and validates a workflow file, applying `overrides` in order.
pub fn load(path: &Path, overrides: &[Override]) -> Result<Workflow, SpecErrors> {
    let display = path.display().to_string();
    let fail = |message: String| SpecErrors { file: display.clone(), errors: vec![SpecError::whole(message)] };
    let meta = fs_err::metadata(path).map_err(|e| fail(format!("cannot read workflow: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(fail(format!("workflow `{display}` is {} bytes; the limit is {MAX_FILE_BYTES}", meta.len())));
    }
    let bytes = fs_err::read(path).map_err(|e| fail(format!("cannot read workflow: {e}")))?;
    parse(path, bytes, overrides)
}

/// Validates the bytes of the workflow file `path`, applying `overrides` in order; `path`
/// names it in messages and its directory is where `inputs:` are looked for.
pub fn parse(path: &Path, bytes: Vec<u8>, overrides: &[Override]) -> Result<Workflow, SpecErrors> {
    let display = path.display().to_string();
    let fail = |message: String| SpecErrors { file: display.clone(), errors: vec![SpecError::whole(message)] };
    let text = String::from_utf8(bytes).map_err(|e| {
        let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
        let col = upto.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        fail(format!("{display}:{line}:{col}: the workflow is not valid UTF-8"))
    })?;
    // YAML allows a byte order mark, which some Windows editors write; the parser would read
    // it as part of the first key.
    let text = text.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(text);
    let dir = std::path::absolute(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
        .map_err(|e| fail(format!("cannot resolve the directory of `{display}`: {e}")))?;
    let mut sources = vec![Source { name: display.clone(), text: Arc::from(text.as_str()) }];
    let errs = |errors: Vec<SpecError>| SpecErrors { file: display.clone(), errors };
    let mut root = yaml::parse(&text, 0).map_err(|e| errs(vec![SpecError::at(&sources, e.span, e.message, "here")]))?;

    let mut errors = Vec::new();
    for o in overrides {
        sources.push(Source { name: format!("--set {}", o.0), text: Arc::from(o.0.as_str()) });
        if let Err(e) = apply_override(&mut root, &o.0, sources.len() - 1) {
            errors.push(SpecError::at(&sources, e.span, e.message, "in this override"));
        }
    }
    if !errors.is_empty() {
        return Err(errs(errors));
    }

    let mut v = Validator { sources: &sources, errors: Vec::new() };
    let checked = v.workflow(&root, &dir, path);
    if !v.errors.is_empty() {
        return Err(errs(v.errors));
    }
    let (name, store, defaults, stages) = checked.expect("no errors means a result");
    let index = stages.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
    Ok(Workflow { path: path.to_path_buf(), dir, name, store, defaults, stages, sources, root, index })
}

struct Validator<'a> {
    sources: &'a [Source],
    errors: Vec<SpecError>,
}

type Parts = (String, StoreSettings, BTreeMap<String, serde_json::Value>, Vec<Stage>);

impl Validator<'_> {
    fn error(&mut self, span: Span, message: impl Into<String>, label: &str) {
        self.errors.push(SpecError::at(self.sources, span, message, label));
    }

    fn error_help(&mut self, span: Span, message: impl Into<String>, label: &str, help: String) {
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

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
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

    fn workflow(&mut self, root: &Node, dir: &Path, path: &Path) -> Option<Parts> {
        const TOP: &[&str] = &["version", "name", "description", "store", "defaults", "stages"];
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
        let mut defaults = BTreeMap::new();
        if let Some(node) = root.get("defaults")
            && let Some(entries) = self.mapping(node, "`defaults`", None)
        {
            for (k, v) in entries {
                if let Some(key) = k.as_str()
                    && let Some(json) = self.json(v)
                {
                    defaults.insert(key.to_owned(), json);
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
        Some((name, store, defaults, stages))
    }

    fn store(&mut self, node: &Node) -> StoreSettings {
        let mut out = StoreSettings::default();
        let Some(_) = self.mapping(node, "`store`", Some(&["local", "remote", "push", "salt"])) else {
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
            match n.value {
                Value::Bool(b) => out.push = b,
                ref other => self.error(
                    n.span,
                    format!("`store.push` must be a boolean, not {}", other.type_name()),
                    "expected true or false",
                ),
            }
        }
        out
    }

    fn stage(&mut self, name: &str, span: Span, node: &Node, dir: &Path, names: &BTreeSet<&str>) -> Option<Stage> {
        const KEYS: &[&str] = &[
            "kind",
            "description",
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
                if !is_role(role) {
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
                    if !names.contains(dep.as_str()) {
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
        let device = node.get("device").and_then(|d| self.string(d, "`device`"));
        let gpu_share = node.get("gpu_share").and_then(|g| self.json(g));
        let executor = node.get("executor").and_then(|e| self.json(e));
        Some(Stage {
            name: name.to_owned(),
            kind: kind?,
            needs,
            inputs,
            with,
            run,
            env,
            device,
            gpu_share,
            executor,
            outputs,
            span,
        })
    }

    /// `node` as JSON (values that JSON cannot hold, such as non-finite numbers, are errors).
    fn json(&mut self, node: &Node) -> Option<serde_json::Value> {
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
        if !is_role(name) || name.starts_with("FLOW_") {
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
                Err(message) => self.error(item.span, message, "bad input"),
            }
        }
        out
    }
}

/// Expands an input pattern relative to `dir`: a file, a directory (every file under it), or a
/// glob. Paths may not leave `dir`.
fn expand(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let rel = Path::new(pattern);
    if rel.is_absolute() {
        return Err(format!("input `{pattern}` is absolute; inputs are relative to the workflow's directory"));
    }
    if rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("input `{pattern}` leaves the workflow's directory (`..`)"));
    }
    let has_glob = pattern.contains(['*', '?', '[']);
    let mut files = BTreeSet::new();
    if !has_glob {
        let full = dir.join(rel);
        if full.is_dir() {
            walk_files(&full, dir, &mut files).map_err(|e| format!("cannot read input `{pattern}`: {e}"))?;
        } else if full.is_file() {
            files.insert(normalise(rel));
        }
        return Ok(files.into_iter().collect());
    }
    let full = format!("{}/{}", glob::Pattern::escape(&dir.to_string_lossy()), pattern);
    let paths =
        glob::glob(&full).map_err(|e| format!("invalid glob `{pattern}`: {} (at character {})", e.msg, e.pos))?;
    for entry in paths {
        let path = entry.map_err(|e| format!("cannot read input `{pattern}`: {e}"))?;
        if path.is_file() {
            let rel =
                path.strip_prefix(dir).map_err(|_| format!("input `{pattern}` leaves the workflow's directory"))?;
            files.insert(normalise(rel));
        } else if path.is_dir() {
            walk_files(&path, dir, &mut files).map_err(|e| format!("cannot read input `{pattern}`: {e}"))?;
        }
    }
    Ok(files.into_iter().collect())
}

fn walk_files(path: &Path, root: &Path, out: &mut BTreeSet<PathBuf>) -> std::io::Result<()> {
    for entry in fs_err::read_dir(path)? {
        let entry = entry?;
        let p = entry.path();
        if p.is_dir() {
            walk_files(&p, root, out)?;
        } else if p.is_file() {
            out.insert(normalise(p.strip_prefix(root).unwrap_or(&p)));
        }
    }
    Ok(())
}

fn normalise(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

pub fn is_stage_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_role(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The allowed word closest to `word` by edit distance, if any is close enough to be a typo.
pub fn closest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(word, a), *a))
        .filter(|(d, a)| *d < word.len().min(a.len()) && *d <= 1.max(a.len() / 3))
        .min()
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Applies `STAGE.with.KEY...=VALUE` or `defaults.KEY=VALUE` to the document tree.
fn apply_override(root: &mut Node, text: &str, source: usize) -> Result<(), yaml::YamlError> {
    let whole = Span { source, start: 0, end: text.chars().count(), line: 1, col: 1 };
    let err = |message: String| yaml::YamlError { message, span: whole };
    let (path, value_text) =
        text.split_once('=').ok_or_else(|| err(format!("`{text}` is not of the form STAGE.with.KEY=VALUE")))?;
    let value_start = path.chars().count() + 1;
    let mut value = yaml::parse(value_text, source)
        .map_err(|e| yaml::YamlError { message: format!("bad value in `--set`: {}", e.message), span: whole })?;
    shift(&mut value, value_start);
    let keys: Vec<&str> = path.split('.').collect();
    let (map_path, key_path): (Vec<&str>, &[&str]) = match keys.as_slice() {
        ["defaults", rest @ ..] if !rest.is_empty() => (vec!["defaults"], rest),
        [stage, "with", rest @ ..] if !rest.is_empty() => {
            if root.path(&["stages", stage]).is_none() {
                return Err(err(format!("`--set` names unknown stage `{stage}`")));
            }
            (vec!["stages", stage, "with"], rest)
        }
        _ => return Err(err(format!("`{path}` is not of the form STAGE.with.KEY or defaults.KEY"))),
    };
    let mut node = root;
    for key in map_path.iter().chain(key_path[..key_path.len() - 1].iter()) {
        node = child_map(node, key, whole).ok_or_else(|| err(format!("`{path}`: `{key}` is not a mapping")))?;
    }
    let last = key_path[key_path.len() - 1];
    let Value::Map(entries) = &mut node.value else {
        return Err(err(format!("`{path}` does not lead to a mapping")));
    };
    match entries.iter_mut().find(|(k, _)| k.as_str() == Some(last)) {
        Some((_, v)) => *v = value,
        None => entries.push((Node { value: Value::Str(last.to_owned()), span: whole }, value)),
    }
    Ok(())
}

/// The mapping under `key`, created if absent (a null value counts as absent).
fn child_map<'n>(node: &'n mut Node, key: &str, span: Span) -> Option<&'n mut Node> {
    if matches!(node.value, Value::Null) {
        node.value = Value::Map(Vec::new());
    }
    let Value::Map(entries) = &mut node.value else { return None };
    let idx = match entries.iter().position(|(k, _)| k.as_str() == Some(key)) {
        Some(i) => i,
        None => {
            entries
                .push((Node { value: Value::Str(key.to_owned()), span }, Node { value: Value::Map(Vec::new()), span }));
            entries.len() - 1
        }
    };
    let child = &mut entries[idx].1;
    if matches!(child.value, Value::Null) {
        child.value = Value::Map(Vec::new());
    }
    matches!(child.value, Value::Map(_)).then_some(child)
}

fn shift(node: &mut Node, by: usize) {
    node.span.start += by;
    node.span.end += by;
    node.span.col += by;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| shift(n, by)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            shift(k, by);
            shift(v, by);
        }),
        _ => {}
    }
}
