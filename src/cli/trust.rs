//! Trust settings from the command line, the environment and the workflow: the public keys a
//! remote record must be signed by (`--trusted-key`, FLOW_TRUSTED_KEYS, `store.trusted_keys`),
//! whether an untrusted one is an error (`--require-signed`, `store.require_signed`), and the
//! secret key that signs what is published (`--signing-key`, FLOW_SIGNING_KEY) — found by name
//! in the key directory `flow key generate` writes to, or as a file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::args::RemoteArgs;
use super::exit;
use super::failure::Failure;
use crate::spec::Workflow;
use crate::store::trust::{PublicKey, SecretKey, Trust};

/// Where `flow key generate` keeps secret keys.
pub(super) fn key_dir() -> Result<PathBuf, Failure> {
    dirs::config_dir()
        .map(|d| d.join("flow").join("keys"))
        .ok_or_else(|| Failure::new(exit::INVALID, "no config directory (set HOME or XDG_CONFIG_HOME), and no `--out`"))
}

/// The file of a secret key given as `NAME` or as a path.
fn key_file(key: &str) -> Result<PathBuf, Failure> {
    let as_path = Path::new(key);
    if key.contains('/') || as_path.is_file() {
        return Ok(as_path.to_path_buf());
    }
    Ok(key_dir()?.join(format!("{key}.secret")))
}

/// Reads a secret key, refusing one that others can read.
pub(super) fn read_secret(key: &str) -> Result<SecretKey, Failure> {
    let file = key_file(key)?;
    let bad = |why: String| Failure::new(exit::INVALID, format!("signing key `{}`: {why}", file.display()));
    let meta = fs_err::metadata(&file).map_err(|e| bad(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!("others can read it (mode {mode:o}); `chmod 600` it")));
    }
    let text = fs_err::read_to_string(&file).map_err(|e| bad(e.to_string()))?;
    SecretKey::parse(&text).map_err(|e| bad(e.to_string()))
}

/// The public keys to trust: the workflow's `store.trusted_keys`, then those given on the
/// command line or in FLOW_TRUSTED_KEYS.
pub(super) fn trusted_keys(workflow: Option<&Workflow>, given: &[String]) -> Result<Vec<PublicKey>, Failure> {
    let mut trusted = Vec::new();
    let listed = workflow.into_iter().flat_map(|w| {
        w.store.trusted_keys.iter().map(move |k| (k, format!("`store.trusted_keys` of `{}`", w.path.display())))
    });
    for (text, from) in listed.chain(given.iter().map(|k| (k, "--trusted-key (or FLOW_TRUSTED_KEYS)".to_owned()))) {
        let key = PublicKey::parse(text).map_err(|e| Failure::new(exit::INVALID, format!("{from}: {e}")))?;
        if !trusted.contains(&key) {
            trusted.push(key);
        }
    }
    Ok(trusted)
}

/// The trust of one command.
pub(super) fn trust(args: &RemoteArgs, workflow: &Workflow) -> Result<Trust, Failure> {
    let trusted = trusted_keys(Some(workflow), &args.trusted_keys)?;
    let signer = args.signing_key.as_deref().map(read_secret).transpose()?;
    let require_signed = args.require_signed || workflow.store.require_signed;
    if require_signed && trusted.is_empty() {
        return Err(Failure::new(exit::INVALID, "`--require-signed` needs trusted keys")
            .hint("list them in `store.trusted_keys`, or pass `--trusted-key NAME:BASE64`"));
    }
    Ok(Trust { trusted, signer, require_signed })
}
