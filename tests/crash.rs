//! Crash safety: `flow apply` killed at random moments — while hashing, running stages, writing
//! blobs, manifests, records and the lock file, uploading — in three ways: SIGKILL to it and
//! every process it started (a power cut), SIGKILL to the apply alone (the OOM killer, `kill
//! -9`), and SIGHUP to the apply alone (a closed terminal). After each kill nothing the apply
//! started is alive a second later, the store verifies clean, and the next apply completes with
//! the artifacts of an uninterrupted run. The moments come from a seeded generator whose seed
//! each failure names; `FLOW_CRASH_TRIALS` sets the number of trials (default 10).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::util::{Proc, Project, assert_all_end_within_a_second, descendants, parent, parse_applied, stage_processes};

fn trials() -> u64 {
    std::env::var("FLOW_CRASH_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

/// `flow apply wf.yaml --json ARGS` in `p` with `env`.
fn apply(p: &Project, args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut command = p.command(&[&["apply", "wf.yaml", "--json"], args].concat());
    command.envs(env.iter().copied());
    command
}

/// Every stage's artifact digest after a complete apply.
fn artifacts(p: &Project, args: &[&str], env: &[(&str, &str)]) -> BTreeMap<String, String> {
    let r = parse_applied(apply(p, args, env).output().unwrap());
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stages
        .iter()
        .map(|s| (s["stage"].as_str().unwrap().to_owned(), s["artifact"].as_str().unwrap().to_owned()))
        .collect()
}

/// How an apply is killed.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// SIGKILL to the apply and every process it started, as a power cut would: the apply is
    /// stopped first, so that it starts nothing new while its descendants are collected.
    Everything,
    /// A signal to the apply alone; its stages are left to the promise under test.
    Apply(Signal),
}

/// What became of one apply that was to be killed.
struct Killed {
    /// The kill came before the apply finished.
    before_the_end: bool,
    /// Stage processes were running when the kill came.
    mid_stage: bool,
}

/// Runs `args` in `p`, kills it as `how` after `delay` (if still running), then checks that
/// nothing it started outlives it by more than a second.
fn apply_killed_after(p: &Project, args: &[&str], env: &[(&str, &str)], delay: Duration, how: Kill) -> Killed {
    let mut child = apply(p, args, env).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Killed { before_the_end: false, mid_stage: false };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = Pid::from_raw(child.id() as i32);
    if let Kill::Everything = how
        && kill(pid, Signal::SIGSTOP).is_err()
    {
        child.wait().unwrap();
        return Killed { before_the_end: false, mid_stage: false };
    }
    let started = descendants(child.id());
    let mid_stage = !stage_processes(p.path()).is_empty();
    match how {
        Kill::Everything => {
            for proc in started.iter().rev() {
                let _ = kill(Pid::from_raw(proc.pid), Signal::SIGKILL);
            }
        }
        Kill::Apply(signal) => {
            let _ = kill(pid, signal);
        }
    }
    child.wait().unwrap();
    assert_all_end_within_a_second(&started, p.path(), &format!("{how:?} after {delay:?}"));
    Killed { before_the_end: true, mid_stage }
}

fn assert_verifies(p: &Project, cache: &str, seed: u64) {
    let out = p.flow(&["verify", "--cache", cache]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "seed {seed}: verify after the kill ({}):\n{stderr}", out.status);
    assert!(stderr.contains(", 0 problems"), "seed {seed}: {stderr}");
}

/// Kills applies of the `crash_workflow` fixture — command stages with many files, a large one and
/// links, feeding a tiny training chain, and beside them a slow stage that ignores the polite
/// signals — in `p` as `how` at `trials()` moments spread over an uninterrupted run's duration;
/// `extra` gives each trial's arguments besides its own cache.
fn crash_trials(
    p: &Project,
    name: &str,
    how: Kill,
    env: &[(&str, &str)],
    extra: impl Fn(u64) -> Vec<String>,
) -> BTreeMap<String, String> {
    p.fixture("crash_workflow");
    let started = Instant::now();
    let reference = artifacts(p, &["--cache", "reference"], env);
    let span = started.elapsed();
    let (mut killed, mut mid_stage) = (0, 0);
    for trial in 0..trials() {
        let seed = trial;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let delay = span.mul_f64(rng.random_range(0.0..1.0));
        let cache = format!("c{trial}");
        let args = extra(trial);
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["--cache", &cache]);
        eprintln!("{name}: trial {trial}, seed {seed}: {how:?} after {delay:?} of {span:?}");
        let k = apply_killed_after(p, &args, env, delay, how);
        killed += usize::from(k.before_the_end);
        mid_stage += usize::from(k.mid_stage);
        if let Err(e) = flow::exec::lockfile::LockFile::read(&p.path().join("wf.lock")) {
            panic!("seed {seed}: the lock file after the kill: {e}");
        }
        assert_verifies(p, &cache, seed);
        assert_eq!(artifacts(p, &args, env), reference, "seed {seed}: the apply after the kill");
        assert_verifies(p, &cache, seed);
    }
    eprintln!(
        "{name}: {} trials, {killed} killed ({how:?}) before the apply finished, {mid_stage} while a stage ran; nothing was left running, every store verified and completed",
        trials()
    );
    // A few draws may land after the end of a run; most must have interrupted one.
    assert!(killed as u64 * 2 >= trials(), "{name}: only {killed} of {} applies were killed", trials());
    reference
}

#[test]
fn an_apply_killed_at_any_moment_leaves_a_store_that_verifies_and_completes_identically() {
    crash_trials(&Project::new(), "local", Kill::Everything, &[], |_| vec![]);
}

#[test]
fn an_apply_killed_alone_at_any_moment_takes_its_stages_with_it() {
    crash_trials(&Project::new(), "apply alone", Kill::Apply(Signal::SIGKILL), &[], |_| vec![]);
}

#[test]
fn an_apply_hung_up_at_any_moment_takes_its_stages_with_it() {
    crash_trials(&Project::new(), "hang-up", Kill::Apply(Signal::SIGHUP), &[], |_| vec![]);
}

#[test]
fn a_pushing_apply_killed_at_any_moment_leaves_a_remote_others_can_pull_from() {
    let p = Project::new();
    let remote = |trial| format!("file://{}/remote{trial}", p.path().display());
    // The killed apply's lease stays behind: it expires after a second without renewal.
    let reference = crash_trials(&p, "remote", Kill::Everything, &[("FLOW_LEASE_SECONDS", "1")], |trial| {
        vec!["--push".into(), "--remote".into(), remote(trial)]
    });
    // Each remote, completed by the apply after its kill, gives a fresh machine every artifact.
    for trial in 0..trials() {
        let fresh = format!("fresh{trial}");
        let out = p.flow(&["pull", "wf.yaml", "--cache", &fresh, "--remote", &remote(trial)]);
        assert_eq!(out.status.code(), Some(0), "trial {trial}: {}", String::from_utf8_lossy(&out.stderr));
        assert_verifies(&p, &fresh, trial);
        let r = parse_applied(p.flow(&["apply", "wf.yaml", "--json", "--cache", &fresh, "--offline"]));
        assert_eq!(r.with_status("cached").len(), reference.len(), "trial {trial}: {}", r.stderr);
    }
}

/// The first of the scenarios: an apply killed alone used to leave the stage writing,
/// and the next apply's artifact held lines of both runs.
#[test]
fn a_command_stage_dies_with_its_apply_and_the_next_artifact_is_one_whole_run() {
    let p = Project::new();
    // A command stage that appends a numbered line with its shell's pid four times a second,
    // ignores SIGTERM, SIGINT and SIGHUP, and leaves a process outside its process group.
    p.fixture("slow_command");
    for seed in 0..3 {
        let delay = Duration::from_secs_f64(ChaCha8Rng::seed_from_u64(seed).random_range(0.3..1.7));
        let k = apply_killed_after(&p, &[], &[], delay, Kill::Apply(Signal::SIGKILL));
        assert!(
            k.before_the_end && k.mid_stage,
            "seed {seed}: the kill after {delay:?} did not land while the stage ran"
        );
        assert_verifies(&p, "cache", seed);
    }
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = std::fs::read_to_string(p.cache().join("artifacts").join(r.artifact("slow")).join("out.txt")).unwrap();
    let lines: Vec<(u32, &str)> =
        text.lines().map(|l| l.split_once(' ').map(|(n, pid)| (n.parse().unwrap(), pid)).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>(), "{text}");
    assert!(lines.iter().all(|l| l.1 == lines[0].1), "lines of more than one process:\n{text}");
    // The process the stage left outside its group ended with it.
    assert_all_end_within_a_second(&[], p.path(), "after a complete run");
    assert_verifies(&p, "cache", 0);
}

/// The second scenario: applies of a checkpointing pretrain killed alone used to leave their
/// trainings running into the same resume directory as the next apply's.
#[test]
fn a_training_stage_dies_with_its_apply_and_resumes_to_the_artifact_of_an_uninterrupted_run() {
    let clean = Project::new();
    clean.fixture("crash_training");
    let reference = clean.apply("wf.yaml", &[]);
    assert_eq!(reference.code, 0, "{}", reference.stderr);
    let span = Duration::from_secs_f64(reference.stage("pre")["seconds"].as_f64().unwrap());

    let p = Project::new();
    p.fixture("crash_training");
    assert_eq!(p.apply("wf.yaml", &["--target", "model"]).code, 0);
    // Each kill comes within the first quarter of what is left to train: three of them still
    // land mid-training, however far each got.
    for seed in 0..3 {
        let delay = span.mul_f64(ChaCha8Rng::seed_from_u64(seed).random_range(0.1..0.25));
        let k = apply_killed_after(&p, &[], &[], delay, Kill::Apply(Signal::SIGKILL));
        assert!(
            k.before_the_end && k.mid_stage,
            "seed {seed}: the kill after {delay:?} did not land while `pre` trained"
        );
        assert_verifies(&p, "cache", seed);
    }
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.artifact("pre"),
        reference.artifact("pre"),
        "the artifact after the kills differs from an uninterrupted run's"
    );
    assert_verifies(&p, "cache", 0);
}

/// Starts an apply of the `outlived_supervisor` fixture and waits until its stage runs, with a
/// `sleep` in its group and one outside: the apply, every process it started, the stage's shell.
fn outlived_supervisor_started(p: &Project) -> (std::process::Child, Vec<Proc>, Proc) {
    p.fixture("outlived_supervisor");
    let child = apply(p, &[], &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let marked = || glob::glob(&format!("{}/scratch/*/resume/started", p.cache().display())).unwrap().count() == 1;
    while !(marked() && stage_processes(p.path()).len() >= 3) {
        assert!(Instant::now() < deadline, "the stage never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = descendants(child.id());
    let shell = started.iter().copied().find(|proc| proc.describe().contains("`sh -c")).expect("the stage's shell");
    (child, started, shell)
}

/// The second line of defence: processes that survived their supervisor (killed on its own)
/// are found by the next apply before the stage runs again, and ended.
#[test]
fn processes_that_outlived_their_supervisor_are_ended_before_the_stage_runs_again() {
    let p = Project::new();
    let (child, started, shell) = outlived_supervisor_started(&p);
    let supervisor = parent(shell).expect("the stage's supervisor");
    assert!(started.contains(&supervisor), "the supervisor {} is not the apply's", supervisor.describe());
    // Killed on its own, the supervisor can end nothing; the apply sees its stage fail.
    kill(Pid::from_raw(supervisor.pid), Signal::SIGKILL).unwrap();
    let failed = parse_applied(child.wait_with_output().unwrap());
    assert_eq!(failed.stage("s")["reason"], "killed by signal 9", "{}", failed.stderr);
    let left = stage_processes(p.path());
    assert_eq!(left.len(), 3, "the shell and its two sleeps outlive their supervisor: {left:?}");
    assert!(left.contains(&shell), "{left:?}");

    let out = apply(&p, &[], &[]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let r = parse_applied(out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let notice = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["type"] == "notice")
        .unwrap_or_else(|| panic!("no notice: {stdout}"));
    let pids: Vec<String> = left.iter().map(|p| p.pid.to_string()).collect();
    assert_eq!(notice["stage"], "s");
    assert!(
        notice["message"].as_str().unwrap().starts_with(&format!(
            "ended 3 processes left running by an earlier attempt of this stage (pids {})",
            pids.join(", ")
        )),
        "{notice}"
    );
    assert!(left.iter().all(|p| !p.alive()), "{left:?}");
    assert_eq!(p.read(&format!("cache/artifacts/{}/x", r.artifact("s"))), "second\n");
}

/// The launcher killed on its own: the stages it started fail, saying why, and their
/// supervisors (which the apply still steers) end everything those stages started.
#[test]
fn stages_fail_and_end_with_everything_they_started_when_the_launcher_is_killed() {
    let p = Project::new();
    let (child, started, shell) = outlived_supervisor_started(&p);
    let launcher = parent(shell).and_then(parent).expect("the launcher");
    assert_eq!(parent(launcher).map(|a| a.pid), Some(child.id() as i32), "{}", launcher.describe());
    kill(Pid::from_raw(launcher.pid), Signal::SIGKILL).unwrap();
    let failed = parse_applied(child.wait_with_output().unwrap());
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert_eq!(failed.stage("s")["reason"], "the stage launcher (`flow launch`) ended while the stage ran");
    assert_all_end_within_a_second(&started, p.path(), "after the launcher was killed");
    assert_eq!(p.records(), 0);
}

/// Helpers a stage orphans are the supervisor's children (it is their subreaper): it reaps
/// each as it exits, rather than holding them as zombies until the stage ends.
#[test]
fn the_supervisor_reaps_orphaned_helpers_as_they_exit() {
    let p = Project::new();
    p.fixture("orphan_helpers");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(p.read(&format!("cache/artifacts/{}/zombies", r.artifact("helpers"))), "0\n");
}
