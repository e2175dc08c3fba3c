//! Token shards: each split (`train`, `val`) is one little-endian array of token ids —
//! uint16 when the vocabulary fits, else uint32 — with every document followed by the
//! end-of-text token, described by `index.json` ([`Index`]).

use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

pub const INDEX_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    U16,
    U32,
}

impl Dtype {
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 { Dtype::U16 } else { Dtype::U32 }
    }

    pub fn width(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }
}

/// `index.json` of a data artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub version: u32,
    pub dtype: Dtype,
    pub vocab_size: usize,
    /// The id appended after every document.
    pub separator: u32,
    pub train: SplitInfo,
    pub val: SplitInfo,
    pub sources: Vec<SourceStats>,
    /// Exact duplicate documents removed before the split.
    pub duplicates_removed: u64,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitInfo {
    pub file: String,
    pub documents: u64,
    /// Tokens including one separator per document.
    pub tokens: u64,
    /// UTF-8 bytes of the documents' text.
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceStats {
    pub name: String,
    pub weight: f64,
    /// Documents read (after deduplication).
    pub documents: u64,
    pub bytes: u64,
    /// Documents of this source in the train split, and their tokens.
    pub train_documents: u64,
    pub train_tokens: u64,
    pub val_documents: u64,
    /// This source's tokens in the val split, which holds the sources one after another in
    /// this order.
    pub val_tokens: u64,
}

/// Writes `tokens` as a shard of `dtype`.
pub fn write(path: &Path, tokens: &[u32], dtype: Dtype) -> io::Result<()> {
    let mut out = io::BufWriter::new(fs_err::File::create(path)?);
    for &t in tokens {
        match dtype {
            Dtype::U16 => out
                .write_all(&u16::try_from(t).map_err(|_| io::Error::other("token id exceeds uint16"))?.to_le_bytes())?,
            Dtype::U32 => out.write_all(&t.to_le_bytes())?,
        }
    }
    out.flush()
}

/// Reads a shard; its length must be a whole number of `dtype` values.
pub fn read(path: &Path, dtype: Dtype) -> io::Result<Vec<u32>> {
    let bytes = fs_err::read(path)?;
    if bytes.len() % dtype.width() != 0 {
        return Err(io::Error::other(format!("`{}` is not a whole number of {dtype:?} tokens", path.display())));
    }
    Ok(match dtype {
        Dtype::U16 => bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect(),
        Dtype::U32 => bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
    })
}

impl Index {
    pub fn load(dir: &Path) -> io::Result<Self> {
        let bytes = fs_err::read(dir.join("index.json"))?;
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::other(format!("`{}`: {e}", dir.join("index.json").display())))?;
        if index.version != INDEX_VERSION {
            return Err(io::Error::other(format!("data index version {} is not supported", index.version)));
        }
        Ok(index)
    }

    /// The tokens of a split, checked against the index.
    /// Each source's name and its part of the val split's tokens.
    pub fn val_by_source<'t>(&self, val: &'t [u32]) -> Vec<(&str, &'t [u32])> {
        let mut start = 0usize;
        self.sources
            .iter()
            .map(|s| {
                let end = (start + s.val_tokens as usize).min(val.len());
                let part = (s.name.as_str(), &val[start.min(end)..end]);
                start = end;
                part
            })
            .collect()
    }

    pub fn tokens(&self, dir: &Path, split: &SplitInfo) -> io::Result<Vec<u32>> {
        let tokens = read(&dir.join(&split.file), self.dtype)?;
        if tokens.len() as u64 != split.tokens {
            return Err(io::Error::other(format!(
                "`{}` holds {} tokens, the index says {}",
                split.file,
                tokens.len(),
                split.tokens
            )));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.vocab_size) {
            return Err(io::Error::other(format!("`{}` holds token {bad} outside the vocabulary", split.file)));
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_round_trip_in_both_widths() {
        let dir = tempfile::tempdir().unwrap();
        for (dtype, max) in [(Dtype::U16, 65_535u32), (Dtype::U32, 1_000_000)] {
            let tokens = vec![0, 1, max, 7];
            let p = dir.path().join("s.bin");
            write(&p, &tokens, dtype).unwrap();
            assert_eq!(std::fs::metadata(&p).unwrap().len(), 4 * dtype.width() as u64);
            assert_eq!(read(&p, dtype).unwrap(), tokens);
        }
        assert!(write(&dir.path().join("x.bin"), &[70_000], Dtype::U16).is_err());
        assert_eq!(Dtype::for_vocab(65_536), Dtype::U16);
        assert_eq!(Dtype::for_vocab(65_537), Dtype::U32);
    }
}
