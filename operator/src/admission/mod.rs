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

/// The webhook's `matchConditions` expression (CEL, evaluated by the apiserver): a create, or an
/// update that writes the spec of an object not being deleted. Updates of labels, annotations,
/// finalizers (ebb's own among them) never reach the webhook, which would allow them anyway
/// ([`review`]), so they cost no call. `deploy/25-admission-webhook.yaml` and the chart carry it.
pub const SPEC_WRITTEN: &str = "request.operation != 'UPDATE' || (!has(object.metadata.deletionTimestamp) && object.spec != oldObject.spec)";
