//! `flow key`: Ed25519 signing keys for a shared store — `generate` writes a secret key only
//! its owner can read and prints the public key; `public` prints the public key of one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use crate::cli::args::KeyCommand;
use crate::cli::failure::Failure;
use crate::cli::trust::{key_dir, read_secret};
use crate::cli::{exit, output};
use crate::store::trust::SecretKey;

pub(crate) fn key(command: KeyCommand) -> Result<u8, Failure> {
    match command {
        KeyCommand::Generate { name, out } => {
            let key = SecretKey::generate(&name).map_err(|e| Failure::new(exit::INVALID, e))?;
            let file = match out {
                Some(f) => f,
                None => key_dir()?.join(format!("{name}.secret")),
            };
            let cannot =
                |e: std::io::Error| Failure::new(exit::INVALID, format!("cannot write `{}`: {e}", file.display()));
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs_err::create_dir_all(dir).map_err(cannot)?;
            }
            // Created readable by its owner only, and never over an existing key.
            let mut f =
                std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file).map_err(cannot)?;
            f.write_all(key.to_text().as_bytes()).map_err(cannot)?;
            output::stderr(&format!(
                "wrote the secret key to {} (keep it secret; sign with --signing-key {name})\n",
                file.display()
            ));
            output::stdout(&format!("{}\n", key.public()));
        }
        KeyCommand::Public { key } => output::stdout(&format!("{}\n", read_secret(&key)?.public())),
    }
    Ok(exit::OK)
}
