//! The `merge` kind: models (+ a base) → one merged model folder, tensor by tensor, with
//! mergekit's methods and parameter names (see `ml::merge`). All inputs must share the
//! architecture and the tokenizer; a tensor whose shapes disagree is an error naming it.

use std::collections::HashMap;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{About, InputError, Kind, ParamError, Progress, Role, Roles, StageError, Task, invalid, typed};
use crate::ml::merge::{self, Method, Setting, Settings};
use crate::ml::model::Model;

pub struct Merge;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub method: Method,
    /// One weight per model of `models`; default 1 each.
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    /// Divide by the sum of weights; default: true for linear and ties, false otherwise.
    #[serde(default)]
    pub normalize: Option<bool>,
    /// slerp's interpolation factor (0 = base). This and `lambda`, `density` and `gamma` each
    /// take a number, a per-layer gradient or filtered rules (`ml::merge::Setting`).
    #[serde(default)]
    pub t: Option<Setting>,
    #[serde(default = "one")]
    pub lambda: Setting,
    #[serde(default = "one")]
    pub density: Setting,
    #[serde(default = "gamma")]
    pub gamma: Setting,
    /// DARE: scale kept entries by 1/density.
    #[serde(default = "yes")]
    pub rescale: bool,
    #[serde(default = "super::default_seed")]
    pub seed: u64,
}

fn one() -> Setting {
    Setting::Value(1.0)
}
fn gamma() -> Setting {
    Setting::Value(0.01)
}
fn yes() -> bool {
    true
}

const ROLES: &[Role] =
    &[Role { name: "models", list: true, required: true }, Role { name: "base", list: false, required: false }];

impl Kind for Merge {
    fn about(&self) -> &'static About {
        &About {
            name: "merge",
            version: 2,
            roles: Roles::Fixed(ROLES),
            device: true,
            defaults: &["seed"],
            outputs: super::MODEL,
        }
    }

    fn params(&self, with: &Map<String, Value>) -> Result<Value, ParamError> {
        let (mut p, _): (Params, Value) = typed(with)?;
        type Range<'a> = (&'a str, Option<&'a Setting>, fn(f64) -> bool, &'a str);
        let ranges: [Range; 4] = [
            ("t", p.t.as_ref(), |t| (0.0..=1.0).contains(&t), "must be in [0, 1]"),
            ("lambda", Some(&p.lambda), f64::is_finite, "must be finite"),
            ("density", Some(&p.density), |d| d > 0.0 && d <= 1.0, "must be in (0, 1]"),
            ("gamma", Some(&p.gamma), |g| (0.0..1.0).contains(&g), "must be in [0, 1)"),
        ];
        for (key, setting, ok, message) in ranges {
            if let Some(s) = setting {
                s.check().map_err(|e| invalid(key, e.to_string()))?;
                if !s.values().into_iter().all(ok) {
                    return Err(invalid(key, message));
                }
            }
        }
        if p.method == Method::Slerp && p.t.is_none() {
            return Err(invalid("t", "slerp needs `t` in [0, 1]"));
        }
        if p.weights.as_ref().is_some_and(|w| w.iter().any(|x| !x.is_finite())) {
            return Err(invalid("weights", "weights must be finite"));
        }
        p.normalize = Some(p.normalize.unwrap_or(p.method.normalizes_by_default()));
        Ok(serde_json::to_value(&p).expect("parameters serialise"))
    }

    fn run(&self, task: &Task, progress: &mut dyn FnMut(&Progress)) -> Result<(), StageError> {
        let p: Params = task.params()?;
        let device = task.open_device(progress)?;
        let dirs = task.inputs.get("models").cloned().unwrap_or_default();
        let base_dir = task.inputs.get("base").and_then(|b| b.first()).cloned();
        match (p.method, base_dir.is_some(), dirs.len()) {
            (Method::Slerp, true, 1) | (Method::Linear, _, 1..) => {}
            (Method::Slerp, _, _) => {
                return Err(InputError::Slerp.into());
            }
            (Method::ModelStock, true, 2..) => {}
            (Method::ModelStock, _, _) => {
                return Err(InputError::ModelStock.into());
            }
            (m, false, _) if m.needs_base() => {
                return Err(InputError::NeedsBase(format!("{m:?}")).into());
            }
            _ => {}
        }
        let weights = p.weights.clone().unwrap_or_else(|| vec![1.0; dirs.len()]);
        if weights.len() != dirs.len() {
            return Err(InputError::Weights { weights: weights.len(), items: dirs.len(), what: "models" }.into());
        }
        let tokenizer = fs_err::read(dirs[0].join("tokenizer.json"))?;
        for d in dirs.iter().chain(&base_dir) {
            if fs_err::read(d.join("tokenizer.json"))? != tokenizer {
                return Err(InputError::OtherTokenizer(d.clone()).into());
            }
        }
        let models: Vec<Model> = dirs.iter().map(|d| Model::load(d, &device)).collect::<Result<_, _>>()?;
        let base = base_dir.as_deref().map(|d| Model::load(d, &device)).transpose()?;
        let reference = base.as_ref().unwrap_or(&models[0]);
        let layers = reference.config.num_hidden_layers;
        let normalize = p.normalize.unwrap_or(p.method.normalizes_by_default());
        // The settings of one tensor, its gradients and filters resolved.
        let settings = |name: &str| -> Result<Settings, StageError> {
            let depth = merge::depth(name, layers);
            let at = |key: &str, s: &Setting| {
                s.at(name, depth).ok_or_else(|| InputError::NoRule { key: key.to_owned(), tensor: name.to_owned() })
            };
            Ok(Settings {
                method: p.method,
                weights: weights.clone(),
                normalize,
                t: p.t.as_ref().map(|t| at("t", t)).transpose()?.unwrap_or(0.5),
                lambda: at("lambda", &p.lambda)?,
                density: at("density", &p.density)?,
                gamma: at("gamma", &p.gamma)?,
                rescale: p.rescale,
                seed: p.seed,
            })
        };
        let shapes = reference.config.parameter_shapes();
        let tables: Vec<HashMap<String, candle_core::Var>> =
            models.iter().map(|m| m.params().into_iter().collect()).collect();
        let base_table: Option<HashMap<String, candle_core::Var>> =
            base.as_ref().map(|m| m.params().into_iter().collect());
        let mut merged = HashMap::new();
        for (i, (name, shape)) in shapes.iter().enumerate() {
            let flat = |table: &HashMap<String, candle_core::Var>| -> Result<Vec<f32>, StageError> {
                let t = table.get(name).ok_or_else(|| InputError::MissingTensor(name.clone()))?;
                if t.dims() != shape.as_slice() {
                    let (found, expected) = (t.dims().to_vec(), shape.clone());
                    return Err(InputError::Shape { tensor: name.clone(), found, expected }.into());
                }
                Ok(t.as_tensor().flatten_all()?.to_vec1::<f32>()?)
            };
            let inputs: Vec<Vec<f32>> = tables.iter().map(flat).collect::<Result<_, _>>()?;
            let base_flat = base_table.as_ref().map(flat).transpose()?;
            let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
            let out = merge::merge(&settings(name)?, &refs, base_flat.as_deref(), i as u64);
            merged.insert(name.clone(), Tensor::from_vec(out, shape.as_slice(), &device)?);
            progress(&Progress { step: i as u64 + 1, total: shapes.len() as u64, ..Default::default() });
        }
        Model::from_tensors(reference.config.clone(), merged, &device)?.save(&task.out)?;
        fs_err::write(task.out.join("tokenizer.json"), tokenizer)?;
        Ok(())
    }
}
