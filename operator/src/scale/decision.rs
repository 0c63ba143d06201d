//! What one poll decides: a pure function of the ScaledObject's settings, the target's replica
//! count, the triggers' outcomes and the clock. No I/O here, so every row of the table in
//! `docs/architecture.md` is a unit test.
//!
//! ebb only moves a target between its resting count (0 or `idleReplicaCount`) and
//! `minReplicaCount`; the HPA owns everything above.

use jiff::{SignedDuration, Timestamp};

/// What one trigger's poll came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerOutcome {
    /// Read, and above its activation threshold (or answering its fallback value).
    Active,
    /// Read, and at or below its activation threshold.
    Inactive,
    /// Could not be read, and no fallback answers for it.
    Failed,
    /// Not polled by ebb: a cpu or memory trigger, read by the HPA from the metrics server.
    NotPolled,
}

/// The ScaledObject's activity at one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// At least one trigger is active, activation is forced, or every trigger is cpu/memory.
    Active,
    /// Every polled trigger answered and none is active.
    Inactive,
    /// No trigger is active and at least one failed: the state is unknown.
    Unknown,
}

/// Combines the triggers' outcomes.
///
/// An object whose triggers are all cpu/memory counts as active: Resource metrics cannot be read
/// at zero pods, so such an object is never scaled to zero by ebb. A failure outweighs
/// inactivity (an error never reads as "nothing to do") but not activity.
pub fn activity(outcomes: &[TriggerOutcome], force_activation: bool) -> Activity {
    let any = |o: TriggerOutcome| outcomes.contains(&o);
    if force_activation || any(TriggerOutcome::Active) {
        Activity::Active
    } else if any(TriggerOutcome::Failed) {
        Activity::Unknown
    } else if !outcomes.is_empty() && outcomes.iter().all(|o| *o == TriggerOutcome::NotPolled) {
        Activity::Active
    } else {
        Activity::Inactive
    }
}

/// The ScaledObject's settings that the decision reads, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `minReplicaCount`.
    pub min_replicas: i32,
    /// `idleReplicaCount`, if set (validated to be below `minReplicaCount`).
    pub idle_replicas: Option<i32>,
    /// `cooldownPeriod`.
    pub cooldown: SignedDuration,
    /// `initialCooldownPeriod`: how long after creation a never-active object is left alone.
    pub initial_cooldown: SignedDuration,
    /// `autoscaling.keda.sh/paused-scale-in`: no step down.
    pub paused_scale_in: bool,
    /// `autoscaling.keda.sh/paused-scale-out`: no step up.
    pub paused_scale_out: bool,
}

/// What the poll observed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The target's replica count (from its `/scale`).
    pub current_replicas: i32,
    /// The combined activity.
    pub activity: Activity,
    /// `status.lastActiveTime`.
    pub last_active: Option<Timestamp>,
    /// The ScaledObject's creation time.
    pub created: Timestamp,
    /// Now.
    pub now: Timestamp,
}

/// A direction of scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Up.
    Out,
    /// Down.
    In,
}

/// What the poll decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Active at the resting count: scale up to `to` (`KEDAScaleTargetActivated`).
    Activate {
        /// `max(minReplicaCount, 1)`.
        to: i32,
    },
    /// Active above the resting count: the HPA owns the count.
    StayActive,
    /// Activity unknown because a trigger failed: hold the count whatever it is.
    HoldOnError,
    /// Inactive above the resting count, waiting for the cooldown to end.
    CoolingDown {
        /// When the cooldown ends.
        until: Timestamp,
    },
    /// Inactive past the cooldown: scale down to the resting count
    /// (`KEDAScaleTargetDeactivated`).
    Deactivate {
        /// `idleReplicaCount`, else 0.
        to: i32,
    },
    /// Inactive below `minReplicaCount` (and no idle count): raise to it.
    RaiseToMin {
        /// `minReplicaCount`.
        to: i32,
    },
    /// A step was due but its direction is paused by annotation.
    Withheld {
        /// The count the step would have written.
        to: i32,
        /// The paused direction.
        direction: Direction,
    },
    /// Inactive at the resting count (or above `minReplicaCount` with a non-zero minimum, which
    /// the HPA owns): nothing to do.
    Rest,
}

impl Decision {
    /// The replica count to write to the target's `/scale`, if any.
    pub fn write(&self) -> Option<i32> {
        match *self {
            Decision::Activate { to }
            | Decision::Deactivate { to }
            | Decision::RaiseToMin { to } => Some(to),
            _ => None,
        }
    }

    /// Whether `status.lastActiveTime` moves to now.
    pub fn marks_active(&self) -> bool {
        matches!(
            self,
            Decision::Activate { .. }
                | Decision::StayActive
                | Decision::Withheld {
                    direction: Direction::Out,
                    ..
                }
        )
    }
}

/// Decides one poll.
pub fn decide(settings: &Settings, observed: &Observation) -> Decision {
    let current = observed.current_replicas;
    let min = settings.min_replicas;
    let idle = settings.idle_replicas;
    let step = |to: i32, direction: Direction, decision: Decision| {
        let paused = match direction {
            Direction::Out => settings.paused_scale_out,
            Direction::In => settings.paused_scale_in,
        };
        if paused {
            Decision::Withheld { to, direction }
        } else {
            decision
        }
    };

    match observed.activity {
        Activity::Active => {
            let to = min.max(1);
            let resting = current == 0 || (idle.is_some() && current < min);
            if resting && current < to {
                step(to, Direction::Out, Decision::Activate { to })
            } else {
                Decision::StayActive
            }
        }
        Activity::Unknown => Decision::HoldOnError,
        Activity::Inactive => {
            let above_rest = match idle {
                Some(idle) => current > idle,
                None => min == 0 && current > 0,
            };
            if above_rest {
                let until = match observed.last_active {
                    Some(last) => last.saturating_add(settings.cooldown),
                    None => observed.created.saturating_add(settings.initial_cooldown),
                };
                let until = until.unwrap_or(Timestamp::MAX);
                if observed.now >= until {
                    let to = idle.unwrap_or(0);
                    step(to, Direction::In, Decision::Deactivate { to })
                } else {
                    Decision::CoolingDown { until }
                }
            } else if idle.is_none() && current < min {
                step(min, Direction::Out, Decision::RaiseToMin { to: min })
            } else {
                Decision::Rest
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use TriggerOutcome::{Active as A, Failed as F, Inactive as I, NotPolled as N};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn settings(min: i32, idle: Option<i32>) -> Settings {
        Settings {
            min_replicas: min,
            idle_replicas: idle,
            cooldown: SignedDuration::from_secs(300),
            initial_cooldown: SignedDuration::from_secs(0),
            paused_scale_in: false,
            paused_scale_out: false,
        }
    }

    fn observe(
        current: i32,
        activity: Activity,
        last_active: Option<i64>,
        now: i64,
    ) -> Observation {
        Observation {
            current_replicas: current,
            activity,
            last_active: last_active.map(at),
            created: at(0),
            now: at(now),
        }
    }

    #[test]
    fn activity_combines_outcomes() {
        let cases: &[(&[TriggerOutcome], bool, Activity)] = &[
            (&[A], false, Activity::Active),
            (&[I, A], false, Activity::Active),
            (&[F, A], false, Activity::Active),
            (&[I], false, Activity::Inactive),
            (&[I, F], false, Activity::Unknown),
            (&[F], false, Activity::Unknown),
            (&[N], false, Activity::Active),
            (&[N, N], false, Activity::Active),
            (&[N, I], false, Activity::Inactive),
            (&[N, F], false, Activity::Unknown),
            (&[I, F], true, Activity::Active),
            (&[], false, Activity::Inactive),
            (&[], true, Activity::Active),
        ];
        for (outcomes, force, want) in cases {
            assert_eq!(
                activity(outcomes, *force),
                *want,
                "{outcomes:?} force={force}"
            );
        }
    }

    #[test]
    fn the_decision_table() {
        use Activity::{Active as On, Inactive as Off, Unknown};
        // (what, settings, observation, decision)
        let cases: Vec<(&str, Settings, Observation, Decision)> = vec![
            (
                "active at zero scales to 1 when min is 0",
                settings(0, None),
                observe(0, On, None, 10),
                Decision::Activate { to: 1 },
            ),
            (
                "active at zero scales to min",
                settings(3, None),
                observe(0, On, None, 10),
                Decision::Activate { to: 3 },
            ),
            (
                "active at the idle count scales to min",
                settings(2, Some(0)),
                observe(0, On, None, 10),
                Decision::Activate { to: 2 },
            ),
            (
                "active below min with an idle count scales to min",
                settings(4, Some(1)),
                observe(1, On, None, 10),
                Decision::Activate { to: 4 },
            ),
            (
                "active above zero: the HPA owns the count",
                settings(0, None),
                observe(5, On, Some(0), 10),
                Decision::StayActive,
            ),
            (
                "active below min without an idle count: the HPA raises it",
                settings(3, None),
                observe(1, On, None, 10),
                Decision::StayActive,
            ),
            (
                "a failed trigger holds the count at any size",
                settings(0, None),
                observe(3, Unknown, Some(0), 10_000),
                Decision::HoldOnError,
            ),
            (
                "a failed trigger never scales up from zero either",
                settings(0, None),
                observe(0, Unknown, None, 10),
                Decision::HoldOnError,
            ),
            (
                "inactive within the cooldown waits",
                settings(0, None),
                observe(2, Off, Some(100), 399),
                Decision::CoolingDown { until: at(400) },
            ),
            (
                "inactive when the cooldown has passed scales to zero",
                settings(0, None),
                observe(2, Off, Some(100), 400),
                Decision::Deactivate { to: 0 },
            ),
            (
                "inactive past the cooldown with an idle count scales to idle",
                settings(3, Some(0)),
                observe(5, Off, Some(100), 1000),
                Decision::Deactivate { to: 0 },
            ),
            (
                "inactive with an idle count of 1",
                settings(3, Some(1)),
                observe(3, Off, Some(100), 1000),
                Decision::Deactivate { to: 1 },
            ),
            (
                "never active: the initial cooldown (0) counts from creation",
                settings(0, None),
                observe(2, Off, None, 1),
                Decision::Deactivate { to: 0 },
            ),
            (
                "inactive at zero rests",
                settings(0, None),
                observe(0, Off, Some(0), 10_000),
                Decision::Rest,
            ),
            (
                "inactive at the idle count rests",
                settings(2, Some(0)),
                observe(0, Off, Some(0), 10_000),
                Decision::Rest,
            ),
            (
                "inactive with min >= 1 and no idle count: the HPA owns the count",
                settings(2, None),
                observe(5, Off, Some(0), 10_000),
                Decision::Rest,
            ),
            (
                "inactive below min without an idle count is raised to min",
                settings(2, None),
                observe(0, Off, None, 10),
                Decision::RaiseToMin { to: 2 },
            ),
            (
                "inactive at min rests",
                settings(2, None),
                observe(2, Off, None, 10),
                Decision::Rest,
            ),
        ];
        for (what, settings, observed, want) in cases {
            assert_eq!(decide(&settings, &observed), want, "{what}");
        }
    }

    #[test]
    fn initial_cooldown_protects_a_new_object_that_was_never_active() {
        let mut s = settings(0, None);
        s.initial_cooldown = SignedDuration::from_secs(120);
        assert_eq!(
            decide(&s, &observe(3, Activity::Inactive, None, 119)),
            Decision::CoolingDown { until: at(120) }
        );
        assert_eq!(
            decide(&s, &observe(3, Activity::Inactive, None, 120)),
            Decision::Deactivate { to: 0 }
        );
        // Once it has been active, the ordinary cooldown applies.
        assert_eq!(
            decide(&s, &observe(3, Activity::Inactive, Some(50), 120)),
            Decision::CoolingDown { until: at(350) }
        );
    }

    #[test]
    fn paused_directions_withhold_only_their_steps() {
        let mut s = settings(2, None);
        s.paused_scale_out = true;
        assert_eq!(
            decide(&s, &observe(0, Activity::Active, None, 10)),
            Decision::Withheld {
                to: 2,
                direction: Direction::Out
            }
        );
        assert_eq!(
            decide(&s, &observe(0, Activity::Inactive, None, 10)),
            Decision::Withheld {
                to: 2,
                direction: Direction::Out
            }
        );

        let mut s = settings(0, None);
        s.paused_scale_in = true;
        assert_eq!(
            decide(&s, &observe(4, Activity::Inactive, Some(0), 1000)),
            Decision::Withheld {
                to: 0,
                direction: Direction::In
            }
        );
        assert_eq!(
            decide(&s, &observe(0, Activity::Active, None, 10)),
            Decision::Activate { to: 1 },
            "scale-out is not paused"
        );
    }

    #[test]
    fn writes_and_last_active() {
        let cases = [
            (Decision::Activate { to: 2 }, Some(2), true),
            (Decision::StayActive, None, true),
            (Decision::HoldOnError, None, false),
            (Decision::CoolingDown { until: at(1) }, None, false),
            (Decision::Deactivate { to: 0 }, Some(0), false),
            (Decision::RaiseToMin { to: 3 }, Some(3), false),
            (
                Decision::Withheld {
                    to: 1,
                    direction: Direction::Out,
                },
                None,
                true,
            ),
            (
                Decision::Withheld {
                    to: 0,
                    direction: Direction::In,
                },
                None,
                false,
            ),
            (Decision::Rest, None, false),
        ];
        for (decision, write, marks) in cases {
            assert_eq!(
                (decision.write(), decision.marks_active()),
                (write, marks),
                "{decision:?}"
            );
        }
    }

    #[test]
    fn a_cooldown_beyond_the_end_of_time_never_ends() {
        let mut s = settings(0, None);
        s.cooldown = SignedDuration::MAX;
        assert_eq!(
            decide(&s, &observe(1, Activity::Inactive, Some(0), 10)),
            Decision::CoolingDown {
                until: Timestamp::MAX
            }
        );
    }
}
