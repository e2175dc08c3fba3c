//! Stage kinds: what each `kind:` accepts (roles in `needs:`, parameters in `with:`), its
//! version, what it leaves in its output, and how it runs.
//!
//! The [`Registry`] checks a workflow against the kinds ([`registry`]); a kind's
//! [`Kind::params`] turns the stage's `with:` into its canonical parameters ([`params`]); a
//! built-in kind runs in `flow run-stage` from a [`Task`] ([`protocol`]) and reports
//! [`Progress`] in the line protocol every stage speaks ([`progress`]). The training kinds share [`training`]. Kinds never touch the store or the
//! scheduler.

pub mod anneal;
pub mod command;
pub mod compare;
pub mod corpus;
pub mod data;
mod error;
pub mod eval;
pub mod grow;
pub mod init;
pub mod merge;
pub mod params;
pub mod pretrain;
pub mod progress;
pub mod protocol;
pub mod registry;
pub mod sft;
pub mod tasks;
pub mod training;

pub use error::{InputError, LineProblem, StageError};
pub use params::{ParamError, default_seed, invalid, typed};
pub use progress::Progress;
pub use protocol::Task;
pub use registry::{Checked, Registry};
use serde_json::{Map, Value};

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

/// What the registry needs to know of a kind, besides its parameters.
#[derive(Debug)]
pub struct About {
    pub name: &'static str,
    /// Bumped whenever the kind's results for the same parameters and inputs would change.
    pub version: u32,
    pub roles: Roles,
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
        Err(StageError::NotInProcess(self.about().name))
    }
}

/// What every kind that writes a model leaves: a folder any model-reading stage loads.
pub const MODEL: &[&str] = &["config.json", "model.safetensors", "tokenizer.json"];
