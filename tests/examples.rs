//! The examples in `workflows/` run as written.

use crate::util::Project;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.path().extension().is_none_or(|e| e != "lock") {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn quickstart_runs_caches_and_reruns_only_the_changed_tail() {
    let p = Project::new();
    copy_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows"), &p.path().join("workflows"));
    let r = p.apply("workflows/quickstart.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.with_status("ran"), ["count", "report", "vowels", "words"]);
    let report = p.read(&format!("cache/artifacts/{}/report.txt", r.artifact("report")));
    assert!(report.contains("riding") && report.contains("distinct words starting with a vowel"), "{report}");
    let r = p.apply("workflows/quickstart.yaml", &[]);
    assert_eq!(r.with_status("cached").len(), 4);
    let r = p.apply("workflows/quickstart.yaml", &["--set", "count.with.min_length=5"]);
    assert_eq!(r.with_status("ran"), ["count", "report"]);
    assert_eq!(r.with_status("cached"), ["vowels", "words"]);
}

/// The main example, at a reduced size so the test suite stays fast: same stages, fewer
/// documents and steps. Its full size is measured in docs/benchmarks.md.
#[test]
fn tiny_lm_runs_at_a_reduced_size() {
    let p = Project::new();
    copy_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows"), &p.path().join("workflows"));
    let sets = [
        "text.with.documents=600",
        "rich-text.with.documents=200",
        "corpus.with.vocab_size=512",
        "pretrain.with.steps=12",
        "pretrain.with.warmup=2",
        "pretrain.with.batch=4",
        "anneal.with.steps=4",
        "anneal.with.batch=4",
        "eval.with.windows=4",
    ];
    let mut args = vec![];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let r = p.apply("workflows/tiny-lm.yaml", &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.with_status("ran").len(), 8);
    let metrics: serde_json::Value =
        serde_json::from_str(&p.read(&format!("cache/artifacts/{}/metrics.json", r.artifact("eval")))).unwrap();
    assert!(metrics["val_loss"].as_f64().unwrap() < (512f64).ln(), "{metrics}");
    let samples = p.read(&format!("cache/artifacts/{}/samples.jsonl", r.artifact("eval")));
    assert_eq!(samples.lines().count(), 2);
    let svg = p.path().join("curves.svg");
    let mut show = vec!["show", "workflows/tiny-lm.yaml", "pretrain", "--plot", svg.to_str().unwrap()];
    for s in &sets {
        show.extend(["--set", s]);
    }
    let out = p.flow(&show);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("learning rate") && svg.contains("<polyline"),
        "{}",
        &svg[..200.min(svg.len())]
    );
}

/// The multi-stage example at a reduced size: every stage runs, fine-tuning teaches each model
/// its task, zero growth keeps the loss, and changing the merge re-runs only merge and its eval.
#[test]
fn multistage_runs_at_a_reduced_size_and_a_merge_change_reruns_only_the_tail() {
    let p = Project::new();
    copy_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows"), &p.path().join("workflows"));
    let sets = MULTISTAGE_REDUCED;
    let mut args = vec![];
    for s in sets {
        args.extend(["--set", s]);
    }
    let r = p.apply("workflows/multistage.yaml", &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.with_status("ran").len(), 25);
    let metrics = |stage: &str| -> serde_json::Value {
        serde_json::from_str(&p.read(&format!("cache/artifacts/{}/metrics.json", r.artifact(stage)))).unwrap()
    };
    // Each fine-tune answers more of its own family's held-out problems exactly than the model
    // it started from (which answers none), and makes the expected answers far likelier.
    let score = |stage: &str, family: &str, key: &str| metrics(stage)["tasks"][family][key].as_f64().unwrap();
    for family in ["arithmetic", "sort"] {
        let stage = format!("eval-{family}");
        let (tuned, base) = (score(&stage, family, "accuracy"), score("eval-anneal", family, "accuracy"));
        assert!(tuned > base, "{family}: accuracy fine-tuned {tuned} vs un-fine-tuned {base}");
        let (tuned, base) = (score(&stage, family, "answer_loss"), score("eval-anneal", family, "answer_loss"));
        assert!(tuned < base - 2.0, "{family}: answer loss fine-tuned {tuned} vs un-fine-tuned {base}");
    }
    assert_eq!(metrics("eval-zero")["val_loss"], metrics("eval-small")["val_loss"], "zero growth keeps the loss");
    let answers = p.read(&format!("cache/artifacts/{}/answers.jsonl", r.artifact("eval-merge")));
    assert_eq!(answers.lines().count(), 2 * 30);
    let report: serde_json::Value =
        serde_json::from_str(&p.read(&format!("cache/artifacts/{}/sft_data.json", r.artifact("sft-sort")))).unwrap();
    assert_eq!(report["conversations"], 250);
    assert_eq!(report["no_trainable_tokens"], 0);
    args.extend(["--set", "merge.with.density=0.5"]);
    let again = p.apply("workflows/multistage.yaml", &args);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.with_status("ran"), ["eval-merge", "merge"]);
    assert_eq!(again.with_status("cached").len(), 23);
}

/// The `--set`s of the reduced multi-stage run.
const MULTISTAGE_REDUCED: &[&str] = &[
    "text.with.documents=600",
    "corpus.with.vocab_size=512",
    "arithmetic.with.train=400",
    // Two letters to sort: at this size the model learns little more.
    "sort.with.difficulty={digits: 3, letters: [2, 2]}",
    "sort.with.train=250",
    "heldout.with.difficulty={digits: 2, letters: [2, 2]}",
    "heldout.with.test=30",
    "pretrain-small.with.steps=12",
    "pretrain-small.with.batch=4",
    "pretrain-small.with.warmup=2",
    "pretrain-grown.with.steps=12",
    "pretrain-grown.with.batch=4",
    "pretrain-grown.with.warmup=2",
    "pretrain-scratch.with.steps=20",
    "pretrain-scratch.with.batch=4",
    "pretrain-scratch.with.warmup=2",
    "anneal.with.steps=4",
    "anneal.with.batch=4",
    "sft-arithmetic.with.steps=300",
    "sft-arithmetic.with.lr=3e-3",
    "sft-sort.with.steps=300",
    "sft-sort.with.lr=3e-3",
    "eval-anneal.with.windows=4",
    "eval-arithmetic.with.windows=4",
    "eval-sort.with.windows=4",
    "eval-merge.with.windows=4",
    "eval-small.with.windows=4",
    "eval-zero.with.windows=4",
    "eval-stacked.with.windows=4",
    "eval-grown.with.windows=4",
    "eval-scratch.with.windows=4",
];

/// The sweep example: a matrix stage, the stages that follow it and a `compare` of its
/// members; one more seed runs only the stages of that seed and the tables.
#[test]
fn sweep_compares_the_seeds_of_each_setting_and_one_more_seed_runs_only_its_stages() {
    let p = Project::new();
    copy_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows"), &p.path().join("workflows"));
    let r = p.apply("workflows/sweep.yaml", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.with_status("ran").len(), 19);
    let dir = format!("cache/artifacts/{}", r.artifact("compare"));
    let summary: serde_json::Value = serde_json::from_str(&p.read(&format!("{dir}/summary.json"))).unwrap();
    let groups = summary["groups"].as_array().unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["pretrain@lr=0.001", "pretrain@lr=0.01"]);
    let val = |g: &serde_json::Value, key: &str| g["finals"]["val_loss"][key].as_f64().unwrap();
    for g in groups {
        assert_eq!(g["runs"].as_array().unwrap().len(), 3);
        assert_eq!(g["finals"]["val_loss"]["n"], 3);
        assert!(val(g, "ci_low") < val(g, "mean") && val(g, "mean") < val(g, "ci_high"), "{g}");
        // One point per evaluation (steps 10, 20, 30), each over the three seeds.
        assert_eq!(g["curves"]["val_loss"].as_array().unwrap().len(), 3);
    }
    assert!(val(&groups[1], "ci_high") < val(&groups[0], "ci_low"), "lr=0.01 learns faster in 30 steps: {summary}");
    let csv = p.read(&format!("{dir}/summary.csv"));
    assert_eq!(csv.lines().next(), Some("group,metric,runs,mean,ci_low,ci_high"));
    assert_eq!(csv.lines().filter(|l| l.starts_with("pretrain@lr=0.01,val_loss,3,")).count(), 1);
    assert_eq!(p.read(&format!("{dir}/curves.csv")).lines().filter(|l| l.contains(",val_loss,")).count(), 6);
    let svg = p.read(&format!("{dir}/curves.svg"));
    assert!(svg.starts_with("<svg") && svg.contains("pretrain@lr=0.01") && svg.contains("<polygon"), "{svg:.300}");
    let evals = p.read(&format!("cache/artifacts/{}/summary.csv", r.artifact("compare-eval")));
    assert!(evals.lines().any(|l| l.starts_with("eval@lr=0.001,val_loss,3,")), "{evals}");

    let plan = p.flow(&["plan", "workflows/sweep.yaml", "--target", "pretrain"]);
    let listed = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(listed.lines().filter(|l| l.contains(" pretrain@seed=")).count(), 6, "{listed}");
    assert!(!listed.contains("eval@"), "{listed}");
    let show = p.flow(&["show", "workflows/sweep.yaml", "pretrain"]);
    let said = String::from_utf8_lossy(&show.stderr);
    assert_eq!(show.status.code(), Some(2), "{said}");
    assert!(said.contains("is a matrix stage") && said.contains("pretrain@seed=3,lr=0.01"), "{said}");
    let show = p.flow(&["show", "workflows/sweep.yaml", "pretrain@seed=3,lr=0.01"]);
    assert_eq!(show.status.code(), Some(0), "{}", String::from_utf8_lossy(&show.stderr));
    assert!(String::from_utf8_lossy(&show.stdout).contains(&r.artifact("pretrain@seed=3,lr=0.01")));

    let more = ["--set", "model.matrix.seed=[1, 2, 3, 4]", "--set", "pretrain.matrix.seed=[1, 2, 3, 4]"];
    let r = p.apply("workflows/sweep.yaml", &more);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.with_status("ran"),
        [
            "compare",
            "compare-eval",
            "eval@seed=4,lr=0.001",
            "eval@seed=4,lr=0.01",
            "model@seed=4",
            "pretrain@seed=4,lr=0.001",
            "pretrain@seed=4,lr=0.01"
        ]
    );
    assert_eq!(r.with_status("cached").len(), 17);
}

/// A Python with PyTorch: `FLOW_TEST_TORCH_PYTHON` (scripts/test.sh sets it where one is
/// found), else `python3` if it imports torch.
fn torch_python() -> Option<std::path::PathBuf> {
    let imports = |py: &std::path::Path| {
        std::process::Command::new(py).args(["-c", "import torch"]).output().is_ok_and(|o| o.status.success())
    };
    std::env::var_os("FLOW_TEST_TORCH_PYTHON")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(std::iter::once("python3".into()))
        .find(|py| imports(py))
}

/// `workflows/torch.yaml`: a real PyTorch training script as a command stage, reporting
/// through the Python helper, gets a progress bar's events, metrics in its record, a plot and
/// its curves — and it learns. Skipped, saying so, where PyTorch is not installed.
#[test]
fn the_pytorch_example_trains_and_reports_like_a_built_in_kind() {
    let Some(python) = torch_python() else {
        eprintln!("skipped: PyTorch is not installed (set FLOW_TEST_TORCH_PYTHON to a Python that has it)");
        return;
    };
    let p = Project::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(&root.join("workflows"), &p.path().join("workflows"));
    copy_dir(&root.join("python"), &p.path().join("python"));
    // The stage runs `python3`: the one with PyTorch comes first on PATH.
    let path = match python.parent().filter(|b| !b.as_os_str().is_empty()) {
        Some(b) => format!("{}:{}", b.display(), std::env::var("PATH").unwrap()),
        None => std::env::var("PATH").unwrap(),
    };
    let out = p
        .command(&["apply", "workflows/torch.yaml", "--json", "--set", "train.with.steps=100"])
        .env("PATH", &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let r = crate::util::parse_applied(out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let losses: Vec<f64> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "stage_progress" && e["stage"] == "train")
        .map(|e| e["progress"]["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 100, "a report per step");
    let first: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = losses[90..].iter().sum::<f64>() / 10.0;
    assert!(last < first * 0.75, "it learns: loss {first:.3} → {last:.3}");
    let show = p.flow(&[
        "show",
        "workflows/torch.yaml",
        "train",
        "--json",
        "--plot",
        "train.svg",
        "--set",
        "train.with.steps=100",
    ]);
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let metrics = &shown["record"]["metrics"];
    assert_eq!((metrics["step"].as_u64(), metrics["total"].as_u64()), (Some(100), Some(100)));
    assert!(metrics["val_loss"].as_f64().is_some() && metrics["tokens_per_s"].as_f64().unwrap() > 0.0, "{metrics}");
    assert!(p.read("train.svg").contains("val_loss"));
    let files: Vec<&str> = shown["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(files, ["history.jsonl", "model.pt", "vocab.json"]);
}
