//! A YAML document as a tree of [`Node`]s that remember where they came from, so every later
//! error can point at a line and column.
//!
//! Built from saphyr-parser's event stream rather than through serde: the workflow schema is
//! validated by hand in [`super::load`], which is what lets each error carry the exact span of
//! the offending key or value. Plain scalars are resolved with the YAML 1.2 core schema.
//! Hostile input is bounded: nesting depth, alias expansion and node count all have limits.

use std::borrow::Cow;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Where a node came from: a source (0 is the workflow file, others are `--set` arguments) and
/// the span within it, as char offsets plus the 1-based line and column of its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub source: usize,
    pub start: usize,
    pub end: usize,
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// Why a document could not be turned into a [`Node`] tree.
#[derive(Debug, Clone)]
pub struct YamlError {
    pub message: String,
    pub span: Span,
}

/// Nesting deeper than this is rejected: no workflow needs it, and recursion must stay bounded.
pub const MAX_DEPTH: usize = 64;
/// The most nodes a document may expand to, counting alias expansions ("billion laughs").
pub const MAX_NODES: usize = 1_000_000;

impl Value {
    /// A short name of the value's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Looks up a key of a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key node (not the value) of `key` in a mapping node.
    pub fn key(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(k, _)| k),
            _ => None,
        }
    }

    /// Follows a path of mapping keys.
    pub fn path(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |node, key| node.get(key))
    }

    /// Converts to JSON. Non-finite floats have no JSON form and are reported by span.
    pub fn to_json(&self) -> Result<serde_json::Value, YamlError> {
        use serde_json::Value as J;
        Ok(match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .ok_or_else(|| YamlError { message: format!("`{f}` is not a finite number"), span: self.span })?,
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect::<Result<_, _>>()?),
            Value::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    let key = match &k.value {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => {
                            return Err(YamlError {
                                message: format!("a mapping key must be a string, not {}", other.type_name()),
                                span: k.span,
                            });
                        }
                    };
                    map.insert(key, v.to_json()?);
                }
                J::Object(map)
            }
        })
    }
}

/// Parses one YAML document. An empty document is `Null`; several documents are an error.
pub fn parse(text: &str, source: usize) -> Result<Node, YamlError> {
    let mut builder = Builder { source, anchors: Vec::new(), nodes: 0 };
    let mut parser = Parser::new_from_str(text);
    let mut events = std::iter::from_fn(|| parser.next_event()).map(move |r| {
        r.map_err(|e| {
            let m = e.marker();
            YamlError {
                message: e.info().to_owned(),
                span: Span { source, start: m.index(), end: m.index(), line: m.line(), col: m.col() + 1 },
            }
        })
    });
    let mut root: Option<Node> = None;
    while let Some(item) = events.next() {
        let (event, span) = item?;
        let span = builder.span(span);
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                if root.is_some() {
                    return Err(YamlError { message: "a workflow file holds exactly one YAML document".into(), span });
                }
                let (first, first_span) =
                    events.next().ok_or_else(|| YamlError { message: "unexpected end of input".into(), span })??;
                if matches!(first, Event::DocumentEnd) {
                    root = Some(Node { value: Value::Null, span });
                    continue;
                }
                let first_span = builder.span(first_span);
                root = Some(builder.node(first, first_span, &mut events, 0)?);
            }
            other => {
                return Err(YamlError { message: format!("unexpected YAML event {other:?}"), span });
            }
        }
    }
    Ok(root.unwrap_or(Node { value: Value::Null, span: Span { source, start: 0, end: 0, line: 1, col: 1 } }))
}

struct Builder {
    source: usize,
    anchors: Vec<(usize, Node)>,
    nodes: usize,
}

impl Builder {
    fn span(&self, span: saphyr_parser::Span) -> Span {
        Span {
            source: self.source,
            start: span.start.index(),
            end: span.end.index().max(span.start.index()),
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }

    fn count(&mut self, n: usize, span: Span) -> Result<(), YamlError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                message: format!("the document expands to more than {MAX_NODES} nodes (alias blow-up?)"),
                span,
            });
        }
        Ok(())
    }

    fn next<'a>(
        &self,
        events: &mut impl Iterator<Item = Result<(Event<'a>, saphyr_parser::Span), YamlError>>,
        span: Span,
    ) -> Result<(Event<'a>, Span), YamlError> {
        let (ev, sp) = events.next().ok_or_else(|| YamlError { message: "unexpected end of input".into(), span })??;
        Ok((ev, self.span(sp)))
    }

    fn node<'a>(
        &mut self,
        event: Event<'a>,
        span: Span,
        events: &mut impl Iterator<Item = Result<(Event<'a>, saphyr_parser::Span), YamlError>>,
        depth: usize,
    ) -> Result<Node, YamlError> {
        if depth > MAX_DEPTH {
            return Err(YamlError { message: format!("nesting deeper than {MAX_DEPTH} levels"), span });
        }
        self.count(1, span)?;
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve_scalar(text, style, tag.as_deref().map(|t| t.suffix.as_str()), span)?;
                (Node { value, span }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, sp) = self.next(events, span)?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, sp, events, depth + 1)?);
                }
                (Node { value: Value::Seq(items), span }, anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(Node, Node)> = Vec::new();
                // Key text → position, so duplicate detection stays linear in big mappings.
                let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
                let mut merges = Vec::new();
                loop {
                    let (ev, sp) = self.next(events, span)?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(ev, sp, events, depth + 1)?;
                    if matches!(key.value, Value::Seq(_) | Value::Map(_)) {
                        return Err(YamlError { message: "a mapping key must be a scalar".into(), span: key.span });
                    }
                    let (ev, sp) = self.next(events, span)?;
                    let value = self.node(ev, sp, events, depth + 1)?;
                    let text = key_text(&key);
                    if matches!(&key.value, Value::Str(k) if k == "<<") {
                        merges.push(value);
                        continue;
                    }
                    if let Some(&first) = seen.get(&text) {
                        return Err(YamlError {
                            message: format!(
                                "duplicate key `{text}` (first defined at line {})",
                                entries[first].0.span.line
                            ),
                            span: key.span,
                        });
                    }
                    seen.insert(text, entries.len());
                    entries.push((key, value));
                }
                // Merge keys (`<<: *base` or `<<: [*a, *b]`): keys written here win, then the
                // earlier merged mapping wins, as in YAML 1.1 and every major loader.
                for merge in merges {
                    let sources = match merge.value {
                        Value::Map(_) => vec![merge],
                        Value::Seq(items) if items.iter().all(|i| matches!(i.value, Value::Map(_))) => items,
                        _ => {
                            return Err(YamlError {
                                message: "`<<` merges a mapping or a list of mappings".into(),
                                span: merge.span,
                            });
                        }
                    };
                    for source in sources {
                        let Value::Map(items) = source.value else { unreachable!("checked above") };
                        for (k, v) in items {
                            if let std::collections::hash_map::Entry::Vacant(slot) = seen.entry(key_text(&k)) {
                                slot.insert(entries.len());
                                entries.push((k, v));
                            }
                        }
                    }
                }
                (Node { value: Value::Map(entries), span }, anchor)
            }
            Event::Alias(id) => {
                let target = self.anchors.iter().rev().find(|(a, _)| *a == id).map(|(_, n)| n.clone());
                let target = target.ok_or_else(|| YamlError { message: "alias to an unknown anchor".into(), span })?;
                let size = count_nodes(&target);
                self.count(size, span)?;
                (target, 0)
            }
            other => return Err(YamlError { message: format!("unexpected YAML event {other:?}"), span }),
        };
        if anchor != 0 {
            self.anchors.push((anchor, node.clone()));
        }
        Ok(node)
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| count_nodes(k) + count_nodes(v)).sum(),
        _ => 0,
    }
}

fn key_text(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        _ => "<collection>".into(),
    }
}

/// YAML 1.2 core schema resolution of a scalar; quoted scalars and `!!str` are always strings.
fn resolve_scalar(text: Cow<'_, str>, style: ScalarStyle, tag: Option<&str>, span: Span) -> Result<Value, YamlError> {
    if text.contains('\0') {
        return Err(YamlError { message: "NUL bytes are not allowed".into(), span });
    }
    let plain = matches!(style, ScalarStyle::Plain);
    match tag {
        Some("str") => return Ok(Value::Str(text.into_owned())),
        Some("int" | "float" | "bool" | "null") | None => {}
        Some(other) => return Err(YamlError { message: format!("unsupported tag `!!{other}`"), span }),
    }
    if !plain && tag.is_none() {
        return Ok(Value::Str(text.into_owned()));
    }
    let t = text.as_ref();
    Ok(match t {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Value::Float(f64::NAN),
        _ => {
            if let Some(v) = parse_int(t) {
                v.map_err(|_| YamlError { message: format!("integer `{t}` is out of range"), span })?
            } else if is_float(t) {
                Value::Float(t.parse().map_err(|_| YamlError { message: format!("bad number `{t}`"), span })?)
            } else {
                Value::Str(t.to_owned())
            }
        }
    })
}

fn parse_int(t: &str) -> Option<Result<Value, ()>> {
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if let Some(h) = body.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = body.strip_prefix("0o") {
        (8, o)
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let parsed = i64::from_str_radix(&format!("{}{digits}", if neg { "-" } else { "" }), radix);
    Some(parsed.map(Value::Int).map_err(|_| ()))
}

fn is_float(t: &str) -> bool {
    // Core schema: [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let b = t.trim_start_matches(['-', '+']);
    if b.len() + 1 < t.len() || b.is_empty() {
        return false;
    }
    let (mantissa, exponent) = match b.find(['e', 'E']) {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (!int.is_empty() || !frac.is_empty())
                && int.chars().all(|c| c.is_ascii_digit())
                && frac.chars().all(|c| c.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.chars().all(|c| c.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> serde_json::Value {
        parse(text, 0).unwrap().to_json().unwrap()
    }

    #[test]
    fn core_schema_scalars() {
        assert_eq!(
            json("a: 1\nb: 3.0e-3\nc: true\nd: ~\ne: '1'\nf: hello\ng: 0x10\nh: -2\ni: 1e3\nj: .5"),
            serde_json::json!({"a": 1, "b": 0.003, "c": true, "d": null, "e": "1", "f": "hello",
                               "g": 16, "h": -2, "i": 1000.0, "j": 0.5})
        );
    }

    #[test]
    fn spans_point_at_lines_and_columns() {
        let root = parse("name: x\nstages:\n  a:\n    kind: command\n", 0).unwrap();
        let kind = root.path(&["stages", "a", "kind"]).unwrap();
        assert_eq!((kind.span.line, kind.span.col), (4, 11));
    }

    #[test]
    fn merge_keys_fill_in_what_the_mapping_does_not_say() {
        let v = json("a: &a {x: 1, y: 2}\nb: &b {y: 3, z: 4}\nc: {<<: *a, x: 9}\nd: {<<: [*a, *b], w: 0}\n");
        assert_eq!(v["c"], serde_json::json!({"x": 9, "y": 2}));
        assert_eq!(v["d"], serde_json::json!({"w": 0, "x": 1, "y": 2, "z": 4}));
        let err = parse("a: {<<: 3}\n", 0).unwrap_err();
        assert!(err.message.contains("`<<` merges a mapping"), "{}", err.message);
        assert_eq!((err.span.line, err.span.col), (1, 9));
    }

    #[test]
    fn duplicate_keys_are_rejected_at_the_second_one() {
        let err = parse("a: 1\nb: 2\na: 3\n", 0).unwrap_err();
        assert!(err.message.contains("duplicate key `a`"), "{}", err.message);
        assert_eq!(err.span.line, 3);
    }

    #[test]
    fn alias_blow_up_is_bounded() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&doc, 0).unwrap_err();
        assert!(err.message.contains("more than"), "{}", err.message);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let doc = "[".repeat(200) + &"]".repeat(200);
        let err = parse(&doc, 0).unwrap_err();
        assert!(err.message.contains("nesting"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_carry_a_location() {
        let err = parse("a: [1, 2\nb: 3\n", 0).unwrap_err();
        assert!(err.span.line >= 1);
    }
}
