//! Fallback: what a metric answers once its trigger has failed too often. Pure functions over
//! the failure count in `status.health` and the fallback settings.

use ebb_crds::scaled_object::{Fallback, FallbackBehavior};
use ebb_scalers::MetricTargetType;

/// `status.health[metric].status` values.
pub const HAPPY: &str = "Happy";
/// See [`HAPPY`].
pub const FAILING: &str = "Failing";

/// A metric's consecutive failures after one more poll.
pub fn next_failures(previous: i32, succeeded: bool) -> i32 {
    if succeeded {
        0
    } else {
        previous.saturating_add(1)
    }
}

/// Whether `failures` consecutive failures put the metric on its fallback: only past the
/// threshold, so `failureThreshold: 3` tolerates three failures and falls back at the fourth.
pub fn in_fallback(fallback: Option<&Fallback>, failures: i32) -> bool {
    fallback.is_some_and(|f| failures > f.failure_threshold)
}

/// The replica count the fallback aims for, by its behavior.
pub fn fallback_replicas(behavior: FallbackBehavior, replicas: i32, current: i32) -> i32 {
    match behavior {
        FallbackBehavior::Static | FallbackBehavior::ScalingModifiers => replicas,
        FallbackBehavior::CurrentReplicas => current,
        FallbackBehavior::CurrentReplicasIfHigher => current.max(replicas),
        FallbackBehavior::CurrentReplicasIfLower => current.min(replicas),
    }
}

/// The value a metric answers on fallback: what makes the HPA compute exactly `replicas`.
/// AverageValue: target times replicas (the HPA divides by the replica count). Value: target
/// times replicas over the current count (the HPA multiplies the current count by value over
/// target), as KEDA does with the ready pods; at 0 replicas, as for 1.
pub fn fallback_value(
    target: f64,
    target_type: MetricTargetType,
    replicas: i32,
    current: i32,
) -> f64 {
    let total = target * f64::from(replicas.max(0));
    match target_type {
        MetricTargetType::Value => total / f64::from(current.max(1)),
        _ => total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fallback(threshold: i32) -> Fallback {
        Fallback {
            failure_threshold: threshold,
            replicas: 6,
            behavior: None,
        }
    }

    #[test]
    fn failures_count_up_and_reset_on_success() {
        assert_eq!(next_failures(0, false), 1);
        assert_eq!(next_failures(4, false), 5);
        assert_eq!(next_failures(4, true), 0);
        assert_eq!(next_failures(i32::MAX, false), i32::MAX);
    }

    #[test]
    fn fallback_starts_past_the_threshold() {
        let f = fallback(3);
        assert!(!in_fallback(Some(&f), 3));
        assert!(in_fallback(Some(&f), 4));
        assert!(!in_fallback(None, 1000), "no fallback configured");
        assert!(in_fallback(Some(&fallback(0)), 1));
    }

    #[test]
    fn each_behavior_chooses_its_replicas() {
        use FallbackBehavior::*;
        let cases = [
            (Static, 6, 2, 6),
            (Static, 6, 9, 6),
            (CurrentReplicas, 6, 2, 2),
            (CurrentReplicasIfHigher, 6, 2, 6),
            (CurrentReplicasIfHigher, 6, 9, 9),
            (CurrentReplicasIfLower, 6, 2, 2),
            (CurrentReplicasIfLower, 6, 9, 6),
        ];
        for (behavior, replicas, current, want) in cases {
            assert_eq!(
                fallback_replicas(behavior, replicas, current),
                want,
                "{behavior:?} replicas={replicas} current={current}"
            );
        }
    }

    #[test]
    fn the_value_makes_the_hpa_compute_the_fallback_count() {
        let average = MetricTargetType::AverageValue;
        assert_eq!(fallback_value(5.0, average, 6, 2), 30.0);
        assert_eq!(fallback_value(2.5, average, 0, 2), 0.0);
        assert_eq!(fallback_value(2.5, average, -3, 2), 0.0);
        // Value: the HPA computes current * value / target = 3 * 10 / 5 = 6 replicas.
        let value = MetricTargetType::Value;
        assert_eq!(fallback_value(5.0, value, 6, 3), 10.0);
        assert_eq!(fallback_value(5.0, value, 6, 0), 30.0);
    }
}
