//! libFuzzer entry for the `record` checks of `harness.rs` (`cargo +nightly fuzz run record`, or `fuzz/run.sh`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flow_fuzz::record(data));
