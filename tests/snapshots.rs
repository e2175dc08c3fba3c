//! What users read, snapshotted (insta; `tests/snapshots/`): the status lines of an apply and of
//! a cached re-apply, the diagnostics of representative malformed workflows, the reasons
//! `flow plan` gives, and `flow graph`. Times and the temporary project's path are masked;
//! digests are not — the fixtures are deterministic, so they pin the artifacts too.

use crate::util::Project;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Snapshots `$text` as `$name`, times and temporary paths masked.
macro_rules! snapshot {
    ($name:expr, $text:expr) => {{
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"\[ *[0-9]+\.[0-9]{3}s\]", "[TIME]");
        settings.add_filter(r"/tmp/\.tmp[A-Za-z0-9]+", "[PROJECT]");
        settings.bind(|| insta::assert_snapshot!($name, $text));
    }};
}

#[test]
fn status_lines_of_an_apply_a_reapply_and_a_failure() {
    // A stage's place frees when its process succeeds, before its commit, and lookups run side
    // by side: stages report in any order where the DAG allows it. A chain keeps it fixed.
    let p = Project::new();
    p.fixture("chain");
    snapshot!("apply_first", stderr(&p.flow(&["apply", "wf.yaml", "--no-progress", "--jobs", "1"])));
    snapshot!("apply_cached", stderr(&p.flow(&["apply", "wf.yaml", "--no-progress"])));
    let p = Project::new();
    p.fixture("failing_stage");
    snapshot!("apply_failing", stderr(&p.flow(&["apply", "wf.yaml", "--no-progress", "--jobs", "1"])));
}

#[test]
fn diagnostics_of_malformed_workflows() {
    for case in ["unknown_kind_with_a_typo", "unknown_parameter", "cycle", "tab_indentation", "unknown_role_of_a_kind"]
    {
        let p = Project::new();
        p.fixture_file("malformed", &format!("{case}.yaml"), "wf.yaml");
        let out = p.flow(&["apply", "wf.yaml"]);
        assert_eq!(out.status.code(), Some(2), "{case}");
        snapshot!(format!("diagnostic_{case}"), stderr(&out));
    }
}

#[test]
fn plan_reasons_after_a_parameter_a_file_and_a_command_change() {
    let p = Project::new();
    p.fixture("chain");
    assert_eq!(p.apply("wf.yaml", &[]).code, 0);
    p.write("in.txt", "2\n");
    let planned = p.flow(&["plan", "wf.yaml", "--set", "a.with.lr=1e-4"]);
    snapshot!("plan_reasons", stdout(&planned));
    let json = p.flow(&["plan", "wf.yaml", "--json"]);
    snapshot!("plan_reasons_json", stdout(&json));
}

#[test]
fn graph_as_text() {
    let p = Project::new();
    p.fixture("diamond");
    snapshot!("graph_text", stdout(&p.flow(&["graph", "wf.yaml"])));
}
