//! Processes left running by an earlier attempt of a stage on this machine, ended before the
//! stage runs again, so that two attempts never share a resume directory.
//!
//! Every process of a local stage — the supervisor, the stage, whatever it starts — inherits
//! `FLOW_RESUME`, the resume directory of its fingerprint in its store; a process whose
//! environment holds it belongs to an attempt of that fingerprint. The supervisor normally
//! ends them all when the apply dies ([`super::supervisor`]); this check is the second line,
//! for a supervisor killed on its own, and it runs under the fingerprint's run lock, so no
//! live attempt of this store is among them. Linux only: it reads `/proc`.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use procfs::process::{ProcState, Process, Stat};

/// How long ended processes get to disappear before the stage fails instead of running.
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub(crate) enum LeftoverError {
    #[error("process {pid}, left running by an earlier attempt of this stage, cannot be ended: {source}")]
    Kill { pid: i32, source: Errno },
    #[error("process {pid}, left running by an earlier attempt of this stage, did not end within {}s", DEADLINE.as_secs())]
    Alive { pid: i32 },
}

/// Kills every process on this machine whose environment names `resume` as `FLOW_RESUME`,
/// waits until they are gone, and returns their pids (none, usually).
pub(crate) fn end(resume: &Path) -> Result<Vec<i32>, LeftoverError> {
    let started = Instant::now();
    let mut ended = Vec::new();
    // Until a look finds nothing: a process may fork between a look and its kill.
    loop {
        let found = find(resume);
        if found.is_empty() {
            return Ok(ended);
        }
        for &(pid, _) in &found {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => return Err(LeftoverError::Kill { pid, source }),
            }
        }
        for &(pid, since) in &found {
            while alive(pid, since) {
                if started.elapsed() > DEADLINE {
                    return Err(LeftoverError::Alive { pid });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if !ended.contains(&pid) {
                ended.push(pid);
            }
        }
    }
}

/// The live processes (not zombies, not this one) whose `FLOW_RESUME` is `resume`, with the
/// time each started (a pid may be reused once its process is gone).
fn find(resume: &Path) -> Vec<(i32, u64)> {
    let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
    let me = std::process::id() as i32;
    let wanted = resume.as_os_str();
    // A process may exit, or be unreadable (another user's), between listing and reading.
    all.flatten()
        .filter(|p| p.pid != me)
        .filter(|p| p.environ().is_ok_and(|env| env.get(OsStr::new("FLOW_RESUME")).is_some_and(|v| v == wanted)))
        .filter_map(|p| p.stat().ok())
        .filter(running)
        .map(|s| (s.pid, s.starttime))
        .collect()
}

/// Whether the process `pid` that started at `since` still runs.
fn alive(pid: i32, since: u64) -> bool {
    Process::new(pid).and_then(|p| p.stat()).is_ok_and(|s| s.starttime == since && running(&s))
}

/// A zombie has ended and writes nothing.
fn running(stat: &Stat) -> bool {
    !matches!(stat.state(), Ok(ProcState::Zombie | ProcState::Dead))
}
