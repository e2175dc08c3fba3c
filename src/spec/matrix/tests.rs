//! Matrix stages on small workflows: the members they make, what follows them, and where each
//! malformed matrix is reported.

use std::path::Path;

use crate::spec::{Override, SpecErrors, Workflow};

fn parse_with(text: &str, sets: &[&str]) -> Result<Workflow, SpecErrors> {
    let sets: Vec<Override> = sets.iter().map(|s| Override(s.to_string())).collect();
    crate::spec::parse(Path::new("wf.yaml"), text.as_bytes().to_vec(), &sets)
}

fn parse(text: &str) -> Workflow {
    parse_with(text, &[]).unwrap_or_else(|e| panic!("{:?}", e.errors.iter().map(|e| &e.message).collect::<Vec<_>>()))
}

fn errors(text: &str) -> Vec<String> {
    let e = parse_with(text, &[]).expect_err("the workflow is invalid");
    e.errors
        .iter()
        .map(|e| {
            let at = e.location.as_ref().expect("located");
            format!("{}:{} {}", at.line, at.col, e.message)
        })
        .collect()
}

fn names(w: &Workflow) -> Vec<&str> {
    w.stages.iter().map(|s| s.name.as_str()).collect()
}

fn needs<'a>(w: &'a Workflow, stage: &str, role: &str) -> Vec<&'a str> {
    w.stage(stage).unwrap().needs[role].stages.iter().map(|(n, _)| n.as_str()).collect()
}

const SWEEP: &str = "version: 1
stages:
  data: {kind: command, run: 'true'}
  pre:
    kind: command
    run: 'true'
    needs: {data: data}
    matrix: {lr: [1.0e-3, 3.0e-3], seed: [1, 2, 3]}
    with: {steps: 10}
  ev:
    kind: command
    run: 'true'
    needs: {model: pre}
  table:
    kind: command
    run: 'true'
    needs: {runs: [pre]}
";

#[test]
fn a_matrix_makes_one_stage_per_combination_in_place_of_its_stage() {
    let w = parse(SWEEP);
    let members = [
        "pre@lr=0.001,seed=1",
        "pre@lr=0.001,seed=2",
        "pre@lr=0.001,seed=3",
        "pre@lr=0.003,seed=1",
        "pre@lr=0.003,seed=2",
        "pre@lr=0.003,seed=3",
    ];
    assert_eq!(&names(&w)[1..7], members);
    assert_eq!(w.matrices["pre"], members);
    let m = w.stage("pre@lr=0.003,seed=2").unwrap();
    assert_eq!(serde_json::Value::Object(m.with.clone()), serde_json::json!({"steps": 10, "lr": 0.003, "seed": 2}));
    assert_eq!(m.written_as(), "pre");
    assert_eq!(m.param_path("seed"), ["stages", "pre", "matrix", "seed"]);
    assert_eq!(m.param_path("steps"), ["stages", "pre", "with", "steps"]);
    assert_eq!(needs(&w, "pre@lr=0.001,seed=1", "data"), ["data"]);
    // `--target pre` stands for every member; a member or a plain stage for itself.
    assert_eq!(w.select("pre").unwrap().len(), 6);
    assert_eq!(w.select("pre@lr=0.001,seed=2"), Some(vec![2]));
    assert_eq!(w.select("data"), Some(vec![0]));
    assert_eq!(w.select("nope"), None);
}

#[test]
fn a_stage_that_needs_a_matrix_stage_follows_it_and_a_list_role_takes_every_member() {
    let w = parse(SWEEP);
    assert_eq!(w.matrices["ev"].len(), 6);
    assert_eq!(needs(&w, "ev@lr=0.003,seed=1", "model"), ["pre@lr=0.003,seed=1"]);
    // A follower takes no parameter from the values it follows.
    assert!(w.stage("ev@lr=0.003,seed=1").unwrap().with.is_empty());
    assert_eq!(needs(&w, "table", "runs"), w.matrices["pre"].iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn a_follower_with_its_own_matrix_multiplies_and_shared_keys_match() {
    let w = parse(
        "version: 1
stages:
  pre: {kind: command, run: 'true', matrix: {seed: [1, 2]}}
  tune:
    kind: command
    run: 'true'
    needs: {model: pre}
    matrix: {lr: [0.5, 1]}
  pick:
    kind: command
    run: 'true'
    needs: {model: pre, runs: [tune]}
    matrix: {seed: [2]}
",
    );
    assert_eq!(
        w.matrices["tune"],
        ["tune@seed=1,lr=0.5", "tune@seed=1,lr=1", "tune@seed=2,lr=0.5", "tune@seed=2,lr=1"]
    );
    assert_eq!(needs(&w, "tune@seed=2,lr=1", "model"), ["pre@seed=2"]);
    // Only the members that agree on `seed` are gathered.
    assert_eq!(w.matrices["pick"], ["pick@seed=2"]);
    assert_eq!(needs(&w, "pick@seed=2", "runs"), ["tune@seed=2,lr=0.5", "tune@seed=2,lr=1"]);
    assert_eq!(w.stage("pick@seed=2").unwrap().with["seed"], 2);
    // A value the followed stage lacks would make no member: an error at the value.
    assert_eq!(
        errors(
            "version: 1\nstages:\n  pre: {kind: command, run: 'true', matrix: {seed: [1, 2]}}\n  ev: {kind: command, run: 'true', needs: {model: pre}, matrix: {seed: [2, 3]}}\n"
        ),
        ["4:76 `matrix.seed` of `ev` lists `3`, which no member of the stages it follows has"]
    );
}

#[test]
fn one_member_can_be_named_and_a_wrong_name_gets_a_suggestion() {
    let w = parse(
        "version: 1\nstages:\n  pre: {kind: command, run: 'true', matrix: {seed: [1, 2]}}\n  ev: {kind: command, run: 'true', needs: {model: 'pre@seed=2'}}\n",
    );
    assert!(!w.matrices.contains_key("ev"));
    assert_eq!(needs(&w, "ev", "model"), ["pre@seed=2"]);
    assert_eq!(
        errors(
            "version: 1\nstages:\n  pre: {kind: command, run: 'true', matrix: {seed: [1, 2]}}\n  ev: {kind: command, run: 'true', needs: {model: 'pre@seed=3'}}\n"
        ),
        ["4:51 stage `ev` needs unknown member `pre@seed=3`"]
    );
    // Said once, though each of the follower's two members names it.
    let e = errors(
        "version: 1\nstages:\n  pre: {kind: command, run: 'true', matrix: {seed: [1, 2]}}\n  ev: {kind: command, run: 'true', needs: {model: pre, other: 'pre@seed=9'}}\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
}

#[test]
fn malformed_matrices_are_located() {
    let wide: Vec<String> = (0..33).map(|i| i.to_string()).collect();
    let text = format!(
        "version: 1
stages:
  a: {{kind: command, run: 'true', matrix: {{}}}}
  b: {{kind: command, run: 'true', matrix: {{lr: []}}}}
  c: {{kind: command, run: 'true', matrix: {{lr: 0.1}}}}
  d: {{kind: command, run: 'true', matrix: {{lr: [0.1, {{x: 1}}]}}}}
  e: {{kind: command, run: 'true', matrix: {{lr: [0.001, 1.0e-3]}}}}
  f: {{kind: command, run: 'true', matrix: {{lr: [0.1]}}, with: {{lr: 0.2}}}}
  g: {{kind: command, run: 'true', matrix: {{name: ['a b']}}}}
  h: {{kind: command, run: 'true', matrix: {{x: [{w}], y: [{w}]}}}}
  i: {{kind: command, run: 'true', matrix: [1, 2]}}
",
        w = wide.join(", ")
    );
    assert_eq!(
        errors(&text),
        [
            "3:43 `matrix` of stage `a` is empty",
            "4:48 `matrix.lr` lists no value",
            "5:48 `matrix.lr` must be a list of values, not a float",
            "6:54 `matrix.lr` values must be numbers, booleans or strings, not a mapping",
            "7:56 `matrix.lr` lists `0.001` twice (first on line 7)",
            "8:44 `lr` of stage `f` is set both in `matrix` and in `with`",
            "9:51 `a b` cannot be part of a stage name",
            "10:43 `matrix` of stage `h` has 33 × 33 members; the limit is 1024",
            "11:43 `matrix` of stage `i` must be a mapping, not a list",
        ]
    );
}

#[test]
fn set_reaches_every_member_and_can_change_the_values() {
    let w = parse_with(SWEEP, &["pre.with.steps=5", "pre.matrix.seed=[7]"]).unwrap();
    assert_eq!(w.matrices["pre"], ["pre@lr=0.001,seed=7", "pre@lr=0.003,seed=7"]);
    assert!(w.matrices["pre"].iter().all(|m| w.stage(m).unwrap().with["steps"] == 5));
    let e = parse_with(SWEEP, &["pre@lr=0.001,seed=1.with.steps=5"]).unwrap_err();
    assert!(e.errors[0].message.contains("set `pre.with.KEY` for all its members"), "{}", e.errors[0].message);
}
