//! The row-wise kernels of the fused path, each with its backward: RMSNorm, the rotary
//! embedding, SwiGLU and the cross-entropy over the vocabulary, plus the exponential and the
//! dot product they share.
//!
//! Every reduction runs in a fixed order that depends on neither the thread count nor the
//! CPU: eight interleaved partial sums combined pairwise (a pattern the compiler vectorises on
//! any SIMD width without changing it), and column sums over fixed blocks of rows added block
//! by block. The exponential is our own polynomial rather than the C library's, whose x86-64
//! build picks an FMA or a plain variant by CPU at run time.

use rayon::prelude::*;

use super::Real;

/// Rows per block of a column sum (a parameter gradient summed over tokens).
const BLOCK: usize = 64;

/// `Σ a[i]·b[i]` in a fixed order.
pub(super) fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: T = ca.remainder().iter().zip(cb.remainder()).fold(T::zero(), |s, (&x, &y)| s + x * y);
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// `e^x` for f32 to about 2 ulp: Cody–Waite range reduction and Cephes' `expf` polynomial,
/// branch-free so that loops over it vectorise. Below -87 it returns about 1.6e-38, not 0.
pub(super) fn exp_f32(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let z = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * z + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// Sums per-row contributions into `out` (`len` columns): `each(row, partial)` adds row
/// `row`'s contribution to `partial`. Blocks of [`BLOCK`] rows run in parallel, and their
/// partial sums are added in block order.
pub(super) fn column_sum<T: Real>(out: &mut [T], rows: usize, each: impl Fn(usize, &mut [T]) + Sync) {
    let len = out.len();
    let blocks = rows.div_ceil(BLOCK);
    let mut partial = vec![T::zero(); blocks * len];
    partial.par_chunks_mut(len).enumerate().for_each(|(b, p)| {
        for r in b * BLOCK..((b + 1) * BLOCK).min(rows) {
            each(r, p);
        }
    });
    for p in partial.chunks_exact(len) {
        for (o, &v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
}

/// RMSNorm of `rows` rows of `x` into `y`, with gain `g`; keeps each row's 1/rms in `rstd`.
pub(super) fn rms_norm<T: Real>(y: &mut [T], rstd: &mut [T], x: &[T], g: &[T], eps: T) {
    let d = g.len();
    let n = T::of(d as f64);
    y.par_chunks_mut(d).zip(rstd.par_iter_mut()).zip(x.par_chunks(d)).for_each(|((y, r), x)| {
        let s = T::one() / (dot(x, x) / n + eps).sqrt();
        *r = s;
        for ((y, &x), &g) in y.iter_mut().zip(x).zip(g) {
            *y = x * s * g;
        }
    });
}

/// RMSNorm's backward: adds the gradient with respect to `x` to `dx` and the gain's to `dg`.
pub(super) fn rms_norm_backward<T: Real>(dx: &mut [T], dg: &mut [T], dy: &[T], x: &[T], rstd: &[T], g: &[T]) {
    let d = g.len();
    let n = T::of(d as f64);
    dx.par_chunks_mut(d).zip(dy.par_chunks(d)).zip(x.par_chunks(d)).zip(rstd.par_iter()).for_each(
        |(((dx, dy), x), &s)| {
            // With x̂ = x·s and y = x̂·g: dx = s·(dy·g − x̂·mean(dy·g·x̂)).
            let mut c = T::zero();
            for ((&dy, &x), &g) in dy.iter().zip(x).zip(g) {
                c += dy * g * x;
            }
            let c = c * s * s / n;
            for (((dx, &dy), &x), &g) in dx.iter_mut().zip(dy).zip(x).zip(g) {
                *dx += s * (dy * g - x * c);
            }
        },
    );
    column_sum(dg, rstd.len(), |r, p| {
        let (dy, x, s) = (&dy[r * d..(r + 1) * d], &x[r * d..(r + 1) * d], rstd[r]);
        for ((p, &dy), &x) in p.iter_mut().zip(dy).zip(x) {
            *p += dy * x * s;
        }
    });
}

/// cos and sin of every position below `positions` for each of the `head_dim / 2` frequencies,
/// `[positions, head_dim / 2]` each, as Hugging Face's Llama computes them in f32. `libm`
/// evaluates the trigonometry the same way on every CPU.
pub(super) fn rope_table<T: Real>(positions: usize, head_dim: usize, theta: f64) -> (Vec<T>, Vec<T>) {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half).map(|i| 1.0 / libm::powf(theta as f32, 2.0 * i as f32 / head_dim as f32)).collect();
    let (mut cos, mut sin) = (Vec::with_capacity(positions * half), Vec::with_capacity(positions * half));
    for p in 0..positions {
        for &f in &inv {
            let a = p as f32 * f;
            cos.push(T::of(libm::cosf(a) as f64));
            sin.push(T::of(libm::sinf(a) as f64));
        }
    }
    (cos, sin)
}

/// Rotates every head of every row of `x` (`[rows, heads · head_dim]`) by its position, in
/// place, "rotate half" style; `inverse` rotates back, which is also the backward pass.
pub(super) fn rope<T: Real>(
    x: &mut [T],
    width: usize,
    head_dim: usize,
    pos: &[u32],
    cos: &[T],
    sin: &[T],
    inverse: bool,
) {
    let half = head_dim / 2;
    x.par_chunks_mut(width).zip(pos.par_iter()).for_each(|(row, &p)| {
        let (c, s) = (&cos[p as usize * half..][..half], &sin[p as usize * half..][..half]);
        for head in row.chunks_exact_mut(head_dim) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                let s = if inverse { -s[i] } else { s[i] };
                a[i] = x1 * c[i] - x2 * s;
                b[i] = x2 * c[i] + x1 * s;
            }
        }
    });
}

fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).fast_exp())
}

/// `h = silu(gate) · up`.
pub(super) fn swiglu<T: Real>(h: &mut [T], gate: &[T], up: &[T]) {
    h.par_chunks_mut(4096).zip(gate.par_chunks(4096)).zip(up.par_chunks(4096)).for_each(|((h, g), u)| {
        for ((h, &g), &u) in h.iter_mut().zip(g).zip(u) {
            *h = g * sigmoid(g) * u;
        }
    });
}

/// SwiGLU's backward: from `dh` (overwritten with the gate's gradient) to `dgate` in `dh` and
/// `dup`.
pub(super) fn swiglu_backward<T: Real>(dh: &mut [T], dup: &mut [T], gate: &[T], up: &[T]) {
    dh.par_chunks_mut(4096).zip(dup.par_chunks_mut(4096)).zip(gate.par_chunks(4096)).zip(up.par_chunks(4096)).for_each(
        |(((dh, du), g), u)| {
            for (((dh, du), &g), &u) in dh.iter_mut().zip(du).zip(g).zip(u) {
                let s = sigmoid(g);
                let silu = g * s;
                *du = *dh * silu;
                *dh = *dh * u * s * (T::one() + g * (T::one() - s));
            }
        },
    );
}

/// Cross-entropy of each row of `logits` (`[rows, vocab]`) against `targets`, returned per
/// row; `logits` is overwritten with the gradient of `Σ weight[r] · loss[r]`.
pub(super) fn cross_entropy<T: Real>(logits: &mut [T], targets: &[u32], weights: &[T], vocab: usize) -> Vec<f64> {
    let mut losses = vec![0f64; targets.len()];
    logits.par_chunks_mut(vocab).zip(targets.par_iter()).zip(weights.par_iter()).zip(losses.par_iter_mut()).for_each(
        |(((row, &t), &w), loss)| {
            let max = row.iter().copied().fold(T::neg_infinity(), T::max);
            let target = (row[t as usize] - max).f64();
            for v in row.iter_mut() {
                *v = (*v - max).fast_exp();
            }
            let mut acc = [T::zero(); 8];
            let chunks = row.chunks_exact(8);
            let tail = chunks.remainder().iter().fold(T::zero(), |s, &v| s + v);
            for c in chunks {
                for l in 0..8 {
                    acc[l] += c[l];
                }
            }
            let sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
            *loss = libm::log(sum.f64()) - target;
            let scale = w / sum;
            for v in row.iter_mut() {
                *v *= scale;
            }
            row[t as usize] = row[t as usize] - w;
        },
    );
    losses
}
