//! Where a command's stores are: the local store's root (`--cache`/FLOW_CACHE, else the
//! workflow's `store.local`, else `cache/` at the project root — the nearest ancestor holding
//! `.git` or `cache/`), and the remote (`--remote`/FLOW_REMOTE, else `store.remote`, never with
//! `--offline`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::args::RemoteArgs;
use super::failure::Failure;
use crate::spec::Workflow;
use crate::store::remote::Remote;
use crate::store::{Store, Tiered};

/// The local store root for `workflow` (or, without one, for the directory `near`).
pub(super) fn cache_root(flag: Option<PathBuf>, workflow: Option<&Workflow>, near: &Path) -> PathBuf {
    if let Some(dir) = flag {
        return dir;
    }
    if let Some(w) = workflow
        && let Some(local) = &w.store.local
    {
        return w.dir.join(local);
    }
    let start = std::path::absolute(near).unwrap_or_else(|_| near.to_path_buf());
    let mut dir = Some(start.as_path());
    while let Some(d) = dir {
        if d.join(".git").exists() || d.join("cache").is_dir() {
            return d.join("cache");
        }
        dir = d.parent();
    }
    start.join("cache")
}

pub(super) fn open_store(root: &Path) -> Result<Store, Failure> {
    Store::open(root).map_err(|e| {
        Failure::from(e).hint(format!("the store is at `{}`; set --cache or FLOW_CACHE to use another", root.display()))
    })
}

/// The remote to use: none when offline, else `--remote`/FLOW_REMOTE, else the workflow's
/// `store.remote`.
pub(super) fn open_remote(args: &RemoteArgs, workflow: &Workflow) -> Result<Option<Arc<Remote>>, Failure> {
    if args.offline {
        return Ok(None);
    }
    let Some(url) = args.remote.as_ref().or(workflow.store.remote.as_ref()) else { return Ok(None) };
    Ok(Some(Arc::new(Remote::open(url)?)))
}

/// The local store over the remote, if any, checking and signing records as the trust
/// settings say ([`super::trust`]).
pub(super) fn tiers(store: Arc<Store>, args: &RemoteArgs, workflow: &Workflow) -> Result<Tiered, Failure> {
    Ok(Tiered::new(store, open_remote(args, workflow)?).with_trust(super::trust::trust(args, workflow)?))
}

/// The hint for commands that need a remote and have none.
pub(super) const NO_REMOTE_HINT: &str = "set `store.remote` in the workflow, or pass `--remote URL` or FLOW_REMOTE";
