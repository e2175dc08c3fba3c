//! The optimizer used by the training stages: AdamW with inspectable, checkpointable state, and
//! global gradient-norm clipping.
//!
//! candle-nn ships an `AdamW`, but its moments and step counter are private, so a run resumed from a
//! checkpoint would restart with zeroed moments and bias correction. It also decays every parameter,
//! whereas the usual LLM recipe (nanoGPT, OLMo) exempts norms and biases. The update arithmetic
//! below deliberately repeats candle-nn 0.11's op for op, so that with `decay_all` and f32
//! parameters both optimizers produce bit-identical weights.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var, bail};

/// Hyper-parameters of [`AdamW`]; the learning rate is passed to every [`AdamW::step`] instead,
/// because it comes from a schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Decay every parameter (candle's behaviour) instead of only those with rank >= 2.
    pub decay_all: bool,
}

impl Default for AdamWConfig {
    /// nanoGPT's settings.
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, decay_all: false }
    }
}

/// One parameter and its moments. The moments are f32 whatever the parameter's dtype, so that
/// half-precision parameters do not also lose their optimizer state to rounding.
#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// AdamW with decoupled weight decay and bias-corrected moments.
#[derive(Debug)]
pub struct AdamW {
    slots: Vec<Slot>,
    config: AdamWConfig,
    step: u64,
}

impl AdamW {
    /// Parameters are sorted by name so that state files and any iteration order are independent
    /// of how the caller collected them (typically from a `HashMap`). Names must be unique and
    /// dtypes f32, f16 or bf16 (an f64 parameter would be silently rounded through f32 state).
    pub fn new(mut params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = params.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            bail!("AdamW: parameter name {:?} appears twice", pair[0].0);
        }
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                if !matches!(var.dtype(), DType::F32 | DType::F16 | DType::BF16) {
                    bail!("AdamW: parameter {name:?} has unsupported dtype {:?}", var.dtype());
                }
                let m = Tensor::zeros(var.shape(), DType::F32, var.device())?;
                let v = m.zeros_like()?;
                Ok(Slot { name, var, m, v })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { slots, config, step: 0 })
    }

    /// Applies one update with learning rate `lr`. A parameter without a gradient in `grads` is
    /// left untouched, moments and weight decay included, as candle-nn does; the step counter
    /// used for bias correction still advances.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let AdamWConfig { beta1, beta2, eps, weight_decay, decay_all } = self.config;
        // candle-nn passes the step to `powi` as an i32; so do we, to stay bit-identical. Past
        // i32::MAX both corrections are 1 anyway.
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        let scale_m = 1f64 / (1f64 - beta1.powi(t));
        let scale_v = 1f64 / (1f64 - beta2.powi(t));
        for slot in &mut self.slots {
            let Some(g) = grads.get(&slot.var) else { continue };
            let g = g.to_dtype(DType::F32)?;
            let theta = slot.var.as_tensor().to_dtype(DType::F32)?;
            let next_m = ((&slot.m * beta1)? + (&g * (1.0 - beta1))?)?;
            let next_v = ((&slot.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let decayed = if decay_all || slot.var.rank() >= 2 { (theta * (1f64 - lr * weight_decay))? } else { theta };
            let adjusted = (m_hat / (v_hat.sqrt()? + eps)?)?;
            let next_theta = (decayed - (adjusted * lr)?)?;
            slot.var.set(&next_theta.to_dtype(slot.var.dtype())?)?;
            slot.m = next_m;
            slot.v = next_v;
        }
        Ok(())
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Number of [`AdamW::step`] calls so far, including those restored by [`AdamW::load`].
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The optimizer state as named tensors: `m.<param>` and `v.<param>` (f32, the parameter's
    /// shape) for every parameter, sorted by parameter name, then `step` (an i64 scalar, which
    /// holds any realistic step count exactly).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let moments = self.slots.iter().flat_map(|slot| {
            [(format!("m.{}", slot.name), slot.m.clone()), (format!("v.{}", slot.name), slot.v.clone())]
        });
        moments.chain(std::iter::once(("step".to_owned(), self.step_tensor()))).collect()
    }

    fn step_tensor(&self) -> Tensor {
        // 2^63 steps will not happen; saturating keeps `state` infallible.
        let step = i64::try_from(self.step).unwrap_or(i64::MAX);
        Tensor::new(step, &Device::Cpu).expect("a CPU scalar tensor cannot fail to allocate")
    }

    /// Writes [`AdamW::state`] as a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let state: HashMap<String, Tensor> = self.state().into_iter().collect();
        candle_core::safetensors::save(&state, path)
    }

    /// Restores state written by [`AdamW::save`] for the same parameter set. Strict, because a
    /// silently zeroed moment would only show up as a loss spike: every `m.`/`v.` tensor must be
    /// present with the parameter's shape and dtype f32, `step` must be a non-negative i64
    /// scalar, and nothing else may be in the file. Nothing is modified unless all checks pass.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        self.restore(tensors, &path.display().to_string())
    }

    /// Restores [`AdamW::state`] from named tensors, with the checks of [`AdamW::load`]; `at`
    /// names their source in errors.
    pub fn restore(&mut self, mut tensors: HashMap<String, Tensor>, at: &str) -> Result<()> {
        let Some(step) = tensors.remove("step") else {
            bail!("optimizer state {at}: missing tensor \"step\"");
        };
        if step.dtype() != DType::I64 || step.rank() != 0 {
            bail!(
                "optimizer state {at}: tensor \"step\" must be an i64 scalar, found {:?} {:?}",
                step.dtype(),
                step.shape()
            );
        }
        let Ok(step) = u64::try_from(step.to_scalar::<i64>()?) else {
            bail!("optimizer state {at}: tensor \"step\" is negative");
        };
        let mut moments = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let mut take = |key: String| -> Result<Tensor> {
                let Some(tensor) = tensors.remove(&key) else {
                    bail!("optimizer state {at}: missing tensor {key:?}");
                };
                if tensor.dtype() != DType::F32 || tensor.shape() != slot.var.shape() {
                    bail!(
                        "optimizer state {at}: tensor {key:?} is {:?} {:?}, expected F32 {:?}",
                        tensor.dtype(),
                        tensor.shape(),
                        slot.var.shape()
                    );
                }
                tensor.to_device(slot.var.device())
            };
            let m = take(format!("m.{}", slot.name))?;
            let v = take(format!("v.{}", slot.name))?;
            moments.push((m, v));
        }
        if let Some(extra) = tensors.keys().min() {
            bail!("optimizer state {at}: unexpected tensor {extra:?}");
        }
        for (slot, (m, v)) in self.slots.iter_mut().zip(moments) {
            slot.m = m;
            slot.v = v;
        }
        self.step = step;
        Ok(())
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm`; returns the norm before
/// clipping. No-op (bit-identical grads) when below.
///
/// Only the gradients of `params` count: a `GradStore` from `backward` holds a gradient for every
/// variable the loss depends on, which may include ones this optimizer does not train. Each
/// tensor's sum of squares is reduced in f32 on its device and the sums are combined in f64. A
/// non-finite norm leaves the gradients untouched (scaling by
/// `max_norm / inf` would turn them into zeros and NaNs); the caller sees it in the return value
/// and should skip the step.
pub fn clip_grad_norm(params: &[(String, Var)], grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    // A parameter listed twice would otherwise be counted, and scaled, twice.
    let mut seen = HashSet::new();
    let vars: Vec<&Var> = params.iter().map(|(_, var)| var).filter(|var| seen.insert(var.id())).collect();
    let mut sum_sq = 0f64;
    for var in &vars {
        if let Some(g) = grads.get(var) {
            sum_sq += f64::from(g.to_dtype(DType::F32)?.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
    }
    let norm = sum_sq.sqrt();
    if norm > max_norm && norm.is_finite() {
        let scale = max_norm / norm;
        for var in vars {
            if let Some(g) = grads.remove(var) {
                grads.insert(var, (g * scale)?);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests;
