//! The training loop shared by `pretrain` and `anneal`: seeded batches of random windows,
//! gradient accumulation, global-norm clipping, our AdamW, periodic validation on fixed
//! windows, checkpoints for exact resume, and per-step metrics.
//!
//! Everything written to the artifact is a pure function of the inputs and the seed (losses,
//! learning rates, norms); wall-clock figures (tokens/s) go only to progress reports, so two
//! runs — or an interrupted and resumed run — produce byte-identical artifacts.

use std::path::Path;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::model::Model;
use super::optim::AdamW;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Data(String),
}

/// The loop's settings (the learning rate comes from a function of the step).
#[derive(Clone, Debug)]
pub struct Loop {
    pub steps: u64,
    pub batch: usize,
    pub accumulate: usize,
    pub seq_len: usize,
    pub clip: f64,
    pub eval_every: u64,
    pub eval_windows: usize,
    pub checkpoint_every: u64,
    pub seed: u64,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub step: u64,
    pub tokens: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f64>,
}

/// What the loop reports after each step.
#[derive(Clone, Debug)]
pub struct Tick {
    pub step: u64,
    pub total: u64,
    pub loss: f64,
    pub tokens_per_s: f64,
    pub eta_s: f64,
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    step: u64,
    rows: Vec<Row>,
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
pub fn evaluate(model: &Model, tokens: &[u32], seq_len: usize, n: usize, batch: usize) -> Result<(f64, u64), TrainError> {
    if tokens.len() < seq_len + 1 {
        return Err(TrainError::Data(format!("{} tokens cannot fill one window of {}", tokens.len(), seq_len + 1)));
    }
    let max_start = tokens.len() - seq_len - 1;
    let n = n.clamp(1, max_start + 1);
    let starts: Vec<usize> = (0..n).map(|i| if n == 1 { 0 } else { i * max_start / (n - 1) }).collect();
    let mut total = 0.0;
    for chunk in starts.chunks(batch.max(1)) {
        let (x, y) = windows(tokens, chunk, seq_len, model.device())?;
        let loss = model.loss(&x, &y)?.to_scalar::<f32>()? as f64;
        total += loss * chunk.len() as f64;
    }
    Ok((total / n as f64, (n * seq_len) as u64))
}

/// Trains `model` with `opt` for `cfg.steps` steps at learning rate `lr(step)`, resuming from
/// the checkpoint in `resume` if one is there. Returns the metrics of every step.
#[allow(clippy::too_many_arguments)] // each is a distinct input of one training run
pub fn run(
    model: &Model,
    opt: &mut AdamW,
    cfg: &Loop,
    lr: &dyn Fn(u64) -> f64,
    train: &[u32],
    val: &[u32],
    resume: &Path,
    tick: &mut dyn FnMut(&Tick),
) -> Result<Vec<Row>, TrainError> {
    if train.len() < cfg.seq_len + 1 {
        return Err(TrainError::Data(format!(
            "the train split has {} tokens, fewer than one window of {}",
            train.len(),
            cfg.seq_len + 1
        )));
    }
    let params = model.params();
    let ckpt_dir = resume.join("checkpoint");
    let (mut step, mut rows) = match load_checkpoint(&ckpt_dir, model, opt)? {
        Some(c) => (c.step, c.rows),
        None => (0, Vec::new()),
    };
    let tokens_per_step = (cfg.batch * cfg.accumulate * cfg.seq_len) as u64;
    let max_start = train.len() - cfg.seq_len - 1;
    let started = Instant::now();
    let first = step;
    while step < cfg.steps {
        let mut sum: Option<GradStore> = None;
        let mut loss_sum = 0.0;
        for micro in 0..cfg.accumulate as u64 {
            let starts = window_starts(cfg.seed, step, micro, cfg.accumulate as u64, cfg.batch, max_start);
            let (x, y) = windows(train, &starts, cfg.seq_len, model.device())?;
            let loss = model.loss(&x, &y)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            let grads = (loss / cfg.accumulate as f64)?.backward()?;
            sum = Some(match sum {
                None => grads,
                Some(mut acc) => {
                    for (_, var) in &params {
                        if let Some(g) = grads.get(var) {
                            let total = match acc.get(var) {
                                Some(a) => (a + g)?,
                                None => g.clone(),
                            };
                            acc.insert(var, total);
                        }
                    }
                    acc
                }
            });
        }
        let mut grads = sum.expect("at least one micro-batch");
        let grad_norm = super::optim::clip_grad_norm(&params, &mut grads, cfg.clip)?;
        let rate = lr(step);
        opt.step(&grads, rate)?;
        step += 1;
        let loss = loss_sum / cfg.accumulate as f64;
        if !loss.is_finite() {
            return Err(TrainError::Data(format!("the loss diverged at step {step} ({loss})")));
        }
        let val_loss = if step % cfg.eval_every.max(1) == 0 || step == cfg.steps {
            Some(evaluate(model, val, cfg.seq_len, cfg.eval_windows, cfg.batch)?.0)
        } else {
            None
        };
        rows.push(Row { step, tokens: step * tokens_per_step, loss, lr: rate, grad_norm, val_loss });
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        let done = (step - first) as f64;
        tick(&Tick {
            step,
            total: cfg.steps,
            loss,
            tokens_per_s: done * tokens_per_step as f64 / elapsed,
            eta_s: elapsed / done * (cfg.steps - step) as f64,
        });
        if cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0 && step < cfg.steps {
            save_checkpoint(&ckpt_dir, model, opt, &Checkpoint { step, rows: rows.clone() })?;
        }
    }
    Ok(rows)
}

fn save_checkpoint(dir: &Path, model: &Model, opt: &AdamW, c: &Checkpoint) -> Result<(), TrainError> {
    let parent = dir.parent().expect("checkpoint dir has a parent");
    fs_err::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new().prefix("checkpoint-").tempdir_in(parent)?;
    model.save(tmp.path())?;
    opt.save(&tmp.path().join("optimizer.safetensors"))?;
    fs_err::write(tmp.path().join("state.json"), serde_json::to_vec(c).expect("checkpoints serialise"))?;
    // Replace the previous checkpoint only once the new one is complete.
    let tmp = tmp.keep();
    if dir.exists() {
        fs_err::remove_dir_all(dir)?;
    }
    fs_err::rename(&tmp, dir)?;
    Ok(())
}

fn load_checkpoint(dir: &Path, model: &Model, opt: &mut AdamW) -> Result<Option<Checkpoint>, TrainError> {
    let Ok(bytes) = fs_err::read(dir.join("state.json")) else { return Ok(None) };
    let c: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| TrainError::Data(format!("bad checkpoint state: {e}")))?;
    let saved = Model::load(dir, model.device())?;
    for (name, var) in model.params() {
        var.set(saved.param(&name).as_tensor())?;
    }
    opt.load(&dir.join("optimizer.safetensors"))?;
    Ok(Some(c))
}
