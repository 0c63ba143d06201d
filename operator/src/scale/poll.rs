//! One poll of a ScaledObject's triggers: every scaler asked at once, each answer bounded by a
//! timeout, the results turned into per-trigger outcomes for the decision.

use std::sync::Arc;
use std::time::Duration;

use ebb_scalers::{MetricSpec, Scaler};
use futures::future::join_all;

use crate::scale::decision::TriggerOutcome;

/// A scaler with what the poll reports about its trigger.
#[derive(Clone)]
pub struct PolledTrigger {
    /// Position in `spec.triggers`.
    pub index: usize,
    /// The trigger's `name`, for scalingModifiers formulas.
    pub name: Option<String>,
    /// The scaler.
    pub scaler: Arc<dyn Scaler>,
}

/// One metric's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricReading {
    /// The metric's name.
    pub name: String,
    /// Its value, or why it could not be read.
    pub value: Result<f64, ReadError>,
    /// Whether the scaler judged it active.
    pub active: bool,
    /// A negative value the scaler answered, read as 0 (as KEDA clamps it).
    pub clamped: Option<f64>,
    /// How long the read took.
    pub took: Duration,
}

/// One trigger's result.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerResult {
    /// Position in `spec.triggers`.
    pub index: usize,
    /// The trigger's name.
    pub name: Option<String>,
    /// The readings, one per External metric.
    pub readings: Vec<MetricReading>,
    /// What the trigger came to (before fallback is applied).
    pub outcome: TriggerOutcome,
}

/// Why a metric could not be read. Its text never carries a credential (scalers' errors are
/// clean); its [`label`](ReadError::label) names the kind for metrics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// The scaler did not answer within the poll timeout.
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The scaler answered with an error.
    #[error("{message}")]
    Scaler {
        /// The error's kind ([`ebb_scalers::ScalerError::label`]).
        label: &'static str,
        /// Its text.
        message: String,
    },
    /// The scaler answered a value that is not a finite number.
    #[error("the value {0} is not a finite number")]
    NotFinite(f64),
    /// The scaler answered without a value for the metric.
    #[error("the scaler answered without a value")]
    NoValue,
    /// The scaler has not learned its metrics yet (an external plugin that has not answered).
    #[error("the scaler has no metrics yet")]
    NoMetricsYet,
}

impl ReadError {
    /// A stable one-word label: the `reason` of `ebb_scaler_read_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ReadError::Timeout(_) => "timeout",
            ReadError::Scaler { label, .. } => label,
            ReadError::NotFinite(_) => "not_finite",
            ReadError::NoValue => "no_value",
            ReadError::NoMetricsYet => "no_metrics_yet",
        }
    }
}

/// Reads one metric of `scaler`, cut off after `timeout`. A value that is missing or not a
/// finite number is an error, never a number; a negative one reads as 0, as in KEDA (a
/// negative quantity would make the HPA's metric query fail).
pub async fn read_metric(scaler: &dyn Scaler, name: &str, timeout: Duration) -> MetricReading {
    let started = tokio::time::Instant::now();
    let answer = tokio::time::timeout(timeout, scaler.metrics_and_activity(name)).await;
    let took = started.elapsed();
    let mut clamped = None;
    let (value, active) = match answer {
        Err(_) => (Err(ReadError::Timeout(timeout)), false),
        Ok(Err(e)) => (
            Err(ReadError::Scaler {
                label: e.label(),
                message: e.to_string(),
            }),
            false,
        ),
        Ok(Ok(answer)) => match answer.values.iter().find(|v| v.name == name) {
            Some(v) if v.value.is_finite() => {
                if v.value < 0.0 {
                    clamped = Some(v.value);
                }
                (Ok(v.value.max(0.0)), answer.active)
            }
            Some(v) => (Err(ReadError::NotFinite(v.value)), false),
            None => (Err(ReadError::NoValue), false),
        },
    };
    MetricReading {
        name: name.to_string(),
        value,
        active,
        clamped,
        took,
    }
}

/// Polls every trigger concurrently; each metric read is cut off after `timeout`.
pub async fn poll(triggers: &[PolledTrigger], timeout: Duration) -> Vec<TriggerResult> {
    join_all(triggers.iter().map(|t| poll_one(t, timeout))).await
}

async fn poll_one(trigger: &PolledTrigger, timeout: Duration) -> TriggerResult {
    let specs = trigger.scaler.metric_specs();
    let external: Vec<&str> = specs.iter().filter_map(MetricSpec::external_name).collect();
    let result = |readings, outcome| TriggerResult {
        index: trigger.index,
        name: trigger.name.clone(),
        readings,
        outcome,
    };
    if external.is_empty() {
        return if specs.is_empty() {
            // A scaler that has not learned its metrics yet (an external plugin that has not
            // answered GetMetricSpec) cannot say anything: a failure, never an "inactive".
            result(
                vec![MetricReading {
                    name: format!("s{}-unknown", trigger.index),
                    value: Err(ReadError::NoMetricsYet),
                    active: false,
                    clamped: None,
                    took: Duration::ZERO,
                }],
                TriggerOutcome::Failed,
            )
        } else {
            result(Vec::new(), TriggerOutcome::NotPolled)
        };
    }

    let readings = join_all(
        external
            .iter()
            .map(|name| read_metric(trigger.scaler.as_ref(), name, timeout)),
    )
    .await;

    let outcome = if readings.iter().any(|r| r.active) {
        TriggerOutcome::Active
    } else if readings.iter().any(|r| r.value.is_err()) {
        TriggerOutcome::Failed
    } else {
        TriggerOutcome::Inactive
    };
    result(readings, outcome)
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use ebb_scalers::{MetricTargetType, MetricValue, MetricsAndActivity, ScalerError};

    use super::*;

    /// What a test scaler does when asked.
    #[derive(Clone)]
    enum Behaviour {
        Answer(f64, bool),
        Fail,
        Hang,
        NoValue,
    }

    struct TestScaler {
        specs: Vec<MetricSpec>,
        behaviour: Behaviour,
    }

    #[async_trait]
    impl Scaler for TestScaler {
        fn metric_specs(&self) -> Vec<MetricSpec> {
            self.specs.clone()
        }

        async fn metrics_and_activity(
            &self,
            metric: &str,
        ) -> Result<MetricsAndActivity, ScalerError> {
            match self.behaviour {
                Behaviour::Answer(value, active) => Ok(MetricsAndActivity {
                    values: vec![MetricValue {
                        name: metric.to_string(),
                        value,
                    }],
                    active,
                }),
                Behaviour::Fail => Err(ScalerError::Source {
                    source_name: "redis 127.0.0.1:1".into(),
                    message: "connection refused".into(),
                }),
                Behaviour::Hang => std::future::pending().await,
                Behaviour::NoValue => Ok(MetricsAndActivity {
                    values: vec![],
                    active: true,
                }),
            }
        }
    }

    fn external(index: usize, behaviour: Behaviour) -> PolledTrigger {
        PolledTrigger {
            index,
            name: Some(format!("t{index}")),
            scaler: Arc::new(TestScaler {
                specs: vec![MetricSpec::External {
                    name: format!("s{index}-test"),
                    target: 5.0,
                    target_type: MetricTargetType::AverageValue,
                }],
                behaviour,
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_trigger_comes_to_an_outcome_within_the_timeout() {
        let resource = PolledTrigger {
            index: 4,
            name: None,
            scaler: Arc::new(TestScaler {
                specs: vec![MetricSpec::Resource {
                    resource: "cpu".into(),
                    container: None,
                    target_type: MetricTargetType::Utilization,
                    target: "50".into(),
                }],
                behaviour: Behaviour::Fail,
            }),
        };
        let learning = PolledTrigger {
            index: 6,
            name: None,
            scaler: Arc::new(TestScaler {
                specs: vec![],
                behaviour: Behaviour::Answer(1.0, true),
            }),
        };
        let triggers = vec![
            external(0, Behaviour::Answer(7.0, true)),
            external(1, Behaviour::Answer(1.0, false)),
            external(2, Behaviour::Fail),
            external(3, Behaviour::Hang),
            resource,
            external(5, Behaviour::NoValue),
            learning,
            external(7, Behaviour::Answer(f64::NAN, true)),
            external(8, Behaviour::Answer(-4.5, false)),
        ];
        let started = tokio::time::Instant::now();
        let results = poll(&triggers, Duration::from_secs(3)).await;
        // The hanging scaler is cut off at the timeout, and the others did not wait in line.
        assert_eq!(started.elapsed(), Duration::from_secs(3));

        let outcomes: Vec<(usize, TriggerOutcome)> =
            results.iter().map(|r| (r.index, r.outcome)).collect();
        assert_eq!(
            outcomes,
            vec![
                (0, TriggerOutcome::Active),
                (1, TriggerOutcome::Inactive),
                (2, TriggerOutcome::Failed),
                (3, TriggerOutcome::Failed),
                (4, TriggerOutcome::NotPolled),
                (5, TriggerOutcome::Failed),
                (6, TriggerOutcome::Failed),
                (7, TriggerOutcome::Failed),
                (8, TriggerOutcome::Inactive),
            ]
        );
        // A negative value reads as 0, as KEDA clamps it, and says what it was.
        assert_eq!(results[8].readings[0].value, Ok(0.0));
        assert_eq!(results[8].readings[0].clamped, Some(-4.5));
        assert_eq!(results[0].readings[0].clamped, None);
        assert_eq!(results[0].readings[0].value, Ok(7.0));
        assert_eq!(results[0].name.as_deref(), Some("t0"));
        let error = |i: usize| {
            let e = results[i].readings[0].value.clone().unwrap_err();
            (e.label(), e.to_string())
        };
        assert_eq!(
            error(2),
            ("source", "redis 127.0.0.1:1: connection refused".into())
        );
        assert_eq!(error(3), ("timeout", "no answer within 3000 ms".into()));
        assert_eq!(
            error(7),
            ("not_finite", "the value NaN is not a finite number".into())
        );
        assert!(results[4].readings.is_empty());
    }
}
