//! How many Jobs a ScaledJob's poll creates: pure functions over the triggers' readings and the
//! Jobs that exist, as KEDA's ScaledJob executor decides (KEDA 2.20).
//!
//! A poll reads every trigger's External metrics. Per trigger, the **queue length** is the sum
//! of its metric values and its **max value** is `queue length / target` (the average of its
//! AverageValue targets), capped at `maxReplicaCount` ([`trigger_reading`]). The triggers are
//! combined by `multipleScalersCalculation` into one queue length and one max value
//! ([`combine`]). The scaling strategy then turns them, with the running and pending Jobs, into
//! the number of Jobs to create ([`decide`]).
//!
//! `max_replicas` below is always KEDA's `MaxReplicaCount()` ([`slots`]): `maxReplicaCount`
//! less `minReplicaCount` when `maxReplicaCount` is set, else 100.

/// KEDA's `MaxReplicaCount()` of a ScaledJob: the Jobs the strategies may reach beyond the
/// minimum.
pub fn slots(min_replicas: i64, max_replicas: Option<i64>) -> i64 {
    match max_replicas {
        Some(max) => max - min_replicas,
        None => 100,
    }
}

/// KEDA's `MinReplicaCount()` and `MaxReplicaCount()` of a ScaledJob from its spec: the Jobs
/// kept running, and the [`slots`] beyond them. A minimum above the maximum is read as the
/// maximum, and then both are the maximum, as in KEDA.
pub fn bounds(min_replicas: Option<i32>, max_replicas: Option<i32>) -> (i64, i64) {
    let min = i64::from(min_replicas.unwrap_or(0).max(0));
    match max_replicas.map(i64::from) {
        Some(max) if min > max => (max, max),
        Some(max) => (min, slots(min, Some(max))),
        None => (min, slots(min, None)),
    }
}

/// One trigger's share of a poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TriggerReading {
    /// The sum of the trigger's metric values.
    pub queue_length: f64,
    /// Jobs the trigger asks for: queue length over target, capped at `maxReplicaCount`.
    pub max_value: f64,
    /// Whether the trigger is past its activation threshold.
    pub active: bool,
}

/// A trigger's reading from its metric `values` and its AverageValue `targets` (a trigger
/// without one asks for no Jobs, as in KEDA).
pub fn trigger_reading(
    values: &[f64],
    targets: &[f64],
    active: bool,
    max_replicas: i64,
) -> TriggerReading {
    let queue_length: f64 = values.iter().sum();
    let target = if targets.is_empty() {
        0.0
    } else {
        targets.iter().sum::<f64>() / targets.len() as f64
    };
    let max_value = if target > 0.0 {
        (queue_length / target).min(max_replicas as f64)
    } else {
        0.0
    };
    TriggerReading {
        queue_length,
        max_value,
        active,
    }
}

/// `multipleScalersCalculation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Calculation {
    /// The active trigger with the longest queue (the default).
    #[default]
    Max,
    /// The active trigger with the shortest queue.
    Min,
    /// The average over the active triggers.
    Avg,
    /// The sum over the active triggers.
    Sum,
}

impl Calculation {
    /// The calculation named `text` (KEDA's names; empty is `max`), or None.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "" | "max" => Some(Calculation::Max),
            "min" => Some(Calculation::Min),
            "avg" => Some(Calculation::Avg),
            "sum" => Some(Calculation::Sum),
            _ => None,
        }
    }
}

/// The triggers combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Combined {
    /// Whether the ScaledJob is active (some trigger is, or `minReplicaCount` is above 0).
    pub active: bool,
    /// The combined queue length.
    pub queue_length: f64,
    /// The combined Jobs asked for, capped at `maxReplicaCount`.
    pub max_value: f64,
}

/// Combines the triggers' readings; only active triggers count.
pub fn combine(
    readings: &[TriggerReading],
    calculation: Calculation,
    min_replicas: i64,
    max_replicas: i64,
) -> Combined {
    // KEDA's loops, kept as they are: under `max` an active trigger with an empty queue does
    // not make the ScaledJob active; under `min` an empty queue is replaced by the next one.
    let (mut queue_length, mut max_value, mut active) = (0.0, 0.0, false);
    match calculation {
        Calculation::Max => {
            for r in readings.iter().filter(|r| r.active) {
                if r.queue_length > queue_length {
                    (queue_length, max_value, active) = (r.queue_length, r.max_value, true);
                }
            }
        }
        Calculation::Min => {
            for r in readings.iter().filter(|r| r.active) {
                if queue_length == 0.0 || r.queue_length < queue_length {
                    (queue_length, max_value, active) = (r.queue_length, r.max_value, true);
                }
            }
        }
        Calculation::Avg | Calculation::Sum => {
            let on: Vec<&TriggerReading> = readings.iter().filter(|r| r.active).collect();
            if !on.is_empty() {
                active = true;
                queue_length = on.iter().map(|r| r.queue_length).sum();
                max_value = on.iter().map(|r| r.max_value).sum();
                if calculation == Calculation::Avg {
                    queue_length /= on.len() as f64;
                    max_value /= on.len() as f64;
                }
            }
        }
    }
    Combined {
        active: active || min_replicas > 0,
        queue_length,
        max_value: max_value.min(max_replicas as f64),
    }
}

/// `scalingStrategy.strategy`, with the `custom` strategy's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Strategy {
    /// New Jobs: the Jobs asked for, less the running ones.
    #[default]
    Default,
    /// The Jobs asked for, less a fixed deduction and a share of the running Jobs, capped at
    /// `maxReplicaCount`.
    Custom {
        /// `customScalingQueueLengthDeduction`.
        queue_length_deduction: i64,
        /// `customScalingRunningJobPercentage`.
        running_job_percentage: f64,
    },
    /// For sources whose queue length leaves out the items running Jobs hold: the Jobs asked
    /// for less the pending ones, or what is left under `maxReplicaCount`.
    Accurate,
    /// Every slot up to `maxReplicaCount` that neither a running nor a pending Job fills, as far
    /// as the queue asks.
    Eager,
}

/// The Jobs that exist, as a poll counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Existing {
    /// Jobs not yet finished (neither Complete nor Failed).
    pub running: i64,
    /// Running Jobs whose pods are not yet running (see `pendingPodConditions`).
    pub pending: i64,
}

/// One poll's decision, with the figures it came from (for `ebb explain` and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The queue length, rounded up: the most Jobs the poll would create.
    pub scale_to: i64,
    /// Jobs asked for by the triggers, rounded up and capped at `maxReplicaCount`.
    pub max_scale: i64,
    /// What the strategy allows on top of the running Jobs.
    pub effective_max_scale: i64,
    /// Jobs to create now (0 when inactive).
    pub create: i64,
}

/// The Jobs to create at this poll.
///
/// Below `minReplicaCount` running Jobs, exactly the missing ones are created, whatever the
/// triggers say. Otherwise the strategy decides from the Jobs asked for (`max_scale`), the
/// running Jobs beyond the minimum and the pending ones; the count is capped by the queue
/// length (`scale_to`) except with `eager`, which fills up to `maxReplicaCount`.
pub fn decide(
    combined: Combined,
    strategy: Strategy,
    existing: Existing,
    min_replicas: i64,
    max_replicas: i64,
) -> Decision {
    let scale_to = combined.queue_length.ceil() as i64;
    let max_scale = combined.max_value.ceil() as i64;
    let (effective, scale_to) = if existing.running < min_replicas {
        let missing = min_replicas - existing.running;
        (missing, missing)
    } else {
        let running = existing.running - min_replicas;
        match strategy {
            Strategy::Default => (max_scale - running, scale_to),
            Strategy::Custom {
                queue_length_deduction,
                running_job_percentage,
            } => (
                (max_scale
                    - queue_length_deduction
                    - (running as f64 * running_job_percentage) as i64)
                    .min(max_replicas),
                scale_to,
            ),
            Strategy::Accurate => {
                if max_scale + running > max_replicas {
                    (max_replicas - running, scale_to)
                } else {
                    (max_scale - existing.pending, scale_to)
                }
            }
            Strategy::Eager => (
                (max_replicas - running - existing.pending).min(max_scale),
                max_replicas,
            ),
        }
    };
    let effective = effective.max(0);
    let create = if combined.active {
        scale_to.min(effective).max(0)
    } else {
        0
    };
    Decision {
        scale_to,
        max_scale,
        effective_max_scale: effective,
        create,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_read_min_and_max_as_keda_does() {
        assert_eq!(bounds(None, None), (0, 100));
        assert_eq!(bounds(Some(2), None), (2, 100));
        assert_eq!(bounds(Some(2), Some(10)), (2, 8));
        assert_eq!(bounds(None, Some(4)), (0, 4));
        assert_eq!(bounds(Some(5), Some(3)), (3, 3));
    }

    fn combined(queue_length: f64, max_value: f64) -> Combined {
        Combined {
            active: true,
            queue_length,
            max_value,
        }
    }

    fn existing(running: i64, pending: i64) -> Existing {
        Existing { running, pending }
    }

    #[test]
    fn a_trigger_asks_for_its_queue_over_its_target_capped_at_the_maximum() {
        // 10 items, 1 per Job, at most 4 Jobs.
        assert_eq!(
            trigger_reading(&[10.0], &[1.0], true, 4),
            TriggerReading {
                queue_length: 10.0,
                max_value: 4.0,
                active: true
            }
        );
        // 7 items, 2 per Job: 3.5, rounded up by the decision.
        assert_eq!(trigger_reading(&[7.0], &[2.0], true, 100).max_value, 3.5);
        // Two metrics: their values add up, their targets average.
        assert_eq!(
            trigger_reading(&[3.0, 5.0], &[1.0, 3.0], true, 100).max_value,
            4.0
        );
        // No AverageValue target (metricType Value): no Jobs, as in KEDA.
        assert_eq!(trigger_reading(&[9.0], &[], true, 100).max_value, 0.0);
    }

    #[test]
    fn triggers_combine_by_multiple_scalers_calculation_over_active_ones_only() {
        let r = |q: f64, m: f64, active: bool| TriggerReading {
            queue_length: q,
            max_value: m,
            active,
        };
        let readings = [r(4.0, 4.0, true), r(10.0, 5.0, true), r(50.0, 50.0, false)];
        // (calculation, queue length, max value)
        let rows = [
            (Calculation::Max, 10.0, 5.0),
            (Calculation::Min, 4.0, 4.0),
            (Calculation::Avg, 7.0, 4.5),
            (Calculation::Sum, 14.0, 9.0),
        ];
        for (calculation, queue_length, max_value) in rows {
            assert_eq!(
                combine(&readings, calculation, 0, 100),
                Combined {
                    active: true,
                    queue_length,
                    max_value
                },
                "{calculation:?}"
            );
        }
        // The sum is capped at maxReplicaCount.
        assert_eq!(combine(&readings, Calculation::Sum, 0, 6).max_value, 6.0);
        // KEDA's loops: under max, an active trigger with an empty queue activates nothing;
        // under min, the empty queue gives way to the next active one.
        let empty_and_three = [r(0.0, 0.0, true), r(3.0, 3.0, true)];
        assert!(!combine(&[r(0.0, 0.0, true)], Calculation::Max, 0, 10).active);
        assert_eq!(
            combine(&empty_and_three, Calculation::Min, 0, 10).queue_length,
            3.0
        );
        // Nothing active: inactive and nothing asked, unless minReplicaCount keeps it active.
        let idle = [r(3.0, 3.0, false)];
        assert_eq!(
            combine(&idle, Calculation::Max, 0, 10),
            Combined {
                active: false,
                queue_length: 0.0,
                max_value: 0.0
            }
        );
        assert!(combine(&idle, Calculation::Max, 2, 10).active);
        assert_eq!(Calculation::parse(""), Some(Calculation::Max));
        assert_eq!(Calculation::parse("median"), None);
    }

    /// KEDA's own cases for each strategy (its executor's unit tests): Jobs asked (maxScale),
    /// running Jobs beyond the minimum, pending Jobs and `MaxReplicaCount()`, with a queue
    /// length of 1, give what the strategy allows (`effective`) and what is created.
    #[test]
    fn each_strategy_gives_what_keda_s_own_cases_say() {
        let custom = |deduction, percentage| Strategy::Custom {
            queue_length_deduction: deduction,
            running_job_percentage: percentage,
        };
        // (strategy, asked, running, pending, slots, effective, created)
        let rows = [
            (Strategy::Default, 3.0, 2, 0, 5, 1, 1),
            (Strategy::Default, 2.0, 0, 0, 5, 2, 1),
            (custom(1, 0.5), 3.0, 2, 0, 5, 1, 1),
            (custom(1, 0.5), 10.0, 0, 0, 10, 9, 1),
            (custom(2, 0.0), 3.0, 2, 0, 5, 1, 1),
            (custom(-2, 0.0), 3.0, 2, 0, 4, 4, 1),
            (Strategy::Accurate, 3.0, 2, 0, 5, 3, 1),
            (Strategy::Accurate, 5.0, 2, 0, 5, 3, 1),
            (Strategy::Accurate, 3.0, 4, 2, 10, 1, 1),
            (Strategy::Accurate, 5.0, 4, 2, 5, 1, 1),
            // eager creates all it allows, whatever the queue length.
            (Strategy::Eager, 4.0, 3, 0, 10, 4, 4),
            (Strategy::Eager, 4.0, 0, 3, 10, 4, 4),
            (Strategy::Eager, 4.0, 7, 0, 10, 3, 3),
            (Strategy::Eager, 4.0, 1, 6, 10, 3, 3),
            (Strategy::Eager, 15.0, 0, 0, 10, 10, 10),
        ];
        for (strategy, asked, running, pending, slots, effective, created) in rows {
            let d = decide(
                combined(1.0, asked),
                strategy,
                existing(running, pending),
                0,
                slots,
            );
            assert_eq!(
                (d.effective_max_scale, d.create),
                (effective, created),
                "{strategy:?} asked {asked} running {running} pending {pending} slots {slots}"
            );
        }
    }

    /// The examples of KEDA's ScaledJob specification (default strategy, minReplicaCount 0):
    /// queue length, maxReplicaCount, target and running Jobs give the Jobs created.
    #[test]
    fn keda_s_documented_max_replica_count_examples() {
        let rows = [
            (10.0, 3, 1.0, 0, 3),
            (10.0, 3, 2.0, 0, 3),
            (10.0, 3, 1.0, 1, 2),
            (10.0, 100, 1.0, 0, 10),
            (4.0, 3, 5.0, 0, 1),
        ];
        for (queue, max, target, running, created) in rows {
            let slots = slots(0, Some(max));
            let reading = trigger_reading(&[queue], &[target], true, slots);
            let combined = combine(&[reading], Calculation::Max, 0, slots);
            let d = decide(combined, Strategy::Default, existing(running, 0), 0, slots);
            assert_eq!(
                d.create, created,
                "queue {queue} max {max} target {target} running {running}"
            );
        }
        // minReplicaCount 2 with 2 Jobs running and 3 new messages: another 3 Jobs.
        let slots = slots(2, Some(100));
        let reading = trigger_reading(&[3.0], &[1.0], true, slots);
        let d = decide(
            combine(&[reading], Calculation::Max, 2, slots),
            Strategy::Default,
            existing(2, 0),
            2,
            slots,
        );
        assert_eq!(d.create, 3);
        assert_eq!(
            super::slots(2, None),
            100,
            "no maxReplicaCount: 100, the minimum not taken off"
        );
    }

    #[test]
    fn eager_fills_free_slots_where_default_waits_for_running_jobs() {
        // 3 long Jobs run and hold 3 items each poll; 3 more items arrive: the queue shows 3.
        let d = |s| decide(combined(3.0, 3.0), s, existing(3, 0), 0, 10).create;
        assert_eq!(d(Strategy::Default), 0, "default: 3 asked, 3 running");
        assert_eq!(d(Strategy::Eager), 3, "eager: 7 free slots, 3 asked");
    }

    #[test]
    fn min_replica_count_jobs_are_kept_whatever_the_triggers_say() {
        let idle = Combined {
            active: true, // minReplicaCount > 0 keeps a ScaledJob active
            queue_length: 0.0,
            max_value: 0.0,
        };
        let d = decide(idle, Strategy::Default, existing(1, 0), 3, 10);
        assert_eq!((d.scale_to, d.effective_max_scale, d.create), (2, 2, 2));
        // KEDA's cases: min 2 (max 100) with 0 and 1 running; min 1 with 1 running and 2 asked.
        let none = Combined {
            active: true,
            queue_length: 0.0,
            max_value: 0.0,
        };
        for (running, scale_to, effective) in [(0, 2, 2), (1, 1, 1)] {
            let d = decide(
                none,
                Strategy::Default,
                existing(running, 0),
                2,
                slots(2, Some(100)),
            );
            assert_eq!((d.scale_to, d.effective_max_scale), (scale_to, effective));
        }
        let d = decide(
            combined(2.0, 2.0),
            Strategy::Default,
            existing(1, 0),
            1,
            slots(1, Some(100)),
        );
        assert_eq!((d.scale_to, d.effective_max_scale, d.create), (2, 2, 2));
        // At the minimum, the strategy counts only the Jobs beyond it.
        let d = decide(combined(5.0, 5.0), Strategy::Default, existing(3, 0), 3, 10);
        assert_eq!(d.create, 5);
    }

    #[test]
    fn an_inactive_or_failing_poll_creates_nothing() {
        let inactive = Combined {
            active: false,
            queue_length: 0.0,
            max_value: 0.0,
        };
        for strategy in [Strategy::Default, Strategy::Accurate, Strategy::Eager] {
            assert_eq!(
                decide(inactive, strategy, existing(0, 0), 0, 10).create,
                0,
                "{strategy:?}"
            );
        }
        // Rounding: 2.5 items ask for 3 Jobs.
        assert_eq!(
            decide(combined(2.5, 2.5), Strategy::Default, existing(0, 0), 0, 10).create,
            3
        );
    }
}
