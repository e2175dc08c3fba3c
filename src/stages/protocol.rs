//! The run-stage protocol, both sides in one place: `flow apply` writes a [`Task`] file for a
//! built-in stage and starts `flow run-stage TASK`; the child reads it, runs the kind, and
//! reports [`Progress`] as lines `@flow-progress {json}` on its stdout, which the parent reads
//! back (locally, or from a Slurm job's log).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{InputError, StageError};
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

/// The prefix of a progress line on a built-in stage's stdout.
const PREFIX: &str = "@flow-progress ";

impl Progress {
    /// The protocol line of this report, newline included.
    pub fn line(&self) -> String {
        format!("{PREFIX}{}\n", serde_json::to_string(self).expect("progress serialises"))
    }

    /// The report a line of a stage's output carries, if it is a protocol line.
    pub fn parse(line: &str) -> Option<Progress> {
        serde_json::from_str(line.strip_prefix(PREFIX)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_round_trip_and_other_lines_are_not_reports() {
        let p = Progress { step: 3, total: 10, loss: Some(2.5), ..Default::default() };
        let line = p.line();
        assert_eq!(line, "@flow-progress {\"step\":3,\"total\":10,\"loss\":2.5}\n");
        let back = Progress::parse(line.trim_end()).unwrap();
        assert_eq!((back.step, back.total, back.loss), (3, 10, Some(2.5)));
        assert!(Progress::parse("step 3 of 10").is_none());
        assert!(Progress::parse("@flow-progress {not json").is_none());
    }
}
