//! `flow show`: a stage's current fingerprint, artifact, files and provenance, as text or JSON,
//! and with `--plot` its training curves as SVG.

use std::path::{Path, PathBuf};

use super::current;
use crate::cli::failure::Failure;
use crate::cli::{exit, output, plot};

pub(crate) async fn show(
    cache: Option<PathBuf>,
    file: &Path,
    stage: &str,
    sets: &[String],
    json: bool,
    plot_to: Option<&Path>,
) -> Result<u8, Failure> {
    let (prepared, record) = current(cache, file, stage, sets).await?;
    let store = &prepared.store;
    let manifest = store.manifest(&record.artifact).await?;
    let log = store.log_path(&record.fingerprint);
    let path = store.materialize(&record.artifact).await?;
    if let Some(to) = plot_to {
        let history = crate::exec::history::History::of(store, &record)
            .map_err(|e| Failure::new(exit::INVALID, format!("cannot read the metrics of `{stage}`: {e}")))?;
        plot::training_curves(&history, to).map_err(|e| Failure::new(exit::INVALID, e))?;
        output::stderr(&format!("wrote {}\n", to.display()));
    }
    if json {
        let value = serde_json::json!({
            "stage": stage,
            "record": record,
            "path": path,
            "log": log.exists().then_some(&log),
            "files": manifest.entries,
        });
        output::stdout(&format!("{value}\n"));
        return Ok(exit::OK);
    }
    let mut out = String::new();
    let row = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    row(&mut out, "stage", stage.to_owned());
    row(&mut out, "kind", record.kind.clone());
    row(&mut out, "fingerprint", record.fingerprint.to_string());
    row(&mut out, "artifact", record.artifact.to_string());
    row(&mut out, "path", path.display().to_string());
    row(
        &mut out,
        "created",
        format!(
            "{} on {} ({:.3}s, device {}, flow {})",
            record.created, record.host, record.seconds, record.device, record.flow_version
        ),
    );
    row(&mut out, "produced by", format!("stage `{}` of workflow `{}`", record.stage, record.workflow));
    row(&mut out, "log", if log.exists() { log.display().to_string() } else { "(none on this machine)".into() });
    row(&mut out, "files", format!("{} ({})", manifest.entries.len(), output::human_bytes(manifest.total_size())));
    for entry in &manifest.entries {
        match entry {
            crate::store::Entry::File { path, size, executable, .. } => out.push_str(&format!(
                "  {:>10}  {path}{}\n",
                output::human_bytes(*size),
                if *executable { " (executable)" } else { "" }
            )),
            crate::store::Entry::Link { path, target } => {
                out.push_str(&format!("  {:>10}  {path} -> {target}\n", "link"))
            }
        }
    }
    output::stdout(&out);
    Ok(exit::OK)
}
