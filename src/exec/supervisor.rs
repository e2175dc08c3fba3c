//! The stage supervisor: the small process (`flow supervise -- PROGRAM ARGS…`) that `flow apply`
//! starts for every local stage, and that starts the stage in turn. Its one job is that nothing
//! a stage started outlives the stage or the apply, with no cooperation from the stage.
//!
//! - It reads a control pipe on its stdin, whose other end only the apply holds. End of file
//!   means the apply is gone, however it died (SIGKILL, the OOM killer, a closed terminal): the
//!   stage's process group is killed at once. The byte [`TERMINATE`] asks for a graceful end
//!   (Ctrl-C): SIGTERM to the group, SIGKILL after [`GRACE`].
//! - It is a child subreaper, so processes that leave the stage's group (`setsid`, daemons) are
//!   still its descendants and are ended with the stage.
//! - The stage's leader gets the parent-death signal SIGKILL, in case the supervisor itself is
//!   killed.
//! - When the leader exits, the rest of its group and every process left behind are killed and
//!   reaped, and the supervisor exits as the leader did (same code, or the same signal).
//!
//! The supervisor ignores SIGINT, SIGTERM, SIGHUP and SIGQUIT (only its pipe steers it); the
//! stage gets the default dispositions back. Linux only: subreaping and the parent-death signal
//! are `prctl` options.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::signal::{SigHandler, Signal, kill, killpg, signal};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{Pid, getpid, getppid};

/// The byte that asks the supervisor to end its stage gracefully.
pub const TERMINATE: u8 = b'T';

/// How long a stage asked to end gracefully gets after SIGTERM before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// The signals the supervisor ignores and its stage must not.
const STEERING: [Signal; 4] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT];

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot start `{program}`")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for the stage's process")]
    Wait(#[source] Errno),
}

/// How the stage's leader ended; the supervisor ends the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Code(i32),
    Signal(Signal),
}

impl Ended {
    /// Ends this process as the stage ended: the same exit code, or killed by the same signal.
    pub fn exit(self) -> ! {
        match self {
            Ended::Code(code) => std::process::exit(code),
            Ended::Signal(sig) => {
                // No core file of the supervisor (nor a call to a core handler): the stage's own,
                // if any, is the one to keep.
                let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
                let _ = prctl::set_dumpable(false);
                // SAFETY: resetting a disposition to its default installs no handler.
                let _ = unsafe { signal(sig, SigHandler::SigDfl) };
                let _ = kill(getpid(), sig);
                // A signal whose default is not to terminate cannot have ended the stage;
                // exit with the shell's convention.
                std::process::exit(128 + sig as i32)
            }
        }
    }
}

/// Starts `program args` as the stage and supervises it until it and everything it started
/// have ended.
pub fn supervise(program: &OsStr, args: &[OsString]) -> Result<Ended, SuperviseError> {
    // Without a subreaper, escaped processes go to init and are still found by the next
    // attempt's leftover check (`leftovers`); everything else here works without it.
    let _ = prctl::set_child_subreaper(true);
    for sig in STEERING {
        // SAFETY: ignoring a signal installs no handler.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let me = getpid();
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).process_group(0);
    // SAFETY: between fork and exec the closure only makes async-signal-safe system calls
    // (prctl, getppid, kill, sigaction) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The supervisor may have died before the line above took effect.
            if getppid() != me {
                let _ = kill(Pid::this(), Signal::SIGKILL);
            }
            for sig in STEERING {
                signal(sig, SigHandler::SigDfl)?;
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|source| SuperviseError::Start { program: program.to_string_lossy().into_owned(), source })?;
    let leader = Pid::from_raw(child.id() as i32);
    // Whether the leader is still unreaped: only then does its pid name its group for certain
    // (a reaped pid may be reused). Held while the group is signalled.
    let group = Arc::new(Mutex::new(Some(leader)));
    std::thread::spawn({
        let group = Arc::clone(&group);
        move || watch_control(&group)
    });
    let status = wait_for_leader(leader)?;
    let mut held = group.lock().unwrap_or_else(|e| e.into_inner());
    end_descendants(leader);
    *held = None;
    Ok(match status {
        WaitStatus::Signaled(_, sig, _) => Ended::Signal(sig),
        WaitStatus::Exited(_, code) => Ended::Code(code),
        _ => Ended::Code(1),
    })
}

/// Waits until the leader exits, reaping meanwhile every adopted orphan that exits before it
/// (left unreaped, they would hold pids until the stage ends). WNOWAIT leaves the leader a
/// zombie, so its pid keeps naming its group until the rest of the group is ended.
fn wait_for_leader(leader: Pid) -> Result<WaitStatus, SuperviseError> {
    loop {
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(status) if status.pid() == Some(leader) => return Ok(status),
            Ok(status) => {
                if let Some(orphan) = status.pid() {
                    let _ = waitpid(orphan, None);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(SuperviseError::Wait(e)),
        }
    }
}

/// Reads the control pipe: [`TERMINATE`] ends the stage gracefully, end of file (the apply is
/// gone) at once.
fn watch_control(group: &Arc<Mutex<Option<Pid>>>) {
    let mut stdin = std::io::stdin().lock();
    let mut byte = [0u8; 1];
    loop {
        match stdin.read(&mut byte) {
            Ok(1) if byte[0] == TERMINATE => {
                signal_group(group, Signal::SIGTERM);
                let group = Arc::clone(group);
                std::thread::spawn(move || {
                    std::thread::sleep(GRACE);
                    signal_group(&group, Signal::SIGKILL);
                });
            }
            Ok(1) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(_) | Err(_) => {
                signal_group(group, Signal::SIGKILL);
                return;
            }
        }
    }
}

fn signal_group(group: &Mutex<Option<Pid>>, sig: Signal) {
    if let Some(leader) = *group.lock().unwrap_or_else(|e| e.into_inner()) {
        let _ = killpg(leader, sig);
    }
}

/// Kills the leader's group and every other descendant (each one that lost its parent is this
/// process's child, as subreaper), and reaps them all. Returns once no child is left.
fn end_descendants(leader: Pid) {
    let _ = killpg(leader, Signal::SIGKILL);
    let me = getpid();
    loop {
        for pid in children_of(me) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        // Each reaped process may have handed its own children to this one: look again.
        match waitpid(None, None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return, // ECHILD: nothing is left
        }
    }
}

/// This process's children, from `/proc/self/task/*/children` (a few bytes per thread, where a
/// scan of every process would cost each stage milliseconds); the scan where that file is
/// missing (kernels without CONFIG_PROC_CHILDREN).
fn children_of(parent: Pid) -> Vec<Pid> {
    let listed = procfs::process::Process::myself()
        .and_then(|me| me.tasks()?.flatten().map(|task| task.children()).collect::<Result<Vec<Vec<u32>>, _>>());
    if let Ok(lists) = listed {
        return lists.into_iter().flatten().map(|pid| Pid::from_raw(pid as i32)).collect();
    }
    let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
    all.flatten()
        .filter_map(|p| p.stat().ok())
        .filter(|s| s.ppid == parent.as_raw())
        .map(|s| Pid::from_raw(s.pid))
        .collect()
}
