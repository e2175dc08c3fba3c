//! The `command` kind: runs `run` through `sh -c` in the workflow's directory. Its `with:` is
//! free-form; each top-level key reaches the command as `FLOW_WITH_<KEY>` (scalars as text,
//! anything else as JSON), so `--set STAGE.with.KEY=…` sweeps need no YAML edits.

use serde_json::{Map, Value};

use super::{About, Kind, ParamError, Roles};

pub struct Command;

impl Kind for Command {
    fn about(&self) -> &'static About {
        &About { name: "command", version: 1, roles: Roles::Any, device: false, defaults: &[], outputs: &[] }
    }

    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError> {
        for key in with.keys() {
            let ok = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(ParamError {
                    path: vec![key.clone()],
                    message: format!(
                        "parameter `{key}` of a command stage must be an identifier (it becomes `FLOW_WITH_{key}`)"
                    ),
                });
            }
        }
        Ok(Value::Object(with.clone()))
    }
}

/// The environment value of one parameter: strings as they are, other scalars as JSON text.
pub fn env_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
