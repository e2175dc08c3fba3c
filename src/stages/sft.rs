//! The `sft` kind: model + conversations → fine-tuned model folder (with optimizer state,
//! `trainer_state.json`, `metrics.jsonl`) and `sft_data.json`, the account of what the data
//! held: conversations used, held out, truncated (and the trainable tokens that cut), and those
//! left with no trainable token — reported and skipped, never trained on silently.
//!
//! Conversations are JSONL (`messages` or `prompt`/`response`, see `ml::chat`) from the `data`
//! stage's `file` and/or the stage's own `inputs:`. The loss is masked cross-entropy over the
//! tokens `loss_on` names, normalised per trainable token over each whole optimizer step.
//! Rows are packed (block-diagonal attention, positions restarting per sample) or one sample
//! each, right-padded. With `replay`, a fixed share of the rows are plain-text windows of the
//! `replay` data stage (loss on every token), so fine-tuning forgets less; the `val` stages'
//! text is evaluated alongside, to show how much it forgets. The optimizer, schedules,
//! checkpoints and resume are pretrain's.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::training::{
    Optim, Rate, TRAINED, VAL_ROLE, check_positions, optimizer, same_tokenizer, sampling_seed, train_loop, val_sets,
    write_outputs,
};
use super::{About, InputError, Kind, ParamError, Progress, Role, Roles, StageError, Task, invalid, typed};
use crate::ml::chat::{self, ChatBatches, Conversation, Encoded, LossOn, Replay};
use crate::ml::model::Model;
use crate::ml::shards::Index;
use crate::ml::tokenizer::Tokenizer;

pub struct Sft;

#[derive(Debug, Serialize, Deserialize)]
pub struct Params {
    pub steps: u64,
    #[serde(flatten)]
    pub optim: Optim,
    #[serde(flatten)]
    pub rate: Rate,
    /// Pack several conversations into each row (else one a row, right-padded).
    #[serde(default = "yes")]
    pub packing: bool,
    #[serde(default)]
    pub loss_on: LossOn,
    /// Share of conversations held out for the validation loss (by a hash of their content).
    #[serde(default = "val_fraction")]
    pub val_fraction: f64,
    /// The file of the `data` stage's artifact to train on.
    #[serde(default = "file")]
    pub file: String,
    /// Continue from the input model's optimizer state instead of a fresh AdamW.
    #[serde(default)]
    pub resume_optimizer: bool,
    /// The share of rows that are windows of the `replay` data stage's train split, trained on
    /// every token.
    #[serde(default)]
    pub replay: f64,
    /// Windows of each `val` stage's text evaluated every `eval_every` steps.
    #[serde(default = "super::training::eval_windows")]
    pub eval_windows: usize,
}

fn yes() -> bool {
    true
}
fn val_fraction() -> f64 {
    0.05
}
fn file() -> String {
    "train.jsonl".into()
}

const ROLES: &[Role] = &[
    Role { name: "model", list: false, required: true },
    Role { name: "data", list: false, required: false },
    VAL_ROLE,
    Role { name: "replay", list: false, required: false },
];

/// `sft_data.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DataReport {
    pub conversations: usize,
    pub train_conversations: usize,
    pub val_conversations: usize,
    /// Conversations longer than `seq_len + 1` tokens, cut to their start.
    pub truncated: usize,
    /// Trainable tokens the truncation cut off.
    pub trainable_tokens_dropped: usize,
    /// Conversations with no trainable token (after truncation): skipped.
    pub no_trainable_tokens: usize,
    /// Where the first few of those are (`file:line`).
    pub no_trainable_examples: Vec<String>,
    pub train_tokens: usize,
    pub trainable_tokens: usize,
    pub rows_per_epoch: usize,
    /// Passes over the train conversations the run makes.
    pub epochs: f64,
    /// Rows of replayed plain text over the run (`replay` of all rows).
    pub replay_rows: usize,
}

impl Kind for Sft {
    fn about(&self) -> &'static About {
        &About {
            name: "sft",
            version: 3,
            roles: Roles::Fixed(ROLES),
            device: true,
            defaults: &["seed"],
            outputs: TRAINED,
        }
    }

    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError> {
        let (p, canonical): (Params, Value) = typed(with)?;
        p.optim.check()?;
        if p.steps == 0 {
            return Err(invalid("steps", "must be positive"));
        }
        p.rate.check(p.steps)?;
        if !(0.0..1.0).contains(&p.val_fraction) {
            return Err(invalid("val_fraction", "must be in [0, 1)"));
        }
        if !(0.0..1.0).contains(&p.replay) {
            return Err(invalid("replay", "must be a share of the rows in [0, 1)"));
        }
        if p.eval_windows == 0 {
            return Err(invalid("eval_windows", "must be positive"));
        }
        Ok(canonical)
    }

    fn run(&self, task: &Task, progress: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let p: Params = task.params()?;
        let o = &p.optim;
        let model_dir = task.input("model")?;
        let mut files: Vec<PathBuf> = Vec::new();
        if task.inputs.contains_key("data") {
            let dir = task.input("data")?;
            if dir.join("tokenizer.json").exists() {
                same_tokenizer(model_dir, dir)?;
            }
            files.push(dir.join(&p.file));
        }
        if let Some(other) = task.files.iter().find(|f| f.extension().is_none_or(|e| e != "jsonl")) {
            return Err(InputError::NotJsonl(other.clone()).into());
        }
        files.extend(task.files.iter().cloned());
        if files.is_empty() {
            return Err(InputError::NoConversations.into());
        }
        let device = task.open_device(progress)?;
        let mut model = Model::load(model_dir, &device)?;
        model.set_compute(o.precision.dtype());
        check_positions(&model, o.seq_len)?;
        let tokenizer = Tokenizer::load(&model_dir.join("tokenizer.json"))?;
        let (train, val, mut report) = prepare(&files, &tokenizer, &p)?;
        let seed = sampling_seed(o.seed, model_dir)?;
        let mut batches = ChatBatches::new(train, val, o.batch, o.accumulate, o.seq_len, p.packing, seed)?;
        batches.named = val_sets(task, model_dir, None, o, p.eval_windows)?;
        batches.replay = replay(task, model_dir, &p, seed)?;
        let rows = p.steps as usize * o.batch * o.accumulate;
        report.replay_rows = batches.replay.as_ref().map_or(0, |r| r.before(rows));
        report.rows_per_epoch = batches.rows_per_epoch();
        report.epochs = (rows - report.replay_rows) as f64 / report.rows_per_epoch as f64;
        let mut opt = optimizer(&model, model_dir, o, p.resume_optimizer)?;
        let lr = |step: u64| p.rate.at(step, p.steps);
        let rows = train_loop(&model, &mut opt, &o.loop_for(p.steps), &lr, &mut batches, task, progress)?;
        write_outputs(&task.out, model_dir, &model, &opt, &rows, lr(p.steps))?;
        let mut json = serde_json::to_vec_pretty(&report).expect("reports serialise");
        json.push(b'\n');
        fs_err::write(task.out.join("sft_data.json"), json)?;
        Ok(())
    }
}

/// The replay text: the train split of the `replay` data stage, when `replay` is above 0. A
/// `replay` stage with `replay: 0` trains on no replay rows, so that 0 can be the baseline of a
/// sweep over the ratio.
fn replay(task: &Task, model_dir: &std::path::Path, p: &Params, seed: u64) -> Result<Option<Replay>, StageError> {
    match (task.inputs.contains_key("replay"), p.replay > 0.0) {
        (_, false) => Ok(None),
        (false, true) => Err(InputError::Replay("`replay` is above 0 but no `replay` data stage is named").into()),
        (true, true) => {
            let dir = task.input("replay")?;
            same_tokenizer(model_dir, dir)?;
            let index = Index::load(dir)?;
            let tokens = index.tokens(dir, &index.train)?;
            if tokens.len() < p.optim.seq_len + 1 {
                return Err(InputError::ShortReplay { tokens: tokens.len(), window: p.optim.seq_len + 1 }.into());
            }
            Ok(Some(Replay { tokens, ratio: p.replay, seed }))
        }
    }
}

/// Reads, encodes, truncates and splits the conversations of `files`.
fn prepare(
    files: &[PathBuf],
    tokenizer: &Tokenizer,
    p: &Params,
) -> Result<(Vec<Encoded>, Vec<Encoded>, DataReport), StageError> {
    let mut report = DataReport::default();
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for path in files {
        let text = fs_err::read_to_string(path)?;
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).map_err(|e| InputError::line(path, n, e))?;
            let conv = Conversation::from_value(&v).map_err(|e| InputError::line(path, n, e))?;
            report.conversations += 1;
            let mut e = chat::encode(tokenizer, &conv, p.loss_on)?;
            if let Some(dropped) = e.truncate(p.optim.seq_len + 1) {
                report.truncated += 1;
                report.trainable_tokens_dropped += dropped;
            }
            if e.trainable() == 0 {
                report.no_trainable_tokens += 1;
                if report.no_trainable_examples.len() < 10 {
                    report.no_trainable_examples.push(format!("{name}:{}", n + 1));
                }
                continue;
            }
            if super::data::is_val(p.optim.seed, &conv.render(), p.val_fraction) {
                val.push(e);
            } else {
                report.train_tokens += e.tokens.len();
                report.trainable_tokens += e.trainable();
                train.push(e);
            }
        }
    }
    report.train_conversations = train.len();
    report.val_conversations = val.len();
    if train.is_empty() {
        return Err(InputError::NothingToTrain {
            conversations: report.conversations,
            untrainable: report.no_trainable_tokens,
            seq_len: p.optim.seq_len,
        }
        .into());
    }
    Ok((train, val, report))
}
