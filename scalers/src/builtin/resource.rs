//! `cpu` and `memory`: Resource (or ContainerResource) metrics that the HPA reads from the
//! metrics server. ebb only shapes the HPA; it never polls them.

use async_trait::async_trait;

use crate::error::{ConfigError, ScalerError};
use crate::metric::{MetricSpec, MetricsAndActivity};
use crate::scaler::Scaler;
use crate::trigger::{MetricTargetType, Source, Trigger};

/// Registers `cpu` and `memory`.
pub fn register(registry: &mut crate::registry::Registry) {
    registry
        .register("cpu", |t| Ok(Box::new(ResourceScaler::new(t, "cpu")?)))
        .register("memory", |t| {
            Ok(Box::new(ResourceScaler::new(t, "memory")?))
        });
}

/// A cpu or memory trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceScaler {
    resource: String,
    container: Option<String>,
    target_type: MetricTargetType,
    target: String,
}

impl ResourceScaler {
    /// Parses a `cpu` or `memory` trigger.
    pub fn new(trigger: &Trigger, resource: &str) -> Result<Self, ConfigError> {
        let target_type = target_type(trigger)?;
        let value = trigger.required("value", &[Source::Metadata])?.value;
        let value = value.trim().to_string();
        match target_type {
            MetricTargetType::Utilization => {
                let percent: i32 = value.parse().map_err(|_| {
                    trigger.error(
                        "value",
                        format!("expected a whole percentage for Utilization, got {value:?}"),
                    )
                })?;
                if percent <= 0 {
                    return Err(trigger.error(
                        "value",
                        format!("expected a percentage above 0, got {percent}"),
                    ));
                }
            }
            _ => {
                if !is_quantity(&value) {
                    return Err(trigger.error(
                        "value",
                        format!("expected a quantity such as 500m or 512Mi for AverageValue, got {value:?}"),
                    ));
                }
            }
        }
        let container = trigger
            .lookup("containerName", &[Source::Metadata])?
            .map(|f| f.value);
        Ok(Self {
            resource: resource.to_string(),
            container,
            target_type,
            target: value,
        })
    }
}

/// `metricType`, or the deprecated metadata `type`; one of them is required.
fn target_type(trigger: &Trigger) -> Result<MetricTargetType, ConfigError> {
    let allowed = [
        MetricTargetType::Utilization,
        MetricTargetType::AverageValue,
    ];
    if trigger
        .metric_type
        .as_deref()
        .is_some_and(|t| !t.is_empty())
    {
        return trigger.metric_type(&allowed, MetricTargetType::Utilization);
    }
    match trigger.lookup("type", &[Source::Metadata])? {
        Some(found) => allowed
            .iter()
            .copied()
            .find(|t| t.as_str() == found.value.trim())
            .ok_or_else(|| {
                trigger.error(
                    "type",
                    format!(
                        "expected Utilization or AverageValue, got {:?}",
                        found.value
                    ),
                )
            }),
        None => Err(trigger.error(
            "metricType",
            "required for cpu and memory triggers: Utilization or AverageValue",
        )),
    }
}

/// Whether `s` is a positive Kubernetes quantity: a decimal number with an optional SI, binary
/// or exponent suffix.
fn is_quantity(s: &str) -> bool {
    let negative = s.starts_with('-');
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let valid_number = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let valid_suffix = match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        exp => {
            let rest = exp.strip_prefix(['e', 'E']);
            rest.map(|r| r.strip_prefix(['+', '-']).unwrap_or(r))
                .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
        }
    };
    // The HPA refuses a target that is not positive.
    let positive = number.chars().any(|c| matches!(c, '1'..='9'));
    valid_number && valid_suffix && positive && !negative
}

#[async_trait]
impl Scaler for ResourceScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::Resource {
            resource: self.resource.clone(),
            container: self.container.clone(),
            target_type: self.target_type,
            target: self.target.clone(),
        }]
    }

    /// Resource metrics are read by the HPA from the metrics server, never through ebb; the
    /// scale loop recognises these scalers by their specs and does not poll them.
    async fn metrics_and_activity(&self, metric: &str) -> Result<MetricsAndActivity, ScalerError> {
        Err(ScalerError::UnknownMetric(metric.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(metric_type: Option<&str>, meta: &[(&str, &str)]) -> Trigger {
        Trigger {
            index: 0,
            trigger_type: "cpu".into(),
            metric_type: metric_type.map(String::from),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn spec(s: &ResourceScaler) -> MetricSpec {
        s.metric_specs().remove(0)
    }

    #[test]
    fn parses_every_documented_form() {
        let cases = [
            (
                Some("Utilization"),
                vec![("value", "60")],
                MetricTargetType::Utilization,
                "60",
                None,
            ),
            (
                Some("AverageValue"),
                vec![("value", "500m")],
                MetricTargetType::AverageValue,
                "500m",
                None,
            ),
            (
                None,
                vec![("type", "Utilization"), ("value", "75")],
                MetricTargetType::Utilization,
                "75",
                None,
            ),
            (
                Some("Utilization"),
                vec![("value", "50"), ("containerName", "worker")],
                MetricTargetType::Utilization,
                "50",
                Some("worker"),
            ),
        ];
        for (metric_type, meta, target_type, target, container) in cases {
            let s = ResourceScaler::new(&trigger(metric_type, &meta), "cpu").expect("valid");
            assert_eq!(
                spec(&s),
                MetricSpec::Resource {
                    resource: "cpu".into(),
                    container: container.map(String::from),
                    target_type,
                    target: target.into(),
                },
                "{meta:?}"
            );
        }
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        let cases = [
            (
                None,
                vec![("value", "60")],
                "metricType",
                "required for cpu and memory triggers: Utilization or AverageValue",
            ),
            (
                Some("Value"),
                vec![("value", "60")],
                "metricType",
                "expected Utilization or AverageValue for a cpu trigger, got \"Value\"",
            ),
            (
                Some("Utilization"),
                vec![],
                "value",
                "required; set metadata \"value\"",
            ),
            (
                Some("Utilization"),
                vec![("value", "60%")],
                "value",
                "expected a whole percentage for Utilization, got \"60%\"",
            ),
            (
                Some("Utilization"),
                vec![("value", "0")],
                "value",
                "expected a percentage above 0, got 0",
            ),
            (
                Some("AverageValue"),
                vec![("value", "lots")],
                "value",
                "expected a quantity such as 500m or 512Mi for AverageValue, got \"lots\"",
            ),
            (
                None,
                vec![("type", "Percent"), ("value", "1")],
                "type",
                "expected Utilization or AverageValue, got \"Percent\"",
            ),
        ];
        for (metric_type, meta, key, problem) in cases {
            let err = ResourceScaler::new(&trigger(metric_type, &meta), "cpu").unwrap_err();
            assert_eq!(
                (err.key.as_str(), err.problem.as_str()),
                (key, problem),
                "{meta:?}"
            );
        }
    }

    #[test]
    fn quantities() {
        for ok in [
            "1", "500m", "0.5", "512Mi", "2Gi", "1e3", "1E-2", "+3k", ".5",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in [
            "", "m", "1.2.3", "12Mb", "1e", "five", "1 Gi", "0", "0.0Mi", "-1", "-500m",
        ] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn is_never_polled_through_ebb() {
        let s = ResourceScaler::new(&trigger(Some("Utilization"), &[("value", "60")]), "memory")
            .expect("valid");
        assert!(matches!(
            s.metrics_and_activity("memory").await,
            Err(ScalerError::UnknownMetric(_))
        ));
    }
}
