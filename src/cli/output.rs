//! Everything `flow` writes to a terminal goes through here: the one module allowed to print
//! (clippy bans the standard streams elsewhere). Errors are rendered once, at the top:
//! `error:`, each cause, and a hint; workflow errors with the file excerpt and a label.

#![allow(clippy::disallowed_methods)]

use std::io::{IsTerminal, Write};

use super::failure::{Failure, Problem};

/// Writes `text` to stdout. A closed pipe (`flow plan | head`) is not an error.
pub(super) fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Writes `text` to stderr.
pub(super) fn stderr(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Whether stderr is a terminal, where live progress can be drawn.
pub(super) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Where `-v` logging goes.
pub(super) fn log_writer() -> std::io::Stderr {
    std::io::stderr()
}

/// Renders a failure once: `error:`, each cause, and a hint; workflow errors with their source.
pub(super) fn render(f: &Failure) {
    let mut out = String::new();
    match &f.problem {
        Problem::Workflow(spec_errors) => {
            out.push_str(&format!("error: {spec_errors}\n"));
            let color = stderr_is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let theme =
                if color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
            let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
            for e in &spec_errors.errors {
                if let Some(loc) = &e.location {
                    out.push_str(&format!("\n{loc}: {}\n", e.message));
                }
                let _ = handler.render_report(&mut out, e);
            }
        }
        Problem::Other(error) => {
            out.push_str(&format!("error: {error}\n"));
            let mut cause = error.source();
            while let Some(c) = cause {
                out.push_str(&format!("  caused by: {c}\n"));
                cause = c.source();
            }
        }
    }
    if let Some(h) = &f.hint {
        out.push_str(&format!("hint: {h}\n"));
    }
    stderr(&out);
}

/// A size for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB", "the largest unit is TiB");
    }
}
