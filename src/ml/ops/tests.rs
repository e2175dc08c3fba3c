//! The fused kernels against the elementary candle ops they replace: same values, same
//! gradients.

use candle_core::{Device, Var};

use super::*;

fn sample(shape: (usize, usize), seed: u64) -> Var {
    let n = shape.0 * shape.1;
    let data: Vec<f64> = (0..n).map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f64 / 250.0) - 2.0).collect();
    Var::from_tensor(&Tensor::from_vec(data, shape, &Device::Cpu).unwrap()).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn softmax_and_its_gradient_match_the_elementary_ops() {
    let x = sample((7, 13), 1);
    let w = sample((7, 13), 2);
    let ours = softmax_last(x.as_tensor()).unwrap();
    let reference = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
    assert!(max_diff(&ours, &reference) < 1e-12);
    let g1 = (ours * w.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (reference * w.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-12);
}

#[test]
fn rms_norm_and_its_gradients_match_the_elementary_ops() {
    let x = sample((6, 10), 4);
    let w = sample((1, 10), 5);
    let w1 = Var::from_tensor(&w.as_tensor().squeeze(0).unwrap()).unwrap();
    let probe = sample((6, 10), 6);
    let ours = rms_norm(x.as_tensor(), w1.as_tensor(), 1e-5).unwrap();
    let ms = x.as_tensor().sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let reference = x
        .as_tensor()
        .broadcast_div(&(ms + 1e-5).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(w1.as_tensor())
        .unwrap();
    assert!(max_diff(&ours, &reference) < 1e-12);
    let g1 = (ours * probe.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (reference * probe.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-12);
    assert!(max_diff(g1.get(&w1).unwrap(), g2.get(&w1).unwrap()) < 1e-12);
}

/// What runs on a GPU or on half precision: the same results, and gradients, as the kernels.
#[test]
fn the_elementary_path_matches_the_kernels() {
    let x = sample((5, 12), 7);
    let w = Var::from_tensor(&sample((1, 12), 8).as_tensor().squeeze(0).unwrap()).unwrap();
    let probe = sample((5, 12), 9);
    let t = Tensor::from_vec(vec![0u32, 3, 11, 7, 5], 5, &Device::Cpu).unwrap();
    let half = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
    let back = |t: Tensor| t.to_dtype(DType::F64).unwrap();
    for (name, kernel, elementary, tolerance) in [
        ("softmax", softmax_last(x.as_tensor()).unwrap(), back(softmax_last(&half(x.as_tensor())).unwrap()), 1e-2),
        (
            "rms_norm",
            rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap(),
            back(rms_norm(&half(x.as_tensor()), &half(w.as_tensor()), 1e-5).unwrap()),
            3e-2,
        ),
        (
            "cross_entropy",
            cross_entropy_rows(x.as_tensor(), &t).unwrap(),
            back(cross_entropy_rows(&half(x.as_tensor()), &t).unwrap()),
            3e-2,
        ),
    ] {
        assert!(max_diff(&kernel, &elementary) < tolerance, "{name}: {}", max_diff(&kernel, &elementary));
    }
    // Gradients through the half-precision path reach the f64 variables, close to the kernels'.
    let loss = |y: Tensor| (y.to_dtype(DType::F64).unwrap() * probe.as_tensor()).unwrap().sum_all().unwrap();
    let g1 = loss(rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap()).backward().unwrap();
    let g2 = loss(rms_norm(&half(x.as_tensor()), &half(w.as_tensor()), 1e-5).unwrap()).backward().unwrap();
    assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 5e-2);
    assert!(max_diff(g1.get(&w).unwrap(), g2.get(&w).unwrap()) < 5e-2);
    let bad = Tensor::from_vec(vec![12u32; 5], 5, &Device::Cpu).unwrap();
    assert!(cross_entropy_rows(&half(x.as_tensor()), &bad).is_err());
}

#[test]
fn cross_entropy_and_its_gradient_match_the_elementary_ops() {
    let x = sample((9, 11), 3);
    let t = Tensor::from_vec((0..9u32).map(|i| (i * 5) % 11).collect::<Vec<_>>(), 9, &Device::Cpu).unwrap();
    let ours = cross_entropy_rows(x.as_tensor(), &t).unwrap().mean_all().unwrap();
    let reference = candle_nn::loss::cross_entropy(x.as_tensor(), &t).unwrap();
    assert!((ours.to_scalar::<f64>().unwrap() - reference.to_scalar::<f64>().unwrap()).abs() < 1e-12);
    let g1 = ours.backward().unwrap();
    let g2 = reference.backward().unwrap();
    assert!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-12);
    // f32 agrees with the f64 result to f32 precision.
    let x32 = x.as_tensor().to_dtype(DType::F32).unwrap();
    let l32 = cross_entropy_rows(&x32, &t).unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    assert!((l32 - reference.to_scalar::<f64>().unwrap()).abs() < 1e-5);
    let bad = Tensor::from_vec(vec![11u32; 9], 9, &Device::Cpu).unwrap();
    assert!(cross_entropy_rows(x.as_tensor(), &bad).is_err());
}
