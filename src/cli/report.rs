//! Reporters: render executor [`Event`]s for people (status lines on stderr, a live progress
//! bar on a TTY) or for machines (`--json`: one JSON object per line on stdout).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output::{self, human_bytes};
use crate::exec::{Event, Sink, StageOutcome, Status, Summary};
use crate::stages::Progress;
use crate::store::remote::{Direction, Transfer};

/// The sink a command's run reports to: JSON lines, or status lines for people (with a live
/// bar on a terminal, unless `CI` is set or `progress` is off).
pub(super) fn sink(json: bool, progress: bool) -> Sink {
    let progress = !json && progress && output::stderr_is_terminal() && std::env::var_os("CI").is_none();
    let reporter = if json { Reporter::Json } else { Reporter::human(progress) };
    Arc::new(move |e| reporter.event(e))
}

enum Reporter {
    Human(Human),
    Json,
}

struct Human {
    bar: Option<ProgressBar>,
    /// Each running stage, in the order it started, with what the bar shows of it.
    running: Mutex<Vec<(String, String)>>,
    /// Off a TTY: the last quarter of each stage's transfer that got a line.
    quarters: Mutex<HashMap<String, u64>>,
}

impl Reporter {
    fn human(progress: bool) -> Self {
        let bar = progress.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Reporter::Human(Human { bar, running: Mutex::new(Vec::new()), quarters: Mutex::new(HashMap::new()) })
    }

    fn event(&self, event: &Event) {
        match self {
            Reporter::Json => {
                let line = match event {
                    Event::Stage(o) => json_stage(o),
                    other => serde_json::to_value(other).expect("events serialise"),
                };
                output::stdout(&format!("{line}\n"));
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
            None => output::stderr(&format!("{text}\n")),
        }
    }

    /// Updates the running stages and the bar's message.
    fn set_running(&self, update: impl FnOnce(&mut Vec<(String, String)>)) {
        let mut running = self.running.lock().expect("reporter lock");
        update(&mut running);
        if let Some(bar) = &self.bar {
            bar.set_message(running.iter().map(|(_, shown)| shown.as_str()).collect::<Vec<_>>().join(", "));
        }
    }

    /// Shows `text` for the running stage `stage` (starting to show it if it was not).
    fn show(&self, stage: &str, text: String) {
        self.set_running(|running| match running.iter_mut().find(|(name, _)| name == stage) {
            Some((_, shown)) => *shown = text,
            None => running.push((stage.to_owned(), text)),
        });
    }

    fn event(&self, event: &Event) {
        match event {
            Event::RunStarted { stages, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(*stages as u64);
                }
            }
            Event::StageWaiting { stage, holder: None, .. } => {
                self.line(format!(
                    "{:>9} {:>10} {stage} (another run of the same fingerprint holds its lock)",
                    "WAITING", ""
                ));
            }
            Event::StageWaiting { stage, holder: Some(holder), .. } => {
                self.line(format!("{:>9} {:>10} {stage} (the remote lease is held by {holder})", "WAITING", ""));
            }
            Event::StageTransfer { stage, transfer } => self.transfer(stage, transfer),
            Event::Notice { stage, message } => self.line(format!("{:>9} {:>10} {stage}: {message}", "WARNING", "")),
            Event::StageStarted { stage, .. } => self.show(stage, stage.clone()),
            Event::StageSubmitted { stage, job } => {
                self.line(format!("{:>9} {:>10} {stage} as Slurm job {job}", "SUBMITTED", ""))
            }
            Event::StageProgress { stage, progress } => self.progress(stage, progress),
            Event::Stage(o) => {
                self.set_running(|r| r.retain(|(name, _)| *name != o.stage));
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

    /// On a TTY the bar's message shows the latest report of each running stage; elsewhere a
    /// line is printed at every tenth of a run that says its total.
    fn progress(&self, stage: &str, p: &Progress) {
        let mut text = match p.total {
            0 => format!("{stage} step {}", p.step),
            total => format!("{stage} {}/{total}", p.step),
        };
        if let Some(loss) = p.scalar("loss") {
            text.push_str(&format!(" loss {loss:.3}"));
        }
        if let Some(tps) = p.scalar("tokens_per_s") {
            text.push_str(&format!(" {:.1}k tok/s", tps / 1000.0));
        }
        if let Some(eta) = p.eta_s {
            text.push_str(&format!(
                " ETA {}",
                humantime::format_duration(std::time::Duration::from_secs(eta.round() as u64))
            ));
        }
        match &self.bar {
            Some(_) => self.show(stage, text),
            None => {
                if p.total > 0 && p.step > 0 && (p.step * 10 / p.total) != ((p.step - 1) * 10 / p.total) {
                    self.line(format!("{:>9} {:>10} {text}", "PROGRESS", ""));
                }
            }
        }
    }

    /// Uploads and downloads: bytes, rate and ETA in the bar's message on a TTY; elsewhere a
    /// line at every quarter of a transfer of at least 64 MiB.
    fn transfer(&self, stage: &str, t: &Transfer) {
        let arrow = match t.direction {
            Direction::Download => "↓",
            Direction::Upload => "↑",
        };
        let rate = if t.seconds > 0.0 { t.done as f64 / t.seconds } else { 0.0 };
        let mut text =
            format!("{stage} {arrow} {}/{} {}/s", human_bytes(t.done), human_bytes(t.total), human_bytes(rate as u64));
        if rate > 0.0 && t.done < t.total {
            let eta = ((t.total - t.done) as f64 / rate).round() as u64;
            text.push_str(&format!(" ETA {}", humantime::format_duration(Duration::from_secs(eta))));
        }
        match &self.bar {
            Some(_) => self.show(stage, text),
            None => {
                if t.total < 64 << 20 {
                    return;
                }
                let quarter = t.done * 4 / t.total;
                let mut quarters = self.quarters.lock().expect("reporter lock");
                let last = quarters.entry(stage.to_owned()).or_default();
                if quarter > *last && t.done < t.total {
                    *last = quarter;
                    drop(quarters);
                    self.line(format!("{:>9} {:>10} {text}", "TRANSFER", ""));
                }
            }
        }
    }

    fn status_line(&self, o: &StageOutcome) -> String {
        let short = o.artifact.map(|a| a.short()).unwrap_or_default();
        let time = format!("[{:>7.3}s]", o.seconds);
        let pushed = match o.pushed {
            Some(0) => " (already on the remote)".to_owned(),
            Some(n) => format!(" (pushed {})", human_bytes(n)),
            None => String::new(),
        };
        match o.status {
            Status::Ran => format!("{:>9} {time} {} {short}{pushed}", "RAN", o.stage),
            Status::Cached => format!("{:>9} {time} {} {short}{pushed}", "CACHED", o.stage),
            Status::Downloaded => format!("{:>9} {time} {} {short}", "DOWNLOADED", o.stage),
            Status::Skipped => {
                format!("{:>9} {:>10} {} ({})", "SKIPPED", "", o.stage, o.reason.as_deref().unwrap_or("skipped"))
            }
            Status::Failed => {
                let mut text =
                    format!("{:>9} {time} {} {}", "FAILED", o.stage, o.reason.as_deref().unwrap_or("failed"));
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

fn summary_line(s: &Summary) -> String {
    let total = s.ran + s.cached + s.downloaded + s.failed + s.skipped;
    let mut text = format!(
        "{:>9} [{:>7.3}s] {total} stage{}: {} ran, {} cached, {}{} failed, {} skipped",
        "Summary",
        s.seconds,
        if total == 1 { "" } else { "s" },
        s.ran,
        s.cached,
        if s.downloaded > 0 { format!("{} downloaded, ", s.downloaded) } else { String::new() },
        s.failed,
        s.skipped
    );
    if s.interrupted {
        text.push_str(" (interrupted)");
    }
    text
}
