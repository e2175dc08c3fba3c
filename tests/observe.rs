//! Seeing runs: the progress line protocol spoken by a user's command (through the Python
//! helper in `python/`), and what flow makes of it — events, the run record, plots — and the
//! exports to TensorBoard and MLflow, read back with their own readers.

use std::collections::BTreeMap;

use crate::util::Project;

fn helper() -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/flow_progress.py")).unwrap()
}

/// The helper's own tests (`python/test_flow_progress.py`).
#[test]
fn the_python_helper_passes_its_tests() {
    let out = std::process::Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "python"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Ran 5 tests"));
}

/// A command stage reporting through the helper gets what a built-in kind gets: progress
/// events with its scalars, a warning for a line it could not read, a record with its last
/// values, and `flow show --plot`; its output reaches the log byte for byte.
#[test]
fn a_command_speaking_the_protocol_reports_like_a_built_in_kind() {
    let p = Project::new();
    p.fixture("reporting_command").write_bytes("flow_progress.py", &helper());
    let out = p.flow(&["apply", "wf.yaml", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let events: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let r = crate::util::parse_applied(out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let progress: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["type"] == "stage_progress").map(|e| &e["progress"]).collect();
    assert_eq!(progress.len(), 6, "{stdout}");
    assert_eq!(progress.iter().map(|p| p["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 5]);
    assert_eq!(progress[1]["total"], 5);
    assert_eq!(progress[3]["loss"].as_f64(), Some(0.25));
    assert_eq!(progress[3]["val_loss/wiki"].as_f64(), Some(0.5));
    assert_eq!(progress[5]["grad_norm"], "nan");
    let notices: Vec<&str> =
        events.iter().filter(|e| e["type"] == "notice").map(|e| e["message"].as_str().unwrap()).collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("not a JSON object"), "{}", notices[0]);

    let fp = r.stage("fit")["fingerprint"].as_str().unwrap().to_owned();
    let log = p.read_bytes(&format!("cache/logs/{fp}.log"));
    assert!(log.windows(12).any(|w| w == b"\xff\xfe raw bytes"), "the log keeps every byte");
    assert_eq!(p.read(&format!("cache/artifacts/{}/done.txt", r.artifact("fit"))), "1", "FLOW_PROTOCOL is set");

    let show = p.flow(&["show", "wf.yaml", "fit", "--json", "--plot", "curves.svg"]);
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let metrics = &shown["record"]["metrics"];
    assert_eq!(
        metrics,
        &serde_json::json!({"step": 5, "total": 5, "loss": 0.2, "val_loss/wiki": 0.4}),
        "the last value of each scalar, a non-finite one left out"
    );
    let svg = p.read("curves.svg");
    assert!(svg.contains("val_loss/wiki") && svg.contains("<polyline"), "{svg}");
}

/// The Python with TensorBoard's reader and MLflow's client that scripts/test.sh installs.
fn python() -> String {
    std::env::var("FLOW_TEST_PYTHON").expect("FLOW_TEST_PYTHON: run the tests with scripts/test.sh")
}

/// Runs `script` (Python, printing one JSON document) with `args`.
fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(python()).arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn exports_project() -> Project {
    let p = Project::new();
    p.fixture("exports").write_bytes("flow_progress.py", &helper());
    p
}

/// Every scalar a stage reported, by name, from its `metrics.jsonl` (training kinds) and the
/// protocol lines of its log — what the exports must hold — as (step, value) pairs.
fn reported(p: &Project, r: &crate::util::Applied, stage: &str) -> BTreeMap<String, Vec<(u64, f64)>> {
    let mut out: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    let fp = r.stage(stage)["fingerprint"].as_str().unwrap().to_owned();
    for line in p.read(&format!("cache/logs/{fp}.log")).lines() {
        let Some(json) = line.strip_prefix("@flow/1 ") else { continue };
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let step = v["step"].as_u64().unwrap();
        for (k, x) in v.as_object().unwrap() {
            if !["step", "total", "eta_s", "device"].contains(&k.as_str()) {
                out.entry(k.clone()).or_default().insert(step, x.as_f64().unwrap());
            }
        }
    }
    for line in p.read(&format!("cache/artifacts/{}/metrics.jsonl", r.artifact(stage))).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = v["step"].as_u64().unwrap();
        for (k, x) in v.as_object().unwrap() {
            if k != "step" {
                out.entry(k.clone()).or_default().insert(step, x.as_f64().unwrap());
            }
        }
    }
    out.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect()
}

const READ_TENSORBOARD: &str = r#"
import json, math, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
out = {}
for run in sys.argv[1:]:
    acc = EventAccumulator(run, size_guidance={"scalars": 0})
    acc.Reload()
    out[run] = {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
print(json.dumps(out))
"#;

/// The scalars of TensorBoard run directory `run`, read by TensorBoard's own reader.
fn tensorboard_run(run: &std::path::Path) -> BTreeMap<String, Vec<(u64, f64)>> {
    let all = python_json(READ_TENSORBOARD, &[run.to_str().unwrap()]);
    let scalars = all[run.to_str().unwrap()].as_object().unwrap().clone();
    scalars
        .into_iter()
        .map(|(k, v)| {
            let points = v.as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()));
            (k, points.collect())
        })
        .collect()
}

/// TensorBoard keeps scalars as 32-bit floats.
fn as_f32(m: &BTreeMap<String, Vec<(u64, f64)>>) -> BTreeMap<String, Vec<(u64, f64)>> {
    m.iter().map(|(k, v)| (k.clone(), v.iter().map(|(s, x)| (*s, *x as f32 as f64)).collect())).collect()
}

fn event_files(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for stage in std::fs::read_dir(dir).unwrap() {
        for run in std::fs::read_dir(stage.unwrap().path()).unwrap() {
            for f in std::fs::read_dir(run.unwrap().path()).unwrap() {
                let path = f.unwrap().path();
                out.insert(path.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// `--tensorboard` writes a run per stage that TensorBoard reads back with every value the
/// stage reported (a built-in training kind and a command alike); a cached stage is not
/// written again, and one whose run is missing is written from its history.
#[test]
#[ignore = "needs TensorBoard's reader (scripts/test.sh installs it)"]
fn tensorboard_runs_hold_every_reported_value_and_cached_stages_are_written_once() {
    let p = exports_project();
    let r = p.apply("wf.yaml", &["--tensorboard", "tb"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let run = |stage: &str| {
        let fp = r.stage(stage)["fingerprint"].as_str().unwrap();
        p.path().join("tb").join(stage).join(&fp[..12])
    };
    let expected_pre = as_f32(&reported(&p, &r, "pre"));
    assert!(
        ["loss", "lr", "grad_norm", "val_loss", "val_loss/news", "val_loss/tales", "tokens_per_s"]
            .iter()
            .all(|k| expected_pre.contains_key(*k)),
        "{:?}",
        expected_pre.keys()
    );
    assert_eq!(expected_pre["loss"].len(), 8);
    assert_eq!(tensorboard_run(&run("pre")), expected_pre);
    let expected_fit = as_f32(&reported(&p, &r, "fit"));
    assert_eq!(expected_fit["loss"].len(), 6);
    assert_eq!(tensorboard_run(&run("fit")), expected_fit);
    let mark: serde_json::Value = serde_json::from_str(
        &p.read(&format!("{}/flow-run.json", run("pre").strip_prefix(p.path()).unwrap().display())),
    )
    .unwrap();
    assert_eq!((mark["state"].as_str(), mark["artifact"].as_str()), (Some("ran"), Some(r.artifact("pre").as_str())));

    let files = event_files(&p.path().join("tb"));
    let again = p.apply("wf.yaml", &["--tensorboard", "tb"]);
    assert_eq!(again.with_status("cached").len(), 6, "{}", again.stderr);
    assert_eq!(event_files(&p.path().join("tb")), files, "cached stages are not exported again");

    std::fs::remove_dir_all(p.path().join("tb")).unwrap();
    let backfilled = p.apply("wf.yaml", &["--tensorboard", "tb"]);
    assert_eq!(backfilled.code, 0, "{}", backfilled.stderr);
    assert_eq!(tensorboard_run(&run("pre")), expected_pre, "a cached stage is written from its history");
    assert_eq!(tensorboard_run(&run("fit")), expected_fit);
}

const READ_MLFLOW: &str = r#"
import json, sys
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
exp = client.get_experiment_by_name(sys.argv[2])
runs = [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)
out = []
for r in runs:
    metrics = {k: [[m.step, m.value] for m in client.get_metric_history(r.info.run_id, k)] for k in r.data.metrics}
    out.append({"status": r.info.status, "name": r.info.run_name, "tags": {k: v for k, v in r.data.tags.items() if k.startswith("flow.")},
                "params": r.data.params, "metrics": metrics})
print(json.dumps(out))
"#;

/// The MLflow runs of experiment `name`, read through MLflow's own client.
fn mlflow_runs(name: &str) -> Vec<serde_json::Value> {
    let url = std::env::var("FLOW_TEST_MLFLOW").expect("FLOW_TEST_MLFLOW: run the tests with scripts/test.sh");
    python_json(READ_MLFLOW, &[&url, name]).as_array().unwrap().clone()
}

fn metrics_of(run: &serde_json::Value) -> BTreeMap<String, Vec<(u64, f64)>> {
    let mut out: BTreeMap<String, Vec<(u64, f64)>> = run["metrics"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap())).collect(),
            )
        })
        .collect();
    for points in out.values_mut() {
        points.sort_by_key(|(step, _)| *step);
    }
    out
}

/// `--mlflow` logs a run per stage with its parameters, metrics and provenance tags: stages
/// found cached are exported once from their history, a stage that ran is exported as it
/// reports; the values are the ones it reported, exactly.
#[test]
#[ignore = "needs the MLflow server scripts/test.sh starts"]
fn mlflow_holds_a_run_per_stage_and_cached_stages_are_logged_once() {
    let url = std::env::var("FLOW_TEST_MLFLOW").expect("FLOW_TEST_MLFLOW: run the tests with scripts/test.sh");
    let p = exports_project();
    let name = format!("exports-{}", p.path().file_name().unwrap().to_string_lossy());
    let wf = p.read("wf.yaml").replace("name: exports", &format!("name: {name}"));
    p.write("wf.yaml", &wf);
    let first = p.apply("wf.yaml", &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(mlflow_runs(&name).is_empty(), "nothing is exported without --mlflow");

    let cached = p.apply("wf.yaml", &["--mlflow", &url]);
    assert_eq!(cached.with_status("cached").len(), 6, "{}", cached.stderr);
    let runs = mlflow_runs(&name);
    assert_eq!(runs.len(), 6, "{runs:?}");
    let pre = runs.iter().find(|r| r["name"] == "pre").unwrap();
    assert_eq!(pre["status"], "FINISHED");
    assert_eq!(pre["tags"]["flow.fingerprint"], first.stage("pre")["fingerprint"]);
    assert_eq!(pre["tags"]["flow.artifact"].as_str(), Some(first.artifact("pre").as_str()));
    assert_eq!(
        (pre["tags"]["flow.state"].as_str(), pre["tags"]["flow.kind"].as_str()),
        (Some("cached"), Some("pretrain"))
    );
    assert_eq!((pre["params"]["steps"].as_str(), pre["params"]["seq_len"].as_str()), (Some("8"), Some("16")));
    assert_eq!(metrics_of(pre), reported(&p, &first, "pre"), "every value, at double precision");

    let again = p.apply("wf.yaml", &["--mlflow", &url]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(mlflow_runs(&name).len(), 6, "cached stages are logged once");

    // Past MLflow's limits of one request: 1,200 metric values and 122 parameters.
    let grid: Vec<String> = (0..120).map(|k| format!("a{k}: {k}")).collect();
    let grid = format!("fit.with.grid={{{}}}", grid.join(", "));
    let changed = p.apply("wf.yaml", &["--mlflow", &url, "--set", "fit.with.steps=600", "--set", &grid]);
    assert_eq!(changed.with_status("ran"), ["fit"], "{}", changed.stderr);
    assert!(!changed.stderr.contains("WARNING"), "{}", changed.stderr);
    let runs = mlflow_runs(&name);
    assert_eq!(runs.len(), 7);
    let fit = runs
        .iter()
        .find(|r| r["name"] == "fit" && r["tags"]["flow.fingerprint"] == changed.stage("fit")["fingerprint"])
        .unwrap();
    assert_eq!((fit["tags"]["flow.state"].as_str(), fit["params"]["grid.a119"].as_str()), (Some("ran"), Some("119")));
    assert_eq!(fit["params"].as_object().unwrap().len(), 122, "grid.a0 … grid.a119, note, steps");
    let reported_fit = reported(&p, &changed, "fit");
    assert_eq!(reported_fit["loss"].len(), 600);
    assert_eq!(metrics_of(fit), reported_fit);
}

/// A tracking server that is down, or that never answers, is a warning: every stage still
/// runs and the apply succeeds.
#[test]
fn an_mlflow_server_that_is_down_or_silent_is_a_warning() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_url = format!("http://{}", down.local_addr().unwrap());
    drop(down);
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    for url in [down_url, silent_url] {
        let p = Project::new();
        p.write("wf.yaml", "version: 1\nstages:\n  a: {kind: command, run: 'echo \"@flow/1 {\\\"step\\\":1,\\\"loss\\\":2}\"; echo a > $FLOW_OUT/a'}\n");
        let r = p.apply("wf.yaml", &["--mlflow", &url]);
        assert_eq!((r.code, r.status("a")), (0, "ran".to_owned()), "{}", r.stderr);
        assert!(r.stderr.contains("MLflow export stopped") && r.stderr.contains(&url), "{url}: {}", r.stderr);
    }
}

/// The workflow's `export:` key does what `--tensorboard` does (its directory under the
/// workflow's), and a key that is not a tracking server's URL is an error at its place.
#[test]
fn the_export_key_writes_under_the_workflow_and_a_bad_one_is_located() {
    let p = Project::new();
    p.write(
        "sub/wf.yaml",
        "version: 1\nexport: {tensorboard: tb}\nstages:\n  a: {kind: command, run: 'echo \"@flow/1 {\\\"step\\\":1,\\\"loss\\\":2}\" && echo a > $FLOW_OUT/a'}\n",
    );
    let r = p.apply("sub/wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fp = r.stage("a")["fingerprint"].as_str().unwrap().to_owned();
    let run = p.path().join("sub/tb/a").join(&fp[..12]);
    let mut names: Vec<String> =
        std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("events.out.tfevents.") && names[1] == "flow-run.json", "{names:?}");

    p.write(
        "bad.yaml",
        "version: 1\nexport:\n  mlflow: ftp://tracking\n  wandb: x\nstages:\n  a: {kind: command, run: 'true'}\n",
    );
    let out = p.flow(&["apply", "bad.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.yaml:3:11: `export.mlflow` must be a tracking server's"), "{stderr}");
    assert!(stderr.contains("bad.yaml:4:3: unknown key `wandb` in `export`"), "{stderr}");
}
