//! The synthetic corpus: English-like documents with structure a small model can learn, and
//! instruction tasks whose answers can be checked exactly, so tests and examples train without
//! downloading anything.
//!
//! Three document families:
//! - prose, from a small probabilistic grammar with agreement (subject and verb, article and
//!   noun, pronoun and possessive). Each document keeps to one topic, one tense and a small cast
//!   of recurring characters, which gives it structure longer than a sentence;
//! - facts about a world of invented people, cities and countries that is derived from the seed
//!   and never contradicts itself, so the facts can be memorised by repetition;
//! - arithmetic worksheet lines, always correct.
//!
//! Output is a pure function of the arguments: the only randomness is a `ChaCha8Rng` seeded from
//! the caller's seed, and nothing depends on hash-map iteration order, so a seed gives the same
//! bytes on every machine (for a given `rand` minor version, which fixes how ranges are sampled).

use std::collections::HashSet;
use std::fmt::Write;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Every document is at least this long, in bytes …
const MIN_BYTES: usize = 200;
/// … and at most this long.
const MAX_BYTES: usize = 1500;

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
    let world = World::new(&mut rng);
    (0..documents)
        .map(|i| match families[i % families.len()] {
            Family::Prose => prose(&mut rng),
            Family::Facts => world.document(&mut rng),
            Family::Arithmetic => arithmetic(&mut rng),
        })
        .collect()
}

/// Instruction tasks for fine-tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskFamily {
    /// "What is 37 + 48?" → "85": addition and subtraction up to 999, multiplication up to 99.
    Arithmetic,
    /// "Reverse the letters: g a r d e n" → "n e d r a g". Letters are spaced so that each is
    /// its own token: a subword vocabulary would otherwise hide the spelling from the model.
    Reverse,
    /// "Sort the letters: d c a b" → "a b c d".
    Sort,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub family: TaskFamily,
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
    /// The most tasks one call may ask for from this split. The smallest pool, arithmetic, holds
    /// about five times as many distinct problems in each split, which keeps drawing them quick
    /// and guarantees it ends.
    pub fn max_tasks(self) -> usize {
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
    /// Letters of a word to reverse or a string to sort, `[min, max]`; default: 3 to 8 for
    /// sorting, any length for reversal.
    pub letters: Option<[usize; 2]>,
}

impl Default for Difficulty {
    fn default() -> Self {
        Self { digits: 3, letters: None }
    }
}

impl Difficulty {
    pub fn check(&self) -> Result<(), String> {
        if !(1..=3).contains(&self.digits) {
            return Err("`digits` must be 1, 2 or 3".into());
        }
        if let Some([lo, hi]) = self.letters
            && !(1 <= lo && lo <= hi && hi <= 16)
        {
            return Err("`letters` must be [min, max] with 1 ≤ min ≤ max ≤ 16".into());
        }
        Ok(())
    }
}

/// `n` distinct tasks of `family` from `split`. A problem's split is decided by a hash of the
/// problem alone, not by the seed, `n` or the difficulty, so train and test never share a
/// prompt across any calls; and the first `n` tasks are the same whatever the count asked for.
/// A difficulty whose pool is too small for `n` is an error saying how many it holds.
///
/// # Panics
/// If `n` is over [`Split::max_tasks`].
pub fn tasks(
    family: TaskFamily,
    split: Split,
    n: usize,
    seed: u64,
    difficulty: Difficulty,
) -> Result<Vec<Task>, String> {
    assert!(n <= split.max_tasks(), "{n} {split:?} tasks asked for, at most {} can be generated", split.max_tasks());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Only ever probed, never iterated, so its order cannot leak into the output.
    let mut seen = HashSet::new();
    let mut tasks = Vec::with_capacity(n);
    // Generous for any pool a few times larger than `n`; a smaller one ends here.
    let budget = 200 * n as u64 + 100_000;
    let mut draws = 0u64;
    while tasks.len() < n {
        draws += 1;
        if draws > budget {
            return Err(format!(
                "only {} distinct {family:?} problems found for the {split:?} split at this difficulty, {n} asked for",
                tasks.len()
            ));
        }
        let Some(problem) = Problem::draw(family, difficulty, &mut rng) else { continue };
        let canonical = problem.canonical();
        if split_of(&canonical) == split && seen.insert(canonical) {
            tasks.push(problem.task());
        }
    }
    Ok(tasks)
}

enum Problem {
    Add(u32, u32),
    /// Minuend first and never smaller, so answers stay non-negative.
    Subtract(u32, u32),
    Multiply(u32, u32),
    Reverse(String),
    Sort(String),
}

impl Problem {
    /// A random problem, or `None` when the draw falls outside the difficulty's letter range.
    fn draw(family: TaskFamily, difficulty: Difficulty, rng: &mut ChaCha8Rng) -> Option<Self> {
        let digits = difficulty.digits;
        Some(match family {
            TaskFamily::Arithmetic => match rng.random_range(0..3) {
                0 => Problem::Add(operand(rng, digits), operand(rng, digits)),
                1 => {
                    let (a, b) = (operand(rng, digits), operand(rng, digits));
                    Problem::Subtract(a.max(b), a.min(b))
                }
                _ => Problem::Multiply(operand(rng, digits.min(2)), operand(rng, digits.min(2))),
            },
            // Half real words, which a model has seen in the corpus, half coined ones, which
            // make the pool too large to memorise.
            TaskFamily::Reverse => {
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
                Problem::Reverse(word)
            }
            TaskFamily::Sort => {
                let [lo, hi] = difficulty.letters.unwrap_or([3, 8]);
                let len = rng.random_range(lo..=hi);
                Problem::Sort((0..len).map(|_| char::from(b'a' + rng.random_range(0..26u8))).collect())
            }
        })
    }

    /// The problem with incidental differences removed (operand order where it doesn't matter,
    /// letter order for sorting), so that variants of one problem share a split.
    fn canonical(&self) -> String {
        match self {
            Problem::Add(a, b) => format!("add {} {}", a.min(b), a.max(b)),
            Problem::Subtract(a, b) => format!("subtract {a} {b}"),
            Problem::Multiply(a, b) => format!("multiply {} {}", a.min(b), a.max(b)),
            Problem::Reverse(word) => format!("reverse {word}"),
            Problem::Sort(letters) => format!("sort {}", sorted(letters)),
        }
    }

    fn task(self) -> Task {
        let (family, prompt, answer) = match self {
            Problem::Add(a, b) => (TaskFamily::Arithmetic, format!("What is {a} + {b}?"), (a + b).to_string()),
            Problem::Subtract(a, b) => (TaskFamily::Arithmetic, format!("What is {a} - {b}?"), (a - b).to_string()),
            Problem::Multiply(a, b) => (TaskFamily::Arithmetic, format!("What is {a} * {b}?"), (a * b).to_string()),
            Problem::Reverse(word) => (
                TaskFamily::Reverse,
                format!("Reverse the letters: {}", spaced(&word)),
                spaced(&word.chars().rev().collect::<String>()),
            ),
            Problem::Sort(letters) => {
                (TaskFamily::Sort, format!("Sort the letters: {}", spaced(&letters)), spaced(&sorted(&letters)))
            }
        };
        Task { family, prompt, answer }
    }
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

fn sorted(letters: &str) -> String {
    let mut chars: Vec<char> = letters.chars().collect();
    chars.sort_unstable();
    chars.into_iter().collect()
}

/// The split of a problem, from a cryptographic hash of its canonical form: stable across
/// Rust releases (unlike `std`'s hashers) and uniform whatever the problem's shape. (FNV-1a,
/// used before, sent no 3-letter sort to the test split and a fifth of the 2-letter ones.)
fn split_of(canonical: &str) -> Split {
    let hash = blake3::hash(canonical.as_bytes());
    let head = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("eight bytes"));
    if head.is_multiple_of(10) { Split::Test } else { Split::Train }
}

/// Builds a document from blocks of sentences until it reaches a length drawn for it, never
/// passing [`MAX_BYTES`]. Every sentence is far shorter than `MAX_BYTES - MIN_BYTES`, so a
/// sentence that would overflow only ever arrives once the document is long enough.
fn fill(rng: &mut ChaCha8Rng, separator: &str, mut block: impl FnMut(&mut ChaCha8Rng) -> Vec<String>) -> String {
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

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// "a" or "an", for the word that follows it. The lexicon has no words like "hour" or "unit"
/// whose sound disagrees with their spelling.
fn article(next: &str) -> &'static str {
    if next.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// A pronounceable invented lowercase word: `syllables` consonant-vowel pairs and a closing
/// consonant, so suffixes such as "-land" and "-ish" attach cleanly.
fn coined(rng: &mut ChaCha8Rng, syllables: std::ops::RangeInclusive<usize>) -> String {
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

// ---------------------------------------------------------------------------------------------
// Prose

#[derive(Clone, Copy, PartialEq)]
enum Number {
    One,
    Many,
}

#[derive(Clone, Copy)]
enum Tense {
    Present,
    Past,
}

/// Who a pronoun can stand for: a named character, or a group named by a plural noun.
#[derive(Clone, Copy)]
enum Referent {
    She,
    He,
    They,
}

impl Referent {
    fn pronoun(self) -> &'static str {
        match self {
            Referent::She => "she",
            Referent::He => "he",
            Referent::They => "they",
        }
    }

    fn possessive(self) -> &'static str {
        match self {
            Referent::She => "her",
            Referent::He => "his",
            Referent::They => "their",
        }
    }

    fn number(self) -> Number {
        match self {
            Referent::She | Referent::He => Number::One,
            Referent::They => Number::Many,
        }
    }
}

/// One subject area. A document keeps mostly to one topic, so its nouns and verbs co-occur as
/// they would in real text. Nouns are written "singular|plural" where the plural is irregular.
#[derive(Clone, Copy)]
struct Topic {
    /// People who act.
    agents: &'static [&'static str],
    /// What they act on; every verb below suits every thing here.
    things: &'static [&'static str],
    /// Where it happens; always singular, always "the".
    places: &'static [&'static str],
    /// Transitive verbs as (base, past).
    verbs: &'static [(&'static str, &'static str)],
    /// Adjectives that suit the things.
    adjectives: &'static [&'static str],
}

const TOPICS: &[Topic] = &[
    Topic {
        agents: &["fisherman|fishermen", "sailor", "captain"],
        things: &["net", "boat", "rope", "sail", "lantern", "anchor"],
        places: &["harbour", "pier", "lighthouse"],
        verbs: &[("mend", "mended"), ("pull", "pulled"), ("tie", "tied"), ("load", "loaded"), ("paint", "painted")],
        adjectives: &["salty", "wet", "wooden"],
    },
    Topic {
        agents: &["farmer", "shepherd", "milkmaid"],
        things: &["sheep|sheep", "goat", "cow", "horse", "pig", "hen"],
        places: &["barn", "field", "meadow"],
        verbs: &[
            ("feed", "fed"),
            ("count", "counted"),
            ("wash", "washed"),
            ("follow", "followed"),
            ("brush", "brushed"),
        ],
        adjectives: &["muddy", "hungry", "fat"],
    },
    Topic {
        agents: &["woodcutter", "hunter", "ranger"],
        things: &["tree", "log", "branch", "mushroom", "berry", "stump"],
        places: &["forest", "clearing", "river"],
        verbs: &[
            ("gather", "gathered"),
            ("mark", "marked"),
            ("find", "found"),
            ("carry", "carried"),
            ("count", "counted"),
        ],
        adjectives: &["dark", "tall", "mossy"],
    },
    Topic {
        agents: &["merchant", "baker", "butcher"],
        things: &["loaf|loaves", "apple", "basket", "pear", "cheese", "melon"],
        places: &["market", "square", "stall"],
        verbs: &[
            ("sell", "sold"),
            ("buy", "bought"),
            ("weigh", "weighed"),
            ("wrap", "wrapped"),
            ("arrange", "arranged"),
        ],
        adjectives: &["fresh", "cheap", "ripe"],
    },
    Topic {
        agents: &["cook", "servant", "grandmother"],
        things: &["pot", "pan", "knife|knives", "cup", "plate", "spoon"],
        places: &["kitchen", "pantry", "stove"],
        verbs: &[("wash", "washed"), ("dry", "dried"), ("fill", "filled"), ("polish", "polished"), ("drop", "dropped")],
        adjectives: &["clean", "hot", "shiny"],
    },
    Topic {
        agents: &["carpenter", "smith", "apprentice"],
        things: &["hammer", "chair", "box", "plank", "wheel", "ladder"],
        places: &["workshop", "forge", "shed"],
        verbs: &[("build", "built"), ("fix", "fixed"), ("measure", "measured"), ("lift", "lifted"), ("move", "moved")],
        adjectives: &["sturdy", "rusty", "rough"],
    },
    Topic {
        agents: &["teacher", "pupil", "child|children"],
        things: &["book", "letter", "map", "poem", "lesson", "song"],
        places: &["school", "classroom", "library"],
        verbs: &[("read", "read"), ("write", "wrote"), ("copy", "copied"), ("study", "studied"), ("learn", "learned")],
        adjectives: &["difficult", "short", "new"],
    },
    Topic {
        agents: &["climber", "guide", "goatherd"],
        things: &["peak", "ridge", "trail", "cliff", "slope", "glacier"],
        places: &["mountain", "valley", "hut"],
        verbs: &[
            ("climb", "climbed"),
            ("cross", "crossed"),
            ("reach", "reached"),
            ("follow", "followed"),
            ("watch", "watched"),
        ],
        adjectives: &["steep", "cold", "icy"],
    },
];

/// Recurring characters, with the pronoun that refers to each.
const CAST: &[(&str, Referent)] = &[
    ("Mira", Referent::She),
    ("Anna", Referent::She),
    ("Lena", Referent::She),
    ("Clara", Referent::She),
    ("Nora", Referent::She),
    ("Elsa", Referent::She),
    ("Ida", Referent::She),
    ("Greta", Referent::She),
    ("Rosa", Referent::She),
    ("Vera", Referent::She),
    ("Tomas", Referent::He),
    ("Otto", Referent::He),
    ("Henrik", Referent::He),
    ("Jonas", Referent::He),
    ("Felix", Referent::He),
    ("Anton", Referent::He),
    ("Emil", Referent::He),
    ("Oskar", Referent::He),
    ("Hugo", Referent::He),
    ("Nils", Referent::He),
];

const PERSON_ADJECTIVES: &[&str] =
    &["old", "young", "kind", "busy", "quiet", "happy", "tired", "clever", "cheerful", "patient", "proud", "strong"];
const THING_ADJECTIVES: &[&str] =
    &["small", "big", "heavy", "old", "red", "blue", "green", "brown", "white", "grey", "little", "broken"];
const ADVERBS: &[&str] =
    &["carefully", "slowly", "quickly", "quietly", "gently", "happily", "patiently", "proudly", "often", "firmly"];
/// Verbs without an object, as (base, past).
const INTRANSITIVE: &[(&str, &str)] = &[
    ("sleep", "slept"),
    ("wait", "waited"),
    ("rest", "rested"),
    ("sing", "sang"),
    ("laugh", "laughed"),
    ("work", "worked"),
    ("sit", "sat"),
    ("stand", "stood"),
    ("walk", "walked"),
    ("whistle", "whistled"),
];
const PREPOSITIONS: &[&str] = &["near", "behind", "beside", "by", "outside", "at"];
const ONE_DETERMINERS: &[&str] = &["the", "the", "the", "a", "this", "that"];
const MANY_DETERMINERS: &[&str] = &["the", "the", "some", "these", "those", "two", "three", "four", "five", "many"];
/// Introduce things in "there is …" sentences, where a definite "the" would be odd.
const INDEFINITE_MANY: &[&str] = &["some", "two", "three", "four", "five", "many"];
const CONNECTIVES: &[&str] = &["and", "but", "when", "while"];
const PRESENT_TIMES: &[&str] = &["every day", "each morning", "in the evening", "on most days", "at dawn"];
const PAST_TIMES: &[&str] = &["yesterday", "last winter", "that morning", "long ago", "at dawn"];

fn prose(rng: &mut ChaCha8Rng) -> String {
    let mut story = Story::new(rng);
    fill(rng, " ", |rng| vec![story.sentence(rng)])
}

/// The state a prose document keeps across sentences: its topic, setting, tense and characters.
struct Story {
    topic: Topic,
    /// The place most of the document happens.
    setting: &'static str,
    tense: Tense,
    cast: Vec<(&'static str, Referent)>,
    /// Whom the last clause was about, if a pronoun could now refer to it.
    antecedent: Option<Referent>,
}

/// What a verb and a possessive must agree with in a clause's subject.
struct Agreement {
    number: Number,
    /// Set when the subject's gender or plurality is known, so "her", "his" or "their" fits.
    referent: Option<Referent>,
}

/// Appends a word, or several, to a sentence being built.
fn say(sentence: &mut String, words: &str) {
    if !sentence.is_empty() {
        sentence.push(' ');
    }
    sentence.push_str(words);
}

// The methods below write into the sentence they are given rather than returning strings: most of
// the time spent making prose went to building and joining the little strings.
impl Story {
    fn new(rng: &mut ChaCha8Rng) -> Self {
        let topic = pick(rng, TOPICS);
        let setting = pick(rng, topic.places);
        let tense = if rng.random_bool(0.5) { Tense::Present } else { Tense::Past };
        let size = rng.random_range(2..=3);
        let mut cast = Vec::with_capacity(size);
        while cast.len() < size {
            let character = pick(rng, CAST);
            if !cast.iter().any(|&(name, _)| name == character.0) {
                cast.push(character);
            }
        }
        Story { topic, setting, tense, cast, antecedent: None }
    }

    fn sentence(&mut self, rng: &mut ChaCha8Rng) -> String {
        let mut sentence = String::with_capacity(160);
        match rng.random_range(0..10) {
            0..=5 => self.action(rng, &mut sentence),
            6 => self.description(rng, &mut sentence),
            7 => self.existence(rng, &mut sentence),
            _ => {
                self.action(rng, &mut sentence);
                let connective = pick(rng, CONNECTIVES);
                if matches!(connective, "and" | "but") {
                    sentence.push(',');
                }
                say(&mut sentence, connective);
                self.action(rng, &mut sentence);
            }
        }
        sentence.push('.');
        sentence[..1].make_ascii_uppercase();
        sentence
    }

    /// Mostly the document's topic, sometimes another, so topics bias word choice without
    /// walling it off.
    fn topic(&self, rng: &mut ChaCha8Rng) -> Topic {
        if rng.random_bool(0.85) { self.topic } else { pick(rng, TOPICS) }
    }

    /// "the old fisherman carefully mends the blue nets near the harbour", or "Mira sleeps".
    fn action(&mut self, rng: &mut ChaCha8Rng, sentence: &mut String) {
        let subject = self.person(rng, sentence);
        if rng.random_bool(0.6) {
            let topic = self.topic(rng);
            if rng.random_bool(0.3) {
                say(sentence, pick(rng, ADVERBS));
            }
            say(sentence, &conjugate(pick(rng, topic.verbs), subject.number, self.tense));
            let number = if rng.random_bool(0.45) { Number::Many } else { Number::One };
            self.thing(rng, sentence, topic, number, subject.referent);
            if rng.random_bool(0.5) {
                self.place(rng, sentence);
            }
        } else {
            say(sentence, &conjugate(pick(rng, INTRANSITIVE), subject.number, self.tense));
            if rng.random_bool(0.4) {
                say(sentence, pick(rng, ADVERBS));
            }
            if rng.random_bool(0.7) {
                self.place(rng, sentence);
            }
        }
        if rng.random_bool(0.2) {
            let times = match self.tense {
                Tense::Present => PRESENT_TIMES,
                Tense::Past => PAST_TIMES,
            };
            say(sentence, pick(rng, times));
        }
    }

    /// "the ropes near the pier were wet", "Mira is very tired".
    fn description(&mut self, rng: &mut ChaCha8Rng, sentence: &mut String) {
        let (number, adjective) = if rng.random_bool(0.5) {
            let subject = self.person(rng, sentence);
            (subject.number, pick(rng, PERSON_ADJECTIVES))
        } else {
            // A pronoun after this would be read as the things, not the last character.
            self.antecedent = None;
            let topic = self.topic(rng);
            let number = if rng.random_bool(0.5) { Number::Many } else { Number::One };
            self.thing(rng, sentence, topic, number, None);
            if rng.random_bool(0.3) {
                self.place(rng, sentence);
            }
            (number, thing_adjective(rng, topic))
        };
        say(sentence, be(number, self.tense));
        if rng.random_bool(0.3) {
            say(sentence, "very");
        }
        say(sentence, adjective);
    }

    /// "there are three old boats near the harbour".
    fn existence(&mut self, rng: &mut ChaCha8Rng, sentence: &mut String) {
        self.antecedent = None;
        let topic = self.topic(rng);
        let number = if rng.random_bool(0.5) { Number::Many } else { Number::One };
        say(sentence, "there");
        say(sentence, be(number, self.tense));
        let noun = inflect(pick(rng, topic.things), number);
        let adjective = rng.random_bool(0.5).then(|| thing_adjective(rng, topic));
        let determiner = match number {
            Number::One => article(adjective.unwrap_or(&noun)),
            Number::Many => pick(rng, INDEFINITE_MANY),
        };
        noun_phrase(sentence, determiner, adjective, &noun);
        self.place(rng, sentence);
    }

    /// A person to act: a pronoun for the last character, a character by name, or a noun phrase.
    fn person(&mut self, rng: &mut ChaCha8Rng, sentence: &mut String) -> Agreement {
        if let Some(referent) = self.antecedent
            && rng.random_bool(0.35)
        {
            say(sentence, referent.pronoun());
            return Agreement { number: referent.number(), referent: Some(referent) };
        }
        if rng.random_bool(0.5) {
            let (name, referent) = pick(rng, &self.cast);
            self.antecedent = Some(referent);
            say(sentence, name);
            return Agreement { number: Number::One, referent: Some(referent) };
        }
        let number = if rng.random_bool(0.35) { Number::Many } else { Number::One };
        // A lone "the sailor" has no known gender; a group can be "they".
        let referent = (number == Number::Many).then_some(Referent::They);
        self.antecedent = referent;
        let agents = self.topic(rng).agents;
        let noun = inflect(pick(rng, agents), number);
        let adjective = rng.random_bool(0.4).then(|| pick(rng, PERSON_ADJECTIVES));
        let determiner = determiner(rng, number, adjective.unwrap_or(&noun), None);
        noun_phrase(sentence, determiner, adjective, &noun);
        Agreement { number, referent }
    }

    /// A thing of `topic`, possibly owned by `owner`: "her wet nets".
    fn thing(
        &self,
        rng: &mut ChaCha8Rng,
        sentence: &mut String,
        topic: Topic,
        number: Number,
        owner: Option<Referent>,
    ) {
        let noun = inflect(pick(rng, topic.things), number);
        let adjective = rng.random_bool(0.5).then(|| thing_adjective(rng, topic));
        let determiner = determiner(rng, number, adjective.unwrap_or(&noun), owner);
        noun_phrase(sentence, determiner, adjective, &noun);
    }

    /// "near the harbour": usually the document's setting, so places recur within a document.
    fn place(&self, rng: &mut ChaCha8Rng, sentence: &mut String) {
        say(sentence, pick(rng, PREPOSITIONS));
        say(sentence, "the");
        let place = if rng.random_bool(0.6) {
            self.setting
        } else {
            let places = self.topic(rng).places;
            pick(rng, places)
        };
        say(sentence, place);
    }
}

/// A determiner for a noun phrase whose first word is `first`, which decides "a" or "an".
fn determiner(rng: &mut ChaCha8Rng, number: Number, first: &str, owner: Option<Referent>) -> &'static str {
    if let Some(owner) = owner
        && rng.random_bool(0.3)
    {
        return owner.possessive();
    }
    match number {
        Number::One => match pick(rng, ONE_DETERMINERS) {
            "a" => article(first),
            other => other,
        },
        Number::Many => pick(rng, MANY_DETERMINERS),
    }
}

fn noun_phrase(sentence: &mut String, determiner: &str, adjective: Option<&str>, noun: &str) {
    say(sentence, determiner);
    if let Some(adjective) = adjective {
        say(sentence, adjective);
    }
    say(sentence, noun);
}

/// An adjective for a thing of `topic`, half the time one that only this topic uses.
fn thing_adjective(rng: &mut ChaCha8Rng, topic: Topic) -> &'static str {
    let adjectives = if rng.random_bool(0.5) { topic.adjectives } else { THING_ADJECTIVES };
    pick(rng, adjectives)
}

/// The form of a lexicon noun for `number`.
fn inflect(noun: &'static str, number: Number) -> std::borrow::Cow<'static, str> {
    match (noun.split_once('|'), number) {
        (Some((one, _)), Number::One) => one.into(),
        (Some((_, many)), Number::Many) => many.into(),
        (None, Number::One) => noun.into(),
        (None, Number::Many) => add_s(noun).into(),
    }
}

fn conjugate(
    (base, past): (&'static str, &'static str),
    number: Number,
    tense: Tense,
) -> std::borrow::Cow<'static, str> {
    match (tense, number) {
        (Tense::Present, Number::One) => add_s(base).into(),
        (Tense::Present, Number::Many) => base.into(),
        (Tense::Past, _) => past.into(),
    }
}

fn be(number: Number, tense: Tense) -> &'static str {
    match (tense, number) {
        (Tense::Present, Number::One) => "is",
        (Tense::Present, Number::Many) => "are",
        (Tense::Past, Number::One) => "was",
        (Tense::Past, Number::Many) => "were",
    }
}

/// The regular "-s" ending shared by plural nouns and third-person verbs: "nets", "boxes",
/// "carries", "buys". The lexicon spells out irregular plurals, so this needs no exceptions.
fn add_s(word: &str) -> String {
    match word.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{stem}ies"),
        _ if word.ends_with(['s', 'x', 'z']) || word.ends_with("ch") || word.ends_with("sh") => format!("{word}es"),
        _ => format!("{word}s"),
    }
}

// ---------------------------------------------------------------------------------------------
// Facts

const COUNTRIES: usize = 10;
const CITIES_PER_COUNTRY: usize = 4;
const PEOPLE: usize = 200;
const JOBS: &[&str] = &[
    "baker",
    "teacher",
    "miller",
    "weaver",
    "doctor",
    "farmer",
    "sailor",
    "potter",
    "smith",
    "carpenter",
    "painter",
    "tailor",
    "merchant",
    "librarian",
    "gardener",
    "builder",
    "nurse",
    "engineer",
    "astronomer",
    "innkeeper",
];
const COLOURS: &[&str] = &["red", "blue", "green", "yellow", "purple", "orange", "white", "black", "grey", "brown"];

/// The invented world that facts are drawn from. Each fact is stored once, so no two documents
/// can disagree about it.
struct World {
    countries: Vec<Country>,
    cities: Vec<City>,
    people: Vec<Person>,
}

struct Country {
    name: String,
    language: String,
    /// Indices into `World::cities`; the first is the capital.
    cities: Vec<usize>,
    /// Indices into `World::people` of those who live in one of its cities.
    residents: Vec<usize>,
}

struct City {
    name: String,
    country: usize,
}

struct Person {
    name: String,
    city: usize,
    job: &'static str,
    colour: &'static str,
    born: u32,
}

impl World {
    fn new(rng: &mut ChaCha8Rng) -> Self {
        // Every name in the world is distinct, or two facts about different things would read
        // as a contradiction.
        let mut used = HashSet::new();
        let mut countries = Vec::with_capacity(COUNTRIES);
        let mut cities = Vec::with_capacity(COUNTRIES * CITIES_PER_COUNTRY);
        while countries.len() < COUNTRIES {
            let stem = capitalised(&coined(rng, 1..=2));
            let name = format!("{stem}{}", pick(rng, &["land", "ia", "mark", "stan"]));
            let language = format!("{stem}ish");
            if used.contains(&name) || used.contains(&language) {
                continue;
            }
            used.insert(name.clone());
            used.insert(language.clone());
            let country = countries.len();
            let mut own = Vec::with_capacity(CITIES_PER_COUNTRY);
            while own.len() < CITIES_PER_COUNTRY {
                let name = format!(
                    "{}{}",
                    capitalised(&coined(rng, 1..=2)),
                    pick(rng, &["", "", "ton", "by", "ford", "holm", "wick"])
                );
                if used.insert(name.clone()) {
                    own.push(cities.len());
                    cities.push(City { name, country });
                }
            }
            countries.push(Country { name, language, cities: own, residents: Vec::new() });
        }
        let mut people = Vec::with_capacity(PEOPLE);
        while people.len() < PEOPLE {
            let name = format!("{} {}", capitalised(&coined(rng, 1..=2)), capitalised(&coined(rng, 1..=2)));
            if !used.insert(name.clone()) {
                continue;
            }
            let city = rng.random_range(0..cities.len());
            countries[cities[city].country].residents.push(people.len());
            people.push(Person {
                name,
                city,
                job: pick(rng, JOBS),
                colour: pick(rng, COLOURS),
                born: rng.random_range(1920..=2005),
            });
        }
        World { countries, cities, people }
    }

    fn document(&self, rng: &mut ChaCha8Rng) -> String {
        fill(rng, " ", |rng| if rng.random_bool(0.65) { self.about_person(rng) } else { self.about_country(rng) })
    }

    /// Two to four facts about one person, in any order, and perhaps where their city lies.
    fn about_person(&self, rng: &mut ChaCha8Rng) -> Vec<String> {
        let person = &self.people[rng.random_range(0..self.people.len())];
        let p = &person.name;
        let city = &self.cities[person.city];
        let c = &city.name;
        let country = &self.countries[city.country].name;
        let (job, a) = (person.job, article(person.job));
        let mut facts = vec![
            match rng.random_range(0..3) {
                0 => format!("{p} lives in {c}."),
                1 => format!("{p} has a home in {c}."),
                _ => format!("{c} is home to {p}."),
            },
            match rng.random_range(0..3) {
                0 => format!("{p} works as {a} {job}."),
                1 => format!("{p} is {a} {job}."),
                _ => format!("By trade, {p} is {a} {job}."),
            },
            if rng.random_bool(0.5) {
                format!("{p}'s favourite colour is {}.", person.colour)
            } else {
                format!("The favourite colour of {p} is {}.", person.colour)
            },
            if rng.random_bool(0.5) {
                format!("{p} was born in {}.", person.born)
            } else {
                format!("{p} was born in the year {}.", person.born)
            },
            if rng.random_bool(0.5) { format!("{p} is from {country}.") } else { format!("{p} comes from {country}.") },
        ];
        facts.shuffle(rng);
        facts.truncate(rng.random_range(2..=4));
        if rng.random_bool(0.4) {
            facts.push(self.city_fact(rng, person.city));
        }
        facts
    }

    /// A country's capital and language, some of its cities and some of its people.
    fn about_country(&self, rng: &mut ChaCha8Rng) -> Vec<String> {
        let country = &self.countries[rng.random_range(0..self.countries.len())];
        let (name, language) = (&country.name, &country.language);
        let capital = &self.cities[country.cities[0]].name;
        let mut facts = vec![
            if rng.random_bool(0.5) {
                format!("The capital of {name} is {capital}.")
            } else {
                format!("{capital} is the capital of {name}.")
            },
            if rng.random_bool(0.5) {
                format!("People in {name} speak {language}.")
            } else {
                format!("The language of {name} is {language}.")
            },
        ];
        for &city in &country.cities[1..] {
            if rng.random_bool(0.5) {
                facts.push(self.city_fact(rng, city));
            }
        }
        if !country.residents.is_empty() {
            for _ in 0..rng.random_range(1..=3) {
                let person = &self.people[pick(rng, &country.residents)];
                facts.push(format!("{} lives in {}.", person.name, self.cities[person.city].name));
            }
        }
        facts
    }

    fn city_fact(&self, rng: &mut ChaCha8Rng, city: usize) -> String {
        let city = &self.cities[city];
        let country = &self.countries[city.country].name;
        if rng.random_bool(0.5) {
            format!("{} is a city in {country}.", city.name)
        } else {
            format!("{} lies in {country}.", city.name)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arithmetic

#[derive(Clone, Copy)]
enum Op {
    Add,
    Subtract,
    Multiply,
    Divide,
}

/// Worksheet lines: mixed drills, times tables and runs such as "23 + 1 = 24", "23 + 2 = 25".
fn arithmetic(rng: &mut ChaCha8Rng) -> String {
    fill(rng, "\n", |rng| {
        let in_words = rng.random_bool(0.5);
        match rng.random_range(0..5) {
            0 => {
                let k = rng.random_range(2..=12);
                (1..=10).map(|i| equation(k, Op::Multiply, i, in_words)).collect()
            }
            1 => {
                let a = rng.random_range(0..=90);
                (1..=rng.random_range(4..=9)).map(|b| equation(a, Op::Add, b, in_words)).collect()
            }
            _ => (0..rng.random_range(3..=6)).map(|_| drill(rng)).collect(),
        }
    })
}

/// One random equation with small operands, in symbols or words.
fn drill(rng: &mut ChaCha8Rng) -> String {
    let in_words = rng.random_bool(0.5);
    match rng.random_range(0..4) {
        0 => equation(rng.random_range(0..100), Op::Add, rng.random_range(0..100), in_words),
        1 => {
            let a = rng.random_range(0..100);
            equation(a, Op::Subtract, rng.random_range(0..=a), in_words)
        }
        2 => equation(rng.random_range(0..=12), Op::Multiply, rng.random_range(0..=12), in_words),
        _ => {
            // Built from the quotient so that every division is exact.
            let (divisor, quotient) = (rng.random_range(1..=12), rng.random_range(0..=12));
            equation(divisor * quotient, Op::Divide, divisor, in_words)
        }
    }
}

/// "17 + 25 = 42." or "17 plus 25 is 42."; callers keep subtraction non-negative and division
/// exact.
fn equation(a: u32, op: Op, b: u32, in_words: bool) -> String {
    let (symbol, word, result) = match op {
        Op::Add => ("+", "plus", a + b),
        Op::Subtract => ("-", "minus", a - b),
        Op::Multiply => ("*", "times", a * b),
        Op::Divide => ("/", "divided by", a / b),
    };
    // Sized up front: letting `format!` grow the line took most of the time spent on arithmetic.
    let mut line = String::with_capacity(32);
    let written = if in_words {
        write!(line, "{a} {word} {b} is {result}.")
    } else {
        write!(line, "{a} {symbol} {b} = {result}.")
    };
    written.expect("writing to a String cannot fail");
    line
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;

    const ALL: &[Family] = &[Family::Prose, Family::Facts, Family::Arithmetic];
    const TASK_FAMILIES: [TaskFamily; 3] = [TaskFamily::Arithmetic, TaskFamily::Reverse, TaskFamily::Sort];

    fn words(text: &str) -> impl Iterator<Item = String> + '_ {
        text.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()).map(str::to_ascii_lowercase)
    }

    #[test]
    fn output_is_a_function_of_the_seed_and_stable_as_the_count_grows() {
        let docs = documents(ALL, 300, 1);
        assert_eq!(docs, documents(ALL, 300, 1));
        assert_ne!(docs, documents(ALL, 300, 2));
        assert_eq!(docs[..100], documents(ALL, 100, 1));
        for family in TASK_FAMILIES {
            for split in [Split::Train, Split::Test] {
                let tasks = tasks(family, split, 300, 1, Difficulty::default()).unwrap();
                assert_eq!(tasks, super::tasks(family, split, 300, 1, Difficulty::default()).unwrap());
                assert_ne!(tasks, super::tasks(family, split, 300, 2, Difficulty::default()).unwrap());
                assert_eq!(tasks[..100], super::tasks(family, split, 100, 1, Difficulty::default()).unwrap());
            }
        }
    }

    /// Pins the exact bytes. If this fails after a dependency update (a new `rand` minor version
    /// may sample ranges differently) or a lexicon change, corpora already built from a seed no
    /// longer match what that seed makes now: bump the `corpus` stage kind's version.
    #[test]
    fn output_is_pinned() {
        let docs = documents(ALL, 3, 1);
        assert_eq!(&docs[0][..80], "Clara often reached the glacier outside the hut. The goatherds waited beside the");
        assert_eq!(&docs[1][..80], "By trade, Sar Roun is a potter. Sar Roun's favourite colour is orange. The capit");
        assert_eq!(
            &docs[2][..80],
            "96 divided by 12 is 8.\n15 divided by 3 is 5.\n4 divided by 2 is 2.\n42 plus 39 is "
        );
        let first = |family| tasks(family, Split::Test, 1, 1, Difficulty::default()).unwrap().remove(0);
        let arithmetic = first(TaskFamily::Arithmetic);
        assert_eq!((arithmetic.prompt.as_str(), arithmetic.answer.as_str()), ("What is 98 * 37?", "3626"));
        assert_eq!(first(TaskFamily::Reverse).prompt, "Reverse the letters: b a r n");
        assert_eq!(first(TaskFamily::Sort).prompt, "Sort the letters: b g e x n v g");
    }

    /// Also a rough timing: the number printed is for an unoptimised build unless run with
    /// `--release`.
    #[test]
    fn documents_have_the_requested_count_length_and_families() {
        let start = std::time::Instant::now();
        let docs = documents(ALL, 20_000, 5);
        let elapsed = start.elapsed();
        let bytes: usize = docs.iter().map(String::len).sum();
        eprintln!("20,000 documents, {bytes} bytes, in {elapsed:?}");
        assert_eq!(docs.len(), 20_000);
        for doc in &docs {
            assert!((MIN_BYTES..=MAX_BYTES).contains(&doc.len()), "{} bytes: {doc}", doc.len());
            assert!(doc.is_ascii() && doc.ends_with('.'), "{doc}");
        }
        // Families come in turn: arithmetic documents are the only ones made of digit lines.
        for (i, doc) in docs.iter().enumerate().take(300) {
            assert_eq!(doc.starts_with(|c: char| c.is_ascii_digit()), i % 3 == 2, "{doc}");
        }
        for &family in ALL {
            assert_eq!(documents(&[family], 7, 5).len(), 7);
        }
        assert!(documents(&[], 0, 5).is_empty());
    }

    #[test]
    #[should_panic(expected = "no document family")]
    fn documents_need_a_family() {
        documents(&[], 1, 5);
    }

    fn check_equation(line: &str) {
        let number = |s: &str| s.parse::<u64>().unwrap_or_else(|_| panic!("`{s}` in {line:?} is not a number"));
        let tokens: Vec<&str> =
            line.strip_suffix('.').unwrap_or_else(|| panic!("{line:?} has no full stop")).split(' ').collect();
        let (a, op, b, result) = match tokens[..] {
            [a, op, b, "=", c] => (number(a), op, number(b), number(c)),
            [a, "divided", "by", b, "is", c] => (number(a), "/", number(b), number(c)),
            [a, "plus", b, "is", c] => (number(a), "+", number(b), number(c)),
            [a, "minus", b, "is", c] => (number(a), "-", number(b), number(c)),
            [a, "times", b, "is", c] => (number(a), "*", number(b), number(c)),
            _ => panic!("unrecognised line {line:?}"),
        };
        let expected = match op {
            "+" => a + b,
            "-" => a.checked_sub(b).unwrap_or_else(|| panic!("negative result in {line:?}")),
            "*" => a * b,
            "/" => {
                assert!(b != 0 && a % b == 0, "inexact division in {line:?}");
                a / b
            }
            _ => panic!("unknown operator in {line:?}"),
        };
        assert_eq!(result, expected, "{line:?}");
    }

    #[test]
    fn every_arithmetic_line_is_correct() {
        let docs = documents(&[Family::Arithmetic], 2000, 3);
        let lines: Vec<&str> = docs.iter().flat_map(|doc| doc.lines()).collect();
        lines.iter().for_each(|line| check_equation(line));
        assert!(lines.len() > 50_000, "{} lines", lines.len());
        for word in ["plus", "minus", "times", "divided", " + ", " - ", " * ", " / "] {
            assert!(lines.iter().any(|line| line.contains(word)), "no `{word}`");
        }
    }

    /// A fact sentence as (subject, relation, object), whichever way round it is phrased.
    fn fact(sentence: &str) -> (String, &'static str, String) {
        let s = sentence.strip_suffix('.').unwrap();
        // The object of "is a baker" is the job; the article must agree with it.
        let object = |object: &str| match object.split_once(' ') {
            Some((a, job)) if ["a", "an"].contains(&a) => {
                assert_eq!(a, article(job), "{sentence:?}");
                job.to_owned()
            }
            _ => object.to_owned(),
        };
        for (prefix, middle, relation) in [
            ("The capital of ", " is ", "capital"),
            ("People in ", " speak ", "language"),
            ("The language of ", " is ", "language"),
            ("The favourite colour of ", " is ", "colour"),
            ("By trade, ", " is ", "job"),
        ] {
            if let Some(rest) = s.strip_prefix(prefix) {
                let (subject, rest) = rest.split_once(middle).unwrap();
                return (subject.to_owned(), relation, object(rest));
            }
        }
        // `true` where the object comes first.
        for (middle, relation, reversed) in [
            (" is the capital of ", "capital", true),
            (" is a city in ", "in", false),
            (" lies in ", "in", false),
            (" is home to ", "lives", true),
            (" lives in ", "lives", false),
            (" has a home in ", "lives", false),
            (" works as ", "job", false),
            (" was born in the year ", "born", false),
            (" was born in ", "born", false),
            (" is from ", "from", false),
            (" comes from ", "from", false),
            ("'s favourite colour is ", "colour", false),
            (" is ", "job", false),
        ] {
            if let Some((left, right)) = s.split_once(middle) {
                let (subject, other) = if reversed { (right, left) } else { (left, right) };
                return (subject.to_owned(), relation, object(other));
            }
        }
        panic!("unrecognised fact {sentence:?}")
    }

    #[test]
    fn facts_are_consistent_and_repeat() {
        let docs = documents(&[Family::Facts], 600, 9);
        let mut known: HashMap<(String, &str), String> = HashMap::new();
        let mut mentions: HashMap<(String, &str), usize> = HashMap::new();
        for doc in &docs {
            for sentence in doc.split_inclusive(". ").map(str::trim_end) {
                let (subject, relation, object) = fact(sentence);
                let previous = known.entry((subject.clone(), relation)).or_insert_with(|| object.clone());
                assert_eq!(*previous, object, "{subject} {relation}: {previous} and {object}");
                *mentions.entry((subject, relation)).or_default() += 1;
            }
        }
        // Facts agree with each other, not just with themselves.
        for ((subject, relation), object) in &known {
            match *relation {
                "lives" => {
                    let country = &known[&(object.clone(), "in")];
                    if let Some(from) = known.get(&(subject.clone(), "from")) {
                        assert_eq!(from, country, "{subject} lives in {object}");
                    }
                }
                "capital" => assert_eq!(&known[&(object.clone(), "in")], subject),
                _ => {}
            }
        }
        let people = known.keys().filter(|(_, relation)| *relation == "job").count();
        assert!((190..=PEOPLE).contains(&people), "{people} people");
        let rare = mentions.values().filter(|&&n| n < 3).count();
        eprintln!(
            "{} facts, {} mentions, {rare} mentioned fewer than 3 times",
            mentions.len(),
            mentions.values().sum::<usize>()
        );
        assert!(rare * 20 < mentions.len(), "{rare} of {} facts mentioned fewer than 3 times", mentions.len());
    }

    #[test]
    fn prose_has_a_bounded_vocabulary_and_agrees() {
        let docs = documents(&[Family::Prose], 1000, 4);
        let vocabulary: BTreeSet<String> = docs.iter().flat_map(|doc| words(doc)).collect();
        eprintln!("{} distinct prose words", vocabulary.len());
        assert!((300..=600).contains(&vocabulary.len()), "{} distinct words", vocabulary.len());

        let base: BTreeSet<&str> =
            TOPICS.iter().flat_map(|t| t.verbs).chain(INTRANSITIVE).map(|&(base, _)| base).collect();
        let third: BTreeSet<String> = base.iter().map(|verb| add_s(verb)).collect();
        let past: BTreeSet<&str> =
            TOPICS.iter().flat_map(|t| t.verbs).chain(INTRANSITIVE).map(|&(_, past)| past).collect();
        let names: BTreeSet<String> = CAST.iter().map(|(name, _)| name.to_ascii_lowercase()).collect();
        for doc in &docs {
            let words: Vec<String> = words(doc).collect();
            let mut subjects = Vec::new();
            for (i, word) in words.iter().enumerate() {
                if word == "a" || word == "an" {
                    assert_eq!(word, article(&words[i + 1]), "{doc}");
                }
                // Pronouns and names are only ever subjects, so the verb after them must agree.
                let one = word == "he" || word == "she" || names.contains(word);
                if one || word == "they" {
                    subjects.push((one, words[i + 1..].iter().find(|w| !ADVERBS.contains(&w.as_str())).unwrap()));
                }
            }
            let present = subjects.iter().all(|&(one, verb)| match one {
                true => verb == "is" || third.contains(verb),
                false => verb == "are" || base.contains(verb.as_str()),
            });
            let past_tense = subjects
                .iter()
                .all(|&(one, verb)| past.contains(verb.as_str()) || verb == if one { "was" } else { "were" });
            assert!(present || past_tense, "disagreeing subject and verb in {doc}");
            // A document keeps one tense throughout.
            let is = words.iter().any(|w| w == "is" || w == "are");
            let was = words.iter().any(|w| w == "was" || w == "were");
            assert!(!(is && was), "mixed tenses in {doc}");
        }
    }

    #[test]
    fn every_task_answer_is_correct() {
        for family in TASK_FAMILIES {
            for split in [Split::Train, Split::Test] {
                for task in tasks(family, split, 2000, 6, Difficulty::default()).unwrap() {
                    assert_eq!(task.family, family);
                    assert!(task.prompt.is_ascii() && task.prompt.len() <= 56 && task.answer.len() <= 32, "{task:?}");
                    match family {
                        TaskFamily::Arithmetic => {
                            let problem =
                                task.prompt.strip_prefix("What is ").and_then(|p| p.strip_suffix('?')).unwrap();
                            check_equation(&format!("{problem} = {}.", task.answer));
                        }
                        TaskFamily::Reverse => {
                            let word = task.prompt.strip_prefix("Reverse the letters: ").unwrap();
                            assert!(
                                word.len() >= 5
                                    && word
                                        .split(' ')
                                        .all(|l| l.len() == 1 && l.bytes().all(|b| b.is_ascii_lowercase())),
                                "{task:?}"
                            );
                            assert_eq!(task.answer.chars().rev().collect::<String>(), word);
                        }
                        TaskFamily::Sort => {
                            let letters = task.prompt.strip_prefix("Sort the letters: ").unwrap();
                            let mut expected: Vec<&str> = letters.split(' ').collect();
                            expected.sort();
                            assert_eq!(task.answer, expected.join(" "), "{task:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn train_and_test_never_share_a_problem() {
        for family in TASK_FAMILIES {
            let train: Vec<Task> = tasks(family, Split::Train, 5000, 1, Difficulty::default()).unwrap();
            let prompts: HashSet<&str> = train.iter().map(|t| t.prompt.as_str()).collect();
            assert_eq!(prompts.len(), train.len(), "{family:?} train repeats a prompt");
            // Another seed and another count draw other problems, but each keeps its split.
            let easy = Difficulty { digits: 2, letters: Some([3, 5]) };
            let tests = [(5000, 1, Difficulty::default()), (700, 2, Difficulty::default()), (100, 1, easy)];
            for test in tests.map(|(n, seed, d)| tasks(family, Split::Test, n, seed, d).unwrap()) {
                assert!(test.iter().all(|t| !prompts.contains(t.prompt.as_str())), "{family:?}");
            }
        }
        // The split is by problem, so "2 + 3" and "3 + 2" land together.
        assert_eq!(split_of(&Problem::Add(2, 3).canonical()), split_of(&Problem::Add(3, 2).canonical()));
    }

    #[test]
    fn one_problem_in_ten_is_a_test_problem_whatever_its_shape() {
        // Every sort of n letters, as its sorted letters.
        let sorts = |n: usize| -> Vec<String> {
            let mut all = vec![String::new()];
            for _ in 0..n {
                all = all.iter().flat_map(|s| (b'a'..=b'z').map(move |c| format!("{s}{}", char::from(c)))).collect();
            }
            all.into_iter().filter(|s| sorted(s) == *s).map(|s| Problem::Sort(s).canonical()).collect()
        };
        let mut shapes: Vec<(String, Vec<String>)> = (2..=4).map(|n| (format!("{n}-letter sorts"), sorts(n))).collect();
        shapes.push((
            "additions".into(),
            (0..100).flat_map(|a| (a..100).map(move |b| Problem::Add(a, b).canonical())).collect(),
        ));
        shapes.push((
            "subtractions".into(),
            (10..100).flat_map(|a| (10..=a).map(move |b| Problem::Subtract(a, b).canonical())).collect(),
        ));
        shapes.push((
            "multiplications".into(),
            (0..100).flat_map(|a| (a..100).map(move |b| Problem::Multiply(a, b).canonical())).collect(),
        ));
        for (shape, problems) in shapes {
            let test = problems.iter().filter(|c| split_of(c) == Split::Test).count() as f64 / problems.len() as f64;
            assert!((0.08..0.12).contains(&test), "{shape}: {:.1} % test problems", 100.0 * test);
        }
    }

    #[test]
    #[should_panic(expected = "at most")]
    fn tasks_are_bounded() {
        let _ = tasks(TaskFamily::Sort, Split::Test, Split::Test.max_tasks() + 1, 1, Difficulty::default());
    }

    #[test]
    fn difficulty_bounds_the_problems_and_a_too_small_pool_is_an_error() {
        let d = Difficulty { digits: 1, letters: Some([3, 4]) };
        for t in tasks(TaskFamily::Arithmetic, Split::Train, 40, 1, d).unwrap() {
            assert!(t.prompt.bytes().filter(u8::is_ascii_digit).count() <= 2, "{t:?}");
        }
        // Short words to reverse are few: the corpus's three- and four-letter nouns.
        for (family, n) in [(TaskFamily::Reverse, 20), (TaskFamily::Sort, 200)] {
            for t in tasks(family, Split::Train, n, 1, d).unwrap() {
                assert!((3..=4).contains(&t.answer.split(' ').count()), "{t:?}");
            }
        }
        // One-digit arithmetic holds about 160 distinct problems, 10 % of them test problems.
        let err = tasks(TaskFamily::Arithmetic, Split::Test, 100, 1, d).unwrap_err();
        assert!(err.contains("distinct Arithmetic problems found") && err.contains("100 asked for"), "{err}");
        assert!(Difficulty { digits: 4, letters: None }.check().is_err());
        assert!(Difficulty { digits: 2, letters: Some([5, 3]) }.check().is_err());
    }

    #[test]
    fn names_serialise_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&[Family::Prose, Family::Facts, Family::Arithmetic]).unwrap(),
            r#"["prose","facts","arithmetic"]"#
        );
        assert_eq!(serde_json::to_string(&Split::Test).unwrap(), r#""test""#);
        let task = tasks(TaskFamily::Reverse, Split::Train, 1, 1, Difficulty::default()).unwrap().remove(0);
        let json = serde_json::to_string(&task).unwrap();
        assert!(json.contains(r#""family":"reverse""#), "{json}");
        assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), task);
    }
}
