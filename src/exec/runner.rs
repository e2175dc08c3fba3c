//! Runs one local stage's process: under a supervisor ([`super::supervisor`]) that ends the
//! stage's whole process group when the stage exits, when the run is cancelled (SIGTERM, then
//! SIGKILL) and when `flow apply` itself dies; its output to a log file.
//!
//! Built-in kinds (`flow run-stage`) report progress on stdout in the run-stage protocol
//! ([`crate::stages::protocol`]); every line, reports included, goes to the log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::supervisor::{GRACE, TERMINATE};

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

/// How long past the grace period a supervisor asked to end its stage may take before it is
/// killed itself (its stage then dies of the parent-death signal).
const SUPERVISOR_SLACK: Duration = Duration::from_secs(5);

/// Runs `spec` under a supervisor (`flow supervise`, this same binary) in a process group of
/// its own, so that the terminal's Ctrl-C reaches only `flow apply`, which decides. The
/// supervisor's stdin is a pipe only this process holds: when this process dies, for any
/// reason, the supervisor reads end of file and kills the stage.
pub async fn run(
    spec: &ProcessSpec,
    log: &Path,
    mut cancel: watch::Receiver<bool>,
    on_progress: OnProgress,
) -> std::io::Result<Exit> {
    let log_file = fs_err::File::create(log)?.into_parts().0;
    // `/proc/self/exe` still names this binary after it is rebuilt or reinstalled under a long
    // apply, where `current_exe()` would name a deleted file.
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    let stdout = if spec.protocol { Stdio::piped() } else { Stdio::from(log_file.try_clone()?) };
    cmd.arg("supervise")
        .arg("--")
        .arg(&spec.program)
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .envs(&spec.env)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(log_file.try_clone()?)
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot start the stage supervisor (`flow supervise`): {e}"))
    })?;
    let reader = child.stdout.take().map(|out| tokio::spawn(relay(out, log_file, on_progress)));
    let exit = wait(&mut child, &mut cancel).await;
    if let Some(reader) = reader {
        // The stage's output ends when every holder of the pipe is gone; after a cancel the
        // apply waits for that a little, not for a process that escaped.
        match exit {
            Ok(Exit::Cancelled) => {
                let _ = tokio::time::timeout(SUPERVISOR_SLACK, reader).await;
            }
            _ => {
                let _ = reader.await;
            }
        }
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
    if let Some(p) = Progress::parse(line) {
        on_progress(p);
    }
}

async fn wait(child: &mut tokio::process::Child, cancel: &mut watch::Receiver<bool>) -> std::io::Result<Exit> {
    // Dropping the pipe would tell the supervisor to kill at once: it is kept until the end.
    let mut control = child.stdin.take().expect("the control pipe");
    if !*cancel.borrow() {
        tokio::select! {
            status = child.wait() => {
                use std::os::unix::process::ExitStatusExt;
                let status = status?;
                return Ok(match (status.code(), status.signal()) {
                    (Some(0), _) => Exit::Success,
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(sig)) => Exit::Signal(sig),
                    (None, None) => Exit::Code(-1),
                });
            }
            _ = cancelled(cancel) => {}
        }
    }
    // A supervisor that already exited cannot read the request; its wait below returns at once.
    let _ = control.write_all(&[TERMINATE]).await;
    if tokio::time::timeout(GRACE + SUPERVISOR_SLACK, child.wait()).await.is_err() {
        let _ = child.kill().await;
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
