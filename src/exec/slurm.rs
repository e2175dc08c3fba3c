//! The Slurm executor: one stage, one batch job. The job runs the very process the local
//! executor would start (`sh -c` for a command stage, `flow run-stage` for a built-in kind)
//! against the same store, so the store must be on a filesystem the nodes share. `sbatch`
//! submits it, `scontrol show job` follows it (every 0.25 s for 10 s, then less often up to every
//! 2 s, rather than `sbatch --wait`'s slow poll), its log is read as it grows for progress lines, its final state
//! becomes the stage's, and `scancel` stops it when the run is cancelled.
//!
//! Jobs are submitted with `--requeue`: a job Slurm requeues (preemption, node failure) starts
//! again with an emptied output directory and resumes from the checkpoints in the store's
//! scratch directory.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;

use super::runner::{Exit, Lines, OnProgress, ProcessSpec};
use crate::spec::executor::SlurmOptions;

const FIRST_POLL: Duration = Duration::from_millis(250);
const LAST_POLL: Duration = Duration::from_secs(2);
/// How long a job is polled every FIRST_POLL before the interval grows.
const QUICK: Duration = Duration::from_secs(10);
/// How long a cancelled job may take to leave the running states before flow stops waiting.
const CANCEL_WAIT: Duration = Duration::from_secs(60);

/// What the executor tells the stage's reporter as the job moves.
pub enum JobEvent {
    Submitted(String),
    /// Slurm put the job back in the queue (preemption, node failure, `scontrol requeue`).
    Requeued {
        job: String,
        restarts: u32,
    },
    /// `scontrol` has not answered about the job for this long; flow keeps asking.
    Unanswered {
        job: String,
        seconds: u64,
    },
}

/// After this many polls without an answer from `scontrol`, the user hears of it.
const UNANSWERED_POLLS: u32 = 30;

/// One job's state as `scontrol show job -o` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JobState {
    state: String,
    exit_code: i32,
    signal: i32,
    reason: String,
    restarts: u32,
    time_limit: String,
}

impl JobState {
    fn parse(line: &str) -> Option<Self> {
        let fields: BTreeMap<&str, &str> = line.split_whitespace().filter_map(|f| f.split_once('=')).collect();
        let (code, signal) = fields.get("ExitCode")?.split_once(':')?;
        Some(Self {
            state: fields.get("JobState")?.to_string(),
            exit_code: code.parse().ok()?,
            signal: signal.parse().ok()?,
            reason: fields.get("Reason").copied().unwrap_or("None").to_owned(),
            restarts: fields.get("Restarts").and_then(|r| r.parse().ok()).unwrap_or(0),
            time_limit: fields.get("TimeLimit").copied().unwrap_or("").to_owned(),
        })
    }

    /// The stage's exit for a final state; `None` while the job is still queued or running.
    fn exit(&self, job: &str) -> Option<Exit> {
        let why = |what: String| Some(Exit::Job(format!("Slurm job {job} {what}")));
        match self.state.as_str() {
            "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "REQUEUED" | "REQUEUE_FED" | "RESIZING"
            | "SUSPENDED" | "STAGE_OUT" | "SIGNALING" | "STOPPED" => None,
            "COMPLETED" if self.exit_code == 0 && self.signal == 0 => Some(Exit::Success),
            "COMPLETED" | "FAILED" if self.signal != 0 => Some(Exit::Signal(self.signal)),
            "COMPLETED" | "FAILED" => Some(Exit::Code(self.exit_code)),
            "TIMEOUT" => why(format!("exceeded its time limit ({})", self.time_limit)),
            "OUT_OF_MEMORY" => why("ran out of memory".into()),
            "CANCELLED" => why("was cancelled".into()),
            "NODE_FAIL" => why("failed: its node failed".into()),
            "PREEMPTED" => why("was preempted and not requeued".into()),
            "BOOT_FAIL" => why("failed: its node did not boot".into()),
            "DEADLINE" => why("missed its deadline".into()),
            "REQUEUE_HOLD" | "SPECIAL_EXIT" => {
                why(format!("is held after a requeue ({}); `scontrol release {job}` lets it run", self.state))
            }
            other => why(format!("ended in state {other} ({})", self.reason)),
        }
    }
}

/// The `sbatch` arguments of a stage's job, options first, then the batch script.
fn sbatch_args(opts: &SlurmOptions, name: &str, log: &Path, cwd: &Path, script: &Path) -> Vec<String> {
    let mut args = vec![
        "--parsable".to_owned(),
        format!("--job-name=flow:{name}"),
        format!("--output={}", log.display()),
        "--open-mode=append".to_owned(),
        format!("--chdir={}", cwd.display()),
        "--requeue".to_owned(),
    ];
    let text = [
        ("partition", &opts.partition),
        ("account", &opts.account),
        ("qos", &opts.qos),
        ("time", &opts.time),
        ("gpus", &opts.gpus),
        ("gres", &opts.gres),
        ("mem", &opts.mem),
        ("constraint", &opts.constraint),
    ];
    args.extend(text.into_iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("--{k}={v}"))));
    let counts = [
        ("nodes", opts.nodes),
        ("ntasks", opts.ntasks),
        ("ntasks-per-node", opts.ntasks_per_node),
        ("cpus-per-task", opts.cpus_per_task),
    ];
    args.extend(counts.into_iter().filter_map(|(k, v)| v.map(|v| format!("--{k}={v}"))));
    args.extend(opts.args.iter().cloned());
    args.push(script.display().to_string());
    args
}

/// The batch script: the stage's environment, the setup lines, an emptied output directory
/// (a requeued job starts again), then the stage's process.
fn script(spec: &ProcessSpec, opts: &SlurmOptions, sbatch: &[String]) -> String {
    // try_quote refuses only NUL, which no environment variable or argument can hold anyway.
    let q = |s: &str| shlex::try_quote(&s.replace('\0', "")).expect("no NUL left").into_owned();
    let mut out = String::from("#!/bin/sh\n# Written by flow; submitted with:\n#   sbatch");
    for a in sbatch {
        out.push(' ');
        out.push_str(&q(a));
    }
    out.push_str("\nset -e\n");
    for (k, v) in &spec.env {
        out.push_str(&format!("export {k}={}\n", q(v)));
    }
    if let Some(setup) = &opts.setup {
        out.push_str(setup);
        out.push('\n');
    }
    out.push_str("find \"$FLOW_OUT\" -mindepth 1 -delete\nexec");
    out.push_str(&format!(" {}", q(&spec.program.display().to_string())));
    for a in &spec.args {
        out.push_str(&format!(" {}", q(a)));
    }
    out.push('\n');
    out
}

/// One stage to run as a batch job.
pub struct Job<'a> {
    pub spec: &'a ProcessSpec,
    pub opts: &'a SlurmOptions,
    pub name: &'a str,
    /// Where the batch script is written (the stage's scratch directory).
    pub script: &'a Path,
    pub log: &'a Path,
}

/// Submits the stage and follows its job to the end.
pub async fn run(
    job: &Job<'_>,
    mut cancel: watch::Receiver<bool>,
    on_progress: OnProgress,
    on_job: &(dyn Fn(JobEvent) + Send + Sync),
) -> std::io::Result<Exit> {
    let Job { spec, opts, name, script: script_path, log } = *job;
    let args = sbatch_args(opts, name, log, &spec.cwd, script_path);
    fs_err::write(script_path, script(spec, opts, &args))?;
    fs_err::write(log, b"")?;
    let out = match Command::new("sbatch").args(&args).stdin(std::process::Stdio::null()).output().await {
        Ok(out) => out,
        Err(e) => return Ok(Exit::Job(format!("cannot run `sbatch` ({e}); is Slurm installed here?"))),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Ok(Exit::Job(format!("sbatch refused the job: {}", stderr.trim())));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    // `--parsable` prints `id` or `id;cluster`.
    let id = stdout.trim().split(';').next().unwrap_or_default().to_owned();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Ok(Exit::Job(format!("sbatch printed no job id: {}", stdout.trim())));
    }
    // Without its id on disk a later apply could not find the job again: better not run it.
    if let Err(e) = fs_err::write(id_file(script_path), &id) {
        scancel(&id).await;
        return Err(e);
    }
    on_job(JobEvent::Submitted(id.clone()));
    let mut reader = LogReader { offset: 0, lines: Lines::default() };
    let mut poll = FIRST_POLL;
    let started = std::time::Instant::now();
    let mut restarts = 0;
    let mut unanswered = 0;
    loop {
        if *cancel.borrow() {
            return cancel_job(&id, log, &mut reader, &on_progress).await;
        }
        reader.read(log, &on_progress);
        match state(&id).await {
            None => {
                unanswered += 1;
                if unanswered == UNANSWERED_POLLS {
                    on_job(JobEvent::Unanswered { job: id.clone(), seconds: started.elapsed().as_secs() });
                }
            }
            Some(state) => {
                unanswered = 0;
                if state.restarts > restarts {
                    restarts = state.restarts;
                    on_job(JobEvent::Requeued { job: id.clone(), restarts });
                }
                if let Some(exit) = state.exit(&id) {
                    // A held job still sits in the queue; released, it would run with nobody
                    // to commit its output.
                    if matches!(state.state.as_str(), "REQUEUE_HOLD" | "SPECIAL_EXIT") {
                        scancel(&id).await;
                    }
                    reader.read(log, &on_progress);
                    return Ok(exit);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = cancel.wait_for(|c| *c) => {}
        }
        // Short jobs are seen to end at once; a long job costs the controller one request
        // every LAST_POLL.
        if started.elapsed() > QUICK {
            poll = (poll * 2).min(LAST_POLL);
        }
    }
}

async fn cancel_job(job: &str, log: &Path, reader: &mut LogReader, on_progress: &OnProgress) -> std::io::Result<Exit> {
    scancel(job).await;
    reader.read(log, on_progress);
    Ok(Exit::Cancelled)
}

/// Cancels `job` and waits (at most [`CANCEL_WAIT`]) until it has ended; says whether it did.
async fn scancel(job: &str) -> bool {
    let _ = Command::new("scancel").arg(job).status().await;
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    while tokio::time::Instant::now() < deadline {
        if state(job).await.is_some_and(|s| s.exit(job).is_some()) {
            return true;
        }
        tokio::time::sleep(FIRST_POLL).await;
    }
    false
}

/// Where the id of the job a script was submitted as is kept, beside the script.
fn id_file(script: &Path) -> std::path::PathBuf {
    script.with_file_name("job.id")
}

/// Cancels the job an earlier `flow apply` submitted from `script` if it is still queued or
/// running — that apply died without cancelling it (SIGKILL, a lost session) — so that it
/// cannot write into the output directory the new run is about to use, on the cluster or here.
/// The new run resumes from the checkpoints the old job left. Returns the id of the job it
/// cancelled; an error if that job would not end.
pub async fn cancel_leftover(script: &Path) -> Result<Option<String>, String> {
    let Ok(id) = std::fs::read_to_string(id_file(script)) else { return Ok(None) };
    let id = id.trim();
    // squeue lists only queued and running jobs, and prints the whole script path (`%o`). Job
    // ids are reused eventually: only the job that runs this very script is ours.
    let listed =
        Command::new("squeue").args(["-h", "-j", id, "-o", "%o"]).stdin(std::process::Stdio::null()).output().await;
    let Ok(listed) = listed else { return Ok(None) };
    if String::from_utf8_lossy(&listed.stdout).trim() != script.display().to_string() {
        return Ok(None);
    }
    if !scancel(id).await {
        return Err(format!(
            "Slurm job {id}, left running by an earlier apply, is still running after `scancel`; wait for it to end"
        ));
    }
    Ok(Some(id.to_owned()))
}

/// The job's state, or `None` when `scontrol` gave no answer this time (the controller may be
/// restarting; the next poll asks again). A job the controller no longer knows — purged
/// before flow saw it end — reads as the final state `UNKNOWN`.
async fn state(job: &str) -> Option<JobState> {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", job])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        tracing::debug!(job, %stderr, "scontrol failed");
        return stderr.contains("Invalid job id").then(|| JobState {
            state: "UNKNOWN".into(),
            exit_code: 0,
            signal: 0,
            reason: "the controller no longer knows the job".into(),
            restarts: 0,
            time_limit: String::new(),
        });
    }
    JobState::parse(String::from_utf8_lossy(&out.stdout).lines().next()?)
}

/// Reads what a job appended to its log since the last look, turning complete protocol lines
/// into progress reports.
struct LogReader {
    offset: u64,
    lines: Lines,
}

impl LogReader {
    fn read(&mut self, log: &Path, on_progress: &OnProgress) {
        let Ok(mut file) = std::fs::File::open(log) else { return };
        let mut buf = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        self.lines.feed(&buf, on_progress);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scontrol_lines_map_to_exits() {
        let line = |state: &str, code: &str| {
            format!(
                "JobId=7 JobName=flow:a JobState={state} Reason=None Restarts=0 ExitCode={code} RunTime=00:00:03 TimeLimit=00:01:00"
            )
        };
        let exit = |state: &str, code: &str| JobState::parse(&line(state, code)).unwrap().exit("7");
        assert_eq!(exit("RUNNING", "0:0"), None);
        assert_eq!(exit("PENDING", "0:0"), None);
        assert_eq!(exit("COMPLETED", "0:0"), Some(Exit::Success));
        assert_eq!(exit("FAILED", "3:0"), Some(Exit::Code(3)));
        assert_eq!(exit("FAILED", "0:9"), Some(Exit::Signal(9)));
        assert_eq!(exit("TIMEOUT", "0:15"), Some(Exit::Job("Slurm job 7 exceeded its time limit (00:01:00)".into())));
        assert_eq!(exit("OUT_OF_MEMORY", "0:125"), Some(Exit::Job("Slurm job 7 ran out of memory".into())));
        assert_eq!(exit("CANCELLED", "0:15"), Some(Exit::Job("Slurm job 7 was cancelled".into())));
        assert_eq!(exit("NODE_FAIL", "0:0"), Some(Exit::Job("Slurm job 7 failed: its node failed".into())));
        assert_eq!(JobState::parse("garbage"), None);
    }

    #[test]
    fn options_become_sbatch_arguments_and_the_script_quotes_everything() {
        let opts = SlurmOptions {
            partition: Some("gpu".into()),
            time: Some("1:00:00".into()),
            gpus: Some("2".into()),
            cpus_per_task: Some(8),
            args: vec!["--qos=high".into()],
            setup: Some("module load cuda".into()),
            ..Default::default()
        };
        let args = sbatch_args(&opts, "train", Path::new("/s/log"), Path::new("/w"), Path::new("/s/job.sh"));
        assert_eq!(
            args,
            [
                "--parsable",
                "--job-name=flow:train",
                "--output=/s/log",
                "--open-mode=append",
                "--chdir=/w",
                "--requeue",
                "--partition=gpu",
                "--time=1:00:00",
                "--gpus=2",
                "--cpus-per-task=8",
                "--qos=high",
                "/s/job.sh"
            ]
        );
        // The script, run by a shell as Slurm would, empties the output directory and hands
        // every argument and variable over byte for byte.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out dir");
        std::fs::create_dir_all(out.join("stale")).unwrap();
        let tricky = "it's \"$HOME\" `x` \\ ; done";
        let spec = ProcessSpec {
            program: "printf".into(),
            args: vec!["%s|%s".into(), tricky.into(), "$FLOW_WITH_x".into()],
            cwd: dir.path().into(),
            env: BTreeMap::from([
                ("FLOW_OUT".to_owned(), out.display().to_string()),
                ("FLOW_WITH_x".to_owned(), tricky.to_owned()),
            ]),
        };
        let opts = SlurmOptions { setup: Some("printf 'setup|'".into()), ..Default::default() };
        let path = dir.path().join("job.sh");
        std::fs::write(&path, script(&spec, &opts, &args)).unwrap();
        let ran = std::process::Command::new("sh").arg(&path).output().unwrap();
        assert!(ran.status.success(), "{ran:?}");
        assert_eq!(String::from_utf8_lossy(&ran.stdout), format!("setup|{tricky}|$FLOW_WITH_x"));
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "the output directory is emptied");
    }
}
