//! flow's integration tests: one binary (ripgrep's layout), one module per area. Each test
//! runs the real `flow` binary in a temporary project with its own store.

mod util;

mod apply;
mod cli;
mod concurrency;
mod crash;
mod examples;
mod fuzz;
mod gpu;
mod malformed;
mod proxy;
mod remote;
mod slurm;
mod store;
mod training;
