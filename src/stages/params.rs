//! Kind parameters: `with:` (plus the applicable `defaults:`) deserialised into a kind's typed
//! parameter struct, with every default filled in — the canonical JSON the fingerprint recipe
//! is made from — or a [`ParamError`] naming the key that is wrong.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A bad parameter: the key path under `with:` and what is wrong with it.
#[derive(Debug, Clone)]
pub struct ParamError {
    pub path: Vec<String>,
    pub message: String,
}

/// Deserialises `with:` into a kind's parameter struct (unknown keys and wrong types are errors
/// naming the key) and returns the canonical JSON: every default filled in.
pub fn typed<P: DeserializeOwned + Serialize>(with: &Map<String, Value>) -> Result<(P, Value), ParamError> {
    let de = Value::Object(with.clone());
    let p: P = serde_path_to_error::deserialize(de).map_err(|e| {
        let path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let message = e.inner().to_string();
        // Inside a `#[serde(flatten)]` group serde loses the key; the value it quotes finds it.
        let path = if path.is_empty() {
            with.iter()
                .find(|(_, v)| v.as_str().is_some_and(|v| message.contains(&format!("`{v}`"))))
                .map(|(k, _)| vec![k.clone()])
                .unwrap_or_default()
        } else {
            path
        };
        ParamError { path, message }
    })?;
    let mut canonical = serde_json::to_value(&p).expect("parameters serialise");
    // Every field serialises (defaults filled in), so a key of `with:` missing from the
    // canonical form is one the kind does not know.
    if let Value::Object(known) = &mut canonical {
        let names: Vec<&str> = known.keys().map(String::as_str).collect();
        if let Some(key) = with.keys().find(|k| !known.contains_key(*k)) {
            let hint = crate::spec::closest(key, &names).map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default();
            return Err(ParamError { path: vec![key.clone()], message: format!("unknown parameter `{key}`{hint}") });
        }
    }
    Ok((p, canonical))
}

/// The seed of every kind that takes one, unless `with:` or `defaults:` sets it.
pub fn default_seed() -> u64 {
    1
}

/// A parameter check that failed after deserialisation.
pub fn invalid(key: &str, message: impl Into<String>) -> ParamError {
    ParamError { path: vec![key.to_owned()], message: message.into() }
}
