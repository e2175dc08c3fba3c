//! `flow hash`: the blake3 digest of files as flow computes them (like `b3sum`).

use std::path::PathBuf;

use crate::cli::failure::Failure;
use crate::cli::{exit, output};

pub(crate) fn hash(files: &[PathBuf]) -> Result<u8, Failure> {
    let mut out = String::new();
    for f in files {
        let (digest, _) = crate::hash::file::hash_file(f).map_err(|e| Failure::new(exit::INVALID, e))?;
        out.push_str(&format!("{digest}  {}\n", f.display()));
    }
    output::stdout(&out);
    Ok(exit::OK)
}
