//! `flow report` and `flow apply --report`: the page, rendered by headless Chromium with no
//! network, asserted on through the DOM its script builds.

use crate::observe::exports_project;
use crate::util::Project;

/// The exports fixture, plus an eval, a stage that fails and one that needs it.
fn report_project() -> Project {
    let p = exports_project();
    let wf = p.read("wf.yaml")
        + "  ev: {kind: eval, needs: {model: pre, data: data}, with: {seq_len: 16, windows: 4, prompts: [the], max_tokens: 4}}\n"
        + "  broken: {kind: command, needs: {model: pre}, run: 'echo \"cannot train: no GPU here\" >&2; exit 3'}\n"
        + "  after: {kind: command, needs: {model: broken}, run: 'echo never > $FLOW_OUT/x'}\n";
    p.write("wf.yaml", &wf);
    p
}

/// Headless Chromium, with no network, on `page` (a file of the project): the DOM its script
/// renders.
fn rendered(p: &Project, page: &str, stage: &str) -> String {
    let out = chromium(p, &["--dump-dom".into(), format!("file://{}#{stage}", p.path().join(page).display())]);
    String::from_utf8(out).unwrap()
}

fn chromium(p: &Project, args: &[String]) -> Vec<u8> {
    let profile = p.path().join(".chromium");
    let out = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
        .arg("--host-resolver-rules=MAP * ~NOTFOUND")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs (scripts/test.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The points of the first curve of `metric` on a rendered page.
fn curve_points(dom: &str, metric: &str) -> usize {
    let at = dom.find(&format!("data-metric=\"{metric}\"")).unwrap_or_else(|| panic!("no `{metric}` chart"));
    let points = &dom[at..][dom[at..].find("points=\"").unwrap() + 8..];
    points[..points.find('"').unwrap()].split(' ').count()
}

/// `flow apply --report` writes one self-contained page that a browser with no network renders:
/// each stage in its state, a training stage's curves, an eval's tables, a failure's log; and
/// `flow report` draws the same workflow later, from the store alone.
#[test]
#[ignore = "needs headless Chromium (scripts/test.sh installs it)"]
fn the_report_renders_every_stage_state_curves_and_tables_offline() {
    let p = report_project();
    let r = p.apply("wf.yaml", &["--keep-going", "--report", "r.html"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let html = p.read("r.html");
    assert!(html.contains("Content-Security-Policy") && html.contains("default-src 'none'"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "nothing is loaded from elsewhere");

    let dom = rendered(&p, "r.html", "pre");
    for (stage, state) in
        [("news", "ran"), ("pre", "ran"), ("ev", "ran"), ("fit", "ran"), ("broken", "failed"), ("after", "skipped")]
    {
        assert!(dom.contains(&format!("data-stage=\"{stage}\" data-state=\"{state}\"")), "{stage} is not {state}");
    }
    assert!(dom.contains("<aside id=\"details\" data-stage=\"pre\">"), "the stage in the URL is shown");
    assert_eq!(curve_points(&dom, "loss"), 8, "a point per step");
    assert!(dom.contains("data-metric=\"val_loss (per source)\"") && dom.contains("data-series=\"val_loss/tales\""));
    assert!(dom.contains("why it ran") && dom.contains(&r.artifact("pre")));

    let broken = rendered(&p, "r.html", "broken");
    assert!(broken.contains("exited with code 3") && broken.contains("cannot train: no GPU here"), "{broken}");
    let ev = rendered(&p, "r.html", "ev");
    assert!(ev.contains("evaluation") && ev.contains("<td>the</td>"), "the eval's tables and samples");
    let fit = rendered(&p, "r.html", "fit");
    assert_eq!(curve_points(&fit, "loss"), 6, "a command's reported curve");

    // The screenshot docs/report.md shows comes from here.
    let shot = p.path().join("report.png");
    chromium(
        &p,
        &[
            "--window-size=1400,1500".into(),
            format!("--screenshot={}", shot.display()),
            format!("file://{}#pre", p.path().join("r.html").display()),
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "{} bytes", png.len());
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::copy(&shot, target.join("report-screenshot.png")).unwrap();

    let later = p.flow(&["report", "wf.yaml", "-o", "later.html"]);
    assert!(later.status.success(), "{}", String::from_utf8_lossy(&later.stderr));
    let dom = rendered(&p, "later.html", "after");
    for (stage, state) in [("pre", "cached"), ("fit", "cached"), ("broken", "failed"), ("after", "will_run")] {
        assert!(dom.contains(&format!("data-stage=\"{stage}\" data-state=\"{state}\"")), "{stage} is not {state}");
    }
}
