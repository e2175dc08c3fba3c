//! Test support: a temporary project directory and helpers to run `flow` in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub struct Project {
    dir: tempfile::TempDir,
}

/// The result of `flow apply --json`.
pub struct Applied {
    pub code: i32,
    pub stages: Vec<Value>,
    pub summary: Value,
    pub stderr: String,
}

impl Applied {
    pub fn status(&self, stage: &str) -> String {
        self.stage(stage)["status"].as_str().unwrap_or_default().to_owned()
    }

    pub fn stage(&self, stage: &str) -> &Value {
        self.stages
            .iter()
            .find(|s| s["stage"] == stage)
            .unwrap_or_else(|| panic!("no stage line for `{stage}`; stderr:\n{}", self.stderr))
    }

    /// Stage names with `status`, sorted.
    pub fn with_status(&self, status: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .stages
            .iter()
            .filter(|s| s["status"] == status)
            .map(|s| s["stage"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    }

    pub fn artifact(&self, stage: &str) -> String {
        self.stage(stage)["artifact"].as_str().unwrap_or_default().to_owned()
    }
}

pub fn flow_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flow"))
}

impl Project {
    /// An empty project: a directory with a `.git` marker, so `cache/` lands inside it.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    pub fn write(&self, rel: &str, content: &str) -> &Self {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_default()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(flow_bin());
        cmd.args(args).current_dir(self.path()).env("CI", "1").env_remove("FLOW_CACHE").env("NO_COLOR", "1");
        cmd
    }

    pub fn flow(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn apply(&self, file: &str, extra: &[&str]) -> Applied {
        let mut args = vec!["apply", file, "--json"];
        args.extend_from_slice(extra);
        parse_applied(self.flow(&args))
    }

    /// The lines of `runs.log`, where test stages append their names when they run.
    pub fn runs(&self) -> Vec<String> {
        let mut v: Vec<String> = self.read("runs.log").lines().map(str::to_owned).collect();
        v.sort();
        v
    }

    pub fn clear_runs(&self) {
        let _ = std::fs::remove_file(self.path().join("runs.log"));
    }

    pub fn records(&self) -> usize {
        std::fs::read_dir(self.cache().join("ac")).map(|d| d.count()).unwrap_or(0)
    }
}

pub fn parse_applied(out: Output) -> Applied {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}\nstderr:\n{stderr}")))
        .collect();
    let summary = lines.last().cloned().unwrap_or(Value::Null);
    let stages = lines.into_iter().filter(|l| l["type"] == "stage").collect();
    Applied { code: out.status.code().unwrap_or(-1), stages, summary, stderr }
}

/// A command stage body that logs its run and writes `text` to `$FLOW_OUT/out.txt`.
pub fn logged(name: &str, text: &str) -> String {
    format!("echo {name} >> runs.log; {text} > \"$FLOW_OUT/out.txt\"")
}

/// A process: its pid and the time it started (a pid is reused once its process is gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub start: u64,
}

impl Proc {
    /// Whether it still runs (a zombie has ended).
    pub fn alive(self) -> bool {
        procfs::process::Process::new(self.pid)
            .and_then(|p| p.stat())
            .is_ok_and(|s| s.starttime == self.start && running(&s))
    }

    /// What it runs, for messages.
    pub fn describe(self) -> String {
        let cmdline = procfs::process::Process::new(self.pid).and_then(|p| p.cmdline()).unwrap_or_default();
        format!("{} `{}`", self.pid, cmdline.join(" "))
    }
}

fn running(stat: &procfs::process::Stat) -> bool {
    !matches!(stat.state(), Ok(procfs::process::ProcState::Zombie | procfs::process::ProcState::Dead))
}

/// Every live process with its parent.
fn processes() -> Vec<(Proc, i32)> {
    procfs::process::all_processes()
        .unwrap()
        .flatten()
        .filter_map(|p| p.stat().ok())
        .filter(running)
        .map(|s| (Proc { pid: s.pid, start: s.starttime }, s.ppid))
        .collect()
}

/// The live processes descending from `root` (itself included), found through their parents.
pub fn descendants(root: u32) -> Vec<Proc> {
    let all = processes();
    let mut found: Vec<Proc> = all.iter().filter(|(p, _)| p.pid == root as i32).map(|(p, _)| *p).collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i].pid;
        found.extend(all.iter().filter(|&&(_, ppid)| ppid == parent).map(|(p, _)| *p));
        i += 1;
    }
    found
}

/// The live processes of local stages whose store lies under `dir`: each inherits
/// `FLOW_RESUME`, a directory of its store.
pub fn stage_processes(dir: &Path) -> Vec<Proc> {
    let dirs = [dir.to_path_buf(), dir.canonicalize().unwrap()];
    processes()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| {
            let env = procfs::process::Process::new(p.pid).and_then(|p| p.environ()).unwrap_or_default();
            env.get(std::ffi::OsStr::new("FLOW_RESUME"))
                .is_some_and(|v| dirs.iter().any(|d| Path::new(v).starts_with(d)))
        })
        .collect()
}

/// Fails unless every one of `procs` and every stage process of a store under `dir` is gone
/// within a second (the promise of docs/guarantees.md).
pub fn assert_all_end_within_a_second(procs: &[Proc], dir: &Path, context: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let mut left: Vec<Proc> = procs.iter().copied().filter(|p| p.alive()).collect();
        for p in stage_processes(dir) {
            if !left.contains(&p) {
                left.push(p);
            }
        }
        if left.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            let list: Vec<String> = left.iter().map(|p| p.describe()).collect();
            panic!("{context}: still running a second later: {}", list.join("; "));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
