//! Malformed workflows: each is rejected with exit 2 and a message that names the location,
//! before anything runs or the store is touched.

use crate::util::Project;

/// (name, workflow text, expected message fragment, expected `file:line:col` or `file` prefix)
const CASES: &[(&str, &str, &str, &str)] = &[
    ("yaml syntax", "version: 1\nstages: [a, b\n", "", "wf.yaml:"),
    ("not a mapping", "- a\n- b\n", "must be a mapping", "wf.yaml:1:1"),
    ("missing version", "stages:\n  a: {kind: command, run: 'true'}\n", "missing `version`", "wf.yaml:1:1"),
    (
        "bad version",
        "version: 2\nstages:\n  a: {kind: command, run: 'true'}\n",
        "unsupported workflow version",
        "wf.yaml:1:10",
    ),
    ("unknown top key", "version: 1\nstagez: {}\n", "unknown key `stagez`", "wf.yaml:2:1"),
    ("missing stages", "version: 1\nname: x\n", "missing `stages`", "wf.yaml:1:1"),
    ("empty stages", "version: 1\nstages: {}\n", "`stages` is empty", "wf.yaml:2:9"),
    (
        "unknown stage key",
        "version: 1\nstages:\n  a:\n    kind: command\n    run: 'true'\n    kindd: x\n",
        "unknown key `kindd`",
        "wf.yaml:6:5",
    ),
    (
        "unknown kind",
        "version: 1\nstages:\n  a:\n    kind: comand\n    run: 'true'\n",
        "unknown kind `comand`",
        "wf.yaml:4:11",
    ),
    ("missing kind", "version: 1\nstages:\n  a:\n    run: 'true'\n", "has no `kind`", "wf.yaml:3:3"),
    (
        "unknown need",
        "version: 1\nstages:\n  a:\n    kind: command\n    needs: {x: nope}\n    run: 'true'\n",
        "unknown stage `nope`",
        "wf.yaml:5:16",
    ),
    (
        "cycle",
        "version: 1\nstages:\n  a:\n    kind: command\n    needs: {x: b}\n    run: 'true'\n  b:\n    kind: command\n    needs: {x: a}\n    run: 'true'\n",
        "cycle: a -> b -> a",
        "wf.yaml:5:16",
    ),
    (
        "self loop",
        "version: 1\nstages:\n  a:\n    kind: command\n    needs: {x: a}\n    run: 'true'\n",
        "needs itself",
        "wf.yaml:5:16",
    ),
    (
        "duplicate stage",
        "version: 1\nstages:\n  a: {kind: command, run: 'true'}\n  a: {kind: command, run: 'false'}\n",
        "duplicate key `a`",
        "wf.yaml:4:3",
    ),
    (
        "glob matches nothing",
        "version: 1\nstages:\n  a:\n    kind: command\n    inputs: [data/*.txt]\n    run: 'true'\n",
        "matches no file",
        "wf.yaml:5:14",
    ),
    (
        "input escapes",
        "version: 1\nstages:\n  a:\n    kind: command\n    inputs: [../etc/passwd]\n    run: 'true'\n",
        "leaves the workflow's directory",
        "wf.yaml:5:14",
    ),
    (
        "absolute input",
        "version: 1\nstages:\n  a:\n    kind: command\n    inputs: [/etc/passwd]\n    run: 'true'\n",
        "is absolute",
        "wf.yaml:5:14",
    ),
    (
        "bad glob",
        "version: 1\nstages:\n  a:\n    kind: command\n    inputs: ['[a']\n    run: 'true'\n",
        "invalid glob",
        "wf.yaml:5:14",
    ),
    (
        "wrong type run",
        "version: 1\nstages:\n  a:\n    kind: command\n    run: [1, 2]\n",
        "`run` must be a string",
        "wf.yaml:5:10",
    ),
    ("missing run", "version: 1\nstages:\n  a:\n    kind: command\n", "has no `run`", "wf.yaml:3:3"),
    (
        "unknown kind with a typo",
        "version: 1\nstages:\n  a:\n    kind: comand\n    run: 'true'\n",
        "did you mean `command`?",
        "wf.yaml:4:11",
    ),
    (
        "needs not a mapping",
        "version: 1\nstages:\n  a:\n    kind: command\n    needs: [b]\n    run: 'true'\n",
        "must be a mapping",
        "wf.yaml:5:12",
    ),
    (
        "inputs wrong type",
        "version: 1\nstages:\n  a:\n    kind: command\n    inputs: {a: 1}\n    run: 'true'\n",
        "`inputs` must be a list",
        "wf.yaml:5:13",
    ),
    (
        "bad stage name",
        "version: 1\nstages:\n  'a b':\n    kind: command\n    run: 'true'\n",
        "invalid stage name",
        "wf.yaml:3:3",
    ),
    (
        "bad role name",
        "version: 1\nstages:\n  a: {kind: command, run: 'true'}\n  b:\n    kind: command\n    needs: {'in-put': a}\n    run: 'true'\n",
        "invalid role name",
        "wf.yaml:6:13",
    ),
    (
        "with not a mapping",
        "version: 1\nstages:\n  a:\n    kind: command\n    with: 3\n    run: 'true'\n",
        "must be a mapping",
        "wf.yaml:5:11",
    ),
    (
        "bad with key",
        "version: 1\nstages:\n  a:\n    kind: command\n    with: {'bad-key': 1}\n    run: 'true'\n",
        "must be an identifier",
        "wf.yaml:5:23",
    ),
    (
        "non-finite number",
        "version: 1\nstages:\n  a:\n    kind: command\n    with: {x: .nan}\n    run: 'true'\n",
        "not a finite number",
        "wf.yaml:5:15",
    ),
    (
        "env on reserved name",
        "version: 1\nstages:\n  a:\n    kind: command\n    env: {FLOW_OUT: x}\n    run: 'true'\n",
        "invalid environment variable",
        "wf.yaml:5:11",
    ),
    (
        "run on a built-in kind",
        "version: 1\nstages:\n  a:\n    kind: corpus\n    run: 'true'\n",
        "only allowed on `kind: command`",
        "wf.yaml:5:10",
    ),
    (
        "bad device",
        "version: 1\nstages:\n  a:\n    kind: command\n    device: tpu\n    run: 'true'\n",
        "invalid device",
        "wf.yaml:5:13",
    ),
    (
        "zero GPU share",
        "version: 1\nstages:\n  t: {kind: corpus}\n  d: {kind: data, needs: {sources: [t]}}\n  m:\n    kind: init\n    needs: {tokenizer: d}\n    with: {layers: 1, hidden: 32, heads: 4, ffn: 64}\n    gpu_share: 0\n",
        "`gpu_share` must be a number over 0 and at most 1, not 0",
        "wf.yaml:9:16",
    ),
    (
        "GPU share on a command stage",
        "version: 1\nstages:\n  a:\n    kind: command\n    gpu_share: 0.5\n    run: 'true'\n",
        "whose kind `command` takes no GPU",
        "wf.yaml:5:16",
    ),
    (
        "GPU share in defaults over one",
        "version: 1\ndefaults: {gpu_share: 2}\nstages:\n  a: {kind: command, run: 'true'}\n",
        "`gpu_share` must be a number over 0 and at most 1, not 2",
        "wf.yaml:2:23",
    ),
    (
        "unknown default",
        "version: 1\ndefaults: {sede: 1}\nstages:\n  a: {kind: command, run: 'true'}\n",
        "no stage kind takes a default `sede`",
        "wf.yaml:2:12",
    ),
    (
        "remote with an unknown scheme",
        "version: 1\nstore: {remote: 'gs://b/p'}\nstages:\n  a: {kind: command, run: 'true'}\n",
        "`store.remote` must be `s3://bucket/prefix`",
        "wf.yaml:2:17",
    ),
    (
        "two documents",
        "version: 1\nstages:\n  a: {kind: command, run: 'true'}\n---\nversion: 1\n",
        "exactly one YAML document",
        "wf.yaml:4:1",
    ),
    ("nul byte", "version: 1\nstages:\n  a: {kind: command, run: \"tr\\0ue\"}\n", "NUL", "wf.yaml:3:"),
    ("tab indentation", "version: 1\nstages:\n\ta: {kind: command, run: 'true'}\n", "tabs disallowed", "wf.yaml:3:2"),
    (
        "version as a string",
        "version: '1'\nstages:\n  a: {kind: command, run: 'true'}\n",
        "unsupported workflow version",
        "wf.yaml:1:10",
    ),
    ("stages a list", "version: 1\nstages: [a]\n", "`stages` must be a mapping, not a list", "wf.yaml:2:9"),
    ("stage a scalar", "version: 1\nstages:\n  a: 3\n", "stage `a` must be a mapping, not an integer", "wf.yaml:3:6"),
    ("stage null", "version: 1\nstages:\n  a:\n", "stage `a` must be a mapping, not null", "wf.yaml:3:4"),
    (
        "float overflow",
        "version: 1\nstages:\n  a:\n    kind: command\n    with: {x: 1e400}\n    run: 'true'\n",
        "`inf` is not a finite number",
        "wf.yaml:5:15",
    ),
    (
        "integer overflow",
        "version: 1\nstages:\n  a:\n    kind: corpus\n    with: {documents: 99999999999999999999999}\n",
        "is out of range",
        "wf.yaml:5:23",
    ),
    (
        "negative count",
        "version: 1\nstages:\n  a:\n    kind: corpus\n    with: {documents: -5}\n",
        "stage `a`, parameter `documents`: invalid value: integer `-5`",
        "wf.yaml:5:23",
    ),
    (
        "unknown parameter",
        "version: 1\nstages:\n  a:\n    kind: corpus\n    with: {documentz: 5}\n",
        "unknown field `documentz`",
        "wf.yaml:5:",
    ),
    (
        "parameter of the wrong type",
        "version: 1\nstages:\n  a:\n    kind: corpus\n    with: {documents: many}\n",
        "parameter `documents`: invalid type: string \"many\"",
        "wf.yaml:5:23",
    ),
    (
        "negative learning rate",
        "version: 1\nstages:\n  t: {kind: corpus}\n  d: {kind: data, needs: {sources: [t]}}\n  m: {kind: init, needs: {tokenizer: d}, with: {layers: 1, hidden: 32, heads: 4, ffn: 64}}\n  p:\n    kind: pretrain\n    needs: {model: m, data: d}\n    with: {steps: 10, lr: -1}\n",
        "stage `p`, parameter `lr`: must be positive",
        "wf.yaml:9:27",
    ),
    (
        "negative seed",
        "version: 1\ndefaults: {seed: -1}\nstages:\n  a: {kind: corpus}\n",
        "invalid value: integer `-1`",
        "wf.yaml:4:6",
    ),
    (
        "glob escaping the directory",
        "version: 1\nstages:\n  a:\n    kind: command\n    inputs: ['../*']\n    run: 'true'\n",
        "leaves the workflow's directory",
        "wf.yaml:5:14",
    ),
    (
        "dot-dot inside a path",
        "version: 1\nstages:\n  a:\n    kind: command\n    inputs: ['data/../../x']\n    run: 'true'\n",
        "leaves the workflow's directory",
        "wf.yaml:5:14",
    ),
    (
        "env value a list",
        "version: 1\nstages:\n  a:\n    kind: command\n    env: {A: [1]}\n    run: 'true'\n",
        "an `env` value must be a scalar",
        "wf.yaml:5:14",
    ),
    (
        "unknown role of a kind",
        "version: 1\nstages:\n  t: {kind: corpus}\n  a:\n    kind: init\n    needs: {tokenizr: t}\n",
        "kind `init` has no role `tokenizr`",
        "wf.yaml:6:23",
    ),
    (
        "name a list",
        "version: 1\nname: [x]\nstages:\n  a: {kind: command, run: 'true'}\n",
        "`name` must be a string",
        "wf.yaml:2:7",
    ),
    (
        "defaults a scalar",
        "version: 1\ndefaults: 3\nstages:\n  a: {kind: command, run: 'true'}\n",
        "`defaults` must be a mapping",
        "wf.yaml:2:11",
    ),
    (
        "push not a boolean",
        "version: 1\nstore: {push: maybe}\nstages:\n  a: {kind: command, run: 'true'}\n",
        "`store.push` must be a boolean",
        "wf.yaml:2:15",
    ),
    (
        "merge key of a scalar",
        "version: 1\nstages:\n  a:\n    <<: 3\n    kind: command\n    run: 'true'\n",
        "`<<` merges a mapping",
        "wf.yaml:4:9",
    ),
    ("unknown alias", "version: 1\nstages:\n  a: {kind: command, run: *nope}\n", "unknown anchor", "wf.yaml:3:27"),
    ("empty file", "", "must be a mapping, not null", "wf.yaml:1:1"),
    (
        "key not a scalar",
        "version: 1\nstages:\n  [a]: {kind: command, run: 'true'}\n",
        "a mapping key must be a scalar",
        "wf.yaml:3:3",
    ),
    (
        "unknown escape",
        "version: 1\nstages:\n  a: {kind: command, run: \"\\q\"}\n",
        "unknown escape character",
        "wf.yaml:3:27",
    ),
    (
        "several unknown needs in a list",
        "version: 1\nstages:\n  a:\n    kind: command\n    needs: {x: [b, c]}\n    run: 'true'\n",
        "needs unknown stage `c`",
        "wf.yaml:5:20",
    ),
    (
        "an output above $FLOW_OUT",
        "version: 1\nstages:\n  a:\n    kind: command\n    run: 'true'\n    outputs: [../x]\n",
        "output `../x` is not a path inside `$FLOW_OUT`",
        "wf.yaml:6:15",
    ),
    (
        "an absolute output",
        "version: 1\nstages:\n  a:\n    kind: command\n    run: 'true'\n    outputs: [ok, /etc/passwd]\n",
        "output `/etc/passwd` is not a path",
        "wf.yaml:6:19",
    ),
    (
        "outputs not a list",
        "version: 1\nstages:\n  a:\n    kind: command\n    run: 'true'\n    outputs: model.pt\n",
        "`outputs` must be a list of paths, not a string",
        "wf.yaml:6:14",
    ),
    (
        "an output listed twice",
        "version: 1\nstages:\n  a:\n    kind: command\n    run: 'true'\n    outputs: [d/, d]\n",
        "output `d` is listed twice",
        "wf.yaml:6:19",
    ),
    (
        "outputs on a built-in kind",
        "version: 1\nstages:\n  c:\n    kind: corpus\n    outputs: [documents.jsonl]\n",
        "`outputs` is only allowed on `kind: command` stages",
        "wf.yaml:5:14",
    ),
    (
        "deep nesting",
        "version: 1\nstages:\n  a: {kind: command, run: 'true', with: {x: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}\n",
        "nesting deeper",
        "wf.yaml:3:",
    ),
];

#[test]
fn every_malformed_workflow_is_rejected_with_its_location() {
    assert!(CASES.len() >= 50);
    for (name, text, message, location) in CASES {
        let p = Project::new();
        p.write("wf.yaml", text);
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
    p.write("wf.yaml", "version: 1\nstages:\n  a:\n    kind: command\n    kindd: x\n    run: 'true'\n  b:\n    kind: command\n    needs: {x: nope}\n    run: 'true'\n");
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
    std::fs::write(p.path().join("wf.yaml"), b"version: 1\nname: caf\xe9\n").unwrap();
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
    p.write("wf.yaml", "\u{feff}version: 1\r\nstages:\r\n  a: {kind: command, run: 'echo hi > $FLOW_OUT/v'}\r\n");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.status("a"), "ran");
}

#[test]
fn bad_overrides_name_the_argument() {
    let p = Project::new();
    p.write("wf.yaml", "version: 1\nstages:\n  a: {kind: command, run: 'true'}\n");
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
