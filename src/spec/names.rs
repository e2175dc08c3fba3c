//! What names the language accepts — stage names, roles, environment variables — and the
//! "did you mean" suggestion for a misspelt one.

/// A stage name: a letter or `_`, then letters, digits, `_` and `-`, at most 128.
pub fn is_stage_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The name of a member of a matrix stage: a stage name, `@`, then `KEY=VALUE` pairs separated
/// by `,` (values of letters, digits, `_`, `.`, `+`, `-`), at most 256 in all.
pub fn is_member_name(s: &str) -> bool {
    s.len() <= 256
        && s.split_once('@').is_some_and(|(stage, coords)| {
            is_stage_name(stage)
                && coords.split(',').all(|pair| {
                    pair.split_once('=').is_some_and(|(k, v)| {
                        is_identifier(k)
                            && !v.is_empty()
                            && v.chars().all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
                    })
                })
        })
}

/// An identifier: roles and environment variables (each role becomes `FLOW_IN_<role>`).
pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The allowed word closest to `word` by edit distance, if any is close enough to be a typo.
pub fn closest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (strsim::levenshtein(word, a), *a))
        .filter(|(d, a)| *d < word.len().min(a.len()) && *d <= 1.max(a.len() / 3))
        .min()
        .map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_suggestions() {
        assert!(is_stage_name("pretrain-small") && is_stage_name("_x1"));
        assert!(!is_stage_name("1st") && !is_stage_name("a b") && !is_stage_name(&"a".repeat(129)));
        assert!(is_identifier("FLOW_x") && !is_identifier("in-put"));
        assert_eq!(closest("comand", &["command", "corpus"]), Some("command"));
        assert_eq!(closest("stagez", &["stages", "store"]), Some("stages"));
        assert_eq!(closest("xyz", &["command", "corpus"]), None, "nothing near enough");
    }
}
