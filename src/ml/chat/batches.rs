//! SFT batches: conversations packed (or one a row) in a seeded order per epoch, with replayed
//! plain text mixed in by a fixed share of the rows, and the masked loss over trainable tokens.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Batch, Encoded, assemble};
use crate::ml::fused::Forward;
use crate::ml::model::Model;
use crate::ml::train::{Batches, Micro, TrainError, ValSets};

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
    pub(super) rows: Vec<Vec<usize>>,
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

    pub(super) fn ensure(&mut self, n: usize) {
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
