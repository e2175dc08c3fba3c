//! Fused CPU kernels with their backward passes, for the elementwise-heavy parts of a training
//! step: RMSNorm, the attention softmax and the cross-entropy over the vocabulary. Built from
//! elementary candle ops these take several full passes (and allocations) over the largest
//! tensors of the step each way; here each direction is one pass per row, parallel over rows.
//!
//! They are candle `CustomOp`s *with* `bwd`, unlike candle-nn's fused softmax (whose missing
//! backward silently stops learning: docs/architecture.md#the-model-on-candle). The gradient tests in `model` and here
//! check them against the elementary-op versions, which are what runs where the kernels do not:
//! on a GPU (candle has CUDA kernels for every elementary op, and their backward passes) and on
//! half-precision tensors.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The float types the kernels run on: f32 for training, f64 for gradient checks.
trait Float: Copy + Send + Sync + PartialOrd + 'static {
    fn exp(self) -> Self;
    fn to_f64(self) -> f64;
    fn from_f64(x: f64) -> Self;
}

impl Float for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Float for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

fn slice<'a, T: candle_core::WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let (start, end) =
        l.contiguous_offsets().ok_or_else(|| candle_core::Error::msg("fused op needs a contiguous input"))?;
    Ok(&s.as_slice::<T>()?[start..end])
}

fn row_len(l: &Layout) -> Result<usize> {
    l.dims()
        .last()
        .copied()
        .filter(|d| *d > 0)
        .ok_or_else(|| candle_core::Error::msg("fused op needs a non-empty last dim"))
}

fn softmax_rows<T: Float>(x: &[T], d: usize) -> Vec<T> {
    let mut y = vec![T::from_f64(0.0); x.len()];
    y.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(y, x)| {
        let max = x.iter().copied().fold(T::from_f64(f64::NEG_INFINITY), |m, v| if v > m { v } else { m });
        let mut sum = 0.0f64;
        for (o, &v) in y.iter_mut().zip(x) {
            let e = T::from_f64(v.to_f64() - max.to_f64()).exp();
            sum += e.to_f64();
            *o = e;
        }
        let inv = 1.0 / sum;
        for o in y.iter_mut() {
            *o = T::from_f64(o.to_f64() * inv);
        }
    });
    y
}

struct Softmax;

/// Runs `$body` on the slices of two inputs of one dtype, f32 or f64 (each arm instantiates the
/// generic kernel for its type); other dtypes are an error naming the op.
macro_rules! on_two {
    ($name:literal, ($s1:expr, $l1:expr), ($s2:expr, $l2:expr), |$a:ident, $b:ident| $body:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let ($a, $b) = (slice::<f32>($s1, $l1)?, slice::<f32>($s2, $l2)?);
                CpuStorage::F32($body)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let ($a, $b) = (slice::<f64>($s1, $l1)?, slice::<f64>($s2, $l2)?);
                CpuStorage::F64($body)
            }
            _ => candle_core::bail!(concat!($name, " supports f32 and f64")),
        }
    };
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "flow-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = row_len(l)?;
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(softmax_rows(slice::<f32>(s, l)?, d)),
            CpuStorage::F64(_) => CpuStorage::F64(softmax_rows(slice::<f64>(s, l)?, d)),
            _ => candle_core::bail!("flow-softmax supports f32 and f64"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?))
    }
}

/// dx = y ⊙ (dy − Σ dy ⊙ y), per row.
struct SoftmaxGrad;

fn softmax_grad_rows<T: Float>(y: &[T], dy: &[T], d: usize) -> Vec<T> {
    let mut dx = vec![T::from_f64(0.0); y.len()];
    dx.par_chunks_mut(d).zip(y.par_chunks(d).zip(dy.par_chunks(d))).for_each(|(dx, (y, dy))| {
        let dot: f64 = y.iter().zip(dy).map(|(a, b)| a.to_f64() * b.to_f64()).sum();
        for ((o, &a), &b) in dx.iter_mut().zip(y).zip(dy) {
            *o = T::from_f64(a.to_f64() * (b.to_f64() - dot));
        }
    });
    dx
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "flow-softmax-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = row_len(l1)?;
        let out = on_two!("flow-softmax-grad", (s1, l1), (s2, l2), |a, b| softmax_grad_rows(a, b, d));
        Ok((out, l1.shape().clone()))
    }
}

/// Whether the fused CPU kernels take `x`: f32 or f64 on the CPU.
fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// Softmax over the last dimension, with a backward pass.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if !fused(x) {
        // In f32 whatever the input: half-precision sums over a row lose the small terms.
        return candle_nn::ops::softmax(&x.to_dtype(DType::F32)?, D::Minus1)?.to_dtype(x.dtype());
    }
    x.contiguous()?.apply_op1(Softmax)
}

/// Per-row cross-entropy `logsumexp(x) − x[target]` of `[n, v]` logits and `[n]` u32 targets.
struct CrossEntropy;

fn lse<T: Float>(x: &[T]) -> f64 {
    let max = x.iter().map(|v| v.to_f64()).fold(f64::NEG_INFINITY, f64::max);
    max + x.iter().map(|v| (T::from_f64(v.to_f64() - max)).exp().to_f64()).sum::<f64>().ln()
}

fn ce_rows<T: Float>(x: &[T], t: &[u32], v: usize) -> Result<Vec<T>> {
    if let Some(bad) = t.iter().find(|&&t| t as usize >= v) {
        candle_core::bail!("target {bad} is outside the vocabulary of {v}");
    }
    Ok(x.par_chunks(v).zip(t.par_iter()).map(|(row, &t)| T::from_f64(lse(row) - row[t as usize].to_f64())).collect())
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "flow-cross-entropy"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = row_len(l1)?;
        let t = slice::<u32>(s2, l2)?;
        let n = l1.shape().elem_count() / v;
        if t.len() != n {
            candle_core::bail!("{} targets for {n} rows", t.len());
        }
        let out = match s1 {
            CpuStorage::F32(_) => CpuStorage::F32(ce_rows(slice::<f32>(s1, l1)?, t, v)?),
            CpuStorage::F64(_) => CpuStorage::F64(ce_rows(slice::<f64>(s1, l1)?, t, v)?),
            _ => candle_core::bail!("flow-cross-entropy supports f32 and f64 logits"),
        };
        Ok((out, Shape::from(n)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx =
            logits.contiguous()?.apply_op3_no_bwd(&targets.contiguous()?, &grad.contiguous()?, &CrossEntropyGrad)?;
        Ok((Some(dx), None))
    }
}

/// dx[i, j] = g[i] · (softmax(x[i])[j] − [j = t[i]]).
struct CrossEntropyGrad;

fn ce_grad_rows<T: Float>(x: &[T], t: &[u32], g: &[T], v: usize) -> Vec<T> {
    let mut dx = vec![T::from_f64(0.0); x.len()];
    dx.par_chunks_mut(v).zip(x.par_chunks(v)).zip(t.par_iter().zip(g.par_iter())).for_each(|((dx, x), (&t, &g))| {
        let l = lse(x);
        let g = g.to_f64();
        for (o, &v) in dx.iter_mut().zip(x) {
            *o = T::from_f64(g * T::from_f64(v.to_f64() - l).exp().to_f64());
        }
        dx[t as usize] = T::from_f64(dx[t as usize].to_f64() - g);
    });
    dx
}

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "flow-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let v = row_len(l1)?;
        let t = slice::<u32>(s2, l2)?;
        let out =
            on_two!("flow-cross-entropy-grad", (s1, l1), (s3, l3), |logits, grad| ce_grad_rows(logits, t, grad, v));
        Ok((out, l1.shape().clone()))
    }
}

/// Per-row cross-entropy losses `[n]` of `[n, v]` logits against `[n]` u32 targets.
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if !fused(logits) {
        let v = logits.dim(1)?;
        // The kernel refuses a target outside the vocabulary; a gather on a GPU would read
        // whatever is there.
        if targets.max_all()?.to_dtype(DType::U32)?.to_scalar::<u32>()? as usize >= v {
            candle_core::bail!("a target is outside the vocabulary of {v}");
        }
        let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        return logp.gather(&targets.unsqueeze(1)?.contiguous()?, 1)?.squeeze(1)?.neg();
    }
    logits.contiguous()?.apply_op2(&targets.contiguous()?, CrossEntropy)
}

/// `y = x / sqrt(mean(x²) + eps) · w` over the last dimension.
struct RmsNorm {
    eps: f64,
}

fn rms_rows<T: Float>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut y = vec![T::from_f64(0.0); x.len()];
    y.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(y, x)| {
        let r = inv_rms(x, eps);
        for ((o, &v), &g) in y.iter_mut().zip(x).zip(w) {
            *o = T::from_f64(v.to_f64() * r * g.to_f64());
        }
    });
    y
}

fn inv_rms<T: Float>(x: &[T], eps: f64) -> f64 {
    let ms = x.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>() / x.len() as f64;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "flow-rms-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if row_len(l1)? != l2.shape().elem_count() {
            candle_core::bail!("rms-norm weight of {} for rows of {}", l2.shape().elem_count(), row_len(l1)?);
        }
        let out = on_two!("flow-rms-norm", (s1, l1), (s2, l2), |x, w| rms_rows(x, w, self.eps));
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (x, w, grad) = (x.contiguous()?, w.contiguous()?, grad.contiguous()?);
        let dx = x.apply_op3_no_bwd(&w, &grad, &RmsNormGradX { eps: self.eps })?;
        let dw = x.apply_op2_no_bwd(&grad, &RmsNormGradW { eps: self.eps })?;
        Ok((Some(dx), Some(dw)))
    }
}

/// dx = r · (g − x̂ · mean(g ⊙ x̂)) with r = 1/rms(x), x̂ = x·r, g = dy ⊙ w.
struct RmsNormGradX {
    eps: f64,
}

fn rms_grad_x<T: Float>(x: &[T], w: &[T], dy: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut dx = vec![T::from_f64(0.0); x.len()];
    dx.par_chunks_mut(d).zip(x.par_chunks(d).zip(dy.par_chunks(d))).for_each(|(dx, (x, dy))| {
        let r = inv_rms(x, eps);
        let dot =
            x.iter().zip(dy).zip(w).map(|((a, b), c)| a.to_f64() * r * b.to_f64() * c.to_f64()).sum::<f64>() / d as f64;
        for (((o, &a), &b), &c) in dx.iter_mut().zip(x).zip(dy).zip(w) {
            *o = T::from_f64(r * (b.to_f64() * c.to_f64() - a.to_f64() * r * dot));
        }
    });
    dx
}

impl CustomOp3 for RmsNormGradX {
    fn name(&self) -> &'static str {
        "flow-rms-norm-grad-x"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(rms_grad_x(
                slice::<f32>(s1, l1)?,
                slice::<f32>(s2, l2)?,
                slice::<f32>(s3, l3)?,
                self.eps,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(rms_grad_x(
                slice::<f64>(s1, l1)?,
                slice::<f64>(s2, l2)?,
                slice::<f64>(s3, l3)?,
                self.eps,
            )),
            _ => candle_core::bail!("flow-rms-norm-grad-x supports f32 and f64"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// dw = Σ over rows of dy ⊙ x̂.
struct RmsNormGradW {
    eps: f64,
}

fn rms_grad_w<T: Float>(x: &[T], dy: &[T], d: usize, eps: f64) -> Vec<T> {
    let partial = x
        .par_chunks(d)
        .zip(dy.par_chunks(d))
        .fold(
            || vec![0.0f64; d],
            |mut acc, (x, dy)| {
                let r = inv_rms(x, eps);
                for ((a, &v), &g) in acc.iter_mut().zip(x).zip(dy) {
                    *a += g.to_f64() * v.to_f64() * r;
                }
                acc
            },
        )
        .reduce(
            || vec![0.0f64; d],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    partial.into_iter().map(T::from_f64).collect()
}

impl CustomOp2 for RmsNormGradW {
    fn name(&self) -> &'static str {
        "flow-rms-norm-grad-w"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = row_len(l1)?;
        let out = on_two!("flow-rms-norm-grad-w", (s1, l1), (s2, l2), |x, g| rms_grad_w(x, g, d, self.eps));
        Ok((out, Shape::from(d)))
    }
}

/// RMSNorm over the last dimension with gain `w`, with a backward pass for both. Half-precision
/// inputs are normalised in f32.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused(x) {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let y = x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(&w.to_dtype(DType::F32)?)?;
        return y.to_dtype(dtype);
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })
}

#[cfg(test)]
mod tests;
