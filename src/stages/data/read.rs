//! Reading a `data` stage's files into documents: `.txt` cut by [`TextSplit`], `.jsonl` one
//! document per line (a text field, or a conversation rendered with the chat template), and
//! `.parquet` one document per row ([`super::parquet`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::{InputError, LineProblem, StageError};
use crate::ml::chat::Conversation;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextSplit {
    /// Blank lines separate documents.
    Paragraphs,
    /// Every non-empty line is a document.
    Lines,
    /// Each file is one document.
    Files,
    /// Lines holding only `%` separate documents (the `fortune` format).
    Percent,
}

/// Every `.txt`, `.jsonl` and `.parquet` file under `dir`, sorted.
pub(super) fn files_under(dir: &Path) -> Result<Vec<PathBuf>, StageError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs_err::read_dir(&d)? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("txt" | "jsonl" | "parquet")) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The documents of one file, trimmed, empty ones dropped.
pub(super) fn read_documents(path: &Path, split: TextSplit, field: &str) -> Result<Vec<String>, StageError> {
    let extension = path.extension().and_then(|e| e.to_str());
    let docs: Vec<String> = if extension == Some("parquet") {
        super::parquet::documents(path, field)?
    } else if extension == Some("jsonl") {
        let text = fs_err::read_to_string(path)?;
        let mut docs = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).map_err(|e| InputError::line(path, n, e))?;
            docs.push(document(&v, field).map_err(|problem| InputError::line(path, n, problem))?);
        }
        docs
    } else {
        let normalised = fs_err::read_to_string(path)?.replace("\r\n", "\n");
        match split {
            TextSplit::Files => vec![normalised],
            TextSplit::Lines => normalised.lines().map(str::to_owned).collect(),
            TextSplit::Paragraphs => normalised.split("\n\n").map(str::to_owned).collect(),
            TextSplit::Percent => {
                let mut docs = vec![String::new()];
                for line in normalised.lines() {
                    if line.trim_end() == "%" {
                        docs.push(String::new());
                    } else {
                        let doc = docs.last_mut().expect("never empty");
                        doc.push_str(line);
                        doc.push('\n');
                    }
                }
                docs
            }
        }
    };
    Ok(docs.into_iter().map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()).collect())
}

/// The document of one record (a JSONL line, a Parquet row): its `field` when that is text; a
/// conversation when `field` is a list of messages, or the record has `messages` (or `prompt`
/// and `response`) — rendered with flow's chat template, so instruction data can join a
/// pretraining or anneal mixture with the chat markers SFT will use.
pub(super) fn document(v: &Value, field: &str) -> Result<String, LineProblem> {
    match v.get(field) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(messages @ Value::Array(_)) => {
            Ok(Conversation::from_value(&serde_json::json!({ "messages": messages }))?.render())
        }
        _ if v.get("messages").is_some() || v.get("prompt").is_some() => Ok(Conversation::from_value(v)?.render()),
        _ => Err(LineProblem::NoField(field.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_files_split_into_documents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "one\r\nstill one\r\n\r\ntwo\n\n\n three \n").unwrap();
        assert_eq!(read_documents(&p, TextSplit::Paragraphs, "text").unwrap(), ["one\nstill one", "two", "three"]);
        std::fs::write(&p, "%\na fortune\n%\nanother\nline\n%\n").unwrap();
        assert_eq!(read_documents(&p, TextSplit::Percent, "text").unwrap(), ["a fortune", "another\nline"]);
        let j = dir.path().join("b.jsonl");
        std::fs::write(&j, "{\"text\": \"x\"}\n{\"body\": \"y\"}\n").unwrap();
        assert!(read_documents(&j, TextSplit::Paragraphs, "text").unwrap_err().to_string().contains("line 2"));
    }

    /// Conversations join a mixture rendered with the chat template, markers included.
    #[test]
    fn conversations_in_jsonl_are_rendered_with_the_chat_template() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("chats.jsonl");
        let lines = [
            r#"{"text": "plain"}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#,
            r#"{"prompt": "2 + 2?", "response": "4"}"#,
        ];
        std::fs::write(&j, lines.join("\n")).unwrap();
        assert_eq!(
            read_documents(&j, TextSplit::Paragraphs, "text").unwrap(),
            [
                "plain",
                "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>",
                "<|im_start|>user\n2 + 2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
            ]
        );
        std::fs::write(&j, r#"{"messages": [{"role": "robot", "content": "beep"}]}"#).unwrap();
        let e = read_documents(&j, TextSplit::Paragraphs, "text").unwrap_err().to_string();
        assert!(e.contains("chats.jsonl` line 1") && e.contains("messages"), "{e}");
    }
}
