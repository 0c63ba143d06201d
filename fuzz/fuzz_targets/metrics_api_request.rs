//! libFuzzer entry point of [`ebb_fuzz::metrics_api_request`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ebb_fuzz::metrics_api_request::run(data));
