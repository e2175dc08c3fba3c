//! The `grow` kind: model → a larger model folder (ordinary `config.json` +
//! `model.safetensors` + `tokenizer.json`), by depth (`stack` or `zero`) and/or width
//! (`hidden`, with heads growing to keep the head dimension, and `ffn`), as `ml::grow`
//! describes. The grown model carries no optimizer state: training continues with a fresh
//! AdamW, the G_stack recipe.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{About, Kind, ParamError, Progress, Role, Roles, StageError, Task, typed};
use crate::ml::grow::{self, Depth, Flat, Placement, Plan, Widen};
use crate::ml::model::Model;

pub struct Grow;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Depth growth: `stack` (G_stack) or `zero` (function-preserving new blocks).
    #[serde(default = "zero")]
    pub method: Depth,
    /// Target layers; default: unchanged.
    #[serde(default)]
    pub layers: Option<usize>,
    /// Where `zero` puts new blocks.
    #[serde(default = "end")]
    pub position: Placement,
    /// Target hidden size; default: unchanged.
    #[serde(default)]
    pub hidden: Option<usize>,
    /// Target FFN width; default: unchanged.
    #[serde(default)]
    pub ffn: Option<usize>,
    /// How new FFN neurons start: `zero` or Net2Net `split`.
    #[serde(default = "zero_widen")]
    pub ffn_method: Widen,
    #[serde(default = "super::default_seed")]
    pub seed: u64,
}

fn zero() -> Depth {
    Depth::Zero
}
fn end() -> Placement {
    Placement::End
}
fn zero_widen() -> Widen {
    Widen::Zero
}

const ROLES: &[Role] = &[Role { name: "model", list: false, required: true }];

impl Kind for Grow {
    fn about(&self) -> &'static About {
        &About {
            name: "grow",
            version: 2,
            roles: Roles::Fixed(ROLES),
            device: true,
            defaults: &["seed"],
            outputs: super::MODEL,
        }
    }

    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError> {
        Ok(typed::<Params>(with)?.1)
    }

    fn run(&self, task: &Task, progress: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let p: Params = task.params()?;
        let dir = task.input("model")?;
        let device = task.open_device(progress)?;
        let model = Model::load(dir, &device)?;
        let c = &model.config;
        let plan = Plan {
            layers: p.layers.unwrap_or(c.num_hidden_layers),
            depth: p.method,
            placement: p.position,
            hidden: p.hidden.unwrap_or(c.hidden_size),
            ffn: p.ffn.unwrap_or(c.intermediate_size),
            widen: p.ffn_method,
            seed: p.seed,
        };
        let target = grow::target(c, &plan)?;
        let mut src = std::collections::HashMap::new();
        for (name, var) in model.params() {
            let flat: Flat = (var.as_tensor().flatten_all()?.to_vec1::<f32>()?, var.dims().to_vec());
            src.insert(name, flat);
        }
        let grown = grow::grow(c, &target, &plan, &src)?;
        let tensors = grown
            .into_iter()
            .map(|(k, (data, shape))| Ok((k, Tensor::from_vec(data, shape, &device)?)))
            .collect::<Result<_, StageError>>()?;
        Model::from_tensors(target, tensors, &device)?.save(&task.out)?;
        fs_err::copy(dir.join("tokenizer.json"), task.out.join("tokenizer.json"))?;
        Ok(())
    }
}
