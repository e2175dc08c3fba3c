//! The generator's promises: determinism and pinned bytes, lengths and families, correct
//! arithmetic, consistent facts, agreeing prose, correct answers, and a split that never shares
//! a problem and sends one problem in ten to the test set whatever its shape.

// The tests print what they measured (counts, timings) to the test log.
#![allow(clippy::print_stderr)]

use std::collections::{BTreeSet, HashMap, HashSet};

use super::arithmetic::check_equation;
use super::facts::PEOPLE;
use super::lexicon::{ADVERBS, CAST, INTRANSITIVE, TOPICS};
use super::problems::{Puzzle, sorted, split_of};
use super::prose::add_s;
use super::text::{MAX_BYTES, MIN_BYTES, article};
use super::*;

const ALL: &[Family] = &[Family::Prose, Family::Facts, Family::Arithmetic];
const PROBLEM_FAMILIES: [ProblemFamily; 4] =
    [ProblemFamily::Arithmetic, ProblemFamily::Reverse, ProblemFamily::Sort, ProblemFamily::Spell];

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()).map(str::to_ascii_lowercase)
}

#[test]
fn output_is_a_function_of_the_seed_and_stable_as_the_count_grows() {
    let docs = documents(ALL, 300, 1);
    assert_eq!(docs, documents(ALL, 300, 1));
    assert_ne!(docs, documents(ALL, 300, 2));
    assert_eq!(docs[..100], documents(ALL, 100, 1));
    for family in PROBLEM_FAMILIES {
        for split in [Split::Train, Split::Test] {
            let drawn = problems(family, split, 300, 1, Difficulty::default()).unwrap();
            assert_eq!(drawn, problems(family, split, 300, 1, Difficulty::default()).unwrap());
            assert_ne!(drawn, problems(family, split, 300, 2, Difficulty::default()).unwrap());
            assert_eq!(drawn[..100], problems(family, split, 100, 1, Difficulty::default()).unwrap());
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
    assert_eq!(&docs[2][..80], "96 divided by 12 is 8.\n15 divided by 3 is 5.\n4 divided by 2 is 2.\n42 plus 39 is ");
    let first = |family| problems(family, Split::Test, 1, 1, Difficulty::default()).unwrap().remove(0);
    let arithmetic = first(ProblemFamily::Arithmetic);
    assert_eq!((arithmetic.prompt.as_str(), arithmetic.answer.as_str()), ("What is 98 * 37?", "3626"));
    assert_eq!(first(ProblemFamily::Reverse).prompt, "Reverse the letters: b a r n");
    assert_eq!(first(ProblemFamily::Spell).prompt, "Spell the word: basket");
    assert_eq!(first(ProblemFamily::Sort).prompt, "Sort the letters: b g e x n v g");
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

    let base: BTreeSet<&str> = TOPICS.iter().flat_map(|t| t.verbs).chain(INTRANSITIVE).map(|&(base, _)| base).collect();
    let third: BTreeSet<String> = base.iter().map(|verb| add_s(verb)).collect();
    let past: BTreeSet<&str> = TOPICS.iter().flat_map(|t| t.verbs).chain(INTRANSITIVE).map(|&(_, past)| past).collect();
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
    for family in PROBLEM_FAMILIES {
        for split in [Split::Train, Split::Test] {
            for task in problems(family, split, 2000, 6, Difficulty::default()).unwrap() {
                assert_eq!(task.family, family);
                assert!(task.prompt.is_ascii() && task.prompt.len() <= 56 && task.answer.len() <= 32, "{task:?}");
                match family {
                    ProblemFamily::Arithmetic => {
                        let problem = task.prompt.strip_prefix("What is ").and_then(|p| p.strip_suffix('?')).unwrap();
                        check_equation(&format!("{problem} = {}.", task.answer));
                    }
                    ProblemFamily::Reverse => {
                        let word = task.prompt.strip_prefix("Reverse the letters: ").unwrap();
                        assert!(
                            word.len() >= 5
                                && word.split(' ').all(|l| l.len() == 1 && l.bytes().all(|b| b.is_ascii_lowercase())),
                            "{task:?}"
                        );
                        assert_eq!(task.answer.chars().rev().collect::<String>(), word);
                    }
                    ProblemFamily::Spell => {
                        let word = task.prompt.strip_prefix("Spell the word: ").unwrap();
                        assert!(word.len() >= 3 && word.bytes().all(|b| b.is_ascii_lowercase()), "{task:?}");
                        assert_eq!(task.answer.split(' ').collect::<String>(), word, "{task:?}");
                        assert!(task.answer.split(' ').all(|l| l.len() == 1), "{task:?}");
                    }
                    ProblemFamily::Sort => {
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
    for family in PROBLEM_FAMILIES {
        let train: Vec<Problem> = problems(family, Split::Train, 5000, 1, Difficulty::default()).unwrap();
        let prompts: HashSet<&str> = train.iter().map(|t| t.prompt.as_str()).collect();
        assert_eq!(prompts.len(), train.len(), "{family:?} train repeats a prompt");
        // Another seed and another count draw other problems, but each keeps its split.
        let easy = Difficulty { digits: 2, letters: Some([3, 5]) };
        let tests = [(5000, 1, Difficulty::default()), (700, 2, Difficulty::default()), (100, 1, easy)];
        for test in tests.map(|(n, seed, d)| problems(family, Split::Test, n, seed, d).unwrap()) {
            assert!(test.iter().all(|t| !prompts.contains(t.prompt.as_str())), "{family:?}");
        }
    }
    // The split is by problem, so "2 + 3" and "3 + 2" land together.
    assert_eq!(split_of(&Puzzle::Add(2, 3).canonical()), split_of(&Puzzle::Add(3, 2).canonical()));
}

#[test]
fn one_problem_in_ten_is_a_test_problem_whatever_its_shape() {
    // Every sort of n letters, as its sorted letters.
    let sorts = |n: usize| -> Vec<String> {
        let mut all = vec![String::new()];
        for _ in 0..n {
            all = all.iter().flat_map(|s| (b'a'..=b'z').map(move |c| format!("{s}{}", char::from(c)))).collect();
        }
        all.into_iter().filter(|s| sorted(s) == *s).map(|s| Puzzle::Sort(s).canonical()).collect()
    };
    let mut shapes: Vec<(String, Vec<String>)> = (2..=4).map(|n| (format!("{n}-letter sorts"), sorts(n))).collect();
    shapes.push((
        "additions".into(),
        (0..100).flat_map(|a| (a..100).map(move |b| Puzzle::Add(a, b).canonical())).collect(),
    ));
    shapes.push((
        "subtractions".into(),
        (10..100).flat_map(|a| (10..=a).map(move |b| Puzzle::Subtract(a, b).canonical())).collect(),
    ));
    shapes.push((
        "multiplications".into(),
        (0..100).flat_map(|a| (a..100).map(move |b| Puzzle::Multiply(a, b).canonical())).collect(),
    ));
    for (shape, problems) in shapes {
        let test = problems.iter().filter(|c| split_of(c) == Split::Test).count() as f64 / problems.len() as f64;
        assert!((0.08..0.12).contains(&test), "{shape}: {:.1} % test problems", 100.0 * test);
    }
}

#[test]
#[should_panic(expected = "at most")]
fn problems_are_bounded() {
    let _ = problems(ProblemFamily::Sort, Split::Test, Split::Test.max_problems() + 1, 1, Difficulty::default());
}

#[test]
fn difficulty_bounds_the_problems_and_a_too_small_pool_is_an_error() {
    let d = Difficulty { digits: 1, letters: Some([3, 4]) };
    for t in problems(ProblemFamily::Arithmetic, Split::Train, 40, 1, d).unwrap() {
        assert!(t.prompt.bytes().filter(u8::is_ascii_digit).count() <= 2, "{t:?}");
    }
    // Short words to reverse are few: the corpus's three- and four-letter nouns.
    for (family, n) in [(ProblemFamily::Reverse, 20), (ProblemFamily::Sort, 200)] {
        for t in problems(family, Split::Train, n, 1, d).unwrap() {
            assert!((3..=4).contains(&t.answer.split(' ').count()), "{t:?}");
        }
    }
    // One-digit arithmetic holds about 160 distinct problems, 10 % of them test problems.
    let err = problems(ProblemFamily::Arithmetic, Split::Test, 100, 1, d).unwrap_err();
    assert!(
        matches!(err, SynthError::PoolTooSmall { family: ProblemFamily::Arithmetic, split: Split::Test, asked: 100, found } if found < 100),
        "{err}"
    );
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
    let task = problems(ProblemFamily::Reverse, Split::Train, 1, 1, Difficulty::default()).unwrap().remove(0);
    let json = serde_json::to_string(&task).unwrap();
    assert!(json.contains(r#""family":"reverse""#), "{json}");
    assert_eq!(serde_json::from_str::<Problem>(&json).unwrap(), task);
}
