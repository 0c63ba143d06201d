//! libFuzzer entry point of [`ebb_fuzz::broker_answers`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ebb_fuzz::broker_answers::run(data));
