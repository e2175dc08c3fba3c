//! Synthetic text: English-like documents with structure a small model can learn, and
//! instruction problems whose answers can be checked exactly, so tests and examples train
//! without downloading anything. A leaf: no candle, nothing of flow's above it.
//!
//! Three document families ([`documents`]):
//! - prose ([`prose`]), from a small probabilistic grammar with agreement over a fixed lexicon
//!   ([`lexicon`]);
//! - facts about an invented world that never contradicts itself ([`facts`]);
//! - arithmetic worksheet lines, always correct ([`arithmetic`]).
//!
//! And instruction problems ([`problems`]): arithmetic, word reversal, letter sorting.
//!
//! Output is a pure function of the arguments: the only randomness is a `ChaCha8Rng` seeded from
//! the caller's seed, and nothing depends on hash-map iteration order, so a seed gives the same
//! bytes on every machine (for a given `rand` minor version, which fixes how ranges are sampled).

mod arithmetic;
mod facts;
mod lexicon;
pub mod problems;
mod prose;
mod text;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use problems::{Difficulty, Problem, ProblemFamily, Split, problems};

/// What synthetic generation can refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    #[error("`digits` must be 1, 2 or 3")]
    Digits,
    #[error("`letters` must be [min, max] with 1 ≤ min ≤ max ≤ 16")]
    Letters,
    #[error(
        "only {found} distinct {family:?} problems found for the {split:?} split at this difficulty, {asked} asked for"
    )]
    PoolTooSmall { family: ProblemFamily, split: Split, found: usize, asked: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Prose,
    Facts,
    Arithmetic,
}

/// `documents` documents of 200 to 1,500 bytes. Document `i` is of family
/// `families[i % families.len()]`, so naming a family twice doubles its share. The first `n`
/// documents are the same whatever the count asked for, and the facts world depends only on
/// `seed`.
///
/// # Panics
/// If `families` is empty and `documents` is not zero.
pub fn documents(families: &[Family], documents: usize, seed: u64) -> Vec<String> {
    assert!(documents == 0 || !families.is_empty(), "no document family to generate");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Built first and always, so that the world is the same whatever families are asked for.
    let world = facts::World::new(&mut rng);
    (0..documents)
        .map(|i| match families[i % families.len()] {
            Family::Prose => prose::prose(&mut rng),
            Family::Facts => world.document(&mut rng),
            Family::Arithmetic => arithmetic::arithmetic(&mut rng),
        })
        .collect()
}

#[cfg(test)]
mod tests;
