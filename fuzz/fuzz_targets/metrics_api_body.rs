//! libFuzzer entry point of [`ebb_fuzz::metrics_api_body`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ebb_fuzz::metrics_api_body::run(data));
