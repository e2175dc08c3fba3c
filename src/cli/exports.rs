//! The exporters an apply asked for — `--tensorboard` and `--mlflow`, or the workflow's
//! `export:` — started beside the reporter ([`crate::export`]); their warnings printed here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::exit;
use super::failure::Failure;
use super::output;
use crate::exec::{Prepared, Sink};
use crate::export::{Exporter, Exports, mlflow::Mlflow, tensorboard::TensorBoard};

/// How long the end of an apply waits for exports still under way.
const FINISH_WAIT: Duration = Duration::from_secs(10);

/// The exporters of this apply, if any: flags first, then the workflow's `export:` (a relative
/// `export.tensorboard` is under the workflow's directory).
pub(super) fn start(
    p: &Arc<Prepared>,
    tensorboard: Option<PathBuf>,
    mlflow: Option<String>,
) -> Result<Option<Exports>, Failure> {
    let settings = &p.workflow.export;
    let tensorboard = tensorboard.or_else(|| settings.tensorboard.as_ref().map(|d| p.workflow.dir.join(d)));
    let mlflow = mlflow.or_else(|| settings.mlflow.clone());
    let mut exporters: Vec<Box<dyn Exporter>> = Vec::new();
    if let Some(dir) = tensorboard {
        exporters.push(Box::new(TensorBoard::new(dir)));
    }
    if let Some(url) = mlflow {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Failure::new(exit::INVALID, format!("`--mlflow {url}` is not an `http://` or `https://` URL")));
        }
        exporters.push(Box::new(Mlflow::new(&url)));
    }
    if exporters.is_empty() {
        return Ok(None);
    }
    let warn = Arc::new(|message: String| output::stderr(&format!("{:>9} {:>10} {message}\n", "WARNING", "")));
    Ok(Some(Exports::start(Arc::clone(p), exporters, warn)))
}

/// `sink` and the exporters, fed every event.
pub(super) fn tee(sink: Sink, exports: &Option<Exports>) -> Sink {
    match exports.as_ref().map(Exports::sender) {
        None => sink,
        Some(send) => Arc::new(move |e| {
            sink(e);
            send(e);
        }),
    }
}

pub(super) fn finish(exports: Option<Exports>) {
    if let Some(x) = exports {
        x.finish(FINISH_WAIT);
    }
}
