//! The stage supervisor: the small process that `flow apply` starts for every local stage (forked
//! by the launcher, [`super::launcher`]), and that starts the stage in turn. Its one job is that
//! nothing a stage started outlives the stage or the apply, with no cooperation from the stage.
//!
//! - It reads a control pipe on its stdin, whose other end only the apply holds. End of file
//!   means the apply is gone, however it died (SIGKILL, the OOM killer, a closed terminal): the
//!   stage's process group is killed at once. The byte [`TERMINATE`] asks for a graceful end
//!   (Ctrl-C): SIGTERM to the group, SIGKILL after [`GRACE`].
//! - It is a child subreaper, so processes that leave the stage's group (`setsid`, daemons) are
//!   still its descendants and are ended with the stage.
//! - When the leader exits, the rest of its group and every process left behind are killed and
//!   reaped, and the supervisor exits as the leader did (same code, or the same signal).
//!
//! The supervisor blocks SIGINT, SIGTERM, SIGHUP and SIGQUIT (only its pipe steers it); the
//! stage starts with none blocked. Should the supervisor itself be killed, what its stage left
//! running is ended by the next attempt's leftover check ([`super::leftovers`]). Linux only:
//! subreaping is a `prctl` option.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::prctl;
use nix::sys::signal::{SigHandler, SigSet, Signal, kill, killpg, signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::{Pid, getpid};

use super::launcher::Launch;

/// The byte that asks the supervisor to end its stage gracefully.
pub const TERMINATE: u8 = b'T';

/// How long a stage asked to end gracefully gets after SIGTERM before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// The signals the launcher and the supervisor block and the stage must not.
pub(super) const STEERING: [Signal; 4] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT];

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
    #[error("the supervisor cannot take the stage's streams")]
    Streams(#[source] Errno),
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
                let mut only = SigSet::empty();
                only.add(sig);
                let _ = only.thread_unblock();
                let _ = kill(getpid(), sig);
                // A signal whose default is not to terminate cannot have ended the stage;
                // exit with the shell's convention.
                std::process::exit(128 + sig as i32)
            }
        }
    }
}

/// Starts `launch` as the stage and supervises it until it and everything it started have
/// ended. One thread: its control pipe (stdin) and the exits of its children (a signalfd) are
/// polled together.
pub fn supervise(launch: &Launch) -> Result<Ended, SuperviseError> {
    // Without a subreaper, escaped processes go to init and are still found by the next
    // attempt's leftover check (`leftovers`); everything else here works without it.
    let _ = prctl::set_child_subreaper(true);
    let mut exits = SigSet::empty();
    exits.add(Signal::SIGCHLD);
    let mut blocked = exits;
    for sig in STEERING {
        blocked.add(sig);
    }
    // Blocked, not ignored: the stage starts with an empty mask and default dispositions, and
    // with nothing to do between fork and exec it is spawned the cheap way (posix_spawn).
    blocked.thread_block().map_err(SuperviseError::Wait)?;
    let exited =
        SignalFd::with_flags(&exits, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(SuperviseError::Wait)?;
    let child = Command::new(&launch.program)
        .args(&launch.args)
        .current_dir(&launch.cwd)
        .envs(&launch.env)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|source| SuperviseError::Start { program: launch.program.display().to_string(), source })?;
    let leader = Pid::from_raw(child.id() as i32);
    let status = watch(leader, &exited)?;
    end_descendants(leader);
    Ok(match status {
        WaitStatus::Signaled(_, sig, _) => Ended::Signal(sig),
        WaitStatus::Exited(_, code) => Ended::Code(code),
        _ => Ended::Code(1),
    })
}

/// Waits until the leader exits, steering its group as the control pipe asks meanwhile:
/// [`TERMINATE`] ends it gracefully (SIGTERM, SIGKILL after [`GRACE`]), end of file (the apply
/// is gone) at once. Adopted orphans that exit first are reaped (left unreaped, they would hold
/// pids until the stage ends). WNOWAIT leaves the leader a zombie, so its pid keeps naming its
/// group until the rest of the group is ended.
fn watch(leader: Pid, exited: &SignalFd) -> Result<WaitStatus, SuperviseError> {
    let control = std::io::stdin();
    let mut steering = true;
    let mut kill_at: Option<Instant> = None;
    loop {
        loop {
            match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT) {
                Ok(status) if status.pid() == Some(leader) => return Ok(status),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) => {
                    if let Some(orphan) = status.pid() {
                        let _ = waitpid(orphan, None);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(SuperviseError::Wait(e)),
            }
        }
        let timeout = match kill_at {
            Some(at) => PollTimeout::try_from(at.saturating_duration_since(Instant::now())).unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(exited.as_fd(), PollFlags::POLLIN)];
        if steering {
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(SuperviseError::Wait(e)),
        }
        let asked = steering && fds[1].revents().is_some_and(|r| !r.is_empty());
        drop(fds);
        while exited.read_signal().is_ok_and(|s| s.is_some()) {}
        if asked {
            let mut byte = [0u8; 1];
            match nix::unistd::read(&control, &mut byte) {
                Ok(1) if byte[0] == TERMINATE => {
                    let _ = killpg(leader, Signal::SIGTERM);
                    kill_at.get_or_insert(Instant::now() + GRACE);
                }
                Ok(1) | Err(Errno::EINTR) => {}
                Ok(_) | Err(_) => {
                    let _ = killpg(leader, Signal::SIGKILL);
                    steering = false;
                }
            }
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            let _ = killpg(leader, Signal::SIGKILL);
            kill_at = None;
        }
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
