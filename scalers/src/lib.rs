//! ebb's scalers: the `Scaler` trait, the plugin SDK and the built-in scalers.
//!
//! Empty until the scalers land (issue 3); the crate exists so the workspace has its final shape.
