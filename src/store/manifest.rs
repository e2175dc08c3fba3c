//! [`Manifest`]: the sorted list of an artifact's files (path, size, executable bit, blob
//! digest) and symlinks. The artifact's digest is the blake3 of the manifest's canonical bytes.
//!
//! Manifests read from a store are untrusted input: [`Manifest::parse`] rejects absolute paths,
//! `..`, duplicate or nested-under-file paths, links that escape the artifact and absurd sizes.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::hash::Digest;

pub const MANIFEST_VERSION: u32 = 1;
/// No single file of an artifact may claim to be larger than this (1 TiB).
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// No artifact may have more entries than this.
pub const MAX_ENTRIES: usize = 10_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Entry {
    File { path: String, size: u64, executable: bool, digest: Digest },
    Link { path: String, target: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON of the expected shape: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("manifest version {0} is not supported (this flow reads {MANIFEST_VERSION})")]
    Version(u32),
    #[error("manifest entry `{path}` is unsafe: {why}")]
    Unsafe { path: String, why: &'static str },
    #[error("manifest entries are not sorted and unique at `{0}`")]
    Order(String),
    #[error("manifest declares {0} entries; the limit is {MAX_ENTRIES}")]
    TooMany(usize),
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::File { path, .. } | Entry::Link { path, .. } => path,
        }
    }
}

impl Manifest {
    /// Builds a manifest from entries in any order.
    pub fn new(mut entries: Vec<Entry>) -> Self {
        entries.sort_by(|a, b| a.path().cmp(b.path()));
        Self { version: MANIFEST_VERSION, entries }
    }

    pub fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifests always serialise")
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.bytes())
    }

    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| if let Entry::File { size, .. } = e { *size } else { 0 }).sum()
    }

    pub fn files(&self) -> impl Iterator<Item = (&str, u64, bool, Digest)> {
        self.entries.iter().filter_map(|e| match e {
            Entry::File { path, size, executable, digest } => Some((path.as_str(), *size, *executable, *digest)),
            Entry::Link { .. } => None,
        })
    }

    /// Parses and validates untrusted manifest bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Manifest = serde_json::from_slice(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.version != MANIFEST_VERSION {
            return Err(ManifestError::Version(self.version));
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(ManifestError::TooMany(self.entries.len()));
        }
        let unsafe_ = |path: &str, why| ManifestError::Unsafe { path: path.chars().take(200).collect(), why };
        let mut files = BTreeSet::new();
        let links: BTreeSet<&str> =
            self.entries.iter().filter(|e| matches!(e, Entry::Link { .. })).map(Entry::path).collect();
        for pair in self.entries.windows(2) {
            if pair[0].path() >= pair[1].path() {
                return Err(ManifestError::Order(pair[1].path().chars().take(200).collect()));
            }
        }
        for entry in &self.entries {
            let path = entry.path();
            check_relative(path).map_err(|why| unsafe_(path, why))?;
            files.insert(path);
            match entry {
                Entry::File { size, .. } if *size > MAX_FILE_SIZE => return Err(unsafe_(path, "absurd size")),
                Entry::Link { target, .. } => {
                    if target.is_empty() || target.contains('\0') || Path::new(target).is_absolute() {
                        return Err(unsafe_(path, "link target is absolute or empty"));
                    }
                    if !link_stays_inside(path, target, &links) {
                        return Err(unsafe_(path, "link escapes the artifact"));
                    }
                }
                Entry::File { .. } => {}
            }
        }
        // A path under another entry ("a" and "a/b") would need "a" to be both file and directory.
        for entry in &self.entries {
            let mut parent = Path::new(entry.path()).parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                if files.contains(p.to_str().unwrap_or_default()) {
                    return Err(unsafe_(entry.path(), "nested under another entry"));
                }
                parent = p.parent();
            }
        }
        Ok(())
    }
}

/// A safe relative path: non-empty, `/`-separated normal components only, no NUL.
pub fn check_relative(path: &str) -> Result<(), &'static str> {
    if path.is_empty() || path.len() > 4096 || path.contains('\0') || path.contains('\\') {
        return Err("empty, overlong or contains NUL or backslash");
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err("absolute path");
    }
    for c in p.components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return Err("contains `..`"),
            _ => return Err("not a normalised relative path"),
        }
    }
    if path.ends_with('/') || path.contains("//") || path.split('/').any(|c| c == ".") {
        return Err("not a normalised relative path");
    }
    Ok(())
}

/// Whether a relative link at `path` pointing to `target` resolves inside the artifact root.
///
/// Resolution is textual, which is only sound if the walk never passes *through* another link
/// (`d/L -> ../..` followed by `M -> d/L/../..` escapes on disk though each text stays inside),
/// so a target that traverses any of `links` is refused. A target that *is* a link is fine:
/// that link was checked the same way.
pub fn link_stays_inside(path: &str, target: &str, links: &BTreeSet<&str>) -> bool {
    let mut at: Vec<String> = Path::new(path)
        .parent()
        .map(|p| p.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let parts: Vec<Component> = Path::new(target).components().collect();
    for (i, c) in parts.iter().enumerate() {
        match c {
            Component::Normal(n) => {
                at.push(n.to_string_lossy().into_owned());
                if i + 1 < parts.len() && links.contains(at.join("/").as_str()) {
                    return false;
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if at.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Entry {
        Entry::File { path: path.into(), size: 1, executable: false, digest: Digest::of(b"x") }
    }

    fn link(path: &str, target: &str) -> Entry {
        Entry::Link { path: path.into(), target: target.into() }
    }

    fn parse(entries: Vec<Entry>) -> Result<Manifest, ManifestError> {
        Manifest::parse(&Manifest { version: 1, entries }.bytes())
    }

    #[test]
    fn a_sorted_manifest_round_trips_and_pins_its_digest() {
        let m = Manifest::new(vec![file("b/c.txt"), file("a.txt"), link("b/l", "c.txt")]);
        assert_eq!(Manifest::parse(&m.bytes()).unwrap(), m);
        assert_eq!(m.digest().hex(), "a8927a8fa42ef6bb7601959b7064fd4611fb6e1e32a15accd70dfa5fa690b46d");
    }

    #[test]
    fn hostile_manifests_are_rejected() {
        for (entries, want) in [
            (vec![file("../etc/passwd")], "`..`"),
            (vec![file("/etc/passwd")], "absolute"),
            (vec![file("a/../../b")], "`..`"),
            (vec![file("a"), file("a")], "sorted"),
            (vec![file("b"), file("a")], "sorted"),
            (vec![file("a"), file("a/b")], "nested"),
            (vec![link("l", "../../x")], "escapes"),
            (vec![link("d/l", "../../x")], "escapes"),
            (vec![link("l", "/etc/passwd")], "absolute"),
            (vec![file("")], "empty"),
            (vec![file("a//b")], "normalised"),
            (vec![file("./a")], "normalised"),
            (
                vec![Entry::File {
                    path: "big".into(),
                    size: MAX_FILE_SIZE + 1,
                    executable: false,
                    digest: Digest::of(b""),
                }],
                "absurd",
            ),
        ] {
            let err = parse(entries.clone()).expect_err(&format!("{entries:?} must be rejected")).to_string();
            assert!(err.contains(want), "{entries:?}: {err}");
        }
        assert!(parse(vec![link("d/l", "../x"), file("x")]).is_ok());
        // Each text stays inside, but `m` walks through the link `d/e/l` and escapes on disk.
        let chain = vec![link("d/e/l", "../.."), link("m", "d/e/l/../../..")];
        assert!(parse(chain).unwrap_err().to_string().contains("escapes"));
        assert!(parse(vec![link("a", "b"), link("b", "c"), file("c")]).is_ok(), "a link to a link is fine");
    }

    #[test]
    fn unknown_fields_and_versions_are_rejected() {
        assert!(Manifest::parse(br#"{"version":1,"entries":[],"extra":1}"#).is_err());
        assert!(Manifest::parse(br#"{"version":2,"entries":[]}"#).is_err());
        assert!(Manifest::parse(b"not json").is_err());
    }
}
