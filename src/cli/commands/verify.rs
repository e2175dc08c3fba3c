//! `flow verify`: the local store re-hashed and checked, `--repair` dropping what is corrupt;
//! with `--remote`, every record on the remote checked against the trusted keys.

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

/// `flow verify --remote`: each record on the remote, signed by a trusted key or not, and why.
pub(crate) async fn remote(workflow: Option<&Path>, url: Option<String>, given: &[String]) -> Result<u8, Failure> {
    let workflow = workflow.map(|w| spec::load(w, &[])).transpose()?;
    let trusted = crate::cli::trust::trusted_keys(workflow.as_ref(), given)?;
    if trusted.is_empty() {
        return Err(Failure::new(exit::INVALID, "no trusted keys to check the remote's records against")
            .hint("list them in `store.trusted_keys`, or pass `--trusted-key NAME:BASE64`"));
    }
    let url = url.or_else(|| workflow.as_ref().and_then(|w| w.store.remote.clone()));
    let Some(url) = url else {
        return Err(Failure::new(exit::INVALID, "no remote to verify").hint(crate::cli::root::NO_REMOTE_HINT));
    };
    let remote = crate::store::remote::Remote::open(&url)?;
    let trust = crate::store::trust::Trust { trusted, ..Default::default() };
    let audit = crate::store::trust::audit(&remote, &trust).await?;
    let mut out = String::new();
    let mut bad = 0;
    for (fp, verdict) in &audit {
        match verdict {
            Ok(key) => out.push_str(&format!("{:>9} ac/{fp}.json (key {key})\n", "signed")),
            Err(why) => {
                bad += 1;
                out.push_str(&format!("{:>9} ac/{fp}.json: {why}\n", "UNTRUSTED"));
            }
        }
    }
    out.push_str(&format!(
        "verify: {} records on {url}, {} signed by a trusted key, {bad} not\n",
        audit.len(),
        audit.len() - bad
    ));
    output::stdout(&out);
    Ok(if bad == 0 { exit::OK } else { exit::STORE })
}
