//! `ScaledJob`: one Kubernetes Job per unit of pending work, created from a template on
//! triggers, instead of a workload scaled up and down.
//!
//! Field names, types and optionality follow KEDA's `keda.sh/v1alpha1` schema so that a manifest
//! written for KEDA is stored by ebb's CRD with nothing pruned. As for ScaledObject, defaults are
//! not written into the schema; the accessors on [`ScaledJobSpec`] apply them.

// clippy reads the repeated `type_ = ...` keys of separate `printcolumn(...)` entries in one
// `#[kube(...)]` as duplicated attributes; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::scaled_object::ScaleTrigger;

/// Seconds between two polls when `pollingInterval` is unset.
pub const DEFAULT_POLLING_INTERVAL_SECONDS: i32 = 30;
/// Finished Jobs of each kind kept when the history limits are unset.
pub const DEFAULT_HISTORY_LIMIT: i32 = 100;
/// `maxReplicaCount` when unset.
pub const DEFAULT_MAX_REPLICA_COUNT: i32 = 100;
/// Label on every Job a ScaledJob creates: the ScaledJob's name.
pub const SCALED_JOB_NAME_LABEL: &str = "scaledjob.keda.sh/name";

/// Desired state of a ScaledJob.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledJob",
    plural = "scaledjobs",
    namespaced,
    status = "ScaledJobStatus",
    shortname = "sj",
    derive = "PartialEq",
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
// Checked by the apiserver even while ebb is down (CEL), in the words of the ScaledObject's rule.
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.?minReplicaCount.orValue(0) <= self.?maxReplicaCount.orValue(100)",
        "message": "minReplicaCount must be less than or equal to maxReplicaCount"
    }
]))]
pub struct ScaledJobSpec {
    /// The template of every Job created: a complete `batch/v1` JobSpec.
    pub job_target_ref: JobSpec,
    /// Seconds between two polls of the triggers (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<i32>,
    /// Succeeded Jobs kept (default 100); older ones are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_jobs_history_limit: Option<i32>,
    /// Failed Jobs kept (default 100); older ones are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_jobs_history_limit: Option<i32>,
    /// Container whose environment `*FromEnv` metadata and `env` authentication read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
    /// Jobs kept running even with nothing to do (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replica_count: Option<i32>,
    /// Most Jobs running at once (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_count: Option<i32>,
    /// Deprecated form of `rollout.strategy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_strategy: Option<String>,
    /// What happens to running Jobs when the template changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// How many Jobs a poll creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_strategy: Option<ScalingStrategy>,
    /// The event sources; at least one.
    #[schemars(length(min = 1))]
    pub triggers: Vec<ScaleTrigger>,
}

impl ScaledJobSpec {
    /// `pollingInterval` with its default applied.
    pub fn polling_interval_seconds(&self) -> i32 {
        self.polling_interval
            .unwrap_or(DEFAULT_POLLING_INTERVAL_SECONDS)
    }

    /// `successfulJobsHistoryLimit` with its default applied.
    pub fn successful_history_limit(&self) -> i32 {
        self.successful_jobs_history_limit
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
    }

    /// `failedJobsHistoryLimit` with its default applied.
    pub fn failed_history_limit(&self) -> i32 {
        self.failed_jobs_history_limit
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
    }

    /// `minReplicaCount` with its default applied.
    pub fn min_replicas(&self) -> i32 {
        self.min_replica_count.unwrap_or(0)
    }

    /// `maxReplicaCount` with its default applied.
    pub fn max_replicas(&self) -> i32 {
        self.max_replica_count.unwrap_or(DEFAULT_MAX_REPLICA_COUNT)
    }

    /// The rollout strategy: the deprecated `rolloutStrategy` when set (KEDA reads it first),
    /// else `rollout.strategy`, else `default`.
    pub fn rollout_strategy(&self) -> &str {
        self.rollout_strategy
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(self
                .rollout
                .as_ref()
                .and_then(|r| r.strategy.as_deref())
                .filter(|s| !s.is_empty()))
            .unwrap_or("default")
    }

    /// Whether a rollout deletes Jobs in the foreground: only for `propagationPolicy:
    /// foreground`, as in KEDA; any other value is background.
    pub fn rollout_in_foreground(&self) -> bool {
        self.rollout
            .as_ref()
            .and_then(|r| r.propagation_policy.as_deref())
            == Some("foreground")
    }
}

/// What happens to running Jobs when `jobTargetRef` changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `default` (running Jobs are deleted) or `gradual` (they finish; new Jobs use the new
    /// template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// How running Jobs are deleted at a rollout: `foreground`, else in the background.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_policy: Option<String>,
}

/// How many Jobs a poll creates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStrategy {
    /// `default`, `custom`, `accurate` or `eager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// `custom`: subtracted from the queue length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_queue_length_deduction: Option<i32>,
    /// `custom`: the share of running Jobs subtracted, as a decimal string (`"0.5"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_running_job_percentage: Option<String>,
    /// Pod conditions (e.g. `Ready`, `PodScheduled`) that must all be true for a Job's pod not
    /// to count as pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_pod_conditions: Option<Vec<String>>,
    /// How several triggers combine: `max` (default), `min`, `avg` or `sum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_scalers_calculation: Option<String>,
}

/// Observed state of a ScaledJob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobStatus {
    /// Last time any trigger was active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<Time>,
    /// Ready, Active and Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// `"true"` while the ScaledJob is paused (KEDA's capitalised field name).
    #[serde(rename = "Paused", default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// Comma-separated trigger types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_types: Option<String>,
    /// Comma-separated authentication object names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentications_types: Option<String>,
    /// ebb's record of the last poll whose figures changed (not in KEDA): what `ebb explain`
    /// shows. Written only when a figure changes, so an idle ScaledJob costs no writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll: Option<ScaledJobPoll>,
}

/// One poll of a ScaledJob: the triggers' readings, the Jobs counted, and the decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobPoll {
    /// When the poll ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Whether the ScaledJob was active (some trigger was, or minReplicaCount is above 0).
    pub active: bool,
    /// The combined queue length, rounded up.
    pub queue_length: i64,
    /// Jobs the triggers asked for, rounded up and capped at maxReplicaCount.
    pub max_scale: i64,
    /// Jobs not finished when the poll counted.
    pub running_jobs: i64,
    /// Of those, Jobs whose pods had not started.
    pub pending_jobs: i64,
    /// What the scaling strategy allowed on top of the running Jobs.
    pub effective_max_scale: i64,
    /// Jobs the poll created.
    pub jobs_created: i64,
    /// The scaling strategy applied (`default`, `custom`, `accurate` or `eager`).
    pub scaling_strategy: String,
    /// Each trigger's reading, in trigger order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Vec<ScaledJobTriggerReading>>,
}

/// One trigger's reading at a ScaledJob's poll.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobTriggerReading {
    /// The trigger's position in spec.triggers.
    pub index: i32,
    /// The trigger's type.
    #[serde(rename = "type")]
    pub type_: String,
    /// The sum of its metric values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_length: Option<f64>,
    /// Jobs it asked for: queue length over target, capped at maxReplicaCount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<f64>,
    /// Whether it was past its activation threshold.
    pub active: bool,
    /// Why it could not be read (it then counts for nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
