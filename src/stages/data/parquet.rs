//! Parquet files of a `data` stage, the format Hugging Face datasets are published in: one
//! document per row, from one column — text, or a conversation (a list of `{role, content}`).
//! Read through the parquet crate (Apache Arrow's Rust implementation) one row group at a
//! time, with only that column projected, so a file is never loaded whole.

use std::path::Path;

use parquet::errors::ParquetError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::Type;

use super::super::{InputError, StageError};
use super::read::document;

/// The documents of the column `column` of the Parquet file `path`, row by row.
pub(super) fn documents(path: &Path, column: &str) -> Result<Vec<String>, StageError> {
    let bad = |e: ParquetError| InputError::Parquet { path: path.to_path_buf(), message: e.to_string() };
    let file = std::fs::File::open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{e} (opening `{}`)", path.display())))?;
    let reader = SerializedFileReader::new(file).map_err(bad)?;
    let schema = reader.metadata().file_metadata().schema();
    let Some(field) = schema.get_fields().iter().find(|f| f.name() == column) else {
        let columns = schema.get_fields().iter().map(|f| f.name().to_owned()).collect();
        return Err(InputError::NoColumn { path: path.to_path_buf(), column: column.to_owned(), columns }.into());
    };
    let projection = Type::group_type_builder(schema.name()).with_fields(vec![field.clone()]).build().map_err(bad)?;
    let mut docs = Vec::new();
    for group in 0..reader.num_row_groups() {
        let rows = reader.get_row_group(group).map_err(bad)?;
        for row in rows.get_row_iter(Some(projection.clone())).map_err(bad)? {
            let value = row.map_err(bad)?.to_json_value();
            let doc = document(&value, column).map_err(|problem| InputError::Row {
                path: path.to_path_buf(),
                row: docs.len() + 1,
                problem,
            })?;
            docs.push(doc);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests;
