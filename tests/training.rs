//! The training kinds end to end on a tiny pipeline: corpus → data → init → pretrain →
//! anneal → eval. Checks determinism, exact resume after an interrupt, the anneal's LR
//! continuity and the data split.

use std::time::{Duration, Instant};

use crate::util::{Applied, Project};

fn metrics(p: &Project, r: &Applied, stage: &str) -> Vec<serde_json::Value> {
    p.read(&format!("cache/artifacts/{}/metrics.jsonl", r.artifact(stage)))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_pipeline_trains_deterministically_and_the_anneal_continues_the_lr() {
    let a = Project::new();
    a.fixture("pretrain_small");
    let r = a.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.with_status("ran").len(), 6);

    let pre = metrics(&a, &r, "pre");
    assert_eq!(pre.len(), 30);
    let first = pre[0]["loss"].as_f64().unwrap();
    let last = pre[29]["loss"].as_f64().unwrap();
    assert!(last < first - 0.5, "loss must fall: {first} → {last}");
    assert_eq!(pre[29]["tokens"], 30 * 4 * 32);
    let ann = metrics(&a, &r, "ann");
    let state = |stage: &str| -> serde_json::Value {
        serde_json::from_str(&a.read(&format!("cache/artifacts/{}/trainer_state.json", r.artifact(stage)))).unwrap()
    };
    assert_eq!(state("pre")["end_lr"], 3.0e-3);
    assert_eq!(ann[0]["lr"], state("pre")["end_lr"], "the anneal starts at the LR pretraining ended with");
    let rates: Vec<f64> = ann.iter().map(|row| row["lr"].as_f64().unwrap()).collect();
    assert!(rates.windows(2).all(|w| w[1] < w[0]) && rates[9] > 0.0, "every step trains: {rates:?}");
    assert_eq!(state("ann")["end_lr"], 0.0);
    let weights = |stage: &str| a.read_bytes(&format!("cache/artifacts/{}/model.safetensors", r.artifact(stage)));
    assert_ne!(weights("ann"), weights("pre"), "the anneal must change the weights");
    let (pre_val, ann_val) =
        (state("pre")["final_val_loss"].as_f64().unwrap(), state("ann")["final_val_loss"].as_f64().unwrap());
    assert!(ann_val < pre_val, "the anneal must lower the loss on its data: {pre_val} → {ann_val}");

    let eval: serde_json::Value =
        serde_json::from_str(&a.read(&format!("cache/artifacts/{}/metrics.json", r.artifact("ev")))).unwrap();
    let loss = eval["val_loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss < (400f64).ln(), "{eval}");
    assert!((eval["perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-9);
    assert_eq!(eval["tokens"], 8 * 32);
    assert!(eval["bits_per_byte"].as_f64().unwrap() > 0.0);

    // The same stages in an empty store give the same bytes.
    let b = Project::new();
    b.fixture("pretrain_small");
    let r2 = b.apply("wf.yaml", &[]);
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    for s in ["text", "data", "model", "pre", "ann", "ev"] {
        assert_eq!(r.artifact(s), r2.artifact(s), "stage `{s}` is not deterministic");
    }
    // And a second apply runs nothing.
    assert_eq!(a.apply("wf.yaml", &[]).with_status("cached").len(), 6);
}

/// After a schedule that decays to 0 the anneal would train at rate 0 (its weights came out
/// byte-identical to its input's): it must fail, naming itself, its input and `start_lr`.
#[test]
fn an_anneal_with_nothing_to_anneal_fails_and_names_start_lr() {
    let p = Project::new();
    p.fixture("continuation");
    let r = p.apply("wf.yaml", &["--target", "ann"]);
    assert_eq!(r.status("decayed"), "ran", "{}", r.stderr);
    assert_eq!(r.status("ann"), "failed");
    let tail = r.stage("ann")["log_tail"].to_string();
    for part in ["stage `ann`", "stage `decayed`", "set `start_lr`", "learning rate 0"] {
        assert!(tail.contains(part), "`{part}` missing from {tail}");
    }
    let fixed = p.apply("wf.yaml", &["--target", "ann", "--set", "ann.with.start_lr=1e-3"]);
    assert_eq!(fixed.status("ann"), "ran", "{}", fixed.stderr);
    let weights = |stage: &str| p.read_bytes(&format!("cache/artifacts/{}/model.safetensors", fixed.artifact(stage)));
    assert_ne!(weights("ann"), weights("decayed"));
}

/// A continuation with the stage's default seed used to draw the windows its input run drew:
/// step 5 of `again` (the weights `four` ended with, unmoved) then had, to the last bit, the
/// loss of step 5 of `five` (the same weights, on the seed's fifth windows).
#[test]
fn a_continuation_draws_fresh_windows() {
    let p = Project::new();
    p.fixture("continuation");
    let r = p.apply("wf.yaml", &["--target", "again", "--target", "five"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let weights = |stage: &str| p.read_bytes(&format!("cache/artifacts/{}/model.safetensors", r.artifact(stage)));
    assert_eq!(weights("again"), weights("four"), "a rate of 1e-20 moves no weight");
    let (again, five) = (metrics(&p, &r, "again"), metrics(&p, &r, "five"));
    let losses = |rows: &[serde_json::Value]| rows.iter().map(|row| row["loss"].as_f64().unwrap()).collect::<Vec<_>>();
    let (again, five) = (losses(&again), losses(&five));
    assert_ne!(again[4], five[4], "the continuation replayed its input's windows");
    let distinct: std::collections::BTreeSet<u64> = again.iter().map(|l| l.to_bits()).collect();
    assert_eq!(distinct.len(), 5, "each step draws its own windows: {again:?}");
}

#[test]
fn an_interrupted_pretrain_resumes_to_the_same_artifact() {
    let clean = Project::new();
    clean.fixture("pretrain_resume");
    let reference = clean.apply("wf.yaml", &["--target", "pre"]);
    assert_eq!(reference.code, 0, "{}", reference.stderr);

    let p = Project::new();
    p.fixture("pretrain_resume");
    assert_eq!(p.apply("wf.yaml", &["--target", "model"]).code, 0);
    let child = p
        .command(&["apply", "wf.yaml", "--target", "pre", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkpoint = || {
        std::fs::read_dir(p.cache().join("scratch"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|d| d.path().join("resume/checkpoint/state.json").exists())
    };
    while !checkpoint() {
        assert!(Instant::now() < deadline, "no checkpoint was written");
        std::thread::sleep(Duration::from_millis(2));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let interrupted = crate::util::parse_applied(child.wait_with_output().unwrap());
    assert_eq!(interrupted.code, 130, "{}", interrupted.stderr);

    let out = p.command(&["apply", "wf.yaml", "--target", "pre", "--json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first_step = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "stage_progress" && v["stage"] == "pre")
        .map(|v| v["progress"]["step"].as_u64().unwrap())
        .expect("progress events");
    assert!(first_step > 1, "the second run must resume, not start over (first step {first_step})");
    let resumed = crate::util::parse_applied(out);
    assert_eq!(resumed.status("pre"), "ran");
    assert_eq!(
        resumed.artifact("pre"),
        reference.artifact("pre"),
        "resumed artifact differs from an uninterrupted run"
    );
}

#[test]
fn the_data_split_is_disjoint_and_shards_hold_every_document() {
    let p = Project::new();
    p.fixture("pretrain_small");
    let r = p.apply("wf.yaml", &["--target", "data"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = p.cache().join("artifacts").join(r.artifact("data"));
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let tokenizer = flow::ml::tokenizer::Tokenizer::load(&dir.join("tokenizer.json")).unwrap();
    let read = |name: &str| -> Vec<String> {
        let ids = flow::ml::shards::read(&dir.join(name), flow::ml::shards::Dtype::U16).unwrap();
        ids.split(|&t| t == flow::ml::tokenizer::EOT)
            .filter(|d| !d.is_empty())
            .map(|d| tokenizer.decode(d).unwrap())
            .collect()
    };
    let (train, val) = (read("train.bin"), read("val.bin"));
    assert_eq!(train.len() as u64, index["train"]["documents"].as_u64().unwrap());
    assert_eq!(val.len() as u64, index["val"]["documents"].as_u64().unwrap());
    assert_eq!(train.len() + val.len(), 400 - index["duplicates_removed"].as_u64().unwrap() as usize);
    let train_set: std::collections::HashSet<&String> = train.iter().collect();
    assert!(val.iter().all(|d| !train_set.contains(d)), "a document is in both splits");
    let tokens: u64 = train.iter().map(|d| tokenizer.encode(d).unwrap().len() as u64 + 1).sum();
    assert_eq!(tokens, index["train"]["tokens"].as_u64().unwrap(), "tokens = documents' tokens + one separator each");
}

#[test]
fn a_data_stage_can_take_a_given_tokenizer_json() {
    let p = Project::new();
    p.fixture("pretrain_small");
    let r = p.apply("wf.yaml", &["--target", "data"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let given = std::fs::read(p.cache().join("artifacts").join(r.artifact("data")).join("tokenizer.json")).unwrap();
    std::fs::create_dir_all(p.path().join("tok")).unwrap();
    std::fs::write(p.path().join("tok/tokenizer.json"), &given).unwrap();
    p.fixture("given_tokenizer");
    let r = p.apply("two.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dir = p.cache().join("artifacts").join(r.artifact("d"));
    assert_eq!(std::fs::read(dir.join("tokenizer.json")).unwrap(), given, "the given tokenizer is used as is");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["train"]["documents"], 2);
}

#[test]
fn merges_run_on_trained_models_and_refuse_mismatched_shapes() {
    let p = Project::new();
    p.fixture("merges");
    let r = p.apply("wf.yaml", &["--keep-going"]);
    assert_eq!(r.status("same"), "ran", "{}", r.stderr);
    assert_eq!(r.status("ties"), "ran", "{}", r.stderr);
    let weights = |stage: &str| {
        std::fs::read(p.cache().join("artifacts").join(r.artifact(stage)).join("model.safetensors")).unwrap()
    };
    assert_eq!(weights("same"), weights("pre"), "a linear merge of one model with itself is that model, bit for bit");
    assert_ne!(weights("ties"), weights("pre"));
    assert_eq!(r.status("bad"), "failed");
    let tail = r.stage("bad")["log_tail"].to_string();
    assert!(tail.contains("model.embed_tokens.weight") && tail.contains("shape"), "{tail}");
    // A filtered λ: attention stays the base's (λ = 0), everything else becomes `pre` (λ = 1).
    let tensors = |stage: &str| {
        candle_core::safetensors::load(
            p.cache().join("artifacts").join(r.artifact(stage)).join("model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap()
    };
    let (merged, base, pre) = (tensors("filtered"), tensors("model"), tensors("pre"));
    assert_eq!(merged.len(), pre.len());
    for (name, t) in &merged {
        let want = if name.contains("self_attn") { &base[name] } else { &pre[name] };
        assert_eq!(bits(t), bits(want), "{name}");
    }
    assert!(merged.iter().any(|(name, t)| bits(t) != bits(&pre[name])));
    assert_eq!(r.status("uncovered"), "failed");
    let tail = r.stage("uncovered")["log_tail"].to_string();
    assert!(tail.contains("no rule of `lambda` applies to tensor `model."), "{tail}");
    assert_eq!(r.code, 1);
}

fn bits(t: &candle_core::Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

#[test]
fn a_grown_model_keeps_its_loss_under_zero_growth_and_trains_after_stacking() {
    let p = Project::new();
    p.fixture("grow");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let loss = |stage: &str| -> f64 {
        let m: serde_json::Value =
            serde_json::from_str(&p.read(&format!("cache/artifacts/{}/metrics.json", r.artifact(stage)))).unwrap();
        m["val_loss"].as_f64().unwrap()
    };
    let (before, after) = (loss("ev-pre"), loss("ev-deeper"));
    assert!((before - after).abs() < 1e-4 * before, "function-preserving growth changed the loss: {before} → {after}");
    let config: serde_json::Value =
        serde_json::from_str(&p.read(&format!("cache/artifacts/{}/config.json", r.artifact("deeper")))).unwrap();
    assert_eq!(
        (config["num_hidden_layers"].as_u64(), config["hidden_size"].as_u64(), config["num_attention_heads"].as_u64()),
        (Some(3), Some(64), Some(8))
    );
    let more = metrics(&p, &r, "more");
    assert!(more[19]["loss"].as_f64().unwrap() < more[0]["loss"].as_f64().unwrap(), "the stacked model must train");
    let bad = p.apply("wf.yaml", &["--set", "stacked.with.layers=5"]);
    assert_eq!(bad.status("stacked"), "failed");
    assert!(bad.stage("stacked")["log_tail"].to_string().contains("multiple"), "{:?}", bad.stage("stacked"));
}

#[test]
fn sft_reports_what_its_data_held_and_refuses_bad_records_by_line() {
    let p = Project::new();
    let long = "a b c d e f g h ".repeat(20);
    let lines = [
        serde_json::json!({"prompt": "What is 2 + 2?", "response": "4"}),
        serde_json::json!({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}),
        // Nothing to learn: no assistant turn.
        serde_json::json!({"messages": [{"role": "user", "content": "anyone there?"}]}),
        // Longer than seq_len: cut to its start, and its whole answer with it.
        serde_json::json!({"prompt": long, "response": "done"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    p.write("chats.jsonl", &text);
    p.fixture("sft");
    let r = p.apply("wf.yaml", &["--keep-going"]);
    assert_eq!(r.status("tuned"), "ran", "{}", r.stderr);
    let report: serde_json::Value =
        serde_json::from_str(&p.read(&format!("cache/artifacts/{}/sft_data.json", r.artifact("tuned")))).unwrap();
    assert_eq!(report["conversations"], 4);
    assert_eq!(report["train_conversations"], 2);
    assert_eq!(report["truncated"], 1);
    assert!(report["trainable_tokens_dropped"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["no_trainable_tokens"], 2);
    assert_eq!(report["no_trainable_examples"], serde_json::json!(["chats.jsonl:3", "chats.jsonl:4"]));
    assert_eq!(metrics(&p, &r, "tuned").len(), 3);
    assert_eq!(r.status("broken"), "failed");
    let tail = r.stage("broken")["log_tail"].to_string();
    assert!(tail.contains("broken.jsonl` line 2") && tail.contains("reserved token `<|im_end|>`"), "{tail}");
    assert_eq!(r.status("notes"), "failed");
    assert!(r.stage("notes")["log_tail"].to_string().contains("is not one"));
}

/// Every built-in kind, on CPU with fixed seeds, writes the same bytes in an empty store, and
/// again with a different number of threads.
#[test]
fn every_built_in_kind_is_bit_reproducible_on_cpu() {
    // More threads than this machine's cores still tell whether results depend on the count.
    let runs: Vec<Applied> = [None, None, Some("1"), Some("3"), Some("5")]
        .into_iter()
        .map(|threads| {
            let p = Project::new();
            p.fixture("every_kind");
            let mut command = p.command(&["apply", "wf.yaml", "--json"]);
            if let Some(n) = threads {
                command.env("RAYON_NUM_THREADS", n);
            }
            let r = crate::util::parse_applied(command.output().unwrap());
            assert_eq!(r.code, 0, "{}", r.stderr);
            r
        })
        .collect();
    assert_eq!(runs[0].stages.len(), 13);
    for stage in &runs[0].stages {
        let name = stage["stage"].as_str().unwrap();
        assert_eq!(runs[1].artifact(name), runs[0].artifact(name), "`{name}` differs between two runs");
        for (run, threads) in runs[2..].iter().zip([1, 3, 5]) {
            assert_eq!(run.artifact(name), runs[0].artifact(name), "`{name}` differs on {threads} threads");
        }
    }
}

/// `precision: bf16` trains through bf16 casts of f32 master weights: it learns about as well
/// as f32, the optimizer state and the saved weights stay f32, and spelling out the default
/// `precision: f32` changes no fingerprint.
#[test]
fn bf16_training_keeps_f32_weights_and_tracks_the_f32_loss() {
    let p = Project::new();
    p.fixture("pretrain_small");
    let base = p.apply("wf.yaml", &["--target", "pre"]);
    assert_eq!(base.code, 0, "{}", base.stderr);
    let explicit = p.apply("wf.yaml", &["--target", "pre", "--set", "pre.with.precision=f32"]);
    assert_eq!(explicit.status("pre"), "cached", "the default precision is not part of the parameters");
    let half = p.apply("wf.yaml", &["--target", "pre", "--set", "pre.with.precision=bf16"]);
    assert_eq!(half.code, 0, "{}", half.stderr);
    assert_ne!(half.stage("pre")["fingerprint"], base.stage("pre")["fingerprint"]);
    let loss = |r: &Applied| metrics(&p, r, "pre").last().unwrap()["loss"].as_f64().unwrap();
    let first = metrics(&p, &base, "pre")[0]["loss"].as_f64().unwrap();
    let (l32, l16) = (loss(&base), loss(&half));
    assert!(l16 < first - 0.5, "bf16 learns: {first} → {l16}");
    assert!((l16 - l32).abs() < 0.1 * l32, "bf16 {l16} vs f32 {l32}");
    let dir = p.cache().join("artifacts").join(half.artifact("pre"));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let tensors = candle_core::safetensors::load(dir.join(file), &candle_core::Device::Cpu).unwrap();
        assert!(tensors.values().all(|t| t.dtype() != candle_core::DType::BF16), "{file} holds f32 (and the u64 step)");
    }
    let bad = p.flow(&["plan", "wf.yaml", "--set", "pre.with.precision=fp8"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("stage `pre`, parameter `precision`: unknown variant `fp8`"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// Re-warming: continued pretraining from a trained model with a fresh warmup, with and without
/// the input's optimizer state. The rate climbs again from near 0, both runs learn, and the
/// optimizer state makes a difference to the weights.
#[test]
fn continued_pretraining_rewarms_with_and_without_the_optimizer_state() {
    let p = Project::new();
    p.fixture("continuation");
    let r = p.apply("wf.yaml", &["--target", "rewarm", "--target", "rewarm-with-state"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let state = |stage: &str| -> serde_json::Value {
        serde_json::from_str(&p.read(&format!("cache/artifacts/{}/trainer_state.json", r.artifact(stage)))).unwrap()
    };
    let before = state("four")["final_val_loss"].as_f64().unwrap();
    for stage in ["rewarm", "rewarm-with-state"] {
        let rows = metrics(&p, &r, stage);
        let rates: Vec<f64> = rows.iter().map(|row| row["lr"].as_f64().unwrap()).collect();
        assert_eq!(&rates[..3], [1.0e-3, 2.0e-3, 3.0e-3], "{stage}: the warmup starts again");
        let after = state(stage)["final_val_loss"].as_f64().unwrap();
        assert!(after < before, "{stage} must keep learning: {before} → {after}");
    }
    let weights = |stage: &str| p.read_bytes(&format!("cache/artifacts/{}/model.safetensors", r.artifact(stage)));
    assert_ne!(weights("rewarm"), weights("rewarm-with-state"), "the input's optimizer state is used");
}

/// The data keeps each source's validation tokens apart, training evaluates each source (and
/// the data a stage names in `val`), conversations in a mixture carry the chat markers, and
/// SFT mixes replayed text into its rows.
#[test]
fn training_measures_each_source_and_sft_can_replay_pretraining_text() {
    let p = Project::new();
    let chats: String = (0..80)
        .map(|i| {
            let conv = serde_json::json!({"messages": [
                {"role": "user", "content": format!("what comes after {i}?")},
                {"role": "assistant", "content": format!("{}", i + 1)},
            ]});
            format!("{conv}\n")
        })
        .collect();
    p.write("chats.jsonl", &chats);
    p.fixture("sources");
    let r = p.apply("wf.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let data = format!("cache/artifacts/{}", r.artifact("mix"));
    let index: serde_json::Value = serde_json::from_str(&p.read(&format!("{data}/index.json"))).unwrap();
    let sources = index["sources"].as_array().unwrap();
    let names: Vec<&str> = sources.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["prose", "sums", "inputs"]);
    let parts: Vec<u64> = sources.iter().map(|s| s["val_tokens"].as_u64().unwrap()).collect();
    assert!(parts.iter().all(|&n| n > 32), "{parts:?}");
    assert_eq!(parts.iter().sum::<u64>(), index["val"]["tokens"].as_u64().unwrap());
    let train: Vec<u16> =
        p.read_bytes(&format!("{data}/train.bin")).chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let count = |id: u16| train.iter().filter(|&&t| t == id).count();
    assert!(count(2) > 0 && count(2) == count(3), "the conversations' <|im_start|>/<|im_end|> are in the mixture");

    let pre = metrics(&p, &r, "pre");
    let keys = ["val_loss/prose", "val_loss/sums", "val_loss/inputs"];
    assert!(keys.iter().all(|k| pre[0].get(*k).is_none()), "only where evaluated: {}", pre[0]);
    let curves: Vec<f64> =
        keys.iter().map(|k| pre[3][*k].as_f64().unwrap_or_else(|| panic!("{k} in {}", pre[3]))).collect();
    assert!(curves[0] != curves[1] && curves[1] != curves[2], "{curves:?}");
    let tuned = metrics(&p, &r, "tuned");
    assert!(tuned[3]["val_loss/mix"].as_f64().unwrap() > 0.0, "{}", tuned[3]);
    let svg = p.path().join("pre.svg");
    let out = p.flow(&["show", "wf.yaml", "pre", "--plot", svg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("val_loss/sums"));

    let report: serde_json::Value =
        serde_json::from_str(&p.read(&format!("cache/artifacts/{}/sft_data.json", r.artifact("replayed")))).unwrap();
    assert_eq!(report["replay_rows"], 8, "a quarter of 8 steps × 4 rows");
    let weights = |stage: &str| p.read_bytes(&format!("cache/artifacts/{}/model.safetensors", r.artifact(stage)));
    assert_ne!(weights("replayed"), weights("tuned"));
    // A sweep's baseline: the replay stage named, no replay rows drawn — the weights of the
    // run without the role.
    let zero = p.apply("wf.yaml", &["--target", "replayed", "--set", "replayed.with.replay=0.0"]);
    assert_eq!(zero.status("replayed"), "ran");
    assert_eq!(
        p.read_bytes(&format!("cache/artifacts/{}/model.safetensors", zero.artifact("replayed"))),
        weights("tuned")
    );
}
