//! The `pretrain` kind: model + data → trained model folder with optimizer state
//! (`optimizer.safetensors`), `trainer_state.json` and `metrics.jsonl` (step, tokens, loss,
//! lr, grad norm, periodic val loss). Interrupted runs resume from the last checkpoint in the
//! run's scratch directory and finish byte-identical to an uninterrupted run.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::training::{Common, ROLES, Rate, TRAINED, train_stage};
use super::{About, Kind, ParamError, Progress, Roles, StageError, Task, typed};

pub struct Pretrain;

#[derive(Debug, Serialize, Deserialize)]
pub struct Params {
    #[serde(flatten)]
    pub common: Common,
    #[serde(flatten)]
    pub rate: Rate,
    /// Continue from the input model's optimizer state instead of a fresh AdamW.
    #[serde(default)]
    pub resume_optimizer: bool,
}

impl Kind for Pretrain {
    fn about(&self) -> &'static About {
        &About {
            name: "pretrain",
            version: 3,
            roles: Roles::Fixed(ROLES),
            device: true,
            defaults: &["seed"],
            outputs: TRAINED,
        }
    }

    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError> {
        let (p, canonical): (Params, Value) = typed(with)?;
        p.common.check()?;
        p.rate.check(p.common.steps())?;
        Ok(canonical)
    }

    fn run(&self, task: &Task, progress: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let p: Params = task.params()?;
        let steps = p.common.steps();
        let lr = |step: u64| p.rate.at(step, steps);
        train_stage(task, &p.common, &lr, p.resume_optimizer, progress)
    }
}
