//! Parquet files the test writes itself, as Hugging Face datasets lay them out: a text column
//! beside others, a conversation column (a list of `{role, content}` structs), several row
//! groups, snappy pages — and files that are not whole.

use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::*;

fn writer(path: &Path, schema: &str) -> SerializedFileWriter<std::fs::File> {
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::SNAPPY).build());
    SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap()
}

fn bytes(values: &[&str]) -> Vec<ByteArray> {
    values.iter().map(|v| ByteArray::from(*v)).collect()
}

/// `id` and `text` columns, in row groups of `docs` as given.
fn text_file(path: &Path, groups: &[&[&str]]) {
    let mut w = writer(path, "message schema { required int64 id; required binary text (UTF8); }");
    let mut id = 0;
    for docs in groups {
        let mut group = w.next_row_group().unwrap();
        let mut col = group.next_column().unwrap().unwrap();
        let ids: Vec<i64> = (id..id + docs.len() as i64).collect();
        id += docs.len() as i64;
        col.typed::<Int64Type>().write_batch(&ids, None, None).unwrap();
        col.close().unwrap();
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>().write_batch(&bytes(docs), None, None).unwrap();
        col.close().unwrap();
        group.close().unwrap();
    }
    w.close().unwrap();
}

#[test]
fn a_text_column_gives_one_document_per_row_across_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train-00000-of-00001.parquet");
    text_file(&path, &[&["the first", "the second"], &["the third"]]);
    assert_eq!(documents(&path, "text").unwrap(), ["the first", "the second", "the third"]);
    let e = documents(&path, "content").unwrap_err().to_string();
    assert!(e.contains("train-00000-of-00001.parquet` has no column `content`; its columns: id, text"), "{e}");
    // A number is not a document.
    let e = documents(&path, "id").unwrap_err().to_string();
    assert!(e.contains("row 1: no string field `id`"), "{e}");
}

#[test]
fn a_conversation_column_is_rendered_with_the_chat_template() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chats.parquet");
    let mut w = writer(
        &path,
        "message schema {
          optional group messages (LIST) {
            repeated group list {
              optional group element { optional binary role (UTF8); optional binary content (UTF8); }
            }
          }
        }",
    );
    let mut group = w.next_row_group().unwrap();
    // Two conversations, of two and one messages: definition level 4 is a present value,
    // repetition level 0 starts a row.
    for values in [["user", "assistant", "user"], ["hi", "hello", "bye"]] {
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>().write_batch(&bytes(&values), Some(&[4, 4, 4]), Some(&[0, 1, 0])).unwrap();
        col.close().unwrap();
    }
    group.close().unwrap();
    w.close().unwrap();
    assert_eq!(
        documents(&path, "messages").unwrap(),
        [
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n",
            "<|im_start|>user\nbye<|im_end|>\n",
        ]
    );
}

#[test]
fn truncated_and_foreign_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.parquet");
    text_file(&path, &[&["a document long enough to matter", "and another one"]]);
    let whole = std::fs::read(&path).unwrap();
    for cut in [whole.len() - 5, whole.len() / 2, 3] {
        std::fs::write(&path, &whole[..cut]).unwrap();
        let e = documents(&path, "text").unwrap_err().to_string();
        assert!(e.contains("cut.parquet` is not a readable Parquet file"), "cut at {cut}: {e}");
    }
    // The header of the text column's page damaged: the footer still reads, the column does not.
    let at = whole.windows(10).position(|w| w == b"a document").expect("the text is stored as is");
    let mut damaged = whole.clone();
    for b in &mut damaged[at - 12..at - 2] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &damaged).unwrap();
    let e = documents(&path, "text").unwrap_err().to_string();
    assert!(e.contains("cut.parquet` is not a readable Parquet file"), "{e}");
    std::fs::write(&path, "{\"text\": \"json, not parquet\"}\n").unwrap();
    assert!(documents(&path, "text").unwrap_err().to_string().contains("is not a readable Parquet file"));
}
