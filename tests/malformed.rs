//! Malformed workflows: each is rejected with exit 2 and a message that names the location,
//! before anything runs or the store is touched.

use crate::util::Project;

/// (name, workflow file in `tests/fixtures/malformed/`, expected message fragment, expected `file:line:col` or
/// `file` prefix)
const CASES: &[(&str, &str, &str, &str)] = &[
    ("yaml syntax", "yaml_syntax.yaml", "", "wf.yaml:"),
    ("not a mapping", "not_a_mapping.yaml", "must be a mapping", "wf.yaml:1:1"),
    ("missing version", "missing_version.yaml", "missing `version`", "wf.yaml:1:1"),
    ("bad version", "bad_version.yaml", "unsupported workflow version", "wf.yaml:1:10"),
    ("unknown top key", "unknown_top_key.yaml", "unknown key `stagez`", "wf.yaml:2:1"),
    ("missing stages", "missing_stages.yaml", "missing `stages`", "wf.yaml:1:1"),
    ("empty stages", "empty_stages.yaml", "`stages` is empty", "wf.yaml:2:9"),
    ("unknown stage key", "unknown_stage_key.yaml", "unknown key `kindd`", "wf.yaml:6:5"),
    ("unknown kind", "unknown_kind.yaml", "unknown kind `comand`", "wf.yaml:4:11"),
    ("missing kind", "missing_kind.yaml", "has no `kind`", "wf.yaml:3:3"),
    ("unknown need", "unknown_need.yaml", "unknown stage `nope`", "wf.yaml:5:16"),
    ("cycle", "cycle.yaml", "cycle: a -> b -> a", "wf.yaml:5:16"),
    ("self loop", "self_loop.yaml", "needs itself", "wf.yaml:5:16"),
    ("duplicate stage", "duplicate_stage.yaml", "duplicate key `a`", "wf.yaml:4:3"),
    ("glob matches nothing", "glob_matches_nothing.yaml", "matches no file", "wf.yaml:5:14"),
    ("input escapes", "input_escapes.yaml", "leaves the workflow's directory", "wf.yaml:5:14"),
    ("absolute input", "absolute_input.yaml", "is absolute", "wf.yaml:5:14"),
    ("bad glob", "bad_glob.yaml", "invalid glob", "wf.yaml:5:14"),
    ("wrong type run", "wrong_type_run.yaml", "`run` must be a string", "wf.yaml:5:10"),
    ("missing run", "missing_run.yaml", "has no `run`", "wf.yaml:3:3"),
    ("unknown kind with a typo", "unknown_kind_with_a_typo.yaml", "did you mean `command`?", "wf.yaml:4:11"),
    ("needs not a mapping", "needs_not_a_mapping.yaml", "must be a mapping", "wf.yaml:5:12"),
    ("inputs wrong type", "inputs_wrong_type.yaml", "`inputs` must be a list", "wf.yaml:5:13"),
    ("bad stage name", "bad_stage_name.yaml", "invalid stage name", "wf.yaml:3:3"),
    ("bad role name", "bad_role_name.yaml", "invalid role name", "wf.yaml:6:13"),
    ("with not a mapping", "with_not_a_mapping.yaml", "must be a mapping", "wf.yaml:5:11"),
    ("bad with key", "bad_with_key.yaml", "must be an identifier", "wf.yaml:5:23"),
    ("non-finite number", "non_finite_number.yaml", "not a finite number", "wf.yaml:5:15"),
    ("env on reserved name", "env_on_reserved_name.yaml", "invalid environment variable", "wf.yaml:5:11"),
    ("run on a built-in kind", "run_on_a_built_in_kind.yaml", "only allowed on `kind: command`", "wf.yaml:5:10"),
    ("bad device", "bad_device.yaml", "invalid device", "wf.yaml:5:13"),
    (
        "zero GPU share",
        "zero_gpu_share.yaml",
        "`gpu_share` must be a number over 0 and at most 1, not 0",
        "wf.yaml:9:16",
    ),
    (
        "GPU share on a command stage",
        "gpu_share_on_a_command_stage.yaml",
        "whose kind `command` takes no GPU",
        "wf.yaml:5:16",
    ),
    (
        "GPU share in defaults over one",
        "gpu_share_in_defaults_over_one.yaml",
        "`gpu_share` must be a number over 0 and at most 1, not 2",
        "wf.yaml:2:23",
    ),
    ("unknown default", "unknown_default.yaml", "no stage kind takes a default `sede`", "wf.yaml:2:12"),
    (
        "remote with an unknown scheme",
        "remote_with_an_unknown_scheme.yaml",
        "`store.remote` must be `s3://bucket/prefix`",
        "wf.yaml:2:17",
    ),
    ("two documents", "two_documents.yaml", "exactly one YAML document", "wf.yaml:4:1"),
    ("nul byte", "nul_byte.yaml", "NUL", "wf.yaml:3:"),
    ("tab indentation", "tab_indentation.yaml", "tabs disallowed", "wf.yaml:3:2"),
    ("version as a string", "version_as_a_string.yaml", "unsupported workflow version", "wf.yaml:1:10"),
    ("stages a list", "stages_a_list.yaml", "`stages` must be a mapping, not a list", "wf.yaml:2:9"),
    ("stage a scalar", "stage_a_scalar.yaml", "stage `a` must be a mapping, not an integer", "wf.yaml:3:6"),
    ("stage null", "stage_null.yaml", "stage `a` must be a mapping, not null", "wf.yaml:3:4"),
    ("float overflow", "float_overflow.yaml", "`inf` is not a finite number", "wf.yaml:5:15"),
    ("integer overflow", "integer_overflow.yaml", "is out of range", "wf.yaml:5:23"),
    (
        "negative count",
        "negative_count.yaml",
        "stage `a`, parameter `documents`: invalid value: integer `-5`",
        "wf.yaml:5:23",
    ),
    ("unknown parameter", "unknown_parameter.yaml", "unknown field `documentz`", "wf.yaml:5:"),
    (
        "parameter of the wrong type",
        "parameter_of_the_wrong_type.yaml",
        "parameter `documents`: invalid type: string \"many\"",
        "wf.yaml:5:23",
    ),
    (
        "negative learning rate",
        "negative_learning_rate.yaml",
        "stage `p`, parameter `lr`: must be positive",
        "wf.yaml:9:27",
    ),
    ("negative seed", "negative_seed.yaml", "invalid value: integer `-1`", "wf.yaml:4:6"),
    (
        "glob escaping the directory",
        "glob_escaping_the_directory.yaml",
        "leaves the workflow's directory",
        "wf.yaml:5:14",
    ),
    ("dot-dot inside a path", "dot_dot_inside_a_path.yaml", "leaves the workflow's directory", "wf.yaml:5:14"),
    ("env value a list", "env_value_a_list.yaml", "an `env` value must be a scalar", "wf.yaml:5:14"),
    ("unknown role of a kind", "unknown_role_of_a_kind.yaml", "kind `init` has no role `tokenizr`", "wf.yaml:6:23"),
    ("name a list", "name_a_list.yaml", "`name` must be a string", "wf.yaml:2:7"),
    ("defaults a scalar", "defaults_a_scalar.yaml", "`defaults` must be a mapping", "wf.yaml:2:11"),
    ("push not a boolean", "push_not_a_boolean.yaml", "`store.push` must be a boolean", "wf.yaml:2:15"),
    ("merge key of a scalar", "merge_key_of_a_scalar.yaml", "`<<` merges a mapping", "wf.yaml:4:9"),
    ("unknown alias", "unknown_alias.yaml", "unknown anchor", "wf.yaml:3:27"),
    ("empty file", "empty_file.yaml", "must be a mapping, not null", "wf.yaml:1:1"),
    ("key not a scalar", "key_not_a_scalar.yaml", "a mapping key must be a scalar", "wf.yaml:3:3"),
    ("unknown escape", "unknown_escape.yaml", "unknown escape character", "wf.yaml:3:27"),
    (
        "several unknown needs in a list",
        "several_unknown_needs_in_a_list.yaml",
        "needs unknown stage `c`",
        "wf.yaml:5:20",
    ),
    (
        "an output above $FLOW_OUT",
        "an_output_above_flow_out.yaml",
        "output `../x` is not a path inside `$FLOW_OUT`",
        "wf.yaml:6:15",
    ),
    ("an absolute output", "an_absolute_output.yaml", "output `/etc/passwd` is not a path", "wf.yaml:6:19"),
    (
        "outputs not a list",
        "outputs_not_a_list.yaml",
        "`outputs` must be a list of paths, not a string",
        "wf.yaml:6:14",
    ),
    ("an output listed twice", "an_output_listed_twice.yaml", "output `d` is listed twice", "wf.yaml:6:19"),
    (
        "outputs on a built-in kind",
        "outputs_on_a_built_in_kind.yaml",
        "`outputs` is only allowed on `kind: command` stages",
        "wf.yaml:5:14",
    ),
    ("deep nesting", "deep_nesting.yaml", "nesting deeper", "wf.yaml:3:"),
];

#[test]
fn every_malformed_workflow_is_rejected_with_its_location() {
    assert!(CASES.len() >= 50);
    for (name, file, message, location) in CASES {
        let p = Project::new();
        p.fixture_file("malformed", file, "wf.yaml");
        let out = p.flow(&["apply", "wf.yaml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: exit code; stderr:\n{stderr}");
        assert!(stderr.contains(message), "{name}: expected {message:?} in:\n{stderr}");
        assert!(stderr.contains(location), "{name}: expected location {location:?} in:\n{stderr}");
        assert!(!p.cache().exists(), "{name}: the store must not be touched");
    }
}

#[test]
fn every_error_of_a_workflow_is_reported_at_once() {
    let p = Project::new();
    p.fixture("several_errors");
    let out = p.flow(&["plan", "wf.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("2 errors in `wf.yaml`"), "{stderr}");
    assert!(stderr.contains("wf.yaml:9:16") && stderr.contains("unknown stage `nope`"), "{stderr}");
    assert!(stderr.contains("wf.yaml:5:5") && stderr.contains("did you mean `kind`?"), "{stderr}");
}

#[test]
fn invalid_utf8_is_rejected_with_its_position() {
    let p = Project::new();
    p.fixture("invalid_utf8");
    let out = p.flow(&["apply", "wf.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("wf.yaml:2:10") && stderr.contains("UTF-8"), "{stderr}");
}

/// Inputs built to exhaust memory or time: an alias "billion laughs" (10^9 nodes if expanded)
/// and a file over the size limit. Both are refused quickly, with nothing written.
#[test]
fn exploding_and_oversized_workflows_are_refused_with_nothing_written() {
    let mut laughs = String::from("version: 1\nx0: &a0 [l, l, l, l, l, l, l, l, l, l]\n");
    for i in 1..9 {
        laughs.push_str(&format!("x{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", ")));
    }
    laughs.push_str("stages:\n  a: {kind: command, run: 'true'}\n");
    let huge = format!("version: 1\n# {}\nstages:\n  a: {{kind: command, run: 'true'}}\n", "x".repeat(9 << 20));
    for (name, text, message) in [("laughs", laughs, "more than 1000000 nodes"), ("huge", huge, "the limit is 8388608")]
    {
        let p = Project::new();
        p.write("wf.yaml", &text);
        let out = p.flow(&["apply", "wf.yaml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(message) && stderr.contains("wf.yaml"), "{name}: {stderr}");
        assert!(!p.cache().exists(), "{name}: the store must not be touched");
    }
}

/// Files written by Windows editors: a byte order mark and CRLF line ends are valid YAML.
#[test]
fn a_byte_order_mark_and_crlf_line_ends_are_accepted() {
    let p = Project::new();
    p.fixture("bom_crlf");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("a"), "ran");
}

#[test]
fn bad_overrides_name_the_argument() {
    let p = Project::new();
    p.fixture("true_stage");
    for (set, message) in [
        ("nope.with.x=1", "unknown stage `nope`"),
        ("a.x=1", "is not of the form"),
        ("a.with.x", "is not of the form"),
        ("a.with.x=[1", "bad value"),
    ] {
        let out = p.flow(&["apply", "wf.yaml", "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: {stderr}");
        assert!(stderr.contains(message) && stderr.contains(&format!("--set {set}")), "{set}: {stderr}");
    }
    let out = p.flow(&["apply", "wf.yaml", "--target", "zzz"]);
    assert_eq!(out.status.code(), Some(2));
    let out = p.flow(&["apply", "wf.yaml", "--jobs", "many"]);
    assert_eq!(out.status.code(), Some(2));
}
