//! `flow push` and `flow pull`: the artifacts a workflow's lock file names, moved between the
//! local store and the remote.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::args::RemoteArgs;
use crate::cli::failure::Failure;
use crate::cli::root::{NO_REMOTE_HINT, cache_root, open_remote, open_store};
use crate::cli::{exit, report};
use crate::exec::{lockfile, share};
use crate::spec;
use crate::store::Tiered;

/// Which way.
pub(crate) enum Share {
    Push,
    /// Only these stages (every stage of the lock file when empty).
    Pull(Vec<String>),
}

pub(crate) async fn share(
    cache: Option<PathBuf>,
    file: &Path,
    args: &RemoteArgs,
    json: bool,
    what: Share,
) -> Result<u8, Failure> {
    let workflow = spec::load(file, &[])?;
    let remote = open_remote(args, &workflow)?.ok_or_else(|| {
        Failure::new(exit::INVALID, format!("`{}` names no remote", file.display())).hint(NO_REMOTE_HINT)
    })?;
    let lock_path = lockfile::path_for(file);
    let lock = lockfile::LockFile::read(&lock_path).map_err(|e| Failure::new(exit::INVALID, e))?;
    if lock.stages.is_empty() {
        return Err(Failure::new(exit::INVALID, format!("`{}` is missing or empty", lock_path.display()))
            .hint(format!("run `flow apply {}` first (or commit its lock file)", file.display())));
    }
    let store = open_store(&cache_root(cache, Some(&workflow), &workflow.dir))?;
    let tiers = Tiered::new(Arc::new(store), Some(remote));
    let sink = report::sink(json, true);
    let summary = match what {
        Share::Push => share::push(&lock, &tiers, &sink).await?,
        Share::Pull(stages) => {
            if let Some(s) = stages.iter().find(|s| !lock.stages.contains_key(*s)) {
                return Err(Failure::new(exit::INVALID, format!("`{s}` is not a stage of `{}`", lock_path.display())));
            }
            share::pull(&lock, &stages, &tiers, &sink).await?
        }
    };
    Ok(if summary.failed > 0 { exit::STAGE_FAILED } else { exit::OK })
}
