//! The training loop shared by `pretrain`, `anneal` and `sft`: batches from a [`Batches`]
//! (seeded random windows for pretraining, [`windows`]), gradient accumulation, global-norm clipping, our
//! AdamW, periodic validation, checkpoints for exact resume, and per-step metrics.
//!
//! Everything written to the artifact is a pure function of the inputs and the seed (losses,
//! learning rates, norms); wall-clock figures (tokens/s) go only to progress reports, so two
//! runs — or an interrupted and resumed run — produce byte-identical artifacts.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::cores::Cores;
use super::fused::Fused;
use super::model::{Extra, Model};
use super::optim::AdamW;

mod windows;

pub use windows::{VAL_PREFIX, ValSets, Windows, evaluate};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Data(String),
}

/// The loop's settings (the learning rate comes from a function of the step, the batches
/// from a [`Batches`]).
#[derive(Clone, Debug)]
pub struct Loop {
    pub steps: u64,
    pub clip: f64,
    pub eval_every: u64,
    pub checkpoint_every: u64,
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
    /// `val_loss/NAME` → the validation loss on one source of the data, or on extra validation
    /// data the stage names, where evaluated.
    #[serde(flatten)]
    pub val_sources: BTreeMap<String, f64>,
}

impl Row {
    /// The row's values by name, as a progress report and the exporters name them.
    pub fn scalars(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::from([
            ("loss".to_owned(), self.loss),
            ("lr".to_owned(), self.lr),
            ("grad_norm".to_owned(), self.grad_norm),
            ("tokens".to_owned(), self.tokens as f64),
        ]);
        if let Some(v) = self.val_loss {
            out.insert("val_loss".to_owned(), v);
        }
        out.extend(self.val_sources.iter().map(|(k, v)| (k.clone(), *v)));
        out
    }
}

/// What the loop reports after each step: the step's row of `metrics.jsonl`, and figures of
/// the wall clock that the artifact must not hold.
#[derive(Clone, Debug)]
pub struct Tick<'a> {
    pub row: &'a Row,
    pub total: u64,
    pub tokens_per_s: f64,
    pub eta_s: f64,
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    step: u64,
    rows: Vec<Row>,
}

/// One micro-batch: `[batch, seq]` u32 inputs and targets, and how its loss is formed.
pub struct Micro {
    pub inputs: Tensor,
    pub targets: Tensor,
    /// Per-position loss weights `[batch · seq]`, already normalised over the whole step
    /// (masked fine-tuning); `None` is the plain mean over the micro-batch, divided by the
    /// number of micro-batches.
    pub weights: Option<Tensor>,
    /// Per-sample positions and the block-diagonal mask of packed rows.
    pub positions: Option<Tensor>,
    pub mask: Option<Tensor>,
    /// Tokens this micro-batch trains on (for the `tokens` column and throughput).
    pub tokens: u64,
}

impl Micro {
    /// This micro-batch's share of the step's loss.
    pub fn loss(&self, model: &Model, micro_batches: usize) -> candle_core::Result<Tensor> {
        let extra = Extra { positions: self.positions.as_ref(), mask: self.mask.as_ref() };
        let losses = model.token_losses(&self.inputs, &self.targets, extra)?;
        match &self.weights {
            None => losses.mean_all()? / micro_batches as f64,
            Some(w) => (losses * w)?.sum_all(),
        }
    }
}

/// Where a training run's batches come from. The batches of a step are a pure function of the
/// step, so a resumed run needs no data-loader state.
pub trait Batches: Sync {
    /// The micro-batches of optimizer step `step` (0-based).
    fn step(&mut self, step: u64, device: &Device) -> Result<Vec<Micro>, TrainError>;
    /// The validation loss of `model` (the same positions every time).
    fn val_loss(&self, model: &Model) -> Result<f64, TrainError>;
    /// The named validation losses, `val_loss/NAME` → loss ([`ValSets`]).
    fn val_losses(&self, model: &Model) -> Result<BTreeMap<String, f64>, TrainError>;
}

/// Trains `model` with `opt` for `cfg.steps` steps on `batches` at learning rate `lr(step)`,
/// resuming from the checkpoint in `resume` if one is there. Returns the metrics of every step.
pub fn run(
    model: &Model,
    opt: &mut AdamW,
    cfg: &Loop,
    lr: &dyn Fn(u64) -> f64,
    batches: &mut dyn Batches,
    resume: &Path,
    tick: &mut dyn FnMut(&Tick),
) -> Result<Vec<Row>, TrainError> {
    let params = model.params();
    let ckpt_dir = resume.join("checkpoint");
    let (mut step, mut rows) = match load_checkpoint(&ckpt_dir, model, opt)? {
        Some(c) => (c.step, c.rows),
        None => (0, Vec::new()),
    };
    let mut fused = if Fused::supports(model) { Some(Fused::new(model, opt)?) } else { None };
    let mut cores = Cores::from_env();
    let mut tokens = rows.last().map_or(0, |r| r.tokens);
    let started = Instant::now();
    let first_tokens = tokens;
    let first = step;
    while step < cfg.steps {
        let micros = batches.step(step, model.device())?;
        if micros.is_empty() {
            return Err(TrainError::Data(format!("step {step} has no micro-batch")));
        }
        tokens += micros.iter().map(|m| m.tokens).sum::<u64>();
        let rate = lr(step);
        let (loss, grad_norm) = match &mut fused {
            Some(f) => cores.run(|| fused_step(f, &micros, cfg.clip, rate))?,
            None => tape_step(model, opt, &params, &micros, cfg.clip, rate)?,
        };
        step += 1;
        if !loss.is_finite() {
            return Err(TrainError::Data(format!("the loss diverged at step {step} ({loss})")));
        }
        let evaluate = step % cfg.eval_every.max(1) == 0 || step == cfg.steps;
        let checkpoint = cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0 && step < cfg.steps;
        if let Some(f) = &fused
            && (evaluate || checkpoint || step == cfg.steps)
        {
            f.sync_model(model)?;
        }
        let (val_loss, val_sources) = if evaluate {
            cores.run(|| Ok::<_, TrainError>((Some(batches.val_loss(model)?), batches.val_losses(model)?)))?
        } else {
            (None, BTreeMap::new())
        };
        rows.push(Row { step, tokens, loss, lr: rate, grad_norm, val_loss, val_sources });
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        let done = (step - first) as f64;
        tick(&Tick {
            row: rows.last().expect("just pushed"),
            total: cfg.steps,
            tokens_per_s: (tokens - first_tokens) as f64 / elapsed,
            eta_s: elapsed / done * (cfg.steps - step) as f64,
        });
        if checkpoint {
            if let Some(f) = &fused {
                f.sync_optimizer(opt)?;
            }
            save_checkpoint(&ckpt_dir, model, opt, &Checkpoint { step, rows: rows.clone() })?;
        }
    }
    if let Some(f) = &fused {
        f.sync_model(model)?;
        f.sync_optimizer(opt)?;
    }
    Ok(rows)
}

/// One optimizer step on the fused path: returns the loss and the gradient norm.
fn fused_step(f: &mut Fused, micros: &[Micro], clip: f64, lr: f64) -> Result<(f64, f64), TrainError> {
    let mut loss = 0.0;
    for micro in micros {
        loss += f.accumulate(micro, micros.len())?;
    }
    Ok((loss, f.update(clip, lr)))
}

/// One optimizer step on candle's op-by-op path (a GPU, half precision).
fn tape_step(
    model: &Model,
    opt: &mut AdamW,
    params: &[(String, candle_core::Var)],
    micros: &[Micro],
    clip: f64,
    lr: f64,
) -> Result<(f64, f64), TrainError> {
    let mut sum: Option<GradStore> = None;
    let mut loss = 0.0;
    for micro in micros {
        let part = micro.loss(model, micros.len())?;
        loss += part.to_scalar::<f32>()? as f64;
        let grads = part.backward()?;
        sum = Some(match sum {
            None => grads,
            Some(mut acc) => {
                for (_, var) in params {
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
    let mut grads = sum.expect("the caller checked for micro-batches");
    let grad_norm = super::optim::clip_grad_norm(params, &mut grads, clip)?;
    opt.step(&grads, lr)?;
    Ok((loss, grad_norm))
}

fn save_checkpoint(dir: &Path, model: &Model, opt: &AdamW, c: &Checkpoint) -> Result<(), TrainError> {
    let parent = dir.parent().expect("checkpoint dir has a parent");
    fs_err::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new().prefix("checkpoint-").tempdir_in(parent)?;
    model.save(tmp.path())?;
    opt.save(&tmp.path().join("optimizer.safetensors"))?;
    fs_err::write(tmp.path().join("state.json"), serde_json::to_vec(c).expect("checkpoints serialise"))?;
    // Replace the previous checkpoint only once the new one is complete, and never leave a
    // moment without one: the old one is moved aside (where a process killed right then finds
    // it) before the new one takes its name.
    let tmp = tmp.keep();
    let old = previous(dir);
    if dir.exists() {
        if old.exists() {
            fs_err::remove_dir_all(&old)?;
        }
        fs_err::rename(dir, &old)?;
    }
    fs_err::rename(&tmp, dir)?;
    if old.exists() {
        fs_err::remove_dir_all(&old)?;
    }
    Ok(())
}

/// Where the checkpoint being replaced waits until its successor is in place.
fn previous(dir: &Path) -> std::path::PathBuf {
    dir.with_extension("old")
}

fn load_checkpoint(dir: &Path, model: &Model, opt: &mut AdamW) -> Result<Option<Checkpoint>, TrainError> {
    let old = previous(dir);
    let dir = if !dir.exists() && old.exists() { old.as_path() } else { dir };
    let Ok(bytes) = fs_err::read(dir.join("state.json")) else { return Ok(None) };
    let c: Checkpoint =
        serde_json::from_slice(&bytes).map_err(|e| TrainError::Data(format!("bad checkpoint state: {e}")))?;
    let saved = Model::load(dir, model.device())?;
    for (name, var) in model.params() {
        var.set(saved.param(&name).as_tensor())?;
    }
    opt.load(&dir.join("optimizer.safetensors"))?;
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::model::tiny;
    use crate::ml::optim::AdamWConfig;
    use candle_core::Device;

    /// A process killed while one checkpoint replaces another resumes from whichever is whole:
    /// the new one once it has its name, else the old one moved aside.
    #[test]
    fn a_checkpoint_survives_a_kill_while_it_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("checkpoint");
        let model = Model::init(tiny(32, 1, 2, false), 1, &Device::Cpu).unwrap();
        let opt = AdamW::new(model.params(), AdamWConfig::default()).unwrap();
        let loaded = |dir: &Path| {
            let mut fresh_opt = AdamW::new(model.params(), AdamWConfig::default()).unwrap();
            load_checkpoint(dir, &model, &mut fresh_opt).unwrap().map(|c| c.step)
        };
        save_checkpoint(&ckpt, &model, &opt, &Checkpoint { step: 5, rows: Vec::new() }).unwrap();
        save_checkpoint(&ckpt, &model, &opt, &Checkpoint { step: 10, rows: Vec::new() }).unwrap();
        assert_eq!(loaded(&ckpt), Some(10));
        assert!(!previous(&ckpt).exists(), "the replaced checkpoint is removed");
        // Killed after moving the old one aside, before the new one was renamed into place.
        std::fs::rename(&ckpt, previous(&ckpt)).unwrap();
        assert_eq!(loaded(&ckpt), Some(10));
        save_checkpoint(&ckpt, &model, &opt, &Checkpoint { step: 15, rows: Vec::new() }).unwrap();
        assert_eq!(loaded(&ckpt), Some(15));
        assert!(!previous(&ckpt).exists());
    }
}
