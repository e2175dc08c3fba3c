//! The fuzz targets' seeds and every input the fuzzers found (`fuzz/regressions/`), run
//! through the same checks as `cargo fuzz run` (`fuzz/harness.rs`) on every test run.

use std::path::Path;

#[path = "../fuzz/harness.rs"]
mod harness;

/// Runs `check` on every file of `fuzz/seeds/<target>` and `fuzz/regressions/<target>`;
/// returns how many there were.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            eprintln!("{}", path.display());
            check(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn workflow_seeds_and_regressions_pass_the_fuzz_checks() {
    assert!(replay("workflow", harness::workflow) >= 10);
}

#[test]
fn manifest_seeds_and_regressions_pass_the_fuzz_checks() {
    assert!(replay("manifest", harness::manifest) >= 5);
}

#[test]
fn record_seeds_and_regressions_pass_the_fuzz_checks() {
    assert!(replay("record", harness::record) >= 5);
}
