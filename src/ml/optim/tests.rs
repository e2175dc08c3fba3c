//! AdamW's promises: bitwise agreement with candle's, bit-identical resumption, strict and
//! atomic loading, decay on matrices only.

use super::*;
use candle_nn::Optimizer as _;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.95;
const EPS: f64 = 1e-8;
const WD: f64 = 0.1;

/// Varies per step so that the test also covers passing a scheduled LR to every step.
fn lr_at(step: usize) -> f64 {
    0.05 / (1.0 + step as f64)
}

fn config(decay_all: bool) -> AdamWConfig {
    AdamWConfig { beta1: BETA1, beta2: BETA2, eps: EPS, weight_decay: WD, decay_all }
}

fn values(shape: &[usize], phase: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7 + phase).sin()).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// A least-squares regression (`w`, the 1-D `b`) plus a separate quadratic pull on `c`.
struct Toy {
    w: Var,
    b: Var,
    c: Var,
}

impl Toy {
    fn new() -> Self {
        Self::from_tensors(&values(&[4, 3], 0.1), &values(&[3], 0.2), &values(&[2, 5], 0.3))
    }

    fn from_tensors(w: &Tensor, b: &Tensor, c: &Tensor) -> Self {
        // `copy` first: `Var::from_tensor` of a tensor that already is a variable shares it.
        let var = |t: &Tensor| Var::from_tensor(&t.copy().unwrap()).unwrap();
        Self { w: var(w), b: var(b), c: var(c) }
    }

    fn duplicate(&self) -> Self {
        Self::from_tensors(&self.w, &self.b, &self.c)
    }

    fn named(&self) -> Vec<(String, Var)> {
        // Deliberately unsorted, so `AdamW::new` has to sort.
        vec![("c".into(), self.c.clone()), ("a.weight".into(), self.w.clone()), ("a.bias".into(), self.b.clone())]
    }

    fn loss(&self) -> Tensor {
        let x = values(&[6, 4], 1.0);
        let y = values(&[6, 3], 2.0);
        let target = values(&[2, 5], 3.0) * 2.0;
        let fit = x.matmul(&self.w).unwrap().broadcast_add(&self.b).unwrap();
        let fit_loss = (fit - y).unwrap().sqr().unwrap().mean_all().unwrap();
        let pull = (self.c.as_tensor() - target.unwrap()).unwrap().sqr().unwrap().sum_all().unwrap();
        (fit_loss + pull).unwrap()
    }

    fn bits(&self) -> Vec<Vec<u32>> {
        [&self.w, &self.b, &self.c].iter().map(|v| bits(v)).collect()
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

fn state_bits(opt: &AdamW) -> Vec<(String, Vec<u32>)> {
    opt.state()
        .into_iter()
        .map(|(name, t)| {
            let b = if name == "step" { vec![t.to_scalar::<i64>().unwrap() as u32] } else { bits(&t) };
            (name, b)
        })
        .collect()
}

fn train(toy: &Toy, opt: &mut AdamW, steps: std::ops::Range<usize>) {
    for step in steps {
        opt.step(&toy.loss().backward().unwrap(), lr_at(step)).unwrap();
    }
}

/// Bitwise, not approximately: with f32 parameters our update performs candle-nn's tensor
/// ops in the same order with the same f64 scalars, and the gradients come from identical
/// graphs, so any difference at all would mean the arithmetic diverged.
#[test]
fn matches_candle_adamw_bitwise() {
    let ours = Toy::new();
    let theirs = Toy::new();
    let start = ours.bits();
    let mut opt = AdamW::new(ours.named(), config(true)).unwrap();
    let params = candle_nn::ParamsAdamW { lr: lr_at(0), beta1: BETA1, beta2: BETA2, eps: EPS, weight_decay: WD };
    let mut reference =
        candle_nn::AdamW::new(vec![theirs.w.clone(), theirs.b.clone(), theirs.c.clone()], params).unwrap();
    for step in 0..20 {
        opt.step(&ours.loss().backward().unwrap(), lr_at(step)).unwrap();
        reference.set_learning_rate(lr_at(step));
        reference.step(&theirs.loss().backward().unwrap()).unwrap();
        assert_eq!(ours.bits(), theirs.bits(), "diverged at step {step}");
    }
    assert_eq!(opt.steps(), 20);
    for (now, before) in ours.bits().iter().zip(&start) {
        assert!(now.iter().zip(before).all(|(a, b)| a != b), "every element should have moved");
    }
}

#[test]
fn resumed_training_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optim.safetensors");

    let straight = Toy::new();
    let mut straight_opt = AdamW::new(straight.named(), config(false)).unwrap();
    train(&straight, &mut straight_opt, 0..10);

    let first = Toy::new();
    let mut first_opt = AdamW::new(first.named(), config(false)).unwrap();
    train(&first, &mut first_opt, 0..5);
    first_opt.save(&path).unwrap();

    let resumed = first.duplicate();
    let mut resumed_opt = AdamW::new(resumed.named(), config(false)).unwrap();
    resumed_opt.load(&path).unwrap();
    assert_eq!(resumed_opt.steps(), 5);
    assert_eq!(state_bits(&resumed_opt), state_bits(&first_opt));
    let names: Vec<String> = resumed_opt.state().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["m.a.bias", "v.a.bias", "m.a.weight", "v.a.weight", "m.c", "v.c", "step"]);

    train(&resumed, &mut resumed_opt, 5..10);
    assert_eq!(resumed.bits(), straight.bits());
    assert_eq!(state_bits(&resumed_opt), state_bits(&straight_opt));
}

#[test]
fn load_is_strict_and_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let toy = Toy::new();
    let mut trained = AdamW::new(toy.named(), config(false)).unwrap();
    train(&toy, &mut trained, 0..2);
    let state: HashMap<String, Tensor> = trained.state().into_iter().collect();

    // Each case removes (`None`) or replaces the named tensor.
    let zeros = |shape: &[usize], dtype| Some(Tensor::zeros(shape, dtype, &Device::Cpu).unwrap());
    let cases = [
        ("v.c", None),
        ("step", None),
        ("m.extra", zeros(&[3], DType::F32)),
        ("m.a.weight", zeros(&[3, 4], DType::F32)),
        ("v.a.bias", zeros(&[3], DType::F64)),
        ("step", zeros(&[1], DType::I64)),
    ];
    for (culprit, replacement) in cases {
        let mut bad = state.clone();
        match replacement {
            Some(tensor) => bad.insert(culprit.to_owned(), tensor),
            None => bad.remove(culprit),
        };
        let path = dir.path().join(format!("{culprit}.safetensors"));
        candle_core::safetensors::save(&bad, &path).unwrap();
        let fresh = Toy::new();
        let mut opt = AdamW::new(fresh.named(), config(false)).unwrap();
        let before = state_bits(&opt);
        let err = opt.load(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("{culprit:?}")), "{culprit}: {err}");
        assert_eq!(state_bits(&opt), before, "{culprit}: a failed load must not change state");
    }
}

#[test]
fn only_matrices_decay_unless_decay_all() {
    for decay_all in [false, true] {
        let w0 = values(&[4, 3], 0.5);
        let b0 = values(&[3], 0.6);
        let (w, b) = (Var::from_tensor(&w0).unwrap(), Var::from_tensor(&b0).unwrap());
        let mut opt = AdamW::new(vec![("w".into(), w.clone()), ("b".into(), b.clone())], config(decay_all)).unwrap();
        // Present but all-zero gradients, so any change is weight decay. (Not `x * 0.0`: candle
        // prunes an affine op with a zero factor from the graph, leaving no gradient at all.)
        let zero_sum = |v: &Var| v.mul(&v.zeros_like().unwrap()).unwrap().sum_all().unwrap();
        let loss = (zero_sum(&w) + zero_sum(&b)).unwrap();
        let grads = loss.backward().unwrap();
        assert_eq!(bits(grads.get(&b).unwrap()), vec![0; 3]);
        let lr = 0.5;
        opt.step(&grads, lr).unwrap();
        assert_eq!(bits(&w), bits(&(&w0 * (1.0 - lr * WD)).unwrap()));
        let b_expected = if decay_all { (&b0 * (1.0 - lr * WD)).unwrap() } else { b0.clone() };
        assert_eq!(bits(&b), bits(&b_expected), "decay_all = {decay_all}");
        assert_ne!(bits(&w), bits(&w0));
    }
}

#[test]
fn param_without_gradient_is_untouched() {
    let toy = Toy::new();
    let stray = Var::from_tensor(&values(&[2, 2], 4.0)).unwrap();
    let before = bits(&stray);
    let mut named = toy.named();
    named.push(("stray".into(), stray.clone()));
    let mut opt = AdamW::new(named, config(true)).unwrap();
    train(&toy, &mut opt, 0..3);
    assert_eq!(bits(&stray), before);
    assert_eq!(opt.steps(), 3);
    for (name, t) in opt.state() {
        if name.ends_with(".stray") {
            assert_eq!(bits(&t), vec![0; 4], "{name}");
        }
    }
}

#[test]
fn half_precision_params_keep_dtype_and_f32_state() {
    let w = Var::from_tensor(&values(&[2, 3], 0.0).to_dtype(DType::BF16).unwrap()).unwrap();
    let before = w.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
    let mut opt = AdamW::new(vec![("w".into(), w.clone())], config(false)).unwrap();
    opt.step(&w.sum_all().unwrap().backward().unwrap(), 0.1).unwrap();
    assert_eq!(w.dtype(), DType::BF16);
    let after = w.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
    // The gradient of a sum is 1 everywhere, so Adam's first step moves every element by
    // about -lr, before the (bf16-visible) decay.
    for (a, b) in after.iter().flatten().zip(before.iter().flatten()) {
        assert!(a < b, "{a} !< {b}");
    }
    assert!(opt.state().iter().filter(|(n, _)| n != "step").all(|(_, t)| t.dtype() == DType::F32));
}

#[test]
fn rejects_duplicate_names_and_f64_params() {
    let toy = Toy::new();
    let mut named = toy.named();
    named.push(("c".into(), toy.w.clone()));
    assert!(AdamW::new(named, AdamWConfig::default()).is_err());
    let wide = Var::zeros(3, DType::F64, &Device::Cpu).unwrap();
    assert!(AdamW::new(vec![("wide".into(), wide)], AdamWConfig::default()).is_err());
}

fn global_norm(params: &[(String, Var)], grads: &GradStore) -> f64 {
    let sum: f64 = params
        .iter()
        .flat_map(|(_, v)| grads.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .map(|x| f64::from(x) * f64::from(x))
        .sum();
    sum.sqrt()
}

#[test]
fn clip_scales_to_max_norm() {
    let toy = Toy::new();
    let params = toy.named();
    let frozen = Var::from_tensor(&values(&[3], 5.0)).unwrap();
    let loss = (toy.loss() + frozen.sqr().unwrap().sum_all().unwrap()).unwrap();
    let mut grads = loss.backward().unwrap();
    let frozen_grad = bits(grads.get(&frozen).unwrap());
    let norm = global_norm(&params, &grads);
    assert!(norm > 1.0);
    let max_norm = norm / 4.0;
    let reported = clip_grad_norm(&params, &mut grads, max_norm).unwrap();
    assert!((reported - norm).abs() <= 1e-6 * norm, "{reported} vs {norm}");
    let clipped = global_norm(&params, &grads);
    assert!(clipped <= max_norm * (1.0 + 1e-6), "{clipped} > {max_norm}");
    assert!(clipped >= max_norm * (1.0 - 1e-6), "{clipped} << {max_norm}");
    // Variables outside `params` are neither counted nor scaled.
    assert_eq!(bits(grads.get(&frozen).unwrap()), frozen_grad);
}

#[test]
fn clip_below_max_norm_is_a_bitwise_no_op() {
    let toy = Toy::new();
    let params = toy.named();
    let mut grads = toy.loss().backward().unwrap();
    let before: Vec<_> = params.iter().map(|(_, v)| bits(grads.get(v).unwrap())).collect();
    let norm = global_norm(&params, &grads);
    let reported = clip_grad_norm(&params, &mut grads, norm * 2.0).unwrap();
    assert!((reported - norm).abs() <= 1e-6 * norm);
    let after: Vec<_> = params.iter().map(|(_, v)| bits(grads.get(v).unwrap())).collect();
    assert_eq!(after, before);
}

#[test]
fn clip_leaves_non_finite_gradients_alone() {
    let w = Var::from_tensor(&values(&[3], 0.0)).unwrap();
    let params = vec![("w".to_owned(), w.clone())];
    let mut grads = (w.as_tensor() * f64::INFINITY).unwrap().sum_all().unwrap().backward().unwrap();
    let before = bits(grads.get(&w).unwrap());
    assert_eq!(clip_grad_norm(&params, &mut grads, 1.0).unwrap(), f64::INFINITY);
    assert_eq!(bits(grads.get(&w).unwrap()), before);
}
