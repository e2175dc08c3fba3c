//! flow's integration tests: one binary (ripgrep's layout), one module per area. Each test
//! runs the real `flow` binary in a temporary project with its own store.

// Tests print the figures they measure (trials, timings) to the test log.
#![allow(clippy::print_stderr)]

mod util;

mod apply;
mod cli;
mod concurrency;
mod crash;
mod examples;
mod experiments;
mod fuzz;
mod gpu;
mod layers;
mod malformed;
mod observe;
mod proxy;
mod remote;
mod report;
mod slurm;
mod snapshots;
mod store;
mod training;
mod trust;
