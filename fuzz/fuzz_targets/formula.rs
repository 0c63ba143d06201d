//! libFuzzer entry point of [`ebb_fuzz::formula`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ebb_fuzz::formula::run(data));
