//! The process that runs one stage attempt: `sh -c RUN` with the `FLOW_*` environment for a
//! command stage, `flow run-stage TASK` with a task file for a built-in kind — each with its
//! output directory, its inputs, and the place the scheduler gave it (a GPU, a thread count).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Prepared;
use super::runner::ProcessSpec;
use crate::hash::Fingerprint;
use crate::spec::{Device, EnvVar};
use crate::stages::Task;
use crate::stages::command::env_value;
use crate::store::StoreError;

/// Where the scheduler placed a stage: the GPU it holds and the threads it computes with —
/// at the start, and from then on as the file `share` says ([`super::resources::Cpus`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Placement {
    pub(super) gpu: Option<usize>,
    pub(super) threads: Option<usize>,
    pub(super) share: Option<PathBuf>,
}

/// One attempt of stage `i`, with the artifact directories of its inputs by role.
pub(super) struct Attempt<'a> {
    pub(super) p: &'a Prepared,
    pub(super) i: usize,
    pub(super) fingerprint: Fingerprint,
    pub(super) inputs: BTreeMap<String, Vec<PathBuf>>,
    /// The attempt's output directory.
    pub(super) out: &'a Path,
    pub(super) resume: &'a Path,
    pub(super) placement: Placement,
}

impl Attempt<'_> {
    /// The process to start.
    pub(super) fn spec(&self) -> Result<ProcessSpec, StoreError> {
        let stage = &self.p.workflow.stages[self.i];
        let mut env = BTreeMap::new();
        env.insert("FLOW_OUT".to_owned(), self.out.display().to_string());
        env.insert("FLOW_STAGE".to_owned(), stage.name.clone());
        env.insert("FLOW_FINGERPRINT".to_owned(), self.fingerprint.to_string());
        // Kept across interrupted runs of this fingerprint (a crash, Ctrl-C, a requeued job),
        // removed once the artifact is committed: where a long command keeps its checkpoints.
        // Every process of the stage inherits it, which is how leftovers are found.
        fs_err::create_dir_all(self.resume)?;
        env.insert("FLOW_RESUME".to_owned(), self.resume.display().to_string());
        // The version of the progress line protocol this flow reads from stdout.
        env.insert("FLOW_PROTOCOL".to_owned(), crate::stages::progress::VERSION.to_string());
        if stage.is_command() { Ok(self.command(env)) } else { self.builtin(env) }
    }

    /// `flow run-stage TASK`, the task written beside the attempt's directory.
    fn builtin(&self, mut env: BTreeMap<String, String>) -> Result<ProcessSpec, StoreError> {
        let (p, stage) = (self.p, &self.p.workflow.stages[self.i]);
        let task = Task {
            kind: stage.kind.clone(),
            stage: stage.name.clone(),
            params: p.checked[self.i].params.clone(),
            inputs: self.inputs.clone(),
            needs: stage
                .needs
                .iter()
                .map(|(role, need)| (role.clone(), need.stages.iter().map(|(name, _)| name.clone()).collect()))
                .collect(),
            files: stage.input_files().iter().map(|f| p.workflow.dir.join(f)).collect(),
            out: self.out.to_path_buf(),
            resume: self.resume.to_path_buf(),
            device: self.placement.gpu.map_or(stage.device, |n| Device::Cuda(Some(n))),
        };
        if let Some(threads) = self.placement.threads {
            env.insert("RAYON_NUM_THREADS".to_owned(), threads.to_string());
        }
        if let Some(share) = &self.placement.share {
            env.insert(crate::ml::cores::SHARE_VAR.to_owned(), share.display().to_string());
        }
        let task_file = self.out.with_extension("task.json");
        fs_err::write(&task_file, serde_json::to_vec_pretty(&task).expect("tasks serialise"))?;
        let program = std::env::current_exe()?;
        let args = vec!["run-stage".to_owned(), task_file.display().to_string()];
        Ok(ProcessSpec { program, args, cwd: p.workflow.dir.clone(), env })
    }

    /// `sh -c RUN` with `FLOW_IN_*`, `FLOW_WITH_*` and the stage's `env:`.
    fn command(&self, mut env: BTreeMap<String, String>) -> ProcessSpec {
        let stage = &self.p.workflow.stages[self.i];
        for (role, dirs) in &self.inputs {
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            if stage.needs[role].is_list {
                env.insert(format!("FLOW_IN_{role}_COUNT"), dirs.len().to_string());
                for (k, d) in dirs.iter().enumerate() {
                    env.insert(format!("FLOW_IN_{role}_{k}"), d.clone());
                }
            }
            env.insert(format!("FLOW_IN_{role}"), dirs.join(":"));
        }
        if let serde_json::Value::Object(params) = &self.p.checked[self.i].params {
            for (k, v) in params {
                env.insert(format!("FLOW_WITH_{k}"), env_value(v));
            }
        }
        for var in &stage.env {
            if let EnvVar::Set { name, value } = var {
                env.insert(name.clone(), value.clone());
            }
        }
        let run = stage.run.clone().unwrap_or_default();
        ProcessSpec { program: "sh".into(), args: vec!["-c".into(), run], cwd: self.p.workflow.dir.clone(), env }
    }
}
