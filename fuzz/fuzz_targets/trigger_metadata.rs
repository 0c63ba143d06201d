//! libFuzzer entry point of [`ebb_fuzz::trigger_metadata`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ebb_fuzz::trigger_metadata::run(data));
