//! [`SpecError`]: a problem in a workflow, pointing at the file, line and column (or the
//! `--set` argument) it comes from. Rendered by `cli` through miette.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};

use super::yaml::Span;

/// One text a workflow was built from: the file itself or a `--set` argument.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub text: Arc<str>,
}

/// A source position as users read it: `file:line:col`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct SpecError {
    pub message: String,
    pub location: Option<Location>,
    #[source_code]
    src: Option<NamedSource<Arc<str>>>,
    #[label("{label}")]
    span: Option<SourceSpan>,
    label: String,
    #[help]
    pub help: Option<String>,
}

impl SpecError {
    /// An error at `span` of one of `sources`.
    pub fn at(sources: &[Source], span: Span, message: impl Into<String>, label: impl Into<String>) -> Self {
        let source = &sources[span.source];
        let start = byte_offset(&source.text, span.start);
        let end = byte_offset(&source.text, span.end).max(start);
        Self {
            message: message.into(),
            location: Some(Location { file: source.name.clone(), line: span.line, col: span.col }),
            src: Some(NamedSource::new(source.name.clone(), Arc::clone(&source.text))),
            span: Some(SourceSpan::from(
                start..end.max(start + usize::from(end == start && start < source.text.len())),
            )),
            label: label.into(),
            help: None,
        }
    }

    /// An error about a whole file or argument, with no position inside it.
    pub fn whole(message: impl Into<String>) -> Self {
        Self { message: message.into(), location: None, src: None, span: None, label: String::new(), help: None }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every problem found in one workflow; validation reports them all, not just the first.
#[derive(Debug, thiserror::Error)]
#[error("{} in `{file}`", plural(.errors.len()))]
pub struct SpecErrors {
    pub file: String,
    pub errors: Vec<SpecError>,
}

fn plural(n: usize) -> String {
    if n == 1 { "1 error".into() } else { format!("{n} errors") }
}

/// saphyr counts chars; miette wants bytes.
fn byte_offset(text: &str, chars: usize) -> usize {
    text.char_indices().nth(chars).map_or(text.len(), |(i, _)| i)
}
