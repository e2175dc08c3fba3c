//! Checks that need a CUDA device: a `--features cuda` build on a machine with a GPU. They are
//! `#[ignore]`d, and `scripts/test.sh` leaves them out and says so unless `FLOW_TEST_CUDA=1`;
//! run without a device they fail, never pass. `scripts/gpu-check.sh` makes the same checks
//! (and measures throughput) with a built binary on a GPU machine without Rust.

use crate::util::{Applied, Project};

fn on(p: &Project, device: &str) -> Applied {
    let r = p.apply("wf.yaml", &["--device", device, "--cache", device]);
    assert_eq!(r.code, 0, "{device}: {}", r.stderr);
    r
}

/// The same stages on the CPU and on `cuda:0`: `init` gives the same artifact, the forward
/// pass the same validation loss to 1e-4, one training step the same gradient norm to 1e-4
/// (relative) and the same weights to 1e-3, and the record names the GPU. (AdamW's first step
/// moves every weight by ±lr whatever its gradient's size, so a gradient that is all but zero
/// may flip sign between devices: lr is 4e-4, so that even a flip stays within 1e-3.)
#[test]
#[ignore = "needs a CUDA device: a `--features cuda` build on a GPU machine (FLOW_TEST_CUDA=1)"]
fn cuda_agrees_with_the_cpu_on_the_forward_pass_and_a_training_step() {
    let p = Project::new();
    p.fixture("gpu_agreement");
    let (cpu, gpu) = (on(&p, "cpu"), on(&p, "cuda:0"));
    assert_eq!(cpu.artifact("model"), gpu.artifact("model"));
    let val = |r: &Applied, d: &str| {
        let m: serde_json::Value =
            serde_json::from_str(&p.read(&format!("{d}/artifacts/{}/metrics.json", r.artifact("score")))).unwrap();
        m["val_loss"].as_f64().unwrap()
    };
    let (a, b) = (val(&cpu, "cpu"), val(&gpu, "cuda:0"));
    assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "val loss {a} on the CPU, {b} on CUDA");
    let weights = |r: &Applied, d: &str| {
        candle_core::safetensors::load(
            p.path().join(format!("{d}/artifacts/{}/model.safetensors", r.artifact("step"))),
            &candle_core::Device::Cpu,
        )
        .unwrap()
    };
    let norm = |r: &Applied, d: &str| {
        let row: serde_json::Value = serde_json::from_str(
            p.read(&format!("{d}/artifacts/{}/metrics.jsonl", r.artifact("step"))).lines().next().unwrap(),
        )
        .unwrap();
        row["grad_norm"].as_f64().unwrap()
    };
    let (na, nb) = (norm(&cpu, "cpu"), norm(&gpu, "cuda:0"));
    assert!((na - nb).abs() <= 1e-4 * na, "gradient norm {na} on the CPU, {nb} on CUDA");
    let (wa, wb) = (weights(&cpu, "cpu"), weights(&gpu, "cuda:0"));
    for (name, t) in &wa {
        let diff = (t - &wb[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-3, "{name}: {diff}");
    }
    let show = String::from_utf8_lossy(&p.flow(&["show", "wf.yaml", "step", "--cache", "cuda:0"]).stdout).into_owned();
    assert!(show.contains("device cuda:0 ("), "{show}");
}
