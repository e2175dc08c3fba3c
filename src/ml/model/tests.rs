//! The model's promises: every parameter gets a gradient that agrees with finite differences,
//! checkpoints round-trip bit-exactly, initialisation is seeded, and Hugging Face's Llama reads
//! what it writes.

use super::*;

fn batch(vocab: u32, b: usize, t: usize, seed: u32) -> (Tensor, Tensor) {
    let data: Vec<u32> =
        (0..b * (t + 1)).map(|i| (i as u32 * 7 + seed * 13 + (i as u32 * i as u32) % 5) % vocab).collect();
    let all = Tensor::from_vec(data, (b, t + 1), &Device::Cpu).unwrap();
    (all.narrow(1, 0, t).unwrap(), all.narrow(1, 1, t).unwrap())
}

#[test]
fn every_parameter_gets_a_nonzero_gradient() {
    for (kv, tie) in [(4, false), (2, true)] {
        let model = Model::init(tiny(50, 2, kv, tie), 3, &Device::Cpu).unwrap();
        let (x, y) = batch(50, 2, 9, 1);
        let grads = model.loss(&x, &y).unwrap().backward().unwrap();
        for (name, var) in model.params() {
            let g = grads.get(&var).unwrap_or_else(|| panic!("`{name}` has no gradient"));
            let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0, "`{name}` has an all-zero gradient");
        }
    }
}

#[test]
fn gradients_agree_with_finite_differences() {
    // f64 keeps the central difference accurate enough for a 1e-2 relative bound.
    let model = Model::init(tiny(30, 2, 2, false), 5, &Device::Cpu).unwrap();
    let params: Vec<(String, Var)> = model.params();
    let model64 = {
        let tensors: HashMap<String, Tensor> =
            params.iter().map(|(k, v)| (k.clone(), v.as_tensor().to_dtype(DType::F64).unwrap())).collect();
        let mut params = BTreeMap::new();
        for (k, t) in tensors {
            params.insert(k, Var::from_tensor(&t).unwrap());
        }
        Model { config: model.config.clone(), params, device: Device::Cpu, compute: DType::F64 }
    };
    let (x, y) = batch(30, 2, 6, 2);
    let loss = |m: &Model| -> f64 {
        let logits = m.forward(&x).unwrap();
        let lp = candle_nn::ops::log_softmax(&logits.reshape(((), 30)).unwrap(), D::Minus1).unwrap();
        let picked = lp.gather(&y.flatten_all().unwrap().unsqueeze(1).unwrap(), 1).unwrap();
        -picked.mean_all().unwrap().to_scalar::<f64>().unwrap()
    };
    let logits = model64.forward(&x).unwrap();
    let lp = candle_nn::ops::log_softmax(&logits.reshape(((), 30)).unwrap(), D::Minus1).unwrap();
    let l = lp.gather(&y.flatten_all().unwrap().unsqueeze(1).unwrap(), 1).unwrap().mean_all().unwrap().neg().unwrap();
    let grads = l.backward().unwrap();
    let mut checked = 0;
    for (name, var) in model64.params() {
        let g = grads.get(&var).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let base = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for idx in [0, base.len() / 2, base.len() - 1] {
            let h = 1e-5;
            let mut plus = base.clone();
            plus[idx] += h;
            var.set(&Tensor::from_vec(plus, var.shape(), &Device::Cpu).unwrap()).unwrap();
            let lp = loss(&model64);
            let mut minus = base.clone();
            minus[idx] -= h;
            var.set(&Tensor::from_vec(minus, var.shape(), &Device::Cpu).unwrap()).unwrap();
            let lm = loss(&model64);
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap()).unwrap();
            let numeric = (lp - lm) / (2.0 * h);
            let analytic = g[idx];
            let rel = (numeric - analytic).abs() / numeric.abs().max(analytic.abs()).max(1e-6);
            assert!(rel < 1e-2, "`{name}`[{idx}]: analytic {analytic} vs numeric {numeric}");
            checked += 1;
        }
    }
    assert!(checked > 30);
}

#[test]
fn save_and_load_round_trip_bit_exactly_and_reject_mismatches() {
    let model = Model::init(tiny(40, 1, 4, false), 9, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let back = Model::load(dir.path(), &Device::Cpu).unwrap();
    for (name, var) in model.params() {
        let a = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = back.param(&name).as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{name}");
    }
    let mut tensors: HashMap<String, Tensor> =
        model.params().into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect();
    tensors.insert("extra.weight".into(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap());
    assert!(Model::from_tensors(model.config.clone(), tensors.clone(), &Device::Cpu).is_err());
    tensors.remove("extra.weight");
    tensors.remove("model.norm.weight");
    assert!(
        Model::from_tensors(model.config.clone(), tensors, &Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("model.norm.weight")
    );
}

#[test]
fn initialisation_is_seeded() {
    let a = Model::init(tiny(40, 1, 4, true), 1, &Device::Cpu).unwrap();
    let b = Model::init(tiny(40, 1, 4, true), 1, &Device::Cpu).unwrap();
    let c = Model::init(tiny(40, 1, 4, true), 2, &Device::Cpu).unwrap();
    let w =
        |m: &Model| m.param("model.embed_tokens.weight").as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(w(&a), w(&b));
    assert_ne!(w(&a), w(&c));
}

#[test]
fn a_tiny_model_overfits_one_batch() {
    use crate::ml::optim::{AdamW, AdamWConfig};
    let model = Model::init(tiny(32, 2, 4, false), 4, &Device::Cpu).unwrap();
    let (x, y) = batch(32, 4, 16, 3);
    let mut opt = AdamW::new(model.params(), AdamWConfig { weight_decay: 0.0, ..Default::default() }).unwrap();
    let mut loss = f32::INFINITY;
    for _ in 0..300 {
        let l = model.loss(&x, &y).unwrap();
        loss = l.to_scalar::<f32>().unwrap();
        if loss < 0.1 {
            break;
        }
        opt.step(&l.backward().unwrap(), 1e-2).unwrap();
    }
    assert!(loss < 0.1, "loss stayed at {loss}");
}

#[test]
fn candle_transformers_llama_reads_our_checkpoint_and_agrees() {
    use candle_transformers::models::llama as hf;
    let config =
        Config { hidden_size: 32, intermediate_size: 48, max_position_embeddings: 32, ..tiny(64, 2, 2, false) };
    let model = Model::init(config, 11, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let hf_config: hf::LlamaConfig =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    let hf_config = hf_config.into_config(false);
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.path().join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let theirs = hf::Llama::load(vb, &hf_config).unwrap();
    let mut cache = hf::Cache::new(false, DType::F32, &hf_config, &Device::Cpu).unwrap();
    let tokens: Vec<u32> = vec![3, 17, 42, 5, 9, 63, 0, 28];
    let x = Tensor::new(tokens.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let their_last = theirs.forward(&x, 0, &mut cache).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let ours = model.forward(&x).unwrap();
    let our_last = ours.narrow(1, tokens.len() - 1, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let max = our_last.iter().zip(&their_last).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max < 1e-4, "max |Δlogit| = {max}");
}
