//! The MLflow exporter: one MLflow run per stage run, in the experiment named after the
//! workflow, through the tracking server's REST API (reqwest). A run carries the stage's
//! parameters, every scalar it reports (sent in batches while it runs), and tags with its
//! stage, kind, fingerprint, artifact digest and state (ran, cached, downloaded, failed).
//!
//! MLflow's limits are kept: at most 1000 metrics, 100 parameters and 100 tags a request;
//! parameter keys of 250 characters, values of 6000. A cached stage is exported only when the
//! experiment has no finished run tagged with its fingerprint.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::{End, ExportError, Exporter, Run};
use crate::stages::Progress;
use crate::store::Record;

const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
const MAX_KEY: usize = 250;
const MAX_VALUE: usize = 6000;
/// Metrics of a running stage are sent when this many wait, or this long after the last send.
const SEND_EVERY: Duration = Duration::from_secs(5);
/// A server that has not answered by then is treated as down.
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Mlflow {
    url: String,
    /// Made on the exporters' thread, on first use: reqwest's blocking client runs a runtime
    /// of its own, which may be neither made nor dropped inside the apply's.
    http: Option<reqwest::blocking::Client>,
    experiment: Option<String>,
    /// Running stages: their MLflow run, metrics not yet sent, and when metrics were last sent.
    open: HashMap<String, Open>,
}

struct Open {
    id: String,
    pending: Vec<Value>,
    sent: Instant,
}

fn ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn tag(key: &str, value: impl std::fmt::Display) -> Value {
    json!({"key": key, "value": value.to_string()})
}

/// The stage's parameters as MLflow parameters: nested keys joined with `.`, values as text.
fn params(value: &Value) -> Vec<Value> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            Value::String(s) => out.push(json!({"key": cut(prefix, MAX_KEY), "value": cut(s, MAX_VALUE)})),
            other => out.push(json!({"key": cut(prefix, MAX_KEY), "value": cut(&other.to_string(), MAX_VALUE)})),
        }
    }
    let mut out = Vec::new();
    if let Value::Object(m) = value {
        for (k, v) in m {
            walk(k, v, &mut out);
        }
    }
    out
}

/// `s`, cut to at most `max` characters.
fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl Mlflow {
    pub fn new(url: &str) -> Self {
        Self { url: url.trim_end_matches('/').to_owned(), http: None, experiment: None, open: HashMap::new() }
    }

    fn http(&mut self) -> Result<&reqwest::blocking::Client, ExportError> {
        if self.http.is_none() {
            let client = reqwest::blocking::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(TIMEOUT)
                .build()
                .map_err(|e| ExportError::Server(e.to_string()))?;
            self.http = Some(client);
        }
        Ok(self.http.as_ref().expect("just made"))
    }

    /// Calls `api` (under `/api/2.0/mlflow/`) with a JSON body, or a query when `body` is
    /// `None` (a GET). A `RESOURCE_DOES_NOT_EXIST` answer is `Ok(None)`.
    fn call(&mut self, api: &str, query: &[(&str, &str)], body: Option<&Value>) -> Result<Option<Value>, ExportError> {
        let url = format!("{}/api/2.0/mlflow/{api}", self.url);
        let http = self.http()?;
        let request = match body {
            Some(b) => http.post(&url).json(b),
            None => {
                let with_query = reqwest::Url::parse_with_params(&url, query)
                    .map_err(|e| ExportError::Server(format!("{url}: {e}")))?;
                http.get(with_query)
            }
        };
        let fail = |why: String| ExportError::Server(format!("{url}: {why}"));
        let response = request.send().map_err(|e| fail(crate::exec::error_chain(&e)))?;
        let status = response.status();
        let answer: Value = response.json().unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Some(answer));
        }
        if answer["error_code"] == "RESOURCE_DOES_NOT_EXIST" {
            return Ok(None);
        }
        Err(fail(format!("{status}: {}", answer["message"].as_str().unwrap_or("no message"))))
    }

    /// The experiment named after the workflow, created on first use.
    fn experiment(&mut self, run: &Run) -> Result<String, ExportError> {
        if let Some(id) = &self.experiment {
            return Ok(id.clone());
        }
        let by_name = |me: &mut Self| me.call("experiments/get-by-name", &[("experiment_name", &run.workflow)], None);
        let id = match by_name(self)? {
            Some(found) => found["experiment"]["experiment_id"].clone(),
            None => match self.call("experiments/create", &[], Some(&json!({"name": run.workflow}))) {
                Ok(created) => created.unwrap_or_default()["experiment_id"].clone(),
                // Another apply created it meanwhile.
                Err(e) => by_name(self)?.ok_or(e)?["experiment"]["experiment_id"].clone(),
            },
        };
        let id = id.as_str().ok_or_else(|| ExportError::Server("the server gave no experiment id".into()))?.to_owned();
        self.experiment = Some(id.clone());
        Ok(id)
    }

    fn log_batch(&mut self, id: &str, metrics: &[Value], params: &[Value], tags: &[Value]) -> Result<(), ExportError> {
        let body = json!({"run_id": id, "metrics": metrics, "params": params, "tags": tags});
        self.call("runs/log-batch", &[], Some(&body)).map(drop)
    }

    /// Sends the metrics waiting for `stage`'s run, in batches of at most [`MAX_METRICS`].
    fn send(&mut self, stage: &str) -> Result<(), ExportError> {
        let Some(open) = self.open.get_mut(stage) else { return Ok(()) };
        let pending = std::mem::take(&mut open.pending);
        open.sent = Instant::now();
        let id = open.id.clone();
        for chunk in pending.chunks(MAX_METRICS) {
            self.log_batch(&id, chunk, &[], &[])?;
        }
        Ok(())
    }
}

impl Exporter for Mlflow {
    fn name(&self) -> &'static str {
        "MLflow"
    }

    fn exported(&mut self, run: &Run) -> Result<bool, ExportError> {
        let experiment = self.experiment(run)?;
        let filter = format!("tags.`flow.fingerprint` = '{}' and attributes.status = 'FINISHED'", run.fingerprint);
        let body = json!({"experiment_ids": [experiment], "filter": filter, "max_results": 1});
        let found = self.call("runs/search", &[], Some(&body))?.unwrap_or_default();
        Ok(found["runs"].as_array().is_some_and(|r| !r.is_empty()))
    }

    fn start(&mut self, run: &Run, at: SystemTime) -> Result<(), ExportError> {
        let experiment = self.experiment(run)?;
        let tags = [
            tag("flow.stage", &run.stage),
            tag("flow.kind", &run.kind),
            tag("flow.workflow", &run.workflow),
            tag("flow.fingerprint", run.fingerprint),
        ];
        let body = json!({"experiment_id": experiment, "run_name": run.stage, "start_time": ms(at), "tags": tags});
        let created = self.call("runs/create", &[], Some(&body))?.unwrap_or_default();
        let id = created["run"]["info"]["run_id"]
            .as_str()
            .ok_or_else(|| ExportError::Server("the server gave no run id".into()))?
            .to_owned();
        for chunk in params(&run.params).chunks(MAX_PARAMS) {
            self.log_batch(&id, &[], chunk, &[])?;
        }
        self.open.insert(run.stage.clone(), Open { id, pending: Vec::new(), sent: Instant::now() });
        Ok(())
    }

    fn progress(&mut self, run: &Run, p: &Progress, at: SystemTime) -> Result<(), ExportError> {
        let Some(open) = self.open.get_mut(&run.stage) else { return Ok(()) };
        // JSON has no NaN or infinity: MLflow's REST API cannot take them.
        open.pending.extend(
            p.scalars
                .iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(k, v)| json!({"key": k, "value": v, "timestamp": ms(at), "step": p.step})),
        );
        if open.pending.len() >= MAX_METRICS || open.sent.elapsed() >= SEND_EVERY {
            self.send(&run.stage)?;
        }
        Ok(())
    }

    fn finish(&mut self, run: &Run, end: End, record: Option<&Record>, at: SystemTime) -> Result<(), ExportError> {
        self.send(&run.stage)?;
        let Some(open) = self.open.remove(&run.stage) else { return Ok(()) };
        let mut tags = vec![tag("flow.state", end.as_str())];
        if let Some(r) = record {
            tags.extend([
                tag("flow.artifact", r.artifact),
                tag("flow.device", &r.device),
                tag("flow.host", &r.host),
                tag("flow.created", &r.created),
            ]);
        }
        self.log_batch(&open.id, &[], &[], &tags)?;
        let status = match end {
            End::Ran | End::Cached | End::Downloaded => "FINISHED",
            End::Failed => "FAILED",
            End::Interrupted => "KILLED",
        };
        let body = json!({"run_id": open.id, "status": status, "end_time": ms(at)});
        self.call("runs/update", &[], Some(&body)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_flatten_and_are_cut_to_mlflows_limits() {
        let long = "x".repeat(7000);
        let p = params(&json!({"optim": {"lr": 0.001, "betas": [0.9, 0.95]}, "seed": 3, "note": long, "empty": {}}));
        let pairs: Vec<(String, usize)> =
            p.iter().map(|v| (v["key"].as_str().unwrap().to_owned(), v["value"].as_str().unwrap().len())).collect();
        assert_eq!(
            pairs,
            [
                ("empty".to_owned(), 2),
                ("note".to_owned(), 6000),
                ("optim.betas".to_owned(), 10),
                ("optim.lr".to_owned(), 5),
                ("seed".to_owned(), 1)
            ]
        );
        assert_eq!(p[2]["value"], "[0.9,0.95]");
    }
}
