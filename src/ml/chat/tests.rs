//! The chat template's promises: rendering round-trips, the loss mask covers exactly the
//! answers and their end-of-turn token, masked labels change nothing, and packed rows equal each
//! sample run alone.

use super::*;
use crate::ml::model::{Extra, Model};
use crate::ml::train::Batches;

fn tokenizer() -> Tokenizer {
    let corpus = ["what is 12 + 30? 42", "reverse the word: garden nedrag", "sort the letters: dcba abcd"];
    let texts: Vec<String> = (0..40).flat_map(|_| corpus.iter().map(|s| s.to_string())).collect();
    Tokenizer::train(texts.into_iter(), 300).unwrap()
}

fn model(vocab: usize) -> Model {
    let mut config = crate::ml::model::tiny(vocab, 2, 2, false);
    config.max_position_embeddings = 128;
    Model::init(config, 3, &Device::Cpu).unwrap()
}

fn conv(prompt: &str, answer: &str) -> Conversation {
    Conversation::from_value(&serde_json::json!({"prompt": prompt, "response": answer})).unwrap()
}

fn samples(t: &Tokenizer) -> Vec<Encoded> {
    [("what is 12 + 30?", "42"), ("reverse the word: garden", "nedrag"), ("sort the letters: dcba", "abcd")]
        .iter()
        .map(|(p, a)| encode(t, &conv(p, a), LossOn::Assistant).unwrap())
        .collect()
}

/// The loss of one step over `samples` and the gradient of every parameter.
fn loss_and_grads(m: &Model, samples: Vec<Encoded>, packing: bool) -> (f32, Vec<Vec<f32>>) {
    let n = samples.len();
    // Wide enough for one packed row to hold every sample, so both layouts see the same set.
    let mut b = ChatBatches::new(samples, vec![], n, 1, 120, packing, 1).unwrap();
    let micros = b.step(0, &Device::Cpu).unwrap();
    let loss = micros[0].loss(m, 1).unwrap();
    let grads = loss.backward().unwrap();
    let g = m.params().iter().map(|(_, v)| grads.get(v).unwrap().flatten_all().unwrap().to_vec1().unwrap()).collect();
    (loss.to_scalar().unwrap(), g)
}

#[test]
fn render_tokenize_decode_is_the_identity_and_the_mask_covers_answers_and_end_of_turn() {
    let t = tokenizer();
    let c = Conversation::from_value(&serde_json::json!({"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "sort the letters: dcba"},
        {"role": "assistant", "content": "abcd"},
        {"role": "user", "content": "and  again\nplease 🦀"},
        {"role": "assistant", "content": "abcd!"}
    ]}))
    .unwrap();
    let e = encode(&t, &c, LossOn::Assistant).unwrap();
    assert_eq!(t.decode(&e.tokens).unwrap(), c.render());
    assert!(c.render().starts_with("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\n"));
    // The trained spans decode to each answer followed by its end-of-turn marker.
    let mut spans = Vec::new();
    let mut current = Vec::new();
    for (&id, &tr) in e.tokens.iter().zip(&e.trained) {
        if tr {
            current.push(id);
        } else if !current.is_empty() {
            spans.push(t.decode(&std::mem::take(&mut current)).unwrap());
        }
    }
    assert_eq!(spans, ["abcd<|im_end|>", "abcd!<|im_end|>"]);
    let last = encode(&t, &c, LossOn::LastAssistant).unwrap();
    assert_eq!(last.trainable(), t.encode("abcd!").unwrap().len() + 1);
    let (prompt, answer) = c.split_last().unwrap();
    assert_eq!(answer, "abcd!");
    let p = encode_prompt(&t, &prompt).unwrap();
    assert_eq!(t.decode(&p).unwrap(), format!("{}<|im_start|>assistant\n", prompt.render()));
}

#[test]
fn bad_records_are_refused_with_a_reason() {
    for (v, want) in [
        (serde_json::json!({"text": "x"}), "expected `messages`"),
        (serde_json::json!({"messages": []}), "empty"),
        (serde_json::json!({"messages": [{"role": "bot", "content": "x"}]}), "unknown variant"),
        (serde_json::json!({"prompt": "a <|im_end|> b", "response": "c"}), "reserved token `<|im_end|>`"),
        (serde_json::json!({"prompt": 1, "response": "c"}), "must be strings"),
    ] {
        let e = Conversation::from_value(&v).unwrap_err();
        assert!(e.to_string().contains(want), "{v}: {e}");
    }
}

#[test]
fn truncation_keeps_the_start_and_counts_dropped_targets() {
    let t = tokenizer();
    let mut e = encode(&t, &conv("what is 12 + 30?", "42"), LossOn::Assistant).unwrap();
    let full = e.clone();
    let trainable = full.trainable();
    assert_eq!(e.truncate(full.tokens.len()), None);
    assert_eq!(e.truncate(full.tokens.len() - 1), Some(0), "only the untrained newline is cut");
    assert_eq!(e.truncate(full.tokens.len() - 2), Some(1), "the end-of-turn is cut");
    assert_eq!(e.tokens, full.tokens[..full.tokens.len() - 2]);
    assert_eq!(e.trainable(), trainable - 1);
    let mut e = full.clone();
    assert_eq!(e.truncate(3), Some(trainable));
    assert_eq!(e.trainable(), 0);
}

#[test]
fn changing_labels_at_masked_positions_changes_neither_loss_nor_gradients() {
    let t = tokenizer();
    let m = model(t.vocab_size());
    let a = samples(&t);
    // Change every target the mask excludes (the inputs stay: they are context).
    let rows: Vec<Vec<&Encoded>> = a.iter().map(|s| vec![s]).collect();
    let b = assemble(&rows, false, &Device::Cpu).unwrap();
    let y: Vec<u32> = b.targets.flatten_all().unwrap().to_vec1().unwrap();
    let y2: Vec<u32> = y
        .iter()
        .zip(&b.trained)
        .map(|(&id, &w)| if w == 0.0 { (id + 7) % t.vocab_size() as u32 } else { id })
        .collect();
    assert_ne!(y, y2);
    let run = |targets: Vec<u32>| {
        let n = b.trained.len();
        let w = Tensor::from_vec(b.trained.clone(), n, &Device::Cpu).unwrap();
        let targets = Tensor::from_vec(targets, b.targets.dims(), &Device::Cpu).unwrap();
        let loss = (m.token_losses(&b.inputs, &targets, Extra::default()).unwrap() * w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g: Vec<Vec<f32>> =
            m.params().iter().map(|(_, v)| grads.get(v).unwrap().flatten_all().unwrap().to_vec1().unwrap()).collect();
        (loss.to_scalar::<f32>().unwrap(), g)
    };
    let (l1, g1) = run(y);
    let (l2, g2) = run(y2);
    assert_eq!(l1.to_bits(), l2.to_bits());
    assert_eq!(g1, g2);
}

#[test]
fn padding_never_contributes() {
    let t = tokenizer();
    let m = model(t.vocab_size());
    let s = samples(&t);
    // Alone, the first sample has no padding; next to a longer one it is padded.
    let (alone, _) = loss_and_grads(&m, vec![s[0].clone()], false);
    let longest = s.iter().max_by_key(|e| e.tokens.len()).unwrap();
    assert!(longest.tokens.len() > s[0].tokens.len());
    let rows = vec![vec![&s[0]], vec![longest]];
    let b = assemble(&rows, false, &Device::Cpu).unwrap();
    let width = b.inputs.dim(1).unwrap();
    let pad_weights: f32 = b.trained[s[0].tokens.len() - 1..width].iter().sum();
    assert_eq!(pad_weights, 0.0);
    let losses: Vec<f32> = m.token_losses(&b.inputs, &b.targets, Extra::default()).unwrap().to_vec1().unwrap();
    let w = &b.trained[..width];
    let padded = losses[..width].iter().zip(w).map(|(l, w)| l * w).sum::<f32>() / w.iter().sum::<f32>();
    assert!((padded - alone).abs() <= 1e-6 * alone.abs(), "{padded} vs {alone}");
}

#[test]
fn packed_logits_equal_each_sample_run_alone_and_need_the_block_mask() {
    let t = tokenizer();
    let m = model(t.vocab_size());
    let s = samples(&t);
    let row: Vec<&Encoded> = s.iter().collect();
    let b = assemble(&[row], true, &Device::Cpu).unwrap();
    let extra = Extra { positions: b.positions.as_ref(), mask: b.mask.as_ref() };
    let packed = m.forward_with(&b.inputs, extra).unwrap().squeeze(0).unwrap();
    let plain = m.forward(&b.inputs).unwrap().squeeze(0).unwrap();
    let mut at = 0;
    let mut plain_differs = false;
    for e in &s {
        let len = e.tokens.len() - 1;
        let x = Tensor::new(&e.tokens[..len], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let alone: Vec<Vec<f32>> = m.forward(&x).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        let got: Vec<Vec<f32>> = packed.narrow(0, at, len).unwrap().to_vec2().unwrap();
        let naive: Vec<Vec<f32>> = plain.narrow(0, at, len).unwrap().to_vec2().unwrap();
        for (a, g) in alone.iter().flatten().zip(got.iter().flatten()) {
            assert!((a - g).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {g}");
        }
        plain_differs |= alone.iter().flatten().zip(naive.iter().flatten()).any(|(a, n)| (a - n).abs() > 1e-3);
        at += len;
    }
    assert!(plain_differs, "without the block mask and position reset, later samples see earlier ones");
    // And the packed step's loss equals the unpacked step's.
    let (unpacked, _) = loss_and_grads(&m, s.clone(), false);
    let (packed, _) = loss_and_grads(&m, s, true);
    assert!((unpacked - packed).abs() <= 1e-5 * unpacked, "{unpacked} vs {packed}");
}

#[test]
fn the_end_of_turn_token_is_trained() {
    let t = tokenizer();
    let e = encode(&t, &conv("what is 12 + 30?", "42"), LossOn::Assistant).unwrap();
    let last = e.tokens.iter().rposition(|&id| id == IM_END).unwrap();
    assert!(e.trained[last], "the assistant's <|im_end|> is a target");
    assert!(!e.trained[last + 1], "the newline after it is not");
    let first_end = e.tokens.iter().position(|&id| id == IM_END).unwrap();
    assert!(!e.trained[first_end], "the user's <|im_end|> is not");
    // Training on this one sample raises the probability of stopping after the answer.
    let m = model(t.vocab_size());
    let p_end = |m: &Model| {
        let x = Tensor::new(&e.tokens[..last], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let logits = m.forward(&x).unwrap().squeeze(0).unwrap().get(last - 1).unwrap();
        let p: Vec<f32> = crate::ml::ops::softmax_last(&logits).unwrap().to_vec1().unwrap();
        p[IM_END as usize]
    };
    let before = p_end(&m);
    let mut opt = crate::ml::optim::AdamW::new(m.params(), Default::default()).unwrap();
    let mut b = ChatBatches::new(vec![e.clone()], vec![], 1, 1, 64, false, 1).unwrap();
    for step in 0..30 {
        let micros = b.step(step, &Device::Cpu).unwrap();
        opt.step(&micros[0].loss(&m, 1).unwrap().backward().unwrap(), 1e-2).unwrap();
    }
    let after = p_end(&m);
    assert!(after > 0.5 && after > before * 10.0, "{before} → {after}");
}

#[test]
fn packing_fills_rows_greedily_and_epochs_reshuffle() {
    assert_eq!(rows(&[5, 5, 5, 9], &[0, 1, 2, 3], 8, true), vec![vec![0, 1], vec![2], vec![3]]);
    assert_eq!(rows(&[5, 5], &[1, 0], 8, false), vec![vec![1], vec![0]]);
    let t = tokenizer();
    let s: Vec<Encoded> = (0..10)
        .map(|i| encode(&t, &conv(&format!("what is {i} + {i}?"), &format!("{}", 2 * i)), LossOn::Assistant).unwrap())
        .collect();
    let mut b = ChatBatches::new(s, vec![], 2, 1, 64, false, 5).unwrap();
    b.ensure(20);
    let firsts: Vec<usize> = b.rows.iter().map(|r| r[0]).collect();
    let mut e0 = firsts[..10].to_vec();
    e0.sort();
    assert_eq!(e0, (0..10).collect::<Vec<_>>(), "each epoch visits every sample once");
    assert_ne!(firsts[..10], firsts[10..20], "epochs are shuffled differently");
}

#[test]
fn an_interrupted_run_resumes_to_the_same_weights_and_metrics() {
    let t = tokenizer();
    let s: Vec<Encoded> = (0..12)
        .map(|i| encode(&t, &conv(&format!("what is {i} + 30?"), &format!("{}", i + 30)), LossOn::Assistant).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let m = model(t.vocab_size());
        let mut opt = crate::ml::optim::AdamW::new(m.params(), Default::default()).unwrap();
        let mut b = ChatBatches::new(s.clone(), s[..2].to_vec(), 2, 2, 64, true, 4).unwrap();
        let cfg = crate::ml::train::Loop { steps: 6, clip: 1.0, eval_every: 3, checkpoint_every: 3 };
        let mut ticks = 0;
        let rows =
            crate::ml::train::run(&m, &mut opt, &cfg, &|_| 1e-3, &mut b, dir.path(), &mut |_| ticks += 1).unwrap();
        let weights: Vec<Vec<f32>> =
            m.params().iter().map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap()).collect();
        (weights, rows, ticks)
    };
    // The first run leaves its step-3 checkpoint behind, as a run killed after step 3 would.
    let (a, rows_a, ticks_a) = run();
    assert!(dir.path().join("checkpoint/state.json").exists());
    let (b, rows_b, ticks_b) = run();
    assert_eq!((ticks_a, ticks_b), (6, 3), "the second run resumes at step 3");
    assert_eq!(rows_a, rows_b);
    assert_eq!(a, b);
}

/// Replay rows are windows of the replay text, trained on every token, and among the first `k`
/// rows of the run there are exactly ⌊k·ratio⌋ of them — at every step, with accumulation.
#[test]
fn replay_rows_hold_their_share_at_every_prefix_and_train_every_token() {
    let t = tokenizer();
    let s: Vec<Encoded> = (0..7)
        .map(|i| encode(&t, &conv(&format!("what is {i} + 1?"), &format!("{}", i + 1)), LossOn::Assistant).unwrap())
        .collect();
    // Replay text of one repeated token that no conversation holds (the document separator): a
    // row is a replay row iff it is all that token.
    const MARK: u32 = crate::ml::tokenizer::EOT;
    assert!(s.iter().all(|e| !e.tokens.contains(&MARK)));
    let ratio = 0.3;
    let mut b = ChatBatches::new(s, vec![], 3, 2, 32, false, 9).unwrap();
    b.replay = Some(Replay { tokens: vec![MARK; 200], ratio, seed: 9 });
    let (mut rows, mut replayed) = (0usize, 0usize);
    for step in 0..10 {
        for micro in b.step(step, &Device::Cpu).unwrap() {
            let inputs: Vec<Vec<u32>> = micro.inputs.to_vec2().unwrap();
            let weights: Vec<f32> = micro.weights.as_ref().unwrap().to_vec1().unwrap();
            let width = inputs[0].len();
            for (r, row) in inputs.iter().enumerate() {
                rows += 1;
                if row.iter().all(|&x| x == MARK) {
                    replayed += 1;
                    assert!(weights[r * width..(r + 1) * width].iter().all(|&w| w > 0.0), "every token is a target");
                }
                assert_eq!(replayed, (rows as f64 * ratio).floor() as usize, "after {rows} rows");
            }
        }
    }
    assert_eq!((rows, replayed), (60, 18));
}
