//! Instruction problems with exactly checkable answers — arithmetic, word reversal, letter
//! sorting, spelling — for fine-tuning and held-out evaluation. A problem's train/test split is a
//! hash of the problem itself, so no seed, count or difficulty ever puts one problem in both.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::SynthError;
use super::lexicon::{Number, TOPICS};
use super::prose::inflect;
use super::text::{coined, pick};

/// What a problem asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemFamily {
    /// "What is 37 + 48?" → "85": addition and subtraction up to 999, multiplication up to 99.
    Arithmetic,
    /// "Reverse the letters: g a r d e n" → "n e d r a g". Letters are spaced so that each is
    /// its own token: a subword vocabulary would otherwise hide the spelling from the model.
    Reverse,
    /// "Sort the letters: d c a b" → "a b c d".
    Sort,
    /// "Spell the word: garden" → "g a r d e n". The word is written whole, so the prompt looks
    /// unlike the other letter problems': a model fine-tuned on spelling alone has no reason to
    /// spell when asked to sort, which makes it a fair partner for merging experiments.
    Spell,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub family: ProblemFamily,
    pub prompt: String,
    pub answer: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Nine problems in ten.
    Train,
    /// One problem in ten.
    Test,
}

impl Split {
    /// The most problems one call may ask for from this split. The smallest pool, arithmetic, holds
    /// about five times as many distinct problems in each split, which keeps drawing them quick
    /// and guarantees it ends.
    pub fn max_problems(self) -> usize {
        match self {
            Split::Train => 200_000,
            Split::Test => 20_000,
        }
    }
}

/// How hard generated problems are. The default is the full range of each family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Difficulty {
    /// The most digits of an addition or subtraction operand (1 to 3); multiplication
    /// operands have at most 2.
    pub digits: u32,
    /// Letters of a word to reverse or spell or a string to sort, `[min, max]`; default: 3 to 8
    /// for sorting, any length for reversal and spelling.
    pub letters: Option<[usize; 2]>,
}

impl Default for Difficulty {
    fn default() -> Self {
        Self { digits: 3, letters: None }
    }
}

impl Difficulty {
    pub fn check(&self) -> Result<(), SynthError> {
        if !(1..=3).contains(&self.digits) {
            return Err(SynthError::Digits);
        }
        if let Some([lo, hi]) = self.letters
            && !(1 <= lo && lo <= hi && hi <= 16)
        {
            return Err(SynthError::Letters);
        }
        Ok(())
    }
}

/// `n` distinct problems of `family` from `split`. A problem's split is decided by a hash of the
/// problem alone, not by the seed, `n` or the difficulty, so train and test never share a
/// prompt across any calls; and the first `n` problems are the same whatever the count asked
/// for.
/// A difficulty whose pool is too small for `n` is an error saying how many it holds.
///
/// # Panics
/// If `n` is over [`Split::max_problems`].
pub fn problems(
    family: ProblemFamily,
    split: Split,
    n: usize,
    seed: u64,
    difficulty: Difficulty,
) -> Result<Vec<Problem>, SynthError> {
    assert!(
        n <= split.max_problems(),
        "{n} {split:?} problems asked for, at most {} can be generated",
        split.max_problems()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Only ever probed, never iterated, so its order cannot leak into the output.
    let mut seen = HashSet::new();
    let mut problems = Vec::with_capacity(n);
    // Generous for any pool a few times larger than `n`; a smaller one ends here.
    let budget = 200 * n as u64 + 100_000;
    let mut draws = 0u64;
    while problems.len() < n {
        draws += 1;
        if draws > budget {
            return Err(SynthError::PoolTooSmall { family, split, found: problems.len(), asked: n });
        }
        let Some(puzzle) = Puzzle::draw(family, difficulty, &mut rng) else { continue };
        let canonical = puzzle.canonical();
        if split_of(&canonical) == split && seen.insert(canonical) {
            problems.push(puzzle.into_problem());
        }
    }
    Ok(problems)
}

pub(super) enum Puzzle {
    Add(u32, u32),
    /// Minuend first and never smaller, so answers stay non-negative.
    Subtract(u32, u32),
    Multiply(u32, u32),
    Reverse(String),
    Sort(String),
    Spell(String),
}

impl Puzzle {
    /// A random problem, or `None` when the draw falls outside the difficulty's letter range.
    fn draw(family: ProblemFamily, difficulty: Difficulty, rng: &mut ChaCha8Rng) -> Option<Self> {
        let digits = difficulty.digits;
        Some(match family {
            ProblemFamily::Arithmetic => match rng.random_range(0..3) {
                0 => Puzzle::Add(operand(rng, digits), operand(rng, digits)),
                1 => {
                    let (a, b) = (operand(rng, digits), operand(rng, digits));
                    Puzzle::Subtract(a.max(b), a.min(b))
                }
                _ => Puzzle::Multiply(operand(rng, digits.min(2)), operand(rng, digits.min(2))),
            },
            ProblemFamily::Reverse => Puzzle::Reverse(word(difficulty, rng)?),
            ProblemFamily::Spell => Puzzle::Spell(word(difficulty, rng)?),
            ProblemFamily::Sort => {
                let [lo, hi] = difficulty.letters.unwrap_or([3, 8]);
                let len = rng.random_range(lo..=hi);
                Puzzle::Sort((0..len).map(|_| char::from(b'a' + rng.random_range(0..26u8))).collect())
            }
        })
    }

    /// The problem with incidental differences removed (operand order where it doesn't matter,
    /// letter order for sorting), so that variants of one problem share a split.
    pub(super) fn canonical(&self) -> String {
        match self {
            Puzzle::Add(a, b) => format!("add {} {}", a.min(b), a.max(b)),
            Puzzle::Subtract(a, b) => format!("subtract {a} {b}"),
            Puzzle::Multiply(a, b) => format!("multiply {} {}", a.min(b), a.max(b)),
            Puzzle::Reverse(word) => format!("reverse {word}"),
            Puzzle::Sort(letters) => format!("sort {}", sorted(letters)),
            Puzzle::Spell(word) => format!("spell {word}"),
        }
    }

    fn into_problem(self) -> Problem {
        let (family, prompt, answer) = match self {
            Puzzle::Add(a, b) => (ProblemFamily::Arithmetic, format!("What is {a} + {b}?"), (a + b).to_string()),
            Puzzle::Subtract(a, b) => (ProblemFamily::Arithmetic, format!("What is {a} - {b}?"), (a - b).to_string()),
            Puzzle::Multiply(a, b) => (ProblemFamily::Arithmetic, format!("What is {a} * {b}?"), (a * b).to_string()),
            Puzzle::Reverse(word) => (
                ProblemFamily::Reverse,
                format!("Reverse the letters: {}", spaced(&word)),
                spaced(&word.chars().rev().collect::<String>()),
            ),
            Puzzle::Sort(letters) => {
                (ProblemFamily::Sort, format!("Sort the letters: {}", spaced(&letters)), spaced(&sorted(&letters)))
            }
            Puzzle::Spell(word) => (ProblemFamily::Spell, format!("Spell the word: {word}"), spaced(&word)),
        };
        Problem { family, prompt, answer }
    }
}

/// A word to reverse or spell: half real words, which a model has seen in the corpus, half coined
/// ones, which make the pool too large to memorise; `None` when its length is outside the
/// difficulty's letter range.
fn word(difficulty: Difficulty, rng: &mut ChaCha8Rng) -> Option<String> {
    let word = if rng.random_bool(0.5) {
        let topic = pick(rng, TOPICS);
        let nouns = pick(rng, &[topic.agents, topic.things, topic.places]);
        inflect(pick(rng, nouns), Number::One).into_owned()
    } else {
        coined(rng, 2..=3)
    };
    if difficulty.letters.is_some_and(|[lo, hi]| !(lo..=hi).contains(&word.len())) {
        return None;
    }
    Some(word)
}

/// A number of 1 to `max_digits` digits, the digit count uniform so that small problems are as
/// common as large ones.
fn operand(rng: &mut ChaCha8Rng, max_digits: u32) -> u32 {
    let digits = rng.random_range(1..=max_digits);
    let low = if digits == 1 { 0 } else { 10u32.pow(digits - 1) };
    rng.random_range(low..10u32.pow(digits))
}

/// `abc` → `a b c`.
fn spaced(letters: &str) -> String {
    let mut out = String::with_capacity(letters.len() * 2);
    for (i, c) in letters.chars().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

pub(super) fn sorted(letters: &str) -> String {
    let mut chars: Vec<char> = letters.chars().collect();
    chars.sort_unstable();
    chars.into_iter().collect()
}

/// The split of a problem, from a cryptographic hash of its canonical form: stable across
/// Rust releases (unlike `std`'s hashers) and uniform whatever the problem's shape. (FNV-1a,
/// used before, sent no 3-letter sort to the test split and a fifth of the 2-letter ones.)
pub(super) fn split_of(canonical: &str) -> Split {
    let hash = blake3::hash(canonical.as_bytes());
    let head = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("eight bytes"));
    if head.is_multiple_of(10) { Split::Test } else { Split::Train }
}
