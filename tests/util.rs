//! Test support: a temporary project directory and helpers to run `flow` in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub(crate) struct Project {
    dir: tempfile::TempDir,
}

/// The result of `flow apply --json`.
pub(crate) struct Applied {
    pub(crate) code: i32,
    pub(crate) stages: Vec<Value>,
    pub(crate) summary: Value,
    pub(crate) stderr: String,
}

impl Applied {
    pub(crate) fn status(&self, stage: &str) -> String {
        self.stage(stage)["status"].as_str().unwrap_or_default().to_owned()
    }

    pub(crate) fn stage(&self, stage: &str) -> &Value {
        self.stages
            .iter()
            .find(|s| s["stage"] == stage)
            .unwrap_or_else(|| panic!("no stage line for `{stage}`; stderr:\n{}", self.stderr))
    }

    /// Stage names with `status`, sorted.
    pub(crate) fn with_status(&self, status: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .stages
            .iter()
            .filter(|s| s["status"] == status)
            .map(|s| s["stage"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    }

    pub(crate) fn artifact(&self, stage: &str) -> String {
        self.stage(stage)["artifact"].as_str().unwrap_or_default().to_owned()
    }
}

pub(crate) fn flow_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flow"))
}

/// `tests/fixtures/<scenario>`: a scenario's workflow (`flow.yaml`) and the files it reads.
pub(crate) fn fixture_dir(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(scenario)
}

/// The bytes of `file` in `tests/fixtures/<scenario>/`.
pub(crate) fn fixture_bytes(scenario: &str, file: &str) -> Vec<u8> {
    let path = fixture_dir(scenario).join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture `{}`: {e}", path.display()))
}

/// The text of `file` in `tests/fixtures/<scenario>/`, for a test that changes it before writing it.
pub(crate) fn fixture_text(scenario: &str, file: &str) -> String {
    String::from_utf8(fixture_bytes(scenario, file)).unwrap_or_else(|e| panic!("fixture `{scenario}/{file}`: {e}"))
}

impl Project {
    /// An empty project: a directory with a `.git` marker, so `cache/` lands inside it.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        Self { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    /// Copies every file of `tests/fixtures/<scenario>/` (its subdirectories too) into the project,
    /// the scenario's `flow.yaml` as `wf.yaml`.
    pub(crate) fn fixture(&self, scenario: &str) -> &Self {
        self.fixture_as(scenario, "wf.yaml")
    }

    /// [`Project::fixture`], with the scenario's `flow.yaml` copied as `workflow`. Files are
    /// copied byte for byte, and written anew so that the test may change them.
    pub(crate) fn fixture_as(&self, scenario: &str, workflow: &str) -> &Self {
        let root = fixture_dir(scenario);
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("fixture `{}`: {e}", dir.display()));
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let rel = path.strip_prefix(&root).unwrap();
                let to = if rel == Path::new("flow.yaml") { Path::new(workflow) } else { rel };
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture `{}`: {e}", path.display()));
                self.write_bytes(&to.to_string_lossy(), &bytes);
            }
        }
        self
    }

    /// Copies the one file `file` of `tests/fixtures/<scenario>/` into the project as `to`,
    /// byte for byte.
    pub(crate) fn fixture_file(&self, scenario: &str, file: &str, to: &str) -> &Self {
        self.write_bytes(to, &fixture_bytes(scenario, file))
    }

    pub(crate) fn write(&self, rel: &str, content: &str) -> &Self {
        self.write_bytes(rel, content.as_bytes())
    }

    pub(crate) fn write_bytes(&self, rel: &str, content: &[u8]) -> &Self {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub(crate) fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_default()
    }

    pub(crate) fn read_bytes(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path().join(rel)).unwrap_or_else(|e| panic!("`{rel}`: {e}"))
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(flow_bin());
        cmd.args(args).current_dir(self.path()).env("CI", "1").env_remove("FLOW_CACHE").env("NO_COLOR", "1");
        cmd
    }

    pub(crate) fn flow(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub(crate) fn apply(&self, file: &str, extra: &[&str]) -> Applied {
        let mut args = vec!["apply", file, "--json"];
        args.extend_from_slice(extra);
        parse_applied(self.flow(&args))
    }

    /// The lines of `runs.log`, where test stages append their names when they run.
    pub(crate) fn runs(&self) -> Vec<String> {
        let mut v: Vec<String> = self.read("runs.log").lines().map(str::to_owned).collect();
        v.sort();
        v
    }

    pub(crate) fn clear_runs(&self) {
        let _ = std::fs::remove_file(self.path().join("runs.log"));
    }

    pub(crate) fn records(&self) -> usize {
        std::fs::read_dir(self.cache().join("ac")).map(|d| d.count()).unwrap_or(0)
    }
}

pub(crate) fn parse_applied(out: Output) -> Applied {
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

/// A process: its pid and the time it started (a pid is reused once its process is gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Proc {
    pub(crate) pid: i32,
    pub(crate) start: u64,
}

impl Proc {
    /// Whether it still runs (a zombie has ended).
    pub(crate) fn alive(self) -> bool {
        procfs::process::Process::new(self.pid)
            .and_then(|p| p.stat())
            .is_ok_and(|s| s.starttime == self.start && running(&s))
    }

    /// What it runs, for messages.
    pub(crate) fn describe(self) -> String {
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

/// The live parent of `child`.
pub(crate) fn parent(child: Proc) -> Option<Proc> {
    let ppid = processes().into_iter().find(|(p, _)| *p == child)?.1;
    processes().into_iter().map(|(p, _)| p).find(|p| p.pid == ppid)
}

/// The live processes descending from `root` (itself included), found through their parents.
pub(crate) fn descendants(root: u32) -> Vec<Proc> {
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
pub(crate) fn stage_processes(dir: &Path) -> Vec<Proc> {
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
pub(crate) fn assert_all_end_within_a_second(procs: &[Proc], dir: &Path, context: &str) {
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
