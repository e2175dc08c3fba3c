//! Runs one local stage's process: under a supervisor ([`super::supervisor`], forked by the
//! launcher, [`super::launcher`]) that ends the stage's whole process group when the stage
//! exits, when the run is cancelled (SIGTERM, then SIGKILL) and when `flow apply` itself dies;
//! its output to a log file.
//!
//! Every stage — a built-in kind in `flow run-stage` or a user's command — may report progress
//! on stdout in the line protocol ([`crate::stages::progress`]); its output, reports included,
//! goes to the log byte for byte.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::launcher::{self, Launch, Launched, gone};
use super::supervisor::{Ended, GRACE, TERMINATE};

use crate::stages::Progress;

/// What to start: a program, its arguments, working directory and extra environment.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
}

/// Receives each protocol line of a stage's output: a report, or why a line that looked like
/// one could not be read.
pub type OnProgress = std::sync::Arc<dyn Fn(Result<Progress, String>) + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Success,
    Code(i32),
    Signal(i32),
    Cancelled,
    /// A batch job that ended without running to completion (time limit, memory, node
    /// failure, cancelled outside flow, refused at submission), described.
    Job(String),
    /// The stage's supervisor could not be started, or its launcher died: the stage's fate is
    /// unknown, and it is ended (its supervisor sees the apply let go of it).
    Lost(String),
}

/// How long past the grace period a supervisor asked to end its stage may take before it is
/// killed itself.
const SUPERVISOR_SLACK: Duration = Duration::from_secs(5);

/// Runs `spec` under a supervisor, forked by this apply's launcher ([`super::launcher`]) in a
/// process group of its own, so that the terminal's Ctrl-C reaches only `flow apply`, which
/// decides. The supervisor's stdin is a pipe only this process holds: when this process dies,
/// for any reason, the supervisor reads end of file and kills the stage.
pub async fn run(
    spec: &ProcessSpec,
    log: &Path,
    mut cancel: watch::Receiver<bool>,
    on_progress: OnProgress,
) -> std::io::Result<Exit> {
    let log_file = fs_err::File::create(log)?.into_parts().0;
    let (control_out, control) = std::io::pipe()?;
    let (out, stdout) = std::io::pipe()?;
    let out = tokio::net::unix::pipe::Receiver::from_owned_fd(out.into())?;
    let reader = tokio::spawn(relay(out, log_file.try_clone()?, on_progress));
    let stdout = OwnedFd::from(stdout);
    let launch =
        Launch { program: spec.program.clone(), args: spec.args.clone(), cwd: spec.cwd.clone(), env: spec.env.clone() };
    // This process's copies of the streams close on return: the stage's output ends when the
    // stage and its supervisor are gone.
    let supervisor = match launcher::start(launch, [control_out.into(), stdout, log_file.into()]) {
        Ok(supervisor) => supervisor,
        Err(e) => return Ok(Exit::Lost(e.to_string())),
    };
    let exit = wait(supervisor, control, &mut cancel).await;
    // The stage's output ends when every holder of the pipe is gone: at once, since its process
    // group is ended with it. A process that escaped the group (`setsid`) may hold it for
    // ever: the apply reads on a little, then stops listening to it.
    let mut reader = reader;
    if tokio::time::timeout(SUPERVISOR_SLACK, &mut reader).await.is_err() {
        reader.abort();
    }
    exit
}

/// Copies a child's stdout to the log as it comes, byte for byte (a progress bar's `\r`
/// updates, text that is not UTF-8), and passes each protocol line on. The log keeps the
/// reports: it is where per-step wall-clock figures (tokens/s) live, since an artifact must not
/// contain anything that differs between two identical runs.
async fn relay(mut out: tokio::net::unix::pipe::Receiver, log: std::fs::File, on_progress: OnProgress) {
    use tokio::io::AsyncReadExt;
    let mut log = log;
    let mut lines = Lines::default();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = out.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let _ = log.write_all(&buf[..n]);
        lines.feed(&buf[..n], &on_progress);
    }
    lines.feed(b"\n", &on_progress);
}

/// Splits output into lines and reads each as the protocol. A line past
/// [`progress::MAX_LINE`](crate::stages::progress::MAX_LINE) is not a report and is not held.
#[derive(Default)]
pub struct Lines {
    partial: Vec<u8>,
    overlong: bool,
}

impl Lines {
    pub fn feed(&mut self, mut bytes: &[u8], on_progress: &OnProgress) {
        use crate::stages::progress::{self, Line};
        while !bytes.is_empty() {
            let (chunk, ended) = match bytes.iter().position(|b| *b == b'\n') {
                Some(at) => (&bytes[..at], true),
                None => (bytes, false),
            };
            bytes = &bytes[(chunk.len() + usize::from(ended)).min(bytes.len())..];
            if !self.overlong {
                self.partial.extend_from_slice(chunk);
                self.overlong = self.partial.len() > progress::MAX_LINE;
            }
            if self.overlong {
                self.partial.clear();
            }
            if ended {
                match progress::parse(&self.partial) {
                    Line::Other => {}
                    Line::Report(p) => on_progress(Ok(p)),
                    Line::Malformed(why) => on_progress(Err(why)),
                }
                self.partial.clear();
                self.overlong = false;
            }
        }
    }
}

async fn wait(
    mut supervisor: Launched,
    mut control: std::io::PipeWriter,
    cancel: &mut watch::Receiver<bool>,
) -> std::io::Result<Exit> {
    // Dropping the pipe would tell the supervisor to kill at once: it is kept until the end.
    if !*cancel.borrow() {
        tokio::select! {
            ended = &mut supervisor.ended => {
                return Ok(match ended.unwrap_or_else(|_| Err(gone())) {
                    Ok(Ended::Code(0)) => Exit::Success,
                    Ok(Ended::Code(code)) => Exit::Code(code),
                    Ok(Ended::Signal(sig)) => Exit::Signal(sig as i32),
                    Err(e) => Exit::Lost(e.to_string()),
                });
            }
            _ = cancelled(cancel) => {}
        }
    }
    // A supervisor that already exited cannot read the request; its answer comes at once. One
    // byte into an empty pipe does not block.
    let _ = control.write_all(&[TERMINATE]);
    if tokio::time::timeout(GRACE + SUPERVISOR_SLACK, &mut supervisor.ended).await.is_err() {
        supervisor.kill();
        let _ = supervisor.ended.await;
    }
    Ok(Exit::Cancelled)
}

async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    // The borrowed value is dropped here so the future stays `Send`.
    let _ = cancel.wait_for(|c| *c).await.map(|_| ());
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(8192);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let skip = usize::from(start > 0); // the first line may be cut
    lines[skip.min(lines.len())..].iter().rev().take(n).rev().map(|s| s.to_string()).collect()
}
