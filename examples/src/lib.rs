//! Runnable examples for ebb. Each example lives in a folder of its own with its manifests and a
//! README; the Rust programs they need are binaries of this crate. Empty until issue 6.
