//! The run-stage protocol: `flow apply` writes a [`Task`] file for a built-in stage and starts
//! `flow run-stage TASK`; the child reads it, runs the kind, and reports [`Progress`] in the
//! line protocol every stage speaks ([`super::progress`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{InputError, Progress, StageError};
use crate::spec::Device;

/// What a built-in stage run receives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    pub kind: String,
    pub stage: String,
    /// The canonical parameters, every default filled in (the recipe leaves out parameters
    /// added later while they are at their default: `exec::fingerprint`).
    pub params: Value,
    /// Role → the artifact directories of the stages it names, in order.
    pub inputs: BTreeMap<String, Vec<PathBuf>>,
    /// Role → the names of those stages, for messages about an input.
    #[serde(default)]
    pub needs: BTreeMap<String, Vec<String>>,
    /// The stage's input files, absolute.
    pub files: Vec<PathBuf>,
    /// The empty directory the artifact is written to.
    pub out: PathBuf,
    /// A directory that survives an interrupted run of the same fingerprint (resume state).
    pub resume: PathBuf,
    pub device: Device,
}

impl Task {
    /// The single directory of `role`.
    pub fn input(&self, role: &str) -> Result<&Path, StageError> {
        match self.inputs.get(role).map(Vec::as_slice) {
            Some([one]) => Ok(one),
            _ => Err(InputError::OneStage(role.to_owned()).into()),
        }
    }

    /// How a message names the input of `role`: its stage, or its directory.
    pub fn input_name(&self, role: &str) -> String {
        match self.needs.get(role).map(Vec::as_slice) {
            Some([one]) => format!("stage `{one}`"),
            _ => self.input(role).map_or_else(|_| format!("role `{role}`"), |d| format!("`{}`", d.display())),
        }
    }

    pub fn params<P: DeserializeOwned>(&self) -> Result<P, StageError> {
        serde_json::from_value(self.params.clone()).map_err(StageError::Params)
    }

    /// Opens the stage's device and reports which it is (the run record keeps it).
    pub fn open_device(&self, progress: &mut dyn FnMut(&Progress)) -> Result<candle_core::Device, StageError> {
        let device = crate::ml::device::select(self.device)?;
        progress(&Progress { device: Some(crate::ml::device::describe(&device)), ..Default::default() });
        Ok(device)
    }
}
