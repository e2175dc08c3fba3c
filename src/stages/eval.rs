//! The `eval` kind: a model and a `data` and/or `tasks` artifact → `metrics.json`.
//!
//! With `data`: validation loss, perplexity and bits per byte on fixed, evenly spaced windows
//! of the val split (the same numbers on every run), with token and byte counts and a unigram
//! baseline. With `tasks`: exact-match accuracy per task family from greedy generation with
//! the chat template on the held-out conversations (`answers.jsonl` lists every answer).
//! Optionally greedy samples from raw prompts (`samples.jsonl`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    About, InputError, Kind, LineProblem, ParamError, Progress, Role, Roles, StageError, Task, invalid, typed,
};
use crate::ml::chat::{self, Conversation, Encoded, LossOn, Message, Speaker};
use crate::ml::generate;
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
    /// The file of the `tasks` artifact holding the held-out conversations.
    #[serde(default = "tasks_file")]
    pub tasks_file: String,
    /// The longest answer generated for a task, in tokens.
    #[serde(default = "answer_tokens")]
    pub answer_tokens: usize,
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
fn tasks_file() -> String {
    "test.jsonl".into()
}
fn answer_tokens() -> usize {
    24
}

const ROLES: &[Role] = &[
    Role { name: "model", list: false, required: true },
    Role { name: "data", list: false, required: false },
    Role { name: "tasks", list: false, required: false },
];

#[derive(Debug, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(flatten)]
    pub language: Option<LanguageMetrics>,
    /// Exact-match accuracy per task family.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub tasks: BTreeMap<String, Score>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LanguageMetrics {
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

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Score {
    pub correct: usize,
    pub total: usize,
    pub accuracy: f64,
    /// Mean loss per token of the expected answer and its end-of-turn, teacher-forced: how
    /// close the model is to the answer even when greedy decoding misses it.
    pub answer_loss: f64,
}

impl Kind for Eval {
    fn about(&self) -> &'static About {
        &About {
            name: "eval",
            version: 2,
            roles: Roles::Fixed(ROLES),
            device: true,
            defaults: &[],
            outputs: &["metrics.json"],
        }
    }

    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError> {
        let (p, canonical): (Params, Value) = typed(with)?;
        for (key, v) in
            [("seq_len", p.seq_len), ("windows", p.windows), ("batch", p.batch), ("answer_tokens", p.answer_tokens)]
        {
            if v == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        Ok(canonical)
    }

    fn run(&self, task: &Task, progress: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let p: Params = task.params()?;
        if !task.inputs.contains_key("data") && !task.inputs.contains_key("tasks") {
            return Err(InputError::NothingToEvaluate.into());
        }
        let model_dir = task.input("model")?;
        let device = task.open_device(progress)?;
        let model = Model::load(model_dir, &device)?;
        let tokenizer = Tokenizer::load(&model_dir.join("tokenizer.json"))?;
        let language = match task.inputs.get("data") {
            None => None,
            Some(_) => {
                let data_dir = task.input("data")?;
                super::training::same_tokenizer(model_dir, data_dir)?;
                let index = Index::load(data_dir)?;
                let val = index.tokens(data_dir, &index.val)?;
                let train = index.tokens(data_dir, &index.train)?;
                Some(evaluate(&model, &tokenizer, &val, &train, &p)?)
            }
        };
        let mut tasks = BTreeMap::new();
        if task.inputs.contains_key("tasks") {
            let path = task.input("tasks")?.join(&p.tasks_file);
            let items = read_tasks(&path)?;
            let (scores, answers) = score_tasks(&model, &tokenizer, &items, p.answer_tokens, p.batch)?;
            tasks = scores;
            let mut lines = Vec::new();
            for a in answers {
                serde_json::to_writer(&mut lines, &a).map_err(std::io::Error::other)?;
                lines.push(b'\n');
            }
            fs_err::write(task.out.join("answers.jsonl"), lines)?;
        }
        let metrics = Metrics { language, tasks };
        progress(&Progress {
            step: 1,
            total: 1,
            scalars: metrics.language.iter().map(|l| ("val_loss".to_owned(), l.val_loss)).collect(),
            ..Default::default()
        });
        let mut json = serde_json::to_vec_pretty(&metrics).expect("metrics serialise");
        json.push(b'\n');
        fs_err::write(task.out.join("metrics.json"), json)?;
        if !p.prompts.is_empty() {
            let ids: Vec<Vec<u32>> = p.prompts.iter().map(|s| tokenizer.encode(s)).collect::<Result<_, _>>()?;
            let outs = generate::greedy(&model, &ids, p.max_tokens, &[EOT, IM_END], p.batch)?;
            let mut lines = Vec::new();
            for (prompt, out) in p.prompts.iter().zip(outs) {
                let completion = tokenizer.decode(&out)?;
                serde_json::to_writer(&mut lines, &serde_json::json!({"prompt": prompt, "completion": completion}))
                    .map_err(std::io::Error::other)?;
                lines.push(b'\n');
            }
            fs_err::write(task.out.join("samples.jsonl"), lines)?;
        }
        Ok(())
    }
}

/// One held-out task: the conversation before the answer, the answer, and its family.
pub struct Item {
    pub family: String,
    pub prompt: Conversation,
    pub answer: String,
}

/// Reads a JSONL file of conversations; each one's last assistant turn is the expected answer
/// and its `family` field (default `tasks`) groups the scores.
pub fn read_tasks(path: &std::path::Path) -> Result<Vec<Item>, StageError> {
    let text = fs_err::read_to_string(path)?;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| InputError::line(path, n, e))?;
        let conv = Conversation::from_value(&v).map_err(|e| InputError::line(path, n, e))?;
        let (prompt, answer) = conv.split_last().ok_or_else(|| InputError::line(path, n, LineProblem::NoAnswer))?;
        let family = v.get("family").and_then(Value::as_str).unwrap_or("tasks").to_owned();
        items.push(Item { family, answer: answer.to_owned(), prompt });
    }
    if items.is_empty() {
        return Err(InputError::NoTasks(path.to_path_buf()).into());
    }
    Ok(items)
}

#[derive(Serialize)]
pub struct Answer<'a> {
    family: &'a str,
    prompt: &'a str,
    expected: &'a str,
    got: String,
    correct: bool,
}

/// Greedy answers to every item and the exact-match score per family (answers compared after
/// trimming surrounding whitespace).
pub fn score_tasks<'a>(
    model: &Model,
    tokenizer: &Tokenizer,
    items: &'a [Item],
    answer_tokens: usize,
    batch: usize,
) -> Result<(BTreeMap<String, Score>, Vec<Answer<'a>>), StageError> {
    let prompts: Vec<Vec<u32>> =
        items.iter().map(|i| chat::encode_prompt(tokenizer, &i.prompt)).collect::<Result<_, _>>()?;
    let outs = generate::greedy(model, &prompts, answer_tokens, &[IM_END, EOT], batch)?;
    let mut scores: BTreeMap<String, Score> = BTreeMap::new();
    let mut answers = Vec::with_capacity(items.len());
    for (item, out) in items.iter().zip(outs) {
        let got = tokenizer.decode(&out)?;
        let correct = got.trim() == item.answer.trim();
        let s = scores.entry(item.family.clone()).or_insert(Score {
            correct: 0,
            total: 0,
            accuracy: 0.0,
            answer_loss: 0.0,
        });
        s.total += 1;
        s.correct += correct as usize;
        let prompt = item.prompt.messages.last().map_or("", |m| m.content.as_str());
        answers.push(Answer { family: &item.family, prompt, expected: &item.answer, got, correct });
    }
    for (family, s) in scores.iter_mut() {
        s.accuracy = s.correct as f64 / s.total as f64;
        let samples: Vec<Encoded> = items
            .iter()
            .filter(|i| &i.family == family)
            .map(|i| {
                let mut conv = i.prompt.clone();
                conv.messages.push(Message { role: Speaker::Assistant, content: i.answer.clone() });
                let mut e = chat::encode(tokenizer, &conv, LossOn::LastAssistant)?;
                e.truncate(model.config.max_position_embeddings + 1);
                Ok(e)
            })
            .collect::<Result<_, StageError>>()?;
        s.answer_loss = chat::masked_loss(model, &samples, batch)?;
    }
    Ok((scores, answers))
}

/// Loss per token over fixed windows, and bits per byte over the bytes those targets stand for.
pub fn evaluate(
    model: &Model,
    tokenizer: &Tokenizer,
    tokens: &[u32],
    train: &[u32],
    p: &Params,
) -> Result<LanguageMetrics, StageError> {
    if tokens.len() < p.seq_len + 1 {
        return Err(InputError::ShortVal { tokens: tokens.len(), window: p.seq_len + 1 }.into());
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
    let unigram_loss =
        targets.iter().map(|&t| -(counts[t as usize] as f64 / total).ln()).sum::<f64>() / targets.len() as f64;
    let nats = loss * n_tokens as f64;
    Ok(LanguageMetrics {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn uniform_model(vocab: usize) -> Model {
        let config = crate::ml::model::tiny(vocab, 1, 2, false);
        let seeded = Model::init(config.clone(), 1, &Device::Cpu).unwrap();
        let mut tensors: HashMap<String, Tensor> =
            seeded.params().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
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
        let p = Params {
            seq_len: 16,
            windows: 10,
            batch: 4,
            prompts: vec![],
            max_tokens: 1,
            tasks_file: tasks_file(),
            answer_tokens: 1,
        };
        let a = evaluate(&model, &tokenizer, &tokens, &tokens, &p).unwrap();
        assert!((a.val_loss - (vocab as f64).ln()).abs() < 1e-5, "{} vs ln V = {}", a.val_loss, (vocab as f64).ln());
        assert_eq!(a.tokens, 160);
        let b = evaluate(&model, &tokenizer, &tokens, &tokens, &p).unwrap();
        assert_eq!(a.val_loss.to_bits(), b.val_loss.to_bits());
        assert_eq!(a.bits_per_byte.to_bits(), b.bits_per_byte.to_bits());
    }
}
