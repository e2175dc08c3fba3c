//! `flow graph`: the stage DAG as text, Graphviz dot or a Mermaid flowchart.

use std::path::Path;

use crate::cli::args::GraphFormat;
use crate::cli::failure::Failure;
use crate::cli::{exit, output};
use crate::graph::Dag;
use crate::spec;
use crate::stages::Registry;

pub(crate) fn graph(file: &Path, format: GraphFormat) -> Result<u8, Failure> {
    let workflow = spec::load(file, &[])?;
    Registry::builtin().check(&workflow)?;
    let dag = Dag::build(&workflow)?;
    let text = match format {
        GraphFormat::Text => dag.to_text(&workflow),
        GraphFormat::Dot => dag.to_dot(&workflow),
        GraphFormat::Mermaid => dag.to_mermaid(&workflow),
    };
    output::stdout(&text);
    Ok(exit::OK)
}
