//! Pretraining batches and evaluation windows: [`Windows`] draws `[batch, seq_len + 1]` windows
//! of a token stream from a seeded stream per step, [`evaluate`] measures the loss on fixed,
//! evenly spaced windows, and [`ValSets`] does so for each named validation set.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Batches, Micro, TrainError};
use crate::ml::fused::Forward;
use crate::ml::model::Model;

/// The prefix of a per-source validation column of `metrics.jsonl`.
pub const VAL_PREFIX: &str = "val_loss/";

/// Named token streams evaluated alongside the validation loss — the sources of the data, and
/// extra validation data — each on `windows` fixed windows.
#[derive(Default)]
pub struct ValSets {
    pub sets: Vec<(String, Vec<u32>)>,
    pub seq_len: usize,
    pub windows: usize,
    pub batch: usize,
}

impl ValSets {
    /// `val_loss/NAME` → the loss of `model` on each set that fills at least one window.
    pub fn losses(&self, model: &Model) -> Result<BTreeMap<String, f64>, TrainError> {
        let mut out = BTreeMap::new();
        for (name, tokens) in self.sets.iter().filter(|(_, t)| t.len() > self.seq_len) {
            out.insert(
                format!("{VAL_PREFIX}{name}"),
                evaluate(model, tokens, self.seq_len, self.windows, self.batch)?.0,
            );
        }
        Ok(out)
    }
}

/// Pretraining batches: random `[batch, seq_len + 1]` windows of a token stream.
pub struct Windows<'a> {
    pub train: &'a [u32],
    pub val: &'a [u32],
    pub named: ValSets,
    pub batch: usize,
    pub accumulate: usize,
    pub seq_len: usize,
    pub eval_windows: usize,
    pub seed: u64,
}

impl<'a> Windows<'a> {
    pub fn new(
        train: &'a [u32],
        val: &'a [u32],
        batch: usize,
        accumulate: usize,
        seq_len: usize,
        eval_windows: usize,
        seed: u64,
    ) -> Result<Self, TrainError> {
        if train.len() < seq_len + 1 {
            return Err(TrainError::Data(format!(
                "the train split has {} tokens, fewer than one window of {}",
                train.len(),
                seq_len + 1
            )));
        }
        Ok(Self { train, val, named: ValSets::default(), batch, accumulate, seq_len, eval_windows, seed })
    }
}

impl Batches for Windows<'_> {
    fn step(&mut self, step: u64, device: &Device) -> Result<Vec<Micro>, TrainError> {
        let max_start = self.train.len() - self.seq_len - 1;
        (0..self.accumulate as u64)
            .map(|micro| {
                let starts = window_starts(self.seed, step, micro, self.accumulate as u64, self.batch, max_start);
                let (inputs, targets) = windows(self.train, &starts, self.seq_len, device)?;
                Ok(Micro {
                    inputs,
                    targets,
                    weights: None,
                    positions: None,
                    mask: None,
                    tokens: (self.batch * self.seq_len) as u64,
                })
            })
            .collect()
    }

    fn val_loss(&self, model: &Model) -> Result<f64, TrainError> {
        Ok(evaluate(model, self.val, self.seq_len, self.eval_windows, self.batch)?.0)
    }

    fn val_losses(&self, model: &Model) -> Result<BTreeMap<String, f64>, TrainError> {
        self.named.losses(model)
    }
}

/// Where `[batch, seq_len + 1]` windows of a token stream start, for step `step` and
/// micro-batch `micro`: a ChaCha stream per (step, micro), so resuming needs no RNG state.
fn window_starts(seed: u64, step: u64, micro: u64, accumulate: u64, batch: usize, max_start: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step * accumulate + micro);
    (0..batch).map(|_| rng.random_range(0..=max_start)).collect()
}

fn windows(tokens: &[u32], starts: &[usize], t: usize, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let mut x = Vec::with_capacity(starts.len() * t);
    let mut y = Vec::with_capacity(starts.len() * t);
    for &s in starts {
        x.extend_from_slice(&tokens[s..s + t]);
        y.extend_from_slice(&tokens[s + 1..s + t + 1]);
    }
    Ok((Tensor::from_vec(x, (starts.len(), t), device)?, Tensor::from_vec(y, (starts.len(), t), device)?))
}

/// Mean next-token loss over `n` evenly spaced, fixed windows of `tokens`.
pub fn evaluate(
    model: &Model,
    tokens: &[u32],
    seq_len: usize,
    n: usize,
    batch: usize,
) -> Result<(f64, u64), TrainError> {
    if tokens.len() < seq_len + 1 {
        return Err(TrainError::Data(format!("{} tokens cannot fill one window of {}", tokens.len(), seq_len + 1)));
    }
    let max_start = tokens.len() - seq_len - 1;
    let n = n.clamp(1, max_start + 1);
    let starts: Vec<usize> = (0..n).map(|i| if n == 1 { 0 } else { i * max_start / (n - 1) }).collect();
    let mut total = 0.0;
    let mut fused = Forward::of(model)?;
    for chunk in starts.chunks(batch.max(1)) {
        let (x, y) = windows(tokens, chunk, seq_len, model.device())?;
        let loss = match &mut fused {
            Some(f) => {
                f.loss(&Micro { inputs: x, targets: y, weights: None, positions: None, mask: None, tokens: 0 })?
            }
            None => model.loss(&x, &y)?.to_scalar::<f32>()? as f64,
        };
        total += loss * chunk.len() as f64;
    }
    Ok((total / n as f64, (n * seq_len) as u64))
}
