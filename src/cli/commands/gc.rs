//! `flow gc`: delete what no given lock file and no recent run references, in the local store
//! or, with `--remote`, on the remote.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::cli::failure::Failure;
use crate::cli::root::{cache_root, open_store};
use crate::cli::{exit, output};
use crate::exec::lockfile;
use crate::hash::Fingerprint;
use crate::spec::{self, Workflow};
use crate::store::remote::Remote;

/// What to collect, and what to keep.
pub(crate) struct Gc<'a> {
    pub(crate) workflows: &'a [PathBuf],
    pub(crate) keep_days: u64,
    pub(crate) dry_run: bool,
}

impl Gc<'_> {
    /// The fingerprints the workflows' lock files name, with the workflows.
    fn kept(&self) -> Result<(HashSet<Fingerprint>, Vec<Workflow>), Failure> {
        let mut keep = HashSet::new();
        let mut workflows = Vec::new();
        for w in self.workflows {
            let lock = lockfile::LockFile::read(&lockfile::path_for(w)).map_err(|e| Failure::new(exit::INVALID, e))?;
            keep.extend(lock.stages.values().map(|l| l.fingerprint));
            workflows.push(spec::load(w, &[])?);
        }
        Ok((keep, workflows))
    }

    fn cutoff(&self) -> SystemTime {
        SystemTime::now() - Duration::from_secs(self.keep_days * 86_400)
    }

    fn verb(&self) -> &'static str {
        if self.dry_run { "would remove" } else { "removed" }
    }

    /// Collects in the local store: `--cache`, else the first workflow's.
    pub(crate) async fn local(&self, cache: Option<PathBuf>) -> Result<u8, Failure> {
        let (keep, workflows) = self.kept()?;
        let root = match (cache, workflows.first()) {
            (Some(dir), _) => dir,
            (None, Some(w)) => cache_root(None, Some(w), &w.dir),
            (None, None) => cache_root(None, None, Path::new(".")),
        };
        let store = open_store(&root)?;
        let r = store.gc(&keep, self.cutoff(), self.dry_run).await?;
        output::stderr(&format!(
            "gc: kept {} records; {} {} records, {} blobs ({}), {} materialised trees, {} scratch dirs\n",
            r.kept_records,
            self.verb(),
            r.removed_records,
            r.removed_blobs,
            output::human_bytes(r.freed_bytes),
            r.removed_trees,
            r.removed_scratch
        ));
        Ok(exit::OK)
    }

    /// Collects on the remote: `url` (`--remote-url`, FLOW_REMOTE), else the `store.remote` of
    /// the first workflow that sets one.
    pub(crate) async fn remote(&self, url: Option<String>) -> Result<u8, Failure> {
        let (keep, workflows) = self.kept()?;
        let configured = workflows.into_iter().find_map(|w| w.store.remote);
        // Collecting deletes: two remotes named two ways is a question, not a choice to make.
        if let (Some(given), Some(configured)) = (&url, &configured)
            && given.trim_end_matches('/') != configured.trim_end_matches('/')
        {
            let message = format!(
                "`--remote-url`/FLOW_REMOTE names `{given}`, but the workflow's `store.remote` is `{configured}`"
            );
            return Err(Failure::new(exit::INVALID, message)
                .hint("pass the remote to collect on with `--remote-url`, and unset FLOW_REMOTE if it names another"));
        }
        let Some(url) = url.or(configured) else {
            return Err(Failure::new(exit::INVALID, "`flow gc --remote` needs a remote")
                .hint("name a workflow with `store.remote`, or pass `--remote-url URL` or FLOW_REMOTE"));
        };
        let remote = Remote::open(&url)?;
        let r = remote.gc(&keep, self.cutoff(), self.dry_run).await?;
        let mut text = format!(
            "gc {}: kept {} records; {} {} records, {} blobs ({}), {} stale leases\n",
            remote.url(),
            r.kept_records,
            self.verb(),
            r.removed_records,
            r.removed_blobs,
            output::human_bytes(r.freed_bytes),
            r.removed_leases
        );
        if r.live_leases > 0 {
            text.push_str(&format!(
                "gc: {} live lease(s): no blob was removed, since their runs may be uploading\n",
                r.live_leases
            ));
        }
        output::stderr(&text);
        Ok(exit::OK)
    }
}
