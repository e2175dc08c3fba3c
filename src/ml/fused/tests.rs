use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::matmul::{K_CHUNK, Threads, View, matmul};
use super::net::{Batch, Net};
use super::*;
use crate::ml::model::{Config, Extra, Model, tiny};
use crate::ml::optim::{AdamW, AdamWConfig, clip_grad_norm};
use crate::ml::train::Micro;

fn model(config: Config, seed: u64) -> Model {
    Model::init(config, seed, &Device::Cpu).unwrap()
}

/// The model's parameters in the fused layout, perturbed so that no norm gain is exactly 1.
fn weights<T: Real>(m: &Model, net: &Net<T>, seed: u64) -> Vec<T> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = Vec::new();
    for (name, _, _) in &net.layout.params {
        let t = m.param(name).as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        w.extend(t.iter().map(|&x| T::of(x as f64 + rng.random_range(-0.05..0.05))));
    }
    w
}

/// Writes flat f32 weights into the model's parameters.
fn load(net: &Net<f32>, w: &[f32], m: &Model) {
    for (name, shape, range) in &net.layout.params {
        m.param(name).set(&Tensor::from_slice(&w[range.clone()], shape.as_slice(), &Device::Cpu).unwrap()).unwrap();
    }
}

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// Two packed samples per row (lengths 3 and 5 in a row of 8): positions restart, and each
/// query sees only its own sample.
fn packed<T: Real>(batch: usize, vocab: usize, seed: u64) -> Batch<T> {
    let t = 8;
    let n = batch * t;
    let positions: Vec<u32> = (0..n).map(|i| if i % t < 3 { i % t } else { i % t - 3 } as u32).collect();
    let lo: Vec<u32> = (0..n).map(|i| if i % t < 3 { 0 } else { 3 }).collect();
    let weights = (0..n).map(|i| T::of(if i % 4 == 1 { 0.0 } else { 1.0 / n as f64 + i as f64 * 1e-3 })).collect();
    Batch { batch, seq: t, tokens: tokens(n, vocab, seed), targets: tokens(n, vocab, seed + 1), weights, positions, lo }
}

/// The fused forward pass computes the op-by-op model's per-token losses, to 1e-5 relative in
/// f32, with grouped KV heads, untied and tied embeddings, and a packed mask with positions.
#[test]
fn the_forward_pass_matches_the_op_by_op_model() {
    for (kv, tie) in [(2, false), (4, true)] {
        let m = model(tiny(40, 2, kv, tie), 3);
        let mut net = Net::<f32>::new(m.config.clone());
        let w = weights::<f32>(&m, &net, 0);
        // Put the perturbed weights into the model too, so both compute with the same ones.
        load(&net, &w, &m);
        for b in [plain::<f32>(3, 16, 40, 7), packed::<f32>(2, 40, 9)] {
            let (n, t) = (b.tokens.len(), b.seq);
            let inputs = Tensor::from_vec(b.tokens.clone(), (b.batch, t), &Device::Cpu).unwrap();
            let targets = Tensor::from_vec(b.targets.clone(), (b.batch, t), &Device::Cpu).unwrap();
            let positions = Tensor::from_vec(b.positions.clone(), (b.batch, t), &Device::Cpu).unwrap();
            let mask: Vec<f32> = (0..n)
                .flat_map(|r| {
                    let (i, lo) = (r % t, b.lo[r] as usize);
                    (0..t).map(move |j| if j >= lo && j <= i { 0.0 } else { f32::NEG_INFINITY })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (b.batch, 1, t, t), &Device::Cpu).unwrap();
            let extra = Extra { positions: Some(&positions), mask: Some(&mask) };
            let want = m.token_losses(&inputs, &targets, extra).unwrap().to_vec1::<f32>().unwrap();
            let got = net.token_losses(&w, &b);
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let rel = (g - *w as f64).abs() / (*w as f64).abs().max(1e-3);
                assert!(rel < 1e-5, "kv {kv} tie {tie} token {i}: fused {g}, op-by-op {w}");
            }
        }
    }
}

fn plain<T: Real>(batch: usize, t: usize, vocab: usize, seed: u64) -> Batch<T> {
    let n = batch * t;
    Batch {
        batch,
        seq: t,
        tokens: tokens(n, vocab, seed),
        targets: tokens(n, vocab, seed + 1),
        weights: vec![T::of(1.0 / n as f64); n],
        positions: (0..n).map(|i| (i % t) as u32).collect(),
        lo: vec![0; n],
    }
}

/// Every parameter's gradient (a sample of each tensor's entries) against central finite
/// differences of the f64 loss.
#[test]
fn gradients_match_finite_differences_in_f64() {
    for (kv, tie) in [(2, false), (4, true)] {
        let m = model(tiny(24, 2, kv, tie), 5);
        let mut net = Net::<f64>::new(m.config.clone());
        let mut w = weights::<f64>(&m, &net, 1);
        let b = packed::<f64>(2, 24, 11);
        let mut g = vec![0f64; w.len()];
        net.run(&w, &b, Some(&mut g));
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut checked = 0;
        for (name, _, range) in net.layout.params.clone() {
            for _ in 0..6 {
                let i = rng.random_range(range.clone());
                let h = 1e-5;
                let x = w[i];
                w[i] = x + h;
                let up = net.run(&w, &b, None);
                w[i] = x - h;
                let down = net.run(&w, &b, None);
                w[i] = x;
                let numeric = (up - down) / (2.0 * h);
                let err = (g[i] - numeric).abs();
                assert!(
                    err <= 1e-7 + 1e-5 * numeric.abs(),
                    "kv {kv} tie {tie} `{name}`[{}]: analytic {} numeric {numeric}",
                    i - range.start,
                    g[i]
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 6 * net.layout.params.len());
    }
}

/// Windows of a fixed random stream, the same for both paths.
fn micro(step: u64, vocab: usize) -> Micro {
    let (b, t) = (4, 16);
    let x = tokens(b * t, vocab, 100 + step);
    let y = tokens(b * t, vocab, 1000 + step);
    Micro {
        inputs: Tensor::from_vec(x, (b, t), &Device::Cpu).unwrap(),
        targets: Tensor::from_vec(y, (b, t), &Device::Cpu).unwrap(),
        weights: None,
        positions: None,
        mask: None,
        tokens: (b * t) as u64,
    }
}

/// 50 steps (two micro-batches each, clipping active) on the fused path and on the op-by-op
/// path from the same model: the loss curves agree to 1e-4, and so do the weights.
#[test]
fn fifty_training_steps_follow_the_op_by_op_loss_curve() {
    let vocab = 48;
    let config = tiny(vocab, 2, 2, true);
    let (tape, fused) = (model(config.clone(), 8), model(config, 8));
    let cfg = AdamWConfig::default();
    let mut opt_tape = AdamW::new(tape.params(), cfg.clone()).unwrap();
    let opt_fused = AdamW::new(fused.params(), cfg).unwrap();
    let mut f = Fused::new(&fused, &opt_fused).unwrap();
    let params = tape.params();
    let mut clipped = 0;
    for step in 0..50 {
        let micros = [micro(2 * step, vocab), micro(2 * step + 1, vocab)];
        let lr = 3e-3;
        let mut want = 0.0;
        let mut grads: Option<candle_core::backprop::GradStore> = None;
        for m in &micros {
            let part = m.loss(&tape, 2).unwrap();
            want += part.to_scalar::<f32>().unwrap() as f64;
            let g = part.backward().unwrap();
            grads = Some(match grads {
                None => g,
                Some(mut acc) => {
                    for (_, v) in &params {
                        let sum = (acc.get(v).unwrap() + g.get(v).unwrap()).unwrap();
                        acc.insert(v, sum);
                    }
                    acc
                }
            });
        }
        let mut grads = grads.unwrap();
        let want_norm = clip_grad_norm(&params, &mut grads, 0.5).unwrap();
        opt_tape.step(&grads, lr).unwrap();
        let got: f64 = micros.iter().map(|m| f.accumulate(m, 2).unwrap()).sum();
        let norm = f.update(0.5, lr);
        clipped += usize::from(want_norm > 0.5);
        assert!((got - want).abs() <= 1e-4, "step {step}: fused loss {got}, op-by-op {want}");
        assert!((norm - want_norm).abs() <= 1e-4 * want_norm, "step {step}: norm {norm} against {want_norm}");
    }
    assert!(clipped > 10, "clipping was exercised ({clipped} steps)");
    f.sync_model(&fused).unwrap();
    for (name, var) in tape.params() {
        let a = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = fused.param(&name).as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "`{name}` differs by {worst} after 50 steps");
    }
}

/// Three steps on one thread and on three give the same bits.
#[test]
fn training_is_bit_identical_across_thread_counts() {
    let vocab = 40;
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let m = model(tiny(vocab, 2, 2, false), 4);
            let opt = AdamW::new(m.params(), AdamWConfig::default()).unwrap();
            let mut f = Fused::new(&m, &opt).unwrap();
            for step in 0..3 {
                f.accumulate(&micro(step, vocab), 1).unwrap();
                f.update(1.0, 1e-2);
            }
            f.sync_model(&m).unwrap();
            m.params()
                .into_iter()
                .flat_map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .map(f32::to_bits)
                .collect::<Vec<_>>()
        })
    };
    let one = run(1);
    assert_eq!(one, run(3));
    assert_ne!(
        one,
        model(tiny(vocab, 2, 2, false), 4)
            .params()
            .into_iter()
            .flat_map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .map(f32::to_bits)
            .collect::<Vec<_>>(),
        "training changed the weights"
    );
}

/// The matrix product is, bit for bit, a sequential fused multiply-add over each chunk of at
/// most K_CHUNK, the chunks added in order: an order that names no cache size and no SIMD
/// width. The small and thin shapes that gemm would hand to its SIMD-width horizontal kernels
/// are in the list too.
#[test]
fn matmul_sums_in_an_order_no_cpu_changes() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (m, n, k, accumulate) in [
        (37, 50, 1100, false),
        (70, 9, 2 * K_CHUNK + 1, true),
        (130, 129, 300, false),
        (5, 60, 600, true),
        (3, 7, 600, true),
        (16, 16, 40, false),
        (1, 40, 100, false),
        (40, 1, 100, true),
        (20, 30, 2, false),
    ] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let init: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut got = init.clone();
        // b is read transposed, as the weight gradients read activations.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        matmul(&mut got, n, View::rows(&a, m, k), View::t(&bt, n, k), accumulate, Threads::Pool);
        for i in 0..m {
            for j in 0..n {
                let mut acc = if accumulate { Some(init[i * n + j]) } else { None };
                for chunk in (0..k).collect::<Vec<_>>().chunks(K_CHUNK) {
                    let c = chunk.iter().fold(0f32, |c, &kk| a[i * k + kk].mul_add(b[kk * n + j], c));
                    acc = Some(acc.map_or(c, |s| s + c));
                }
                assert_eq!(got[i * n + j].to_bits(), acc.unwrap().to_bits(), "{m}×{n}×{k} at ({i}, {j})");
            }
        }
    }
}

/// The exponential agrees with the C library's to 2 ulp over the range softmax and SwiGLU use.
#[test]
fn exp_is_accurate() {
    let mut worst = 0f64;
    for i in 0..=200_000 {
        let x = -87.0 + 175.0 * i as f32 / 200_000.0;
        let (got, want) = (kernels::exp_f32(x) as f64, (x as f64).exp());
        worst = worst.max((got - want).abs() / want);
    }
    assert!(worst < 2.5e-7, "worst relative error {worst}");
    assert!(kernels::exp_f32(f32::NAN).is_nan());
}
