//! Checks of a ScaledObject's spec that its schema cannot express. Each error names the field
//! and what was expected; the controller reports it as Ready=False plus an Event.

use std::collections::BTreeSet;

use ebb_crds::ScaledObjectSpec;

use crate::scale::composite::Composite;
pub use crate::validation_error::ValidationError;
use crate::validation_error::error;

/// Triggers that ebb does not poll: the HPA reads them from the metrics server.
fn is_resource_trigger(trigger_type: &str) -> bool {
    matches!(trigger_type, "cpu" | "memory")
}

/// `minReplicaCount <= maxReplicaCount`, the rule ScaledObjects and ScaledJobs share.
pub fn replica_bounds(min: i32, max: i32) -> Result<(), ValidationError> {
    if min > max {
        return Err(error(
            "spec.minReplicaCount",
            format!(
                "{min} is above maxReplicaCount {max}; expected minReplicaCount <= maxReplicaCount"
            ),
        ));
    }
    Ok(())
}

/// Checks `spec`; the first problem found is returned. A valid spec's `scalingModifiers` come
/// back compiled (None without them), so nothing compiles the formula twice.
pub fn validate(spec: &ScaledObjectSpec) -> Result<Option<Composite>, ValidationError> {
    // ebb's CRD schema refuses these already; KEDA's, which a migrating cluster may keep, does
    // not. A negative count would otherwise reach a target's /scale.
    let at_least = [
        ("spec.minReplicaCount", spec.min_replica_count, 0),
        ("spec.maxReplicaCount", spec.max_replica_count, 1),
        ("spec.idleReplicaCount", spec.idle_replica_count, 0),
        ("spec.cooldownPeriod", spec.cooldown_period, 0),
        (
            "spec.initialCooldownPeriod",
            spec.initial_cooldown_period,
            0,
        ),
        (
            "spec.fallback.failureThreshold",
            spec.fallback.as_ref().map(|f| f.failure_threshold),
            0,
        ),
        (
            "spec.fallback.replicas",
            spec.fallback.as_ref().map(|f| f.replicas),
            0,
        ),
    ];
    for (field, value, least) in at_least {
        if let Some(value) = value.filter(|v| *v < least) {
            return Err(error(field, format!("{value}; expected {least} or more")));
        }
    }
    let (min, max) = (spec.min_replicas(), spec.max_replicas());
    replica_bounds(min, max)?;
    if let Some(idle) = spec.idle_replica_count
        && idle >= min
    {
        return Err(error(
            "spec.idleReplicaCount",
            format!(
                "{idle} is not below minReplicaCount {min}; expected idleReplicaCount < minReplicaCount"
            ),
        ));
    }
    if spec.triggers.is_empty() {
        return Err(error("spec.triggers", "expected at least one trigger"));
    }

    let mut names = BTreeSet::new();
    for (i, trigger) in spec.triggers.iter().enumerate() {
        if trigger.type_.trim().is_empty() {
            return Err(error(
                format!("spec.triggers[{i}].type"),
                "expected a trigger type",
            ));
        }
        if let Some(name) = trigger.name.as_deref().filter(|n| !n.is_empty())
            && !names.insert(name)
        {
            return Err(error(
                format!("spec.triggers[{i}].name"),
                format!("{name:?} is used by another trigger; expected unique trigger names"),
            ));
        }
    }

    if let Some(fallback) = &spec.fallback {
        if let Err(unknown) = fallback.behavior() {
            return Err(error(
                "spec.fallback.behavior",
                format!(
                    "{unknown:?} is not a fallback behavior; expected static, currentReplicas, currentReplicasIfHigher, currentReplicasIfLower or scalingModifiers"
                ),
            ));
        }
        if spec.triggers.iter().all(|t| is_resource_trigger(&t.type_)) {
            return Err(error(
                "spec.fallback",
                "fallback needs at least one trigger other than cpu or memory",
            ));
        }
    }

    Composite::of(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ScaledObjectSpec {
        serde_norway::from_str(yaml).expect("spec")
    }

    #[test]
    fn accepts_valid_specs() {
        for yaml in [
            "{scaleTargetRef: {name: w}, triggers: [{type: redis, metadata: {}}]}",
            "{scaleTargetRef: {name: w}, minReplicaCount: 3, maxReplicaCount: 3, idleReplicaCount: 0, triggers: [{type: redis, metadata: {}}]}",
            "{scaleTargetRef: {name: w}, fallback: {failureThreshold: 3, replicas: 5}, triggers: [{type: cpu, metadata: {}, metricType: Utilization}, {type: redis, metadata: {}}]}",
            "{scaleTargetRef: {name: w}, advanced: {scalingModifiers: {formula: 'a + b', target: '5', activationTarget: '0', metricType: Value}}, triggers: [{type: redis, name: a, metadata: {}}, {type: redis, name: b, metadata: {}}]}",
        ] {
            assert!(validate(&spec(yaml)).is_ok(), "{yaml}");
        }
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases = [
            (
                "{scaleTargetRef: {name: w}, minReplicaCount: 5, maxReplicaCount: 2, triggers: [{type: redis, metadata: {}}]}",
                "spec.minReplicaCount: 5 is above maxReplicaCount 2; expected minReplicaCount <= maxReplicaCount",
            ),
            (
                "{scaleTargetRef: {name: w}, minReplicaCount: 200, triggers: [{type: redis, metadata: {}}]}",
                "spec.minReplicaCount: 200 is above maxReplicaCount 100; expected minReplicaCount <= maxReplicaCount",
            ),
            (
                "{scaleTargetRef: {name: w}, minReplicaCount: 1, idleReplicaCount: 1, triggers: [{type: redis, metadata: {}}]}",
                "spec.idleReplicaCount: 1 is not below minReplicaCount 1; expected idleReplicaCount < minReplicaCount",
            ),
            (
                "{scaleTargetRef: {name: w}, idleReplicaCount: 0, triggers: [{type: redis, metadata: {}}]}",
                "spec.idleReplicaCount: 0 is not below minReplicaCount 0; expected idleReplicaCount < minReplicaCount",
            ),
            (
                "{scaleTargetRef: {name: w}, minReplicaCount: -1, triggers: [{type: redis, metadata: {}}]}",
                "spec.minReplicaCount: -1; expected 0 or more",
            ),
            (
                "{scaleTargetRef: {name: w}, maxReplicaCount: 0, triggers: [{type: redis, metadata: {}}]}",
                "spec.maxReplicaCount: 0; expected 1 or more",
            ),
            (
                "{scaleTargetRef: {name: w}, minReplicaCount: 2, idleReplicaCount: -2147483648, triggers: [{type: redis, metadata: {}}]}",
                "spec.idleReplicaCount: -2147483648; expected 0 or more",
            ),
            (
                "{scaleTargetRef: {name: w}, cooldownPeriod: -30, triggers: [{type: redis, metadata: {}}]}",
                "spec.cooldownPeriod: -30; expected 0 or more",
            ),
            (
                "{scaleTargetRef: {name: w}, initialCooldownPeriod: -1, triggers: [{type: redis, metadata: {}}]}",
                "spec.initialCooldownPeriod: -1; expected 0 or more",
            ),
            (
                "{scaleTargetRef: {name: w}, fallback: {failureThreshold: -1, replicas: 5}, triggers: [{type: redis, metadata: {}}]}",
                "spec.fallback.failureThreshold: -1; expected 0 or more",
            ),
            (
                "{scaleTargetRef: {name: w}, fallback: {failureThreshold: 3, replicas: -5}, triggers: [{type: redis, metadata: {}}]}",
                "spec.fallback.replicas: -5; expected 0 or more",
            ),
            (
                "{scaleTargetRef: {name: w}, triggers: []}",
                "spec.triggers: expected at least one trigger",
            ),
            (
                "{scaleTargetRef: {name: w}, triggers: [{type: '', metadata: {}}]}",
                "spec.triggers[0].type: expected a trigger type",
            ),
            (
                "{scaleTargetRef: {name: w}, triggers: [{type: redis, name: q, metadata: {}}, {type: redis, name: q, metadata: {}}]}",
                "spec.triggers[1].name: \"q\" is used by another trigger; expected unique trigger names",
            ),
            (
                "{scaleTargetRef: {name: w}, fallback: {failureThreshold: 3, replicas: 5, behavior: sometimes}, triggers: [{type: redis, metadata: {}}]}",
                "spec.fallback.behavior: \"sometimes\" is not a fallback behavior; expected static, currentReplicas, currentReplicasIfHigher, currentReplicasIfLower or scalingModifiers",
            ),
            (
                "{scaleTargetRef: {name: w}, fallback: {failureThreshold: 3, replicas: 5}, triggers: [{type: cpu, metadata: {}, metricType: Utilization}]}",
                "spec.fallback: fallback needs at least one trigger other than cpu or memory",
            ),
            (
                "{scaleTargetRef: {name: w}, advanced: {scalingModifiers: {target: '5'}}, triggers: [{type: redis, metadata: {}}]}",
                "spec.advanced.scalingModifiers.formula: expected a formula over the triggers' names",
            ),
            (
                "{scaleTargetRef: {name: w}, advanced: {scalingModifiers: {formula: a, target: 'five'}}, triggers: [{type: redis, name: a, metadata: {}}]}",
                "spec.advanced.scalingModifiers.target: expected a number above 0, got \"five\"",
            ),
            (
                "{scaleTargetRef: {name: w}, advanced: {scalingModifiers: {formula: a, target: '0'}}, triggers: [{type: redis, name: a, metadata: {}}]}",
                "spec.advanced.scalingModifiers.target: expected a number above 0, got \"0\"",
            ),
            (
                "{scaleTargetRef: {name: w}, advanced: {scalingModifiers: {formula: a, target: '1', activationTarget: '-1'}}, triggers: [{type: redis, name: a, metadata: {}}]}",
                "spec.advanced.scalingModifiers.activationTarget: expected a number >= 0, got \"-1\"",
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(
                validate(&spec(yaml)).map_err(|e| e.to_string()),
                Err(want.to_string()),
                "{yaml}"
            );
        }
    }
}
