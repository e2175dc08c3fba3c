//! `flow checkout`: a stage's current artifact copied out of the store as an ordinary, writable
//! directory.

use std::path::{Path, PathBuf};

use super::current;
use crate::cli::failure::Failure;
use crate::cli::{exit, output};

pub(crate) async fn checkout(
    cache: Option<PathBuf>,
    file: &Path,
    stage: &str,
    sets: &[String],
    to: &Path,
) -> Result<u8, Failure> {
    if to.exists() && fs_err::read_dir(to).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(Failure::new(exit::INVALID, format!("`{}` exists and is not an empty directory", to.display())));
    }
    let (prepared, record) = current(cache, file, stage, sets).await?;
    let n = prepared.store.checkout(&record.artifact, to).await?;
    output::stderr(&format!(
        "checked out {n} entries of `{stage}` ({}) to {}\n",
        record.artifact.short(),
        to.display()
    ));
    Ok(exit::OK)
}
