//! The validator on small workflows: what it resolves (placement over `defaults:`, executors
//! merged key by key, outputs normalised) and where it puts each error.

use std::path::Path;

use super::executor::Executor;
use super::*;

fn parse(text: &str) -> Result<Workflow, SpecErrors> {
    super::parse(Path::new("wf.yaml"), text.as_bytes().to_vec(), &[])
}

/// Every error as `line:col message`.
fn errors(text: &str) -> Vec<String> {
    let e = parse(text).expect_err("the workflow is invalid");
    e.errors
        .iter()
        .map(|e| format!("{}:{} {}", e.location.as_ref().unwrap().line, e.location.as_ref().unwrap().col, e.message))
        .collect()
}

#[test]
fn placement_comes_from_the_stage_then_the_defaults() {
    let w = parse(
        "version: 1\ndefaults: {device: cuda, gpu_share: 0.5, seed: 3}\nstages:\n  a: {kind: init}\n  b: {kind: init, device: 'cuda:1', gpu_share: 0.25}\n  c: {kind: command, run: 'true'}\n",
    )
    .unwrap();
    let [a, b, c] = [&w.stages[0], &w.stages[1], &w.stages[2]];
    assert_eq!((a.device, a.gpu_share.thousandths(), a.own_gpu_share), (Device::Cuda(None), 500, false));
    assert_eq!((b.device, b.gpu_share.thousandths(), b.own_gpu_share), (Device::Cuda(Some(1)), 250, true));
    assert!(c.is_command() && !a.is_command());
    // Placement keys leave `defaults:`; kind parameters stay for the kinds.
    assert_eq!(w.defaults.keys().collect::<Vec<_>>(), ["seed"]);
    let bare = parse("version: 1\nstages:\n  a: {kind: init}\n").unwrap();
    assert_eq!((bare.stages[0].device, bare.stages[0].gpu_share), (Device::Auto, GpuShare::WHOLE));
}

#[test]
fn slurm_options_merge_key_by_key_and_a_plain_slurm_takes_the_defaults() {
    let w = parse(
        "version: 1\ndefaults: {executor: {slurm: {partition: gpu, time: '10:00'}}}\nstages:\n  a: {kind: command, run: 'true', executor: {slurm: {time: '20:00'}}}\n  b: {kind: command, run: 'true', executor: slurm}\n  c: {kind: command, run: 'true', executor: local}\n",
    )
    .unwrap();
    let slurm = |i: usize| match &w.stages[i].executor {
        Executor::Slurm(o) => (o.partition.clone(), o.time.clone()),
        Executor::Local => panic!("stage {i} runs locally"),
    };
    assert_eq!(slurm(0), (Some("gpu".into()), Some("20:00".into())));
    assert_eq!(slurm(1), (Some("gpu".into()), Some("10:00".into())));
    assert_eq!(w.stages[2].executor, Executor::Local);
}

#[test]
fn each_error_is_located_and_all_are_reported() {
    let found = errors(
        "version: 1\nstages:\n  a:\n    kind: command\n    device: tpu\n    gpu_share: 2\n    env: {FLOW_X: 1}\n    outputs: [../x, y, y]\n  b:\n    kind: corpus\n    run: 'true'\n    env: [HOME]\n",
    );
    assert_eq!(
        found,
        [
            "7:11 invalid environment variable name `FLOW_X`",
            "8:15 output `../x` is not a path inside `$FLOW_OUT`",
            "8:24 output `y` is listed twice",
            "3:3 command stage `a` has no `run`",
            "5:13 invalid device \"tpu\"",
            "6:16 `gpu_share` must be a number over 0 and at most 1, not 2",
            "11:10 `run` is only allowed on `kind: command` stages",
            "12:10 `env` is only allowed on `kind: command` stages",
        ]
    );
}

#[test]
fn a_misspelt_command_is_called_an_unknown_kind() {
    assert_eq!(
        errors("version: 1\nstages:\n  a: {kind: comand, run: 'true'}\n"),
        ["3:13 unknown kind `comand` in stage `a`"]
    );
    assert_eq!(errors("version: 1\nstages:\n  a: {kind: command}\n"), ["3:3 command stage `a` has no `run`"]);
}

#[test]
fn a_bad_default_is_reported_once_not_per_stage() {
    let found = errors(
        "version: 1\ndefaults: {executor: {slurm: {nodes: 0}}, device: 7}\nstages:\n  a: {kind: command, run: 'true'}\n  b: {kind: command, run: 'true'}\n",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("2:22 invalid executor (`slurm.nodes`)"), "{found:?}");
    assert_eq!(found[1], "2:51 invalid device 7");
}

#[test]
fn unknown_keys_get_a_suggestion() {
    let e = parse("version: 1\nstages:\n  a: {kind: command, run: 'true', needz: {}}\n").unwrap_err();
    assert_eq!(e.errors[0].message, "unknown key `needz` in stage `a`");
    assert!(e.errors[0].help.as_deref().unwrap().starts_with("did you mean `needs`?"), "{:?}", e.errors[0].help);
}
