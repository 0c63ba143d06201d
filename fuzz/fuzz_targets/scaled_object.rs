//! libFuzzer entry point of [`ebb_fuzz::scaled_object`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ebb_fuzz::scaled_object::run(data));
