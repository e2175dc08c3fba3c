//! The `eval` kind: model + data → `metrics.json` with validation loss, perplexity and bits per
//! byte on fixed, evenly spaced windows of the val split (the same numbers on every run), with
//! token and byte counts; optionally greedy samples from prompts (`samples.jsonl`).

use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{About, Kind, ParamError, Progress, Role, Roles, StageError, Task, invalid, typed};
use crate::ml::model::Model;
use crate::ml::shards::Index;
use crate::ml::tokenizer::{EOT, IM_END, Tokenizer};

pub struct Eval;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default = "seq_len")]
    pub seq_len: usize,
    #[serde(default = "windows")]
    pub windows: usize,
    #[serde(default = "batch")]
    pub batch: usize,
    /// Prompts to continue greedily; each sample stops at end of text or after `max_tokens`.
    #[serde(default)]
    pub prompts: Vec<String>,
    #[serde(default = "max_tokens")]
    pub max_tokens: usize,
}

fn seq_len() -> usize {
    128
}
fn windows() -> usize {
    64
}
fn batch() -> usize {
    16
}
fn max_tokens() -> usize {
    48
}

const ROLES: &[Role] = &[
    Role { name: "model", list: false, required: true },
    Role { name: "data", list: false, required: true },
];

#[derive(Debug, Serialize, Deserialize)]
pub struct Metrics {
    pub val_loss: f64,
    pub perplexity: f64,
    pub bits_per_byte: f64,
    pub tokens: u64,
    pub bytes: u64,
    pub windows: usize,
    pub seq_len: usize,
    /// The loss of a unigram model of the train split (add-one smoothed) on the same targets:
    /// the baseline a language model must beat.
    pub unigram_loss: f64,
}

impl Kind for Eval {
    fn about(&self) -> &'static About {
        &About { name: "eval", version: 1, roles: Roles::Fixed(ROLES), shell: false, defaults: &[] }
    }

    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError> {
        let (p, canonical): (Params, Value) = typed(with)?;
        for (key, v) in [("seq_len", p.seq_len), ("windows", p.windows), ("batch", p.batch)] {
            if v == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        Ok(canonical)
    }

    fn run(&self, task: &Task, progress: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let p: Params = task.params()?;
        let (model_dir, data_dir) = (task.input("model")?, task.input("data")?);
        let device = crate::ml::device::select(&task.device).map_err(StageError::Input)?;
        let model = Model::load(model_dir, &device)?;
        let tokenizer = Tokenizer::load(&model_dir.join("tokenizer.json"))?;
        let index = Index::load(data_dir)?;
        let val = index.tokens(data_dir, &index.val)?;
        let train = index.tokens(data_dir, &index.train)?;
        let metrics = evaluate(&model, &tokenizer, &val, &train, &p)?;
        progress(&Progress { step: 1, total: 1, loss: Some(metrics.val_loss), ..Default::default() });
        let mut json = serde_json::to_vec_pretty(&metrics).expect("metrics serialise");
        json.push(b'\n');
        fs_err::write(task.out.join("metrics.json"), json)?;
        if !p.prompts.is_empty() {
            let mut lines = Vec::new();
            for prompt in &p.prompts {
                let completion = greedy(&model, &tokenizer, prompt, p.max_tokens)?;
                serde_json::to_writer(&mut lines, &serde_json::json!({"prompt": prompt, "completion": completion}))
                    .map_err(std::io::Error::other)?;
                lines.push(b'\n');
            }
            fs_err::write(task.out.join("samples.jsonl"), lines)?;
        }
        Ok(())
    }
}

/// Loss per token over fixed windows, and bits per byte over the bytes those targets stand for.
pub fn evaluate(model: &Model, tokenizer: &Tokenizer, tokens: &[u32], train: &[u32], p: &Params) -> Result<Metrics, StageError> {
    if tokens.len() < p.seq_len + 1 {
        return Err(StageError::Input(format!("the val split has {} tokens, fewer than one window of {}", tokens.len(), p.seq_len + 1)));
    }
    let (loss, n_tokens) = crate::ml::train::evaluate(model, tokens, p.seq_len, p.windows, p.batch)?;
    let max_start = tokens.len() - p.seq_len - 1;
    let n = p.windows.clamp(1, max_start + 1);
    let lengths = tokenizer.byte_lengths();
    let targets: Vec<u32> = (0..n)
        .map(|i| if n == 1 { 0 } else { i * max_start / (n - 1) })
        .flat_map(|s| tokens[s + 1..s + 1 + p.seq_len].iter().copied())
        .collect();
    let bytes: u64 = targets.iter().map(|&t| lengths.get(t as usize).copied().unwrap_or(0) as u64).sum();
    let vocab = model.config.vocab_size;
    let mut counts = vec![1u64; vocab];
    for &t in train {
        counts[t as usize] += 1;
    }
    let total = counts.iter().sum::<u64>() as f64;
    let unigram_loss = targets.iter().map(|&t| -(counts[t as usize] as f64 / total).ln()).sum::<f64>() / targets.len() as f64;
    let nats = loss * n_tokens as f64;
    Ok(Metrics {
        val_loss: loss,
        perplexity: loss.exp(),
        bits_per_byte: if bytes == 0 { 0.0 } else { nats / (std::f64::consts::LN_2 * bytes as f64) },
        tokens: n_tokens,
        bytes,
        windows: n,
        seq_len: p.seq_len,
        unigram_loss,
    })
}

/// Greedy continuation of `prompt`, stopping at end of text, end of turn or `max_tokens`.
pub fn greedy(model: &Model, tokenizer: &Tokenizer, prompt: &str, max_tokens: usize) -> Result<String, StageError> {
    let mut ids = tokenizer.encode(prompt)?;
    let start = ids.len();
    for _ in 0..max_tokens {
        let window = &ids[ids.len().saturating_sub(model.config.max_position_embeddings)..];
        let x = Tensor::new(window, model.device())?.unsqueeze(0)?;
        let logits = model.forward(&x)?;
        let last = logits.narrow(1, window.len() - 1, 1)?.squeeze(0)?.squeeze(0)?;
        let next = last.argmax(D::Minus1)?.to_scalar::<u32>()?;
        if next == EOT || next == IM_END {
            break;
        }
        ids.push(next);
    }
    Ok(tokenizer.decode(&ids[start..])?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::ml::model::Config;

    fn uniform_model(vocab: usize) -> Model {
        let config: Config = serde_json::from_value(serde_json::json!({
            "vocab_size": vocab, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "max_position_embeddings": 64, "tie_word_embeddings": false
        }))
        .unwrap();
        let seeded = Model::init(config.clone(), 1, &Device::Cpu).unwrap();
        let mut tensors: HashMap<String, Tensor> = seeded.params().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
        tensors.insert("lm_head.weight".into(), Tensor::zeros((vocab, 16), DType::F32, &Device::Cpu).unwrap());
        Model::from_tensors(config, tensors, &Device::Cpu).unwrap()
    }

    #[test]
    fn a_model_with_uniform_outputs_scores_ln_v_and_evaluation_is_repeatable() {
        let vocab = 300;
        let model = uniform_model(vocab);
        let corpus: Vec<String> = (0..40).map(|i| format!("sample text number {i} with some words")).collect();
        let tokenizer = Tokenizer::train(corpus.iter().map(String::as_str), vocab).unwrap();
        let tokens: Vec<u32> = (0..2000u32).map(|i| (i * 37 + 11) % tokenizer.vocab_size() as u32).collect();
        let p = Params { seq_len: 16, windows: 10, batch: 4, prompts: vec![], max_tokens: 1 };
        let a = evaluate(&model, &tokenizer, &tokens, &tokens, &p).unwrap();
        assert!((a.val_loss - (vocab as f64).ln()).abs() < 1e-5, "{} vs ln V = {}", a.val_loss, (vocab as f64).ln());
        assert_eq!(a.tokens, 160);
        let b = evaluate(&model, &tokenizer, &tokens, &tokens, &p).unwrap();
        assert_eq!(a.val_loss.to_bits(), b.val_loss.to_bits());
        assert_eq!(a.bits_per_byte.to_bits(), b.bits_per_byte.to_bits());
    }
}
