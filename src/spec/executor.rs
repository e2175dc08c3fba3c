//! `executor:` — where a stage runs: here (`local`) or as a Slurm batch job (`slurm`, or
//! `{slurm: {…}}` with `sbatch` options). It decides only *where*: it never enters the
//! fingerprint, so a stage run on the cluster and the same stage run on a laptop share one
//! artifact.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Executor {
    #[default]
    Local,
    Slurm(Box<SlurmOptions>),
}

/// `sbatch` options of a Slurm stage; each absent one is left to the cluster's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Slurm's time format: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or `D-HH:MM:SS`.
    pub time: Option<String>,
    pub nodes: Option<u32>,
    pub ntasks: Option<u32>,
    pub ntasks_per_node: Option<u32>,
    pub cpus_per_task: Option<u32>,
    /// `--gpus`: a count, or `type:count`.
    #[serde(default, deserialize_with = "count_or_text")]
    pub gpus: Option<String>,
    /// `--gres`, e.g. `gpu:a100:2`.
    pub gres: Option<String>,
    /// `--mem`: a size such as `64G`.
    pub mem: Option<String>,
    pub constraint: Option<String>,
    /// Further `sbatch` arguments, passed as written.
    #[serde(default)]
    pub args: Vec<String>,
    /// Shell lines the job runs before the stage (`module load cuda`, `source venv/bin/activate`).
    pub setup: Option<String>,
}

fn count_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum CountOrText {
        Count(u32),
        Text(String),
    }
    Ok(Option::<CountOrText>::deserialize(d)?.map(|v| match v {
        CountOrText::Count(n) => n.to_string(),
        CountOrText::Text(s) => s,
    }))
}

/// A bad `executor:` value: the key path under it and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorError {
    pub path: Vec<String>,
    pub message: String,
}

impl Executor {
    /// The executor of a stage: its own `executor:` over the workflow's `defaults.executor`.
    /// Slurm options given in both are merged key by key, the stage's winning; a stage that
    /// says just `slurm` takes the defaults' options.
    pub fn resolve(stage: Option<&Value>, defaults: Option<&Value>) -> Result<Self, ExecutorError> {
        let base = defaults.map(Self::parse).transpose()?.unwrap_or_default();
        let Some(stage) = stage else { return Ok(base) };
        let own = Self::parse(stage)?;
        Ok(match (own, base) {
            (Executor::Slurm(_), Executor::Slurm(b)) if stage.as_str() == Some("slurm") => Executor::Slurm(b),
            (Executor::Slurm(_), Executor::Slurm(_)) => {
                let mut merged = defaults
                    .and_then(|d| d.get("slurm"))
                    .filter(|v| !v.is_null())
                    .cloned()
                    .unwrap_or(Value::Object(Default::default()));
                if let (Value::Object(m), Some(Value::Object(s))) = (&mut merged, stage.get("slurm")) {
                    m.extend(s.clone());
                }
                Executor::Slurm(Box::new(options(&merged)?))
            }
            (own, _) => own,
        })
    }

    fn parse(value: &Value) -> Result<Self, ExecutorError> {
        let whole = |message: String| ExecutorError { path: Vec::new(), message };
        match value {
            Value::String(s) if s == "local" => Ok(Executor::Local),
            Value::String(s) if s == "slurm" => Ok(Executor::Slurm(Box::default())),
            Value::Object(m) if m.len() == 1 && m.contains_key("slurm") => {
                let opts = &m["slurm"];
                if opts.is_null() {
                    return Ok(Executor::Slurm(Box::default()));
                }
                options(opts).map(|o| Executor::Slurm(Box::new(o)))
            }
            other => Err(whole(format!("an executor is `local`, `slurm` or `{{slurm: {{…}}}}`, not {other}"))),
        }
    }
}

fn options(value: &Value) -> Result<SlurmOptions, ExecutorError> {
    let opts: SlurmOptions = serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = vec!["slurm".to_owned()];
        path.extend(e.path().iter().filter_map(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        }));
        ExecutorError { path, message: e.inner().to_string() }
    })?;
    let bad = |key: &str, message: String| ExecutorError { path: vec!["slurm".into(), key.into()], message };
    if let Some(t) = &opts.time
        && !is_slurm_time(t)
    {
        return Err(bad(
            "time",
            format!("`{t}` is not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"),
        ));
    }
    if let Some(m) = &opts.mem
        && !is_size(m)
    {
        return Err(bad("mem", format!("`{m}` is not a memory size such as 4096, 500M or 64G")));
    }
    for (key, n) in [
        ("nodes", opts.nodes),
        ("ntasks", opts.ntasks),
        ("ntasks_per_node", opts.ntasks_per_node),
        ("cpus_per_task", opts.cpus_per_task),
    ] {
        if n == Some(0) {
            return Err(bad(key, format!("`{key}` must be at least 1")));
        }
    }
    Ok(opts)
}

fn is_slurm_time(t: &str) -> bool {
    let num = |s: &str| !s.is_empty() && s.len() <= 6 && s.chars().all(|c| c.is_ascii_digit());
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, t),
    };
    if days.is_some_and(|d| !num(d)) {
        return false;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    (1..=3).contains(&parts.len()) && parts.iter().all(|p| num(p))
}

fn is_size(m: &str) -> bool {
    let digits = m.trim_end_matches(['K', 'M', 'G', 'T']);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && m.len() - digits.len() <= 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forms_and_merging() {
        assert_eq!(Executor::resolve(None, None), Ok(Executor::Local));
        assert_eq!(Executor::resolve(Some(&json!("slurm")), None), Ok(Executor::Slurm(Box::default())));
        let defaults = json!({"slurm": {"partition": "gpu", "time": "1:00:00", "gpus": 1}});
        let Ok(Executor::Slurm(o)) = Executor::resolve(Some(&json!("slurm")), Some(&defaults)) else { panic!() };
        assert_eq!((o.partition.as_deref(), o.gpus.as_deref()), (Some("gpu"), Some("1")));
        let Ok(Executor::Slurm(o)) =
            Executor::resolve(Some(&json!({"slurm": {"gpus": "a100:2", "nodes": 2}})), Some(&defaults))
        else {
            panic!()
        };
        assert_eq!(
            (o.partition.as_deref(), o.gpus.as_deref(), o.nodes, o.time.as_deref()),
            (Some("gpu"), Some("a100:2"), Some(2), Some("1:00:00"))
        );
        assert_eq!(Executor::resolve(Some(&json!("local")), Some(&defaults)), Ok(Executor::Local));
        let Ok(Executor::Slurm(o)) =
            Executor::resolve(Some(&json!({"slurm": {"gpus": 1}})), Some(&json!({"slurm": null})))
        else {
            panic!()
        };
        assert_eq!(o.gpus.as_deref(), Some("1"));
        let Ok(Executor::Slurm(o)) = Executor::resolve(None, Some(&defaults)) else { panic!() };
        assert_eq!(o.partition.as_deref(), Some("gpu"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |v: Value| Executor::resolve(Some(&v), None).unwrap_err();
        assert_eq!(err(json!("kubernetes")).path, Vec::<String>::new());
        assert_eq!(err(json!({"slurm": {"partion": "x"}})).path, ["slurm", "partion"]);
        assert!(err(json!({"slurm": {"partion": "x"}})).message.contains("unknown field `partion`"));
        assert_eq!(err(json!({"slurm": {"nodes": "two"}})).path, ["slurm", "nodes"]);
        assert_eq!(err(json!({"slurm": {"time": "1h"}})).path, ["slurm", "time"]);
        assert_eq!(err(json!({"slurm": {"mem": "lots"}})).path, ["slurm", "mem"]);
        assert_eq!(err(json!({"slurm": {"cpus_per_task": 0}})).path, ["slurm", "cpus_per_task"]);
        for ok in ["30", "30:00", "1:30:00", "2-0", "2-12:00", "2-12:00:00"] {
            assert!(is_slurm_time(ok), "{ok}");
        }
        for bad in ["", "1h", "1:2:3:4", "-1", "1-", "a:b"] {
            assert!(!is_slurm_time(bad), "{bad}");
        }
    }
}
