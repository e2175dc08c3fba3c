//! The workflow language: a YAML file → a validated [`Workflow`].
//!
//! [`load`] parses the file into a span-carrying tree ([`yaml`]), applies `--set` overrides
//! ([`overrides`]), checks everything the language itself defines — top-level keys, stage
//! names, `needs`, `inputs` ([`inputs`]), `run`, `env`, `outputs`, and where each stage runs:
//! `device`, `gpu_share` ([`device`]) and `executor` ([`executor`]), over their `defaults:` —
//! ([`validate`]). What a kind accepts in `with:` and `needs:` is checked one layer up, by
//! `stages`, using [`Workflow::error_at`] so those errors point at the file too. Every error is
//! collected, so one run reports all of them.

pub mod device;
pub mod error;
pub mod executor;
pub mod inputs;
pub mod matrix;
mod names;
pub mod overrides;
mod placement;
mod validate;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use device::{Device, GpuShare};
pub use error::{Location, Source, SpecError, SpecErrors};
use executor::Executor;
pub use names::{closest, is_member_name, is_stage_name};
pub use overrides::Override;
use yaml::{Node, Span};

/// The only workflow format version so far.
pub const VERSION: i64 = 1;
/// Workflow files larger than this are rejected before parsing.
pub const MAX_FILE_BYTES: u64 = 8 << 20;
/// The kind whose stages run a shell command (`run:`, `env:`, `outputs:`).
pub const COMMAND: &str = "command";

#[derive(Debug)]
pub struct Workflow {
    /// The path the workflow was loaded from, as given.
    pub path: PathBuf,
    /// The absolute directory holding the workflow: inputs and `run` commands are relative to it.
    pub dir: PathBuf,
    pub name: String,
    pub store: StoreSettings,
    pub export: ExportSettings,
    /// `defaults:` — parameters applied to every stage whose kind accepts them.
    pub defaults: BTreeMap<String, serde_json::Value>,
    /// Stages in declaration order, each matrix stage replaced by its members.
    pub stages: Vec<Stage>,
    /// Matrix stage → the names of its members, in order.
    pub matrices: BTreeMap<String, Vec<String>>,
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
    /// Public keys (`NAME:BASE64`) one of which must have signed a remote record for it to be
    /// used (read by `cli`, which reports a bad one).
    pub trusted_keys: Vec<String>,
    pub require_signed: bool,
}

/// `export:` — where `flow apply` sends every stage's metrics (docs/exporters.md). Never part
/// of a fingerprint.
#[derive(Debug, Default, Clone)]
pub struct ExportSettings {
    /// A directory of TensorBoard event files, relative to the workflow's directory.
    pub tensorboard: Option<PathBuf>,
    /// An MLflow tracking server, `http://` or `https://`.
    pub mlflow: Option<String>,
}

#[derive(Debug, Clone)]
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
    /// `device:`, else `defaults.device`, else `auto` (only kinds that compute on a device use
    /// it).
    pub device: Device,
    /// `gpu_share:`, else `defaults.gpu_share`, else one whole GPU.
    pub gpu_share: GpuShare,
    /// Whether the stage sets `gpu_share:` itself (a kind that takes no GPU refuses it).
    pub own_gpu_share: bool,
    /// `executor:` over `defaults.executor`.
    pub executor: Executor,
    /// `outputs:` of a command stage: paths under `$FLOW_OUT` that must exist and be non-empty
    /// when it exits 0, sorted and without repeats.
    pub outputs: Vec<String>,
    /// The span of the stage's name in its `stages:` mapping (its matrix stage's, for a member).
    pub span: Span,
    /// Where a member of a matrix stage sits in it; `None` for a stage written as it runs.
    pub member: Option<Member>,
}

/// A member of a matrix stage (`spec::matrix`).
#[derive(Debug, Clone)]
pub struct Member {
    /// The matrix stage, as written under `stages:`.
    pub template: String,
    /// Its values, in the order its name lists them: those of the stages it follows, then its own.
    pub coords: Vec<(String, serde_json::Value)>,
    /// The keys of its own `matrix:`, which are parameters in its `with:`.
    pub own: BTreeSet<String>,
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

impl Workflow {
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.index(name).map(|i| &self.stages[i])
    }

    /// The position of stage `name` in [`Workflow::stages`].
    pub fn index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The stages a name given on the command line stands for: one stage, or every member of a
    /// matrix stage.
    pub fn select(&self, name: &str) -> Option<Vec<usize>> {
        match self.matrices.get(name) {
            Some(members) => members.iter().map(|m| self.index(m)).collect(),
            None => self.index(name).map(|i| vec![i]),
        }
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

    /// Runs every stage on `device`, whatever the workflow says (`flow apply --device`).
    pub fn set_device(&mut self, device: Device) {
        self.stages.iter_mut().for_each(|s| s.device = device);
    }
}

impl Stage {
    /// The stage as written under `stages:`: its matrix stage, for a member.
    pub fn written_as(&self) -> &str {
        self.member.as_ref().map_or(&self.name, |m| &m.template)
    }

    /// Where `with.KEY` of this stage is written: `matrix.KEY` for a member's own matrix key.
    pub fn param_path<'a>(&'a self, key: &'a str) -> [&'a str; 4] {
        let section = if self.member.as_ref().is_some_and(|m| m.own.contains(key)) { "matrix" } else { "with" };
        ["stages", self.written_as(), section, key]
    }

    /// All files of all inputs, deduplicated and sorted.
    pub fn input_files(&self) -> Vec<PathBuf> {
        let set: BTreeSet<&PathBuf> = self.inputs.iter().flat_map(|i| &i.files).collect();
        set.into_iter().cloned().collect()
    }

    /// Whether the stage runs a shell command rather than a built-in kind.
    pub fn is_command(&self) -> bool {
        self.kind == COMMAND
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
        if let Err(e) = overrides::apply(&mut root, &o.0, sources.len() - 1) {
            errors.push(SpecError::at(&sources, e.span, e.message, "in this override"));
        }
    }
    if !errors.is_empty() {
        return Err(errs(errors));
    }

    let mut v = validate::Validator::new(&sources);
    let checked = v.workflow(&root, &dir, path);
    if !v.errors.is_empty() {
        return Err(errs(v.errors));
    }
    let (name, store, export, defaults, read) = checked.expect("no errors means a result");
    let matrix::Expanded { stages, members: matrices } = matrix::expand(&mut v, read);
    if !v.errors.is_empty() {
        return Err(errs(v.errors));
    }
    let index = stages.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
    Ok(Workflow {
        path: path.to_path_buf(),
        dir,
        name,
        store,
        export,
        defaults,
        stages,
        matrices,
        sources,
        root,
        index,
    })
}

#[cfg(test)]
mod tests;
