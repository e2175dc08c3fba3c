//! libFuzzer entry for the `workflow` checks of `harness.rs` (`cargo +nightly fuzz run workflow`, or `fuzz/run.sh`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flow_fuzz::workflow(data));
