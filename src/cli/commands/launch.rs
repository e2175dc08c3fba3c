//! `flow launch`: the stage launcher `flow apply` starts with its first local stage; it forks
//! every local stage's supervisor ([`crate::exec::launcher`]).

use crate::cli::exit;
use crate::cli::failure::Failure;
use crate::cli::output;
use crate::exec::supervisor::SuperviseError;

pub(crate) fn launch() -> Result<u8, Failure> {
    crate::exec::launcher::serve(unstarted).map_err(|e| Failure::new(exit::SUPERVISOR, e))?;
    Ok(exit::OK)
}

/// Why a supervisor could not start its stage, into the stage's log (the supervisor's stderr).
fn unstarted(e: SuperviseError) -> i32 {
    let failure = Failure::new(exit::SUPERVISOR, e);
    output::render(&failure);
    i32::from(failure.code)
}
