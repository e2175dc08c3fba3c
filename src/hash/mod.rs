//! Content digests: [`Digest`] (blake3 of bytes), [`Fingerprint`] (blake3 of a stage's canonical
//! recipe), canonical JSON, and file hashing with a stat cache ([`file`]).
//!
//! This is a leaf module: it knows nothing about workflows, stores or stages.

pub mod file;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The blake3 digest of some bytes: a file's content, a manifest, a canonical recipe.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// A stage's cache key: the digest of the canonical description of everything it depends on.
///
/// A distinct type from [`Digest`] so an artifact digest can never be used where a fingerprint is
/// meant, which is the one mix-up that would silently reuse a wrong artifact.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(Digest);

/// A hex string that is not a 64-character lowercase blake3 digest.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a 64-character lowercase hex digest")]
pub struct ParseDigestError(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    pub fn from_hasher(hasher: &blake3::Hasher) -> Self {
        Self(*hasher.finalize().as_bytes())
    }

    pub fn hex(&self) -> String {
        self.to_string()
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first eight hex characters, for status lines.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_owned()
    }

    /// The two-character shard directory of this digest's object path.
    pub fn shard(&self) -> String {
        self.to_string()[..2].to_owned()
    }
}

impl Fingerprint {
    /// Fingerprints the canonical JSON form of `recipe`.
    pub fn of(recipe: &impl Serialize) -> Self {
        Self(Digest::of(&canonical_json(recipe)))
    }

    pub fn digest(&self) -> Digest {
        self.0
    }

    pub fn short(&self) -> String {
        self.0.short()
    }
}

/// Serialises `value` as JSON with object keys sorted and no insignificant whitespace.
///
/// Sorting comes from `serde_json::Value`'s `BTreeMap` (the `preserve_order` feature must stay
/// off); floats are written in ryu's shortest round-trip form, so `3e-3` and `0.003` agree.
/// Non-finite floats must be rejected before this point: serde_json would write them as `null`.
pub fn canonical_json(value: &impl Serialize) -> Vec<u8> {
    let value = serde_json::to_value(value).expect("recipe types always serialise");
    serde_json::to_vec(&value).expect("a JSON value always serialises")
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Formatted once per stage and object path on every no-op apply: keep it cheap.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, byte) in self.0.iter().enumerate() {
            out[2 * i] = HEX[(byte >> 4) as usize];
            out[2 * i + 1] = HEX[(byte & 0xf) as usize];
        }
        f.write_str(std::str::from_utf8(&out).expect("hex is ASCII"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ParseDigestError(s.chars().take(80).collect()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).expect("checked hex");
            let lo = (pair[1] as char).to_digit(16).expect("checked hex");
            out[i] = (hi * 16 + lo) as u8;
        }
        Ok(Self(out))
    }
}

impl FromStr for Fingerprint {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Digest::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_blake3s() {
        assert_eq!(Digest::of(b"").hex(), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    }

    #[test]
    fn digest_parses_its_own_display_and_rejects_other_strings() {
        let d = Digest::of(b"flow");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert_eq!(d.shard(), d.to_string()[..2]);
        assert!("abc".parse::<Digest>().is_err());
        assert!(d.to_string().to_uppercase().parse::<Digest>().is_err());
        assert!(format!("{d}0").parse::<Digest>().is_err());
        assert!("g".repeat(64).parse::<Digest>().is_err());
    }

    #[test]
    fn canonical_json_sorts_keys_and_normalises_floats() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b": 0.003, "a": [1, {"z": 1, "y": 2}]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a": [1, {"y": 2, "z": 1}], "b": 3e-3}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(String::from_utf8(canonical_json(&a)).unwrap(), r#"{"a":[1,{"y":2,"z":1}],"b":0.003}"#);
    }
}
