//! Trust in a shared store ([`Trust`]): which keys a remote's records must be signed with to
//! be used, and which key signs what this machine publishes (docs/remote.md#trust).
//!
//! A signature is a DSSE envelope ([`dsse`]) around an in-toto Statement of SLSA provenance
//! ([`provenance`]) that names the record's fingerprint, artifact and own digest, stored on the
//! remote beside the record at `att/<fingerprint>/<key id>.json` — one per signing key, so two
//! teams sharing a bucket each sign for themselves. Keys are Ed25519 ([`keys`]).

pub mod dsse;
pub mod keys;
pub mod provenance;

use object_store::path::Path as ObjectPath;

pub use keys::{PublicKey, SecretKey};
pub use provenance::Built;

use crate::hash::Fingerprint;
use crate::store::remote::Remote;
use crate::store::{Record, StoreError, cas};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{0}")]
    BadKey(String),
    #[error("{0}")]
    Invalid(String),
}

/// The trust settings of one command.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// When not empty, a remote record is used only if one of these keys signed it.
    pub trusted: Vec<PublicKey>,
    /// Signs every record this machine publishes.
    pub signer: Option<SecretKey>,
    /// A remote record that is not trusted stops the run rather than being run around.
    pub require_signed: bool,
}

/// Where `key`'s signature of the record of `fp` is kept.
pub fn attestation_path(fp: &Fingerprint, key: &PublicKey) -> ObjectPath {
    ObjectPath::from(format!("att/{fp}/{}.json", key.id()))
}

/// The folder of every signature of the record of `fp`.
pub fn attestations_of(fp: &Fingerprint) -> ObjectPath {
    ObjectPath::from(format!("att/{fp}"))
}

impl Trust {
    /// Whether remote records are checked at all.
    pub fn checks(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// The signature of `record` (whose manifest's bytes are `manifest`) by the signing key.
    pub fn sign(&self, record: &Record, manifest: &[u8], built: &Built) -> Option<(ObjectPath, Vec<u8>)> {
        let key = self.signer.as_ref()?;
        let statement = provenance::statement(record, manifest, built);
        let payload = serde_json::to_vec(&statement).expect("statements serialise");
        let envelope = dsse::Envelope::sign(dsse::IN_TOTO, &payload, key);
        let bytes = serde_json::to_vec_pretty(&envelope).expect("envelopes serialise");
        Some((attestation_path(&record.fingerprint, &key.public()), bytes))
    }

    /// Whether `envelope` (the bytes stored for `key`) is `key`'s valid signature of exactly
    /// `record`; why not otherwise.
    pub fn verify(key: &PublicKey, envelope: &[u8], record: &Record) -> Result<(), TrustError> {
        let envelope: dsse::Envelope = serde_json::from_slice(envelope)
            .map_err(|e| TrustError::Invalid(format!("the signature envelope is not DSSE: {e}")))?;
        if envelope.payload_type != dsse::IN_TOTO {
            return Err(TrustError::Invalid(format!(
                "the envelope holds `{}`, not an in-toto Statement",
                envelope.payload_type
            )));
        }
        let payload = envelope.verify(key)?;
        provenance::check(&payload, record)
    }
}

/// The name of the trusted key that signed the remote's `record`; `None` when no key is
/// trusted (every record is used); [`StoreError::Untrusted`] saying why when none did.
pub async fn signer_of(remote: &Remote, trust: &Trust, record: &Record) -> Result<Option<String>, StoreError> {
    if !trust.checks() {
        return Ok(None);
    }
    let fp = record.fingerprint;
    let mut problems = Vec::new();
    for key in &trust.trusted {
        let path = attestation_path(&fp, key);
        if let Some(bytes) = remote.object(&path).await? {
            match Trust::verify(key, &bytes, record) {
                Ok(()) => return Ok(Some(key.name.clone())),
                Err(e) => problems.push(format!("`{path}`: {e}")),
            }
        }
    }
    let why = if problems.is_empty() {
        let others = remote.names(&attestations_of(&fp)).await?;
        let others: Vec<&str> = others.iter().map(|n| n.trim_end_matches(".json")).collect();
        if others.is_empty() {
            "it is not signed".to_owned()
        } else {
            format!("it is signed only by keys not trusted here ({})", others.join(", "))
        }
    } else {
        problems.join("; ")
    };
    Err(StoreError::Untrusted { key: format!("{}/{}", remote.url(), cas::record_path(&fp)), why })
}

/// Every record on the remote, each with the trusted key that signed it or why none did
/// (`flow verify --remote`).
pub async fn audit(remote: &Remote, trust: &Trust) -> Result<Vec<(Fingerprint, Result<String, String>)>, StoreError> {
    let mut out = Vec::new();
    for name in remote.names(&ObjectPath::from("ac")).await? {
        let Some(fp) = name.strip_suffix(".json").and_then(|h| h.parse::<Fingerprint>().ok()) else { continue };
        let verdict = match remote.record(&fp).await {
            Ok(Some(record)) => match signer_of(remote, trust, &record).await {
                Ok(key) => Ok(key.unwrap_or_default()),
                Err(StoreError::Untrusted { why, .. }) => Err(why),
                Err(e) => Err(e.to_string()),
            },
            Ok(None) => continue,
            Err(e) => Err(e.to_string()),
        };
        out.push((fp, verdict));
    }
    out.sort_by_key(|(fp, _)| fp.to_string());
    Ok(out)
}
