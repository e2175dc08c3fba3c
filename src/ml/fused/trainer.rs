//! [`Fused`]: a training run's state on the fused path — flat f32 parameters, their gradients
//! and AdamW moments — with the conversions to and from the [`Model`] and [`AdamW`] that the
//! rest of flow (checkpoints, evaluation, saving) works with.
//!
//! The update repeats [`AdamW::step`] operation for operation in one pass over the flat
//! vectors, so both paths apply the same optimizer to the same gradients bit for bit; they
//! differ only in how the gradients are summed.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::net::{Batch, Net};
use crate::ml::model::Model;
use crate::ml::optim::{AdamW, AdamWConfig};
use crate::ml::train::Micro;

/// Elements per block of the gradient norm's sum (its order is fixed by these blocks).
const NORM_BLOCK: usize = 1 << 14;

/// A training run's parameters, gradients and optimizer state on the fused path.
pub struct Fused {
    net: Net<f32>,
    params: Vec<f32>,
    grads: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Whether each parameter (by layout index) is weight-decayed.
    decay: Vec<bool>,
    config: AdamWConfig,
    step: u64,
}

fn flat(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

impl Fused {
    /// Whether the fused path can train `model`: f32 on the CPU. Everything else (a GPU,
    /// half precision) takes candle's op-by-op path.
    pub fn supports(model: &Model) -> bool {
        matches!(model.device(), Device::Cpu) && model.compute() == DType::F32
    }

    /// Copies the parameters from `model` and the optimizer state from `opt`.
    pub fn new(model: &Model, opt: &AdamW) -> candle_core::Result<Self> {
        let net = Net::new(model.config.clone());
        let params = flat_params(model, &net)?;
        let state: HashMap<String, Tensor> = opt.state().into_iter().collect();
        let (mut m, mut v) = (Vec::with_capacity(params.len()), Vec::with_capacity(params.len()));
        for (name, _, _) in &net.layout.params {
            let missing = || candle_core::Error::msg(format!("the optimizer does not train `{name}`"));
            m.extend(flat(state.get(&format!("m.{name}")).ok_or_else(missing)?)?);
            v.extend(flat(state.get(&format!("v.{name}")).ok_or_else(missing)?)?);
        }
        let config = opt.config().clone();
        let decay = net.layout.params.iter().map(|(_, shape, _)| config.decay_all || shape.len() >= 2).collect();
        let grads = vec![0f32; params.len()];
        Ok(Self { net, params, grads, m, v, decay, config, step: opt.steps() })
    }

    /// Adds the gradient of `micro`'s share of the step's loss; returns that share.
    pub fn accumulate(&mut self, micro: &Micro, micro_batches: usize) -> candle_core::Result<f64> {
        let batch = batch(micro, micro_batches)?;
        Ok(self.net.run(&self.params, &batch, Some(&mut self.grads)))
    }

    /// Clips the accumulated gradient to global norm `clip`, applies one AdamW update at
    /// learning rate `lr` and clears the gradient; returns the norm before clipping.
    pub fn update(&mut self, clip: f64, lr: f64) -> f64 {
        let sum_sq: f64 = self
            .grads
            .par_chunks(NORM_BLOCK)
            .map(|c| c.iter().map(|&g| f64::from(g) * f64::from(g)).sum::<f64>())
            .collect::<Vec<_>>()
            .into_iter()
            .sum();
        let norm = sum_sq.sqrt();
        if norm > clip && norm.is_finite() {
            let scale = (clip / norm) as f32;
            self.grads.par_iter_mut().for_each(|g| *g = *g * scale + 0.0);
        }
        self.step += 1;
        let AdamWConfig { beta1, beta2, eps, weight_decay, .. } = self.config;
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        // As candle's affine ops round them: every scalar to f32, `x * a + b` in f32.
        let f = |x: f64| x as f32;
        let (b1, c1, b2, c2) = (f(beta1), f(1.0 - beta1), f(beta2), f(1.0 - beta2));
        let (sm, sv) = (f(1f64 / (1f64 - beta1.powi(t))), f(1f64 / (1f64 - beta2.powi(t))));
        let (keep, eps, lr32) = (f(1f64 - lr * weight_decay), f(eps), f(lr));
        for ((_, _, range), &decay) in self.net.layout.params.iter().zip(&self.decay) {
            let r = range.clone();
            self.params[r.clone()]
                .par_iter_mut()
                .zip(&mut self.m[r.clone()])
                .zip(&mut self.v[r.clone()])
                .zip(&mut self.grads[r])
                .for_each(|(((p, m), v), g)| {
                    let nm = (*m * b1 + 0.0) + (*g * c1 + 0.0);
                    let nv = (*v * b2 + 0.0) + ((*g * *g) * c2 + 0.0);
                    let m_hat = nm * sm + 0.0;
                    let v_hat = nv * sv + 0.0;
                    let decayed = if decay { *p * keep + 0.0 } else { *p };
                    let adjusted = m_hat / (v_hat.sqrt() * 1.0 + eps);
                    *p = decayed - (adjusted * lr32 + 0.0);
                    *m = nm;
                    *v = nv;
                    *g = 0.0;
                });
        }
        norm
    }

    /// Writes the parameters into `model`.
    pub fn sync_model(&self, model: &Model) -> candle_core::Result<()> {
        for (name, shape, range) in &self.net.layout.params {
            let t = Tensor::from_slice(&self.params[range.clone()], shape.as_slice(), model.device())?;
            model.param(name).set(&t)?;
        }
        Ok(())
    }

    /// Writes the moments and the step count into `opt`.
    pub fn sync_optimizer(&self, opt: &mut AdamW) -> candle_core::Result<()> {
        let mut state = HashMap::new();
        for (name, shape, range) in &self.net.layout.params {
            state.insert(
                format!("m.{name}"),
                Tensor::from_slice(&self.m[range.clone()], shape.as_slice(), &Device::Cpu)?,
            );
            state.insert(
                format!("v.{name}"),
                Tensor::from_slice(&self.v[range.clone()], shape.as_slice(), &Device::Cpu)?,
            );
        }
        let step = i64::try_from(self.step).unwrap_or(i64::MAX);
        state.insert("step".to_owned(), Tensor::new(step, &Device::Cpu)?);
        opt.restore(state, "the fused trainer's state")
    }
}

/// The fused forward pass alone: evaluation losses with the training path's summation order,
/// so they too are the same on every x86-64 CPU.
pub struct Forward {
    net: Net<f32>,
    params: Vec<f32>,
}

impl Forward {
    /// Copies `model`'s parameters, where the fused path supports it ([`Fused::supports`]).
    pub fn of(model: &Model) -> candle_core::Result<Option<Self>> {
        if !Fused::supports(model) {
            return Ok(None);
        }
        let net = Net::new(model.config.clone());
        let params = flat_params(model, &net)?;
        Ok(Some(Self { net, params }))
    }

    /// `micro`'s loss: `Σ weight · cross-entropy`, the plain mean where it has no weights.
    pub fn loss(&mut self, micro: &Micro) -> candle_core::Result<f64> {
        Ok(self.net.run(&self.params, &batch(micro, 1)?, None))
    }
}

/// `model`'s parameters, flattened in the order of `net`'s layout.
fn flat_params(model: &Model, net: &Net<f32>) -> candle_core::Result<Vec<f32>> {
    let mut params = Vec::with_capacity(net.layout.len);
    for (name, _, _) in &net.layout.params {
        params.extend(flat(model.param(name).as_tensor())?);
    }
    Ok(params)
}

/// `micro` as the fused path reads it: token vectors, per-position loss weights, positions,
/// and the range of keys each query sees (from the mask, which must be block-causal).
fn batch(micro: &Micro, micro_batches: usize) -> candle_core::Result<Batch<f32>> {
    let (b, t) = micro.inputs.dims2()?;
    let n = b * t;
    let tokens = micro.inputs.flatten_all()?.to_vec1::<u32>()?;
    let targets = micro.targets.flatten_all()?.to_vec1::<u32>()?;
    let weights = match &micro.weights {
        Some(w) => flat(w)?,
        None => vec![(1.0 / (n as f64 * micro_batches as f64)) as f32; n],
    };
    let positions = match &micro.positions {
        Some(p) => p.flatten_all()?.to_vec1::<u32>()?,
        None => (0..n).map(|i| (i % t) as u32).collect(),
    };
    let lo = match &micro.mask {
        Some(mask) => ranges(&flat(mask)?, b, t)?,
        None => vec![0; n],
    };
    Ok(Batch { batch: b, seq: t, tokens, targets, weights, positions, lo })
}

/// The first visible key of every query of a `[batch, 1, seq, seq]` additive mask, which must
/// let each query see exactly a contiguous run of keys ending at itself.
fn ranges(mask: &[f32], b: usize, t: usize) -> candle_core::Result<Vec<u32>> {
    let mut lo = Vec::with_capacity(b * t);
    for (r, row) in mask.chunks_exact(t).enumerate() {
        let i = r % t;
        let start = row[..=i].iter().position(|&m| m == 0.0).unwrap_or(i);
        let causal = row[start..=i].iter().all(|&m| m == 0.0)
            && row[..start].iter().chain(&row[i + 1..]).all(|&m| m == f32::NEG_INFINITY);
        if !causal {
            candle_core::bail!("row {i} of an attention mask is not a causal run of keys");
        }
        lo.push(start as u32);
    }
    Ok(lo)
}
