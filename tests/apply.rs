//! Caching behaviour of `flow apply`: hits, invalidation cones, early cutoff, failures.

use crate::util::{Project, fixture_text};

/// a → b → c, a → d; b has a parameter, a reads a file.
fn diamond(p: &Project) {
    p.fixture("diamond");
}

#[test]
fn apply_twice_runs_nothing_the_second_time() {
    let p = Project::new();
    diamond(&p);
    let first = p.apply("wf.yaml", &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.with_status("ran"), ["a", "b", "c", "d"]);
    assert_eq!(p.runs(), ["a", "b", "c", "d"]);
    assert_eq!(p.read(&format!("cache/artifacts/{}/out.txt", first.artifact("c"))), "hello\nx=1\n");

    p.clear_runs();
    let second = p.apply("wf.yaml", &[]);
    assert_eq!(second.code, 0);
    assert_eq!(second.with_status("cached"), ["a", "b", "c", "d"]);
    assert!(p.runs().is_empty(), "nothing may run: {:?}", p.runs());
    assert_eq!(second.summary["type"], "summary");
    assert_eq!((second.summary["ran"].as_u64(), second.summary["cached"].as_u64()), (Some(0), Some(4)));
    for s in ["a", "b", "c", "d"] {
        assert_eq!(first.artifact(s), second.artifact(s));
    }
}

#[test]
fn a_changed_parameter_reruns_exactly_its_downstream_cone() {
    let p = Project::new();
    diamond(&p);
    assert_eq!(p.apply("wf.yaml", &[]).code, 0);
    p.clear_runs();
    let r = p.apply("wf.yaml", &["--set", "b.with.x=2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.with_status("ran"), ["b", "c"]);
    assert_eq!(r.with_status("cached"), ["a", "d"]);
    assert_eq!(p.runs(), ["b", "c"]);

    // The same change made in the YAML is the same fingerprint: nothing runs.
    p.clear_runs();
    let yaml = p.read("wf.yaml").replace("{x: 1}", "{x: 2}");
    p.write("wf.yaml", &yaml);
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.with_status("cached"), ["a", "b", "c", "d"]);
}

#[test]
fn a_changed_input_file_reruns_its_cone() {
    let p = Project::new();
    diamond(&p);
    assert_eq!(p.apply("wf.yaml", &[]).code, 0);
    p.clear_runs();
    p.write("data.txt", "changed\n");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.with_status("ran"), ["a", "b", "c", "d"]);
    // Back to the old content: every artifact is still in the store.
    p.clear_runs();
    p.write("data.txt", "hello\n");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.with_status("cached"), ["a", "b", "c", "d"]);
    assert!(p.runs().is_empty());
}

#[test]
fn identical_output_after_a_change_stops_the_invalidation() {
    let p = Project::new();
    p.fixture("early_cutoff");
    let first = p.apply("wf.yaml", &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    p.clear_runs();
    let r = p.apply("wf.yaml", &["--set", "up.with.ignored=2"]);
    assert_eq!(r.status("up"), "ran");
    assert_eq!(r.status("down"), "cached", "same bytes upstream must not re-run downstream");
    assert_eq!(r.artifact("up"), first.artifact("up"));
    assert_ne!(r.stage("up")["fingerprint"], first.stage("up")["fingerprint"]);
    assert_eq!(p.runs(), ["up"]);
}

fn failing(p: &Project, fail: bool) {
    p.fixture(if fail { "failing_stage" } else { "fixed_stage" });
}

#[test]
fn a_failing_stage_skips_its_dependents_and_records_nothing() {
    let p = Project::new();
    failing(&p, true);
    let r = p.apply("wf.yaml", &["--keep-going"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.status("bad"), "failed");
    assert_eq!(r.status("after"), "skipped");
    assert_eq!(r.status("other"), "ran", "--keep-going lets independent stages finish");
    assert!(r.stage("bad")["fingerprint"].is_string());
    assert!(r.stage("bad")["artifact"].is_null());
    assert_eq!(r.stage("bad")["log_tail"][0], "boom");
    assert_eq!(p.records(), 2, "only root and other have records");
    assert_eq!(r.summary["failed"], 1);
    assert_eq!(r.summary["skipped"], 1);

    // Human output shows the log tail.
    let out = p.flow(&["apply", "wf.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("FAILED") && stderr.contains("boom"), "{stderr}");

    p.clear_runs();
    failing(&p, false);
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.with_status("ran"), ["after", "bad"]);
    assert_eq!(r.with_status("cached"), ["other", "root"]);
}

#[test]
fn without_keep_going_nothing_new_starts_after_a_failure() {
    let p = Project::new();
    p.fixture("failure_with_gate");
    let r = p.apply("wf.yaml", &["--jobs", "2"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.status("bad"), "failed");
    assert!(r.stage("bad")["reason"].as_str().unwrap().contains("code 3"));
    assert_eq!(r.status("later"), "skipped");
    assert!(p.runs().is_empty());
}

#[test]
fn force_reruns_a_cached_stage_and_downstream_follows_by_content() {
    let p = Project::new();
    diamond(&p);
    assert_eq!(p.apply("wf.yaml", &[]).code, 0);
    p.clear_runs();
    let r = p.apply("wf.yaml", &["--force", "b"]);
    assert_eq!(r.with_status("ran"), ["b"]);
    assert_eq!(r.with_status("cached"), ["a", "c", "d"]);
}

#[test]
fn targets_select_a_stage_and_its_dependencies() {
    let p = Project::new();
    diamond(&p);
    let r = p.apply("wf.yaml", &["--target", "c"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.with_status("ran"), ["a", "b", "c"]);
    assert_eq!(r.stages.len(), 3);
}

#[test]
fn list_roles_and_parameters_reach_the_command() {
    let p = Project::new();
    p.fixture("roles_and_parameters");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(p.read(&format!("cache/artifacts/{}/all", r.artifact("join"))), "y\nx\n2 hi 3 [1,2] hello join\n");
}

#[test]
fn a_stage_writing_an_escaping_symlink_fails_and_is_not_cached() {
    let p = Project::new();
    p.fixture("escaping_symlink");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stage("s")["reason"].as_str().unwrap().contains("link target is absolute"), "{:?}", r.stage("s"));
    assert_eq!(p.records(), 0);
}

/// A command that exits 0 without leaving what its `outputs:` declares failed: nothing is
/// recorded, and once it does write them the stage is cached.
#[test]
fn a_stage_that_exits_0_without_its_declared_outputs_fails_and_is_not_cached() {
    let p = Project::new();
    let wf = |run: &str| {
        format!("version: 1\nstages:\n  s:\n    kind: command\n    run: '{run}'\n    outputs: [model.pt, shards/]\n")
    };
    for (run, why) in [
        ("true", "declared output `model.pt` is missing"),
        ("touch $FLOW_OUT/model.pt; mkdir $FLOW_OUT/shards", "declared output `model.pt` is empty"),
        ("echo w > $FLOW_OUT/model.pt; mkdir $FLOW_OUT/shards", "declared output `shards` is empty"),
        ("echo w > $FLOW_OUT/model.pt; echo 1 > $FLOW_OUT/shards", ""),
    ] {
        p.write("wf.yaml", &wf(run));
        let r = p.apply("wf.yaml", &[]);
        if why.is_empty() {
            assert_eq!(r.code, 0, "a file named `shards` is non-empty output: {}", r.stderr);
            continue;
        }
        assert_eq!(r.code, 1, "{run}: {}", r.stderr);
        assert_eq!(r.stage("s")["reason"].as_str(), Some(why), "{run}");
        assert_eq!(p.records(), 0, "{run}");
    }
    p.write("wf.yaml", &wf("echo w > $FLOW_OUT/model.pt; mkdir $FLOW_OUT/shards; echo 1 > $FLOW_OUT/shards/0"));
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(p.records(), 2);
    assert_eq!(p.apply("wf.yaml", &[]).stage("s")["status"], "cached");
    // What a run must leave is part of the stage: declaring less re-runs it, and says why.
    p.write(
        "wf.yaml",
        &wf("echo w > $FLOW_OUT/model.pt; mkdir $FLOW_OUT/shards; echo 1 > $FLOW_OUT/shards/0")
            .replace(", shards/", ""),
    );
    let plan = p.flow(&["plan", "wf.yaml"]);
    assert!(String::from_utf8_lossy(&plan.stdout).contains("declared outputs changed"), "{plan:?}");
}

/// `$FLOW_RESUME` survives a failed or interrupted run of the same fingerprint, so a long
/// command can continue from its own checkpoints; it is gone once the artifact is committed.
#[test]
fn flow_resume_keeps_a_commands_checkpoints_until_it_succeeds() {
    let p = Project::new();
    p.fixture("resume_attempts");
    for attempt in 1..=2 {
        let r = p.apply("wf.yaml", &[]);
        assert_eq!(r.code, 1, "attempt {attempt}: {}", r.stderr);
    }
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(p.read(&format!("cache/artifacts/{}/n", r.artifact("s"))), "3\n");
    let resume = p.read("resume-dir");
    assert!(resume.trim().ends_with("/resume") && resume.contains("/scratch/"), "{resume}");
    assert!(!std::path::Path::new(resume.trim()).exists(), "the scratch directory goes once the artifact is committed");
}

/// Only what a stage leaves in `$FLOW_OUT` is its output: files it writes in its working
/// directory, beside `$FLOW_OUT` or above it are not picked up.
#[test]
fn files_written_outside_flow_out_are_not_part_of_the_artifact() {
    let p = Project::new();
    p.fixture("stray_files");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = p.cache().join("artifacts").join(r.artifact("s"));
    fn walk(dir: &std::path::Path, root: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                walk(&path, root, found);
            }
        }
    }
    let mut files = vec![];
    walk(&dir, &dir, &mut files);
    files.sort();
    assert_eq!(files, ["d", "d/w", "v"]);
    assert_eq!(p.read("stray"), "cwd\n");
}

#[test]
fn the_lock_file_records_each_stage() {
    let p = Project::new();
    diamond(&p);
    let r = p.apply("wf.yaml", &[]);
    let lock: serde_json::Value = serde_json::from_str(&p.read("wf.lock")).unwrap();
    for s in ["a", "b", "c", "d"] {
        assert_eq!(lock["stages"][s]["artifact"].as_str().unwrap(), r.artifact(s));
        assert_eq!(lock["stages"][s]["fingerprint"], r.stage(s)["fingerprint"]);
    }
    assert_eq!(lock["stages"]["b"]["recipe"]["params"]["x"], 1);
    assert_eq!(lock["stages"]["c"]["needs"]["in"][0], "b");
}

#[test]
fn stage_and_workflow_names_do_not_enter_the_fingerprint() {
    let p = Project::new();
    p.fixture("renamed_stage");
    let a = p.apply("one.yaml", &[]);
    let b = p.apply("two.yaml", &[]);
    assert_eq!(b.status("renamed"), "cached");
    assert_eq!(a.stage("first")["fingerprint"], b.stage("renamed")["fingerprint"]);
}

#[test]
fn after_a_failure_with_one_job_no_queued_stage_starts() {
    let p = Project::new();
    p.fixture("failure_with_one_job");
    let r = p.apply("wf.yaml", &["--jobs", "1"]);
    assert_eq!(r.code, 1);
    let ran = r.with_status("ran").len();
    assert_eq!(p.runs().len(), ran, "the log and the report agree");
    assert!(ran < 5, "queued stages must not start once a failure stops the run: {:?}", r.with_status("ran"));
    assert_eq!(r.with_status("skipped").len() + ran + 1, 6);
}

#[test]
fn passed_through_environment_is_fingerprinted_but_never_written_in_clear() {
    let p = Project::new();
    p.fixture("secret_env");
    let run = |token: &str| {
        crate::util::parse_applied(p.command(&["apply", "wf.yaml", "--json"]).env("API_TOKEN", token).output().unwrap())
    };
    let a = run("hunter2");
    assert_eq!(a.code, 0, "{}", a.stderr);
    let lock = p.read("wf.lock");
    assert!(!lock.contains("hunter2"), "the secret leaked into the lock file:\n{lock}");
    assert!(lock.contains(&format!("blake3:{}", flow::hash::Digest::of(b"hunter2"))));
    assert_eq!(run("hunter2").status("s"), "cached");
    assert_eq!(run("other").status("s"), "ran");
}

#[test]
fn the_record_keeps_the_stage_device_as_provenance() {
    let p = Project::new();
    p.fixture("device_provenance");
    let r = p.apply("wf.yaml", &[]);
    let fp = r.stage("s")["fingerprint"].as_str().unwrap().to_owned();
    let record: serde_json::Value = serde_json::from_str(&p.read(&format!("cache/ac/{fp}.json"))).unwrap();
    assert_eq!(record["device"], "cpu");
    assert_eq!(record["stage"], "s");
    // The device is provenance, not part of the key.
    p.write("wf.yaml", &fixture_text("device_provenance", "flow.yaml").replace("{device: cpu}", "{device: auto}"));
    assert_eq!(p.apply("wf.yaml", &[]).status("s"), "cached");
}

#[test]
fn symlink_chains_that_escape_on_disk_are_refused() {
    let p = Project::new();
    p.fixture("escaping_symlink_chain");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stage("s")["reason"].as_str().unwrap().contains("link escapes"), "{:?}", r.stage("s"));
    assert_eq!(p.records(), 0);
    assert!(!p.cache().join("cas").read_dir().unwrap().any(|_| true), "nothing enters the store");
}
