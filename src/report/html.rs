//! The page itself: a maud template around the [`Page`] as one JSON document, with the script
//! that draws it (`assets/report.js`) and its styles (`assets/report.css`) inline. The page's
//! content security policy allows nothing from outside the file: it works offline, and a
//! reference to anything else would fail loudly in a test rather than leak a request.

use maud::{DOCTYPE, PreEscaped, html};

use super::{Page, Shown};

const SCRIPT: &str = include_str!("assets/report.js");
const STYLE: &str = include_str!("assets/report.css");
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:";

/// Every state, in the order the legend shows them.
const STATES: [Shown; 7] =
    [Shown::Ran, Shown::Cached, Shown::Downloaded, Shown::Failed, Shown::Skipped, Shown::WillRun, Shown::WillDownload];

fn label(state: Shown) -> &'static str {
    match state {
        Shown::Ran => "ran",
        Shown::Cached => "cached",
        Shown::Downloaded => "downloaded",
        Shown::Failed => "failed",
        Shown::Skipped => "skipped",
        Shown::WillRun => "will run",
        Shown::WillDownload => "will download",
    }
}

/// The page's JSON, safe inside a `<script>` element: no `<` can close it (JSON has `<` only
/// inside strings, where `\u003c` reads back the same).
fn data(page: &Page) -> String {
    serde_json::to_string(page).expect("pages serialise").replace('<', "\\u003c")
}

pub fn render(page: &Page) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(POLICY);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "flow report: " (page.workflow) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { (page.workflow) }
                    p.meta { code { (page.file) } " · " (page.stages.len()) " stages · generated " (page.generated) " by flow " (page.flow_version) }
                    div #counts {
                        @for state in STATES {
                            @if let Some(n) = page.counts.get(state.as_str()) {
                                span class={ "count s-" (state.as_str()) } data-state=(state.as_str()) { (n) " " (label(state)) }
                            }
                        }
                    }
                }
                div #controls {
                    input #search type="search" placeholder="Filter stages by name or kind" autocomplete="off";
                    @for state in STATES {
                        label.toggle { input type="checkbox" checked data-state=(state.as_str()); span class={ "dot s-" (state.as_str()) } {} (label(state)) }
                    }
                    span #shown {}
                }
                section #graph { svg #dag xmlns="http://www.w3.org/2000/svg" {} }
                main {
                    section #list {
                        table #stages {
                            thead { tr { th { "stage" } th { "kind" } th { "state" } th { "time" } th { "artifact" } } }
                            tbody {}
                        }
                        p #more {}
                    }
                    aside #details { p.hint { "Click a stage in the graph or the list to see its details." } }
                }
                script #data type="application/json" { (PreEscaped(data(page))) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
    .into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_cannot_close_its_script_element() {
        let page = Page {
            workflow: "</script><script>alert(1)</script>".into(),
            file: "wf.yaml".into(),
            generated: "2026-12-07T00:00:00Z".into(),
            flow_version: "0".into(),
            counts: Default::default(),
            stages: Vec::new(),
            edges: Vec::new(),
        };
        let html = render(&page);
        assert_eq!(html.matches("</script>").count(), 2, "the data's and the code's own closing tags only");
        assert!(html.contains("<title>flow report: &lt;/script&gt;"));
        let json = data(&page);
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["workflow"], "</script><script>alert(1)</script>");
    }
}
