//! What one poll's readings come to before the replica decision: failure counts, fallback, the
//! composite metric of `scalingModifiers`, the object's activity, and the value each metric
//! answers the HPA with. Pure: the scale loop feeds it readings and the replica count.

use std::collections::{BTreeMap, BTreeSet};

use ebb_crds::scaled_object::Fallback;
use ebb_scalers::MetricTargetType;

use crate::scale::composite::{COMPOSITE_METRIC, Composite};
use crate::scale::decision::{self, Activity, TriggerOutcome};
use crate::scale::fallback;
use crate::scale::poll::TriggerResult;

pub use crate::metric_store::Answer;

/// One poll's inputs.
pub struct Inputs<'a> {
    /// The triggers' readings.
    pub results: &'a [TriggerResult],
    /// Each External metric's target and target type, by name (for fallback values).
    pub targets: &'a BTreeMap<String, (f64, MetricTargetType)>,
    /// `spec.fallback`.
    pub fallback: Option<&'a Fallback>,
    /// `advanced.scalingModifiers`, compiled.
    pub composite: Option<&'a Composite>,
    /// The target's replica count now.
    pub current_replicas: i32,
    /// `autoscaling.keda.sh/force-activation`.
    pub force_activation: bool,
}

/// One poll's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The object's activity, for the decision.
    pub activity: Activity,
    /// Whether some metric answers its fallback value (condition Fallback).
    pub in_fallback: bool,
    /// The failures, for the Ready condition (never a credential: scalers' errors are clean).
    pub errors: Vec<String>,
    /// The failures of metrics that read well (or had not been read) at the poll before: the
    /// `KEDAScalerFailed` Event, once per outage rather than at every poll.
    pub new_errors: Vec<String>,
    /// What each metric answers the HPA with; the composite under [`COMPOSITE_METRIC`].
    pub answers: BTreeMap<String, Answer>,
    /// `status.triggersActivity`: whether each metric counted as active.
    pub triggers_activity: BTreeMap<String, bool>,
    /// Metrics whose answer is not a plain reading (a fallback value, the composite metric):
    /// a live re-read of the scaler would not give it.
    pub derived: BTreeSet<String>,
}

/// The replica count a metric on fallback stands for.
fn fallback_replicas(fallback: &Fallback, current: i32) -> i32 {
    let behavior = fallback.behavior().unwrap_or_default();
    fallback::fallback_replicas(behavior, fallback.replicas, current)
}

/// Evaluates one poll, counting failures into `failures` (by metric name).
pub fn evaluate(inputs: &Inputs<'_>, failures: &mut BTreeMap<String, i32>) -> Evaluation {
    let mut answers = BTreeMap::new();
    let mut triggers_activity = BTreeMap::new();
    let mut errors = Vec::new();
    let mut new_errors = Vec::new();
    let mut derived = BTreeSet::new();
    let mut in_fallback = false;
    let mut outcomes = Vec::with_capacity(inputs.results.len());
    // Each named trigger's value for the formula: its first metric, None when it failed.
    let mut named_values: BTreeMap<String, Option<f64>> = BTreeMap::new();

    for result in inputs.results {
        let mut all_failed_in_fallback = !result.readings.is_empty();
        for reading in &result.readings {
            let count = failures.entry(reading.name.clone()).or_insert(0);
            let was_failing = *count > 0;
            *count = fallback::next_failures(*count, reading.value.is_ok());
            if let (Err(e), false) = (&reading.value, was_failing) {
                new_errors.push(format!("trigger {}: {e}", result.index));
            }
            match &reading.value {
                Ok(value) => {
                    answers.insert(reading.name.clone(), Answer::Value(*value));
                    triggers_activity.insert(reading.name.clone(), reading.active);
                }
                Err(e) => {
                    errors.push(format!("trigger {}: {e}", result.index));
                    match inputs.fallback {
                        Some(f) if fallback::in_fallback(Some(f), *count) => {
                            let (target, target_type) = inputs
                                .targets
                                .get(&reading.name)
                                .copied()
                                .unwrap_or((0.0, MetricTargetType::AverageValue));
                            let replicas = fallback_replicas(f, inputs.current_replicas);
                            answers.insert(
                                reading.name.clone(),
                                Answer::Value(fallback::fallback_value(
                                    target,
                                    target_type,
                                    replicas,
                                    inputs.current_replicas,
                                )),
                            );
                            derived.insert(reading.name.clone());
                            triggers_activity.insert(reading.name.clone(), true);
                        }
                        _ => {
                            all_failed_in_fallback = false;
                            answers.insert(reading.name.clone(), Answer::Error(e.to_string()));
                            triggers_activity.insert(reading.name.clone(), false);
                        }
                    }
                }
            }
        }
        if let Some(name) = result.name.as_deref().filter(|n| !n.is_empty()) {
            let value = result
                .readings
                .first()
                .and_then(|r| r.value.as_ref().ok().copied());
            named_values.insert(name.to_string(), value);
        }
        let outcome = if result.outcome == TriggerOutcome::Failed && all_failed_in_fallback {
            in_fallback = true;
            TriggerOutcome::Active
        } else {
            result.outcome
        };
        outcomes.push(outcome);
    }

    if let Some(composite) = inputs.composite {
        derived.insert(COMPOSITE_METRIC.to_string());
        // The composite stands for every polled trigger; cpu and memory keep their place.
        let composite_outcome = match composite.formula.evaluate(&named_values) {
            Ok(value) => {
                answers.insert(COMPOSITE_METRIC.to_string(), Answer::Value(value));
                let active = value > composite.activation_target;
                triggers_activity.insert(COMPOSITE_METRIC.to_string(), active);
                if active {
                    TriggerOutcome::Active
                } else {
                    TriggerOutcome::Inactive
                }
            }
            Err(e) if in_fallback => {
                // A trigger the formula needs is on fallback: the composite answers the value
                // that holds the fallback replica count.
                let replicas = inputs
                    .fallback
                    .map(|f| fallback_replicas(f, inputs.current_replicas))
                    .unwrap_or(0);
                errors.push(format!("scalingModifiers.{e}"));
                answers.insert(
                    COMPOSITE_METRIC.to_string(),
                    Answer::Value(fallback::fallback_value(
                        composite.target,
                        composite.target_type,
                        replicas,
                        inputs.current_replicas,
                    )),
                );
                triggers_activity.insert(COMPOSITE_METRIC.to_string(), true);
                TriggerOutcome::Active
            }
            Err(e) => {
                errors.push(format!("scalingModifiers.{e}"));
                answers.insert(COMPOSITE_METRIC.to_string(), Answer::Error(e.to_string()));
                triggers_activity.insert(COMPOSITE_METRIC.to_string(), false);
                TriggerOutcome::Failed
            }
        };
        outcomes.retain(|o| *o == TriggerOutcome::NotPolled);
        outcomes.push(composite_outcome);
    }

    Evaluation {
        activity: decision::activity(&outcomes, inputs.force_activation),
        in_fallback,
        errors,
        new_errors,
        answers,
        triggers_activity,
        derived,
    }
}

#[cfg(test)]
mod tests {
    use ebb_crds::ScaledObjectSpec;

    use super::*;
    use crate::scale::poll::{MetricReading, ReadError};

    fn reading(name: &str, value: Result<f64, &str>, active: bool) -> MetricReading {
        MetricReading {
            name: name.into(),
            value: value.map_err(|m| ReadError::Scaler {
                label: "source",
                message: m.to_string(),
            }),
            active,
            clamped: None,
            took: std::time::Duration::ZERO,
        }
    }

    fn result(index: usize, name: Option<&str>, readings: Vec<MetricReading>) -> TriggerResult {
        let outcome = if readings.iter().any(|r| r.active) {
            TriggerOutcome::Active
        } else if readings.iter().any(|r| r.value.is_err()) {
            TriggerOutcome::Failed
        } else {
            TriggerOutcome::Inactive
        };
        TriggerResult {
            index,
            name: name.map(str::to_string),
            readings,
            outcome,
        }
    }

    fn targets() -> BTreeMap<String, (f64, MetricTargetType)> {
        let average = MetricTargetType::AverageValue;
        BTreeMap::from([
            ("s0-redis-a".into(), (5.0, average)),
            ("s1-redis-b".into(), (10.0, average)),
        ])
    }

    fn inputs<'a>(
        results: &'a [TriggerResult],
        targets: &'a BTreeMap<String, (f64, MetricTargetType)>,
        fallback: Option<&'a Fallback>,
        composite: Option<&'a Composite>,
    ) -> Inputs<'a> {
        Inputs {
            results,
            targets,
            fallback,
            composite,
            current_replicas: 3,
            force_activation: false,
        }
    }

    fn composite(formula: &str, activation: &str) -> Composite {
        let spec: ScaledObjectSpec = serde_norway::from_str(&format!(
            "{{scaleTargetRef: {{name: w}}, advanced: {{scalingModifiers: {{formula: '{formula}', target: '4', activationTarget: '{activation}'}}}}, triggers: [{{type: redis, name: a, metadata: {{}}}}, {{type: redis, name: b, metadata: {{}}}}]}}"
        ))
        .expect("spec");
        Composite::of(&spec).expect("valid").expect("present")
    }

    #[test]
    fn values_are_answered_and_failures_counted() {
        let results = [
            result(0, None, vec![reading("s0-redis-a", Ok(7.0), true)]),
            result(1, None, vec![reading("s1-redis-b", Err("down"), false)]),
        ];
        let t = targets();
        let mut failures = BTreeMap::from([("s1-redis-b".to_string(), 2)]);
        let e = evaluate(&inputs(&results, &t, None, None), &mut failures);
        assert_eq!(e.activity, Activity::Active);
        assert!(!e.in_fallback);
        assert_eq!(e.answers["s0-redis-a"], Answer::Value(7.0));
        assert_eq!(e.answers["s1-redis-b"], Answer::Error("down".into()));
        assert_eq!(e.errors, vec!["trigger 1: down".to_string()]);
        assert_eq!(failures["s0-redis-a"], 0);
        assert_eq!(failures["s1-redis-b"], 3);
        assert!(e.new_errors.is_empty(), "b was failing already");
        assert_eq!(
            e.triggers_activity,
            BTreeMap::from([("s0-redis-a".into(), true), ("s1-redis-b".into(), false)])
        );

        // A failure after a good reading is new, once.
        let results = [result(
            0,
            None,
            vec![reading("s0-redis-a", Err("refused"), false)],
        )];
        let e = evaluate(&inputs(&results, &t, None, None), &mut failures);
        assert_eq!(e.new_errors, vec!["trigger 0: refused".to_string()]);
        let e = evaluate(&inputs(&results, &t, None, None), &mut failures);
        assert!(e.new_errors.is_empty(), "{:?}", e.new_errors);
    }

    #[test]
    fn a_failure_without_fallback_makes_activity_unknown_and_never_zero() {
        let results = [result(
            0,
            None,
            vec![reading("s0-redis-a", Err("down"), false)],
        )];
        let t = targets();
        let e = evaluate(&inputs(&results, &t, None, None), &mut BTreeMap::new());
        assert_eq!(e.activity, Activity::Unknown);
        assert!(matches!(e.answers["s0-redis-a"], Answer::Error(_)));
    }

    #[test]
    fn past_the_threshold_a_metric_answers_target_times_fallback_replicas() {
        let results = [result(
            0,
            None,
            vec![reading("s0-redis-a", Err("down"), false)],
        )];
        let t = targets();
        for (behavior, expected_replicas) in [
            (None, 6),
            (Some("currentReplicas"), 3),
            (Some("currentReplicasIfHigher"), 6),
            (Some("currentReplicasIfLower"), 3),
        ] {
            let fb = Fallback {
                failure_threshold: 2,
                replicas: 6,
                behavior: behavior.map(str::to_string),
            };
            // At the threshold: still an error.
            let mut failures = BTreeMap::from([("s0-redis-a".to_string(), 1)]);
            let e = evaluate(&inputs(&results, &t, Some(&fb), None), &mut failures);
            assert!(!e.in_fallback);
            assert_eq!(e.activity, Activity::Unknown);
            assert!(matches!(e.answers["s0-redis-a"], Answer::Error(_)));
            // Past it: the fallback value, and the trigger counts as active.
            let e = evaluate(&inputs(&results, &t, Some(&fb), None), &mut failures);
            assert!(e.in_fallback, "{behavior:?}");
            assert_eq!(e.activity, Activity::Active);
            assert_eq!(
                e.answers["s0-redis-a"],
                Answer::Value(5.0 * f64::from(expected_replicas)),
                "{behavior:?}"
            );
            assert!(e.triggers_activity["s0-redis-a"]);
            assert!(
                e.derived.contains("s0-redis-a"),
                "a fallback value is never re-read live"
            );
        }
    }

    #[test]
    fn the_composite_decides_activation_against_its_activation_target() {
        let c = composite("a + b", "10");
        let t = targets();
        // Each trigger active on its own, but the sum is below the composite's activation.
        let results = [
            result(0, Some("a"), vec![reading("s0-redis-a", Ok(4.0), true)]),
            result(1, Some("b"), vec![reading("s1-redis-b", Ok(5.0), true)]),
        ];
        let e = evaluate(&inputs(&results, &t, None, Some(&c)), &mut BTreeMap::new());
        assert_eq!(e.activity, Activity::Inactive);
        assert_eq!(e.answers[COMPOSITE_METRIC], Answer::Value(9.0));
        assert!(!e.triggers_activity[COMPOSITE_METRIC]);
        // Above it.
        let results = [
            result(0, Some("a"), vec![reading("s0-redis-a", Ok(4.0), false)]),
            result(1, Some("b"), vec![reading("s1-redis-b", Ok(7.0), false)]),
        ];
        let e = evaluate(&inputs(&results, &t, None, Some(&c)), &mut BTreeMap::new());
        assert_eq!(e.activity, Activity::Active);
        assert_eq!(e.answers[COMPOSITE_METRIC], Answer::Value(11.0));
        assert!(e.derived.contains(COMPOSITE_METRIC) && !e.derived.contains("s0-redis-a"));
    }

    #[test]
    fn a_failed_trigger_fails_the_composite_unless_the_formula_defaults_it() {
        let t = targets();
        let results = [
            result(0, Some("a"), vec![reading("s0-redis-a", Ok(4.0), false)]),
            result(
                1,
                Some("b"),
                vec![reading("s1-redis-b", Err("down"), false)],
            ),
        ];
        let c = composite("a + b", "0");
        let e = evaluate(&inputs(&results, &t, None, Some(&c)), &mut BTreeMap::new());
        assert_eq!(e.activity, Activity::Unknown);
        assert!(matches!(e.answers[COMPOSITE_METRIC], Answer::Error(_)));
        assert!(
            e.errors.iter().any(|m| m.contains("use `b ?? <value>`")),
            "{:?}",
            e.errors
        );

        let c = composite("a + (b ?? 0)", "0");
        let e = evaluate(&inputs(&results, &t, None, Some(&c)), &mut BTreeMap::new());
        assert_eq!(e.activity, Activity::Active);
        assert_eq!(e.answers[COMPOSITE_METRIC], Answer::Value(4.0));
    }

    #[test]
    fn the_composite_answers_its_fallback_value_when_a_trigger_it_needs_is_on_fallback() {
        let t = targets();
        let results = [
            result(0, Some("a"), vec![reading("s0-redis-a", Ok(1.0), false)]),
            result(
                1,
                Some("b"),
                vec![reading("s1-redis-b", Err("down"), false)],
            ),
        ];
        let c = composite("a + b", "0");
        let fb = Fallback {
            failure_threshold: 0,
            replicas: 5,
            behavior: None,
        };
        let e = evaluate(
            &inputs(&results, &t, Some(&fb), Some(&c)),
            &mut BTreeMap::new(),
        );
        assert!(e.in_fallback);
        assert_eq!(e.activity, Activity::Active);
        assert_eq!(e.answers[COMPOSITE_METRIC], Answer::Value(20.0));
    }

    #[test]
    fn force_activation_wins_over_an_inactive_composite() {
        let t = targets();
        let results = [
            result(0, Some("a"), vec![reading("s0-redis-a", Ok(0.0), false)]),
            result(1, Some("b"), vec![reading("s1-redis-b", Ok(0.0), false)]),
        ];
        let c = composite("a + b", "0");
        let mut i = inputs(&results, &t, None, Some(&c));
        i.force_activation = true;
        assert_eq!(
            evaluate(&i, &mut BTreeMap::new()).activity,
            Activity::Active
        );
    }
}
