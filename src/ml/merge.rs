//! Model merging, per tensor, with mergekit's semantics and parameter names: `linear`,
//! `slerp`, `task_arithmetic`, `ties`, `dare_ties`, `dare_linear`, `breadcrumbs`,
//! `breadcrumbs_ties` and `model_stock`. Tensors are flat f32 slices; "task vectors" are
//! δᵢ = θᵢ − θ_base.
//!
//! Two deliberate differences from mergekit, both documented in docs/stages.md: DARE rescales
//! kept entries by 1/density (the DARE paper's rule; mergekit ≥ 0.0.5 matches L1 norms
//! instead), and breadcrumbs keeps `int(density·n)` entries even when `gamma·n < 1` (mergekit's
//! `indices[n_bot:-n_top]` drops everything when n_top is 0).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Linear,
    Slerp,
    TaskArithmetic,
    Ties,
    DareTies,
    DareLinear,
    Breadcrumbs,
    BreadcrumbsTies,
    ModelStock,
}

impl Method {
    /// Whether the method works on task vectors and so needs a base model.
    pub fn needs_base(self) -> bool {
        !matches!(self, Method::Linear)
    }

    /// mergekit's default for `normalize`.
    pub fn normalizes_by_default(self) -> bool {
        matches!(self, Method::Linear | Method::Ties)
    }
}

/// The settings of one merge (resolved defaults).
#[derive(Clone, Debug)]
pub struct Settings {
    pub method: Method,
    /// One weight per model.
    pub weights: Vec<f64>,
    pub normalize: bool,
    pub t: f64,
    pub lambda: f64,
    pub density: f64,
    pub gamma: f64,
    pub rescale: bool,
    pub seed: u64,
}

/// A merge parameter as mergekit takes it: a number; a gradient — a list of values spread
/// evenly over the layers and interpolated linearly between them; or a list of rules, each an
/// optional tensor-name `filter` (a substring) and a number or gradient, the first matching
/// rule applying and a rule without a filter serving every other tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Setting {
    Value(f64),
    Gradient(Vec<f64>),
    Rules(Vec<Rule>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    pub value: RuleValue,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RuleValue {
    Value(f64),
    Gradient(Vec<f64>),
}

/// A malformed per-tensor merge setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("gradients and rule lists must not be empty")]
    Empty,
    #[error("values must be finite")]
    NotFinite,
}

impl Setting {
    /// Every number the setting holds (for range checks).
    pub fn values(&self) -> Vec<f64> {
        match self {
            Setting::Value(v) => vec![*v],
            Setting::Gradient(g) => g.clone(),
            Setting::Rules(rules) => rules
                .iter()
                .flat_map(|r| match &r.value {
                    RuleValue::Value(v) => vec![*v],
                    RuleValue::Gradient(g) => g.clone(),
                })
                .collect(),
        }
    }

    /// Whether the setting is well formed: no empty gradient or rule list.
    pub fn check(&self) -> Result<(), SettingError> {
        let empty = match self {
            Setting::Value(_) => false,
            Setting::Gradient(g) => g.is_empty(),
            Setting::Rules(rules) => {
                rules.is_empty() || rules.iter().any(|r| matches!(&r.value, RuleValue::Gradient(g) if g.is_empty()))
            }
        };
        if empty {
            return Err(SettingError::Empty);
        }
        if self.values().iter().any(|v| !v.is_finite()) {
            return Err(SettingError::NotFinite);
        }
        Ok(())
    }

    /// The value for tensor `name` at relative depth `t` (0 = first layer, 1 = last), or
    /// `None` when no rule applies to it.
    pub fn at(&self, name: &str, t: f64) -> Option<f64> {
        match self {
            Setting::Value(v) => Some(*v),
            Setting::Gradient(g) => Some(interpolate(g, t)),
            Setting::Rules(rules) => {
                rules.iter().find(|r| r.filter.as_deref().is_none_or(|f| name.contains(f))).map(|r| match &r.value {
                    RuleValue::Value(v) => *v,
                    RuleValue::Gradient(g) => interpolate(g, t),
                })
            }
        }
    }
}

/// `np.interp(t · (n − 1), range(n), values)`.
fn interpolate(values: &[f64], t: f64) -> f64 {
    let x = t.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let i = (x.floor() as usize).min(values.len() - 1);
    let j = (i + 1).min(values.len() - 1);
    values[i] + (values[j] - values[i]) * (x - i as f64)
}

/// Where a tensor sits for gradients: layer i of n at i/(n−1), the embeddings before the
/// first layer (0) and the final norm and head after the last (1), as mergekit places them.
pub fn depth(name: &str, layers: usize) -> f64 {
    if let Some(rest) = name.strip_prefix("model.layers.")
        && let Some(i) = rest.split('.').next().and_then(|i| i.parse::<usize>().ok())
    {
        return if layers > 1 { i as f64 / (layers - 1) as f64 } else { 0.0 };
    }
    if name.starts_with("model.embed_tokens") { 0.0 } else { 1.0 }
}

/// Merges one tensor. `models` are the fine-tuned tensors; `base` the base model's (required
/// unless the method is `linear`). `stream` separates the random draws of different tensors.
pub fn merge(s: &Settings, models: &[&[f32]], base: Option<&[f32]>, stream: u64) -> Vec<f32> {
    let n = models[0].len();
    match s.method {
        Method::Linear => {
            let total: f64 = if s.normalize { s.weights.iter().sum() } else { 1.0 };
            (0..n)
                .map(|j| (models.iter().zip(&s.weights).map(|(m, w)| w * m[j] as f64).sum::<f64>() / total) as f32)
                .collect()
        }
        Method::Slerp => slerp(s.t, base.expect("slerp has a base"), models[0]),
        Method::ModelStock => model_stock(models, base.expect("model_stock has a base")),
        method => {
            let base = base.expect("task-vector methods have a base");
            let deltas: Vec<Vec<f64>> = models
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let d: Vec<f64> = m.iter().zip(base).map(|(a, b)| *a as f64 - *b as f64).collect();
                    match method {
                        Method::Ties => magnitude(&d, s.density),
                        Method::DareTies | Method::DareLinear => bernoulli(&d, s, stream * 1_000 + i as u64),
                        Method::Breadcrumbs | Method::BreadcrumbsTies => outliers(&d, s.density, s.gamma),
                        _ => d,
                    }
                })
                .collect();
            let consensus = matches!(method, Method::Ties | Method::DareTies | Method::BreadcrumbsTies);
            (0..n)
                .map(|j| {
                    let weighted: Vec<f64> = deltas.iter().zip(&s.weights).map(|(d, w)| w * d[j]).collect();
                    let (mixed, norm) = if consensus {
                        let majority = if weighted.iter().sum::<f64>() >= 0.0 { 1.0 } else { -1.0 };
                        let agree = |x: &f64| *x != 0.0 && x.signum() == majority;
                        let mixed: f64 = weighted.iter().filter(|x| agree(x)).sum();
                        let norm: f64 = weighted.iter().zip(&s.weights).filter(|(x, _)| agree(x)).map(|(_, w)| w).sum();
                        (mixed, if norm == 0.0 { 1.0 } else { norm })
                    } else {
                        (weighted.iter().sum(), s.weights.iter().sum())
                    };
                    let merged = if s.normalize { mixed / norm } else { mixed };
                    (base[j] as f64 + s.lambda * merged) as f32
                })
                .collect()
        }
    }
}

/// Keeps the `int(density·n)` entries of largest magnitude (ties by position).
fn magnitude(d: &[f64], density: f64) -> Vec<f64> {
    if density >= 1.0 {
        return d.to_vec();
    }
    let k = (density * d.len() as f64) as usize;
    let mut order: Vec<usize> = (0..d.len()).collect();
    order.sort_by(|&a, &b| d[b].abs().total_cmp(&d[a].abs()).then(a.cmp(&b)));
    let mut out = vec![0.0; d.len()];
    for &i in &order[..k] {
        out[i] = d[i];
    }
    out
}

/// DARE: keeps each entry with probability `density` (seeded), rescaled by 1/density.
fn bernoulli(d: &[f64], s: &Settings, stream: u64) -> Vec<f64> {
    if s.density >= 1.0 {
        return d.to_vec();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    rng.set_stream(stream);
    let scale = if s.rescale && s.density > 0.0 { 1.0 / s.density } else { 1.0 };
    d.iter().map(|x| if rng.random::<f64>() < s.density { x * scale } else { 0.0 }).collect()
}

/// Model breadcrumbs: drops the `gamma` fraction of largest-magnitude entries and as many of
/// the smallest as leaves exactly `int(density·n)`.
fn outliers(d: &[f64], density: f64, gamma: f64) -> Vec<f64> {
    let n = d.len();
    let keep = ((density * n as f64) as usize).min(n);
    let mut n_top = (gamma * n as f64) as usize;
    let mut n_bot = n as i64 - keep as i64 - n_top as i64;
    if n_bot < 0 {
        n_top = (n_top as i64 + n_bot).max(0) as usize;
        n_bot = 0;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| d[a].abs().total_cmp(&d[b].abs()).then(a.cmp(&b)));
    let mut out = vec![0.0; n];
    for &i in &order[n_bot as usize..n - n_top] {
        out[i] = d[i];
    }
    out
}

/// Spherical interpolation of the whole tensor, falling back to linear when the two are
/// nearly colinear (|cos| > 0.9995), as mergekit does.
fn slerp(t: f64, v0: &[f32], v1: &[f32]) -> Vec<f32> {
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let (n0, n1) = (norm(v0), norm(v1));
    let lerp = || v0.iter().zip(v1).map(|(a, b)| ((1.0 - t) * *a as f64 + t * *b as f64) as f32).collect();
    if n0 <= 1e-8 || n1 <= 1e-8 {
        return lerp();
    }
    let dot: f64 = v0.iter().zip(v1).map(|(a, b)| (*a as f64 / n0) * (*b as f64 / n1)).sum();
    if dot.abs() > 0.9995 {
        return lerp();
    }
    let theta = dot.clamp(-1.0, 1.0).acos();
    let (s0, s1) = (((1.0 - t) * theta).sin() / theta.sin(), (t * theta).sin() / theta.sin());
    v0.iter().zip(v1).map(|(a, b)| (s0 * *a as f64 + s1 * *b as f64) as f32).collect()
}

/// Model Stock: t = N·cos / (1 + (N−1)·cos) from the mean pairwise cosine of the task
/// vectors; θ = t·mean(θᵢ) + (1 − t)·θ_base. The paper's geometry assumes cos ≥ 0; below it the
/// denominator reaches 0 at cos = −1/(N−1) (two opposite fine-tunes) and t leaves [0, 1], so a
/// negative mean cosine counts as 0 — fine-tunes that disagree give the base.
fn model_stock(models: &[&[f32]], base: &[f32]) -> Vec<f32> {
    let deltas: Vec<Vec<f64>> =
        models.iter().map(|m| m.iter().zip(base).map(|(a, b)| *a as f64 - *b as f64).collect()).collect();
    let k = deltas.len() as f64;
    let mut cos_sum = 0.0;
    let mut pairs = 0.0;
    for i in 0..deltas.len() {
        for j in i + 1..deltas.len() {
            let dot: f64 = deltas[i].iter().zip(&deltas[j]).map(|(a, b)| a * b).sum();
            let norms = (deltas[i].iter().map(|a| a * a).sum::<f64>().sqrt()
                * deltas[j].iter().map(|a| a * a).sum::<f64>().sqrt())
            .max(1e-6);
            cos_sum += (dot / norms).clamp(-1.0, 1.0);
            pairs += 1.0;
        }
    }
    let cos = (cos_sum / pairs).max(0.0);
    let t = k * cos / (1.0 + (k - 1.0) * cos);
    (0..base.len())
        .map(|j| {
            let mean = models.iter().map(|m| m[j] as f64).sum::<f64>() / k;
            (t * mean + (1.0 - t) * base[j] as f64) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(method: Method, weights: &[f64]) -> Settings {
        Settings {
            method,
            weights: weights.to_vec(),
            normalize: method.normalizes_by_default(),
            t: 0.5,
            lambda: 1.0,
            density: 1.0,
            gamma: 0.01,
            rescale: true,
            seed: 1,
        }
    }

    const A: [f32; 4] = [1.0, -2.0, 3.0, 0.5];
    const B: [f32; 4] = [0.0, 1.0, 1.0, -1.0];
    const BASE: [f32; 4] = [0.5, 0.0, 1.0, 0.0];

    #[test]
    fn linear_of_identical_models_is_that_model_bit_exactly() {
        let m: Vec<f32> = (0..97).map(|i| (i as f32 * 0.37).sin() * 1e-3 + 0.1).collect();
        let out = merge(&settings(Method::Linear, &[0.2, 0.5, 0.3]), &[&m, &m, &m], None, 0);
        assert!(out.iter().zip(&m).all(|(a, b)| a.to_bits() == b.to_bits()));
        // A hand-computed case: (1·A + 3·B) / 4.
        let out = merge(&settings(Method::Linear, &[1.0, 3.0]), &[&A, &B], None, 0);
        assert_eq!(out, vec![0.25, 0.25, 1.5, -0.625]);
    }

    #[test]
    fn slerp_endpoints_symmetry_and_a_hand_computed_case() {
        let mut s = settings(Method::Slerp, &[1.0]);
        s.t = 0.0;
        assert_eq!(merge(&s, &[&A], Some(&BASE), 0), BASE.to_vec());
        // Orthogonal unit vectors: the midpoint is (e0 + e1)/√2.
        let (e0, e1) = ([1.0f32, 0.0], [0.0f32, 1.0]);
        s.t = 0.5;
        let mid = merge(&s, &[&e1], Some(&e0), 0);
        assert!((mid[0] - 0.5f32.sqrt()).abs() < 1e-6 && (mid[1] - 0.5f32.sqrt()).abs() < 1e-6);
        // Nearly colinear tensors (cos > 0.9995) are lerped: here exactly, in binary fractions.
        let (v0, v1) = ([1.0f32, 0.0], [1.0f32, 0.03125]);
        s.t = 0.25;
        assert_eq!(merge(&s, &[&v1], Some(&v0), 0), vec![1.0, 0.0078125]);
        // slerp(t, a, b) = slerp(1 − t, b, a).
        s.t = 0.3;
        let ab = merge(&s, &[&B], Some(&A), 0);
        s.t = 0.7;
        let ba = merge(&s, &[&A], Some(&B), 0);
        assert!(ab.iter().zip(&ba).all(|(x, y)| (x - y).abs() < 1e-6));
    }

    #[test]
    fn task_arithmetic_lambda_zero_is_the_base_and_a_hand_computed_case() {
        let mut s = settings(Method::TaskArithmetic, &[1.0, 1.0]);
        s.lambda = 0.0;
        assert_eq!(merge(&s, &[&A, &B], Some(&BASE), 0), BASE.to_vec());
        s.lambda = 0.5;
        // base + 0.5·((A − base) + (B − base))
        assert_eq!(merge(&s, &[&A, &B], Some(&BASE), 0), vec![0.5, -0.5, 2.0, -0.25]);
    }

    #[test]
    fn ties_keeps_only_majority_sign_contributions() {
        let mut s = settings(Method::Ties, &[1.0, 1.0]);
        s.density = 1.0;
        // δA = [0.5, -2, 2, 0.5], δB = [-0.5, 1, 0, -1]; sums: [0, -1, 2, -0.5] → signs +, −, +, −.
        // Agreeing entries, normalised by their weights: [0.5/1, -2/1, 2/1, -1/1].
        assert_eq!(merge(&s, &[&A, &B], Some(&BASE), 0), vec![1.0, -2.0, 3.0, -1.0]);
        let d: Vec<f64> = (0..50).map(|i| ((i * 37 % 23) as f64 - 11.0) / 7.0).collect();
        assert_eq!(magnitude(&d, 0.3).iter().filter(|x| **x != 0.0).count(), 15);
    }

    #[test]
    fn dare_with_density_one_is_task_arithmetic_and_is_seeded() {
        let ta = merge(&settings(Method::TaskArithmetic, &[0.7, 0.3]), &[&A, &B], Some(&BASE), 0);
        let dl = merge(&settings(Method::DareLinear, &[0.7, 0.3]), &[&A, &B], Some(&BASE), 0);
        assert_eq!(ta, dl);
        let d: Vec<f64> = (0..10_000).map(|i| 1.0 + i as f64).collect();
        let mut s = settings(Method::DareLinear, &[1.0]);
        s.density = 0.3;
        let kept = bernoulli(&d, &s, 5);
        let frac = kept.iter().filter(|x| **x != 0.0).count() as f64 / d.len() as f64;
        assert!((frac - 0.3).abs() < 5.0 * (0.3f64 * 0.7 / 10_000.0).sqrt(), "{frac}");
        assert_eq!(kept, bernoulli(&d, &s, 5));
        assert_ne!(kept, bernoulli(&d, &s, 6));
        assert!(kept.iter().zip(&d).all(|(k, x)| *k == 0.0 || (*k - x / 0.3).abs() < 1e-9));
    }

    #[test]
    fn dare_ties_of_density_one_is_ties_with_its_sign_election() {
        let mut ties = settings(Method::Ties, &[1.0, 1.0]);
        ties.density = 1.0;
        let mut dare = settings(Method::DareTies, &[1.0, 1.0]);
        dare.density = 1.0;
        assert_eq!(merge(&dare, &[&A, &B], Some(&BASE), 0), merge(&ties, &[&A, &B], Some(&BASE), 0));
        assert_eq!(merge(&dare, &[&A, &B], Some(&BASE), 0), vec![1.0, -2.0, 3.0, -1.0]);
    }

    #[test]
    fn breadcrumbs_keeps_exactly_int_density_n_even_when_gamma_n_is_below_one() {
        // 40 distinct non-zero values, so every kept entry counts.
        let d: Vec<f64> = (0..40).map(|i| ((i * 13 % 41) as f64 - 20.5) * 0.1).collect();
        for (density, gamma) in [(0.5, 0.01), (0.5, 0.1), (0.9, 0.2), (1.0, 0.0), (0.1, 0.5), (0.33, 0.0)] {
            let kept = outliers(&d, density, gamma).iter().filter(|x| **x != 0.0).count();
            assert_eq!(kept, (density * 40.0) as usize, "density {density}, gamma {gamma}");
            assert_eq!(magnitude(&d, density).iter().filter(|x| **x != 0.0).count(), (density * 40.0) as usize);
        }
        // Keep int(0.5·4) = 2: gamma 0.25 drops the largest (4), the rest of the budget the smallest (1).
        assert_eq!(outliers(&[1.0, 2.0, 3.0, 4.0], 0.5, 0.25), vec![0.0, 2.0, 3.0, 0.0]);
    }

    #[test]
    fn model_stock_of_identical_fine_tunes_is_their_average_and_orthogonal_ones_give_the_base() {
        let s = settings(Method::ModelStock, &[1.0, 1.0]);
        assert_eq!(merge(&s, &[&A, &A], Some(&BASE), 0), A.to_vec());
        let base = [0.0f32, 0.0];
        let out = merge(&s, &[&[1.0, 0.0], &[0.0, 1.0]], Some(&base), 0);
        assert_eq!(out, vec![0.0, 0.0]);
    }

    /// Opposite task vectors put the unguarded formula's denominator at 0 (t = −2/0); nearly
    /// opposite ones make t a large negative factor that extrapolates away from both models.
    #[test]
    fn model_stock_of_opposite_fine_tunes_is_the_base() {
        let s = settings(Method::ModelStock, &[1.0, 1.0]);
        let base = [0.5f32, -0.25, 1.0];
        let opposite = merge(&s, &[&[1.5, 0.75, 1.0], &[-0.5, -1.25, 1.0]], Some(&base), 0);
        assert_eq!(opposite, base.to_vec());
        let nearly = merge(&s, &[&[1.5, 0.75, 1.0], &[-0.5, -1.25, 1.01]], Some(&base), 0);
        assert_eq!(nearly, base.to_vec());
    }

    #[test]
    fn settings_follow_mergekit_gradients_and_filters() {
        let s: Setting = serde_json::from_value(serde_json::json!([
            {"filter": "self_attn", "value": [0.0, 0.5, 0.3, 0.7, 1.0]},
            {"filter": "mlp", "value": [1.0, 0.0]},
            {"value": 0.5}
        ]))
        .unwrap();
        // Nine layers: layer 2 sits at t = 0.25, on the gradient's second point.
        let t = depth("model.layers.2.self_attn.q_proj.weight", 9);
        assert_eq!(t, 0.25);
        assert_eq!(s.at("model.layers.2.self_attn.q_proj.weight", t), Some(0.5));
        let between = s.at("model.layers.3.self_attn.q_proj.weight", depth("model.layers.3.x", 9)).unwrap();
        assert!((between - 0.4).abs() < 1e-12, "{between}");
        assert_eq!(s.at("model.layers.6.mlp.up_proj.weight", 0.75), Some(0.25));
        assert_eq!(s.at("model.norm.weight", depth("model.norm.weight", 9)), Some(0.5));
        assert_eq!(depth("model.embed_tokens.weight", 9), 0.0);
        assert_eq!(depth("lm_head.weight", 9), 1.0);
        assert_eq!(depth("model.layers.0.mlp.up_proj.weight", 1), 0.0);
        let plain: Setting = serde_json::from_value(serde_json::json!([0.0, 1.0])).unwrap();
        assert_eq!(plain.at("anything", 0.5), Some(0.5));
        let filtered: Setting = serde_json::from_value(serde_json::json!([{"filter": "mlp", "value": 1.0}])).unwrap();
        assert_eq!(filtered.at("model.layers.0.self_attn.o_proj.weight", 0.0), None);
        assert!(serde_json::from_value::<Setting>(serde_json::json!([])).unwrap().check().is_err());
        assert_eq!(serde_json::to_value(&s).unwrap()[2], serde_json::json!({"value": 0.5}));
    }
}
