//! What a signature vouches for: an in-toto Statement (v1) with an SLSA provenance predicate
//! (v1) — the artifact built (its manifest's SHA-256, in-toto's standard digest, beside flow's
//! BLAKE3), from which inputs, by which recipe and flow version, on which host and when — and,
//! as a byproduct, the digest of the run record itself. So a valid signature covers the whole
//! record and cannot be moved onto another fingerprint, artifact or record.

use serde_json::{Value, json};
use sha2::Digest as _;

use super::TrustError;
use crate::hash::Digest;
use crate::store::{Record, cas};

pub const STATEMENT: &str = "https://in-toto.io/Statement/v1";
pub const SLSA: &str = "https://slsa.dev/provenance/v1";
const BUILD_TYPE: &str = "https://flow.dev/stage/v1";

/// What a publisher knows of a run beyond its record.
#[derive(Clone, Debug, Default)]
pub struct Built {
    /// The fingerprint's recipe, as the lock file holds it.
    pub recipe: Value,
    /// Each input: `role/stage` and its artifact.
    pub inputs: Vec<(String, Digest)>,
}

/// The BLAKE3 of the record as stored.
fn record_digest(record: &Record) -> String {
    Digest::of(&cas::record_bytes(record)).to_string()
}

/// The statement for `record`, whose manifest's bytes are `manifest`.
pub fn statement(record: &Record, manifest: &[u8], built: &Built) -> Value {
    let started = humantime::parse_rfc3339(&record.created)
        .ok()
        .and_then(|t| t.checked_sub(std::time::Duration::from_secs_f64(record.seconds)))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string());
    json!({
        "_type": STATEMENT,
        "subject": [{
            "name": format!("{}/{}", record.workflow, record.stage),
            "digest": {"sha256": hex(&sha2::Sha256::digest(manifest)), "blake3": record.artifact.to_string()},
        }],
        "predicateType": SLSA,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"workflow": record.workflow, "stage": record.stage, "kind": record.kind},
                "internalParameters": {"fingerprint": record.fingerprint.to_string(), "recipe": built.recipe},
                "resolvedDependencies": built.inputs.iter().map(|(name, d)| json!({"name": name, "digest": {"blake3": d.to_string()}})).collect::<Vec<_>>(),
            },
            "runDetails": {
                "builder": {"id": format!("flow@{}", record.flow_version), "version": {"flow": record.flow_version}},
                "metadata": {"invocationId": record.fingerprint.to_string(), "startedOn": started, "finishedOn": record.created},
                "byproducts": [{"name": "run-record", "digest": {"blake3": record_digest(record)}}, {"name": "host", "content": record.host}],
            },
        },
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that a signed `payload` is a statement about exactly `record`.
pub fn check(payload: &[u8], record: &Record) -> Result<(), TrustError> {
    let bad = |why: &str| TrustError::Invalid(format!("the signed statement {why}"));
    let s: Value = serde_json::from_slice(payload).map_err(|_| bad("is not JSON"))?;
    if s["_type"] != STATEMENT || s["predicateType"] != SLSA {
        return Err(bad("is not an in-toto Statement of SLSA provenance"));
    }
    if s["subject"][0]["digest"]["blake3"] != record.artifact.to_string() {
        return Err(bad("is about another artifact"));
    }
    if s["predicate"]["buildDefinition"]["internalParameters"]["fingerprint"] != record.fingerprint.to_string() {
        return Err(bad("is about another fingerprint"));
    }
    if s["predicate"]["runDetails"]["byproducts"][0]["digest"]["blake3"] != record_digest(record) {
        return Err(bad("is about another run record"));
    }
    Ok(())
}
