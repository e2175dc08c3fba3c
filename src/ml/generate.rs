//! Greedy generation for many prompts at once: prompts are left-padded into one batch, with
//! per-row positions starting at each prompt's first token and a mask that hides the padding,
//! so each row decodes exactly as it would alone (within float rounding).

use candle_core::{D, Tensor};

use super::model::{Extra, Model};
use super::tokenizer::PAD;

/// The greedy continuation of each prompt: at most `max_tokens` ids, stopping before the first
/// id in `stop`. Prompts are processed `batch` at a time.
pub fn greedy(
    model: &Model,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    stop: &[u32],
    batch: usize,
) -> candle_core::Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(batch.max(1)) {
        out.extend(greedy_batch(model, chunk, max_tokens, stop)?);
    }
    Ok(out)
}

fn greedy_batch(
    model: &Model,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    stop: &[u32],
) -> candle_core::Result<Vec<Vec<u32>>> {
    let limit = model.config.max_position_embeddings;
    let b = prompts.len();
    // Keep the end of over-long prompts, leaving room for the answer.
    let prompts: Vec<&[u32]> =
        prompts.iter().map(|p| &p[p.len().saturating_sub(limit.saturating_sub(max_tokens).max(1))..]).collect();
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let mut rows: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&pads)
        .map(|(p, &n)| std::iter::repeat_n(PAD, n).chain(p.iter().copied()).collect())
        .collect();
    let mut outputs: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    for _ in 0..max_tokens {
        let t = rows[0].len();
        if t > limit || done.iter().all(|d| *d) {
            break;
        }
        let mut positions = Vec::with_capacity(b * t);
        let mut mask = vec![f32::NEG_INFINITY; b * t * t];
        for (r, &pad) in pads.iter().enumerate() {
            positions.extend((0..t).map(|i| i.saturating_sub(pad) as u32));
            for i in 0..t {
                // Padding queries see themselves only (a fully masked row would be NaN).
                let from = if i < pad { i } else { pad };
                for j in from..=i {
                    mask[(r * t + i) * t + j] = 0.0;
                }
            }
        }
        let device = model.device();
        let tokens = Tensor::from_vec(rows.concat(), (b, t), device)?;
        let positions = Tensor::from_vec(positions, (b, t), device)?;
        let mask = Tensor::from_vec(mask, (b, 1, t, t), device)?;
        let logits = model.forward_with(&tokens, Extra { positions: Some(&positions), mask: Some(&mask) })?;
        let next: Vec<u32> = logits.narrow(1, t - 1, 1)?.squeeze(1)?.argmax(D::Minus1)?.to_vec1()?;
        for (r, &id) in next.iter().enumerate() {
            if !done[r] {
                if stop.contains(&id) {
                    done[r] = true;
                } else {
                    outputs[r].push(id);
                }
            }
            rows[r].push(id);
        }
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn batched_generation_matches_one_prompt_at_a_time() {
        let model = Model::init(crate::ml::model::tiny(50, 2, 2, false), 9, &Device::Cpu).unwrap();
        let prompts: Vec<Vec<u32>> = vec![vec![5, 6, 7, 8, 9, 10, 11], vec![12], vec![20, 30, 40]];
        let batched = greedy(&model, &prompts, 12, &[], 8).unwrap();
        let alone: Vec<Vec<u32>> =
            prompts.iter().map(|p| greedy(&model, std::slice::from_ref(p), 12, &[], 1).unwrap().remove(0)).collect();
        assert_eq!(batched, alone);
        assert!(batched.iter().all(|o| o.len() == 12));
        // One token at a time by hand, for the first prompt.
        let mut ids = prompts[0].clone();
        for _ in 0..12 {
            let x = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let logits = model.forward(&x).unwrap();
            ids.push(logits.get(0).unwrap().get(ids.len() - 1).unwrap().argmax(0).unwrap().to_scalar().unwrap());
        }
        assert_eq!(ids[7..], batched[0][..]);
        // Stopping: generation ends before the first stop id.
        let stop = batched[1][3];
        let first = batched[1].iter().position(|&id| id == stop).unwrap();
        assert_eq!(greedy(&model, &prompts[1..2], 12, &[stop], 1).unwrap()[0], batched[1][..first]);
    }
}
