//! `ScaledObject`: which workload to scale, on which triggers, within which bounds.
//!
//! Field names, types and optionality follow KEDA's `keda.sh/v1alpha1` schema so that a manifest
//! written for KEDA is stored by ebb's CRD with nothing pruned. Defaults are not written into the
//! schema (the apiserver would then add them to stored objects and a manifest would no longer read
//! back as written); the accessors on [`ScaledObjectSpec`] apply them instead.

// clippy reads the repeated `type_ = ...` keys of separate `printcolumn(...)` entries in one
// `#[kube(...)]` as duplicated attributes; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;

/// Seconds between two polls of a ScaledObject's triggers when `pollingInterval` is unset.
pub const DEFAULT_POLLING_INTERVAL_SECONDS: i32 = 30;
/// Seconds a ScaledObject must stay inactive before it is scaled to zero when unset.
pub const DEFAULT_COOLDOWN_PERIOD_SECONDS: i32 = 300;
/// Seconds after creation before the first scale to zero may happen when unset.
pub const DEFAULT_INITIAL_COOLDOWN_PERIOD_SECONDS: i32 = 0;
/// `minReplicaCount` when unset.
pub const DEFAULT_MIN_REPLICA_COUNT: i32 = 0;
/// `maxReplicaCount` when unset.
pub const DEFAULT_MAX_REPLICA_COUNT: i32 = 100;

/// Annotation that pauses autoscaling entirely (`"true"`).
pub const ANNOTATION_PAUSED: &str = "autoscaling.keda.sh/paused";
/// Annotation that pauses autoscaling and holds the target at the given replica count.
pub const ANNOTATION_PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";
/// Annotation that blocks scaling in while autoscaling otherwise continues.
pub const ANNOTATION_PAUSED_SCALE_IN: &str = "autoscaling.keda.sh/paused-scale-in";
/// Annotation that blocks scaling out while autoscaling otherwise continues.
pub const ANNOTATION_PAUSED_SCALE_OUT: &str = "autoscaling.keda.sh/paused-scale-out";
/// Annotation that makes every trigger count as active.
pub const ANNOTATION_FORCE_ACTIVATION: &str = "autoscaling.keda.sh/force-activation";
/// Annotation listing (comma-separated) the ScaledObject's labels not to copy onto its HPA.
pub const ANNOTATION_HPA_EXCLUDED_LABELS: &str = "scaledobject.keda.sh/hpa-excluded-labels";
/// Finalizer that lets the controller restore the target and stop its loop on deletion.
pub const FINALIZER: &str = "finalizer.keda.sh";
/// Label selecting a ScaledObject's external metrics (`scaledobject.keda.sh/name`).
pub const SCALED_OBJECT_NAME_LABEL: &str = "scaledobject.keda.sh/name";

/// Desired state of a ScaledObject.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledObject",
    plural = "scaledobjects",
    namespaced,
    status = "ScaledObjectStatus",
    shortname = "so",
    derive = "PartialEq",
    printcolumn(
        name = "ScaleTargetKind",
        type_ = "string",
        json_path = ".status.scaleTargetKind"
    ),
    printcolumn(
        name = "ScaleTargetName",
        type_ = "string",
        json_path = ".spec.scaleTargetRef.name"
    ),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicaCount"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicaCount"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Active",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Active\")].status"
    ),
    printcolumn(
        name = "Fallback",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Fallback\")].status"
    ),
    printcolumn(
        name = "Paused",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Paused\")].status"
    ),
    printcolumn(
        name = "Triggers",
        type_ = "string",
        json_path = ".status.triggersTypes"
    ),
    printcolumn(
        name = "Authentications",
        type_ = "string",
        json_path = ".status.authenticationsTypes"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
// Rules that need no other object, checked by the apiserver even while ebb is down (CEL). The
// first is KEDA's, with KEDA's message; the apiserver applies them to writes only, and with
// validation ratcheting an object stored before a rule existed stays updatable while its spec
// is unchanged. The webhook and the reconcile check the same with messages of ebb's.
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.?minReplicaCount.orValue(0) <= self.?maxReplicaCount.orValue(100)",
        "message": "minReplicaCount must be less than or equal to maxReplicaCount"
    },
    {
        "rule": "!has(self.idleReplicaCount) || self.idleReplicaCount < self.?minReplicaCount.orValue(0)",
        "fieldPath": ".idleReplicaCount",
        "message": "idleReplicaCount must be less than minReplicaCount (0 when unset)"
    },
    {
        "rule": "!has(self.fallback) || self.triggers.exists(t, !(t.type in ['cpu', 'memory']))",
        "fieldPath": ".fallback",
        "message": "fallback needs at least one trigger other than cpu or memory"
    }
]))]
pub struct ScaledObjectSpec {
    /// The workload to scale: any resource with a `/scale` subresource.
    pub scale_target_ref: ScaleTarget,
    /// Seconds between two polls of the triggers (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub polling_interval: Option<i32>,
    /// Seconds after creation before the target may first be scaled to zero (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_cooldown_period: Option<i32>,
    /// Seconds after the last active poll before the target is scaled to zero (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cooldown_period: Option<i32>,
    /// Replica count while inactive, instead of zero; must be below minReplicaCount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub idle_replica_count: Option<i32>,
    /// Lowest replica count (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replica_count: Option<i32>,
    /// Highest replica count (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replica_count: Option<i32>,
    /// HPA shaping, restore-on-delete and composite metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<AdvancedConfig>,
    /// The event sources; at least one.
    #[schemars(length(min = 1))]
    pub triggers: Vec<ScaleTrigger>,
    /// Replica count to hold when triggers keep failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

impl ScaledObjectSpec {
    /// `pollingInterval` with its default applied.
    pub fn polling_interval_seconds(&self) -> i32 {
        self.polling_interval
            .unwrap_or(DEFAULT_POLLING_INTERVAL_SECONDS)
    }

    /// `cooldownPeriod` with its default applied.
    pub fn cooldown_period_seconds(&self) -> i32 {
        self.cooldown_period
            .unwrap_or(DEFAULT_COOLDOWN_PERIOD_SECONDS)
    }

    /// `initialCooldownPeriod` with its default applied.
    pub fn initial_cooldown_period_seconds(&self) -> i32 {
        self.initial_cooldown_period
            .unwrap_or(DEFAULT_INITIAL_COOLDOWN_PERIOD_SECONDS)
    }

    /// `minReplicaCount` with its default applied.
    pub fn min_replicas(&self) -> i32 {
        self.min_replica_count.unwrap_or(DEFAULT_MIN_REPLICA_COUNT)
    }

    /// `maxReplicaCount` with its default applied.
    pub fn max_replicas(&self) -> i32 {
        self.max_replica_count.unwrap_or(DEFAULT_MAX_REPLICA_COUNT)
    }

    /// Whether the original replica count is written back when the ScaledObject is deleted.
    pub fn restore_to_original_replica_count(&self) -> bool {
        self.advanced
            .as_ref()
            .and_then(|a| a.restore_to_original_replica_count)
            .unwrap_or(false)
    }
}

/// Reference to the scaled workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTarget {
    /// Name of the workload in the ScaledObject's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    /// API version of the workload (default `apps/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the workload (default `Deployment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Container whose environment `*FromEnv` metadata and `env` authentication read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
}

/// Advanced settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedConfig {
    /// Name and behavior of the HPA that ebb creates.
    #[serde(
        rename = "horizontalPodAutoscalerConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub horizontal_pod_autoscaler_config: Option<HorizontalPodAutoscalerConfig>,
    /// Write the original replica count back to the target when the ScaledObject is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_to_original_replica_count: Option<bool>,
    /// One composite metric computed from the triggers' values by a formula.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_modifiers: Option<ScalingModifiers>,
}

/// Settings of the generated HPA.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalPodAutoscalerConfig {
    /// HPA name (default `keda-hpa-<scaledobject>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// autoscaling/v2 scaling behavior, passed to the HPA unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// A formula over trigger values that replaces them with one composite metric.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingModifiers {
    /// Expression over trigger names, e.g. `(queue + backlog) / 2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<String>,
    /// Target of the composite metric, as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Activation threshold of the composite metric, as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_target: Option<String>,
    /// `AverageValue` (default) or `Value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["AverageValue", "Value"]))]
    pub metric_type: Option<String>,
}

/// What to do when a trigger keeps failing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Consecutive failures after which the fallback applies.
    #[schemars(range(min = 0))]
    pub failure_threshold: i32,
    /// Replica count the fallback aims for.
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// How the replica count is chosen: `static` (default), `currentReplicas`,
    /// `currentReplicasIfHigher`, `currentReplicasIfLower` or `scalingModifiers`.
    // A string, not an enum: an object stored before a schema change must still deserialize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "default" = "static",
        "enum" = ["static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower", "scalingModifiers"]
    ))]
    pub behavior: Option<String>,
}

impl Fallback {
    /// The parsed behavior (`static` when unset), or the unknown value.
    pub fn behavior(&self) -> Result<FallbackBehavior, String> {
        match self.behavior.as_deref().unwrap_or("static") {
            "static" => Ok(FallbackBehavior::Static),
            "currentReplicas" => Ok(FallbackBehavior::CurrentReplicas),
            "currentReplicasIfHigher" => Ok(FallbackBehavior::CurrentReplicasIfHigher),
            "currentReplicasIfLower" => Ok(FallbackBehavior::CurrentReplicasIfLower),
            "scalingModifiers" => Ok(FallbackBehavior::ScalingModifiers),
            other => Err(other.to_string()),
        }
    }
}

/// How the fallback replica count is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FallbackBehavior {
    /// Always `fallback.replicas`.
    #[default]
    Static,
    /// Keep the current replica count.
    CurrentReplicas,
    /// The higher of the current count and `fallback.replicas`.
    CurrentReplicasIfHigher,
    /// The lower of the current count and `fallback.replicas`.
    CurrentReplicasIfLower,
    /// The scalingModifiers formula decides, with the fallback value in place of failed triggers.
    ScalingModifiers,
}

/// One event source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!self.?useCachedMetrics.orValue(false) || !(self.type in ['cpu', 'memory', 'cron'])",
        "fieldPath": ".useCachedMetrics",
        "message": "useCachedMetrics is not supported for cpu, memory or cron triggers"
    }
]))]
pub struct ScaleTrigger {
    /// Scaler type, e.g. `redis`, `rabbitmq`, `cron`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1))]
    pub type_: String,
    /// Name used in scalingModifiers formulas and in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Read the HPA's metric from the last poll instead of querying the source again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cached_metrics: Option<bool>,
    /// Scaler-specific settings.
    pub metadata: BTreeMap<String, String>,
    /// Credentials from a TriggerAuthentication or ClusterTriggerAuthentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_ref: Option<AuthenticationRef>,
    /// HPA target type: `AverageValue` (default), `Value` or `Utilization` (cpu/memory).
    // Empty reads as unset, as in KEDA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["", "AverageValue", "Value", "Utilization"]))]
    pub metric_type: Option<String>,
}

/// Reference to a TriggerAuthentication (default) or ClusterTriggerAuthentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationRef {
    /// Name of the authentication object.
    pub name: String,
    /// `TriggerAuthentication` (default) or `ClusterTriggerAuthentication`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["TriggerAuthentication", "ClusterTriggerAuthentication"]))]
    pub kind: Option<String>,
}

/// Observed state of a ScaledObject.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectStatus {
    /// Kind of the target as `group/version.Kind`, e.g. `apps/v1.Deployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_kind: Option<String>,
    /// Group, version, kind and resource of the target.
    #[serde(
        rename = "scaleTargetGVKR",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub scale_target_gvkr: Option<GroupVersionKindResource>,
    /// Replica count of the target before ebb first scaled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_replica_count: Option<i32>,
    /// Last time any trigger was active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<Time>,
    /// Names of the External metrics served for the HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_metric_names: Option<Vec<String>>,
    /// Names of the Resource metrics (cpu/memory) in the HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_metric_names: Option<Vec<String>>,
    /// Name of the composite scaler when scalingModifiers is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite_scaler_name: Option<String>,
    /// Name of the HPA ebb manages for this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_name: Option<String>,
    /// Comma-separated trigger types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    /// Comma-separated authentication object names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
    /// Replica count held by the `paused-replicas` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_replica_count: Option<i32>,
    /// Failure counts per metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<BTreeMap<String, HealthStatus>>,
    /// Activity per trigger, by metric name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_activity: Option<BTreeMap<String, TriggerActivityStatus>>,
    /// Ready, Active, Fallback, Paused (and HPAActive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

/// Group, version, kind and resource of a scale target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GroupVersionKindResource {
    /// API group, empty for the core group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name.
    pub resource: String,
}

/// Consecutive failures of one metric.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// Consecutive failed reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_failures: Option<i32>,
    /// `Happy` or `Failing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Whether one trigger was active at the last poll.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerActivityStatus {
    /// True when the trigger's value passed its activation threshold.
    // Lenient on read, but declared without a schema default: KEDA's has none.
    #[serde(default)]
    #[schemars(transform = without_default)]
    pub is_active: bool,
}

/// Drops the `default` schemars derives from `#[serde(default)]`.
fn without_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}
