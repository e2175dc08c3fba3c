//! A finished stage's [`History`]: every progress report of its run, step by step, read back
//! after the fact — for the exporters when a stage was cached, for `flow show --plot` and for
//! `flow report`. A built-in and a user's command are read the same way.
//!
//! Two sources: the protocol lines of the run's log (`logs/<fingerprint>.log`, on the machine
//! that ran it; the only place wall-clock figures such as tokens/s live) and, for the training
//! kinds, the artifact's `metrics.jsonl` (complete even when the run resumed after an
//! interruption, and present wherever the artifact is). Where both have a value of a step, the
//! artifact's wins.

use std::collections::BTreeMap;
use std::path::Path;

use crate::ml::train::Row;
use crate::stages::Progress;
use crate::stages::progress::{self, Line};
use crate::store::{Record, Store};

/// A run's reports by step, each with every scalar reported at that step.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct History {
    pub steps: BTreeMap<u64, Progress>,
}

impl History {
    /// The history of `record`'s run in `store` (its artifact materialised).
    pub fn of(store: &Store, record: &Record) -> std::io::Result<Self> {
        let mut h = Self::default();
        h.read_log(&store.log_path(&record.fingerprint))?;
        h.read_rows(&store.artifact_dir(&record.artifact).join("metrics.jsonl"))?;
        Ok(h)
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Every scalar name reported, sorted.
    pub fn names(&self) -> std::collections::BTreeSet<&str> {
        self.steps.values().flat_map(|p| p.scalars.keys().map(String::as_str)).collect()
    }

    /// `(step, value)` of one scalar, in step order.
    pub fn series(&self, name: &str) -> Vec<(u64, f64)> {
        self.steps.iter().filter_map(|(step, p)| p.scalar(name).map(|v| (*step, v))).collect()
    }

    fn add(&mut self, p: Progress) {
        let at = self.steps.entry(p.step).or_insert_with(|| Progress { step: p.step, ..Default::default() });
        at.total = at.total.max(p.total);
        at.scalars.extend(p.scalars);
    }

    fn read_log(&mut self, log: &Path) -> std::io::Result<()> {
        let bytes = match std::fs::read(log) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for line in bytes.split(|b| *b == b'\n') {
            if let Line::Report(p) = progress::parse(line)
                && p.device.is_none()
            {
                self.add(p);
            }
        }
        Ok(())
    }

    fn read_rows(&mut self, file: &Path) -> std::io::Result<()> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let rows: Vec<Row> = text
            .lines()
            .map(|l| serde_json::from_str(l).map_err(|e| std::io::Error::other(format!("`{}`: {e}", file.display()))))
            .collect::<Result<_, _>>()?;
        let total = rows.last().map_or(0, |r| r.step);
        for row in rows {
            self.add(Progress { step: row.step, total, scalars: row.scalars(), ..Default::default() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_and_the_metrics_file_merge_by_step_and_the_artifact_wins() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("run.log");
        std::fs::write(
            &log,
            "starting\n@flow/1 {\"step\":0,\"total\":2,\"device\":\"cpu\"}\n\
             @flow/1 {\"step\":1,\"total\":2,\"loss\":9.0,\"tokens_per_s\":100}\nnoise\n\
             @flow/1 {\"step\":2,\"total\":2,\"loss\":8.0,\"tokens_per_s\":120}\n\
             @flow/1 {\"step\":2,\"val_loss\":7.5}\n@flow/1 {broken\n",
        )
        .unwrap();
        let rows = dir.path().join("metrics.jsonl");
        std::fs::write(
            &rows,
            "{\"step\":1,\"tokens\":64,\"loss\":3.0,\"lr\":0.1,\"grad_norm\":1.0}\n\
             {\"step\":2,\"tokens\":128,\"loss\":2.0,\"lr\":0.05,\"grad_norm\":0.5,\"val_loss\":2.5,\"val_loss/wiki\":2.6}\n",
        )
        .unwrap();
        let mut h = History::default();
        h.read_log(&log).unwrap();
        assert_eq!(h.series("loss"), vec![(1, 9.0), (2, 8.0)]);
        assert_eq!(h.series("val_loss"), vec![(2, 7.5)], "two reports of one step merge");
        assert!(!h.steps.contains_key(&0), "the device report is not a step");
        h.read_rows(&rows).unwrap();
        assert_eq!(h.series("loss"), vec![(1, 3.0), (2, 2.0)]);
        assert_eq!(h.series("val_loss"), vec![(2, 2.5)]);
        assert_eq!(h.series("tokens_per_s"), vec![(1, 100.0), (2, 120.0)], "what only the log has is kept");
        assert_eq!(h.series("val_loss/wiki"), vec![(2, 2.6)]);
        assert_eq!(
            h.names().into_iter().collect::<Vec<_>>(),
            ["grad_norm", "loss", "lr", "tokens", "tokens_per_s", "val_loss", "val_loss/wiki"]
        );
        assert_eq!(h.steps[&2].total, 2);
    }
}
