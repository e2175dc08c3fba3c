//! Conversations for fine-tuning: the ChatML template, tokenisation with a loss mask,
//! keep-the-start truncation, and the padded or packed rows the `sft` kind trains on (its
//! batches: [`batches`]).
//!
//! A conversation renders as `<|im_start|>{role}\n{content}<|im_end|>\n` per message; the turn
//! markers are the tokenizer's reserved special tokens, so their embeddings exist from
//! pretraining. The loss covers assistant content *and* its `<|im_end|>` (so the model learns
//! to stop), never the role headers or the newline after a turn. Packed rows hold several
//! samples with positions restarting at 0 and a block-diagonal causal mask, so each sample
//! sees exactly what it would see alone.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tokenizer::{IM_END, IM_START, PAD, SPECIAL, Tokenizer, TokenizerError};

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

mod batches;

pub use batches::{ChatBatches, Replay, masked_loss, rows};

#[cfg(test)]
mod tests;
