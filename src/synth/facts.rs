//! Facts about an invented world of people, cities and countries, derived from the seed and
//! never contradicting itself: each fact is stored once, so documents can only repeat it, and a
//! model can memorise it by repetition.

use std::collections::HashSet;

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::text::{article, capitalised, coined, fill, pick};

const COUNTRIES: usize = 10;
const CITIES_PER_COUNTRY: usize = 4;
pub(super) const PEOPLE: usize = 200;
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
pub(super) struct World {
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
    pub(super) fn new(rng: &mut ChaCha8Rng) -> Self {
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

    pub(super) fn document(&self, rng: &mut ChaCha8Rng) -> String {
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
