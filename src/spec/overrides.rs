//! `--set STAGE.with.KEY=VALUE`, `--set STAGE.matrix.KEY=[VALUES]` and `--set defaults.KEY=VALUE`:
//! overrides applied to the document tree before validation (so before a matrix stage becomes its
//! members, and an override of it reaches all of them), so that their errors point into the
//! override's own text.

use super::yaml::{self, Node, Span, Value};

/// A `--set STAGE.with.KEY=VALUE` (or `defaults.KEY=VALUE`) override.
#[derive(Debug, Clone)]
pub struct Override(pub String);

/// Applies `STAGE.with.KEY...=VALUE` or `defaults.KEY=VALUE` to the document tree.
pub(super) fn apply(root: &mut Node, text: &str, source: usize) -> Result<(), yaml::YamlError> {
    let whole = Span { source, start: 0, end: text.chars().count(), line: 1, col: 1 };
    let err = |message: String| yaml::YamlError { message, span: whole };
    let (path, value_text) =
        text.split_once('=').ok_or_else(|| err(format!("`{text}` is not of the form STAGE.with.KEY=VALUE")))?;
    // A member's name holds `=` and `.` (`pre@lr=0.001,seed=1`), so it never parses as a path.
    if let Some((stage, _)) = path.split_once('@') {
        return Err(err(format!(
            "`--set` names a member of matrix stage `{stage}`; set `{stage}.with.KEY` for all its members, or `{stage}.matrix.KEY` to change its values"
        )));
    }
    let value_start = path.chars().count() + 1;
    let mut value = yaml::parse(value_text, source)
        .map_err(|e| yaml::YamlError { message: format!("bad value in `--set`: {}", e.message), span: whole })?;
    shift(&mut value, value_start);
    let keys: Vec<&str> = path.split('.').collect();
    let (map_path, key_path): (Vec<&str>, &[&str]) = match keys.as_slice() {
        ["defaults", rest @ ..] if !rest.is_empty() => (vec!["defaults"], rest),
        [stage, section @ ("with" | "matrix"), rest @ ..] if !rest.is_empty() => {
            if root.path(&["stages", stage]).is_none() {
                return Err(err(format!("`--set` names unknown stage `{stage}`")));
            }
            (vec!["stages", stage, section], rest)
        }
        _ => return Err(err(format!("`{path}` is not of the form STAGE.with.KEY, STAGE.matrix.KEY or defaults.KEY"))),
    };
    let mut node = root;
    for key in map_path.iter().chain(key_path[..key_path.len() - 1].iter()) {
        node = child_map(node, key, whole).ok_or_else(|| err(format!("`{path}`: `{key}` is not a mapping")))?;
    }
    let last = key_path[key_path.len() - 1];
    let Value::Map(entries) = &mut node.value else {
        return Err(err(format!("`{path}` does not lead to a mapping")));
    };
    match entries.iter_mut().find(|(k, _)| k.as_str() == Some(last)) {
        Some((_, v)) => *v = value,
        None => entries.push((Node { value: Value::Str(last.to_owned()), span: whole }, value)),
    }
    Ok(())
}

/// The mapping under `key`, created if absent (a null value counts as absent).
fn child_map<'n>(node: &'n mut Node, key: &str, span: Span) -> Option<&'n mut Node> {
    if matches!(node.value, Value::Null) {
        node.value = Value::Map(Vec::new());
    }
    let Value::Map(entries) = &mut node.value else { return None };
    let idx = match entries.iter().position(|(k, _)| k.as_str() == Some(key)) {
        Some(i) => i,
        None => {
            entries
                .push((Node { value: Value::Str(key.to_owned()), span }, Node { value: Value::Map(Vec::new()), span }));
            entries.len() - 1
        }
    };
    let child = &mut entries[idx].1;
    if matches!(child.value, Value::Null) {
        child.value = Value::Map(Vec::new());
    }
    matches!(child.value, Value::Map(_)).then_some(child)
}

fn shift(node: &mut Node, by: usize) {
    node.span.start += by;
    node.span.end += by;
    node.span.col += by;
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| shift(n, by)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            shift(k, by);
            shift(v, by);
        }),
        _ => {}
    }
}
