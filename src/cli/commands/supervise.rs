//! `flow supervise -- PROGRAM ARGS…`: runs a local stage's process for `flow apply` and ends as
//! it ended ([`crate::exec::supervisor`]).

use std::ffi::OsString;

use crate::cli::exit;
use crate::cli::failure::Failure;

pub(crate) fn supervise(command: &[OsString]) -> Result<u8, Failure> {
    let ended = crate::exec::supervisor::supervise(&command[0], &command[1..])
        .map_err(|e| Failure::new(exit::SUPERVISOR, e))?;
    ended.exit()
}
