//! Growing a model into a larger one (docs/stages.md#grow): depth by G_stack (`stack`: the whole
//! block stack repeated) or by function-preserving zero blocks (`zero`: new blocks whose
//! `o_proj` and `down_proj` are 0, so each is the identity), and width — FFN neurons (Net2Net
//! `split` with divided `down_proj` columns, or `zero`), and hidden size with proportionally
//! more heads (new residual dimensions start at 0, new heads write through zero `o_proj`
//! columns, RMSNorm gains scaled by √(d/D) and ε by d/D so the function is unchanged).
//!
//! Split replicas would get identical gradients and identical AdamW state forever, adding no
//! capacity; so each replica's `up_proj` row gets seeded noise that sums to zero over the
//! replicas of a neuron. With the `down_proj` columns split equally the replicas' outputs still
//! add up to the source neuron's (SwiGLU is linear in the up projection), and the different up
//! rows give their shared gate rows different gradients from the first step.
//!
//! New weights are drawn N(0, 0.02) from a seeded RNG. The grown model has exactly the tensor
//! names and shapes of a freshly initialised model of the target config.

use std::collections::HashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use super::model::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Depth {
    /// G_stack: block i of the target is block i mod L of the source.
    Stack,
    /// New blocks with zero output projections: exactly function-preserving.
    Zero,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// New blocks after the existing ones.
    End,
    /// New blocks spread evenly between the existing ones.
    Interleave,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Widen {
    /// Net2Net: new neuron j copies neuron j mod f; every replica's `down_proj` column is
    /// divided by the replica count, and their `up_proj` rows differ by zero-sum noise.
    Split,
    /// New neurons with random inputs and zero `down_proj` columns.
    Zero,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub layers: usize,
    pub depth: Depth,
    pub placement: Placement,
    pub hidden: usize,
    pub ffn: usize,
    pub widen: Widen,
    pub seed: u64,
}

/// Why a model cannot be grown as planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrowError {
    #[error("growth cannot shrink the model")]
    Shrink,
    #[error("stack growth needs a multiple of the source's {source_layers} layers, not {layers}")]
    Stack { source_layers: usize, layers: usize },
    #[error("the hidden size must stay a multiple of the head dimension {0}")]
    HeadDim(usize),
    #[error("the hidden size must keep the ratio of attention to key/value heads whole")]
    KvRatio,
    #[error("the source lacks `{0}`")]
    Missing(String),
    #[error(transparent)]
    Config(#[from] crate::ml::model::ConfigError),
}

/// A flat f32 tensor with its shape.
pub type Flat = (Vec<f32>, Vec<usize>);

/// The target config of growing `c` by `plan`: head dimension is kept, so heads (and KV
/// heads) grow with the hidden size.
pub fn target(c: &Config, plan: &Plan) -> Result<Config, GrowError> {
    if plan.layers < c.num_hidden_layers || plan.hidden < c.hidden_size || plan.ffn < c.intermediate_size {
        return Err(GrowError::Shrink);
    }
    if plan.depth == Depth::Stack && !plan.layers.is_multiple_of(c.num_hidden_layers) {
        return Err(GrowError::Stack { source_layers: c.num_hidden_layers, layers: plan.layers });
    }
    let hd = c.head_dim();
    if !plan.hidden.is_multiple_of(hd) {
        return Err(GrowError::HeadDim(hd));
    }
    let heads = plan.hidden / hd;
    let kv = c.num_key_value_heads * heads / c.num_attention_heads;
    if kv * c.num_attention_heads != c.num_key_value_heads * heads {
        return Err(GrowError::KvRatio);
    }
    let mut t = c.clone();
    t.num_hidden_layers = plan.layers;
    t.hidden_size = plan.hidden;
    t.num_attention_heads = heads;
    t.num_key_value_heads = kv;
    t.intermediate_size = plan.ffn;
    // RMS over D dims of a vector padded with zeros is √(d/D) of the RMS over d: scaling ε by
    // d/D (and the gains by √(d/D)) keeps every normalised value exactly as it was.
    t.rms_norm_eps = c.rms_norm_eps * c.hidden_size as f64 / plan.hidden as f64;
    t.validate()?;
    Ok(t)
}

struct Rng(ChaCha8Rng);

impl Rng {
    fn normal(&mut self, n: usize) -> Vec<f32> {
        let d = Normal::new(0.0f32, 0.02).expect("valid");
        (0..n).map(|_| d.sample(&mut self.0)).collect()
    }
}

/// Copies `src` `[r, c]` into the top-left of a `[rows, cols]` matrix filled by `fill`.
fn pad(src: &[f32], r: usize, c: usize, rows: usize, cols: usize, fill: Vec<f32>) -> Vec<f32> {
    let mut out = fill;
    assert_eq!(out.len(), rows * cols, "the fill must cover the whole target");
    for i in 0..r {
        out[i * cols..i * cols + c].copy_from_slice(&src[i * c..(i + 1) * c]);
    }
    out
}

/// Grows the named tensors of a model with config `c` into `t` (from [`target`]).
pub fn grow(
    c: &Config,
    t: &Config,
    plan: &Plan,
    src: &HashMap<String, Flat>,
) -> Result<HashMap<String, Flat>, GrowError> {
    let mut rng = Rng(ChaCha8Rng::seed_from_u64(plan.seed));
    let get = |name: &str| src.get(name).ok_or_else(|| GrowError::Missing(name.to_owned()));
    let (d, dd, f, ff) = (c.hidden_size, t.hidden_size, c.intermediate_size, t.intermediate_size);
    let (hd, v) = (c.head_dim(), c.vocab_size);
    let (q_rows, kv_rows) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
    let (tq_rows, tkv_rows) = (t.num_attention_heads * hd, t.num_key_value_heads * hd);
    let scale = (d as f32 / dd as f32).sqrt();
    let gain = |g: &[f32]| -> Vec<f32> {
        let mut out: Vec<f32> = g.iter().map(|x| x * scale).collect();
        out.resize(dd, scale);
        out
    };
    let mut out = HashMap::new();
    // Embeddings: new residual dimensions are zero.
    let embed = &get("model.embed_tokens.weight")?.0;
    out.insert("model.embed_tokens.weight".into(), (pad(embed, v, d, v, dd, vec![0.0; v * dd]), vec![v, dd]));
    out.insert("model.norm.weight".into(), (gain(&get("model.norm.weight")?.0), vec![dd]));
    if !t.tie_word_embeddings {
        let head = &get("lm_head.weight")?.0;
        out.insert("lm_head.weight".into(), (pad(head, v, d, v, dd, vec![0.0; v * dd]), vec![v, dd]));
    }
    // Which source block feeds each target block (None: a new zero block).
    let sources: Vec<Option<usize>> = match plan.depth {
        Depth::Stack => (0..t.num_hidden_layers).map(|i| Some(i % c.num_hidden_layers)).collect(),
        Depth::Zero => {
            let (l, extra) = (c.num_hidden_layers, t.num_hidden_layers - c.num_hidden_layers);
            match plan.placement {
                Placement::End => (0..l).map(Some).chain((0..extra).map(|_| None)).collect(),
                Placement::Interleave => {
                    let mut seq = Vec::new();
                    for i in 0..l {
                        seq.push(Some(i));
                        // Spread `extra` new blocks over the l gaps as evenly as possible.
                        let n = (i + 1) * extra / l - i * extra / l;
                        seq.extend((0..n).map(|_| None));
                    }
                    seq
                }
            }
        }
    };
    // Net2Net replica counts of each source neuron.
    let replicas: Vec<usize> = (0..f).map(|s| (0..ff).filter(|j| j % f == s).count()).collect();
    for (ti, source) in sources.iter().enumerate() {
        let tp = format!("model.layers.{ti}");
        let Some(si) = source else {
            // A new block: random inputs, zero outputs, unit gains; it adds exactly 0.
            let ones = vec![1.0f32; dd];
            out.insert(format!("{tp}.input_layernorm.weight"), (ones.clone(), vec![dd]));
            out.insert(format!("{tp}.post_attention_layernorm.weight"), (ones, vec![dd]));
            for (name, rows, cols) in [
                ("self_attn.q_proj", tq_rows, dd),
                ("self_attn.k_proj", tkv_rows, dd),
                ("self_attn.v_proj", tkv_rows, dd),
                ("mlp.gate_proj", ff, dd),
                ("mlp.up_proj", ff, dd),
            ] {
                out.insert(format!("{tp}.{name}.weight"), (rng.normal(rows * cols), vec![rows, cols]));
            }
            out.insert(format!("{tp}.self_attn.o_proj.weight"), (vec![0.0; dd * tq_rows], vec![dd, tq_rows]));
            out.insert(format!("{tp}.mlp.down_proj.weight"), (vec![0.0; dd * ff], vec![dd, ff]));
            continue;
        };
        let sp = format!("model.layers.{si}");
        let w = |name: &str| get(&format!("{sp}.{name}.weight")).map(|x| x.0.clone());
        out.insert(format!("{tp}.input_layernorm.weight"), (gain(&w("input_layernorm")?), vec![dd]));
        out.insert(format!("{tp}.post_attention_layernorm.weight"), (gain(&w("post_attention_layernorm")?), vec![dd]));
        // q/k/v: old heads' rows keep their old input columns (new columns read zeros); new
        // heads are random. o_proj: new output rows and new heads' columns are zero.
        for (name, rows, trows) in [
            ("self_attn.q_proj", q_rows, tq_rows),
            ("self_attn.k_proj", kv_rows, tkv_rows),
            ("self_attn.v_proj", kv_rows, tkv_rows),
        ] {
            let m = pad(&w(name)?, rows, d, trows, dd, rng.normal(trows * dd));
            out.insert(format!("{tp}.{name}.weight"), (m, vec![trows, dd]));
        }
        let o = pad(&w("self_attn.o_proj")?, d, q_rows, dd, tq_rows, vec![0.0; dd * tq_rows]);
        out.insert(format!("{tp}.self_attn.o_proj.weight"), (o, vec![dd, tq_rows]));
        let (gate, up, down) = (w("mlp.gate_proj")?, w("mlp.up_proj")?, w("mlp.down_proj")?);
        let (mut g2, mut u2) =
            (pad(&gate, f, d, ff, dd, rng.normal(ff * dd)), pad(&up, f, d, ff, dd, rng.normal(ff * dd)));
        let mut dn = pad(&down, d, f, dd, ff, vec![0.0; dd * ff]);
        if plan.widen == Widen::Split {
            for j in f..ff {
                let s = j % f;
                for k in 0..dd {
                    g2[j * dd + k] = g2[s * dd + k];
                    u2[j * dd + k] = u2[s * dd + k];
                }
            }
            for s in (0..f).filter(|&s| replicas[s] > 1) {
                let noise = rng.normal(replicas[s] * dd);
                for k in 0..dd {
                    let mean = (0..replicas[s]).map(|r| noise[r * dd + k]).sum::<f32>() / replicas[s] as f32;
                    for r in 0..replicas[s] {
                        u2[(s + r * f) * dd + k] += noise[r * dd + k] - mean;
                    }
                }
            }
            for r in 0..d {
                for j in 0..ff {
                    dn[r * ff + j] = down[r * f + j % f] / replicas[j % f] as f32;
                }
            }
        }
        out.insert(format!("{tp}.mlp.gate_proj.weight"), (g2, vec![ff, dd]));
        out.insert(format!("{tp}.mlp.up_proj.weight"), (u2, vec![ff, dd]));
        out.insert(format!("{tp}.mlp.down_proj.weight"), (dn, vec![dd, ff]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::ml::model::Model;

    fn source() -> Model {
        Model::init(crate::ml::model::tiny(40, 2, 2, false), 7, &Device::Cpu).unwrap()
    }

    fn plan(layers: usize, depth: Depth, hidden: usize, ffn: usize, widen: Widen) -> Plan {
        Plan { layers, depth, placement: Placement::Interleave, hidden, ffn, widen, seed: 3 }
    }

    fn grown(m: &Model, p: &Plan) -> Model {
        let t = target(&m.config, p).unwrap();
        let src: HashMap<String, Flat> = m
            .params()
            .into_iter()
            .map(|(k, v)| (k, (v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), v.dims().to_vec())))
            .collect();
        let out = grow(&m.config, &t, p, &src).unwrap();
        let tensors = out
            .into_iter()
            .map(|(k, (data, shape))| (k, Tensor::from_vec(data, shape, &Device::Cpu).unwrap()))
            .collect();
        Model::from_tensors(t, tensors, &Device::Cpu).unwrap()
    }

    fn logits(m: &Model) -> Vec<f32> {
        let x = Tensor::new(&[[3u32, 17, 5, 39, 0, 22, 8, 11]], &Device::Cpu).unwrap();
        m.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn zero_depth_growth_keeps_logits_bitwise() {
        let m = source();
        for placement in [Placement::End, Placement::Interleave] {
            let mut p = plan(5, Depth::Zero, 16, 24, Widen::Zero);
            p.placement = placement;
            let g = grown(&m, &p);
            assert_eq!(g.config.num_hidden_layers, 5);
            assert!(logits(&g).iter().zip(logits(&m)).all(|(a, b)| a.to_bits() == b.to_bits()), "{placement:?}");
        }
    }

    #[test]
    fn stack_copies_block_i_from_source_block_i_mod_l_and_refuses_non_multiples() {
        let m = source();
        let g = grown(&m, &plan(6, Depth::Stack, 16, 24, Widen::Zero));
        for i in 0..6 {
            for part in ["self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj", "input_layernorm"] {
                let a = g
                    .param(&format!("model.layers.{i}.{part}.weight"))
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let b = m
                    .param(&format!("model.layers.{}.{part}.weight", i % 2))
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "block {i} {part}");
            }
        }
        assert_eq!(
            target(&m.config, &plan(5, Depth::Stack, 16, 24, Widen::Zero)).unwrap_err(),
            GrowError::Stack { source_layers: m.config.num_hidden_layers, layers: 5 }
        );
    }

    #[test]
    fn width_growth_preserves_the_function_and_matches_a_fresh_target_layout() {
        let m = source();
        let reference = logits(&m);
        let scale = reference.iter().fold(0f32, |a, x| a.max(x.abs()));
        for widen in [Widen::Split, Widen::Zero] {
            let p = plan(3, Depth::Zero, 32, 40, widen);
            let g = grown(&m, &p);
            let max = logits(&g).iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(max <= 1e-5 * scale.max(1.0), "{widen:?}: max |Δ| = {max}");
            let fresh = Model::init(g.config.clone(), 1, &Device::Cpu).unwrap();
            let shapes = |m: &Model| m.params().into_iter().map(|(k, v)| (k, v.dims().to_vec())).collect::<Vec<_>>();
            assert_eq!(shapes(&g), shapes(&fresh));
            assert_eq!((g.config.num_attention_heads, g.config.num_key_value_heads), (8, 4));
        }
    }

    fn row(m: &Model, name: &str, r: usize) -> Vec<f32> {
        let t = m.param(name).as_tensor().clone();
        t.get(r).unwrap().to_vec1::<f32>().unwrap()
    }

    /// Without the noise on the up rows the copies of a neuron keep bit-identical gate rows
    /// through training (identical gradients, identical AdamW state).
    #[test]
    fn split_copies_of_a_neuron_diverge_under_training() {
        use crate::ml::optim::{AdamW, AdamWConfig};
        let m = source();
        let (d, f) = (m.config.hidden_size, m.config.intermediate_size);
        let g = grown(&m, &plan(2, Depth::Zero, d, 2 * f, Widen::Split));
        let (gate, up) = ("model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight");
        assert_eq!(row(&g, gate, 3), row(&g, gate, 3 + f), "the gate rows start as copies");
        assert_ne!(row(&g, up, 3), row(&g, up, 3 + f), "the up rows differ");
        let x = Tensor::new(&[[3u32, 17, 5, 39, 0, 22, 8, 11], [1, 2, 3, 4, 5, 6, 7, 8]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[[17u32, 5, 39, 0, 22, 8, 11, 3], [2, 3, 4, 5, 6, 7, 8, 9]], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(g.params(), AdamWConfig::default()).unwrap();
        for _ in 0..5 {
            let grads = g.loss(&x, &y).unwrap().backward().unwrap();
            opt.step(&grads, 1e-2).unwrap();
        }
        for layer in 0..2 {
            let gate = format!("model.layers.{layer}.mlp.gate_proj.weight");
            for s in [0, 3, f - 1] {
                let (a, b) = (row(&g, &gate, s), row(&g, &gate, s + f));
                let apart = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
                assert!(apart > 1e-3, "layer {layer} neuron {s}: its copies are {apart} apart after 5 steps");
            }
        }
    }

    #[test]
    fn every_parameter_of_a_grown_model_gets_a_gradient_within_two_steps_and_it_trains() {
        use crate::ml::optim::{AdamW, AdamWConfig};
        let m = source();
        let g = grown(&m, &plan(4, Depth::Zero, 32, 40, Widen::Zero));
        let x = Tensor::new(&[[3u32, 17, 5, 39, 0, 22, 8, 11], [1, 2, 3, 4, 5, 6, 7, 8]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[[17u32, 5, 39, 0, 22, 8, 11, 3], [2, 3, 4, 5, 6, 7, 8, 9]], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(g.params(), AdamWConfig { weight_decay: 0.0, ..Default::default() }).unwrap();
        let mut touched = std::collections::HashSet::new();
        let mut losses = Vec::new();
        for _ in 0..20 {
            let loss = g.loss(&x, &y).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
            let grads = loss.backward().unwrap();
            if touched.len() < g.params().len() {
                for (name, var) in g.params() {
                    let norm = grads
                        .get(&var)
                        .map_or(0.0, |t| t.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap());
                    if norm > 0.0 {
                        touched.insert(name);
                    }
                }
                if losses.len() == 2 {
                    let missing: Vec<String> =
                        g.params().into_iter().map(|(n, _)| n).filter(|n| !touched.contains(n)).collect();
                    assert!(missing.is_empty(), "no gradient within two steps: {missing:?}");
                }
            }
            opt.step(&grads, 1e-2).unwrap();
        }
        assert!(losses[19] < losses[0], "{losses:?}");
    }
}
