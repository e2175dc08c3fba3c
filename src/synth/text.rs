//! What every generated text shares: the length bounds of a document, filling a document with
//! sentences up to a drawn length, and word helpers (a uniform pick, capitals, "a"/"an",
//! invented words).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Every document is at least this long, in bytes …
pub(super) const MIN_BYTES: usize = 200;
/// … and at most this long.
pub(super) const MAX_BYTES: usize = 1500;

/// Builds a document from blocks of sentences until it reaches a length drawn for it, never
/// passing [`MAX_BYTES`]. Every sentence is far shorter than `MAX_BYTES - MIN_BYTES`, so a
/// sentence that would overflow only ever arrives once the document is long enough.
pub(super) fn fill(
    rng: &mut ChaCha8Rng,
    separator: &str,
    mut block: impl FnMut(&mut ChaCha8Rng) -> Vec<String>,
) -> String {
    let target = rng.random_range(MIN_BYTES..=MAX_BYTES - 100);
    let mut doc = String::with_capacity(MAX_BYTES);
    while doc.len() < target {
        for sentence in block(rng) {
            let joined = if doc.is_empty() { sentence.len() } else { separator.len() + sentence.len() };
            if doc.len() + joined > MAX_BYTES {
                return doc;
            }
            if !doc.is_empty() {
                doc.push_str(separator);
            }
            doc.push_str(&sentence);
            if doc.len() >= target {
                return doc;
            }
        }
    }
    doc
}

pub(super) fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

pub(super) fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// "a" or "an", for the word that follows it. The lexicon has no words like "hour" or "unit"
/// whose sound disagrees with their spelling.
pub(super) fn article(next: &str) -> &'static str {
    if next.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// A pronounceable invented lowercase word: `syllables` consonant-vowel pairs and a closing
/// consonant, so suffixes such as "-land" and "-ish" attach cleanly.
pub(super) fn coined(rng: &mut ChaCha8Rng, syllables: std::ops::RangeInclusive<usize>) -> String {
    const ONSETS: &[&str] = &[
        "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "br", "dr", "gr", "kr", "st", "tr", "sk",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ei", "ou"];
    const CODAS: &[&str] = &["n", "l", "r", "s", "k", "m", "nd", "st", "rn", "th"];
    let mut word = String::new();
    for _ in 0..rng.random_range(syllables) {
        word.push_str(pick(rng, ONSETS));
        word.push_str(pick(rng, VOWELS));
    }
    word.push_str(pick(rng, CODAS));
    word
}
