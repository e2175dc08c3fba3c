//! The fingerprint recipe (docs/guide.md#what-is-cached-and-why): what a stage run depends on, in
//! canonical form, and the rules that keep fingerprints stable as kinds gain parameters.
//!
//! Upstream stages enter by their *artifact digest* (content), not their fingerprint, so a
//! re-run that yields identical bytes invalidates nothing downstream (early cutoff). The stage
//! name, the workflow name, the device and the host are deliberately absent: the same work
//! declared under another name, or run on another machine, shares one artifact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hash::{Digest, Fingerprint};

/// The fingerprint format version.
///
/// History:
/// 1 — initial recipe: kind, kind_version, params, needs (artifact digests), inputs (file
///     digests by workflow-relative path), command, env, salt; `outputs` (a command stage's
///     declared outputs) only when declared, so recipes without them kept their digests.
pub const FINGERPRINT_VERSION: u32 = 1;

/// Parameters added after kinds were first released, with the default that keeps a stage
/// doing what it did before. At that default they are left out of the recipe, so fingerprints
/// (and every cached artifact) from before they existed still hold.
const LATER_DEFAULTS: &[(&str, &str)] = &[("precision", "f32")];

/// A kind's canonical parameters as a recipe holds them: [`LATER_DEFAULTS`] left out where
/// they are at their default.
pub fn recipe_params(canonical: &Value) -> Value {
    let mut params = canonical.clone();
    if let Value::Object(map) = &mut params {
        for (key, default) in LATER_DEFAULTS {
            if map.get(*key).and_then(Value::as_str) == Some(default) {
                map.remove(*key);
            }
        }
    }
    params
}

/// Everything a stage run depends on. Serialised with sorted keys, then blake3.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub v: u32,
    pub kind: String,
    pub kind_version: u32,
    pub params: Value,
    pub needs: BTreeMap<String, Needed>,
    pub inputs: BTreeMap<String, Digest>,
    pub command: Option<String>,
    /// Declared environment: set values, or `blake3:<digest>` of the caller's value of a
    /// passed-through name (`null` when unset).
    pub env: BTreeMap<String, Option<String>>,
    pub salt: Option<String>,
    /// A command stage's `outputs:`: what its run must leave is part of what it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
}

/// The artifact digest(s) behind one role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Needed {
    One(Digest),
    Many(Vec<Digest>),
}

impl Recipe {
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self)
    }

    /// What a signature's provenance says of this recipe: the recipe itself and each input
    /// artifact as `role/stage`, given the stages each role names.
    pub fn built(&self, names: &BTreeMap<String, Vec<String>>) -> crate::store::trust::Built {
        let mut inputs = Vec::new();
        for (role, needed) in &self.needs {
            let digests = match needed {
                Needed::One(d) => std::slice::from_ref(d),
                Needed::Many(ds) => ds.as_slice(),
            };
            let stages = names.get(role).map(Vec::as_slice).unwrap_or_default();
            for (k, d) in digests.iter().enumerate() {
                let stage = stages.get(k).map_or_else(|| k.to_string(), String::clone);
                inputs.push((format!("{role}/{stage}"), *d));
            }
        }
        crate::store::trust::Built { recipe: serde_json::to_value(self).expect("recipes serialise"), inputs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Recipe {
        Recipe {
            v: FINGERPRINT_VERSION,
            kind: "command".into(),
            kind_version: 1,
            params: serde_json::json!({"lr": 0.003, "steps": 100}),
            needs: BTreeMap::from([("data".to_owned(), Needed::One(Digest::of(b"data")))]),
            inputs: BTreeMap::from([("a.txt".to_owned(), Digest::of(b"a"))]),
            command: Some("echo hi > $FLOW_OUT/x".into()),
            env: BTreeMap::from([("LANG".to_owned(), Some("C".to_owned()))]),
            salt: None,
            outputs: Vec::new(),
        }
    }

    // Pinned: if this digest changes, every cached artifact of every user is invalidated.
    // Change it only together with FINGERPRINT_VERSION and a history line.
    #[test]
    fn pinned_fingerprint() {
        assert_eq!(
            base().fingerprint().to_string(),
            "72c455bc47e54c3e5108494f5e1cc7e4fed95b7299225918d71b92546937375e"
        );
    }

    #[test]
    fn pinned_fingerprint_of_a_minimal_recipe() {
        let r = Recipe {
            v: 1,
            kind: "command".into(),
            kind_version: 1,
            params: serde_json::json!({}),
            needs: BTreeMap::new(),
            inputs: BTreeMap::new(),
            command: Some("true".into()),
            env: BTreeMap::new(),
            salt: None,
            outputs: Vec::new(),
        };
        assert_eq!(r.fingerprint().to_string(), "add3dd9dc591addfb2916794a653e7fbcf1654e85a28c3669d9010366725a439");
    }

    #[test]
    fn parameter_order_and_float_spelling_do_not_matter() {
        let mut other = base();
        other.params = serde_json::from_str(r#"{"steps": 100, "lr": 3e-3}"#).unwrap();
        assert_eq!(other.fingerprint(), base().fingerprint());
    }

    #[test]
    fn each_component_changes_the_fingerprint() {
        let b = base().fingerprint();
        type Change = Box<dyn Fn(&mut Recipe)>;
        let changes: Vec<(&str, Change)> = vec![
            ("v", Box::new(|r| r.v += 1)),
            ("kind", Box::new(|r| r.kind = "eval".into())),
            ("kind_version", Box::new(|r| r.kind_version += 1)),
            ("params value", Box::new(|r| r.params["lr"] = serde_json::json!(0.001))),
            ("params key", Box::new(|r| r.params["extra"] = serde_json::json!(1))),
            (
                "needs digest",
                Box::new(|r| {
                    r.needs.insert("data".into(), Needed::One(Digest::of(b"other")));
                }),
            ),
            (
                "needs role",
                Box::new(|r| {
                    let d = r.needs.remove("data").unwrap();
                    r.needs.insert("corpus".into(), d);
                }),
            ),
            (
                "needs list order",
                Box::new(|r| {
                    r.needs.insert("data".into(), Needed::Many(vec![Digest::of(b"a"), Digest::of(b"b")]));
                }),
            ),
            (
                "inputs content",
                Box::new(|r| {
                    r.inputs.insert("a.txt".into(), Digest::of(b"b"));
                }),
            ),
            (
                "inputs path",
                Box::new(|r| {
                    let d = r.inputs.remove("a.txt").unwrap();
                    r.inputs.insert("b.txt".into(), d);
                }),
            ),
            ("command", Box::new(|r| r.command = Some("echo bye > $FLOW_OUT/x".into()))),
            (
                "env value",
                Box::new(|r| {
                    r.env.insert("LANG".into(), Some("en".into()));
                }),
            ),
            (
                "env unset",
                Box::new(|r| {
                    r.env.insert("LANG".into(), None);
                }),
            ),
            ("salt", Box::new(|r| r.salt = Some("2026-11".into()))),
            ("outputs", Box::new(|r| r.outputs = vec!["x".into()])),
        ];
        let mut seen = std::collections::HashSet::from([b]);
        for (what, change) in changes {
            let mut r = base();
            change(&mut r);
            assert!(seen.insert(r.fingerprint()), "changing {what} must change the fingerprint");
        }
        let mut swapped = base();
        swapped.needs.insert("data".into(), Needed::Many(vec![Digest::of(b"b"), Digest::of(b"a")]));
        assert!(!seen.contains(&swapped.fingerprint()));
    }
}
