//! `flow report`: the workflow's state as one self-contained HTML page ([`crate::report`]),
//! written whole or not at all; and the page `flow apply --report` writes at its end.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::prepare;
use crate::cli::args::ReportArgs;
use crate::cli::failure::Failure;
use crate::cli::root::tiers;
use crate::cli::{exit, output};
use crate::exec::{Prepared, Selection};
use crate::report::{self, Applied};
use crate::store::Tiered;

pub(crate) async fn report(cache: Option<PathBuf>, args: ReportArgs) -> Result<u8, Failure> {
    let selection = Selection { targets: args.targets.clone(), force: vec![] };
    let prepared = prepare(cache, &args.file, &args.sets, &selection)?;
    let tiers = tiers(Arc::clone(&prepared.store), &args.remote, &prepared.workflow)?;
    write(&prepared, &tiers, None, &args.output).await?;
    Ok(exit::OK)
}

/// Writes the page of `p` to `to` (through a temporary file beside it, renamed into place).
pub(crate) async fn write(p: &Prepared, tiers: &Tiered, applied: Option<&Applied>, to: &Path) -> Result<(), Failure> {
    let page = report::collect(p, tiers, applied).await?;
    let html = report::render(&page);
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let cannot =
        |e: std::io::Error| Failure::new(exit::INVALID, format!("cannot write the report `{}`: {e}", to.display()));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(cannot)?;
    std::io::Write::write_all(&mut tmp, html.as_bytes()).map_err(cannot)?;
    // A page to share: readable by others, as a file written by `>` would be.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(cannot)?;
    tmp.persist(to).map_err(|e| cannot(e.error))?;
    output::stderr(&format!(
        "wrote {} ({} stages, {})\n",
        to.display(),
        page.stages.len(),
        output::human_bytes(html.len() as u64)
    ));
    Ok(())
}
