//! The `data` kind: text → tokenizer + train/val token shards.
//!
//! Sources are the artifacts named by the `sources` role (in order, each named by its stage) and
//! then, as one more source, the stage's own `inputs:` files, read into documents by [`read`]:
//! `.jsonl` one per line (its `text_field`, or a conversation rendered with the chat template),
//! `.parquet` one per row ([`parquet`]), `.txt` cut by `split`. Exact duplicates are removed
//! across all sources first; each remaining document goes to val or train by a hash of the seed
//! and its content (stable when other documents change). The train split mixes sources by
//! `weights` with Megatron's largest-deficit rule, so each source's realised share stays within
//! two documents of its weight at every prefix. The tokenizer is trained on the train split, or
//! taken from the `tokenizer` role.

use std::collections::HashSet;
use std::path::PathBuf;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{About, InputError, Kind, ParamError, Progress, Role, Roles, StageError, Task, invalid, typed};
use crate::hash::Digest;
use crate::ml::shards::{self, Dtype, Index, SourceStats, SplitInfo};
use crate::ml::tokenizer::{EOT, Tokenizer};

mod parquet;
mod read;

pub use read::TextSplit;
use read::{files_under, read_documents};

pub struct Data;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default = "vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "val_fraction")]
    pub val_fraction: f64,
    #[serde(default = "super::default_seed")]
    pub seed: u64,
    /// One weight per source (the `sources` stages in order, then `inputs:` if any).
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    /// How many train documents to draw when mixing; default: as many as the weights allow
    /// without repeating any source.
    #[serde(default)]
    pub documents: Option<usize>,
    #[serde(default = "split")]
    pub split: TextSplit,
    #[serde(default = "text_field")]
    pub text_field: String,
}

fn vocab_size() -> usize {
    2048
}
fn val_fraction() -> f64 {
    0.05
}
fn split() -> TextSplit {
    TextSplit::Paragraphs
}
fn text_field() -> String {
    "text".into()
}

const ROLES: &[Role] =
    &[Role { name: "sources", list: true, required: false }, Role { name: "tokenizer", list: false, required: false }];

impl Kind for Data {
    fn about(&self) -> &'static About {
        &About {
            name: "data",
            version: 2,
            roles: Roles::Fixed(ROLES),
            device: false,
            defaults: &["seed"],
            outputs: &["index.json", "tokenizer.json", "train.bin"],
        }
    }

    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError> {
        let (p, canonical): (Params, Value) = typed(with)?;
        if !(256 + crate::ml::tokenizer::SPECIAL.len()..=1 << 20).contains(&p.vocab_size) {
            return Err(invalid(
                "vocab_size",
                format!("must be between {} and {}", 256 + crate::ml::tokenizer::SPECIAL.len(), 1 << 20),
            ));
        }
        if !(0.0..1.0).contains(&p.val_fraction) {
            return Err(invalid("val_fraction", "must be in [0, 1)"));
        }
        if let Some(w) = &p.weights
            && (w.is_empty() || w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0)
        {
            return Err(invalid("weights", "weights must be finite, non-negative and not all zero"));
        }
        Ok(canonical)
    }

    fn run(&self, task: &Task, progress: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let p: Params = task.params()?;
        let mut sources: Vec<(String, Vec<PathBuf>)> = Vec::new();
        let names = task.needs.get("sources");
        for (i, dir) in task.inputs.get("sources").into_iter().flatten().enumerate() {
            let name = names.and_then(|n| n.get(i)).cloned().unwrap_or_else(|| format!("sources[{i}]"));
            sources.push((name, files_under(dir)?));
        }
        // An input file named `tokenizer.json` is a given tokenizer, not text.
        let (given, texts): (Vec<PathBuf>, Vec<PathBuf>) =
            task.files.iter().cloned().partition(|f| f.file_name().is_some_and(|n| n == "tokenizer.json"));
        if !texts.is_empty() {
            sources.push(("inputs".into(), texts));
        }
        if sources.is_empty() {
            return Err(InputError::NoSources.into());
        }
        let weights = match &p.weights {
            Some(w) if w.len() != sources.len() => {
                return Err(InputError::Weights { weights: w.len(), items: sources.len(), what: "sources" }.into());
            }
            Some(w) => w.clone(),
            None => vec![1.0; sources.len()],
        };
        // Read, deduplicate across sources, split.
        let mut seen = HashSet::new();
        let mut duplicates = 0u64;
        let mut per_source: Vec<(Vec<String>, Vec<String>, u64, u64)> = Vec::new();
        for (_, files) in &sources {
            let (mut train, mut val, mut docs, mut bytes) = (Vec::new(), Vec::new(), 0u64, 0u64);
            for file in files {
                for doc in read_documents(file, p.split, &p.text_field)? {
                    if !seen.insert(Digest::of(doc.as_bytes())) {
                        duplicates += 1;
                        continue;
                    }
                    docs += 1;
                    bytes += doc.len() as u64;
                    if is_val(p.seed, &doc, p.val_fraction) { val.push(doc) } else { train.push(doc) }
                }
            }
            per_source.push((train, val, docs, bytes));
        }
        if p.val_fraction > 0.0 && per_source.iter().all(|s| s.1.is_empty()) {
            return Err(InputError::NoValDocuments.into());
        }
        let order = mixture(&per_source.iter().map(|s| s.0.len()).collect::<Vec<_>>(), &weights, p.documents, p.seed)?;
        let train_docs: Vec<&str> = order.iter().map(|&(s, i)| per_source[s].0[i].as_str()).collect();
        progress(&Progress { step: 1, total: 3, ..Default::default() });
        let tokenizer = match (task.inputs.get("tokenizer"), given.as_slice()) {
            (Some(_), []) => Tokenizer::load(&task.input("tokenizer")?.join("tokenizer.json"))?,
            (None, [file]) => Tokenizer::load(file)?,
            (None, []) => Tokenizer::train(train_docs.iter().copied(), p.vocab_size)?,
            _ => {
                return Err(InputError::Tokenizers.into());
            }
        };
        progress(&Progress { step: 2, total: 3, ..Default::default() });
        let encode = |docs: &[&str]| -> Result<Vec<Vec<u32>>, StageError> {
            use rayon::prelude::*;
            docs.par_iter()
                .map(|d| {
                    let mut ids = tokenizer.encode(d)?;
                    ids.push(EOT);
                    Ok(ids)
                })
                .collect()
        };
        let train_ids = encode(&train_docs)?;
        let val_docs: Vec<&str> = per_source.iter().flat_map(|s| s.1.iter().map(String::as_str)).collect();
        let val_ids = encode(&val_docs)?;
        let dtype = Dtype::for_vocab(tokenizer.vocab_size());
        let train_tokens: Vec<u32> = train_ids.iter().flatten().copied().collect();
        let val_tokens: Vec<u32> = val_ids.iter().flatten().copied().collect();
        shards::write(&task.out.join("train.bin"), &train_tokens, dtype)?;
        shards::write(&task.out.join("val.bin"), &val_tokens, dtype)?;
        tokenizer.save(&task.out.join("tokenizer.json"))?;
        let mut stats: Vec<SourceStats> = sources
            .iter()
            .zip(&per_source)
            .zip(&weights)
            .map(|(((name, _), s), w)| SourceStats {
                name: name.clone(),
                weight: *w,
                documents: s.2,
                bytes: s.3,
                train_documents: 0,
                train_tokens: 0,
                val_documents: s.1.len() as u64,
                val_tokens: 0,
            })
            .collect();
        let mut val_of_source = per_source.iter().enumerate().flat_map(|(i, s)| std::iter::repeat_n(i, s.1.len()));
        for ids in &val_ids {
            stats[val_of_source.next().expect("one source per val document")].val_tokens += ids.len() as u64;
        }
        for ((s, _), ids) in order.iter().zip(&train_ids) {
            stats[*s].train_documents += 1;
            stats[*s].train_tokens += ids.len() as u64;
        }
        let index = Index {
            version: shards::INDEX_VERSION,
            dtype,
            vocab_size: tokenizer.vocab_size(),
            separator: EOT,
            train: SplitInfo {
                file: "train.bin".into(),
                documents: train_docs.len() as u64,
                tokens: train_tokens.len() as u64,
                bytes: train_docs.iter().map(|d| d.len() as u64).sum(),
            },
            val: SplitInfo {
                file: "val.bin".into(),
                documents: val_docs.len() as u64,
                tokens: val_tokens.len() as u64,
                bytes: val_docs.iter().map(|d| d.len() as u64).sum(),
            },
            sources: stats,
            duplicates_removed: duplicates,
            seed: p.seed,
        };
        let mut json = serde_json::to_vec_pretty(&index).expect("indexes serialise");
        json.push(b'\n');
        fs_err::write(task.out.join("index.json"), json)?;
        progress(&Progress { step: 3, total: 3, ..Default::default() });
        Ok(())
    }
}

/// Whether a document belongs to the val split: a hash of the seed and its content, so the
/// decision does not depend on which other documents exist.
pub fn is_val(seed: u64, doc: &str, fraction: f64) -> bool {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(doc.as_bytes());
    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
    (x as f64 / u64::MAX as f64) < fraction
}

/// The train order as (source, document) pairs: each source's documents shuffled by the seed,
/// interleaved by the largest-deficit rule. Without a `documents` budget, draws as many as the
/// weights allow without repeating; with one, sources that run out start over.
pub fn mixture(
    counts: &[usize],
    weights: &[f64],
    documents: Option<usize>,
    seed: u64,
) -> Result<Vec<(usize, usize)>, StageError> {
    let total: f64 = weights.iter().sum();
    let w: Vec<f64> = weights.iter().map(|x| x / total).collect();
    let n = match documents {
        Some(n) => n,
        None => w
            .iter()
            .zip(counts)
            .filter(|(w, _)| **w > 0.0)
            .map(|(w, c)| (*c as f64 / w).floor() as usize)
            .min()
            .unwrap_or(0),
    };
    if let Some((i, _)) = w.iter().zip(counts).enumerate().find(|(_, (w, c))| **w > 0.0 && **c == 0) {
        return Err(InputError::EmptySource { index: i, weight: weights[i] }.into());
    }
    let orders: Vec<Vec<usize>> = counts
        .iter()
        .enumerate()
        .map(|(s, &c)| {
            let mut o: Vec<usize> = (0..c).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(s as u64);
            o.shuffle(&mut rng);
            o
        })
        .collect();
    let mut taken = vec![0usize; counts.len()];
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let s = (0..counts.len())
            .filter(|&s| w[s] > 0.0)
            .max_by(|&a, &b| {
                let da = w[a] * (k + 1) as f64 - taken[a] as f64;
                let db = w[b] * (k + 1) as f64 - taken[b] as f64;
                da.partial_cmp(&db).expect("finite").then(b.cmp(&a))
            })
            .expect("a positive weight");
        out.push((s, orders[s][taken[s] % counts[s]]));
        taken[s] += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixture_proportions_stay_within_two_documents_at_every_prefix() {
        let weights = [0.5, 0.3, 0.15, 0.05];
        let order = mixture(&[10_000, 10_000, 10_000, 10_000], &weights, Some(5_000), 7).unwrap();
        let mut counts = [0f64; 4];
        for (k, (s, _)) in order.iter().enumerate() {
            counts[*s] += 1.0;
            for i in 0..4 {
                assert!((counts[i] - weights[i] * (k + 1) as f64).abs() < 2.0, "source {i} at prefix {}", k + 1);
            }
        }
    }

    #[test]
    fn mixture_without_a_budget_never_repeats_and_is_deterministic() {
        let order = mixture(&[100, 10], &[0.5, 0.5], None, 1).unwrap();
        assert_eq!(order.len(), 20);
        let set: HashSet<_> = order.iter().collect();
        assert_eq!(set.len(), 20);
        assert_eq!(order, mixture(&[100, 10], &[0.5, 0.5], None, 1).unwrap());
        assert_ne!(order, mixture(&[100, 10], &[0.5, 0.5], None, 2).unwrap());
    }

    #[test]
    fn val_membership_depends_only_on_seed_and_content() {
        let docs: Vec<String> = (0..2000).map(|i| format!("document {i}")).collect();
        let val: Vec<bool> = docs.iter().map(|d| is_val(3, d, 0.1)).collect();
        let share = val.iter().filter(|v| **v).count() as f64 / 2000.0;
        assert!((share - 0.1).abs() < 0.03, "{share}");
        assert_eq!(val, docs.iter().map(|d| is_val(3, d, 0.1)).collect::<Vec<_>>());
    }
}
