//! Prose from a small probabilistic grammar with agreement (subject and verb, article and noun,
//! pronoun and possessive). A document keeps to one topic, one tense and a small cast of
//! recurring characters, which gives it structure longer than a sentence.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::lexicon::*;
use super::text::{article, fill, pick};

pub(super) fn prose(rng: &mut ChaCha8Rng) -> String {
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
pub(super) fn say(sentence: &mut String, words: &str) {
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
pub(super) fn determiner(rng: &mut ChaCha8Rng, number: Number, first: &str, owner: Option<Referent>) -> &'static str {
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

pub(super) fn noun_phrase(sentence: &mut String, determiner: &str, adjective: Option<&str>, noun: &str) {
    say(sentence, determiner);
    if let Some(adjective) = adjective {
        say(sentence, adjective);
    }
    say(sentence, noun);
}

/// An adjective for a thing of `topic`, half the time one that only this topic uses.
pub(super) fn thing_adjective(rng: &mut ChaCha8Rng, topic: Topic) -> &'static str {
    let adjectives = if rng.random_bool(0.5) { topic.adjectives } else { THING_ADJECTIVES };
    pick(rng, adjectives)
}

/// The form of a lexicon noun for `number`.
pub(super) fn inflect(noun: &'static str, number: Number) -> std::borrow::Cow<'static, str> {
    match (noun.split_once('|'), number) {
        (Some((one, _)), Number::One) => one.into(),
        (Some((_, many)), Number::Many) => many.into(),
        (None, Number::One) => noun.into(),
        (None, Number::Many) => add_s(noun).into(),
    }
}

pub(super) fn conjugate(
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

pub(super) fn be(number: Number, tense: Tense) -> &'static str {
    match (tense, number) {
        (Tense::Present, Number::One) => "is",
        (Tense::Present, Number::Many) => "are",
        (Tense::Past, Number::One) => "was",
        (Tense::Past, Number::Many) => "were",
    }
}

/// The regular "-s" ending shared by plural nouns and third-person verbs: "nets", "boxes",
/// "carries", "buys". The lexicon spells out irregular plurals, so this needs no exceptions.
pub(super) fn add_s(word: &str) -> String {
    match word.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{stem}ies"),
        _ if word.ends_with(['s', 'x', 'z']) || word.ends_with("ch") || word.ends_with("sh") => format!("{word}es"),
        _ => format!("{word}s"),
    }
}
