//! The whole decoder's forward and backward pass over preallocated activations (the llm.c
//! approach): a handful of large gemms per layer and one fused kernel between each pair, with
//! every buffer allocated once per batch shape and reused across steps.
//!
//! Parameters and their gradients are flat vectors laid out in [`Config::parameter_shapes`]
//! order; [`Layout`] says where each one lives.

use std::ops::Range;

use super::Real;
use super::attention::{self, Heads, Qkv};
use super::kernels::{cross_entropy, rms_norm, rms_norm_backward, rope, rope_table, swiglu, swiglu_backward};
use super::matmul::{Threads, View, matmul};
use crate::ml::model::Config;

/// Where one decoder layer's parameters live in the flat vector.
#[derive(Clone, Debug)]
struct LayerRanges {
    ln1: Range<usize>,
    wq: Range<usize>,
    wk: Range<usize>,
    wv: Range<usize>,
    wo: Range<usize>,
    ln2: Range<usize>,
    wg: Range<usize>,
    wu: Range<usize>,
    wd: Range<usize>,
}

/// Where every parameter lives in the flat vector.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    /// Name, shape and range of each parameter, in the config's order.
    pub(super) params: Vec<(String, Vec<usize>, Range<usize>)>,
    embed: Range<usize>,
    layers: Vec<LayerRanges>,
    norm: Range<usize>,
    /// The output projection: the embedding's range when the two are tied.
    head: Range<usize>,
    pub(super) len: usize,
}

impl Layout {
    pub(super) fn new(config: &Config) -> Self {
        let mut params = Vec::new();
        let mut at = 0;
        for (name, shape) in config.parameter_shapes() {
            let n: usize = shape.iter().product();
            params.push((name, shape, at..at + n));
            at += n;
        }
        let find = |name: &str| -> Range<usize> {
            params.iter().find(|(n, _, _)| n == name).map(|(_, _, r)| r.clone()).expect("the config names it")
        };
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let p = |s: &str| find(&format!("model.layers.{l}.{s}.weight"));
                LayerRanges {
                    ln1: p("input_layernorm"),
                    wq: p("self_attn.q_proj"),
                    wk: p("self_attn.k_proj"),
                    wv: p("self_attn.v_proj"),
                    wo: p("self_attn.o_proj"),
                    ln2: p("post_attention_layernorm"),
                    wg: p("mlp.gate_proj"),
                    wu: p("mlp.up_proj"),
                    wd: p("mlp.down_proj"),
                }
            })
            .collect();
        let embed = find("model.embed_tokens.weight");
        let head = if config.tie_word_embeddings { embed.clone() } else { find("lm_head.weight") };
        Self { embed, layers, norm: find("model.norm.weight"), head, params, len: at }
    }
}

/// One micro-batch as the fused path reads it, every vector `[batch · seq]`.
pub(super) struct Batch<T> {
    pub(super) batch: usize,
    pub(super) seq: usize,
    pub(super) tokens: Vec<u32>,
    pub(super) targets: Vec<u32>,
    /// Each position's weight in the loss (the loss is `Σ weight · cross-entropy`).
    pub(super) weights: Vec<T>,
    pub(super) positions: Vec<u32>,
    /// The first key each query may attend to (the query itself is the last).
    pub(super) lo: Vec<u32>,
}

/// What one layer's forward pass keeps for the backward one.
struct LayerActs<T> {
    x: Vec<T>,
    xn1: Vec<T>,
    rstd1: Vec<T>,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    p: Vec<T>,
    att: Vec<T>,
    mid: Vec<T>,
    xn2: Vec<T>,
    rstd2: Vec<T>,
    gate: Vec<T>,
    up: Vec<T>,
    h: Vec<T>,
}

/// Every buffer of a step, for one `batch × seq` shape.
struct Acts<T> {
    batch: usize,
    seq: usize,
    layers: Vec<LayerActs<T>>,
    out: Vec<T>,
    xf: Vec<T>,
    rstdf: Vec<T>,
    logits: Vec<T>,
    // The backward pass's own.
    dx: Vec<T>,
    dtmp: Vec<T>,
    datt: Vec<T>,
    dq: Vec<T>,
    dk: Vec<T>,
    dv: Vec<T>,
    dh: Vec<T>,
    dup: Vec<T>,
    dp: Vec<T>,
    sq: Vec<T>,
    sk: Vec<T>,
    sv: Vec<T>,
}

/// A buffer for the life of a batch shape. `vec!` of zero asks the allocator for zeroed pages,
/// which the kernel hands out without a pass over them.
fn buffer<T: Real>(n: usize) -> Vec<T> {
    vec![T::zero(); n]
}

impl<T: Real> Acts<T> {
    fn new(c: &Config, batch: usize, seq: usize) -> Self {
        let n = batch * seq;
        let (h, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let kv = c.num_key_value_heads * c.head_dim();
        let p = batch * c.num_attention_heads * seq * seq;
        let layers = (0..c.num_hidden_layers)
            .map(|_| LayerActs {
                x: buffer(n * h),
                xn1: buffer(n * h),
                rstd1: buffer(n),
                q: buffer(n * h),
                k: buffer(n * kv),
                v: buffer(n * kv),
                p: buffer(p),
                att: buffer(n * h),
                mid: buffer(n * h),
                xn2: buffer(n * h),
                rstd2: buffer(n),
                gate: buffer(n * f),
                up: buffer(n * f),
                h: buffer(n * f),
            })
            .collect();
        Self {
            batch,
            seq,
            layers,
            out: buffer(n * h),
            xf: buffer(n * h),
            rstdf: buffer(n),
            logits: buffer(n * v),
            dx: buffer(n * h),
            dtmp: buffer(n * h),
            datt: buffer(n * h),
            dq: buffer(n * h),
            dk: buffer(n * kv),
            dv: buffer(n * kv),
            dh: buffer(n * f),
            dup: buffer(n * f),
            dp: buffer(p),
            sq: buffer(n * h),
            sk: buffer(n * kv),
            sv: buffer(n * kv),
        }
    }
}

/// The decoder's forward and backward pass for one config, with its activations.
pub(super) struct Net<T> {
    pub(super) config: Config,
    pub(super) layout: Layout,
    cos: Vec<T>,
    sin: Vec<T>,
    acts: Option<Acts<T>>,
}

impl<T: Real> Net<T> {
    pub(super) fn new(config: Config) -> Self {
        let (cos, sin) = rope_table(config.max_position_embeddings, config.head_dim(), config.rope_theta);
        Self { layout: Layout::new(&config), config, cos, sin, acts: None }
    }

    fn heads(&self, batch: usize, seq: usize) -> Heads {
        let c = &self.config;
        Heads { batch, seq, heads: c.num_attention_heads, kv_heads: c.num_key_value_heads, head_dim: c.head_dim() }
    }

    /// The activations for this shape, reallocated only when the shape changes.
    fn acts(&mut self, batch: usize, seq: usize) -> Acts<T> {
        match self.acts.take() {
            Some(a) if a.batch == batch && a.seq == seq => a,
            _ => Acts::new(&self.config, batch, seq),
        }
    }

    /// The loss `Σ weight · cross-entropy` of `batch` under parameters `w`; with `grads`, adds
    /// its gradient to them.
    pub(super) fn run(&mut self, w: &[T], batch: &Batch<T>, grads: Option<&mut [T]>) -> f64 {
        let mut a = self.acts(batch.batch, batch.seq);
        let losses = self.forward(w, batch, &mut a);
        let loss = losses.iter().zip(&batch.weights).map(|(l, w)| l * w.f64()).sum();
        if let Some(g) = grads {
            self.backward(w, batch, &mut a, g);
        }
        self.acts = Some(a);
        loss
    }

    /// Each position's cross-entropy under parameters `w` (the forward pass alone).
    #[cfg(test)]
    pub(super) fn token_losses(&mut self, w: &[T], batch: &Batch<T>) -> Vec<f64> {
        let mut a = self.acts(batch.batch, batch.seq);
        let losses = self.forward(w, batch, &mut a);
        self.acts = Some(a);
        losses
    }

    fn forward(&self, w: &[T], batch: &Batch<T>, a: &mut Acts<T>) -> Vec<f64> {
        let c = &self.config;
        let (n, h, f, voc) = (batch.tokens.len(), c.hidden_size, c.intermediate_size, c.vocab_size);
        let kv = c.num_key_value_heads * c.head_dim();
        let hd = c.head_dim();
        let eps = T::of(c.rms_norm_eps);
        let lay = &self.layout;
        let heads = self.heads(batch.batch, batch.seq);
        let embed = &w[lay.embed.clone()];
        let first = a.layers.first_mut().map_or(&mut a.out, |l| &mut l.x);
        for (row, &tok) in first.chunks_exact_mut(h).zip(&batch.tokens) {
            row.copy_from_slice(&embed[tok as usize * h..][..h]);
        }
        for l in 0..c.num_hidden_layers {
            let r = &lay.layers[l];
            let (done, rest) = a.layers.split_at_mut(l + 1);
            let la = &mut done[l];
            let next = rest.first_mut().map_or(&mut a.out, |n| &mut n.x);
            rms_norm(&mut la.xn1, &mut la.rstd1, &la.x, &w[r.ln1.clone()], eps);
            let xn1 = View::rows(&la.xn1, n, h);
            matmul(&mut la.q, h, xn1, View::t(&w[r.wq.clone()], h, h), false, Threads::Pool);
            matmul(&mut la.k, kv, xn1, View::t(&w[r.wk.clone()], kv, h), false, Threads::Pool);
            matmul(&mut la.v, kv, xn1, View::t(&w[r.wv.clone()], kv, h), false, Threads::Pool);
            rope(&mut la.q, h, hd, &batch.positions, &self.cos, &self.sin, false);
            rope(&mut la.k, kv, hd, &batch.positions, &self.cos, &self.sin, false);
            attention::forward(
                heads,
                Qkv { q: &la.q, k: &la.k, v: &la.v },
                &batch.lo,
                &mut la.p,
                &mut a.sq,
                &mut la.att,
            );
            la.mid.copy_from_slice(&la.x);
            matmul(&mut la.mid, h, View::rows(&la.att, n, h), View::t(&w[r.wo.clone()], h, h), true, Threads::Pool);
            rms_norm(&mut la.xn2, &mut la.rstd2, &la.mid, &w[r.ln2.clone()], eps);
            let xn2 = View::rows(&la.xn2, n, h);
            matmul(&mut la.gate, f, xn2, View::t(&w[r.wg.clone()], f, h), false, Threads::Pool);
            matmul(&mut la.up, f, xn2, View::t(&w[r.wu.clone()], f, h), false, Threads::Pool);
            swiglu(&mut la.h, &la.gate, &la.up);
            next.copy_from_slice(&la.mid);
            matmul(next, h, View::rows(&la.h, n, f), View::t(&w[r.wd.clone()], h, f), true, Threads::Pool);
        }
        rms_norm(&mut a.xf, &mut a.rstdf, &a.out, &w[lay.norm.clone()], eps);
        let head = View::t(&w[lay.head.clone()], voc, h);
        matmul(&mut a.logits, voc, View::rows(&a.xf, n, h), head, false, Threads::Pool);
        cross_entropy(&mut a.logits, &batch.targets, &batch.weights, voc)
    }

    /// Adds the gradient of the forward's loss to `g`; `a.logits` holds its gradient.
    fn backward(&self, w: &[T], batch: &Batch<T>, a: &mut Acts<T>, g: &mut [T]) {
        let c = &self.config;
        let (n, h, f, voc) = (batch.tokens.len(), c.hidden_size, c.intermediate_size, c.vocab_size);
        let kv = c.num_key_value_heads * c.head_dim();
        let hd = c.head_dim();
        let lay = &self.layout;
        let heads = self.heads(batch.batch, batch.seq);
        let dlogits = View::rows(&a.logits, n, voc);
        matmul(&mut g[lay.head.clone()], h, dlogits.transposed(), View::rows(&a.xf, n, h), true, Threads::Pool);
        matmul(&mut a.dtmp, h, dlogits, View::rows(&w[lay.head.clone()], voc, h), false, Threads::Pool);
        a.dx.fill(T::zero());
        rms_norm_backward(&mut a.dx, &mut g[lay.norm.clone()], &a.dtmp, &a.out, &a.rstdf, &w[lay.norm.clone()]);
        for l in (0..c.num_hidden_layers).rev() {
            let r = &lay.layers[l];
            let la = &mut a.layers[l];
            let dx = View::rows(&a.dx, n, h);
            // The MLP: x_next = mid + (silu(xn2·Wgᵀ) ⊙ xn2·Wuᵀ)·Wdᵀ.
            matmul(&mut a.dh, f, dx, View::rows(&w[r.wd.clone()], h, f), false, Threads::Pool);
            matmul(&mut g[r.wd.clone()], f, dx.transposed(), View::rows(&la.h, n, f), true, Threads::Pool);
            swiglu_backward(&mut a.dh, &mut a.dup, &la.gate, &la.up);
            let (dgate, dup) = (View::rows(&a.dh, n, f), View::rows(&a.dup, n, f));
            matmul(&mut a.dtmp, h, dgate, View::rows(&w[r.wg.clone()], f, h), false, Threads::Pool);
            matmul(&mut a.dtmp, h, dup, View::rows(&w[r.wu.clone()], f, h), true, Threads::Pool);
            let xn2 = View::rows(&la.xn2, n, h);
            matmul(&mut g[r.wg.clone()], h, dgate.transposed(), xn2, true, Threads::Pool);
            matmul(&mut g[r.wu.clone()], h, dup.transposed(), xn2, true, Threads::Pool);
            rms_norm_backward(&mut a.dx, &mut g[r.ln2.clone()], &a.dtmp, &la.mid, &la.rstd2, &w[r.ln2.clone()]);
            // Attention: mid = x + attention(xn1)·Woᵀ.
            let dx = View::rows(&a.dx, n, h);
            matmul(&mut a.datt, h, dx, View::rows(&w[r.wo.clone()], h, h), false, Threads::Pool);
            matmul(&mut g[r.wo.clone()], h, dx.transposed(), View::rows(&la.att, n, h), true, Threads::Pool);
            attention::backward(
                heads,
                Qkv { q: &la.q, k: &la.k, v: &la.v },
                &batch.lo,
                &a.datt,
                &mut la.p,
                (&mut a.dp, &mut a.sq, &mut a.sk, &mut a.sv),
                (&mut a.dq, &mut a.dk, &mut a.dv),
            );
            rope(&mut a.dq, h, hd, &batch.positions, &self.cos, &self.sin, true);
            rope(&mut a.dk, kv, hd, &batch.positions, &self.cos, &self.sin, true);
            let (dq, dk, dv) = (View::rows(&a.dq, n, h), View::rows(&a.dk, n, kv), View::rows(&a.dv, n, kv));
            matmul(&mut a.dtmp, h, dq, View::rows(&w[r.wq.clone()], h, h), false, Threads::Pool);
            matmul(&mut a.dtmp, h, dk, View::rows(&w[r.wk.clone()], kv, h), true, Threads::Pool);
            matmul(&mut a.dtmp, h, dv, View::rows(&w[r.wv.clone()], kv, h), true, Threads::Pool);
            let xn1 = View::rows(&la.xn1, n, h);
            matmul(&mut g[r.wq.clone()], h, dq.transposed(), xn1, true, Threads::Pool);
            matmul(&mut g[r.wk.clone()], h, dk.transposed(), xn1, true, Threads::Pool);
            matmul(&mut g[r.wv.clone()], h, dv.transposed(), xn1, true, Threads::Pool);
            rms_norm_backward(&mut a.dx, &mut g[r.ln1.clone()], &a.dtmp, &la.x, &la.rstd1, &w[r.ln1.clone()]);
        }
        let ge = &mut g[lay.embed.clone()];
        for (row, &tok) in a.dx.chunks_exact(h).zip(&batch.tokens) {
            for (g, &d) in ge[tok as usize * h..][..h].iter_mut().zip(row) {
                *g += d;
            }
        }
    }
}
