//! Conversations for fine-tuning: the ChatML template, tokenisation with a loss mask,
//! keep-the-start truncation, and the padded or packed batches the `sft` kind trains on.
//!
//! A conversation renders as `<|im_start|>{role}\n{content}<|im_end|>\n` per message; the turn
//! markers are the tokenizer's reserved special tokens, so their embeddings exist from
//! pretraining. The loss covers assistant content *and* its `<|im_end|>` (so the model learns
//! to stop), never the role headers or the newline after a turn. Packed rows hold several
//! samples with positions restarting at 0 and a block-diagonal causal mask, so each sample
//! sees exactly what it would see alone.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fused::Forward;
use super::model::Model;
use super::tokenizer::{IM_END, IM_START, PAD, SPECIAL, Tokenizer, TokenizerError};
use super::train::{Batches, Micro, TrainError, ValSets};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    System,
    User,
    Assistant,
}

impl Speaker {
    fn name(self) -> &'static str {
        match self {
            Speaker::System => "system",
            Speaker::User => "user",
            Speaker::Assistant => "assistant",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Speaker,
    pub content: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Conversation {
    pub messages: Vec<Message>,
}

/// Which tokens the loss covers (torchtune's masking strategies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossOn {
    /// Every assistant turn, with its end-of-turn token.
    #[default]
    Assistant,
    /// Only the last assistant turn.
    LastAssistant,
    /// Every token after the first.
    All,
}

/// A JSONL record that is not a conversation.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("`messages`: {0}")]
    Messages(serde_json::Error),
    #[error("`prompt` and `response` must be strings")]
    NotStrings,
    #[error("expected `messages`, or `prompt` and `response`")]
    Shape,
    #[error("`messages` is empty")]
    Empty,
    #[error("message {message} contains the reserved token `{token}`")]
    Reserved { message: usize, token: &'static str },
}

impl Conversation {
    /// Reads one JSONL record: `{"messages": [{"role", "content"}, …]}` or
    /// `{"prompt": …, "response": …}` (a user turn and an assistant turn).
    pub fn from_value(v: &Value) -> Result<Self, ChatError> {
        let messages = match (v.get("messages"), v.get("prompt"), v.get("response")) {
            (Some(m), None, None) => serde_json::from_value::<Vec<Message>>(m.clone()).map_err(ChatError::Messages)?,
            (None, Some(Value::String(p)), Some(Value::String(r))) => vec![
                Message { role: Speaker::User, content: p.clone() },
                Message { role: Speaker::Assistant, content: r.clone() },
            ],
            (None, Some(_), Some(_)) => return Err(ChatError::NotStrings),
            _ => return Err(ChatError::Shape),
        };
        if messages.is_empty() {
            return Err(ChatError::Empty);
        }
        for (i, m) in messages.iter().enumerate() {
            // A reserved marker inside content would be encoded as the marker itself and
            // silently change the turn structure.
            if let Some(&s) = SPECIAL.iter().find(|s| m.content.contains(*s)) {
                return Err(ChatError::Reserved { message: i, token: s });
            }
        }
        Ok(Self { messages })
    }

    /// The ChatML text of the conversation.
    pub fn render(&self) -> String {
        self.messages
            .iter()
            .map(|m| {
                format!("{}{}\n{}{}\n", SPECIAL[IM_START as usize], m.role.name(), m.content, SPECIAL[IM_END as usize])
            })
            .collect()
    }

    /// The conversation before its last assistant turn, and that turn's content: a prompt and
    /// the answer a model should give to it.
    pub fn split_last(&self) -> Option<(Conversation, &str)> {
        let i = self.messages.iter().rposition(|m| m.role == Speaker::Assistant)?;
        Some((Conversation { messages: self.messages[..i].to_vec() }, self.messages[i].content.as_str()))
    }
}

/// Token ids and, per token, whether it is a training target.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub tokens: Vec<u32>,
    pub trained: Vec<bool>,
}

impl Encoded {
    fn push(&mut self, ids: &[u32], trained: bool) {
        self.tokens.extend_from_slice(ids);
        self.trained.extend(std::iter::repeat_n(trained, ids.len()));
    }

    /// Tokens that are targets of the loss (the first token never is: nothing predicts it).
    pub fn trainable(&self) -> usize {
        self.trained.iter().skip(1).filter(|t| **t).count()
    }

    /// Keeps the first `max` tokens; if any were cut, returns how many of them were trainable.
    pub fn truncate(&mut self, max: usize) -> Option<usize> {
        if self.tokens.len() <= max {
            return None;
        }
        let dropped = self.trained[max.max(1)..].iter().filter(|t| **t).count();
        self.tokens.truncate(max);
        self.trained.truncate(max);
        Some(dropped)
    }
}

/// Tokenises `conv` with the template, marking the tokens `loss_on` trains on. Segments are
/// encoded separately, so the decoded ids are exactly [`Conversation::render`].
pub fn encode(tokenizer: &Tokenizer, conv: &Conversation, loss_on: LossOn) -> Result<Encoded, TokenizerError> {
    let last = conv.messages.iter().rposition(|m| m.role == Speaker::Assistant);
    let mut e = Encoded { tokens: Vec::new(), trained: Vec::new() };
    for (i, m) in conv.messages.iter().enumerate() {
        let trained = match loss_on {
            LossOn::All => true,
            LossOn::Assistant => m.role == Speaker::Assistant,
            LossOn::LastAssistant => Some(i) == last,
        };
        e.push(&[IM_START], loss_on == LossOn::All);
        e.push(&tokenizer.encode(&format!("{}\n", m.role.name()))?, loss_on == LossOn::All);
        e.push(&tokenizer.encode(&m.content)?, trained);
        e.push(&[IM_END], trained);
        e.push(&tokenizer.encode("\n")?, loss_on == LossOn::All);
    }
    Ok(e)
}

/// The prompt of generation: `conv` rendered, then the assistant's turn header.
pub fn encode_prompt(tokenizer: &Tokenizer, conv: &Conversation) -> Result<Vec<u32>, TokenizerError> {
    let mut ids = encode(tokenizer, conv, LossOn::All)?.tokens;
    ids.push(IM_START);
    ids.extend(tokenizer.encode(&format!("{}\n", Speaker::Assistant.name()))?);
    Ok(ids)
}

/// One `[rows, width]` batch: inputs, targets, per-target weights (1 for trained targets),
/// and — for packed rows — per-sample positions and the block-diagonal mask `[rows, 1, width, width]`.
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
    pub trained: Vec<f32>,
    pub positions: Option<Tensor>,
    pub mask: Option<Tensor>,
    /// Non-padding input tokens.
    pub tokens: u64,
}

/// Lays out `rows` (each a list of samples placed side by side) right-padded to the longest
/// row. With `packed`, positions restart at 0 for each sample and attention stays inside it;
/// otherwise every row must hold one sample and plain causal attention is exact.
pub fn assemble(rows: &[Vec<&Encoded>], packed: bool, device: &Device) -> candle_core::Result<Batch> {
    let width = rows.iter().map(|r| r.iter().map(|s| s.tokens.len() - 1).sum::<usize>()).max().unwrap_or(0).max(1);
    let n = rows.len() * width;
    let (mut x, mut y, mut w) = (vec![PAD; n], vec![PAD; n], vec![0f32; n]);
    let mut pos = vec![0u32; n];
    let mut seg = vec![u32::MAX; n];
    let mut tokens = 0;
    for (r, row) in rows.iter().enumerate() {
        assert!(packed || row.len() == 1, "an unpacked row holds one sample");
        let mut at = r * width;
        for (k, s) in row.iter().enumerate() {
            let len = s.tokens.len() - 1;
            x[at..at + len].copy_from_slice(&s.tokens[..len]);
            y[at..at + len].copy_from_slice(&s.tokens[1..]);
            for i in 0..len {
                w[at + i] = if s.trained[i + 1] { 1.0 } else { 0.0 };
                pos[at + i] = i as u32;
                seg[at + i] = k as u32;
            }
            at += len;
            tokens += len as u64;
        }
    }
    let (positions, mask) = if packed {
        // Padding forms its own segment, so every query attends to at least itself (a fully
        // masked row would make the softmax NaN).
        let mut m = vec![f32::NEG_INFINITY; rows.len() * width * width];
        for r in 0..rows.len() {
            let s = &seg[r * width..(r + 1) * width];
            for i in 0..width {
                for j in 0..=i {
                    if s[i] == s[j] {
                        m[(r * width + i) * width + j] = 0.0;
                    }
                }
            }
        }
        (
            Some(Tensor::from_vec(pos, (rows.len(), width), device)?),
            Some(Tensor::from_vec(m, (rows.len(), 1, width, width), device)?),
        )
    } else {
        (None, None)
    };
    Ok(Batch {
        inputs: Tensor::from_vec(x, (rows.len(), width), device)?,
        targets: Tensor::from_vec(y, (rows.len(), width), device)?,
        trained: w,
        positions,
        mask,
        tokens,
    })
}

/// Groups samples (by index, in `order`) into rows of at most `width` input tokens: greedy
/// packing in order, or one sample a row.
pub fn rows(lengths: &[usize], order: &[usize], width: usize, packing: bool) -> Vec<Vec<usize>> {
    if !packing {
        return order.iter().map(|&i| vec![i]).collect();
    }
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut used = width;
    for &i in order {
        let len = lengths[i] - 1;
        if used + len > width {
            out.push(Vec::new());
            used = 0;
        }
        out.last_mut().expect("a row was just started").push(i);
        used += len;
    }
    out
}

/// Replay: a share `ratio` of the rows are windows of `seq_len + 1` tokens of plain text (the
/// pretraining data), whose every token is a target, so fine-tuning forgets less.
pub struct Replay {
    pub tokens: Vec<u32>,
    pub ratio: f64,
    pub seed: u64,
}

impl Replay {
    /// Replay rows among the first `k` rows: ⌊k·ratio⌋, so at every prefix the share is within
    /// one row of the ratio (the largest-deficit rule of the data mixture, for two sources).
    pub fn before(&self, k: usize) -> usize {
        (k as f64 * self.ratio).floor() as usize
    }

    /// Whether row `k` (counted over the whole run) is a replay row.
    pub fn is_replay(&self, k: usize) -> bool {
        self.before(k + 1) > self.before(k)
    }

    /// Replay window `j`: a seeded start per window, so a resumed run needs no state.
    fn window(&self, j: usize, seq_len: usize) -> Encoded {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(j as u64);
        let start = rng.random_range(0..=self.tokens.len() - seq_len - 1);
        Encoded { tokens: self.tokens[start..start + seq_len + 1].to_vec(), trained: vec![true; seq_len + 1] }
    }
}

/// SFT batches: every epoch visits the samples in a fresh seeded order, packed or one per row;
/// a step takes the next `batch · accumulate` rows. The loss is the sum of the step's
/// per-token losses over its trainable targets divided by their count — normalised per token
/// over the whole accumulated batch, not per sequence.
pub struct ChatBatches {
    /// Text evaluated alongside the conversations' masked loss (`val_loss/NAME`).
    pub named: ValSets,
    /// Plain text mixed into the rows, trained on every token.
    pub replay: Option<Replay>,
    train: Vec<Encoded>,
    val: Vec<Encoded>,
    batch: usize,
    accumulate: usize,
    seq_len: usize,
    packing: bool,
    seed: u64,
    rows: Vec<Vec<usize>>,
    epochs: u64,
}

impl ChatBatches {
    /// `train` and `val` samples must be truncated to `seq_len + 1` tokens and have at least
    /// one trainable target each.
    pub fn new(
        train: Vec<Encoded>,
        val: Vec<Encoded>,
        batch: usize,
        accumulate: usize,
        seq_len: usize,
        packing: bool,
        seed: u64,
    ) -> Result<Self, TrainError> {
        if train.is_empty() {
            return Err(TrainError::Data("no training conversation has a trainable token".into()));
        }
        if let Some(s) = train.iter().chain(&val).find(|s| s.tokens.len() > seq_len + 1 || s.trainable() == 0) {
            return Err(TrainError::Data(format!(
                "a sample of {} tokens with {} trainable does not fit",
                s.tokens.len(),
                s.trainable()
            )));
        }
        Ok(Self {
            named: ValSets::default(),
            replay: None,
            train,
            val,
            batch,
            accumulate,
            seq_len,
            packing,
            seed,
            rows: Vec::new(),
            epochs: 0,
        })
    }

    /// How many rows one epoch fills (epoch 0).
    pub fn rows_per_epoch(&self) -> usize {
        let lengths: Vec<usize> = self.train.iter().map(|s| s.tokens.len()).collect();
        rows(&lengths, &self.order(0), self.seq_len, self.packing).len()
    }

    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch);
        order.shuffle(&mut rng);
        order
    }

    fn ensure(&mut self, n: usize) {
        let lengths: Vec<usize> = self.train.iter().map(|s| s.tokens.len()).collect();
        while self.rows.len() < n {
            let order = self.order(self.epochs);
            self.rows.extend(rows(&lengths, &order, self.seq_len, self.packing));
            self.epochs += 1;
        }
    }
}

impl Batches for ChatBatches {
    fn step(&mut self, step: u64, device: &Device) -> Result<Vec<Micro>, TrainError> {
        let per_step = self.batch * self.accumulate;
        let first = step as usize * per_step;
        let end = first + per_step;
        self.ensure(end - self.replay.as_ref().map_or(0, |r| r.before(end)));
        let replayed = |k: usize| self.replay.as_ref().map_or(0, |r| r.before(k));
        let windows: Vec<Encoded> = match &self.replay {
            Some(r) => (first..first + per_step)
                .filter(|&k| r.is_replay(k))
                .map(|k| r.window(r.before(k), self.seq_len))
                .collect(),
            None => Vec::new(),
        };
        let mut windows = windows.iter();
        let rows: Vec<Vec<&Encoded>> = (first..first + per_step)
            .map(|k| match &self.replay {
                Some(r) if r.is_replay(k) => vec![windows.next().expect("one window per replay row")],
                _ => self.rows[k - replayed(k)].iter().map(|&i| &self.train[i]).collect(),
            })
            .collect();
        let batches: Vec<Batch> =
            rows.chunks(self.batch).map(|chunk| assemble(chunk, self.packing, device)).collect::<Result<_, _>>()?;
        let trained: f32 = batches.iter().map(|b| b.trained.iter().sum::<f32>()).sum();
        batches
            .into_iter()
            .map(|b| {
                let weights: Vec<f32> = b.trained.iter().map(|w| w / trained).collect();
                let n = weights.len();
                Ok(Micro {
                    inputs: b.inputs,
                    targets: b.targets,
                    weights: Some(Tensor::from_vec(weights, n, device)?),
                    positions: b.positions,
                    mask: b.mask,
                    tokens: b.tokens,
                })
            })
            .collect()
    }

    fn val_loss(&self, model: &Model) -> Result<f64, TrainError> {
        let samples = if self.val.is_empty() { &self.train } else { &self.val };
        masked_loss(model, samples, self.batch)
    }

    fn val_losses(&self, model: &Model) -> Result<BTreeMap<String, f64>, TrainError> {
        self.named.losses(model)
    }
}

/// The mean loss over every trainable target of `samples`, one sample a row.
pub fn masked_loss(model: &Model, samples: &[Encoded], batch: usize) -> Result<f64, TrainError> {
    let (mut sum, mut count) = (0.0, 0.0);
    let mut fused = Forward::of(model)?;
    for chunk in samples.chunks(batch.max(1)) {
        let rows: Vec<Vec<&Encoded>> = chunk.iter().map(|s| vec![s]).collect();
        let b = assemble(&rows, false, model.device())?;
        let n = b.trained.len();
        let w = Tensor::from_vec(b.trained.clone(), n, model.device())?;
        count += b.trained.iter().sum::<f32>() as f64;
        sum += match &mut fused {
            Some(f) => f.loss(&Micro {
                inputs: b.inputs,
                targets: b.targets,
                weights: Some(w),
                positions: None,
                mask: None,
                tokens: 0,
            })?,
            None => {
                let losses = model.token_losses(&b.inputs, &b.targets, Default::default())?;
                (losses * w)?.sum_all()?.to_scalar::<f32>()? as f64
            }
        };
    }
    Ok(if count > 0.0 { sum / count } else { 0.0 })
}

#[cfg(test)]
mod tests;
