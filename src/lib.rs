//! flow: declarative, content-addressed workflows for multi-stage model training.
//!
//! A YAML workflow declares stages (build data, initialise, pretrain, anneal, fine-tune, merge,
//! evaluate, or run any command). `flow apply` runs them as a DAG; every stage is fingerprinted
//! from its kind, parameters and the *content* of its inputs, and its output is kept in a
//! content-addressed store, so a second apply re-runs only what changed.
//!
//! Architecture (lower layers never import higher ones):
//!
//! ```text
//! layer 3   cli                      clap commands, reporters, error rendering; the only printer
//! layer 2   exec                     prepare, plan, apply (scheduler), fingerprint recipe, events
//! layer 1   graph   stages   store   the DAG; kinds and their parameters; the artifact store
//!           ml                       (below stages) model, optimizer, tokenizer, training on candle
//! layer 0   spec    hash             the YAML language; digests and file hashing
//! ```

/// Command-line interface: argument parsing, reporters and error rendering.
pub mod cli;
/// Execution: prepare, plan and apply a workflow; the fingerprint recipe; events.
pub mod exec;
/// The stage DAG on petgraph.
pub mod graph;
/// Digests, fingerprints, canonical JSON and file hashing.
pub mod hash;
/// The ML core on candle: model, optimizer, schedules, tokenizer, shards, training loop.
pub mod ml;
/// The workflow language: YAML with spans → validated `Workflow`.
pub mod spec;
/// Stage kinds and the registry that checks a workflow against them.
pub mod stages;
/// The content-addressed artifact store.
pub mod store;
/// Synthetic text and instruction problems, so that everything trains without downloads.
pub mod synth;
