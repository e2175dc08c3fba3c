//! Conversations for fine-tuning: the ChatML template, tokenisation with a loss mask,
//! keep-the-start truncation, and the padded or packed batches the `sft` kind trains on.
//!
//! A conversation renders as `<|im_start|>{role}\n{content}<|im_end|>\n` per message; the turn
//! markers are the tokenizer's reserved special tokens, so their embeddings exist from
//! pretraining. The loss covers assistant content *and* its `<|im_end|>` (so the model learns
//! to stop), never the role headers or the newline after a turn. Packed rows hold several
//! samples with positions restarting at 0 and a block-diagonal causal mask, so each sample
//! sees exactly what it would see alone.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::Model;
use super::tokenizer::{IM_END, IM_START, PAD, SPECIAL, Tokenizer, TokenizerError};
use super::train::{Batches, Micro, TrainError};

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

impl Conversation {
    /// Reads one JSONL record: `{"messages": [{"role", "content"}, …]}` or
    /// `{"prompt": …, "response": …}` (a user turn and an assistant turn).
    pub fn from_value(v: &Value) -> Result<Self, String> {
        let messages = match (v.get("messages"), v.get("prompt"), v.get("response")) {
            (Some(m), None, None) => {
                serde_json::from_value::<Vec<Message>>(m.clone()).map_err(|e| format!("`messages`: {e}"))?
            }
            (None, Some(Value::String(p)), Some(Value::String(r))) => vec![
                Message { role: Speaker::User, content: p.clone() },
                Message { role: Speaker::Assistant, content: r.clone() },
            ],
            (None, Some(_), Some(_)) => return Err("`prompt` and `response` must be strings".into()),
            _ => return Err("expected `messages`, or `prompt` and `response`".into()),
        };
        if messages.is_empty() {
            return Err("`messages` is empty".into());
        }
        for (i, m) in messages.iter().enumerate() {
            // A reserved marker inside content would be encoded as the marker itself and
            // silently change the turn structure.
            if let Some(s) = SPECIAL.iter().find(|s| m.content.contains(*s)) {
                return Err(format!("message {i} contains the reserved token `{s}`"));
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

/// SFT batches: every epoch visits the samples in a fresh seeded order, packed or one per row;
/// a step takes the next `batch · accumulate` rows. The loss is the sum of the step's
/// per-token losses over its trainable targets divided by their count — normalised per token
/// over the whole accumulated batch, not per sequence.
pub struct Sft {
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

impl Sft {
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
        Ok(Self { train, val, batch, accumulate, seq_len, packing, seed, rows: Vec::new(), epochs: 0 })
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

impl Batches for Sft {
    fn step(&mut self, step: u64, device: &Device) -> Result<Vec<Micro>, TrainError> {
        let per_step = self.batch * self.accumulate;
        let first = step as usize * per_step;
        self.ensure(first + per_step);
        let batches: Vec<Batch> = self.rows[first..first + per_step]
            .chunks(self.batch)
            .map(|chunk| {
                let rows: Vec<Vec<&Encoded>> =
                    chunk.iter().map(|r| r.iter().map(|&i| &self.train[i]).collect()).collect();
                assemble(&rows, self.packing, device)
            })
            .collect::<Result<_, _>>()?;
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
}

/// The mean loss over every trainable target of `samples`, one sample a row.
pub fn masked_loss(model: &Model, samples: &[Encoded], batch: usize) -> Result<f64, TrainError> {
    let (mut sum, mut count) = (0.0, 0.0);
    for chunk in samples.chunks(batch.max(1)) {
        let rows: Vec<Vec<&Encoded>> = chunk.iter().map(|s| vec![s]).collect();
        let b = assemble(&rows, false, model.device())?;
        let n = b.trained.len();
        let w = Tensor::from_vec(b.trained.clone(), n, model.device())?;
        let losses = model.token_losses(&b.inputs, &b.targets, Default::default())?;
        sum += (losses * w)?.sum_all()?.to_scalar::<f32>()? as f64;
        count += b.trained.iter().sum::<f32>() as f64;
    }
    Ok(if count > 0.0 { sum / count } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::model::Extra;

    fn tokenizer() -> Tokenizer {
        let corpus = ["what is 12 + 30? 42", "reverse the word: garden nedrag", "sort the letters: dcba abcd"];
        let texts: Vec<String> = (0..40).flat_map(|_| corpus.iter().map(|s| s.to_string())).collect();
        Tokenizer::train(texts.into_iter(), 300).unwrap()
    }

    fn model(vocab: usize) -> Model {
        let mut config = crate::ml::model::tiny(vocab, 2, 2, false);
        config.max_position_embeddings = 128;
        Model::init(config, 3, &Device::Cpu).unwrap()
    }

    fn conv(prompt: &str, answer: &str) -> Conversation {
        Conversation::from_value(&serde_json::json!({"prompt": prompt, "response": answer})).unwrap()
    }

    fn samples(t: &Tokenizer) -> Vec<Encoded> {
        [("what is 12 + 30?", "42"), ("reverse the word: garden", "nedrag"), ("sort the letters: dcba", "abcd")]
            .iter()
            .map(|(p, a)| encode(t, &conv(p, a), LossOn::Assistant).unwrap())
            .collect()
    }

    /// The loss of one step over `samples` and the gradient of every parameter.
    fn loss_and_grads(m: &Model, samples: Vec<Encoded>, packing: bool) -> (f32, Vec<Vec<f32>>) {
        let n = samples.len();
        // Wide enough for one packed row to hold every sample, so both layouts see the same set.
        let mut b = Sft::new(samples, vec![], n, 1, 120, packing, 1).unwrap();
        let micros = b.step(0, &Device::Cpu).unwrap();
        let loss = micros[0].loss(m, 1).unwrap();
        let grads = loss.backward().unwrap();
        let g =
            m.params().iter().map(|(_, v)| grads.get(v).unwrap().flatten_all().unwrap().to_vec1().unwrap()).collect();
        (loss.to_scalar().unwrap(), g)
    }

    #[test]
    fn render_tokenize_decode_is_the_identity_and_the_mask_covers_answers_and_end_of_turn() {
        let t = tokenizer();
        let c = Conversation::from_value(&serde_json::json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "sort the letters: dcba"},
            {"role": "assistant", "content": "abcd"},
            {"role": "user", "content": "and  again\nplease 🦀"},
            {"role": "assistant", "content": "abcd!"}
        ]}))
        .unwrap();
        let e = encode(&t, &c, LossOn::Assistant).unwrap();
        assert_eq!(t.decode(&e.tokens).unwrap(), c.render());
        assert!(c.render().starts_with("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\n"));
        // The trained spans decode to each answer followed by its end-of-turn marker.
        let mut spans = Vec::new();
        let mut current = Vec::new();
        for (&id, &tr) in e.tokens.iter().zip(&e.trained) {
            if tr {
                current.push(id);
            } else if !current.is_empty() {
                spans.push(t.decode(&std::mem::take(&mut current)).unwrap());
            }
        }
        assert_eq!(spans, ["abcd<|im_end|>", "abcd!<|im_end|>"]);
        let last = encode(&t, &c, LossOn::LastAssistant).unwrap();
        assert_eq!(last.trainable(), t.encode("abcd!").unwrap().len() + 1);
        let (prompt, answer) = c.split_last().unwrap();
        assert_eq!(answer, "abcd!");
        let p = encode_prompt(&t, &prompt).unwrap();
        assert_eq!(t.decode(&p).unwrap(), format!("{}<|im_start|>assistant\n", prompt.render()));
    }

    #[test]
    fn bad_records_are_refused_with_a_reason() {
        for (v, want) in [
            (serde_json::json!({"text": "x"}), "expected `messages`"),
            (serde_json::json!({"messages": []}), "empty"),
            (serde_json::json!({"messages": [{"role": "bot", "content": "x"}]}), "unknown variant"),
            (serde_json::json!({"prompt": "a <|im_end|> b", "response": "c"}), "reserved token `<|im_end|>`"),
            (serde_json::json!({"prompt": 1, "response": "c"}), "must be strings"),
        ] {
            let e = Conversation::from_value(&v).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn truncation_keeps_the_start_and_counts_dropped_targets() {
        let t = tokenizer();
        let mut e = encode(&t, &conv("what is 12 + 30?", "42"), LossOn::Assistant).unwrap();
        let full = e.clone();
        let trainable = full.trainable();
        assert_eq!(e.truncate(full.tokens.len()), None);
        assert_eq!(e.truncate(full.tokens.len() - 1), Some(0), "only the untrained newline is cut");
        assert_eq!(e.truncate(full.tokens.len() - 2), Some(1), "the end-of-turn is cut");
        assert_eq!(e.tokens, full.tokens[..full.tokens.len() - 2]);
        assert_eq!(e.trainable(), trainable - 1);
        let mut e = full.clone();
        assert_eq!(e.truncate(3), Some(trainable));
        assert_eq!(e.trainable(), 0);
    }

    #[test]
    fn changing_labels_at_masked_positions_changes_neither_loss_nor_gradients() {
        let t = tokenizer();
        let m = model(t.vocab_size());
        let a = samples(&t);
        // Change every target the mask excludes (the inputs stay: they are context).
        let rows: Vec<Vec<&Encoded>> = a.iter().map(|s| vec![s]).collect();
        let b = assemble(&rows, false, &Device::Cpu).unwrap();
        let y: Vec<u32> = b.targets.flatten_all().unwrap().to_vec1().unwrap();
        let y2: Vec<u32> = y
            .iter()
            .zip(&b.trained)
            .map(|(&id, &w)| if w == 0.0 { (id + 7) % t.vocab_size() as u32 } else { id })
            .collect();
        assert_ne!(y, y2);
        let run = |targets: Vec<u32>| {
            let n = b.trained.len();
            let w = Tensor::from_vec(b.trained.clone(), n, &Device::Cpu).unwrap();
            let targets = Tensor::from_vec(targets, b.targets.dims(), &Device::Cpu).unwrap();
            let loss = (m.token_losses(&b.inputs, &targets, Extra::default()).unwrap() * w).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let g: Vec<Vec<f32>> = m
                .params()
                .iter()
                .map(|(_, v)| grads.get(v).unwrap().flatten_all().unwrap().to_vec1().unwrap())
                .collect();
            (loss.to_scalar::<f32>().unwrap(), g)
        };
        let (l1, g1) = run(y);
        let (l2, g2) = run(y2);
        assert_eq!(l1.to_bits(), l2.to_bits());
        assert_eq!(g1, g2);
    }

    #[test]
    fn padding_never_contributes() {
        let t = tokenizer();
        let m = model(t.vocab_size());
        let s = samples(&t);
        // Alone, the first sample has no padding; next to a longer one it is padded.
        let (alone, _) = loss_and_grads(&m, vec![s[0].clone()], false);
        let longest = s.iter().max_by_key(|e| e.tokens.len()).unwrap();
        assert!(longest.tokens.len() > s[0].tokens.len());
        let rows = vec![vec![&s[0]], vec![longest]];
        let b = assemble(&rows, false, &Device::Cpu).unwrap();
        let width = b.inputs.dim(1).unwrap();
        let pad_weights: f32 = b.trained[s[0].tokens.len() - 1..width].iter().sum();
        assert_eq!(pad_weights, 0.0);
        let losses: Vec<f32> = m.token_losses(&b.inputs, &b.targets, Extra::default()).unwrap().to_vec1().unwrap();
        let w = &b.trained[..width];
        let padded = losses[..width].iter().zip(w).map(|(l, w)| l * w).sum::<f32>() / w.iter().sum::<f32>();
        assert!((padded - alone).abs() <= 1e-6 * alone.abs(), "{padded} vs {alone}");
    }

    #[test]
    fn packed_logits_equal_each_sample_run_alone_and_need_the_block_mask() {
        let t = tokenizer();
        let m = model(t.vocab_size());
        let s = samples(&t);
        let row: Vec<&Encoded> = s.iter().collect();
        let b = assemble(&[row], true, &Device::Cpu).unwrap();
        let extra = Extra { positions: b.positions.as_ref(), mask: b.mask.as_ref() };
        let packed = m.forward_with(&b.inputs, extra).unwrap().squeeze(0).unwrap();
        let plain = m.forward(&b.inputs).unwrap().squeeze(0).unwrap();
        let mut at = 0;
        let mut plain_differs = false;
        for e in &s {
            let len = e.tokens.len() - 1;
            let x = Tensor::new(&e.tokens[..len], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let alone: Vec<Vec<f32>> = m.forward(&x).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
            let got: Vec<Vec<f32>> = packed.narrow(0, at, len).unwrap().to_vec2().unwrap();
            let naive: Vec<Vec<f32>> = plain.narrow(0, at, len).unwrap().to_vec2().unwrap();
            for (a, g) in alone.iter().flatten().zip(got.iter().flatten()) {
                assert!((a - g).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {g}");
            }
            plain_differs |= alone.iter().flatten().zip(naive.iter().flatten()).any(|(a, n)| (a - n).abs() > 1e-3);
            at += len;
        }
        assert!(plain_differs, "without the block mask and position reset, later samples see earlier ones");
        // And the packed step's loss equals the unpacked step's.
        let (unpacked, _) = loss_and_grads(&m, s.clone(), false);
        let (packed, _) = loss_and_grads(&m, s, true);
        assert!((unpacked - packed).abs() <= 1e-5 * unpacked, "{unpacked} vs {packed}");
    }

    #[test]
    fn the_end_of_turn_token_is_trained() {
        let t = tokenizer();
        let e = encode(&t, &conv("what is 12 + 30?", "42"), LossOn::Assistant).unwrap();
        let last = e.tokens.iter().rposition(|&id| id == IM_END).unwrap();
        assert!(e.trained[last], "the assistant's <|im_end|> is a target");
        assert!(!e.trained[last + 1], "the newline after it is not");
        let first_end = e.tokens.iter().position(|&id| id == IM_END).unwrap();
        assert!(!e.trained[first_end], "the user's <|im_end|> is not");
        // Training on this one sample raises the probability of stopping after the answer.
        let m = model(t.vocab_size());
        let p_end = |m: &Model| {
            let x = Tensor::new(&e.tokens[..last], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let logits = m.forward(&x).unwrap().squeeze(0).unwrap().get(last - 1).unwrap();
            let p: Vec<f32> = crate::ml::ops::softmax_last(&logits).unwrap().to_vec1().unwrap();
            p[IM_END as usize]
        };
        let before = p_end(&m);
        let mut opt = crate::ml::optim::AdamW::new(m.params(), Default::default()).unwrap();
        let mut b = Sft::new(vec![e.clone()], vec![], 1, 1, 64, false, 1).unwrap();
        for step in 0..30 {
            let micros = b.step(step, &Device::Cpu).unwrap();
            opt.step(&micros[0].loss(&m, 1).unwrap().backward().unwrap(), 1e-2).unwrap();
        }
        let after = p_end(&m);
        assert!(after > 0.5 && after > before * 10.0, "{before} → {after}");
    }

    #[test]
    fn packing_fills_rows_greedily_and_epochs_reshuffle() {
        assert_eq!(rows(&[5, 5, 5, 9], &[0, 1, 2, 3], 8, true), vec![vec![0, 1], vec![2], vec![3]]);
        assert_eq!(rows(&[5, 5], &[1, 0], 8, false), vec![vec![1], vec![0]]);
        let t = tokenizer();
        let s: Vec<Encoded> = (0..10)
            .map(|i| {
                encode(&t, &conv(&format!("what is {i} + {i}?"), &format!("{}", 2 * i)), LossOn::Assistant).unwrap()
            })
            .collect();
        let mut b = Sft::new(s, vec![], 2, 1, 64, false, 5).unwrap();
        b.ensure(20);
        let firsts: Vec<usize> = b.rows.iter().map(|r| r[0]).collect();
        let mut e0 = firsts[..10].to_vec();
        e0.sort();
        assert_eq!(e0, (0..10).collect::<Vec<_>>(), "each epoch visits every sample once");
        assert_ne!(firsts[..10], firsts[10..20], "epochs are shuffled differently");
    }

    #[test]
    fn an_interrupted_run_resumes_to_the_same_weights_and_metrics() {
        let t = tokenizer();
        let s: Vec<Encoded> = (0..12)
            .map(|i| {
                encode(&t, &conv(&format!("what is {i} + 30?"), &format!("{}", i + 30)), LossOn::Assistant).unwrap()
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let run = || {
            let m = model(t.vocab_size());
            let mut opt = crate::ml::optim::AdamW::new(m.params(), Default::default()).unwrap();
            let mut b = Sft::new(s.clone(), s[..2].to_vec(), 2, 2, 64, true, 4).unwrap();
            let cfg = crate::ml::train::Loop { steps: 6, clip: 1.0, eval_every: 3, checkpoint_every: 3 };
            let mut ticks = 0;
            let rows =
                crate::ml::train::run(&m, &mut opt, &cfg, &|_| 1e-3, &mut b, dir.path(), &mut |_| ticks += 1).unwrap();
            let weights: Vec<Vec<f32>> =
                m.params().iter().map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap()).collect();
            (weights, rows, ticks)
        };
        // The first run leaves its step-3 checkpoint behind, as a run killed after step 3 would.
        let (a, rows_a, ticks_a) = run();
        assert!(dir.path().join("checkpoint/state.json").exists());
        let (b, rows_b, ticks_b) = run();
        assert_eq!((ticks_a, ticks_b), (6, 3), "the second run resumes at step 3");
        assert_eq!(rows_a, rows_b);
        assert_eq!(a, b);
    }
}
