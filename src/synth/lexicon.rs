//! The words prose is made of: topics with their nouns, verbs and places, the recurring cast and
//! the pronouns that stand for them, and the closed word classes (adjectives, adverbs,
//! determiners, connectives, times), with the grammatical features agreement needs.

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Number {
    One,
    Many,
}

#[derive(Clone, Copy)]
pub(super) enum Tense {
    Present,
    Past,
}

/// Who a pronoun can stand for: a named character, or a group named by a plural noun.
#[derive(Clone, Copy)]
pub(super) enum Referent {
    She,
    He,
    They,
}

impl Referent {
    pub(super) fn pronoun(self) -> &'static str {
        match self {
            Referent::She => "she",
            Referent::He => "he",
            Referent::They => "they",
        }
    }

    pub(super) fn possessive(self) -> &'static str {
        match self {
            Referent::She => "her",
            Referent::He => "his",
            Referent::They => "their",
        }
    }

    pub(super) fn number(self) -> Number {
        match self {
            Referent::She | Referent::He => Number::One,
            Referent::They => Number::Many,
        }
    }
}

/// One subject area. A document keeps mostly to one topic, so its nouns and verbs co-occur as
/// they would in real text. Nouns are written "singular|plural" where the plural is irregular.
#[derive(Clone, Copy)]
pub(super) struct Topic {
    /// People who act.
    pub(super) agents: &'static [&'static str],
    /// What they act on; every verb below suits every thing here.
    pub(super) things: &'static [&'static str],
    /// Where it happens; always singular, always "the".
    pub(super) places: &'static [&'static str],
    /// Transitive verbs as (base, past).
    pub(super) verbs: &'static [(&'static str, &'static str)],
    /// Adjectives that suit the things.
    pub(super) adjectives: &'static [&'static str],
}

pub(super) const TOPICS: &[Topic] = &[
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
pub(super) const CAST: &[(&str, Referent)] = &[
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

pub(super) const PERSON_ADJECTIVES: &[&str] =
    &["old", "young", "kind", "busy", "quiet", "happy", "tired", "clever", "cheerful", "patient", "proud", "strong"];
pub(super) const THING_ADJECTIVES: &[&str] =
    &["small", "big", "heavy", "old", "red", "blue", "green", "brown", "white", "grey", "little", "broken"];
pub(super) const ADVERBS: &[&str] =
    &["carefully", "slowly", "quickly", "quietly", "gently", "happily", "patiently", "proudly", "often", "firmly"];
/// Verbs without an object, as (base, past).
pub(super) const INTRANSITIVE: &[(&str, &str)] = &[
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
pub(super) const PREPOSITIONS: &[&str] = &["near", "behind", "beside", "by", "outside", "at"];
pub(super) const ONE_DETERMINERS: &[&str] = &["the", "the", "the", "a", "this", "that"];
pub(super) const MANY_DETERMINERS: &[&str] =
    &["the", "the", "some", "these", "those", "two", "three", "four", "five", "many"];
/// Introduce things in "there is …" sentences, where a definite "the" would be odd.
pub(super) const INDEFINITE_MANY: &[&str] = &["some", "two", "three", "four", "five", "many"];
pub(super) const CONNECTIVES: &[&str] = &["and", "but", "when", "while"];
pub(super) const PRESENT_TIMES: &[&str] = &["every day", "each morning", "in the evening", "on most days", "at dawn"];
pub(super) const PAST_TIMES: &[&str] = &["yesterday", "last winter", "that morning", "long ago", "at dawn"];
