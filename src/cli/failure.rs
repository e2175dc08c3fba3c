//! What a command failed with: the [`exit`](super::exit) code it maps to, the problem — a
//! workflow's located errors, or any other error with its causes — and an optional hint. Each
//! layer's typed errors become a [`Failure`] here, in one place.

use super::exit;
use crate::exec::{ExecError, lockfile};
use crate::spec::SpecErrors;
use crate::store::StoreError;

pub(super) struct Failure {
    pub(super) code: u8,
    pub(super) problem: Problem,
    pub(super) hint: Option<String>,
}

pub(super) enum Problem {
    /// Errors located in a workflow file (or a `--set`), rendered with their source.
    Workflow(SpecErrors),
    Other(Box<dyn std::error::Error>),
}

impl Failure {
    pub(super) fn new(code: u8, error: impl Into<Box<dyn std::error::Error>>) -> Self {
        Self { code, problem: Problem::Other(error.into()), hint: None }
    }

    pub(super) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<SpecErrors> for Failure {
    fn from(e: SpecErrors) -> Self {
        Failure { code: exit::INVALID, problem: Problem::Workflow(e), hint: None }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        if matches!(e, StoreError::BadRemote { .. }) {
            return Failure::new(exit::INVALID, e);
        }
        let corrupt =
            matches!(e, StoreError::Corrupt { .. } | StoreError::BadManifest { .. } | StoreError::BadRecord { .. });
        let failure = Failure::new(exit::STORE, e);
        if corrupt {
            failure.hint("run `flow verify --repair` to drop corrupt objects; the next apply re-runs what they held")
        } else {
            failure
        }
    }
}

impl From<ExecError> for Failure {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Spec(s) => s.into(),
            ExecError::Store(s) => s.into(),
            ExecError::OpenStore { root, source } => Failure::from(source)
                .hint(format!("the store is at `{}`; set --cache or FLOW_CACHE to use another", root.display())),
            // A lock file that cannot be written, after the run, is a store failure; one that
            // cannot be read stops the apply before anything runs.
            e @ ExecError::Lock(lockfile::LockError::Write { .. }) => Failure::new(exit::STORE, e),
            e @ (ExecError::Inputs { .. } | ExecError::Lock(_) | ExecError::UnknownStage { .. }) => {
                Failure::new(exit::INVALID, e)
            }
        }
    }
}
