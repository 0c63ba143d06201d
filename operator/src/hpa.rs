//! The HPA ebb owns for a ScaledObject, computed from the object and its scalers' metric specs.
//! Pure: the controller applies the result with server-side apply.

use std::collections::BTreeMap;

use ebb_crds::ScaledObject;
use ebb_crds::scaled_object::{ANNOTATION_HPA_EXCLUDED_LABELS, SCALED_OBJECT_NAME_LABEL};
use ebb_scalers::{MetricSpec, MetricTargetType};
use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricSource, CrossVersionObjectReference, ExternalMetricSource,
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior,
    HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec as HpaMetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::status::Status;

/// Why no HPA could be shaped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HpaError {
    /// A metric target cannot be written as a Kubernetes quantity.
    #[error(
        "metric {metric}: target {target:e} cannot be written as a quantity (expected a finite number from 0 to 9.2e15)"
    )]
    Target {
        /// The metric.
        metric: String,
        /// The target.
        target: f64,
    },
    /// A Resource metric's target is not a whole percentage.
    #[error("{resource} trigger: Utilization target {target:?} is not a whole percentage")]
    Utilization {
        /// `cpu` or `memory`.
        resource: String,
        /// The target as written.
        target: String,
    },
    /// The ScaledObject has not been stored yet (no uid to own the HPA by).
    #[error("the ScaledObject has no uid yet")]
    NotStored,
}

/// The HPA's name: `advanced.horizontalPodAutoscalerConfig.name`, else `keda-hpa-<name>`.
pub fn hpa_name(so: &ScaledObject) -> String {
    configured_hpa_name(so)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{DEFAULT_HPA_PREFIX}{}", so.name_any()))
}

/// What a ScaledObject's HPA is named when its spec names none: this, then its own name.
pub const DEFAULT_HPA_PREFIX: &str = "keda-hpa-";

/// `spec.advanced.horizontalPodAutoscalerConfig.name`, when set and not empty.
pub fn configured_hpa_name(so: &ScaledObject) -> Option<&str> {
    so.spec
        .advanced
        .as_ref()
        .and_then(|a| a.horizontal_pod_autoscaler_config.as_ref())
        .and_then(|c| c.name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Directions whose HPA scaling is switched off by the paused-scale annotations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PausedDirections {
    /// `autoscaling.keda.sh/paused-scale-in`.
    pub scale_in: bool,
    /// `autoscaling.keda.sh/paused-scale-out`.
    pub scale_out: bool,
}

/// The HPA for `so` with `metrics` (the scalers' specs, in trigger order).
pub fn desired_hpa(
    so: &ScaledObject,
    metrics: &[MetricSpec],
    paused: PausedDirections,
) -> Result<HorizontalPodAutoscaler, HpaError> {
    let so_name = so.name_any();
    let name = hpa_name(so);
    let uid = so.meta().uid.clone().ok_or(HpaError::NotStored)?;

    // The object's labels, but those its hpa-excluded-labels annotation lists (as in KEDA).
    let excluded: Vec<&str> = so
        .annotations()
        .get(ANNOTATION_HPA_EXCLUDED_LABELS)
        .map(|list| list.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let mut labels: BTreeMap<String, String> = so
        .labels()
        .iter()
        .filter(|(k, _)| !excluded.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend([
        ("app.kubernetes.io/name".to_string(), name.clone()),
        ("app.kubernetes.io/part-of".to_string(), so_name.clone()),
        (
            "app.kubernetes.io/component".to_string(),
            "operator".to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "ebb".to_string(),
        ),
        (SCALED_OBJECT_NAME_LABEL.to_string(), so_name.clone()),
    ]);

    let target = &so.spec.scale_target_ref;
    let spec = HorizontalPodAutoscalerSpec {
        scale_target_ref: CrossVersionObjectReference {
            api_version: Some(
                target
                    .api_version
                    .clone()
                    .unwrap_or_else(|| "apps/v1".to_string()),
            ),
            kind: target
                .kind
                .clone()
                .unwrap_or_else(|| "Deployment".to_string()),
            name: target.name.clone(),
        },
        min_replicas: Some(so.spec.min_replicas().max(1)),
        max_replicas: so.spec.max_replicas(),
        metrics: Some(
            metrics
                .iter()
                .map(|m| hpa_metric(m, &so_name))
                .collect::<Result<_, _>>()?,
        ),
        behavior: behavior(so, paused),
    };

    Ok(HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: so.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: ScaledObject::api_version(&()).into_owned(),
                kind: ScaledObject::kind(&()).into_owned(),
                name: so_name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// `behavior` passed through, with the paused directions' `selectPolicy` set to `Disabled`.
fn behavior(
    so: &ScaledObject,
    paused: PausedDirections,
) -> Option<HorizontalPodAutoscalerBehavior> {
    let configured = so
        .spec
        .advanced
        .as_ref()
        .and_then(|a| a.horizontal_pod_autoscaler_config.as_ref())
        .and_then(|c| c.behavior.clone());
    if !paused.scale_in && !paused.scale_out {
        return configured;
    }
    let mut behavior = configured.unwrap_or_default();
    let disable = |rules: &mut Option<HPAScalingRules>| {
        rules
            .get_or_insert_with(HPAScalingRules::default)
            .select_policy = Some("Disabled".into());
    };
    if paused.scale_in {
        disable(&mut behavior.scale_down);
    }
    if paused.scale_out {
        disable(&mut behavior.scale_up);
    }
    Some(behavior)
}

fn hpa_metric(metric: &MetricSpec, so_name: &str) -> Result<HpaMetricSpec, HpaError> {
    match metric {
        MetricSpec::External {
            name,
            target,
            target_type,
        } => {
            let quantity = quantity(*target).ok_or_else(|| HpaError::Target {
                metric: name.clone(),
                target: *target,
            })?;
            let target = match target_type {
                MetricTargetType::Value => MetricTarget {
                    type_: "Value".into(),
                    value: Some(quantity),
                    ..Default::default()
                },
                _ => MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(quantity),
                    ..Default::default()
                },
            };
            Ok(HpaMetricSpec {
                type_: "External".into(),
                external: Some(ExternalMetricSource {
                    metric: MetricIdentifier {
                        name: name.clone(),
                        selector: Some(LabelSelector {
                            match_labels: Some(
                                [(SCALED_OBJECT_NAME_LABEL.to_string(), so_name.to_string())]
                                    .into(),
                            ),
                            ..Default::default()
                        }),
                    },
                    target,
                }),
                ..Default::default()
            })
        }
        MetricSpec::Resource {
            resource,
            container,
            target_type,
            target,
        } => {
            let target = match target_type {
                MetricTargetType::Utilization => MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(target.trim().parse().map_err(|_| {
                        HpaError::Utilization {
                            resource: resource.clone(),
                            target: target.clone(),
                        }
                    })?),
                    ..Default::default()
                },
                _ => MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(Quantity(target.trim().to_string())),
                    ..Default::default()
                },
            };
            Ok(match container {
                Some(container) => HpaMetricSpec {
                    type_: "ContainerResource".into(),
                    container_resource: Some(ContainerResourceMetricSource {
                        container: container.clone(),
                        name: resource.clone(),
                        target,
                    }),
                    ..Default::default()
                },
                None => HpaMetricSpec {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricSource {
                        name: resource.clone(),
                        target,
                    }),
                    ..Default::default()
                },
            })
        }
    }
}

/// The `HPAActive` condition mirrored from the HPA's `ScalingActive` condition: status, reason
/// and message as the HPA controller wrote them, Unknown until it has written one.
pub fn hpa_active(hpa: &HorizontalPodAutoscaler) -> (Status, String, String) {
    let scaling_active = hpa
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "ScalingActive"));
    match scaling_active {
        Some(c) => (
            match c.status.as_str() {
                "True" => Status::True,
                "False" => Status::False,
                _ => Status::Unknown,
            },
            c.reason.clone().unwrap_or_else(|| "ScalingActive".into()),
            c.message.clone().unwrap_or_default(),
        ),
        None => (
            Status::Unknown,
            "HPAPending".into(),
            "The HPA controller has not reported on the HPA yet".into(),
        ),
    }
}

/// A number as a Kubernetes quantity, to the thousandth: `5`, `1500m`, `0`. None for values
/// that are negative, not finite, or too large for a milli-quantity (the apiserver stores
/// quantities as 64-bit integers of their smallest unit).
pub fn quantity(value: f64) -> Option<Quantity> {
    const MAX_MILLI: f64 = 9.2e18;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let milli = (value * 1000.0).round();
    if milli > MAX_MILLI {
        return None;
    }
    // In range by the check above.
    let milli = milli as i64;
    Some(Quantity(if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }))
}

#[cfg(test)]
mod tests {
    use ebb_crds::ScaledObjectSpec;

    use super::*;

    fn scaled_object(yaml: &str) -> ScaledObject {
        let spec: ScaledObjectSpec = serde_norway::from_str(yaml).expect("spec");
        let mut so = ScaledObject::new("orders", spec);
        so.metadata.namespace = Some("shop".into());
        so.metadata.uid = Some("uid-1".into());
        so.metadata.labels = Some([("team".to_string(), "payments".to_string())].into());
        so
    }

    fn external(name: &str, target: f64, target_type: MetricTargetType) -> MetricSpec {
        MetricSpec::External {
            name: name.into(),
            target,
            target_type,
        }
    }

    #[test]
    fn labels_listed_in_hpa_excluded_labels_stay_off_the_hpa() {
        let mut so = scaled_object("{scaleTargetRef: {name: worker}, triggers: []}");
        so.metadata.labels = Some(
            [("team", "payments"), ("cost-centre", "42"), ("tier", "web")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        );
        so.metadata.annotations = Some(
            [(
                ANNOTATION_HPA_EXCLUDED_LABELS.to_string(),
                "cost-centre, tier".to_string(),
            )]
            .into(),
        );
        let hpa = desired_hpa(
            &so,
            &[external(
                "s0-redis-jobs",
                5.0,
                MetricTargetType::AverageValue,
            )],
            PausedDirections::default(),
        )
        .expect("an HPA");
        let labels = hpa.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
        assert!(!labels.contains_key("cost-centre"), "{labels:?}");
        assert!(!labels.contains_key("tier"), "{labels:?}");
        assert_eq!(
            labels.get(SCALED_OBJECT_NAME_LABEL).map(String::as_str),
            Some("orders")
        );
    }

    #[test]
    fn shapes_the_hpa_as_keda_does() {
        let so = scaled_object(
            r"
scaleTargetRef: {name: worker}
minReplicaCount: 0
maxReplicaCount: 12
triggers: [{type: redis, metadata: {}}, {type: rabbitmq, metadata: {}}]
",
        );
        let hpa = desired_hpa(
            &so,
            &[
                external("s0-redis-mylist", 5.0, MetricTargetType::AverageValue),
                external("s1-rabbitmq-orders", 2.5, MetricTargetType::Value),
            ],
            PausedDirections::default(),
        )
        .unwrap();
        let want: serde_json::Value = serde_norway::from_str(
            r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: keda-hpa-orders
  namespace: shop
  labels:
    team: payments
    app.kubernetes.io/name: keda-hpa-orders
    app.kubernetes.io/part-of: orders
    app.kubernetes.io/component: operator
    app.kubernetes.io/managed-by: ebb
    scaledobject.keda.sh/name: orders
  ownerReferences:
  - apiVersion: keda.sh/v1alpha1
    kind: ScaledObject
    name: orders
    uid: uid-1
    controller: true
    blockOwnerDeletion: true
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: worker}
  minReplicas: 1
  maxReplicas: 12
  metrics:
  - type: External
    external:
      metric:
        name: s0-redis-mylist
        selector: {matchLabels: {scaledobject.keda.sh/name: orders}}
      target: {type: AverageValue, averageValue: "5"}
  - type: External
    external:
      metric:
        name: s1-rabbitmq-orders
        selector: {matchLabels: {scaledobject.keda.sh/name: orders}}
      target: {type: Value, value: 2500m}
"#,
        )
        .unwrap();
        assert_eq!(serde_json::to_value(&hpa).unwrap(), want);
    }

    #[test]
    fn name_target_and_bounds_follow_the_spec() {
        let so = scaled_object(
            r"
scaleTargetRef: {name: db, apiVersion: apps/v1, kind: StatefulSet}
minReplicaCount: 3
advanced:
  horizontalPodAutoscalerConfig:
    name: custom-hpa
    behavior:
      scaleDown:
        stabilizationWindowSeconds: 60
        policies: [{type: Percent, value: 50, periodSeconds: 30}]
triggers: [{type: cpu, metadata: {value: '60'}, metricType: Utilization}]
",
        );
        let cpu = MetricSpec::Resource {
            resource: "cpu".into(),
            container: None,
            target_type: MetricTargetType::Utilization,
            target: "60".into(),
        };
        let memory = MetricSpec::Resource {
            resource: "memory".into(),
            container: Some("app".into()),
            target_type: MetricTargetType::AverageValue,
            target: "512Mi".into(),
        };
        let hpa = desired_hpa(&so, &[cpu, memory], PausedDirections::default()).unwrap();
        assert_eq!(hpa.metadata.name.as_deref(), Some("custom-hpa"));
        let spec = serde_json::to_value(hpa.spec.unwrap()).unwrap();
        let want: serde_json::Value = serde_norway::from_str(
            r"
scaleTargetRef: {apiVersion: apps/v1, kind: StatefulSet, name: db}
minReplicas: 3
maxReplicas: 100
behavior:
  scaleDown:
    stabilizationWindowSeconds: 60
    policies: [{type: Percent, value: 50, periodSeconds: 30}]
metrics:
- type: Resource
  resource: {name: cpu, target: {type: Utilization, averageUtilization: 60}}
- type: ContainerResource
  containerResource: {container: app, name: memory, target: {type: AverageValue, averageValue: 512Mi}}
",
        )
        .unwrap();
        assert_eq!(spec, want);
    }

    #[test]
    fn paused_directions_disable_the_hpa_policy_and_keep_the_rest() {
        let so = scaled_object(
            r"
scaleTargetRef: {name: worker}
advanced:
  horizontalPodAutoscalerConfig:
    behavior:
      scaleDown: {stabilizationWindowSeconds: 60}
triggers: [{type: redis, metadata: {}}]
",
        );
        let metrics = [external("s0-redis-l", 5.0, MetricTargetType::AverageValue)];
        let behavior = |paused| {
            let hpa = desired_hpa(&so, &metrics, paused).unwrap();
            serde_json::to_value(hpa.spec.unwrap().behavior).unwrap()
        };
        let want_in: serde_json::Value = serde_norway::from_str(
            "scaleDown: {stabilizationWindowSeconds: 60, selectPolicy: Disabled}",
        )
        .unwrap();
        assert_eq!(
            behavior(PausedDirections {
                scale_in: true,
                scale_out: false
            }),
            want_in
        );
        let want_out: serde_json::Value = serde_norway::from_str(
            "{scaleDown: {stabilizationWindowSeconds: 60}, scaleUp: {selectPolicy: Disabled}}",
        )
        .unwrap();
        assert_eq!(
            behavior(PausedDirections {
                scale_in: false,
                scale_out: true
            }),
            want_out
        );
    }

    #[test]
    fn quantities_to_the_thousandth_and_never_overflowing() {
        let cases = [
            (0.0, Some("0")),
            (5.0, Some("5")),
            (2.5, Some("2500m")),
            (0.0004, Some("0")),
            (0.0005, Some("1m")),
            (1e15, Some("1000000000000000")),
            (1e16, None),
            (1e308, None),
            (f64::NAN, None),
            (f64::INFINITY, None),
            (-1.0, None),
        ];
        for (value, want) in cases {
            assert_eq!(
                quantity(value).map(|q| q.0),
                want.map(String::from),
                "{value}"
            );
        }
    }

    #[test]
    fn errors_name_the_metric() {
        let so = scaled_object("{scaleTargetRef: {name: w}, triggers: [{type: x, metadata: {}}]}");
        let err = desired_hpa(
            &so,
            &[external("s0-x", 1e300, MetricTargetType::Value)],
            PausedDirections::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("metric s0-x: target 1e300"),
            "{err}"
        );

        let mut unstored = so.clone();
        unstored.metadata.uid = None;
        assert_eq!(
            desired_hpa(&unstored, &[], PausedDirections::default()).unwrap_err(),
            HpaError::NotStored
        );
    }

    #[test]
    fn hpa_active_mirrors_scaling_active() {
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "h"},
            "status": {"desiredReplicas": 1, "conditions": [
                {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"},
                {"type": "ScalingActive", "status": "False", "reason": "FailedGetExternalMetric",
                 "message": "the HPA was unable to compute the replica count"}
            ]}
        }))
        .expect("hpa");
        assert_eq!(
            hpa_active(&hpa),
            (
                Status::False,
                "FailedGetExternalMetric".to_string(),
                "the HPA was unable to compute the replica count".to_string()
            )
        );
        let pending = HorizontalPodAutoscaler::default();
        assert_eq!(hpa_active(&pending).0, Status::Unknown);
    }
}
