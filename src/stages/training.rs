//! What the training kinds (`pretrain`, `anneal`, `sft`) share: the optimisation settings and
//! their checks, the learning rate, precision, and the run itself — load the model, check it
//! against the data, train with checkpoints in the resume directory, and write the model
//! folder, optimizer state, trainer state and metrics.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{InputError, ParamError, Progress, Role, StageError, Task, invalid};
use crate::ml::model::Model;
use crate::ml::optim::{AdamW, AdamWConfig};
use crate::ml::schedule::{self, Schedule};
use crate::ml::shards::Index;
use crate::ml::train::{self, Batches, Loop, Row, ValSets, Windows};

/// The optimisation settings every training kind shares.
// No `deny_unknown_fields` here or on the structs that flatten this one (serde does not
// support the two together); `typed` rejects unknown keys instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Optim {
    #[serde(default = "batch")]
    pub batch: usize,
    #[serde(default = "one")]
    pub accumulate: usize,
    #[serde(default = "seq_len")]
    pub seq_len: usize,
    #[serde(default = "weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "betas")]
    pub betas: [f64; 2],
    #[serde(default = "eps")]
    pub eps: f64,
    #[serde(default = "clip")]
    pub clip: f64,
    #[serde(default = "eval_every")]
    pub eval_every: u64,
    #[serde(default = "checkpoint_every")]
    pub checkpoint_every: u64,
    #[serde(default = "super::default_seed")]
    pub seed: u64,
    /// The dtype of the forward and backward passes; weights and optimizer state stay f32.
    #[serde(default)]
    pub precision: Precision,
}

/// `precision:` of a training stage. Only f32 is bit-reproducible across machines; bf16 and
/// f16 are for GPUs, where they are faster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Precision::F32 => candle_core::DType::F32,
            Precision::Bf16 => candle_core::DType::BF16,
            Precision::F16 => candle_core::DType::F16,
        }
    }
}

/// The settings pretrain and anneal share: the optimisation, the budget and validation windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Common {
    /// Optimizer steps; or give `tokens` and the steps follow from the batch shape.
    #[serde(default)]
    pub steps: Option<u64>,
    #[serde(default)]
    pub tokens: Option<u64>,
    #[serde(default = "eval_windows")]
    pub eval_windows: usize,
    #[serde(flatten)]
    pub optim: Optim,
}

fn batch() -> usize {
    16
}
fn one() -> usize {
    1
}
fn seq_len() -> usize {
    128
}
fn weight_decay() -> f64 {
    0.1
}
fn betas() -> [f64; 2] {
    [0.9, 0.95]
}
fn eps() -> f64 {
    1e-8
}
fn clip() -> f64 {
    1.0
}
fn eval_every() -> u64 {
    100
}
pub fn eval_windows() -> usize {
    32
}
fn checkpoint_every() -> u64 {
    50
}

/// A learning rate from a warmup and a schedule (pretrain and sft).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rate {
    pub lr: f64,
    #[serde(default)]
    pub warmup: u64,
    #[serde(default = "cosine")]
    pub schedule: Schedule,
}

fn cosine() -> Schedule {
    Schedule::Cosine { min_lr: 0.0 }
}

impl Rate {
    pub fn check(&self, steps: u64) -> Result<(), ParamError> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(invalid("lr", "must be positive"));
        }
        if self.warmup >= steps {
            return Err(invalid("warmup", "must be shorter than the run"));
        }
        self.schedule.validate(self.lr).map_err(|e| invalid("schedule", e.to_string()))
    }

    /// The learning rate of `step` in a run of `steps`.
    pub fn at(&self, step: u64, steps: u64) -> f64 {
        schedule::lr(&self.schedule, self.lr, self.warmup, steps, step)
    }
}

/// `trainer_state.json` of a trained model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub steps: u64,
    pub tokens: u64,
    /// The learning rate of the last step.
    pub last_lr: f64,
    /// The rate the schedule ended at, that of the step after the last: where an anneal
    /// continues from (0 after a decay to 0, which leaves nothing to anneal).
    pub end_lr: f64,
    pub final_loss: f64,
    pub final_val_loss: Option<f64>,
}

pub const ROLES: &[Role] = &[
    Role { name: "model", list: false, required: true },
    Role { name: "data", list: false, required: true },
    VAL_ROLE,
];

/// Data stages whose val split is evaluated alongside the stage's own (`val_loss/STAGE`).
pub const VAL_ROLE: Role = Role { name: "val", list: true, required: false };

impl Optim {
    pub fn check(&self) -> Result<(), ParamError> {
        if self.eval_every == 0 {
            return Err(invalid("eval_every", "must be positive"));
        }
        for (key, v) in [("batch", self.batch), ("accumulate", self.accumulate), ("seq_len", self.seq_len)] {
            if v == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(invalid("weight_decay", "must be non-negative"));
        }
        if self.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(invalid("betas", "each must be in [0, 1)"));
        }
        if !(self.eps > 0.0 && self.clip > 0.0) {
            return Err(invalid("clip", "`clip` and `eps` must be positive"));
        }
        Ok(())
    }

    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.betas[0],
            beta2: self.betas[1],
            eps: self.eps,
            weight_decay: self.weight_decay,
            decay_all: false,
        }
    }

    /// The loop settings for a run of `steps` steps.
    pub fn loop_for(&self, steps: u64) -> Loop {
        Loop { steps, clip: self.clip, eval_every: self.eval_every, checkpoint_every: self.checkpoint_every }
    }
}

impl Common {
    pub fn check(&self) -> Result<(), ParamError> {
        match (self.steps, self.tokens) {
            (Some(0), _) | (_, Some(0)) => return Err(invalid("steps", "must be positive")),
            (Some(_), Some(_)) => return Err(invalid("tokens", "give `steps` or `tokens`, not both")),
            (None, None) => return Err(invalid("steps", "give `steps` or `tokens`")),
            _ => {}
        }
        if self.eval_windows == 0 {
            return Err(invalid("eval_windows", "must be positive"));
        }
        self.optim.check()
    }

    pub fn tokens_per_step(&self) -> u64 {
        (self.optim.batch * self.optim.accumulate * self.optim.seq_len) as u64
    }

    pub fn steps(&self) -> u64 {
        self.steps.unwrap_or_else(|| self.tokens.unwrap_or(0).div_ceil(self.tokens_per_step()))
    }
}

/// Loads model and data, trains, writes the model folder, optimizer state, trainer state and
/// metrics. Shared by `pretrain` and `anneal`.
pub fn train_stage(
    task: &Task,
    common: &Common,
    lr: &dyn Fn(u64) -> f64,
    load_optimizer: bool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(), StageError> {
    let o = &common.optim;
    let model_dir = task.input("model")?;
    let data_dir = task.input("data")?;
    same_tokenizer(model_dir, data_dir)?;
    let device = task.open_device(progress)?;
    let mut model = Model::load(model_dir, &device)?;
    model.set_compute(o.precision.dtype());
    let index = Index::load(data_dir)?;
    if index.vocab_size != model.config.vocab_size {
        return Err(InputError::Vocabulary { data: index.vocab_size, model: model.config.vocab_size }.into());
    }
    check_positions(&model, o.seq_len)?;
    let train_tokens = index.tokens(data_dir, &index.train)?;
    let val_tokens = index.tokens(data_dir, &index.val)?;
    let mut opt = optimizer(&model, model_dir, o, load_optimizer)?;
    let val = if val_tokens.len() > o.seq_len { &val_tokens } else { &train_tokens };
    let seed = sampling_seed(o.seed, model_dir)?;
    let mut batches = Windows::new(&train_tokens, val, o.batch, o.accumulate, o.seq_len, common.eval_windows, seed)?;
    batches.named = val_sets(task, model_dir, Some((&index, &val_tokens)), o, common.eval_windows)?;
    let steps = common.steps();
    let rows = train_loop(&model, &mut opt, &o.loop_for(steps), lr, &mut batches, task, progress)?;
    write_outputs(&task.out, model_dir, &model, &opt, &rows, lr(steps))
}

/// The seed of a run's sampling stream: the stage's seed and the content of its input weights.
/// A continuation (an anneal, a second pretrain or sft on the same data) with the default seed
/// would otherwise draw exactly the windows, in the same order, its input run drew.
pub fn sampling_seed(seed: u64, model_dir: &Path) -> Result<u64, StageError> {
    let (weights, _) = crate::hash::file::hash_file(&model_dir.join("model.safetensors"))?;
    let mut h = blake3::Hasher::new();
    h.update(b"flow sampling stream\0");
    h.update(&seed.to_le_bytes());
    h.update(weights.as_bytes());
    let bytes: [u8; 8] = h.finalize().as_bytes()[..8].try_into().expect("8 bytes");
    Ok(u64::from_le_bytes(bytes))
}

/// What a run evaluates besides its validation loss: each source of its data's val split when
/// the data mixes several, then the val split (else the train split) of every `val` stage.
pub fn val_sets(
    task: &Task,
    model_dir: &Path,
    own: Option<(&Index, &[u32])>,
    o: &Optim,
    windows: usize,
) -> Result<ValSets, StageError> {
    let mut sets = Vec::new();
    if let Some((index, val)) = own
        && index.sources.len() > 1
    {
        sets.extend(index.val_by_source(val).into_iter().map(|(name, part)| (name.to_owned(), part.to_vec())));
    }
    let names = task.needs.get(VAL_ROLE.name);
    for (i, dir) in task.inputs.get(VAL_ROLE.name).into_iter().flatten().enumerate() {
        same_tokenizer(model_dir, dir)?;
        let index = Index::load(dir)?;
        let val = index.tokens(dir, &index.val)?;
        let tokens = if val.len() > o.seq_len { val } else { index.tokens(dir, &index.train)? };
        let name = names.and_then(|n| n.get(i)).cloned().unwrap_or_else(|| format!("val[{i}]"));
        sets.push((name, tokens));
    }
    Ok(ValSets { sets, seq_len: o.seq_len, windows, batch: o.batch })
}

pub fn check_positions(model: &Model, seq_len: usize) -> Result<(), StageError> {
    if seq_len > model.config.max_position_embeddings {
        return Err(InputError::TooLong { seq_len, positions: model.config.max_position_embeddings }.into());
    }
    Ok(())
}

/// A fresh AdamW for `model`, or the input model's state when `load` is set.
pub fn optimizer(model: &Model, model_dir: &Path, o: &Optim, load: bool) -> Result<AdamW, StageError> {
    let mut opt = AdamW::new(model.params(), o.adamw())?;
    if load {
        let file = model_dir.join("optimizer.safetensors");
        if !file.exists() {
            return Err(InputError::NoOptimizerState.into());
        }
        opt.load(&file)?;
    }
    Ok(opt)
}

/// Runs the loop, turning its ticks into progress reports.
pub fn train_loop(
    model: &Model,
    opt: &mut AdamW,
    cfg: &Loop,
    lr: &dyn Fn(u64) -> f64,
    batches: &mut dyn Batches,
    task: &Task,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<Row>, StageError> {
    Ok(train::run(model, opt, cfg, lr, batches, &task.resume, &mut |t| {
        let mut scalars = t.row.scalars();
        scalars.insert("tokens_per_s".to_owned(), t.tokens_per_s);
        progress(&Progress { step: t.row.step, total: t.total, eta_s: Some(t.eta_s), device: None, scalars })
    })?)
}

/// Fine-tuning on data tokenised differently would silently train garbage.
pub fn same_tokenizer(model_dir: &Path, data_dir: &Path) -> Result<(), StageError> {
    let a = fs_err::read(model_dir.join("tokenizer.json"))?;
    let b = fs_err::read(data_dir.join("tokenizer.json"))?;
    if a != b {
        return Err(InputError::DifferentTokenizers.into());
    }
    Ok(())
}

/// What [`write_outputs`] leaves: the model folder, the optimizer state and the metrics.
pub const TRAINED: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "optimizer.safetensors",
    "metrics.jsonl",
    "trainer_state.json",
];

/// Writes the trained model, its optimizer state, `metrics.jsonl` and `trainer_state.json`;
/// `end_lr` is the schedule's rate at the step after the last.
pub fn write_outputs(
    out: &Path,
    model_dir: &Path,
    model: &Model,
    opt: &AdamW,
    rows: &[Row],
    end_lr: f64,
) -> Result<(), StageError> {
    model.save(out)?;
    opt.save(&out.join("optimizer.safetensors"))?;
    fs_err::copy(model_dir.join("tokenizer.json"), out.join("tokenizer.json"))?;
    let mut metrics = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut metrics, row).map_err(std::io::Error::other)?;
        metrics.push(b'\n');
    }
    fs_err::write(out.join("metrics.jsonl"), metrics)?;
    let last = rows.last().ok_or(InputError::NoSteps)?;
    let state = TrainerState {
        steps: last.step,
        tokens: last.tokens,
        last_lr: last.lr,
        end_lr,
        final_loss: last.loss,
        final_val_loss: rows.iter().rev().find_map(|r| r.val_loss),
    };
    let mut json = serde_json::to_vec_pretty(&state).expect("states serialise");
    json.push(b'\n');
    fs_err::write(out.join("trainer_state.json"), json)?;
    Ok(())
}
