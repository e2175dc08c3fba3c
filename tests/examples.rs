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
