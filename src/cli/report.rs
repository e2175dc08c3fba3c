//! Reporters: render executor [`Event`]s for people (status lines on stderr, a live progress
//! bar on a TTY) or for machines (`--json`: one JSON object per line on stdout).

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::{Event, StageOutcome, Status, Summary};

pub enum Reporter {
    Human(Human),
    Json,
}

pub struct Human {
    bar: Option<ProgressBar>,
    running: Mutex<Vec<String>>,
}

impl Reporter {
    pub fn human(progress: bool) -> Self {
        let bar = progress.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Reporter::Human(Human { bar, running: Mutex::new(Vec::new()) })
    }

    pub fn event(&self, event: &Event) {
        match self {
            Reporter::Json => {
                let line = match event {
                    Event::Stage(o) => json_stage(o),
                    other => serde_json::to_value(other).expect("events serialise"),
                };
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            Reporter::Human(h) => h.event(event),
        }
    }
}

fn json_stage(o: &StageOutcome) -> serde_json::Value {
    let mut v = serde_json::to_value(o).expect("outcomes serialise");
    v.as_object_mut().expect("an object").insert("type".into(), "stage".into());
    v
}

impl Human {
    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }

    fn set_running(&self, update: impl FnOnce(&mut Vec<String>)) {
        let mut running = self.running.lock().expect("reporter lock");
        update(&mut running);
        if let Some(bar) = &self.bar {
            bar.set_message(running.join(", "));
        }
    }

    fn event(&self, event: &Event) {
        match event {
            Event::RunStarted { stages, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(*stages as u64);
                }
            }
            Event::StageWaiting { stage, .. } => {
                self.line(format!("{:>9} {:>10} {stage} (another run of the same fingerprint holds its lock)", "WAITING", ""));
            }
            Event::StageStarted { stage, .. } => self.set_running(|r| r.push(stage.clone())),
            Event::Stage(o) => {
                self.set_running(|r| r.retain(|s| s != &o.stage));
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
                self.line(self.status_line(o));
            }
            Event::RunFinished(s) => {
                if let Some(bar) = &self.bar {
                    bar.finish_and_clear();
                }
                self.line(summary_line(s));
            }
        }
    }

    fn status_line(&self, o: &StageOutcome) -> String {
        let short = o.artifact.map(|a| a.short()).unwrap_or_default();
        let time = format!("[{:>7.3}s]", o.seconds);
        match o.status {
            Status::Ran => format!("{:>9} {time} {} {short}", "RAN", o.stage),
            Status::Cached => format!("{:>9} {time} {} {short}", "CACHED", o.stage),
            Status::Skipped => {
                format!("{:>9} {:>10} {} ({})", "SKIPPED", "", o.stage, o.reason.as_deref().unwrap_or("skipped"))
            }
            Status::Failed => {
                let mut text = format!("{:>9} {time} {} {}", "FAILED", o.stage, o.reason.as_deref().unwrap_or("failed"));
                for l in &o.log_tail {
                    text.push_str(&format!("\n{:>20} {l}", "│"));
                }
                if let Some(log) = &o.log {
                    text.push_str(&format!("\n{:>20} log: {}", "", log.display()));
                }
                text
            }
        }
    }
}

pub fn summary_line(s: &Summary) -> String {
    let total = s.ran + s.cached + s.failed + s.skipped;
    let mut text = format!(
        "{:>9} [{:>7.3}s] {total} stage{}: {} ran, {} cached, {} failed, {} skipped",
        "Summary",
        s.seconds,
        if total == 1 { "" } else { "s" },
        s.ran,
        s.cached,
        s.failed,
        s.skipped
    );
    if s.interrupted {
        text.push_str(" (interrupted)");
    }
    text
}
