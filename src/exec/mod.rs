//! Execution: from a validated workflow to artifacts in the store.
//!
//! [`prepare`] checks the workflow against the kinds, builds the DAG, resolves the selection,
//! opens the store and hashes input files. [`plan`](plan::plan) says per stage whether it is
//! cached or will run, and why. [`apply`](schedule::apply) walks the DAG and admits ready
//! stages ([`schedule`], with [`resources`] for cores and GPUs); each stage's life — lookup,
//! run lock, remote lease, run, commit, publish — is a [`stage_run`], whose process is built by
//! [`process`] and run under a supervisor ([`runner`], [`launcher`], [`supervisor`], [`leftovers`]) or on
//! Slurm ([`slurm`]). Everything a run does is reported as an [`Event`]. [`share`] moves the
//! artifacts a lock file names to and from the remote. This module is the only one that
//! decides what invalidates a cache entry ([`fingerprint`]).

pub mod event;
pub mod fingerprint;
pub mod history;
pub mod launcher;
mod lease;
mod leftovers;
pub mod lockfile;
pub mod plan;
pub mod prepare;
mod process;
mod resources;
pub mod runner;
pub mod schedule;
pub mod share;
pub mod slurm;
mod stage_run;
pub mod supervisor;

use std::path::PathBuf;

pub use event::{Event, StageOutcome, Status, Summary};
pub use prepare::{Prepared, Selection, prepare};
pub use schedule::{Options, Sink, apply};

use crate::spec::SpecErrors;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    #[error(transparent)]
    Spec(#[from] SpecErrors),
    #[error("`{flag} {stage}` names no stage of `{file}`")]
    UnknownStage { flag: &'static str, stage: String, file: String },
    #[error("cannot open the store at `{}`", .root.display())]
    OpenStore { root: PathBuf, source: StoreError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] lockfile::LockError),
    #[error("cannot hash the inputs of stage `{stage}`")]
    Inputs {
        stage: String,
        #[source]
        source: std::io::Error,
    },
}

/// A store error as one line: the error and each cause it does not already quote.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Some errors (object_store's among them) repeat their source in their own message.
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
