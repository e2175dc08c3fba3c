//! Causal multi-head attention (grouped key/value heads allowed) as one operation each way:
//! per head, scores by gemm, the masked softmax in place, and the weighted values by gemm;
//! the backward pass reuses the probabilities' buffer for the scores' gradient.
//!
//! Each query attends to a contiguous range of keys ending at itself (`lo[row]..=row`): plain
//! causal attention, or one packed sample's tokens. Heads run in parallel, each writing only its
//! own blocks of scratch; outputs are gathered into the row-major activations afterwards.

use rayon::prelude::*;

use super::Real;
use super::matmul::{Threads, View, matmul};

/// The shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub(super) struct Heads {
    pub(super) batch: usize,
    pub(super) seq: usize,
    pub(super) heads: usize,
    pub(super) kv_heads: usize,
    pub(super) head_dim: usize,
}

impl Heads {
    fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }
    fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
    fn scale<T: Real>(&self) -> T {
        T::one() / T::of(self.head_dim as f64).sqrt()
    }
}

/// The projected queries (`[batch · seq, heads · head_dim]`), keys and values (`[batch · seq,
/// kv_heads · head_dim]` each) of one layer.
#[derive(Clone, Copy)]
pub(super) struct Qkv<'a, T> {
    pub(super) q: &'a [T],
    pub(super) k: &'a [T],
    pub(super) v: &'a [T],
}

/// Forward: `p` (`[batch, heads, seq, seq]`) receives the attention probabilities, `att`
/// (`[batch · seq, heads · head_dim]`) the attended values; `scratch` holds `batch · heads ·
/// seq · head_dim` values.
pub(super) fn forward<T: Real>(
    s: Heads,
    Qkv { q, k, v }: Qkv<'_, T>,
    lo: &[u32],
    p: &mut [T],
    scratch: &mut [T],
    att: &mut [T],
) {
    let (t, hd, qw, kw) = (s.seq, s.head_dim, s.q_width(), s.kv_width());
    let scale = s.scale::<T>();
    p.par_chunks_mut(t * t).zip(scratch.par_chunks_mut(t * hd)).enumerate().for_each(|(i, (p, out))| {
        let (b, h) = (i / s.heads, i % s.heads);
        let g = h / s.group();
        let qh = View::strided(&q[b * t * qw + h * hd..], t, hd, qw, 1);
        let kt = View::strided(&k[b * t * kw + g * hd..], hd, t, 1, kw);
        matmul(p, t, qh, kt, false, Threads::One);
        for (row, r) in p.chunks_exact_mut(t).enumerate() {
            let start = lo[b * t + row] as usize;
            let live = &mut r[start..=row];
            let max = live.iter().fold(T::neg_infinity(), |m, &x| m.max(x * scale));
            let mut sum = T::zero();
            for x in live.iter_mut() {
                *x = (*x * scale - max).fast_exp();
                sum += *x;
            }
            let inv = T::one() / sum;
            for x in live.iter_mut() {
                *x *= inv;
            }
            r[..start].fill(T::zero());
            r[row + 1..].fill(T::zero());
        }
        let vh = View::strided(&v[b * t * kw + g * hd..], t, hd, kw, 1);
        matmul(out, hd, View::rows(p, t, t), vh, false, Threads::One);
    });
    gather(att, scratch, s.batch, t, s.heads, hd);
}

/// Backward: from `datt` to `dq`, `dk` and `dv` (overwritten). `p` is the forward's and is
/// overwritten with the scores' gradient. `scratch` is `(dp, sq, sk, sv)`: `dp` holds as many
/// values as `p`, `sq` `batch · heads · seq · head_dim` and `sk`, `sv` `batch · kv_heads · seq ·
/// head_dim` each.
pub(super) fn backward<T: Real>(
    s: Heads,
    Qkv { q, k, v }: Qkv<'_, T>,
    lo: &[u32],
    datt: &[T],
    p: &mut [T],
    scratch: (&mut [T], &mut [T], &mut [T], &mut [T]),
    grads: (&mut [T], &mut [T], &mut [T]),
) {
    let (t, hd, qw, kw, n) = (s.seq, s.head_dim, s.q_width(), s.kv_width(), s.group());
    let scale = s.scale::<T>();
    let (dp, sq, sk, sv) = scratch;
    p.par_chunks_mut(n * t * t)
        .zip(dp.par_chunks_mut(n * t * t))
        .zip(sq.par_chunks_mut(n * t * hd))
        .zip(sk.par_chunks_mut(t * hd).zip(sv.par_chunks_mut(t * hd)))
        .enumerate()
        .for_each(|(i, (((p, dp), dq), (dk, dv)))| {
            let (b, g) = (i / s.kv_heads, i % s.kv_heads);
            let kg = View::strided(&k[b * t * kw + g * hd..], t, hd, kw, 1);
            let vt = View::strided(&v[b * t * kw + g * hd..], hd, t, 1, kw);
            for j in 0..n {
                let h = g * n + j;
                let (p, dp, dq) =
                    (&mut p[j * t * t..][..t * t], &mut dp[j * t * t..][..t * t], &mut dq[j * t * hd..][..t * hd]);
                let dh = View::strided(&datt[b * t * qw + h * hd..], t, hd, qw, 1);
                let qh = View::strided(&q[b * t * qw + h * hd..], t, hd, qw, 1);
                matmul(dp, t, dh, vt, false, Threads::One);
                matmul(dv, hd, View::t(p, t, t), dh, j > 0, Threads::One);
                for row in 0..t {
                    let start = lo[b * t + row] as usize;
                    let (pr, dr) = (&mut p[row * t..][start..=row], &dp[row * t..][start..=row]);
                    let c = super::kernels::dot(pr, dr);
                    for (p, &d) in pr.iter_mut().zip(dr) {
                        *p = *p * (d - c) * scale;
                    }
                }
                matmul(dq, hd, View::rows(p, t, t), kg, false, Threads::One);
                matmul(dk, hd, View::t(p, t, t), qh, j > 0, Threads::One);
            }
        });
    let (gq, gk, gv) = grads;
    gather(gq, sq, s.batch, t, s.heads, hd);
    gather(gk, sk, s.batch, t, s.kv_heads, hd);
    gather(gv, sv, s.batch, t, s.kv_heads, hd);
}

/// `[batch, heads, seq, head_dim]` blocks into `[batch · seq, heads · head_dim]` rows.
fn gather<T: Real>(rows: &mut [T], blocks: &[T], batch: usize, t: usize, heads: usize, hd: usize) {
    let width = heads * hd;
    rows.par_chunks_mut(width).enumerate().for_each(|(r, row)| {
        let (b, pos) = (r / t, r % t);
        for (h, out) in row.chunks_exact_mut(hd).enumerate() {
            out.copy_from_slice(&blocks[((b * heads + h) * t + pos) * hd..][..hd]);
        }
    });
    debug_assert_eq!(rows.len(), batch * t * width);
}
