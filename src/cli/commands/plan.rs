//! `flow plan`: per stage, cached, will download or will run — and why — without running
//! anything; as text or JSON lines.

use std::path::PathBuf;
use std::sync::Arc;

use super::prepare;
use crate::cli::args::PlanArgs;
use crate::cli::failure::Failure;
use crate::cli::root::tiers;
use crate::cli::{exit, output};
use crate::exec::plan::State;
use crate::exec::{self, Selection};

pub(crate) async fn plan(cache: Option<PathBuf>, args: PlanArgs) -> Result<u8, Failure> {
    let sel = &args.selection;
    let selection = Selection { targets: sel.targets.clone(), force: sel.force.clone() };
    let prepared = prepare(cache, &sel.file, &sel.sets, &selection)?;
    let tiers = tiers(Arc::clone(&prepared.store), &args.remote, &prepared.workflow)?;
    let planned = exec::plan::plan(&prepared, &tiers).await?;
    let mut out = String::new();
    let (mut cached, mut will_run, mut will_download) = (0, 0, 0);
    for p in &planned {
        if sel.json {
            out.push_str(&serde_json::to_string(p).expect("plans serialise"));
            out.push('\n');
            continue;
        }
        match &p.state {
            State::Cached { artifact, .. } => {
                cached += 1;
                out.push_str(&format!("{:>9} {} {}\n", "cached", p.stage, artifact.short()));
            }
            State::WillDownload { artifact, .. } => {
                will_download += 1;
                out.push_str(&format!("{:>9} {} {} (from the remote)\n", "download", p.stage, artifact.short()));
            }
            State::WillRun { reasons, .. } => {
                will_run += 1;
                let why: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
                out.push_str(&format!("{:>9} {}: {}\n", "will run", p.stage, why.join("; ")));
            }
        }
    }
    if !sel.json {
        let download = if will_download > 0 { format!(", {will_download} will download") } else { String::new() };
        out.push_str(&format!("{:>9} {will_run} will run{download}, {cached} cached\n", "Plan"));
    }
    output::stdout(&out);
    Ok(exit::OK)
}
