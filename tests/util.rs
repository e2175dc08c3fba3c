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
        let mut v: Vec<String> =
            self.stages.iter().filter(|s| s["status"] == status).map(|s| s["stage"].as_str().unwrap().to_owned()).collect();
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
