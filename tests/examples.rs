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
    assert!(svg.starts_with("<svg") && svg.contains("learning rate") && svg.contains("<polyline"), "{}", &svg[..200.min(svg.len())]);
}
