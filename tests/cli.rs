//! The other commands: plan (and its reasons), graph, show, checkout, Ctrl-C.

use std::time::{Duration, Instant};

use crate::util::Project;

fn chain(p: &Project) {
    p.fixture("chain");
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn plan_explains_why_each_stage_will_run() {
    let p = Project::new();
    chain(&p);
    let out = stdout(&p.flow(&["plan", "wf.yaml"]));
    assert!(out.contains("will run a: no record"), "{out}");
    assert!(out.contains("will run b: input stage `a` (src) will run"), "{out}");
    assert_eq!(p.apply("wf.yaml", &[]).code, 0);

    let out = stdout(&p.flow(&["plan", "wf.yaml"]));
    assert!(out.contains("cached a") && out.contains("cached b"), "{out}");
    assert!(out.contains("0 will run, 2 cached"), "{out}");

    let out = stdout(&p.flow(&["plan", "wf.yaml", "--set", "a.with.lr=1e-4"]));
    assert!(out.contains("will run a: with.lr changed: 0.001 → 0.0001"), "{out}");
    p.write("in.txt", "2\n");
    let out = stdout(&p.flow(&["plan", "wf.yaml"]));
    assert!(out.contains("will run a: file `in.txt` changed"), "{out}");

    let json = stdout(&p.flow(&["plan", "wf.yaml", "--json"]));
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["stage"], "a");
    assert_eq!(first["status"], "will_run");
    assert_eq!(first["reasons"][0]["reason"], "file_changed");
}

#[test]
fn graph_draws_text_dot_and_mermaid() {
    let p = Project::new();
    chain(&p);
    assert_eq!(stdout(&p.flow(&["graph", "wf.yaml"])), "a (command)\nb (command) <- src: a\n");
    insta::assert_snapshot!(stdout(&p.flow(&["graph", "wf.yaml", "--format", "dot"])), @r#"
    digraph workflow {
      rankdir=LR;
      "a" [label="a\n(command)"];
      "b" [label="b\n(command)"];
      "a" -> "b" [label="src"];
    }
    "#);
    insta::assert_snapshot!(stdout(&p.flow(&["graph", "wf.yaml", "--format", "mermaid"])), @r#"
    flowchart LR
      s0["a (command)"]
      s1["b (command)"]
      s0 -->|src| s1
    "#);
}

#[test]
fn show_and_checkout_give_the_current_artifact() {
    let p = Project::new();
    chain(&p);
    let out = p.flow(&["show", "wf.yaml", "b"]);
    assert_eq!(out.status.code(), Some(1), "nothing built yet");
    let r = p.apply("wf.yaml", &[]);
    let out = stdout(&p.flow(&["show", "wf.yaml", "b"]));
    assert!(out.contains(&format!("artifact     {}", r.artifact("b"))), "{out}");
    assert!(out.contains("files        1 (2 B)") && out.contains("b\n"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&p.flow(&["show", "wf.yaml", "b", "--json"]))).unwrap();
    assert_eq!(json["record"]["artifact"], r.artifact("b"));
    assert_eq!(json["files"][0]["path"], "b");

    let to = p.path().join("exported");
    let out = p.flow(&["checkout", "wf.yaml", "b", "--to", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(to.join("b")).unwrap(), "1\n");
    std::fs::write(to.join("b"), "writable\n").expect("a checkout is an ordinary writable copy");
    let again = p.flow(&["checkout", "wf.yaml", "b", "--to", to.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "refuses a non-empty destination");
}

/// Ctrl-C, SIGTERM and SIGHUP (a closed terminal) each stop the run: the stage — here one that
/// ignores SIGTERM, so it takes the SIGKILL after the grace period — and what it started end,
/// nothing is committed, and the apply exits 130.
#[test]
fn ctrl_c_sigterm_and_sighup_stop_the_run_and_commit_nothing() {
    use nix::sys::signal::Signal;
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let p = Project::new();
        p.fixture("ignores_term");
        let child = p
            .command(&["apply", "wf.yaml", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !p.path().join("started").exists() {
            assert!(Instant::now() < deadline, "the stage never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = crate::util::descendants(child.id());
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let out = child.wait_with_output().unwrap();
        crate::util::assert_all_end_within_a_second(&started, p.path(), &format!("{signal}"));
        let r = crate::util::parse_applied(out);
        assert_eq!(r.code, 130, "{signal}: {}", r.stderr);
        assert_eq!(r.status("slow"), "failed");
        assert_eq!(r.summary["interrupted"], true);
        assert_eq!(p.records(), 0);
        let plan = stdout(&p.flow(&["plan", "wf.yaml"]));
        assert!(plan.contains("will run slow"), "{plan}");
    }
}

/// `--device` overrides every stage's device without touching fingerprints; a build without
/// CUDA asked for a GPU fails the stages that need one and says how to build with CUDA; the
/// run record names the device a stage actually used (`auto` here is the CPU).
#[test]
fn device_choice_is_recorded_and_a_cpu_build_explains_how_to_get_cuda() {
    let p = Project::new();
    p.fixture("tiny_init");
    if cfg!(not(feature = "cuda")) {
        let r = p.apply("wf.yaml", &["--device", "cuda"]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let why = r.stage("model")["reason"].as_str().unwrap().to_owned();
        assert!(r.stage("model")["log_tail"].to_string().contains("--features cuda"), "{why}: {:?}", r.stage("model"));
        assert_eq!(r.status("data"), "ran", "stages that use no device are not affected");
    }
    let r = p.apply("wf.yaml", &["--device", "cpu"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let again = p.apply("wf.yaml", &["--device", "auto"]);
    assert_eq!(again.with_status("cached").len(), 3, "the device is not part of the fingerprint");
    let show = stdout(&p.flow(&["show", "wf.yaml", "model"]));
    assert!(show.contains("device cpu,"), "{show}");
    let out = p.flow(&["apply", "wf.yaml", "--device", "gpu"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("devices are `cpu`, `cuda`, `cuda:N` or `auto`"));
}

/// `flow gc --remote` deletes: when FLOW_REMOTE and the workflow's `store.remote` name two
/// remotes, it asks instead of choosing.
#[test]
fn gc_on_the_remote_refuses_two_different_remotes() {
    let p = Project::new();
    let configured = format!("file://{}/configured", p.path().display());
    p.write(
        "wf.yaml",
        &format!("version: 1\nstore: {{remote: '{configured}'}}\nstages:\n  a: {{kind: command, run: 'true'}}\n"),
    );
    let other = format!("file://{}/other", p.path().display());
    let out = p.command(&["gc", "wf.yaml", "--remote", "--dry-run"]).env("FLOW_REMOTE", &other).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("names `{other}`, but the workflow's `store.remote` is `{configured}`")), "{err}");
    // Named once, either way, it runs.
    let out = p.command(&["gc", "wf.yaml", "--remote", "--dry-run", "--remote-url", &configured]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A member of a matrix stage is fingerprinted exactly as the stage written by hand with its
/// values (pinned), so a sweep reuses what single runs already built and the other way round.
#[test]
fn a_matrix_member_has_the_fingerprint_of_the_same_stage_written_by_hand() {
    let fingerprints = |yaml: &str| -> Vec<(String, String)> {
        let p = Project::new();
        p.write("wf.yaml", yaml);
        let out = p.flow(&["plan", "wf.yaml", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["stage"].is_string())
            .map(|v| (v["stage"].as_str().unwrap().to_owned(), v["fingerprint"].as_str().unwrap().to_owned()))
            .collect()
    };
    let sweep = fingerprints(
        "version: 1\nstages:\n  a:\n    kind: command\n    run: echo $FLOW_WITH_n > $FLOW_OUT/n\n    matrix: {n: [1, 2]}\n",
    );
    let single = fingerprints(
        "version: 1\nstages:\n  one:\n    kind: command\n    run: echo $FLOW_WITH_n > $FLOW_OUT/n\n    with: {n: 2}\n",
    );
    let member = sweep.iter().find(|(s, _)| s == "a@n=2").expect("the member is planned");
    assert_eq!(sweep.len(), 2);
    assert_eq!(member.1, single[0].1);
    assert_eq!(single[0].1, "29528343381cecdedbd4e03a4b5ac517bd962c4ee1b3d433e2f23be276f5ce4a");
}
