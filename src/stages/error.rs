//! Why a built-in stage run failed: [`StageError`], and [`InputError`] for inputs that do not
//! fit together (tokenizers, vocabularies, roles, files), each case named.

use std::path::PathBuf;

/// A failed built-in stage run; `flow run-stage` prints it to the stage's log and exits 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("the parameters in the task file do not fit the kind")]
    Params(#[source] serde_json::Error),
    #[error("kind `{0}` does not run in-process")]
    NotInProcess(&'static str),
    #[error(transparent)]
    Device(#[from] crate::ml::device::DeviceError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Tokenizer(#[from] crate::ml::tokenizer::TokenizerError),
    #[error(transparent)]
    Train(#[from] crate::ml::train::TrainError),
    #[error(transparent)]
    Grow(#[from] crate::ml::grow::GrowError),
    #[error(transparent)]
    Synth(#[from] crate::synth::SynthError),
}

/// Inputs of a stage that cannot be used together, or are not what the kind reads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("role `{0}` needs exactly one stage")]
    OneStage(String),
    #[error("the model and the data use different tokenizers")]
    DifferentTokenizers,
    #[error("`{}` uses a different tokenizer", .0.display())]
    OtherTokenizer(PathBuf),
    #[error("the data has a vocabulary of {data} but the model of {model}")]
    Vocabulary { data: usize, model: usize },
    #[error("seq_len {seq_len} exceeds the model's {positions} positions")]
    TooLong { seq_len: usize, positions: usize },
    #[error("the input model has no optimizer state (`optimizer.safetensors`)")]
    NoOptimizerState,
    #[error("`{}`: {error}", .path.display())]
    TrainerState { path: PathBuf, error: serde_json::Error },
    #[error(
        "stage `{stage}` would anneal from learning rate {start}, which is not above its final_lr {final_lr}, so it would not train: its input model ({input}) ended its run at that rate; set `start_lr` on `{stage}` (for example the input's peak rate), or lower `final_lr`"
    )]
    NothingToAnneal { stage: String, input: String, start: f64, final_lr: f64 },
    #[error("stage `{0}` left no metrics (`metrics.jsonl` or `metrics.json`) to compare")]
    NoMetrics(String),
    #[error("not every run has metric `{metric}`; those they all have: {}", .shared.join(", "))]
    NoMetric { metric: String, shared: Vec<String> },
    #[error("{0}")]
    Replay(&'static str),
    #[error("the replay data's train split has {tokens} tokens, fewer than one window of {window}")]
    ShortReplay { tokens: usize, window: usize },
    #[error("no training step ran")]
    NoSteps,
    #[error("a data stage needs `sources` stages or `inputs:` files")]
    NoSources,
    #[error("{weights} weights for {items} {what}")]
    Weights { weights: usize, items: usize, what: &'static str },
    #[error("no document fell into the val split; add documents or raise `val_fraction`")]
    NoValDocuments,
    #[error("give one tokenizer: a `tokenizer` stage or one `tokenizer.json` input")]
    Tokenizers,
    #[error("source {index} has weight {weight} but no train documents")]
    EmptySource { index: usize, weight: f64 },
    #[error("slerp needs a `base` and exactly one of `models`")]
    Slerp,
    #[error("model_stock needs a `base` and at least two `models`")]
    ModelStock,
    #[error("{0} merges task vectors and needs a `base`")]
    NeedsBase(String),
    #[error("no rule of `{key}` applies to tensor `{tensor}`; add one without a `filter`")]
    NoRule { key: String, tensor: String },
    #[error("a model lacks tensor `{0}`")]
    MissingTensor(String),
    #[error("tensor `{tensor}` has shape {found:?} in one model and {expected:?} in another")]
    Shape { tensor: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("an eval stage needs a `data` or a `tasks` role (or both)")]
    NothingToEvaluate,
    #[error("`{}` holds no tasks", .0.display())]
    NoTasks(PathBuf),
    #[error("the val split has {tokens} tokens, fewer than one window of {window}")]
    ShortVal { tokens: usize, window: usize },
    #[error("sft reads conversations from `.jsonl` files; `{}` is not one", .0.display())]
    NotJsonl(PathBuf),
    #[error("an sft stage needs a `data` stage or `.jsonl` files in `inputs:`")]
    NoConversations,
    #[error(
        "none of {conversations} conversations is left to train on ({untrainable} have no trainable token within seq_len {seq_len})"
    )]
    NothingToTrain { conversations: usize, untrainable: usize, seq_len: usize },
    #[error("`{}` line {line}: {problem}", .path.display())]
    Line { path: PathBuf, line: usize, problem: LineProblem },
    #[error("`{}` row {row}: {problem}", .path.display())]
    Row { path: PathBuf, row: usize, problem: LineProblem },
    #[error("`{}` is not a readable Parquet file: {message}", .path.display())]
    Parquet { path: PathBuf, message: String },
    #[error("`{}` has no column `{column}`; its columns: {}", .path.display(), .columns.join(", "))]
    NoColumn { path: PathBuf, column: String, columns: Vec<String> },
}

/// What is wrong with one line of a JSONL input.
#[derive(Debug, thiserror::Error)]
pub enum LineProblem {
    #[error("{0}")]
    Json(serde_json::Error),
    #[error("no string field `{0}`")]
    NoField(String),
    #[error(transparent)]
    Conversation(#[from] crate::ml::chat::ChatError),
    #[error("no assistant turn to compare with")]
    NoAnswer,
}

impl InputError {
    /// A problem with line `line` (0-based) of `path`.
    pub fn line(path: &std::path::Path, line: usize, problem: impl Into<LineProblem>) -> Self {
        InputError::Line { path: path.to_path_buf(), line: line + 1, problem: problem.into() }
    }
}

impl From<serde_json::Error> for LineProblem {
    fn from(e: serde_json::Error) -> Self {
        LineProblem::Json(e)
    }
}
