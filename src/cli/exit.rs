//! Exit codes, in one place. Documented in docs/exit-codes.md.

/// Everything succeeded (for `apply`: every selected stage ran or was cached).
pub const OK: u8 = 0;
/// At least one stage failed (its dependents were skipped).
pub const STAGE_FAILED: u8 = 1;
/// The workflow or the command line is invalid; nothing ran and the store is unchanged.
pub const INVALID: u8 = 2;
/// The store is unusable or failed an integrity check (corrupt blob, bad record, I/O error).
pub const STORE: u8 = 3;
/// A stage's program could not be started (a stage's exit code, as a shell's for a missing
/// command; the reason is in the stage's log).
pub const SUPERVISOR: u8 = 127;
/// Interrupted by Ctrl-C (SIGINT), SIGTERM or SIGHUP; nothing partial was committed.
pub const INTERRUPTED: u8 = 130;
