//! flow: declarative, content-addressed workflows for multi-stage model training.
//!
//! A YAML workflow declares stages (build data, initialise, pretrain, anneal, fine-tune, merge,
//! evaluate, or run any command). `flow apply` runs them as a DAG; every stage is fingerprinted
//! from its kind, parameters and the *content* of its inputs, and its output is kept in a
//! content-addressed store, so a second apply re-runs only what changed.
//!
//! Layers (lower ones never import higher ones; `tests/layers.rs` checks it, and
//! docs/architecture.md has the map of every file):
//!
//! ```text
//! layer 5   cli                         the command line; the only module that prints
//! layer 4   export  report              metrics to TensorBoard and MLflow; the HTML report
//! layer 3   exec                        prepare, plan, schedule, run, commit, share
//! layer 2   stages                      the kinds: parameters, checks, in-process runs
//! layer 1   graph  store  ml  synth     the DAG; the tiered store; candle; synthetic text
//! layer 0   spec   hash                 the YAML language; digests and fingerprints
//! ```

/// Command-line interface: arguments, one file per command, reporters, error rendering.
pub mod cli;
/// Execution: prepare, plan and apply a workflow; the fingerprint recipe; events.
pub mod exec;
/// Exporters: every stage's metrics to TensorBoard event files and an MLflow server.
pub mod export;
/// The stage DAG on petgraph.
pub mod graph;
/// Digests, fingerprints, canonical JSON and file hashing.
pub mod hash;
/// The ML core on candle: model, optimizer, schedules, tokenizer, shards, training loop.
pub mod ml;
/// `flow report`: a workflow's state as one self-contained HTML page.
pub mod report;
/// The workflow language: YAML with spans → validated `Workflow`.
pub mod spec;
/// Stage kinds and the registry that checks a workflow against them.
pub mod stages;
/// The content-addressed artifact store: local, remote, and the two as tiers.
pub mod store;
/// Synthetic text and instruction problems, so that everything trains without downloads.
pub mod synth;
