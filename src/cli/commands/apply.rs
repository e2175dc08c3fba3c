//! `flow apply`: prepare the workflow, open its tiers, run the scheduler until every selected
//! stage has an outcome or Ctrl-C, SIGTERM or SIGHUP stops it — its events to the reporter,
//! the exporters and, with `--report`, the page written at the end — and map the summary to an
//! exit code.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::prepare;
use crate::cli::args::ApplyArgs;
use crate::cli::failure::Failure;
use crate::cli::report;
use crate::cli::root::{NO_REMOTE_HINT, tiers};
use crate::cli::{exit, exports};
use crate::exec::{self, Event, Options, Selection};
use crate::report::Applied;

pub(crate) async fn apply(cache: Option<PathBuf>, args: ApplyArgs) -> Result<u8, Failure> {
    let sel = &args.selection;
    let selection = Selection { targets: sel.targets.clone(), force: sel.force.clone() };
    let mut prepared = prepare(cache, &sel.file, &sel.sets, &selection)?;
    if let Some(device) = args.device {
        prepared.workflow.set_device(device);
    }
    let tiers = tiers(Arc::clone(&prepared.store), &args.remote, &prepared.workflow)?;
    let push = !args.remote.offline && (args.push || prepared.workflow.store.push);
    if push && tiers.remote().is_none() {
        return Err(Failure::new(exit::INVALID, "pushing needs a remote").hint(NO_REMOTE_HINT));
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = Options { jobs, keep_going: args.keep_going, push, no_wait: args.no_wait };
    let prepared = Arc::new(prepared);
    let tiers = Arc::new(tiers);
    // For the page: why each stage will run, before running changes the answer.
    let before = match &args.report {
        Some(_) => exec::plan::plan(&prepared, &tiers).await?,
        None => Vec::new(),
    };
    let exports = exports::start(&prepared, args.tensorboard, args.mlflow)?;
    let mut sink = exports::tee(report::sink(sel.json, !args.no_progress), &exports);
    let outcomes = Arc::new(Mutex::new(HashMap::new()));
    if args.report.is_some() {
        let (inner, seen) = (sink, Arc::clone(&outcomes));
        sink = Arc::new(move |e: &Event| {
            if let Event::Stage(o) = e {
                seen.lock().expect("outcomes lock").insert(o.stage.clone(), o.clone());
            }
            inner(e);
        });
    }
    let summary = exec::apply(Arc::clone(&prepared), Arc::clone(&tiers), opts, sink, interrupted()).await;
    exports::finish(exports);
    let summary = summary?;
    if let Some(to) = &args.report {
        let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes lock"));
        super::report::write(&prepared, &tiers, Some(&Applied { before, outcomes }), to).await?;
    }
    Ok(if summary.interrupted {
        exit::INTERRUPTED
    } else if summary.store_error {
        exit::STORE
    } else if summary.failed > 0 {
        exit::STAGE_FAILED
    } else {
        exit::OK
    })
}

/// Resolves on Ctrl-C, SIGTERM or SIGHUP (a closed terminal or a lost SSH session): the run
/// stops as for Ctrl-C.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hangup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = hangup.recv() => {}
    }
}
