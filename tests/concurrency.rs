//! Concurrent `flow apply` processes — on one cache, or on separate caches sharing a remote —
//! never run the same fingerprint twice.

use crate::util::{Project, parse_applied};

#[test]
fn two_applies_started_together_run_each_stage_once() {
    let p = Project::new();
    p.fixture("six_stage_ladder");
    let a = p.command(&["apply", "wf.yaml", "--json", "--jobs", "2"]).spawn_output();
    let b = p.command(&["apply", "wf.yaml", "--json", "--jobs", "2"]).spawn_output();
    let (a, b) = (parse_applied(a.join().unwrap()), parse_applied(b.join().unwrap()));
    assert_eq!((a.code, b.code), (0, 0), "{}\n{}", a.stderr, b.stderr);
    let expected: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    assert_eq!(p.runs(), expected, "every stage exactly once across both processes");
    let ran = a.with_status("ran").len() + b.with_status("ran").len();
    assert_eq!(ran, 6);
    for i in 0..6 {
        let s = format!("s{i}");
        assert_eq!(a.artifact(&s), b.artifact(&s));
    }
}

/// Eight workflows with different stage names over one shared chain of six stages, plus one
/// stage of their own each, applied at once: on one cache (`remote: None`) or each on its own
/// cache publishing to one remote.
fn eight_overlapping_applies(remote: Option<&str>) {
    const N: usize = 8;
    let p = Project::new();
    for w in 0..N {
        let mut yaml = String::from("version: 1\nstages:\n");
        for i in 0..6 {
            let needs = if i > 0 { format!("    needs: {{in: w{w}s{}}}\n", i - 1) } else { String::new() };
            yaml.push_str(&format!("  w{w}s{i}:\n    kind: command\n{needs}    run: 'echo s{i} >> runs.log; sleep 0.1; echo {i} > $FLOW_OUT/v'\n"));
        }
        yaml.push_str(&format!("  w{w}own:\n    kind: command\n    needs: {{in: w{w}s5}}\n    run: 'echo own{w} >> runs.log; cat $FLOW_IN_in/v > $FLOW_OUT/v'\n"));
        p.write(&format!("wf{w}.yaml"), &yaml);
    }
    let applies: Vec<_> = (0..N)
        .map(|w| {
            let file = format!("wf{w}.yaml");
            let mut args = vec!["apply", &file, "--json", "--jobs", "2"];
            let cache = format!("c{w}");
            if let Some(url) = remote {
                args.extend(["--cache", &cache, "--push", "--remote", url]);
            }
            let mut command = p.command(&args);
            command.env("FLOW_LEASE_SECONDS", "5");
            command.spawn_output()
        })
        .collect();
    let results: Vec<_> = applies.into_iter().map(|a| parse_applied(a.join().unwrap())).collect();
    for r in &results {
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let mut expected: Vec<String> = (0..6).map(|i| format!("s{i}")).chain((0..N).map(|w| format!("own{w}"))).collect();
    expected.sort();
    assert_eq!(p.runs(), expected, "every fingerprint exactly once across {N} processes");
    let locks: Vec<serde_json::Value> =
        (0..N).map(|w| serde_json::from_str(&p.read(&format!("wf{w}.lock"))).unwrap()).collect();
    for i in 0..6 {
        let artifact = |w: usize| locks[w]["stages"][format!("w{w}s{i}")]["artifact"].clone();
        assert!(artifact(0).is_string());
        assert!((1..N).all(|w| artifact(w) == artifact(0)), "the lock files disagree on stage {i}");
    }
}

#[test]
fn eight_overlapping_applies_on_one_cache_run_each_fingerprint_once() {
    eight_overlapping_applies(None);
}

#[test]
fn eight_overlapping_applies_sharing_a_remote_run_each_fingerprint_once() {
    let dir = tempfile::tempdir().unwrap();
    eight_overlapping_applies(Some(&format!("file://{}", dir.path().display())));
}

trait SpawnOutput {
    fn spawn_output(self) -> std::thread::JoinHandle<std::process::Output>;
}

impl SpawnOutput for std::process::Command {
    fn spawn_output(mut self) -> std::thread::JoinHandle<std::process::Output> {
        let child = self.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        std::thread::spawn(move || child.wait_with_output().unwrap())
    }
}
