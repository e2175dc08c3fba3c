//! [`Record`]: the run record stored at `ac/<fingerprint>.json`. Its existence means the
//! artifact it names is complete (it is written last, create-if-absent).

use serde::{Deserialize, Serialize};

use crate::hash::{Digest, Fingerprint};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub fingerprint: Fingerprint,
    pub artifact: Digest,
    pub kind: String,
    /// The stage name and workflow that produced it: provenance only, never part of the key.
    pub stage: String,
    pub workflow: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub seconds: f64,
    pub device: String,
    pub flow_version: String,
    pub host: String,
    /// The artifact's total file size in bytes.
    pub bytes: u64,
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    /// Parses a record strictly: every field must be present with the right type, no other
    /// field may be, and the fingerprint inside must be the one it is stored under.
    pub fn parse(bytes: &[u8], expected: Fingerprint) -> Result<Self, String> {
        let record: Record = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if record.fingerprint != expected {
            return Err(format!("record claims fingerprint {} but is stored under {expected}", record.fingerprint));
        }
        if !record.seconds.is_finite() || record.seconds < 0.0 {
            return Err("record has an invalid duration".into());
        }
        Ok(record)
    }
}
