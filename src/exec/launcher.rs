//! The stage launcher: one small process per `flow apply` (`flow launch`, started with the first
//! local stage) that forks the supervisor ([`super::supervisor`]) of every local stage. Forking
//! this small single-threaded process costs a fraction of starting the flow binary afresh for
//! each stage, whose dynamic loading, relocation and CPU-feature probing were the largest part
//! of the engine's per-stage cost (docs/benchmarks.md); the supervisor it forks runs the same
//! code and keeps the same promises.
//!
//! The apply talks to the launcher over a Unix socket, the launcher's stdin. A request is a
//! length-prefixed JSON [`Request`]; a start carries the supervisor's three standard streams as
//! passed descriptors (the control pipe, the stage's stdout, its stderr). The launcher answers
//! with one line per supervisor that ended, or could not be forked. It reaps its supervisors
//! itself, so a kill it is asked for can never reach a reused pid. End of file on the socket (the
//! apply is gone, however it died) ends the launcher; each supervisor sees its own control pipe
//! close and ends its stage.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, dup2_stderr, dup2_stdin, dup2_stdout, fork, setpgid};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::supervisor::{Ended, STEERING, SuperviseError, supervise};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("the stage launcher cannot talk to `flow apply`")]
    Io(#[from] std::io::Error),
    #[error("the stage launcher failed")]
    Sys(#[from] Errno),
    #[error("the stage launcher got a malformed request")]
    Request(#[from] serde_json::Error),
}

/// The process a supervisor starts as its stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// Set on top of the environment `flow apply` had when it started the launcher.
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Fork a supervisor for `launch`; three descriptors come with it.
    Start { id: u64, launch: Launch },
    /// SIGKILL the supervisor of start `id`, if it has not been reaped yet.
    Kill { id: u64 },
}

/// The descriptors a start passes: the supervisor's stdin, stdout and stderr.
const STREAMS: usize = 3;

// The launcher process.

/// Serves the apply on stdin until it closes. `failed` renders why a supervisor could not start
/// its stage (into the stage's log, the supervisor's stderr) and gives its exit code.
pub fn serve(failed: fn(SuperviseError) -> i32) -> Result<(), LaunchError> {
    // SAFETY: `flow apply` passes its socket as stdin, and nothing else here uses fd 0.
    let socket = unsafe { UnixStream::from_raw_fd(0) };
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    // Only the socket steers the launcher. Blocked rather than ignored, as the supervisors it
    // forks keep them (an ignored signal would stay ignored in the stage).
    let mut blocked = chld;
    for sig in STEERING {
        blocked.add(sig);
    }
    blocked.thread_block()?;
    let exits = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    let mut live: HashMap<Pid, u64> = HashMap::new();
    loop {
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN), PollFd::new(exits.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let (requested, exited) = (ready(&fds[0]), ready(&fds[1]));
        if exited {
            while exits.read_signal()?.is_some() {}
            reap(&mut live, &socket)?;
        }
        if requested {
            let Some((request, streams)) = receive(&socket)? else { return Ok(()) };
            match request {
                Request::Start { id, launch } => {
                    let Ok(streams) = <[OwnedFd; STREAMS]>::try_from(streams) else {
                        answer(&socket, id, "unstarted", Errno::EBADF as i32)?;
                        continue;
                    };
                    // SAFETY: this process is single-threaded (`flow launch` starts no thread
                    // before serving), so the child may run any code after the fork.
                    match unsafe { fork() } {
                        Ok(ForkResult::Parent { child }) => {
                            live.insert(child, id);
                        }
                        Ok(ForkResult::Child) => become_supervisor(&launch, streams, exits, failed),
                        Err(e) => answer(&socket, id, "unstarted", e as i32)?,
                    }
                }
                Request::Kill { id } => {
                    if let Some((&pid, _)) = live.iter().find(|&(_, &i)| i == id) {
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                }
            }
        }
    }
}

/// Reads one request and the descriptors passed with it; `None` at end of file.
fn receive(socket: &UnixStream) -> Result<Option<(Request, Vec<OwnedFd>)>, LaunchError> {
    let mut len = [0u8; 4];
    let mut space = nix::cmsg_space!([RawFd; STREAMS]);
    let (got, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut len)];
        match recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        // SAFETY: descriptors received in SCM_RIGHTS are new and owned by no one.
                        fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
                break (msg.bytes, fds);
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if got == 0 {
        return Ok(None);
    }
    (&*socket).read_exact(&mut len[got..])?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    (&*socket).read_exact(&mut body)?;
    Ok(Some((serde_json::from_slice(&body)?, fds)))
}

/// Reaps every supervisor that has exited and reports how each ended.
fn reap(live: &mut HashMap<Pid, u64>, socket: &UnixStream) -> Result<(), LaunchError> {
    loop {
        let (pid, what, value) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, "code", code),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, "signal", sig as i32),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Some(id) = live.remove(&pid) {
            answer(socket, id, what, value)?;
        }
    }
}

fn answer(mut socket: &UnixStream, id: u64, what: &str, value: i32) -> std::io::Result<()> {
    socket.write_all(format!("{id} {what} {value}\n").as_bytes())
}

/// The forked child: takes its streams and runs the supervisor, which keeps the launcher's
/// blocked signals. Never returns into the launcher's loop.
fn become_supervisor(
    launch: &Launch,
    [control, stdout, stderr]: [OwnedFd; STREAMS],
    exits: SignalFd,
    failed: fn(SuperviseError) -> i32,
) -> ! {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(exits);
        // fd 0 was the launcher's socket: replacing it closes this child's copy.
        if let Err(e) = dup2_stdin(&control).and(dup2_stdout(&stdout)).and(dup2_stderr(&stderr)) {
            return failed(SuperviseError::Streams(e));
        }
        drop((control, stdout, stderr));
        // A group of its own, as the supervisor always had: signals meant for the launcher's
        // group do not reach it.
        let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
        match supervise(launch) {
            Ok(ended) => ended.exit(),
            Err(e) => failed(e),
        }
    }));
    match code {
        Ok(code) => std::process::exit(code),
        // The panic hook has said why; the launcher reports the abort as a signal.
        Err(_) => std::process::abort(),
    }
}

// The apply's side.

/// A supervisor the launcher forked; `ended` resolves when it has been reaped.
pub(super) struct Launched {
    id: u64,
    launcher: Arc<Launcher>,
    pub(super) ended: oneshot::Receiver<std::io::Result<Ended>>,
}

impl Launched {
    /// Has the supervisor killed (SIGKILL); what its stage left running, the next attempt's
    /// leftover check ends.
    pub(super) fn kill(&self) {
        let _ = self.launcher.send(&Request::Kill { id: self.id }, &[]);
    }
}

type Waiting = HashMap<u64, oneshot::Sender<std::io::Result<Ended>>>;

/// The apply's handle on its launcher process.
pub(super) struct Launcher {
    socket: Mutex<UnixStream>,
    /// `None` once the launcher is gone: no answer will come.
    waiting: Arc<Mutex<Option<Waiting>>>,
    next: std::sync::atomic::AtomicU64,
    /// Reads the answers, and reaps the launcher once it has gone.
    reader: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// This process's launcher, started on first use and again if it has died.
static LAUNCHER: Mutex<Option<Arc<Launcher>>> = Mutex::new(None);

/// Forks a supervisor for `launch` with the given control pipe (its stdin), stdout and stderr.
pub(super) fn start(launch: Launch, streams: [OwnedFd; STREAMS]) -> std::io::Result<Launched> {
    let launcher = {
        let mut current = LAUNCHER.lock().unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some(l) if l.alive() => Arc::clone(l),
            _ => {
                let l = Arc::new(Launcher::spawn()?);
                *current = Some(Arc::clone(&l));
                l
            }
        }
    };
    let id = launcher.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, ended) = oneshot::channel();
    match launcher.waiting.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
        Some(waiting) => waiting.insert(id, tx),
        None => return Err(gone()),
    };
    let raw = streams.each_ref().map(|fd| fd.as_raw_fd());
    if let Err(e) = launcher.send(&Request::Start { id, launch }, &raw) {
        launcher.waiting.lock().unwrap_or_else(PoisonError::into_inner).as_mut().map(|w| w.remove(&id));
        return Err(e);
    }
    Ok(Launched { id, launcher, ended })
}

/// Ends this process's launcher once no stage runs any more: at end of file it exits, and it is
/// reaped here, so that the CPU time of the stages it ran counts as this process's children's
/// (as `time flow apply` reports it).
pub(super) fn shut_down() {
    let Some(launcher) = LAUNCHER.lock().unwrap_or_else(PoisonError::into_inner).take() else { return };
    let _ = launcher.socket.lock().unwrap_or_else(PoisonError::into_inner).shutdown(std::net::Shutdown::Write);
    let reader = launcher.reader.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(reader) = reader {
        let _ = reader.join();
    }
}

pub(super) fn gone() -> std::io::Error {
    std::io::Error::other("the stage launcher (`flow launch`) ended while the stage ran")
}

impl Launcher {
    fn spawn() -> std::io::Result<Launcher> {
        let (ours, theirs) = UnixStream::pair()?;
        // `/proc/self/exe` still names this binary after it is rebuilt or reinstalled under a
        // long apply, where `current_exe()` would name a deleted file.
        let mut process = std::process::Command::new("/proc/self/exe")
            .arg("launch")
            .stdin(OwnedFd::from(theirs))
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot start the stage launcher (`flow launch`): {e}"))
            })?;
        let waiting = Arc::new(Mutex::new(Some(Waiting::new())));
        let answers = ours.try_clone()?;
        let reader = std::thread::Builder::new().name("flow-launcher".into()).spawn({
            let waiting = Arc::clone(&waiting);
            move || {
                for line in std::io::BufReader::new(answers).lines() {
                    let Ok(line) = line else { break };
                    let Some((id, ended)) = parse_answer(&line) else { continue };
                    let tx =
                        waiting.lock().unwrap_or_else(PoisonError::into_inner).as_mut().and_then(|w| w.remove(&id));
                    if let Some(tx) = tx {
                        let _ = tx.send(ended);
                    }
                }
                // Dropping the senders wakes every waiting stage with an error.
                waiting.lock().unwrap_or_else(PoisonError::into_inner).take();
                let _ = process.wait();
            }
        })?;
        Ok(Launcher {
            socket: Mutex::new(ours),
            waiting,
            next: std::sync::atomic::AtomicU64::new(0),
            reader: Mutex::new(Some(reader)),
        })
    }

    fn alive(&self) -> bool {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    fn send(&self, request: &Request, fds: &[RawFd]) -> std::io::Result<()> {
        let body = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        let len = u32::try_from(body.len()).map_err(std::io::Error::other)?.to_le_bytes();
        let socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        let iov = [IoSlice::new(&len), IoSlice::new(&body)];
        let sent = loop {
            match sendmsg::<()>(socket.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(n) => break n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) => return Err(gone()),
                Err(e) => return Err(e.into()),
            }
        };
        // A stream socket may take a long message in parts; the descriptors went with the first.
        let rest: Vec<u8> = len.iter().chain(&body).skip(sent).copied().collect();
        (&*socket).write_all(&rest)
    }
}

/// `ID code N`, `ID signal N` or `ID unstarted ERRNO`.
fn parse_answer(line: &str) -> Option<(u64, std::io::Result<Ended>)> {
    let mut words = line.split(' ');
    let id = words.next()?.parse().ok()?;
    let what = words.next()?;
    let value: i32 = words.next()?.parse().ok()?;
    let ended = match what {
        "code" => Ok(Ended::Code(value)),
        "signal" => Ok(Signal::try_from(value).map_or(Ended::Code(128 + value), Ended::Signal)),
        "unstarted" => Err(std::io::Error::other(format!(
            "the stage launcher could not fork a supervisor: {}",
            std::io::Error::from_raw_os_error(value)
        ))),
        _ => return None,
    };
    Some((id, ended))
}
