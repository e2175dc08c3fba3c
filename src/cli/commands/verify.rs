//! `flow verify`: the local store re-hashed and checked, `--repair` dropping what is corrupt.

use std::path::{Path, PathBuf};

use crate::cli::failure::Failure;
use crate::cli::root::{cache_root, open_store};
use crate::cli::{exit, output};
use crate::spec;

pub(crate) async fn verify(cache: Option<PathBuf>, workflow: Option<&Path>, repair: bool) -> Result<u8, Failure> {
    let root = match workflow {
        Some(w) => {
            let workflow = spec::load(w, &[])?;
            cache_root(cache, Some(&workflow), &workflow.dir)
        }
        None => cache_root(cache, None, Path::new(".")),
    };
    let store = open_store(&root)?;
    let r = store.verify(repair).await?;
    let mut out = String::new();
    for p in &r.problems {
        out.push_str(&format!("error: {p}\n"));
    }
    out.push_str(&format!("verify: {} blobs, {} records, {} problems", r.blobs, r.records, r.problems.len()));
    if repair {
        out.push_str(&format!(", {} repaired", r.repaired));
    }
    out.push('\n');
    output::stderr(&out);
    Ok(if r.problems.is_empty() || repair { exit::OK } else { exit::STORE })
}
