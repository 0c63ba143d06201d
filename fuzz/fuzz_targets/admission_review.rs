//! libFuzzer entry point of [`ebb_fuzz::admission_review`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ebb_fuzz::admission_review::run(data));
