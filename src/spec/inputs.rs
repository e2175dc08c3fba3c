//! `inputs:` — files, directories and globs relative to the workflow's directory, expanded to
//! the sorted files they name. An input may not leave that directory.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("input `{0}` is absolute; inputs are relative to the workflow's directory")]
    Absolute(String),
    #[error("input `{0}` leaves the workflow's directory (`..`)")]
    Leaves(String),
    #[error("invalid glob `{pattern}`: {why} (at character {at})")]
    Glob { pattern: String, why: &'static str, at: usize },
    #[error("cannot read input `{pattern}`: {source}")]
    Read { pattern: String, source: std::io::Error },
}

fn read(pattern: &str) -> impl Fn(std::io::Error) -> InputError + '_ {
    move |source| InputError::Read { pattern: pattern.to_owned(), source }
}

/// Expands an input pattern relative to `dir`: a file, a directory (every file under it), or a
/// glob. Paths may not leave `dir`.
pub(super) fn expand(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, InputError> {
    let rel = Path::new(pattern);
    if rel.is_absolute() {
        return Err(InputError::Absolute(pattern.to_owned()));
    }
    if rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(InputError::Leaves(pattern.to_owned()));
    }
    let has_glob = pattern.contains(['*', '?', '[']);
    let mut files = BTreeSet::new();
    if !has_glob {
        let full = dir.join(rel);
        if full.is_dir() {
            walk_files(&full, dir, &mut files).map_err(read(pattern))?;
        } else if full.is_file() {
            files.insert(normalise(rel));
        }
        return Ok(files.into_iter().collect());
    }
    let full = format!("{}/{}", glob::Pattern::escape(&dir.to_string_lossy()), pattern);
    let paths =
        glob::glob(&full).map_err(|e| InputError::Glob { pattern: pattern.to_owned(), why: e.msg, at: e.pos })?;
    for entry in paths {
        let path = entry.map_err(|e| read(pattern)(e.into()))?;
        if path.is_file() {
            let rel = path.strip_prefix(dir).map_err(|_| InputError::Leaves(pattern.to_owned()))?;
            files.insert(normalise(rel));
        } else if path.is_dir() {
            walk_files(&path, dir, &mut files).map_err(read(pattern))?;
        }
    }
    Ok(files.into_iter().collect())
}

fn walk_files(path: &Path, root: &Path, out: &mut BTreeSet<PathBuf>) -> std::io::Result<()> {
    for entry in fs_err::read_dir(path)? {
        let entry = entry?;
        let p = entry.path();
        if p.is_dir() {
            walk_files(&p, root, out)?;
        } else if p.is_file() {
            out.insert(normalise(p.strip_prefix(root).unwrap_or(&p)));
        }
    }
    Ok(())
}

fn normalise(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}
