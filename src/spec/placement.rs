//! What the language says about where a stage runs and what it is: `device`, `gpu_share` and
//! `executor` resolved over their `defaults:`, and the keys only a `command` stage may have
//! (`run`, `env`, `outputs`). Part of the [`Validator`].

use super::COMMAND;
use super::device::{Device, GpuShare};
use super::executor::{Executor, ExecutorError};
use super::names::closest;
use super::validate::Validator;
use super::yaml::{Node, Span};

/// The `defaults:` that say where stages run rather than how a kind computes.
pub(super) const PLACEMENT: &[&str] = &["device", "gpu_share", "executor"];

const SHARE_HELP: &str = "a fraction of one GPU, such as 0.5 for two stages per GPU";
const DEVICE_HELP: &str = "devices are `cpu`, `cuda`, `cuda:N` or `auto`";

/// Where stages run unless they say otherwise: the placement keys of `defaults:`.
#[derive(Default)]
pub(super) struct Placement {
    device: Device,
    gpu_share: GpuShare,
    /// `defaults.executor` as written, when it is valid.
    executor: Option<serde_json::Value>,
}

impl Validator<'_> {
    /// Takes `defaults.device`, `defaults.gpu_share` or `defaults.executor`.
    pub(super) fn placement_default(&mut self, key: &str, span: Span, json: serde_json::Value) {
        match key {
            "device" => match json.as_str().map(str::parse::<Device>) {
                Some(Ok(device)) => self.placement.device = device,
                _ => self.error_help(span, format!("invalid device {json}"), "invalid device", DEVICE_HELP.into()),
            },
            "gpu_share" => match GpuShare::from_fraction(&json) {
                Ok(share) => self.placement.gpu_share = share,
                Err(e) => self.error_help(span, e, "invalid share", SHARE_HELP.into()),
            },
            _ => match Executor::resolve(None, Some(&json)) {
                Ok(_) => self.placement.executor = Some(json),
                // Reported once here, not again for every stage that would inherit it.
                Err(e) => self.executor_error(span, e),
            },
        }
    }

    fn executor_error(&mut self, span: Span, e: ExecutorError) {
        let what = if e.path.is_empty() { String::new() } else { format!(" (`{}`)", e.path.join(".")) };
        self.error(span, format!("invalid executor{what}: {}", e.message), "invalid executor");
    }

    /// The stage's device and GPU share over their defaults, and whether it sets its own share.
    pub(super) fn device(&mut self, node: &Node) -> (Device, GpuShare, bool) {
        let device = match node.get("device") {
            None => self.placement.device,
            Some(d) => match self.string(d, "`device`").map(|text| (text.parse::<Device>(), text)) {
                Some((Ok(device), _)) => device,
                Some((Err(_), text)) => {
                    let shown = serde_json::Value::String(text);
                    self.error_help(d.span, format!("invalid device {shown}"), "invalid device", DEVICE_HELP.into());
                    Device::Auto
                }
                None => Device::Auto,
            },
        };
        let Some(g) = node.get("gpu_share") else { return (device, self.placement.gpu_share, false) };
        let share = match self.json(g).map(|json| GpuShare::from_fraction(&json)) {
            Some(Ok(share)) => share,
            Some(Err(e)) => {
                self.error_help(g.span, e, "invalid share", SHARE_HELP.into());
                GpuShare::WHOLE
            }
            None => GpuShare::WHOLE,
        };
        (device, share, true)
    }

    /// `run` is what a command stage is, and `env` and `outputs` only mean something for one.
    pub(super) fn command_keys(&mut self, name: &str, kind: &str, span: Span, node: &Node) {
        let is_command = kind == COMMAND;
        // A misspelt `command` is what a stage with `run:` most likely meant: saying so beats
        // saying that `run` is not allowed on a kind that does not exist.
        if !is_command
            && closest(kind, &[COMMAND]).is_some()
            && let Some(k) = node.get("kind")
        {
            let message = format!("unknown kind `{kind}` in stage `{name}`");
            self.error_help(k.span, message, "unknown kind", format!("did you mean `{COMMAND}`?"));
            return;
        }
        match (is_command, node.get("run")) {
            (true, None) => self.error(span, format!("command stage `{name}` has no `run`"), "missing `run`"),
            (false, Some(r)) => self.error_help(
                r.span,
                "`run` is only allowed on `kind: command` stages",
                "not a command stage",
                "a stage with `run` is a `kind: command` stage; other kinds are configured with `with:`".into(),
            ),
            _ => {}
        }
        if is_command {
            return;
        }
        if let Some(e) = node.get("env") {
            self.error(e.span, "`env` is only allowed on `kind: command` stages", "not a command stage");
        }
        if let Some(o) = node.get("outputs") {
            self.error_help(
                o.span,
                "`outputs` is only allowed on `kind: command` stages",
                "not a command stage",
                format!("kind `{kind}` checks what it writes itself"),
            );
        }
    }

    /// The stage's `executor:` over `defaults.executor`, Slurm options merged key by key.
    pub(super) fn executor(&mut self, node: &Node) -> Executor {
        let own = node.get("executor").and_then(|e| self.json(e).map(|json| (e, json)));
        let Some((at, json)) = own else {
            return Executor::resolve(None, self.placement.executor.as_ref()).unwrap_or_default();
        };
        match Executor::resolve(Some(&json), self.placement.executor.as_ref()) {
            Ok(executor) => executor,
            Err(e) => {
                let keys: Vec<&str> = e.path.iter().map(String::as_str).collect();
                let span = (0..=keys.len()).rev().find_map(|n| at.path(&keys[..n])).map_or(at.span, |n| n.span);
                self.executor_error(span, e);
                Executor::Local
            }
        }
    }
}
