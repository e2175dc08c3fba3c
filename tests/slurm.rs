//! Stages as batch jobs on a real one-node Slurm cluster, which `scripts/test.sh` starts
//! (`scripts/slurm.sh`) and stops. The tests are `#[ignore]`d so that a bare `cargo test`
//! without the cluster skips them visibly. Job names are `flow:<stage>`; each test uses its own
//! stage names, since the tests share the cluster.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Applied, Project, fixture_text, parse_applied};

fn cluster() {
    assert!(
        std::env::var_os("FLOW_TEST_SLURM").is_some(),
        "run the Slurm tests through scripts/test.sh, which starts the cluster"
    );
}

/// `scontrol show job -o JOB` as a map of its fields.
fn job(id: &str) -> std::collections::BTreeMap<String, String> {
    let out = Command::new("scontrol").args(["show", "job", "-o", id]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The id of the queued or running job named `flow:<stage>`, once there is one.
fn job_named(stage: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("squeue").args(["-h", "-o", "%i", "-n", &format!("flow:{stage}")]).output().unwrap();
        if let Some(id) = String::from_utf8_lossy(&out.stdout).lines().next() {
            return id.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no job for stage `{stage}` appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every JSON event of an apply's output.
fn events(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The job ids an apply submitted, by stage.
fn submitted(events: &[Value]) -> std::collections::BTreeMap<String, String> {
    events
        .iter()
        .filter(|e| e["type"] == "stage_submitted")
        .map(|e| (e["stage"].as_str().unwrap().to_owned(), e["job"].as_str().unwrap().to_owned()))
        .collect()
}

fn applied(out: std::process::Output) -> (Applied, Vec<Value>) {
    let evs = events(&out.stdout);
    (parse_applied(out), evs)
}

/// Command and training stages; `executor` is the workflow's default executor (the fixture's is
/// `slurm`).
fn workflow(executor: &str) -> String {
    fixture_text("slurm_pipeline", "flow.yaml").replace("executor: slurm}", &format!("executor: {executor}}}"))
}

/// The same workflow through Slurm and here gives the same artifacts; each stage is one job,
/// independent stages are submitted together even with one local slot, and a second apply
/// submits nothing.
#[test]
#[ignore = "needs the Slurm cluster scripts/test.sh starts"]
fn a_workflow_through_slurm_gives_the_local_artifacts_and_cached_stages_submit_nothing() {
    cluster();
    let local = Project::new();
    local.write("wf.yaml", &workflow("local"));
    let reference = local.apply("wf.yaml", &[]);
    assert_eq!(reference.code, 0, "{}", reference.stderr);

    let p = Project::new();
    p.write("wf.yaml", &workflow("slurm"));
    let (r, evs) = applied(p.flow(&["apply", "wf.yaml", "--json", "--jobs", "1"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let jobs = submitted(&evs);
    assert_eq!(jobs.len(), 7, "one job per stage: {jobs:?}");
    for (stage, id) in &jobs {
        assert_eq!(
            r.stage(stage)["fingerprint"],
            reference.stage(stage)["fingerprint"],
            "the executor is not part of the fingerprint"
        );
        assert_eq!(r.artifact(stage), reference.artifact(stage), "stage {stage}");
        let j = job(id);
        assert_eq!((j["JobState"].as_str(), j["JobName"].as_str()), ("COMPLETED", format!("flow:{stage}").as_str()));
    }
    // Both two-second stages were in Slurm's hands before either finished, with `--jobs 1`.
    let at = |pred: &dyn Fn(&Value) -> bool| evs.iter().position(pred).unwrap();
    let second = at(&|e| e["type"] == "stage_submitted" && e["stage"] == "sl_upper")
        .max(at(&|e| e["type"] == "stage_submitted" && e["stage"] == "sl_words"));
    let first_done = at(&|e| e["type"] == "stage" && (e["stage"] == "sl_upper" || e["stage"] == "sl_words"));
    assert!(second < first_done, "independent stages are submitted together");
    let progress = evs.iter().filter(|e| e["type"] == "stage_progress" && e["stage"] == "sl_pre").count();
    assert!(progress >= 1, "progress of a built-in stage is read from the job's log");

    let (again, evs) = applied(p.flow(&["apply", "wf.yaml", "--json"]));
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.with_status("cached").len(), 7);
    assert!(submitted(&evs).is_empty(), "cached stages never reach Slurm");
}

/// A job that exits non-zero, one past its time limit and one cancelled in Slurm each fail
/// their stage with what happened, and record nothing.
#[test]
#[ignore = "needs the Slurm cluster scripts/test.sh starts"]
fn failed_timed_out_and_cancelled_jobs_fail_their_stages() {
    cluster();
    let p = Project::new();
    p.fixture("slurm_failures");
    let child = p
        .command(&["apply", "wf.yaml", "--json", "--keep-going"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let victim = job_named("sl_cancelled");
    wait_for("the job to run", Duration::from_secs(60), || job(&victim)["JobState"] == "RUNNING");
    assert!(Command::new("scancel").arg(&victim).status().unwrap().success());
    let (r, evs) = applied(child.wait_with_output().unwrap());
    assert_eq!(r.code, 1, "{}", r.stderr);
    let jobs = submitted(&evs);
    let reason = |s: &str| r.stage(s)["reason"].as_str().unwrap().to_owned();
    assert_eq!(reason("sl_fails"), "exited with code 3");
    assert!(r.stage("sl_fails")["log_tail"].to_string().contains("about to fail"), "{:?}", r.stage("sl_fails"));
    assert_eq!(reason("sl_slow"), format!("Slurm job {} exceeded its time limit (00:01:00)", jobs["sl_slow"]));
    assert_eq!(reason("sl_cancelled"), format!("Slurm job {victim} was cancelled"));
    assert_eq!(job(&jobs["sl_slow"])["JobState"], "TIMEOUT");
    assert_eq!(p.records(), 0);
}

/// Ctrl-C on `flow apply` cancels the jobs it submitted: they end CANCELLED, nothing is
/// recorded, and the run exits 130.
#[test]
#[ignore = "needs the Slurm cluster scripts/test.sh starts"]
fn ctrl_c_cancels_the_submitted_jobs() {
    cluster();
    let p = Project::new();
    p.fixture("slurm_waits");
    let child =
        p.command(&["apply", "wf.yaml", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the job to start", Duration::from_secs(60), || p.path().join("started").exists());
    let id = job_named("sl_waits");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let (r, _) = applied(child.wait_with_output().unwrap());
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert_eq!(r.status("sl_waits"), "failed");
    assert_eq!(job(&id)["JobState"], "CANCELLED", "flow cancels its job when interrupted");
    assert_eq!(p.records(), 0);
}

/// A job whose `flow apply` was killed (SIGKILL: no chance to cancel it) keeps running; the
/// next apply of the stage cancels it before starting its own, so two jobs never write one
/// output, and the new job continues from what the old one kept in `$FLOW_RESUME`.
#[test]
#[ignore = "needs the Slurm cluster scripts/test.sh starts"]
fn a_job_left_by_a_killed_apply_is_cancelled_before_the_stage_runs_again() {
    cluster();
    let p = Project::new();
    p.fixture("slurm_orphan");
    let mut first =
        p.command(&["apply", "wf.yaml", "--json"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("the first job to start", Duration::from_secs(60), || p.path().join("started").exists());
    let orphan = job_named("sl_orphan");
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(job(&orphan)["JobState"], "RUNNING", "killing flow leaves its job running");
    p.write("second", "");
    let (r, evs) = applied(p.flow(&["apply", "wf.yaml", "--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(job(&orphan)["JobState"], "CANCELLED");
    assert!(
        evs.iter().any(|e| e["type"] == "notice"
            && e["message"].as_str().unwrap().starts_with(&format!("cancelled Slurm job {orphan},"))),
        "{evs:?}"
    );
    assert_ne!(submitted(&evs)["sl_orphan"], orphan);
    assert_eq!(p.read(&format!("cache/artifacts/{}/attempts", r.artifact("sl_orphan"))), "attempt\nattempt\n");
}

/// A training job that Slurm requeues (as on preemption or a node failure) starts again,
/// resumes from the checkpoint in the store's scratch directory — not from step 1 — and
/// produces the artifact of an uninterrupted run.
#[test]
#[ignore = "needs the Slurm cluster scripts/test.sh starts"]
fn a_requeued_training_job_resumes_from_its_checkpoint_to_the_same_artifact() {
    cluster();
    let wf = |executor: &str| {
        fixture_text("slurm_requeue", "flow.yaml").replace("executor: slurm\n", &format!("executor: {executor}\n"))
    };
    let local = Project::new();
    local.write("wf.yaml", &wf("local"));
    let reference = local.apply("wf.yaml", &[]);
    assert_eq!(reference.code, 0, "{}", reference.stderr);

    let p = Project::new();
    p.write("wf.yaml", &wf("slurm"));
    assert_eq!(p.apply("wf.yaml", &["--target", "sq_model"]).code, 0);
    let child =
        p.command(&["apply", "wf.yaml", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let checkpoint = || {
        std::fs::read_dir(p.cache().join("scratch"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| d.path().join("resume/checkpoint/state.json").exists())
    };
    wait_for("a checkpoint", Duration::from_secs(120), checkpoint);
    let id = job_named("sq_pre");
    assert!(Command::new("scontrol").args(["requeue", &id]).status().unwrap().success());
    // Slurm holds a requeued job back for about two minutes; let it start again now.
    wait_for("the job to be requeued", Duration::from_secs(60), || {
        job(&id)["Restarts"] == "1" && job(&id)["JobState"] == "PENDING"
    });
    assert!(
        Command::new("scontrol").args(["update", &format!("JobId={id}"), "StartTime=now"]).status().unwrap().success()
    );
    let (r, evs) = applied(child.wait_with_output().unwrap());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.artifact("sq_pre"),
        reference.artifact("sq_pre"),
        "the resumed artifact differs from an uninterrupted run"
    );
    assert!(
        evs.iter()
            .any(|e| e["type"] == "notice"
                && e["message"].as_str().unwrap().contains(&format!("Slurm requeued job {id}"))),
        "the requeue is reported"
    );
    // In the job's log, after Slurm's requeue line, the second attempt's first step follows a
    // checkpoint: it is not step 1.
    let fp = r.stage("sq_pre")["fingerprint"].as_str().unwrap().to_owned();
    let log = p.read(&format!("cache/logs/{fp}.log"));
    let after = log.split("DUE TO JOB REQUEUE").nth(1).unwrap_or_else(|| panic!("no requeue in the log:\n{log}"));
    let first: serde_json::Value = after
        .lines()
        .filter_map(|l| l.strip_prefix("@flow/1 "))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|p| p.get("device").is_none())
        .expect("the second attempt reported progress");
    assert!(first["step"].as_u64().unwrap() > 1, "the requeued job resumes from a checkpoint: {first}");
}

/// `workflows/cluster.yaml` runs as written on the cluster — its two-task stage starts both
/// tasks with `srun` — and gives the artifacts it gives here with the local executor.
#[test]
#[ignore = "needs the Slurm cluster scripts/test.sh starts"]
fn the_cluster_example_runs_as_written_and_matches_the_local_executor() {
    cluster();
    let example =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/cluster.yaml"))
            .unwrap();
    let p = Project::new();
    p.write("workflows/cluster.yaml", &example);
    let (r, evs) = applied(p.flow(&["apply", "workflows/cluster.yaml", "--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(submitted(&evs).len(), 6);
    let shards = p.cache().join("artifacts").join(r.artifact("shards"));
    for task in 0..2 {
        assert_eq!(
            std::fs::read_to_string(shards.join(format!("task-{task}.txt"))).unwrap(),
            format!("task {task} of 2\n")
        );
    }
    let local = p.apply(
        "workflows/cluster.yaml",
        &["--set", "defaults.executor=local", "--cache", "local", "--target", "score"],
    );
    assert_eq!(local.code, 0, "{}", local.stderr);
    for stage in ["text", "data", "model", "train", "score"] {
        assert_eq!(local.artifact(stage), r.artifact(stage), "stage {stage}");
    }
}
