//! The `compare` kind: the metrics of many stages (`runs`, usually the members of a matrix
//! stage) → one table. Members that differ only in the seed form a group; per group and
//! metric, the mean and a bootstrap interval of the final values (`summary.csv`,
//! `summary.json`) and of the curve at every step all members logged (`curves.csv`), and the
//! curves of one metric drawn as mean and band (`curves.svg`). The artifact is a function of
//! the inputs and the seed.
//!
//! A run's metrics are its `metrics.jsonl` (training kinds: a value per step) or its
//! `metrics.json` (eval: final values, nested keys joined with `.`).

mod plot;
mod stats;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{About, InputError, Kind, ParamError, Progress, Role, Roles, StageError, Task, invalid, typed};
use crate::spec::matrix::parse_member;
use stats::{Bootstrap, Summary};

pub struct Compare;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The metrics to summarise; default: every numeric one the runs share.
    #[serde(default)]
    pub metrics: Vec<String>,
    /// The matrix key whose members are repeats of one configuration.
    #[serde(default = "seed_key")]
    pub over: String,
    /// The metric drawn in `curves.svg`.
    #[serde(default = "plot_metric")]
    pub plot: String,
    #[serde(default = "resamples")]
    pub resamples: usize,
    #[serde(default = "confidence")]
    pub confidence: f64,
    #[serde(default = "super::default_seed")]
    pub seed: u64,
}

fn seed_key() -> String {
    "seed".into()
}
fn plot_metric() -> String {
    "loss".into()
}
fn resamples() -> usize {
    1000
}
fn confidence() -> f64 {
    0.95
}

const ROLES: &[Role] = &[Role { name: "runs", list: true, required: true }];

/// Step-indexed columns of `metrics.jsonl` that are not metrics.
const NOT_METRICS: &[&str] = &["step", "tokens"];

impl Kind for Compare {
    fn about(&self) -> &'static About {
        &About {
            name: "compare",
            version: 1,
            roles: Roles::Fixed(ROLES),
            device: false,
            defaults: &["seed"],
            outputs: &["summary.json", "summary.csv"],
        }
    }

    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError> {
        let (p, canonical): (Params, Value) = typed(with)?;
        if p.resamples < 100 {
            return Err(invalid("resamples", "must be at least 100"));
        }
        if !(p.confidence > 0.0 && p.confidence < 1.0) {
            return Err(invalid("confidence", "must be in (0, 1)"));
        }
        if !p.metrics.is_empty() && !p.metrics.contains(&p.plot) {
            return Err(invalid("plot", format!("`{}` is not one of the `metrics` compared", p.plot)));
        }
        Ok(canonical)
    }

    fn run(&self, task: &Task, _: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let p: Params = task.params()?;
        let dirs = task.inputs.get("runs").map(Vec::as_slice).unwrap_or_default();
        // A task written without the stage names (by hand) names its runs by position.
        let names: Vec<String> = match task.needs.get("runs") {
            Some(names) if names.len() == dirs.len() => names.clone(),
            _ => (0..dirs.len()).map(|i| format!("runs[{i}]")).collect(),
        };
        let runs: Vec<Run> =
            names.iter().zip(dirs).map(|(name, dir)| Run::load(name, dir)).collect::<Result<_, _>>()?;
        let table = Table::build(&runs, &p)?;
        table.write(&task.out, &p)
    }
}

/// One input stage's metrics.
struct Run {
    name: String,
    /// metric → (step, value) in step order; one entry at step 0 for a final-only metric.
    series: BTreeMap<String, Vec<(u64, f64)>>,
    /// Whether the metrics came per step.
    curves: bool,
}

impl Run {
    fn load(name: &str, dir: &Path) -> Result<Run, StageError> {
        let mut series: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
        let per_step = dir.join("metrics.jsonl");
        if per_step.exists() {
            let text = fs_err::read_to_string(&per_step)?;
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let row: Map<String, Value> =
                    serde_json::from_str(line).map_err(|e| InputError::line(&per_step, n, e))?;
                let step = row
                    .get("step")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| InputError::line(&per_step, n, super::LineProblem::NoField("step".into())))?;
                let mut flat = Vec::new();
                flatten("", &Value::Object(row), &mut flat);
                for (key, v) in flat.into_iter().filter(|(k, _)| !NOT_METRICS.contains(&k.as_str())) {
                    series.entry(key).or_default().push((step, v));
                }
            }
            return Ok(Run { name: name.to_owned(), series, curves: true });
        }
        let finals = dir.join("metrics.json");
        if finals.exists() {
            let v: Value =
                serde_json::from_slice(&fs_err::read(&finals)?).map_err(|e| InputError::line(&finals, 0, e))?;
            let mut flat = Vec::new();
            flatten("", &v, &mut flat);
            for (key, v) in flat {
                series.insert(key, vec![(0, v)]);
            }
            return Ok(Run { name: name.to_owned(), series, curves: false });
        }
        Err(InputError::NoMetrics(name.to_owned()).into())
    }

    /// The last value of each metric.
    fn finals(&self) -> BTreeMap<&str, f64> {
        self.series.iter().filter_map(|(k, s)| Some((k.as_str(), s.last()?.1))).collect()
    }
}

/// The finite numbers in `v`, keyed by their path with `.` between the parts.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64().filter(|x| x.is_finite()) {
                out.push((prefix.to_owned(), x));
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        _ => {}
    }
}

/// The runs of one configuration: the same matrix values but for the repeat key.
struct Group<'r> {
    name: String,
    runs: Vec<&'r Run>,
}

/// The summaries of every group.
#[derive(Serialize)]
struct Table {
    groups: Vec<GroupSummary>,
    over: String,
    resamples: usize,
    confidence: f64,
}

#[derive(Serialize)]
struct GroupSummary {
    name: String,
    runs: Vec<String>,
    /// metric → the summary of the runs' final values.
    finals: BTreeMap<String, Summary>,
    /// metric → its summary at every step all runs logged.
    curves: BTreeMap<String, Vec<Point>>,
}

#[derive(Serialize)]
struct Point {
    step: u64,
    #[serde(flatten)]
    summary: Summary,
}

/// The group a run belongs to: its name without the repeat key's value (`pre@lr=0.001,seed=2`
/// → `pre@lr=0.001`); a run that is not a member, or has no other value, is its matrix stage.
fn group_of(run: &str, over: &str) -> String {
    match parse_member(run) {
        Some((template, coords)) => {
            let rest: Vec<String> =
                coords.iter().filter(|(k, _)| *k != over).map(|(k, v)| format!("{k}={v}")).collect();
            if rest.is_empty() { template.to_owned() } else { format!("{template}@{}", rest.join(",")) }
        }
        None => run.to_owned(),
    }
}

impl Table {
    fn build(runs: &[Run], p: &Params) -> Result<Table, StageError> {
        let mut groups: Vec<Group> = Vec::new();
        for run in runs {
            let name = group_of(&run.name, &p.over);
            match groups.iter_mut().find(|g| g.name == name) {
                Some(g) => g.runs.push(run),
                None => groups.push(Group { name, runs: vec![run] }),
            }
        }
        let shared: Vec<String> = {
            let finals: Vec<BTreeMap<&str, f64>> = runs.iter().map(Run::finals).collect();
            let first = finals.first().map(|f| f.keys().copied().collect::<Vec<_>>()).unwrap_or_default();
            first.into_iter().filter(|k| finals.iter().all(|f| f.contains_key(k))).map(str::to_owned).collect()
        };
        let metrics = if p.metrics.is_empty() {
            shared
        } else {
            if let Some(missing) = p.metrics.iter().find(|m| !shared.contains(m)) {
                return Err(InputError::NoMetric { metric: missing.clone(), shared }.into());
            }
            p.metrics.clone()
        };
        let b = Bootstrap { resamples: p.resamples, confidence: p.confidence, seed: p.seed };
        let groups = groups
            .iter()
            .map(|g| {
                let mut finals = BTreeMap::new();
                let mut curves = BTreeMap::new();
                let run_finals: Vec<BTreeMap<&str, f64>> = g.runs.iter().map(|r| r.finals()).collect();
                for m in &metrics {
                    let values: Vec<f64> = run_finals.iter().map(|f| f[m.as_str()]).collect();
                    finals.insert(m.clone(), b.summarise(&values, &format!("{}\0{m}", g.name)));
                    if g.runs.iter().all(|r| r.curves) {
                        curves.insert(m.clone(), curve(g, m, &b));
                    }
                }
                GroupSummary {
                    name: g.name.clone(),
                    runs: g.runs.iter().map(|r| r.name.clone()).collect(),
                    finals,
                    curves,
                }
            })
            .collect();
        Ok(Table { groups, over: p.over.clone(), resamples: p.resamples, confidence: p.confidence })
    }

    fn write(&self, out: &Path, p: &Params) -> Result<(), StageError> {
        let mut json = serde_json::to_vec_pretty(self).expect("tables serialise");
        json.push(b'\n');
        fs_err::write(out.join("summary.json"), json)?;
        let mut csv = String::from("group,metric,runs,mean,ci_low,ci_high\n");
        for g in &self.groups {
            for (m, s) in &g.finals {
                writeln!(csv, "{},{m},{},{},{},{}", g.name, s.n, s.mean, s.ci_low, s.ci_high).expect("strings grow");
            }
        }
        fs_err::write(out.join("summary.csv"), csv)?;
        if self.groups.iter().all(|g| g.curves.is_empty()) {
            return Ok(());
        }
        let mut csv = String::from("group,metric,step,runs,mean,ci_low,ci_high\n");
        for g in &self.groups {
            for (m, points) in &g.curves {
                for Point { step, summary: s } in points {
                    writeln!(csv, "{},{m},{step},{},{},{},{}", g.name, s.n, s.mean, s.ci_low, s.ci_high)
                        .expect("strings grow");
                }
            }
        }
        fs_err::write(out.join("curves.csv"), csv)?;
        let drawn: Vec<(&str, &[Point])> = self
            .groups
            .iter()
            .filter_map(|g| Some((g.name.as_str(), g.curves.get(&p.plot)?.as_slice())))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        if drawn.is_empty() {
            return Err(InputError::NoMetric { metric: p.plot.clone(), shared: self.metrics() }.into());
        }
        plot::curves(&out.join("curves.svg"), &p.plot, &drawn, p.confidence)
            .map_err(|e| StageError::Io(std::io::Error::other(e)))
    }

    fn metrics(&self) -> Vec<String> {
        self.groups.first().map(|g| g.finals.keys().cloned().collect()).unwrap_or_default()
    }
}

/// The summary of metric `m` over the group's runs at every step all of them logged it.
fn curve(g: &Group, m: &str, b: &Bootstrap) -> Vec<Point> {
    let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for run in &g.runs {
        for &(step, v) in run.series.get(m).map(Vec::as_slice).unwrap_or_default() {
            by_step.entry(step).or_default().push(v);
        }
    }
    by_step
        .into_iter()
        .filter(|(_, v)| v.len() == g.runs.len())
        .map(|(step, v)| Point { step, summary: b.summarise(&v, &format!("{}\0{m}\0{step}", g.name)) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_that_differ_in_the_seed_share_a_group() {
        assert_eq!(group_of("pre@lr=0.001,seed=2", "seed"), "pre@lr=0.001");
        assert_eq!(group_of("pre@seed=2,lr=0.001", "seed"), "pre@lr=0.001");
        assert_eq!(group_of("pre@seed=2", "seed"), "pre");
        assert_eq!(group_of("pre@lr=0.001,seed=2", "lr"), "pre@seed=2");
        assert_eq!(group_of("baseline", "seed"), "baseline");
    }

    #[test]
    fn a_run_without_metrics_or_a_metric_some_run_lacks_is_an_error() {
        let empty = tempfile::tempdir().unwrap();
        let e = Run::load("tok", empty.path()).err().unwrap().to_string();
        assert_eq!(e, "stage `tok` left no metrics (`metrics.jsonl` or `metrics.json`) to compare");
        let run = |name: &str, keys: &[&str]| Run {
            name: name.into(),
            series: keys.iter().map(|k| (k.to_string(), vec![(1, 1.0)])).collect(),
            curves: true,
        };
        let runs = [run("a@seed=1", &["loss", "val_loss"]), run("a@seed=2", &["loss"])];
        let p: Params = serde_json::from_value(serde_json::json!({"metrics": ["val_loss"]})).unwrap();
        let e = Table::build(&runs, &p).err().unwrap().to_string();
        assert_eq!(e, "not every run has metric `val_loss`; those they all have: loss");
    }

    #[test]
    fn the_plotted_metric_must_be_compared_and_intervals_need_resamples() {
        let check = |with: serde_json::Value| Compare.params(with.as_object().unwrap()).err().map(|e| e.path);
        assert_eq!(check(serde_json::json!({"metrics": ["val_loss"]})), Some(vec!["plot".to_owned()]));
        assert_eq!(check(serde_json::json!({"metrics": ["val_loss"], "plot": "val_loss"})), None);
        assert_eq!(check(serde_json::json!({"resamples": 10})), Some(vec!["resamples".to_owned()]));
        assert_eq!(check(serde_json::json!({"confidence": 1.0})), Some(vec!["confidence".to_owned()]));
    }

    #[test]
    fn nested_metrics_are_flattened_and_non_numbers_left_out() {
        let v = serde_json::json!({"val_loss": 2.5, "tasks": {"sort": {"accuracy": 0.5, "n": 4}}, "note": "x", "nan": null});
        let mut flat = Vec::new();
        flatten("", &v, &mut flat);
        flat.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            flat,
            [("tasks.sort.accuracy".to_owned(), 0.5), ("tasks.sort.n".to_owned(), 4.0), ("val_loss".to_owned(), 2.5)]
        );
    }
}
