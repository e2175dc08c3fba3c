//! `flow run-stage TASK`: the child side of the run-stage protocol ([`crate::stages::protocol`]),
//! what `flow apply` starts for a built-in stage.

use std::path::Path;

use crate::cli::failure::Failure;
use crate::cli::{exit, output};
use crate::stages::Registry;

/// `flow run-stage TASK`: runs a built-in kind in this process. Progress goes to stdout in
/// the runner's protocol; errors go to stderr (the stage's log) and exit 1.
pub(crate) fn run_stage(task_file: &Path) -> Result<u8, Failure> {
    let bytes = fs_err::read(task_file).map_err(|e| Failure::new(exit::INVALID, e))?;
    let task: crate::stages::Task = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::new(exit::INVALID, format!("`{}`: {e}", task_file.display())))?;
    let registry = Registry::builtin();
    let kind = registry
        .kind(&task.kind)
        .ok_or_else(|| Failure::new(exit::INVALID, format!("unknown kind `{}`", task.kind)))?;
    let mut progress = |p: &crate::stages::Progress| output::stdout(&p.line());
    kind.run(&task, &mut progress).map_err(|e| Failure::new(exit::STAGE_FAILED, e))?;
    Ok(exit::OK)
}
