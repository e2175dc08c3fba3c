//! What each fuzz target checks of one input. Shared by the targets (`cargo fuzz run …`) and by
//! the test suite, which runs every seed and every kept regression input through it.

use std::path::Path;

use flow::hash::Fingerprint;
use flow::store::{Manifest, Record};

/// A workflow file: parsing, the kinds' checks and the graph either accept it or report
/// errors that each name their position, and rendering those errors never fails.
pub(crate) fn workflow(data: &[u8]) {
    let path = Path::new("/nonexistent/fuzz/wf.yaml");
    let errors = match flow::spec::parse(path, data.to_vec(), &[]) {
        Err(e) => e,
        Ok(wf) => match flow::stages::Registry::builtin().check(&wf).and_then(|_| flow::graph::Dag::build(&wf)) {
            Ok(dag) => {
                assert_eq!(dag.order().len(), wf.stages.len(), "the order holds every stage once");
                return;
            }
            Err(e) => e,
        },
    };
    assert!(!errors.errors.is_empty(), "a failure reports at least one error");
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor()).with_width(100);
    for e in &errors.errors {
        assert!(e.location.is_some() || e.message.contains("wf.yaml:"), "an error without a position: {}", e.message);
        let mut out = String::new();
        handler.render_report(&mut out, e).expect("errors render");
    }
}

/// A manifest from an untrusted store: refused, or valid and stable when written back.
pub(crate) fn manifest(data: &[u8]) {
    let Ok(m) = Manifest::parse(data) else { return };
    let again = Manifest::parse(&m.bytes()).expect("a valid manifest written back parses");
    assert_eq!(again.digest(), m.digest(), "writing a manifest back is stable");
    let total: u64 = m.files().map(|(_, size, _, _)| size).sum();
    assert_eq!(total, m.total_size());
}

/// A record from an untrusted store: refused, or carrying the fingerprint it is stored under.
pub(crate) fn record(data: &[u8]) {
    let expected: Fingerprint =
        "72c455bc47e54c3e5108494f5e1cc7e4fed95b7299225918d71b92546937375e".parse().expect("a fingerprint");
    if let Ok(r) = Record::parse(data, expected) {
        assert_eq!(r.fingerprint, expected);
        let bytes = serde_json::to_vec(&r).expect("records serialise");
        Record::parse(&bytes, expected).expect("a valid record written back parses");
    }
}
