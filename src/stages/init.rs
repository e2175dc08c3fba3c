//! The `init` kind: a freshly initialised, seeded Llama-style model folder (`config.json`,
//! `model.safetensors`, `tokenizer.json`) sized by its parameters and the tokenizer it needs.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{About, Kind, ParamError, Progress, Role, Roles, StageError, Task, invalid, typed};
use crate::ml::model::{Config, Model};
use crate::ml::tokenizer::{EOT, Tokenizer};

pub struct Init;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    /// Key/value heads (grouped-query attention); default: `heads`.
    #[serde(default)]
    pub kv_heads: Option<usize>,
    /// SwiGLU width; default: 8/3 × hidden rounded up to a multiple of 32.
    #[serde(default)]
    pub ffn: Option<usize>,
    #[serde(default = "yes")]
    pub tie_embeddings: bool,
    #[serde(default = "rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "max_positions")]
    pub max_positions: usize,
    #[serde(default = "norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "super::default_seed")]
    pub seed: u64,
}

fn yes() -> bool {
    true
}
fn rope_theta() -> f64 {
    10_000.0
}
fn max_positions() -> usize {
    2048
}
fn norm_eps() -> f64 {
    1e-5
}

const ROLES: &[Role] = &[Role { name: "tokenizer", list: false, required: true }];

impl Params {
    /// The model config for a vocabulary of `vocab_size`.
    pub fn config(&self, vocab_size: usize) -> Config {
        let ffn = self.ffn.unwrap_or_else(|| (self.hidden * 8 / 3).div_ceil(32) * 32);
        Config {
            architectures: vec!["LlamaForCausalLM".into()],
            model_type: "llama".into(),
            vocab_size,
            hidden_size: self.hidden,
            intermediate_size: ffn,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: self.kv_heads.unwrap_or(self.heads),
            rms_norm_eps: self.norm_eps,
            rope_theta: self.rope_theta,
            max_position_embeddings: self.max_positions,
            tie_word_embeddings: self.tie_embeddings,
            bos_token_id: Some(EOT),
            eos_token_id: Some(EOT),
            hidden_act: "silu".into(),
            torch_dtype: "float32".into(),
        }
    }
}

impl Kind for Init {
    fn about(&self) -> &'static About {
        &About {
            name: "init",
            version: 1,
            roles: Roles::Fixed(ROLES),
            device: true,
            defaults: &["seed"],
            outputs: super::MODEL,
        }
    }

    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError> {
        let (mut p, _): (Params, Value) = typed(with)?;
        // The vocabulary is not known yet; any valid size checks the shapes.
        let config = p.config(512);
        config.validate().map_err(|e| invalid("hidden", e.to_string()))?;
        // Resolve derived defaults, so writing them out does not change the fingerprint.
        p.kv_heads = Some(config.num_key_value_heads);
        p.ffn = Some(config.intermediate_size);
        Ok(serde_json::to_value(&p).expect("parameters serialise"))
    }

    fn run(&self, task: &Task, progress: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let p: Params = task.params()?;
        let tokenizer_path = task.input("tokenizer")?.join("tokenizer.json");
        let tokenizer = Tokenizer::load(&tokenizer_path)?;
        let device = task.open_device(progress)?;
        let model = Model::init(p.config(tokenizer.vocab_size()), p.seed, &device)?;
        model.save(&task.out)?;
        fs_err::copy(&tokenizer_path, task.out.join("tokenizer.json"))?;
        Ok(())
    }
}
