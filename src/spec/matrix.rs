//! `matrix:` — a stage written once and run for every combination of parameter values (DVC's
//! `matrix`, Snakemake's wildcards). The validator reads a stage's matrix ([`Matrix`]); once
//! every stage is read, [`expand`] turns each into its members, ordinary stages named
//! `STAGE@KEY=VALUE,KEY=VALUE` whose `with:` holds their values, so each is fingerprinted like a
//! stage written by hand and adding a value runs only the new members.
//!
//! A stage that needs a matrix stage in a single role follows it: it gets one member per member
//! of that stage (matching it on the keys they share), which is how "evaluate every member"
//! is written. A list role takes every member that agrees with the needing member on the keys
//! they share: all of them, from a stage without a matrix. A single role can also name one
//! member by its full name.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::names::{closest, is_identifier, is_member_name};
use super::validate::Validator;
use super::yaml::{Node, Span, Value};
use super::{Member, Stage};

/// More members than this from one stage is almost surely a mistake (and a store full of
/// artifacts nobody asked for).
pub const MAX_MEMBERS: usize = 1024;

/// A stage's `matrix:`: each key a parameter of its kind, with the values it takes.
#[derive(Debug, Clone)]
pub(super) struct Matrix {
    axes: Vec<Axis>,
    span: Span,
}

#[derive(Debug, Clone)]
struct Axis {
    key: String,
    values: Vec<serde_json::Value>,
    spans: Vec<Span>,
}

/// A member's place in its matrix: (key, value) in name order.
type Coords = Vec<(String, serde_json::Value)>;

/// How a value is written in a member's name: numbers as JSON writes them (`0.001`, `1e-20`),
/// booleans, and strings as they are.
pub(super) fn render(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A member's matrix stage and its `(key, value)` pairs as its name writes them; `None` for a
/// name that is not a member's.
pub fn parse_member(name: &str) -> Option<(&str, Vec<(&str, &str)>)> {
    if !is_member_name(name) {
        return None;
    }
    let (template, coords) = name.split_once('@')?;
    Some((template, coords.split(',').filter_map(|pair| pair.split_once('=')).collect()))
}

fn member_name(template: &str, coords: &Coords) -> String {
    let parts: Vec<String> = coords.iter().map(|(k, v)| format!("{k}={}", render(v))).collect();
    format!("{template}@{}", parts.join(","))
}

impl Validator<'_> {
    /// Reads the `matrix:` of stage `name`; `with` is its `with:`, which may not also set a key.
    pub(super) fn matrix(&mut self, name: &str, node: &Node, with: Option<&Node>) -> Option<Matrix> {
        let Value::Map(entries) = &node.value else {
            self.error_help(
                node.span,
                format!("`matrix` of stage `{name}` must be a mapping, not {}", node.value.type_name()),
                "expected a mapping",
                "for example `matrix: {lr: [1.0e-3, 3.0e-3], seed: [1, 2, 3]}`".into(),
            );
            return None;
        };
        if entries.is_empty() {
            self.error(node.span, format!("`matrix` of stage `{name}` is empty"), "no keys");
            return None;
        }
        let mut axes = Vec::new();
        let mut ok = true;
        for (k, v) in entries {
            let Some(key) = k.as_str() else {
                self.error(k.span, "keys of `matrix` must be strings", "not a string");
                ok = false;
                continue;
            };
            if !is_identifier(key) {
                self.error(k.span, format!("`{key}` is not a parameter name"), "invalid key");
                ok = false;
                continue;
            }
            if let Some(w) = with.and_then(|w| w.key(key)) {
                self.error_help(
                    k.span,
                    format!("`{key}` of stage `{name}` is set both in `matrix` and in `with`"),
                    "also in `with`",
                    format!("remove it from `with` (line {}): each member takes its value from `matrix`", w.span.line),
                );
                ok = false;
            }
            match self.axis(key, v) {
                Some((values, spans)) => axes.push(Axis { key: key.to_owned(), values, spans }),
                None => ok = false,
            }
        }
        let count = axes.iter().try_fold(1usize, |n, a| n.checked_mul(a.values.len()));
        if ok && count.is_none_or(|n| n > MAX_MEMBERS) {
            let sizes: Vec<String> = axes.iter().map(|a| a.values.len().to_string()).collect();
            self.error_help(
                node.span,
                format!("`matrix` of stage `{name}` has {} members; the limit is {MAX_MEMBERS}", sizes.join(" × ")),
                "too many combinations",
                "split the sweep into several stages, or sweep fewer values".into(),
            );
            ok = false;
        }
        ok.then_some(Matrix { axes, span: node.span })
    }

    /// The values of one key: a non-empty list of scalars, each written differently in a name.
    fn axis(&mut self, key: &str, node: &Node) -> Option<(Vec<serde_json::Value>, Vec<Span>)> {
        let Value::Seq(items) = &node.value else {
            self.error_help(
                node.span,
                format!("`matrix.{key}` must be a list of values, not {}", node.value.type_name()),
                "expected a list",
                format!("write `{key}: [a, b]`; a single value belongs in `with`"),
            );
            return None;
        };
        if items.is_empty() {
            self.error(node.span, format!("`matrix.{key}` lists no value"), "empty list");
            return None;
        }
        let mut seen: HashMap<String, Span> = HashMap::new();
        let mut values = Vec::new();
        let mut spans = Vec::new();
        for item in items {
            let value = match &item.value {
                Value::Str(s)
                    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c)) =>
                {
                    serde_json::Value::String(s.clone())
                }
                Value::Str(s) => {
                    self.error_help(
                        item.span,
                        format!("`{s}` cannot be part of a stage name"),
                        "in `matrix`",
                        "string values in a matrix are made of letters, digits, `_`, `.`, `+` and `-`".into(),
                    );
                    return None;
                }
                Value::Int(_) | Value::Float(_) | Value::Bool(_) => self.json(item)?,
                other => {
                    self.error_help(
                        item.span,
                        format!(
                            "`matrix.{key}` values must be numbers, booleans or strings, not {}",
                            other.type_name()
                        ),
                        "not a scalar",
                        "a value that is a list or a mapping cannot name a member; write one stage per value".into(),
                    );
                    return None;
                }
            };
            let written = render(&value);
            if let Some(first) = seen.insert(written.clone(), item.span) {
                self.error(
                    item.span,
                    format!("`matrix.{key}` lists `{written}` twice (first on line {})", first.line),
                    "repeated value",
                );
                return None;
            }
            values.push(value);
            spans.push(item.span);
        }
        Some((values, spans))
    }
}

/// What [`expand`] makes of the stages: the members in place of each matrix stage, and each
/// matrix stage's member names in order.
pub(super) struct Expanded {
    pub stages: Vec<Stage>,
    pub members: BTreeMap<String, Vec<String>>,
}

/// Replaces every stage with a matrix, or that follows one, by its members, and resolves what
/// `needs:` says of matrix stages. Stages without either pass through unchanged.
pub(super) fn expand(v: &mut Validator, read: Vec<(Stage, Option<Matrix>)>) -> Expanded {
    let index: HashMap<String, usize> = read.iter().enumerate().map(|(i, (s, _))| (s.name.clone(), i)).collect();
    let mut coords: Vec<Option<Vec<Coords>>> = vec![None; read.len()];
    for i in order(&read, &index) {
        coords[i] = members_of(v, &read, &index, &coords, i);
    }
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, (stage, _)) in read.iter().enumerate() {
        if let Some(set) = &coords[i] {
            members.insert(stage.name.clone(), set.iter().map(|c| member_name(&stage.name, c)).collect());
        }
    }
    let all: Vec<&str> = members.values().flatten().map(String::as_str).collect();
    let mut stages = Vec::new();
    for (i, (stage, matrix)) in read.into_iter().enumerate() {
        let Some(set) = &coords[i] else {
            let mut stage = stage;
            resolve_needs(v, &mut stage, &[], &index, &coords, &all, true);
            stages.push(stage);
            continue;
        };
        let own: BTreeSet<&str> =
            matrix.as_ref().map(|m| m.axes.iter().map(|a| a.key.as_str()).collect()).unwrap_or_default();
        for (n, c) in set.iter().enumerate() {
            let name = member_name(&stage.name, c);
            // `@` keeps members apart from stage names; only the length can make a name unusable.
            if !is_member_name(&name) {
                v.error(
                    stage.span,
                    format!("stage `{}` makes a member named `{name}`, which is not a usable name", stage.name),
                    "here",
                );
                continue;
            }
            let mut with = stage.with.clone();
            for (k, value) in c.iter().filter(|(k, _)| own.contains(k.as_str())) {
                with.insert(k.clone(), value.clone());
            }
            let mut member = Stage {
                name,
                with,
                member: Some(Member {
                    template: stage.name.clone(),
                    coords: c.clone(),
                    own: own.iter().map(|k| k.to_string()).collect(),
                }),
                ..stage.clone()
            };
            // What `needs:` says wrong is said once, not once per member.
            resolve_needs(v, &mut member, c, &index, &coords, &all, n == 0);
            stages.push(member);
        }
    }
    Expanded { stages, members }
}

/// The stages in an order where every stage comes after those it needs (Kahn's algorithm);
/// stages on a cycle come last, in file order — the DAG reports the cycle.
fn order(read: &[(Stage, Option<Matrix>)], index: &HashMap<String, usize>) -> Vec<usize> {
    let deps: Vec<BTreeSet<usize>> = read
        .iter()
        .map(|(s, _)| s.needs.values().flat_map(|n| &n.stages).filter_map(|(dep, _)| index.get(dep).copied()).collect())
        .collect();
    let mut done = vec![false; read.len()];
    let mut out = Vec::new();
    loop {
        let ready: Vec<usize> = (0..read.len()).filter(|&i| !done[i] && deps[i].iter().all(|&d| done[d])).collect();
        if ready.is_empty() {
            break;
        }
        for i in ready {
            done[i] = true;
            out.push(i);
        }
    }
    out.extend((0..read.len()).filter(|&i| !done[i]));
    out
}

/// The coordinates of stage `i`'s members, or `None` for a stage that is not a matrix: the
/// members of every matrix stage it follows, joined on the keys they share, times its own
/// matrix.
fn members_of(
    v: &mut Validator,
    read: &[(Stage, Option<Matrix>)],
    index: &HashMap<String, usize>,
    coords: &[Option<Vec<Coords>>],
    i: usize,
) -> Option<Vec<Coords>> {
    let (stage, matrix) = &read[i];
    let mut set: Option<Vec<Coords>> = None;
    for need in stage.needs.values().filter(|n| !n.is_list) {
        for (dep, span) in &need.stages {
            let Some(upstream) = index.get(dep).and_then(|&d| coords[d].as_ref()) else { continue };
            let joined = join(set.as_deref().unwrap_or(&[Vec::new()]), upstream);
            if joined.is_empty() {
                v.error(
                    *span,
                    format!("no member of `{dep}` agrees with the other matrix stages `{}` follows", stage.name),
                    "no matching member",
                );
                return None;
            }
            set = Some(joined);
        }
    }
    if let Some(m) = matrix {
        let own: Vec<Coords> = m.axes.iter().fold(vec![Vec::new()], |acc, axis| {
            acc.iter()
                .flat_map(|c| {
                    axis.values.iter().map(move |value| [c.clone(), vec![(axis.key.clone(), value.clone())]].concat())
                })
                .collect()
        });
        let joined = join(set.as_deref().unwrap_or(&[Vec::new()]), &own);
        // A value no member it follows has would silently make no member at all.
        for axis in &m.axes {
            for (value, span) in axis.values.iter().zip(&axis.spans) {
                if !joined.iter().any(|c| c.iter().any(|(k, x)| *k == axis.key && x == value)) {
                    let message = format!(
                        "`matrix.{}` of `{}` lists `{}`, which no member of the stages it follows has",
                        axis.key,
                        stage.name,
                        render(value)
                    );
                    v.error(*span, message, "matches no member");
                    return None;
                }
            }
        }
        set = Some(joined);
    }
    match set {
        Some(s) if s.len() > MAX_MEMBERS => {
            let span = matrix.as_ref().map_or(stage.span, |m| m.span);
            v.error(
                span,
                format!("stage `{}` would have {} members; the limit is {MAX_MEMBERS}", stage.name, s.len()),
                "too many members",
            );
            None
        }
        other => other,
    }
}

/// Every pair of `a` and `b` that agrees on the keys both have, merged (`a`'s keys first).
fn join(a: &[Coords], b: &[Coords]) -> Vec<Coords> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            if agree(x, y) {
                let mut merged = x.clone();
                merged.extend(y.iter().filter(|(k, _)| !x.iter().any(|(xk, _)| xk == k)).cloned());
                out.push(merged);
            }
        }
    }
    out
}

fn agree(x: &[(String, serde_json::Value)], y: &[(String, serde_json::Value)]) -> bool {
    x.iter().all(|(k, v)| y.iter().all(|(yk, yv)| yk != k || yv == v))
}

/// Points `stage`'s needs at members: a single role naming a matrix stage at the member that
/// agrees with `at`, a list role at every member that does; a full member name is checked
/// against `all` the members.
fn resolve_needs(
    v: &mut Validator,
    stage: &mut Stage,
    at: &[(String, serde_json::Value)],
    index: &HashMap<String, usize>,
    coords: &[Option<Vec<Coords>>],
    all: &[&str],
    report: bool,
) {
    for need in stage.needs.values_mut() {
        let mut resolved = Vec::new();
        for (dep, span) in std::mem::take(&mut need.stages) {
            let upstream = index.get(&dep).and_then(|&d| coords[d].as_ref());
            match upstream {
                Some(set) => {
                    let picked = set.iter().filter(|c| agree(c, at)).map(|c| (member_name(&dep, c), span));
                    resolved.extend(picked);
                }
                None if dep.contains('@') && !all.contains(&dep.as_str()) => {
                    if !report {
                        continue;
                    }
                    let help = closest(&dep, all)
                        .map(|n| format!("did you mean `{n}`?"))
                        .unwrap_or_else(|| "a member is named `STAGE@KEY=VALUE,...` as `flow plan` lists it".into());
                    v.error_help(
                        span,
                        format!("stage `{}` needs unknown member `{dep}`", stage.name),
                        "unknown member",
                        help,
                    );
                }
                None => resolved.push((dep, span)),
            }
        }
        need.stages = resolved;
    }
}

#[cfg(test)]
mod tests;
