//! The layers point one way: `spec` and `hash` at the bottom; `graph`, `store`, `ml` and
//! `synth` above them; then `stages`, `exec`, `export` and `report` (consumers of what `exec`
//! reports and stores), and `cli` on top, the only one that prints. A
//! module may name (`crate::…`) only modules of the layers below its own.

use std::path::Path;

/// Each top-level module with the modules it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("hash", &[]),
    ("spec", &[]),
    ("synth", &[]),
    ("graph", &["spec", "hash"]),
    ("store", &["spec", "hash"]),
    ("ml", &["spec", "hash"]),
    ("stages", &["spec", "hash", "graph", "store", "ml", "synth"]),
    ("exec", &["spec", "hash", "graph", "store", "ml", "synth", "stages"]),
    ("export", &["spec", "hash", "graph", "store", "ml", "synth", "stages", "exec"]),
    ("report", &["spec", "hash", "graph", "store", "ml", "synth", "stages", "exec"]),
    ("cli", &["spec", "hash", "graph", "store", "ml", "synth", "stages", "exec", "export", "report"]),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules `text` names as `crate::<module>`, or in a group `crate::{a::…, b}`.
fn named(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + 7..];
        let Some(group) = rest.strip_prefix('{') else {
            out.push(ident(rest));
            continue;
        };
        // The top-level items of the group: split at commas outside nested braces.
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.push(ident(group[start..i].trim_start()));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(ident(group[start..i].trim_start()));
                    start = i + 1;
                }
                _ => {}
            }
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

#[test]
fn modules_only_use_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (module, allowed) in ALLOWED {
        let mut files = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        if src.join(format!("{module}.rs")).is_file() {
            files.push(src.join(format!("{module}.rs")));
        }
        assert!(!files.is_empty(), "no source for module `{module}`");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for used in named(&text) {
                checked += 1;
                if used != *module && !allowed.contains(&used.as_str()) {
                    wrong.push(format!("{}: `{module}` uses `crate::{used}`", file.display()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
    assert!(checked > 100, "only {checked} references were checked");
    // Every top-level module of the crate has a row above.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
        let module = line.trim_end_matches(';');
        assert!(ALLOWED.iter().any(|(m, _)| *m == module), "module `{module}` has no layer");
    }
}

#[test]
fn the_check_sees_a_forbidden_import() {
    assert_eq!(named("use crate::exec::Event;\nlet x = crate::store::Store::open(p);"), ["exec", "store"]);
    assert_eq!(named("use crate::{cli::{a, b}, spec,\n    store::Store};"), ["cli", "spec", "store"]);
}
