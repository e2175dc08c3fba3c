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
use crate::store::Record;

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
