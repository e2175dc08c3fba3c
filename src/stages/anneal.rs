//! The `anneal` kind: the stage-2 "mid-training" recipe. Continues from a trained model and its
//! optimizer state on a new data mixture, decaying the learning rate from where the input run
//! ended (`start_lr`, default: the rate its schedule ended at) to `final_lr` (default 0) over its
//! budget, with no warmup — so the LR curve has no jump at the boundary (OLMo 2). An input whose
//! schedule decayed to `final_lr` or below leaves nothing to anneal: that is an error naming
//! `start_lr`, never a run at learning rate 0.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::training::{Common, ROLES, TRAINED, TrainerState, train_stage};
use super::{About, InputError, Kind, ParamError, Progress, Roles, StageError, Task, invalid, typed};
use crate::ml::schedule::{self, DecayShape, Schedule};

pub struct Anneal;

#[derive(Debug, Serialize, Deserialize)]
pub struct Params {
    #[serde(flatten)]
    pub common: Common,
    /// Default: the rate the input run's schedule ended at (`end_lr` in `trainer_state.json`).
    #[serde(default)]
    pub start_lr: Option<f64>,
    #[serde(default)]
    pub final_lr: f64,
    #[serde(default)]
    pub shape: DecayShape,
    /// Start from a fresh AdamW instead of the input's optimizer state.
    #[serde(default)]
    pub reset_optimizer: bool,
}

impl Kind for Anneal {
    fn about(&self) -> &'static About {
        &About {
            name: "anneal",
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
        if !(p.final_lr >= 0.0 && p.final_lr.is_finite()) {
            return Err(invalid("final_lr", "must be non-negative"));
        }
        if let Some(lr) = p.start_lr
            && !(lr > p.final_lr && lr.is_finite())
        {
            return Err(invalid("start_lr", format!("must be above final_lr ({})", p.final_lr)));
        }
        Ok(canonical)
    }

    fn run(&self, task: &Task, progress: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let p: Params = task.params()?;
        let start = match p.start_lr {
            Some(lr) => lr,
            None => {
                let path = task.input("model")?.join("trainer_state.json");
                let state: TrainerState = serde_json::from_slice(&fs_err::read(&path)?)
                    .map_err(|error| InputError::TrainerState { path: path.clone(), error })?;
                state.end_lr
            }
        };
        if start <= p.final_lr {
            return Err(InputError::NothingToAnneal {
                stage: task.stage.clone(),
                input: task.input_name("model"),
                start,
                final_lr: p.final_lr,
            }
            .into());
        }
        // A whole-run decay: WSD with every step in the decay phase.
        let decay = Schedule::Wsd { decay: 1.0, shape: p.shape, final_lr: p.final_lr };
        let steps = p.common.steps();
        let lr = |step: u64| schedule::lr(&decay, start, 0, steps, step);
        train_stage(task, &p.common, &lr, !p.reset_optimizer, progress)
    }
}
