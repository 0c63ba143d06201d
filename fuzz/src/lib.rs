//! ebb's fuzz targets: each module's `run` takes the fuzzer's bytes, reads them as a structured
//! input and drives one of ebb's parsers with it, asserting what must hold for any input.
//!
//! `cargo xtask fuzz --seconds N` builds them with a nightly compiler, libFuzzer and
//! AddressSanitizer (the `libfuzzer` feature and `fuzz_targets/`) and runs each for N seconds;
//! `cargo test -p ebb-fuzz` replays every kept crash (`regressions/<target>/`)
//! and a few thousand pseudo-random inputs per target on the stable compiler, as part of
//! `cargo xtask test`.

#![forbid(unsafe_code)]

pub mod admission_review;
pub mod broker_answers;
pub mod formula;
pub mod metrics_api_body;
pub mod metrics_api_request;
pub mod scaled_object;
pub mod trigger_metadata;

/// A target's entry point: one input's bytes.
pub type Run = fn(&[u8]);

/// Every target, by the name its binary and its kept crashes go by.
pub const TARGETS: &[(&str, Run)] = &[
    ("admission_review", admission_review::run),
    ("broker_answers", broker_answers::run),
    ("formula", formula::run),
    ("metrics_api_body", metrics_api_body::run),
    ("metrics_api_request", metrics_api_request::run),
    ("scaled_object", scaled_object::run),
    ("trigger_metadata", trigger_metadata::run),
];
