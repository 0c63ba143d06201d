//! A ScaledObject with extreme and hostile values (every i32 for the counts and periods,
//! arbitrary trigger types, names and scalingModifiers, pause annotations), through the pure
//! path a real one takes: validation, the polling schedule, the composite metric, the HPA ebb
//! would create and one scale decision at an arbitrary moment. Each step answers or refuses;
//! none panics or overflows; a decision never writes a negative count or one above
//! `max(maxReplicaCount, 1)`.

use arbitrary::{Arbitrary, Unstructured};
use ebb_crds::ScaledObject;
use ebb_operator::hpa::{PausedDirections, desired_hpa, quantity};
use ebb_operator::scale::composite::{Composite, hpa_metrics};
use ebb_operator::scale::decision::{Activity, Observation, decide};
use ebb_operator::scale::fallback::{fallback_replicas, fallback_value};
use ebb_operator::scale::schedule::{first_poll_delay, polling_interval};
use ebb_operator::scale::task::settings;
use ebb_operator::validate::validate;
use ebb_scalers::{MetricSpec, MetricTargetType};
use serde_json::{Value, json};

const TYPES: &[&str] = &[
    "redis",
    "rabbitmq",
    "cron",
    "cpu",
    "memory",
    "metrics-api",
    "external",
    "",
];
const NAMES: &[&str] = &["queue", "backlog", "Queue", "a-b", "", " "];
const BEHAVIORS: &[&str] = &[
    "static",
    "currentReplicas",
    "currentReplicasIfHigher",
    "currentReplicasIfLower",
    "scalingModifiers",
    "other",
];

#[derive(Debug, Arbitrary)]
struct Trigger {
    type_: u8,
    name: Option<u8>,
    metric_type: Option<String>,
    use_cached_metrics: bool,
}

#[derive(Debug, Arbitrary)]
struct Modifiers {
    formula: Option<String>,
    target: Option<String>,
    activation_target: Option<String>,
}

/// What one run reads from the fuzzer's bytes.
#[derive(Debug, Arbitrary)]
struct Input {
    polling_interval: Option<i32>,
    cooldown_period: Option<i32>,
    initial_cooldown_period: Option<i32>,
    idle_replica_count: Option<i32>,
    min_replica_count: Option<i32>,
    max_replica_count: Option<i32>,
    triggers: Vec<Trigger>,
    modifiers: Option<Modifiers>,
    fallback: Option<(i32, i32, u8)>,
    paused_scale_in: bool,
    paused_scale_out: bool,
    target_value: f64,
    current_replicas: i32,
    activity: u8,
    last_active: Option<i64>,
    created: i64,
    now: i64,
}

fn at(second: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(second).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn object(input: &Input) -> Value {
    let triggers: Vec<Value> = input
        .triggers
        .iter()
        .map(|t| {
            json!({
                "type": TYPES[usize::from(t.type_) % TYPES.len()],
                "name": t.name.map(|n| NAMES[usize::from(n) % NAMES.len()]),
                "metricType": t.metric_type,
                "useCachedMetrics": t.use_cached_metrics,
                "metadata": {"listName": "orders", "value": "50"},
            })
        })
        .collect();
    let advanced = input.modifiers.as_ref().map(|m| {
        json!({"scalingModifiers": {
            "formula": m.formula,
            "target": m.target,
            "activationTarget": m.activation_target,
        }})
    });
    let fallback = input.fallback.map(|(threshold, replicas, behavior)| {
        json!({
            "failureThreshold": threshold,
            "replicas": replicas,
            "behavior": BEHAVIORS[usize::from(behavior) % BEHAVIORS.len()],
        })
    });
    let mut spec = json!({
        "scaleTargetRef": {"name": "worker"},
        "pollingInterval": input.polling_interval,
        "cooldownPeriod": input.cooldown_period,
        "initialCooldownPeriod": input.initial_cooldown_period,
        "idleReplicaCount": input.idle_replica_count,
        "minReplicaCount": input.min_replica_count,
        "maxReplicaCount": input.max_replica_count,
        "triggers": triggers,
        "advanced": advanced,
        "fallback": fallback,
    });
    // Absent, not null: as the apiserver stores an unset field.
    if let Some(fields) = spec.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": "fuzz",
            "namespace": "default",
            "uid": "6b0e7a3c-0000-4000-8000-000000000000",
            "annotations": {
                "autoscaling.keda.sh/paused-scale-in": input.paused_scale_in.to_string(),
                "autoscaling.keda.sh/paused-scale-out": input.paused_scale_out.to_string(),
            },
        },
        "spec": spec,
    })
}

/// One input: bytes the fuzzer chose, read as structured [`Input`].
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let so: ScaledObject = match serde_json::from_value(object(&input)) {
        Ok(so) => so,
        // Only shapes the schema refuses end here (a trigger list with a null entry, say).
        Err(_) => return,
    };
    let interval = polling_interval(&so.spec);
    assert!(interval.as_secs() >= 1, "polling interval {interval:?}");
    assert!(first_poll_delay("6b0e7a3c", interval) < interval);

    let composite = Composite::of(&so.spec);
    if validate(&so.spec).is_err() {
        return;
    }
    let Ok(composite) = composite else { return };

    let specs: Vec<MetricSpec> = (0..so.spec.triggers.len())
        .map(|i| MetricSpec::External {
            name: format!("s{i}-fuzz"),
            target: input.target_value,
            target_type: MetricTargetType::AverageValue,
        })
        .collect();
    let metrics = hpa_metrics(&specs, composite.as_ref());
    let paused = PausedDirections {
        scale_in: input.paused_scale_in,
        scale_out: input.paused_scale_out,
    };
    let hpa = desired_hpa(&so, &metrics, paused);
    if quantity(input.target_value).is_none() && composite.is_none() && !specs.is_empty() {
        assert!(hpa.is_err(), "an HPA with target {}", input.target_value);
    }

    let settings = settings(&so);
    let observed = Observation {
        current_replicas: input.current_replicas,
        activity: match input.activity % 3 {
            0 => Activity::Active,
            1 => Activity::Inactive,
            _ => Activity::Unknown,
        },
        last_active: input.last_active.map(at),
        created: at(input.created),
        now: at(input.now),
    };
    let decision = decide(&settings, &observed);
    if let Some(to) = decision.write() {
        let ceiling = so.spec.max_replicas().max(1);
        assert!(
            (0..=ceiling).contains(&to),
            "{decision:?} for {observed:?} with {settings:?}"
        );
    }

    if let Some(fallback) = &so.spec.fallback {
        let Ok(behavior) = fallback.behavior() else {
            return;
        };
        let replicas = fallback_replicas(behavior, fallback.replicas, input.current_replicas);
        for target_type in [MetricTargetType::AverageValue, MetricTargetType::Value] {
            let _ = fallback_value(
                input.target_value,
                target_type,
                replicas,
                input.current_replicas,
            );
        }
    }
}
