//! libFuzzer entry for the `manifest` checks of `harness.rs` (`cargo +nightly fuzz run manifest`, or `fuzz/run.sh`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flow_fuzz::manifest(data));
