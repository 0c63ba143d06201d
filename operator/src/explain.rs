//! `ebb explain <namespace>/<scaledobject>`: why a ScaledObject is at its replica count. The
//! facts are read from the cluster (the object's status, its HPA, its target's `/scale`, and
//! each metric through the external metrics API, as the HPA reads it), then run through the same
//! decision function the scale loop uses. Gathering does I/O; rendering is pure.

use std::fmt::Write as _;

use ebb_crds::condition::{
    CONDITION_ACTIVE, CONDITION_FALLBACK, CONDITION_PAUSED, CONDITION_READY,
};
use ebb_crds::scaled_object::{
    ANNOTATION_FORCE_ACTIVATION, ANNOTATION_PAUSED, ANNOTATION_PAUSED_REPLICAS,
};
use ebb_crds::{Condition, ScaledObject};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{Api, Client, Resource, ResourceExt};

use crate::hpa::hpa_name;
use crate::metrics_api::request::SELECTOR_LABEL;
use crate::scale::decision::{self, Activity, Decision, Direction, Observation};
use crate::scale::task;
use crate::target::Kinds;

/// Why there is nothing to explain.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// `namespace/name` was expected.
    #[error("expected <namespace>/<scaledobject>, got {0:?}")]
    Name(String),
    /// The object does not exist.
    #[error("ScaledObject {0} not found")]
    NotFound(String),
    /// The apiserver failed.
    #[error("reading ScaledObject {name}: {source}")]
    Api {
        /// The object.
        name: String,
        /// Why.
        source: kube::Error,
    },
}

/// One metric as the HPA sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFacts {
    /// Its name.
    pub name: String,
    /// Its value through the external metrics API, or the error the HPA gets.
    pub value: Result<String, String>,
    /// The HPA's target: type and quantity.
    pub target: Option<(String, String)>,
    /// Whether the loop last judged it active (`status.triggersActivity`).
    pub active: Option<bool>,
    /// Consecutive failures (`status.health`).
    pub failures: Option<i32>,
}

/// The HPA's state.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaFacts {
    /// Its name.
    pub name: String,
    /// `status.desiredReplicas`.
    pub desired: Option<i32>,
    /// `status.currentReplicas`.
    pub current: Option<i32>,
    /// Its ScalingActive condition: status and reason.
    pub scaling_active: (String, String),
}

/// Everything `ebb explain` says, gathered.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// `namespace/name`.
    pub object: String,
    /// `apps/v1.Deployment worker`.
    pub target: String,
    /// The target's replica count, or why it cannot be read.
    pub replicas: Result<i32, String>,
    /// minReplicaCount, maxReplicaCount, idleReplicaCount.
    pub bounds: (i32, i32, Option<i32>),
    /// The object's conditions.
    pub conditions: Vec<Condition>,
    /// Its metrics.
    pub metrics: Vec<MetricFacts>,
    /// The HPA.
    pub hpa: Option<HpaFacts>,
    /// `paused` or `paused-replicas: N`, when set.
    pub paused: Option<String>,
    /// `status.lastActiveTime`.
    pub last_active: Option<Timestamp>,
    /// The decision the loop takes on these facts, when the target could be read.
    pub decision: Option<Decision>,
    /// When the facts were read.
    pub now: Timestamp,
}

/// Reads the facts about `namespace/name`.
pub async fn gather(client: &Client, object: &str) -> Result<Facts, ExplainError> {
    let (namespace, name) = object
        .split_once('/')
        .filter(|(n, s)| !n.is_empty() && !s.is_empty())
        .ok_or_else(|| ExplainError::Name(object.to_string()))?;
    let so = Api::<ScaledObject>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| ExplainError::Api {
            name: object.to_string(),
            source,
        })?
        .ok_or_else(|| ExplainError::NotFound(object.to_string()))?;
    Ok(facts(client, &crate::target::Kinds::default(), &so).await)
}

/// The facts about a ScaledObject already read: its target's count, its HPA and each of its
/// metrics through the external metrics API. What cannot be read is said in the facts. Kinds
/// found through discovery are kept in `kinds`, so that many objects need one lookup per kind.
pub async fn facts(client: &Client, kinds: &Kinds, so: &ScaledObject) -> Facts {
    let namespace = so.namespace().unwrap_or_default();
    let namespace = namespace.as_str();
    let name = so.name_any();
    let object = format!("{namespace}/{name}");
    let now = Timestamp::now();
    let status = so.status.clone().unwrap_or_default();
    let spec = &so.spec;

    let (replicas, kind_label) = match kinds
        .resolve(client, &spec.scale_target_ref, namespace)
        .await
    {
        Ok(target) => (
            target.replicas().await.map_err(|e| e.to_string()),
            Some(target.kind_label),
        ),
        Err(e) => (Err(e.to_string()), None),
    };
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
        .get_opt(&hpa_name(so))
        .await
        .ok()
        .flatten();

    let mut metrics = Vec::new();
    for metric in status.external_metric_names.clone().unwrap_or_default() {
        let path = format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}?labelSelector={}%3D{name}",
            SELECTOR_LABEL.replace('/', "%2F")
        );
        let request = axum::http::Request::get(path).body(Vec::new());
        let value = match request {
            Ok(request) => match client.request_text(request).await {
                Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["items"][0]["value"].as_str().map(str::to_string))
                    .ok_or_else(|| "the metrics API answered without a value".to_string()),
                Err(kube::Error::Api(s)) => Err(s.message),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        let target = hpa
            .as_ref()
            .and_then(|h| h.spec.as_ref())
            .and_then(|s| s.metrics.as_ref())
            .and_then(|m| {
                m.iter().find_map(|m| {
                    let external = m.external.as_ref()?;
                    (external.metric.name == metric).then(|| {
                        let t = &external.target;
                        let quantity = t
                            .average_value
                            .as_ref()
                            .or(t.value.as_ref())
                            .map(|q| q.0.clone())
                            .unwrap_or_default();
                        (t.type_.clone(), quantity)
                    })
                })
            });
        metrics.push(MetricFacts {
            active: status
                .triggers_activity
                .as_ref()
                .and_then(|a| a.get(&metric))
                .map(|a| a.is_active),
            failures: status
                .health
                .as_ref()
                .and_then(|h| h.get(&metric))
                .and_then(|h| h.number_of_failures),
            name: metric,
            value,
            target,
        });
    }

    let annotations = so.annotations();
    let paused = if let Some(n) = annotations.get(ANNOTATION_PAUSED_REPLICAS) {
        Some(format!("paused-replicas: {n}"))
    } else if task::pause_annotation(so, ANNOTATION_PAUSED) {
        Some("paused".to_string())
    } else {
        None
    };
    let last_active = status.last_active_time.as_ref().map(|t| t.0);
    let activity = if task::annotation(so, ANNOTATION_FORCE_ACTIVATION)
        || metrics.iter().any(|m| m.active == Some(true))
    {
        Activity::Active
    } else if metrics.iter().any(|m| m.value.is_err()) && spec.fallback.is_none() {
        Activity::Unknown
    } else {
        Activity::Inactive
    };
    let decision = match (&paused, &replicas) {
        (None, Ok(current)) => Some(decision::decide(
            &task::settings(so),
            &Observation {
                current_replicas: *current,
                activity,
                last_active,
                created: so
                    .meta()
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(now),
                now,
            },
        )),
        _ => None,
    };
    let hpa = hpa.map(|h| {
        let status = h.status.clone().unwrap_or_default();
        let scaling = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "ScalingActive");
        HpaFacts {
            name: h.name_any(),
            desired: Some(status.desired_replicas),
            current: status.current_replicas,
            scaling_active: (
                scaling
                    .as_ref()
                    .map(|c| c.status.clone())
                    .unwrap_or_else(|| "-".into()),
                scaling.and_then(|c| c.reason).unwrap_or_default(),
            ),
        }
    });
    Facts {
        object,
        target: format!(
            "{} {}",
            kind_label
                .or_else(|| status.scale_target_kind.clone())
                .unwrap_or_else(|| format!(
                    "{}.{}",
                    spec.scale_target_ref
                        .api_version
                        .as_deref()
                        .unwrap_or("apps/v1"),
                    spec.scale_target_ref
                        .kind
                        .as_deref()
                        .unwrap_or("Deployment")
                )),
            spec.scale_target_ref.name
        ),
        replicas,
        bounds: (
            spec.min_replicas(),
            spec.max_replicas(),
            spec.idle_replica_count,
        ),
        conditions: status.conditions.unwrap_or_default(),
        metrics,
        hpa,
        paused,
        last_active,
        decision,
        now,
    }
}

fn condition(conditions: &[Condition], type_: &str) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| match c.reason.as_deref() {
            Some(reason) if !reason.is_empty() => format!("{} ({reason})", c.status),
            _ => c.status.clone(),
        })
        .unwrap_or_else(|| "-".into())
}

fn seconds(d: SignedDuration) -> String {
    format!("{}s", d.as_secs().max(0))
}

/// The account, as printed.
pub fn render(f: &Facts) -> String {
    let mut out = String::new();
    let (min, max, idle) = f.bounds;
    let replicas = match &f.replicas {
        Ok(n) => format!("{n} replicas"),
        Err(e) => format!("replicas unknown ({e})"),
    };
    let _ = writeln!(
        out,
        "ScaledObject {} -> {}: {replicas} (min {min}, max {max}, idle {})",
        f.object,
        f.target,
        idle.map(|i| i.to_string()).unwrap_or_else(|| "-".into())
    );
    let _ = writeln!(
        out,
        "Ready: {}  Active: {}  Fallback: {}  Paused: {}",
        condition(&f.conditions, CONDITION_READY),
        condition(&f.conditions, CONDITION_ACTIVE),
        condition(&f.conditions, CONDITION_FALLBACK),
        condition(&f.conditions, CONDITION_PAUSED)
    );
    if let Some(ready) = f
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY && c.status == "False")
    {
        let _ = writeln!(
            out,
            "  not ready: {}",
            ready.message.clone().unwrap_or_default()
        );
    }
    let _ = writeln!(out, "Metrics (as the HPA reads them):");
    if f.metrics.is_empty() {
        let _ = writeln!(out, "  none yet");
    }
    for m in &f.metrics {
        let value = match &m.value {
            Ok(v) => format!("value {v}"),
            Err(e) => format!("error: {e}"),
        };
        let target = m
            .target
            .as_ref()
            .map(|(t, q)| format!("target {q} ({t})"))
            .unwrap_or_else(|| "no HPA target".into());
        let active = match m.active {
            Some(true) => "active",
            Some(false) => "inactive",
            None => "activity unknown",
        };
        let _ = writeln!(
            out,
            "  {}: {value}, {target}, {active}, {} consecutive failures",
            m.name,
            m.failures.unwrap_or(0)
        );
    }
    match &f.hpa {
        Some(hpa) => {
            let n = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "HPA {}: desired {}, current {}; ScalingActive {} ({})",
                hpa.name,
                n(hpa.desired),
                n(hpa.current),
                hpa.scaling_active.0,
                hpa.scaling_active.1
            );
        }
        None => {
            let _ = writeln!(out, "HPA: none");
        }
    }
    let rest = idle.unwrap_or(0);
    let line = match (&f.paused, f.decision) {
        (Some(paused), _) => format!("{paused}: ebb leaves the count alone and there is no HPA"),
        (None, None) => "the target cannot be read, so no decision can be taken".into(),
        (None, Some(decision)) => match decision {
            Decision::Activate { to } => {
                format!("a trigger is active at the resting count: ebb scales to {to} at its next poll")
            }
            Decision::StayActive => format!(
                "active: the HPA sets the count between {} and {max}; ebb steps in only when every trigger has been inactive for the cooldown",
                min.max(1)
            ),
            Decision::HoldOnError => {
                "a trigger fails and there is no fallback: ebb holds the count (an error never scales to zero)".into()
            }
            Decision::CoolingDown { until } => format!(
                "inactive, cooling down: ebb scales to {rest} at {until} (in {}) unless a trigger becomes active",
                seconds(until.duration_since(f.now))
            ),
            Decision::Deactivate { to } => {
                format!("inactive past the cooldown: ebb scales to {to} at its next poll")
            }
            Decision::RaiseToMin { to } => {
                format!("below minReplicaCount: ebb raises the count to {to} at its next poll")
            }
            Decision::Withheld { to, direction } => format!(
                "a step to {to} is due but {} is paused by annotation",
                match direction {
                    Direction::Out => "scaling out",
                    Direction::In => "scaling in",
                }
            ),
            Decision::Rest => format!(
                "inactive at rest: ebb scales up when a trigger becomes active (last active: {})",
                f.last_active
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "never".into())
            ),
        },
    };
    let _ = writeln!(out, "Decision: {line}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(decision: Option<Decision>) -> Facts {
        Facts {
            object: "shop/worker".into(),
            target: "apps/v1.Deployment worker".into(),
            replicas: Ok(3),
            bounds: (0, 10, None),
            conditions: vec![
                Condition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: Some("ScaledObjectReady".into()),
                    message: None,
                },
                Condition {
                    type_: "Active".into(),
                    status: "True".into(),
                    reason: Some("ScalerActive".into()),
                    message: None,
                },
            ],
            metrics: vec![MetricFacts {
                name: "s0-redis-jobs".into(),
                value: Ok("40".into()),
                target: Some(("AverageValue".into(), "5".into())),
                active: Some(true),
                failures: Some(0),
            }],
            hpa: Some(HpaFacts {
                name: "keda-hpa-worker".into(),
                desired: Some(8),
                current: Some(3),
                scaling_active: ("True".into(), "ValidMetricFound".into()),
            }),
            paused: None,
            last_active: None,
            decision,
            now: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn an_active_object_names_its_metric_hpa_and_decision() {
        let text = render(&facts(Some(Decision::StayActive)));
        for line in [
            "ScaledObject shop/worker -> apps/v1.Deployment worker: 3 replicas (min 0, max 10, idle -)",
            "Ready: True (ScaledObjectReady)  Active: True (ScalerActive)  Fallback: -  Paused: -",
            "  s0-redis-jobs: value 40, target 5 (AverageValue), active, 0 consecutive failures",
            "HPA keda-hpa-worker: desired 8, current 3; ScalingActive True (ValidMetricFound)",
            "Decision: active: the HPA sets the count between 1 and 10;",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn each_decision_reads_as_what_happens_next() {
        let until = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(42);
        for (decision, expected) in [
            (
                Decision::CoolingDown { until },
                "cooling down: ebb scales to 0 at 1970-01-01T00:00:42Z (in 42s)",
            ),
            (
                Decision::Deactivate { to: 0 },
                "inactive past the cooldown: ebb scales to 0",
            ),
            (
                Decision::Activate { to: 1 },
                "ebb scales to 1 at its next poll",
            ),
            (Decision::HoldOnError, "an error never scales to zero"),
            (
                Decision::Rest,
                "inactive at rest: ebb scales up when a trigger becomes active (last active: never)",
            ),
            (
                Decision::Withheld {
                    to: 0,
                    direction: Direction::In,
                },
                "scaling in is paused",
            ),
        ] {
            let text = render(&facts(Some(decision)));
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        let mut paused = facts(None);
        paused.paused = Some("paused-replicas: 2".into());
        assert!(
            render(&paused).contains("Decision: paused-replicas: 2: ebb leaves the count alone")
        );
    }

    #[test]
    fn a_failing_metric_shows_the_error_the_hpa_gets() {
        let mut f = facts(Some(Decision::HoldOnError));
        f.metrics[0].value =
            Err("metric s0-redis-jobs: redis 127.0.0.1:1: connection refused".into());
        f.metrics[0].failures = Some(4);
        let text = render(&f);
        assert!(
            text.contains("error: metric s0-redis-jobs: redis 127.0.0.1:1: connection refused"),
            "{text}"
        );
        assert!(text.contains("4 consecutive failures"), "{text}");
    }
}
