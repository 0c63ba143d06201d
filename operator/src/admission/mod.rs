//! Admission: the checks a ScaledObject, a ScaledJob or a TriggerAuthentication must pass before
//! ebb acts on it. The same checks run at `kubectl apply` (the validating webhook) and at
//! reconcile (for objects stored before the webhook existed, or while it was down), so both
//! say the same thing.
//!
//! - [`checks`]: the rules, pure functions over the object and what the namespace holds;
//! - [`triggers`]: each trigger's metadata parsed offline by its scaler's own parser;
//! - [`review`]: an AdmissionReview answered with them;
//! - [`server`]: the HTTPS webhook, with the caches every replica keeps for it.

pub mod checks;
pub mod review;
pub mod server;
pub mod triggers;
