//! [`Model`]: a Llama-style decoder (token embedding, RMSNorm, rotary position embedding,
//! causal multi-head attention with optional grouped KV heads, SwiGLU MLP, optional tied
//! embeddings) whose parameters carry Hugging Face `LlamaForCausalLM` names, so a saved
//! folder (`config.json` + `model.safetensors`) is readable by any HF Llama loader.
//!
//! Written only with differentiable candle ops: candle-nn's fused `rms_norm`,
//! `softmax_last_dim` and `rope` return tensors with no backward op, so every parameter
//! upstream of them would silently stop learning (docs/architecture.md#the-model-on-candle). Initialisation draws from a
//! seeded ChaCha RNG of our own, since candle cannot seed its CPU RNG.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// `config.json`, with the field names of Hugging Face's `LlamaConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default = "architectures")]
    pub architectures: Vec<String>,
    #[serde(default = "model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default = "hidden_act")]
    pub hidden_act: String,
    #[serde(default = "torch_dtype")]
    pub torch_dtype: String,
}

fn architectures() -> Vec<String> {
    vec!["LlamaForCausalLM".into()]
}
fn model_type() -> String {
    "llama".into()
}
fn hidden_act() -> String {
    "silu".into()
}
fn torch_dtype() -> String {
    "float32".into()
}

/// A shape a Llama model cannot have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("`{0}` must be positive")]
    NotPositive(&'static str),
    #[error("hidden size {hidden} is not a multiple of {heads} heads")]
    Heads { hidden: usize, heads: usize },
    #[error("head dimension {0} must be even for rotary embeddings")]
    OddHeadDim(usize),
    #[error("{heads} attention heads are not a multiple of {kv} key/value heads")]
    KvHeads { heads: usize, kv: usize },
    #[error("`rms_norm_eps` and `rope_theta` must be positive")]
    Constants,
}

impl Config {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the shape constraints a Llama model needs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::NotPositive(name));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ConfigError::Heads { hidden: self.hidden_size, heads: self.num_attention_heads });
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(ConfigError::OddHeadDim(self.head_dim()));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(ConfigError::KvHeads { heads: self.num_attention_heads, kv: self.num_key_value_heads });
        }
        if !(self.rms_norm_eps > 0.0
            && self.rms_norm_eps.is_finite()
            && self.rope_theta > 0.0
            && self.rope_theta.is_finite())
        {
            return Err(ConfigError::Constants);
        }
        Ok(())
    }

    /// Every parameter name with its shape, in a fixed order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let kv = self.num_key_value_heads * self.head_dim();
        let mut out = vec![("model.embed_tokens.weight".to_owned(), vec![v, h])];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            out.push((format!("{p}.input_layernorm.weight"), vec![h]));
            out.push((format!("{p}.self_attn.q_proj.weight"), vec![h, h]));
            out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
            out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
            out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, h]));
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
            out.push((format!("{p}.mlp.gate_proj.weight"), vec![f, h]));
            out.push((format!("{p}.mlp.up_proj.weight"), vec![f, h]));
            out.push((format!("{p}.mlp.down_proj.weight"), vec![h, f]));
        }
        out.push(("model.norm.weight".to_owned(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_owned(), vec![v, h]));
        }
        out
    }

    pub fn parameter_count(&self) -> usize {
        self.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

/// A Llama model whose parameters are candle `Var`s keyed by their HF names.
pub struct Model {
    pub config: Config,
    params: BTreeMap<String, Var>,
    device: Device,
    /// The dtype the forward pass computes in. The parameters (and so the optimizer and the
    /// saved weights) stay f32: with bf16 or f16 every step casts them down, and their
    /// gradients come back to f32 through the casts.
    compute: DType,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("config", &self.config).field("params", &self.params.len()).finish()
    }
}

/// Input of a forward pass beyond the token ids: per-token positions and an additive
/// attention mask (both default to one causal sequence per row).
#[derive(Default)]
pub struct Extra<'a> {
    /// `[batch, seq]` u32 positions; packed samples restart at 0.
    pub positions: Option<&'a Tensor>,
    /// `[batch, 1, seq, seq]` f32, 0 where attention is allowed and -inf elsewhere.
    pub mask: Option<&'a Tensor>,
}

impl Model {
    /// A freshly initialised model: N(0, 0.02) for embeddings and projections, with the
    /// residual writers (`o_proj`, `down_proj`) scaled by 1/√(2·layers) (GPT-2), norms at 1.
    pub fn init(config: Config, seed: u64, device: &Device) -> candle_core::Result<Self> {
        config.validate().map_err(candle_core::Error::wrap)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let std = 0.02f32;
        let residual_std = std / (2.0 * config.num_hidden_layers as f32).sqrt();
        let mut params = BTreeMap::new();
        for (name, shape) in config.parameter_shapes() {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else {
                let s = if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
                    residual_std
                } else {
                    std
                };
                let normal = Normal::new(0.0f32, s).expect("a valid standard deviation");
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            };
            let t = Tensor::from_vec(data, shape, device)?;
            params.insert(name, Var::from_tensor(&t)?);
        }
        Ok(Self { config, params, device: device.clone(), compute: DType::F32 })
    }

    /// Builds a model from named tensors, which must be exactly the config's parameters.
    pub fn from_tensors(
        config: Config,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> candle_core::Result<Self> {
        config.validate().map_err(candle_core::Error::wrap)?;
        let mut tensors = tensors;
        let mut params = BTreeMap::new();
        for (name, shape) in config.parameter_shapes() {
            let t = tensors
                .remove(&name)
                .ok_or_else(|| candle_core::Error::msg(format!("checkpoint lacks tensor `{name}`")))?;
            if t.dims() != shape.as_slice() {
                candle_core::bail!("tensor `{name}` has shape {:?}, the config says {:?}", t.dims(), shape);
            }
            let t = t.to_dtype(DType::F32)?.to_device(device)?;
            params.insert(name, Var::from_tensor(&t)?);
        }
        if let Some(extra) = tensors.keys().min() {
            candle_core::bail!("checkpoint has tensor `{extra}` that the config does not describe");
        }
        Ok(Self { config, params, device: device.clone(), compute: DType::F32 })
    }

    /// Loads `config.json` and `model.safetensors` from a model folder.
    pub fn load(dir: &Path, device: &Device) -> candle_core::Result<Self> {
        let config: Config = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)
            .map_err(|e| candle_core::Error::msg(format!("`{}`: {e}", dir.join("config.json").display())))?;
        let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), device)?;
        Self::from_tensors(config, tensors, device)
    }

    /// Writes `config.json` and `model.safetensors` into `dir`.
    pub fn save(&self, dir: &Path) -> candle_core::Result<()> {
        let mut config = serde_json::to_vec_pretty(&self.config).expect("configs serialise");
        config.push(b'\n');
        std::fs::write(dir.join("config.json"), config)?;
        let tensors: HashMap<String, Tensor> =
            self.params.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Parameters sorted by name.
    pub fn params(&self) -> Vec<(String, Var)> {
        self.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn param(&self, name: &str) -> &Var {
        &self.params[name]
    }

    /// The dtype the forward pass computes in.
    pub fn compute(&self) -> DType {
        self.compute
    }

    /// Computes the forward pass in `dtype` (f32, bf16 or f16) from here on.
    pub fn set_compute(&mut self, dtype: DType) {
        self.compute = dtype;
    }

    /// A parameter as the forward pass uses it: in the compute dtype.
    fn p(&self, name: &str) -> candle_core::Result<Tensor> {
        self.params[name].as_tensor().to_dtype(self.compute)
    }

    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]` (u32), one causal sequence per row.
    pub fn forward(&self, tokens: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(tokens, Extra::default())
    }

    pub fn forward_with(&self, tokens: &Tensor, extra: Extra<'_>) -> candle_core::Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let c = &self.config;
        let h = c.hidden_size;
        let positions = match extra.positions {
            Some(p) => p.clone(),
            None => Tensor::arange(0u32, t as u32, &self.device)?.unsqueeze(0)?.broadcast_as((b, t))?.contiguous()?,
        };
        let dtype = self.compute;
        let (cos, sin) = self.rope_tables(&positions)?;
        let (cos, sin) = (cos.to_dtype(dtype)?, sin.to_dtype(dtype)?);
        let mask = match extra.mask {
            Some(m) => m.clone(),
            None => causal_mask(t, &self.device)?.reshape((1, 1, t, t))?,
        }
        .to_dtype(dtype)?;
        let mut x = self.p("model.embed_tokens.weight")?.embedding(&tokens.flatten_all()?)?.reshape((b, t, h))?;
        for l in 0..c.num_hidden_layers {
            let pre = format!("model.layers.{l}");
            let normed = rms_norm(&x, &self.p(&format!("{pre}.input_layernorm.weight"))?, c.rms_norm_eps)?;
            let attn = self.attention(&normed, &pre, &cos, &sin, &mask)?;
            x = (x + attn)?;
            let normed = rms_norm(&x, &self.p(&format!("{pre}.post_attention_layernorm.weight"))?, c.rms_norm_eps)?;
            let gate = linear(&normed, &self.p(&format!("{pre}.mlp.gate_proj.weight"))?)?;
            let up = linear(&normed, &self.p(&format!("{pre}.mlp.up_proj.weight"))?)?;
            let mlp = linear(&(gate.silu()? * up)?, &self.p(&format!("{pre}.mlp.down_proj.weight"))?)?;
            x = (x + mlp)?;
        }
        let x = rms_norm(&x, &self.p("model.norm.weight")?, c.rms_norm_eps)?;
        let head = if c.tie_word_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" };
        // Half-precision logits leave in f32: the loss and sampling read them.
        let logits = linear(&x, &self.p(head)?)?;
        match self.compute {
            DType::BF16 | DType::F16 => logits.to_dtype(DType::F32),
            _ => Ok(logits),
        }
    }

    fn attention(
        &self,
        x: &Tensor,
        pre: &str,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let q =
            linear(x, &self.p(&format!("{pre}.self_attn.q_proj.weight"))?)?.reshape((b, t, nh, hd))?.transpose(1, 2)?;
        let k = linear(x, &self.p(&format!("{pre}.self_attn.k_proj.weight"))?)?
            .reshape((b, t, nkv, hd))?
            .transpose(1, 2)?;
        let v = linear(x, &self.p(&format!("{pre}.self_attn.v_proj.weight"))?)?
            .reshape((b, t, nkv, hd))?
            .transpose(1, 2)?;
        let q = apply_rope(&q.contiguous()?, cos, sin)?;
        let k = apply_rope(&k.contiguous()?, cos, sin)?;
        let (k, v) = (repeat_kv(k, nh / nkv)?, repeat_kv(v.contiguous()?, nh / nkv)?);
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?;
        let scores = scores.broadcast_add(mask)?;
        let probs = super::ops::softmax_last(&scores)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, t, nh * hd))?;
        linear(&out, &self.p(&format!("{pre}.self_attn.o_proj.weight"))?)
    }

    /// cos and sin tables `[batch, 1, seq, head_dim]` for the given positions, in HF's
    /// "rotate half" layout (the two halves share frequencies).
    fn rope_tables(&self, positions: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let c = &self.config;
        let hd = c.head_dim();
        let inv: Vec<f32> = (0..hd / 2).map(|i| 1.0 / (c.rope_theta as f32).powf(2.0 * i as f32 / hd as f32)).collect();
        let inv = Tensor::from_vec(inv, (1, 1, hd / 2), &self.device)?;
        let pos = positions.to_dtype(DType::F32)?.unsqueeze(2)?;
        let freqs = pos.broadcast_mul(&inv)?;
        let freqs = Tensor::cat(&[&freqs, &freqs], 2)?.unsqueeze(1)?;
        Ok((freqs.cos()?, freqs.sin()?))
    }

    /// The mean cross-entropy of next-token prediction over `[batch, seq]` inputs and targets.
    pub fn loss(&self, inputs: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
        self.token_losses(inputs, targets, Extra::default())?.mean_all()
    }

    /// The cross-entropy of every position, flattened to `[batch · seq]`.
    pub fn token_losses(&self, inputs: &Tensor, targets: &Tensor, extra: Extra<'_>) -> candle_core::Result<Tensor> {
        let logits = self.forward_with(inputs, extra)?;
        let v = self.config.vocab_size;
        super::ops::cross_entropy_rows(&logits.reshape(((), v))?, &targets.flatten_all()?)
    }
}

/// `x · wᵀ` for `x` of any leading shape.
fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let inner = *dims.last().expect("at least one dim");
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let out = x.reshape((rows, inner))?.matmul(&w.t()?)?;
    let mut shape = dims[..dims.len() - 1].to_vec();
    shape.push(w.dim(0)?);
    out.reshape(shape)
}

/// RMSNorm with a backward pass (candle's fused one has none).
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    super::ops::rms_norm(x, weight, eps)
}

fn rotate_half(x: &Tensor) -> candle_core::Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)
}

/// Rotary embedding written out (candle's fused `rope` has no backward).
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    x.broadcast_mul(cos)? + rotate_half(x)?.broadcast_mul(sin)?
}

fn repeat_kv(x: Tensor, n: usize) -> candle_core::Result<Tensor> {
    if n == 1 {
        return Ok(x);
    }
    let (b, kv, t, d) = x.dims4()?;
    x.unsqueeze(2)?.broadcast_as((b, kv, n, t, d))?.contiguous()?.reshape((b, kv * n, t, d))
}

/// `[seq, seq]`: 0 on and below the diagonal, -inf above.
pub fn causal_mask(t: usize, device: &Device) -> candle_core::Result<Tensor> {
    let data: Vec<f32> =
        (0..t).flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY })).collect();
    Tensor::from_vec(data, (t, t), device)
}

/// A tiny config for tests: hidden 16, FFN 24, 4 heads, 64 positions.
#[cfg(test)]
pub(crate) fn tiny(vocab: usize, layers: usize, kv_heads: usize, tie: bool) -> Config {
    Config {
        architectures: architectures(),
        model_type: model_type(),
        vocab_size: vocab,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        num_key_value_heads: kv_heads,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: tie,
        bos_token_id: Some(0),
        eos_token_id: Some(0),
        hidden_act: hidden_act(),
        torch_dtype: torch_dtype(),
    }
}

#[cfg(test)]
mod tests;
