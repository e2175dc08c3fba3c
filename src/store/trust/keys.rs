//! Ed25519 keys as flow names them, in Nix's style: a public key is `NAME:BASE64` of its 32
//! bytes, a secret key `NAME:BASE64` of its 32-byte seed followed by the public key. The
//! crypto is ed25519-dalek's; this file only reads, writes and names keys.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{SigningKey, VerifyingKey};

use super::TrustError;

/// A public key a store's records may be signed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    pub key: VerifyingKey,
}

/// A key that signs what this machine publishes.
#[derive(Clone)]
pub struct SecretKey {
    pub name: String,
    pub key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Key names go into object keys and messages: letters, digits and `. _ -`.
fn check_name(name: &str) -> Result<(), TrustError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(TrustError::BadKey(format!("key name `{name}` may hold only letters, digits and `. _ -`")))
    }
}

fn split(text: &str) -> Result<(&str, Vec<u8>), TrustError> {
    let (name, b64) =
        text.trim().split_once(':').ok_or_else(|| TrustError::BadKey("a key is written `NAME:BASE64`".into()))?;
    check_name(name)?;
    let bytes = STANDARD.decode(b64).map_err(|e| TrustError::BadKey(format!("key `{name}`: {e}")))?;
    Ok((name, bytes))
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, TrustError> {
        let (name, bytes) = split(text)?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|_| TrustError::BadKey(format!("public key `{name}` must be 32 bytes")))?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|e| TrustError::BadKey(format!("public key `{name}`: {e}")))?;
        Ok(Self { name: name.to_owned(), key })
    }

    /// Where its signatures are kept beside a record: its name and 16 hex digits of its bytes,
    /// so two keys given the same name never share a place.
    pub fn id(&self) -> String {
        format!("{}-{}", self.name, &blake3::hash(self.key.as_bytes()).to_hex()[..16])
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, STANDARD.encode(self.key.as_bytes()))
    }
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, TrustError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| TrustError::BadKey(format!("no randomness: {e}")))?;
        Ok(Self { name: name.to_owned(), key: SigningKey::from_bytes(&seed) })
    }

    pub fn parse(text: &str) -> Result<Self, TrustError> {
        let (name, bytes) = split(text)?;
        let bytes: [u8; 64] =
            bytes.try_into().map_err(|_| TrustError::BadKey(format!("secret key `{name}` must be 64 bytes")))?;
        let key = SigningKey::from_keypair_bytes(&bytes)
            .map_err(|e| TrustError::BadKey(format!("secret key `{name}`: {e}")))?;
        Ok(Self { name: name.to_owned(), key })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// The secret key file's text.
    pub fn to_text(&self) -> String {
        format!("{}:{}\n", self.name, STANDARD.encode(self.key.to_keypair_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_as_text_and_bad_ones_say_why() {
        let secret = SecretKey::generate("team-a").unwrap();
        let back = SecretKey::parse(&secret.to_text()).unwrap();
        assert_eq!(back.key.to_bytes(), secret.key.to_bytes());
        let public = secret.public();
        let text = public.to_string();
        assert!(text.starts_with("team-a:") && text.len() == "team-a:".len() + 44, "{text}");
        assert_eq!(PublicKey::parse(&text).unwrap(), public);
        assert_eq!(public.id().len(), "team-a-".len() + 16);
        let e = |t: &str| PublicKey::parse(t).unwrap_err().to_string();
        assert!(e("no-colon").contains("`NAME:BASE64`"));
        assert!(e("a b:AAAA").contains("key name `a b`"));
        assert!(e("k:AAAA").contains("must be 32 bytes"));
        assert!(e("k:!!").contains("key `k`"));
        assert!(SecretKey::parse(&text).unwrap_err().to_string().contains("must be 64 bytes"));
    }
}
