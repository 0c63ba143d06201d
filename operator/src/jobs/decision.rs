//! How many Jobs a ScaledJob's poll creates: pure functions over the triggers' readings and the
//! Jobs that exist, as KEDA's ScaledJob executor decides (KEDA 2.20).
//!
//! A poll reads every trigger's External metrics. Per trigger, the **queue length** is the sum
//! of its metric values and its **max value** is `queue length / target` (the average of its
//! AverageValue targets), capped at `maxReplicaCount` ([`trigger_reading`]). The triggers are
//! combined by `multipleScalersCalculation` into one queue length and one max value
//! ([`combine`]). The scaling strategy then turns them, with the running and pending Jobs, into
//! the number of Jobs to create ([`decide`]).

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
    let active: Vec<&TriggerReading> = readings.iter().filter(|r| r.active).collect();
    let (queue_length, max_value) = match calculation {
        Calculation::Max => active
            .iter()
            .fold(None::<&TriggerReading>, |best, r| match best {
                Some(b) if b.queue_length >= r.queue_length => Some(b),
                _ => Some(r),
            })
            .map_or((0.0, 0.0), |r| (r.queue_length, r.max_value)),
        Calculation::Min => active
            .iter()
            .fold(None::<&TriggerReading>, |best, r| match best {
                Some(b) if b.queue_length <= r.queue_length => Some(b),
                _ => Some(r),
            })
            .map_or((0.0, 0.0), |r| (r.queue_length, r.max_value)),
        Calculation::Avg if active.is_empty() => (0.0, 0.0),
        Calculation::Avg => (
            active.iter().map(|r| r.queue_length).sum::<f64>() / active.len() as f64,
            active.iter().map(|r| r.max_value).sum::<f64>() / active.len() as f64,
        ),
        Calculation::Sum => (
            active.iter().map(|r| r.queue_length).sum(),
            active.iter().map(|r| r.max_value).sum(),
        ),
    };
    Combined {
        active: !active.is_empty() || min_replicas > 0,
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

    /// Each strategy's formula, as KEDA's ScaledJob specification states it, on the same
    /// situations: maxReplicaCount 10, minReplicaCount 0.
    #[test]
    fn each_strategy_creates_what_its_formula_says() {
        let custom = Strategy::Custom {
            queue_length_deduction: 1,
            running_job_percentage: 0.5,
        };
        // (strategy, queue length, Jobs asked, running, pending, effective max, created)
        let rows = [
            // default: asked - running, at most the queue length.
            (Strategy::Default, 10.0, 10.0, 0, 0, 10, 10),
            (Strategy::Default, 10.0, 10.0, 4, 0, 6, 6),
            (Strategy::Default, 3.0, 3.0, 3, 3, 0, 0),
            (Strategy::Default, 3.0, 3.0, 5, 0, 0, 0),
            // custom: min(asked - deduction - running * percentage, max).
            (custom, 10.0, 10.0, 4, 0, 7, 7),
            (custom, 10.0, 10.0, 0, 0, 9, 9),
            (custom, 2.0, 2.0, 6, 0, 0, 0),
            // accurate: asked + running over the maximum -> max - running; else asked - pending.
            (Strategy::Accurate, 8.0, 8.0, 4, 1, 6, 6),
            (Strategy::Accurate, 5.0, 5.0, 4, 1, 4, 4),
            (Strategy::Accurate, 5.0, 5.0, 2, 2, 3, 3),
            // eager: min(max - running - pending, asked), filling up to the maximum.
            (Strategy::Eager, 3.0, 3.0, 3, 0, 3, 3),
            (Strategy::Eager, 10.0, 10.0, 6, 2, 2, 2),
            (Strategy::Eager, 4.0, 4.0, 0, 0, 4, 4),
        ];
        for (strategy, queue, asked, running, pending, effective, create) in rows {
            let d = decide(
                combined(queue, asked),
                strategy,
                existing(running, pending),
                0,
                10,
            );
            assert_eq!(
                (d.effective_max_scale, d.create),
                (effective, create),
                "{strategy:?} queue {queue} asked {asked} running {running} pending {pending}"
            );
        }
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
