//! DSSE, the Dead Simple Signing Envelope in-toto signs inside: a payload, its type, and
//! signatures over the pre-authentication encoding `PAE(type, payload)` — so a signature made
//! for one payload type cannot be replayed under another. The envelope format and PAE are
//! DSSE v1's (github.com/secure-systems-lab/dsse); the signatures are Ed25519 (ed25519-dalek,
//! verified strictly).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer};
use serde::{Deserialize, Serialize};

use super::TrustError;
use super::keys::{PublicKey, SecretKey};

/// The payload type of an in-toto Statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Base64 of the payload's bytes.
    pub payload: String,
    pub signatures: Vec<Sig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sig {
    pub keyid: String,
    /// Base64 of the signature's 64 bytes.
    pub sig: String,
}

/// The bytes a DSSE signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// `payload` of type `payload_type`, signed by `key`.
    pub fn sign(payload_type: &str, payload: &[u8], key: &SecretKey) -> Self {
        let sig = key.key.sign(&pae(payload_type, payload));
        Self {
            payload_type: payload_type.to_owned(),
            payload: STANDARD.encode(payload),
            signatures: vec![Sig { keyid: key.public().id(), sig: STANDARD.encode(sig.to_bytes()) }],
        }
    }

    /// The payload, if `key` signed this envelope (a signature under its key id that verifies
    /// over the envelope's type and payload).
    pub fn verify(&self, key: &PublicKey) -> Result<Vec<u8>, TrustError> {
        let payload = STANDARD.decode(&self.payload).map_err(|e| TrustError::Invalid(format!("payload: {e}")))?;
        let id = key.id();
        let sig = self
            .signatures
            .iter()
            .find(|s| s.keyid == id)
            .ok_or_else(|| TrustError::Invalid(format!("no signature by key `{}`", key.name)))?;
        let bytes: [u8; 64] = STANDARD
            .decode(&sig.sig)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| TrustError::Invalid("a signature is not 64 bytes of base64".into()))?;
        key.key
            .verify_strict(&pae(&self.payload_type, &payload), &Signature::from_bytes(&bytes))
            .map_err(|_| TrustError::Invalid(format!("the signature by key `{}` does not verify", key.name)))?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1s() {
        // The example of the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn a_signature_covers_the_type_and_the_payload() {
        let key = SecretKey::generate("k").unwrap();
        let env = Envelope::sign(IN_TOTO, b"{\"a\":1}", &key);
        assert_eq!(env.verify(&key.public()).unwrap(), b"{\"a\":1}");
        let mut other_type = env.clone();
        other_type.payload_type = "text/plain".into();
        assert!(other_type.verify(&key.public()).unwrap_err().to_string().contains("does not verify"));
        let mut other_payload = env.clone();
        other_payload.payload = STANDARD.encode(b"{\"a\":2}");
        assert!(other_payload.verify(&key.public()).is_err());
        let stranger = SecretKey::generate("k").unwrap();
        assert!(env.verify(&stranger.public()).unwrap_err().to_string().contains("no signature by key `k`"));
    }
}
