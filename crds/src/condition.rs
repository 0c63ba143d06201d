//! Status conditions in KEDA's shape (`type`, `status`, `reason`, `message`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the object is well-formed and its triggers can be read.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: at least one trigger is active.
pub const CONDITION_ACTIVE: &str = "Active";
/// Condition type: a fallback replica count is in force.
pub const CONDITION_FALLBACK: &str = "Fallback";
/// Condition type: autoscaling is paused by annotation.
pub const CONDITION_PAUSED: &str = "Paused";
/// Condition type: mirrors the HPA's own ScalingActive condition.
pub const CONDITION_HPA_ACTIVE: &str = "HPAActive";

/// One status condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One-word reason in CamelCase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
