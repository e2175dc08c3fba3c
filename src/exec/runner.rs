//! Runs one stage's process: a child in its own process group, its output to a log file,
//! killed as a group (SIGTERM, then SIGKILL) when the run is cancelled.
//!
//! Built-in kinds (`flow run-stage`) speak a one-line protocol on stdout: a line
//! `@flow-progress {json}` is a progress report. Every line goes to the log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::stages::Progress;

/// What to start: a program, its arguments, working directory and extra environment.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Whether stdout carries `@flow-progress` lines.
    pub protocol: bool,
}

/// The prefix of a progress line on a built-in stage's stdout.
pub const PROGRESS_PREFIX: &str = "@flow-progress ";

pub type OnProgress = std::sync::Arc<dyn Fn(Progress) + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Success,
    Code(i32),
    Signal(i32),
    Cancelled,
    /// A batch job that ended without running to completion (time limit, memory, node
    /// failure, cancelled outside flow, refused at submission), described.
    Job(String),
}

/// How long a cancelled stage gets to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

pub async fn run(spec: &ProcessSpec, log: &Path, mut cancel: watch::Receiver<bool>, on_progress: OnProgress) -> std::io::Result<Exit> {
    let log_file = fs_err::File::create(log)?.into_parts().0;
    let mut cmd = tokio::process::Command::new(&spec.program);
    let stdout = if spec.protocol { Stdio::piped() } else { Stdio::from(log_file.try_clone()?) };
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log_file.try_clone()?)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| std::io::Error::new(e.kind(), format!("cannot start `{}`: {e}", spec.program.display())))?;
    let reader = child.stdout.take().map(|out| tokio::spawn(relay(out, log_file, on_progress)));
    let exit = wait(&mut child, &mut cancel).await;
    if let Some(reader) = reader {
        let _ = reader.await;
    }
    exit
}

/// Copies a child's stdout to the log, turning protocol lines into progress reports too. The
/// log keeps them: it is where per-step wall-clock figures (tokens/s) live, since an artifact
/// must not contain anything that differs between two identical runs.
async fn relay(out: tokio::process::ChildStdout, log: std::fs::File, on_progress: OnProgress) {
    use std::io::Write;
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(out).lines();
    let mut log = log;
    while let Ok(Some(line)) = lines.next_line().await {
        report(&line, &on_progress);
        let _ = writeln!(log, "{line}");
    }
}

/// Passes a protocol line of a stage's output on as a progress report; other lines are not.
pub fn report(line: &str, on_progress: &OnProgress) {
    if let Some(Ok(p)) = line.strip_prefix(PROGRESS_PREFIX).map(serde_json::from_str::<Progress>) {
        on_progress(p);
    }
}

async fn wait(child: &mut tokio::process::Child, cancel: &mut watch::Receiver<bool>) -> std::io::Result<Exit> {
    let pid = child.id().map(|id| Pid::from_raw(id as i32));
    if *cancel.borrow() {
        terminate(child, pid).await;
        return Ok(Exit::Cancelled);
    }
    tokio::select! {
        status = child.wait() => {
            let status = status?;
            // The stage's own children may linger in its group; they must not outlive it.
            if let Some(pid) = pid {
                let _ = killpg(pid, Signal::SIGKILL);
            }
            use std::os::unix::process::ExitStatusExt;
            Ok(match (status.code(), status.signal()) {
                (Some(0), _) => Exit::Success,
                (Some(code), _) => Exit::Code(code),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Code(-1),
            })
        }
        _ = cancelled(cancel) => {
            terminate(child, pid).await;
            Ok(Exit::Cancelled)
        }
    }
}

async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    // The borrowed value is dropped here so the future stays `Send`.
    let _ = cancel.wait_for(|c| *c).await.map(|_| ());
}

async fn terminate(child: &mut tokio::process::Child, pid: Option<Pid>) {
    if let Some(pid) = pid {
        let _ = killpg(pid, Signal::SIGTERM);
        if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
            let _ = killpg(pid, Signal::SIGKILL);
        } else {
            let _ = killpg(pid, Signal::SIGKILL);
            return;
        }
    }
    let _ = child.kill().await;
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
