//! The progress line protocol, version 1 (docs/protocol.md): how any stage — a built-in kind in
//! `flow run-stage`, or a user's script in a `command` stage — reports its step, total and named
//! scalars to `flow apply`. One line on stdout:
//!
//! ```text
//! @flow/1 {"step": 120, "total": 1000, "loss": 2.31, "lr": 0.0003}
//! ```
//!
//! Both sides live here: [`Progress::line`] writes a line and [`parse`] reads one. The Python
//! helper (`python/flow_progress.py`) writes the same format; its tests read its lines back
//! with this parser.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// The protocol version this flow reads and writes.
pub const VERSION: u32 = 1;

/// The start of every protocol line, whatever its version.
const MARK: &str = "@flow/";

/// A line longer than this is not read as a report (nor held in memory while it is read).
pub const MAX_LINE: usize = 64 * 1024;

/// Keys with a meaning of their own; every other key of a report is a named scalar.
const RESERVED: &[&str] = &["step", "total", "eta_s", "device"];

/// One progress report: where the stage is, and the latest value of any named scalar.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub step: u64,
    /// Steps in the whole run; 0 when the stage does not know.
    pub total: u64,
    pub eta_s: Option<f64>,
    /// Set in a report of its own, before the first step: the device the stage runs on, as the
    /// run record names it (it is not shown as progress).
    pub device: Option<String>,
    /// `loss`, `lr`, `val_loss/NAME`, `tokens_per_s` or any other name → its value at `step`.
    pub scalars: BTreeMap<String, f64>,
}

impl Progress {
    pub fn scalar(&self, name: &str) -> Option<f64> {
        self.scalars.get(name).copied()
    }

    /// The protocol line of this report, newline included.
    pub fn line(&self) -> String {
        format!("{MARK}{VERSION} {}\n", serde_json::to_string(self).expect("progress serialises"))
    }
}

/// A report as JSON: the reserved keys, then the scalars beside them. A value that is not a
/// number (a diverged loss) is written as the strings the protocol reads back.
impl Serialize for Progress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("step", &self.step)?;
        map.serialize_entry("total", &self.total)?;
        if let Some(eta) = self.eta_s {
            map.serialize_entry("eta_s", &eta)?;
        }
        if let Some(device) = &self.device {
            map.serialize_entry("device", device)?;
        }
        for (name, value) in &self.scalars {
            match number(*value) {
                Some(n) => map.serialize_entry(name, &n)?,
                None => map.serialize_entry(name, non_finite(*value))?,
            }
        }
        map.end()
    }
}

fn number(v: f64) -> Option<serde_json::Number> {
    serde_json::Number::from_f64(v)
}

fn non_finite(v: f64) -> &'static str {
    if v.is_nan() {
        "nan"
    } else if v > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

/// What a line of a stage's output is, to the protocol.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// Not a protocol line: only the log keeps it.
    Other,
    Report(Progress),
    /// It starts like a protocol line but cannot be read: why.
    Malformed(String),
}

/// Reads one line of a stage's stdout (without its newline). What a terminal would show
/// counts: a line that a progress bar rewrote with `\r` is read from after the last `\r`.
pub fn parse(line: &[u8]) -> Line {
    let line = match line.iter().rposition(|b| *b == b'\r') {
        Some(at) => &line[at + 1..],
        None => line,
    };
    let Some(rest) = line.strip_prefix(MARK.as_bytes()) else {
        return Line::Other;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return Line::Malformed("it is not UTF-8".into());
    };
    let Some((version, json)) = rest.split_once(' ') else {
        return Line::Malformed(format!("`{MARK}` must be followed by a version and a space, then a JSON object"));
    };
    match version.parse::<u32>() {
        Ok(VERSION) => {}
        Ok(v) => return Line::Malformed(format!("it is protocol version {v}; this flow reads version {VERSION}")),
        Err(_) => return Line::Malformed(format!("`{version}` is not a protocol version")),
    }
    match serde_json::from_str::<Map<String, Value>>(json) {
        Ok(object) => report(object).map_or_else(Line::Malformed, Line::Report),
        Err(e) => Line::Malformed(format!("not a JSON object: {e}")),
    }
}

fn report(object: Map<String, Value>) -> Result<Progress, String> {
    let count = |key: &str| match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("`{key}` must be a whole number ≥ 0, not {v}")),
    };
    let step = count("step")?.ok_or("`step` is missing")?;
    let total = count("total")?.unwrap_or(0);
    let eta_s = match object.get("eta_s") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_f64().ok_or_else(|| format!("`eta_s` must be a number, not {v}"))?),
    };
    let device = match object.get("device") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(v) => return Err(format!("`device` must be a string, not {v}")),
    };
    let mut scalars = BTreeMap::new();
    for (name, value) in &object {
        if RESERVED.contains(&name.as_str()) || value.is_null() {
            continue;
        }
        check_name(name)?;
        let v = match value {
            Value::Number(n) => n.as_f64().expect("serde_json numbers are f64 without arbitrary_precision"),
            Value::String(s) if s == "nan" => f64::NAN,
            Value::String(s) if s == "inf" => f64::INFINITY,
            Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
            other => {
                return Err(format!("scalar `{name}` must be a number (or \"nan\", \"inf\", \"-inf\"), not {other}"));
            }
        };
        scalars.insert(name.clone(), v);
    }
    Ok(Progress { step, total, eta_s, device, scalars })
}

/// Scalar names become TensorBoard tags, MLflow metric keys and file-safe labels: letters,
/// digits and `_ - . /`, at most 200 characters.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(format!("scalar name `{name}` may hold only letters, digits and `_ - . /` (at most 200 characters)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(line: &str) -> Progress {
        match parse(line.as_bytes()) {
            Line::Report(p) => p,
            other => panic!("`{line}` read as {other:?}"),
        }
    }

    fn malformed(line: &str) -> String {
        match parse(line.as_bytes()) {
            Line::Malformed(why) => why,
            other => panic!("`{line}` read as {other:?}"),
        }
    }

    #[test]
    fn lines_round_trip_with_their_scalars() {
        let p = Progress {
            step: 3,
            total: 10,
            eta_s: Some(1.5),
            device: None,
            scalars: BTreeMap::from([("loss".to_owned(), 2.5), ("val_loss/wiki".to_owned(), f64::NAN)]),
        };
        let line = p.line();
        assert_eq!(line, "@flow/1 {\"step\":3,\"total\":10,\"eta_s\":1.5,\"loss\":2.5,\"val_loss/wiki\":\"nan\"}\n");
        let back = report(line.trim_end());
        assert_eq!((back.step, back.total, back.eta_s, back.scalar("loss")), (3, 10, Some(1.5), Some(2.5)));
        assert!(back.scalar("val_loss/wiki").unwrap().is_nan());
        assert_eq!(report("@flow/1 {\"step\":1,\"x\":\"-inf\"}").scalar("x"), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn other_lines_are_not_reports_and_a_progress_bar_before_one_is_skipped() {
        assert_eq!(parse(b"step 3 of 10"), Line::Other);
        assert_eq!(parse(b" @flow/1 {\"step\":1}"), Line::Other, "the mark starts the line");
        assert_eq!(parse(b"\xff\xfe not text"), Line::Other);
        let p = report(" 40%|####  |\r@flow/1 {\"step\":4,\"total\":10}");
        assert_eq!((p.step, p.total), (4, 10));
        assert_eq!(report("@flow/1 {\"step\":0}").total, 0, "the total is optional");
    }

    #[test]
    fn malformed_lines_say_why() {
        assert!(malformed("@flow/1 {not json").starts_with("not a JSON object"));
        assert!(malformed("@flow/1 [1, 2]").starts_with("not a JSON object"));
        assert_eq!(malformed("@flow/1 {\"loss\": 2}"), "`step` is missing");
        assert_eq!(malformed("@flow/1 {\"step\": -1}"), "`step` must be a whole number ≥ 0, not -1");
        assert_eq!(malformed("@flow/1 {\"step\": 1.5}"), "`step` must be a whole number ≥ 0, not 1.5");
        assert_eq!(malformed("@flow/2 {\"step\": 1}"), "it is protocol version 2; this flow reads version 1");
        assert_eq!(malformed("@flow/x {\"step\": 1}"), "`x` is not a protocol version");
        assert!(malformed("@flow/1{\"step\":1}").contains("followed by a version and a space"));
        assert!(malformed("@flow/1 {\"step\": 1, \"acc\": \"high\"}").starts_with("scalar `acc` must be a number"));
        assert!(malformed("@flow/1 {\"step\": 1, \"a b\": 1}").starts_with("scalar name `a b`"));
        assert_eq!(malformed("@flow/1 {\"step\": 1, \"device\": 0}"), "`device` must be a string, not 0");
        assert_eq!(parse(b"@flow/1 {\"step\": \xff}"), Line::Malformed("it is not UTF-8".into()));
    }
}
