//! When a ScaledObject's polls happen.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// A ScaledObject's `pollingInterval` (default 30 s, at least 1 s).
pub fn polling_interval(spec: &ebb_crds::ScaledObjectSpec) -> Duration {
    Duration::from_secs(u64::try_from(spec.polling_interval_seconds().max(1)).unwrap_or(30))
}

/// Delay before a ScaledObject's first poll: a fraction of its polling interval derived from its
/// uid. Objects created together (or found together when ebb starts) spread over the interval
/// instead of polling their brokers at once, and a restart keeps each object's phase.
pub fn first_poll_delay(uid: &str, interval: Duration) -> Duration {
    let hash = crate::digest::fnv1a(uid.as_bytes());
    let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(hash % millis)
}

/// A new loop polls first within this long of its start (at a point derived from its uid), not
/// at its phase, which may be up to a pollingInterval away: after ebb starts, 10,000 objects
/// at 30 s are all polled as soon as their loops run, and the loops' start is itself spread by
/// the controller's pace. KEDA polls at once when a loop starts.
pub const FIRST_POLL_SPREAD: Duration = Duration::from_secs(5);

/// Delay before a new loop's first poll (see [`FIRST_POLL_SPREAD`]); with a pollingInterval of
/// 5 s or less, the same as [`first_poll_delay`], and the first poll is the phase's.
pub fn early_poll_delay(uid: &str, interval: Duration) -> Duration {
    first_poll_delay(uid, interval.min(FIRST_POLL_SPREAD))
}

/// Whether the poll due at `tick` on the loop's phase is left out because an early first poll
/// at `early` came less than half an interval before it: the second poll then comes between
/// half an interval and one and a half after the first, and the ones after it on the phase.
pub fn skips_tick(early: Option<Instant>, tick: Instant, interval: Duration) -> bool {
    early.is_some_and(|at| tick >= at && tick < at + interval / 2)
}

/// Every loop's polls fall on one grid of this step, counted from the process's start: loops
/// whose polls fall in the same step wake together, their reads go out together on the shared
/// broker connections, and the process wakes once per step rather than once per poll. A whole
/// number of seconds is a whole number of steps, so a loop stays on the grid.
pub const POLL_GRID: Duration = Duration::from_millis(100);

/// The first moment at or after `at` on the grid of [`POLL_GRID`] from `epoch` (`at` itself
/// when it comes before `epoch`).
pub fn on_grid(at: Instant, epoch: Instant) -> Instant {
    let Some(since) = at.checked_duration_since(epoch) else {
        return at;
    };
    let step = POLL_GRID.as_nanos();
    match since.as_nanos() % step {
        0 => at,
        rest => at + Duration::from_nanos(u64::try_from(step - rest).unwrap_or(0)),
    }
}

/// The grid's origin: the first time any loop asks.
pub fn grid_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// How long the loop trusts a resting replica count (0, or `idleReplicaCount`) it last read
/// from, or wrote to, the target's `/scale` when the target's watch cannot tell whether it
/// moved (the kind cannot be watched, or its watch is down). Only a resting count is
/// trusted, and only while every trigger answers: a poll that would write reads first, a count
/// above rest (the HPA's to change) is read at every poll, and so is any count while a trigger
/// fails (fallback may depend on it).
pub const REPLICAS_REFRESH: Duration = Duration::from_secs(300);

/// What the target's watch says of a count known since it was read (see
/// [`crate::target_watch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    /// The watch is live and the target's generation is the one seen at the read: the count
    /// holds.
    Unchanged,
    /// The watch is live and the generation moved (or the object went or was replaced): the
    /// count may not hold.
    Moved,
    /// The watch cannot tell (not live, or it has not seen the target).
    Unknown,
}

impl Watched {
    /// From what the watch said at the read and says now.
    pub fn of(at_read: crate::target_watch::Seen, now: crate::target_watch::Seen) -> Self {
        if !now.live {
            Watched::Unknown
        } else if now.generation.is_some() && now.generation == at_read.generation {
            Watched::Unchanged
        } else if now.generation.is_some() || at_read.generation.is_some() {
            Watched::Moved
        } else {
            Watched::Unknown
        }
    }
}

/// Whether a count known for `age` may stand in for a read of `/scale` at this poll.
pub fn trust_known_replicas(
    age: Duration,
    at_rest: bool,
    any_trigger_failed: bool,
    watched: Watched,
) -> bool {
    at_rest
        && !any_trigger_failed
        && match watched {
            Watched::Unchanged => true,
            Watched::Moved => false,
            Watched::Unknown => age < REPLICAS_REFRESH,
        }
}

/// The annotation that turns on the fast activation path: while the target rests at zero (or
/// its `idleReplicaCount`), its triggers are also checked at this many milliseconds, and the
/// first check that finds one active runs a full poll at once.
pub const ANNOTATION_ACTIVATION_POLLING: &str = "ebb.sh/activation-polling-interval-ms";

/// The shortest activation polling interval accepted.
pub const MIN_ACTIVATION_POLLING: Duration = Duration::from_millis(50);

/// The annotation's interval: None when absent; an error (for the object's status) when it is
/// not a whole number of milliseconds from [`MIN_ACTIVATION_POLLING`] up to the polling interval.
pub fn activation_polling(
    annotation: Option<&str>,
    interval: Duration,
) -> Result<Option<Duration>, String> {
    let Some(text) = annotation else {
        return Ok(None);
    };
    let max = interval.as_millis();
    let min = MIN_ACTIVATION_POLLING.as_millis();
    match text.trim().parse::<u64>() {
        Ok(ms) if (min..=max).contains(&u128::from(ms)) => Ok(Some(Duration::from_millis(ms))),
        _ => Err(format!(
            "annotation {ANNOTATION_ACTIVATION_POLLING}: expected a whole number of milliseconds from {min} up to the pollingInterval ({max}), got {:?}",
            text.chars().take(64).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_new_loop_polls_within_seconds_and_then_on_its_phase() {
        let interval = Duration::from_secs(30);
        for uid in ["a", "b", "c", "0d1e2f", "uid-1234"] {
            let early = early_poll_delay(uid, interval);
            assert!(early < FIRST_POLL_SPREAD, "{uid}: {early:?}");
            // Short intervals keep their phase as the first poll.
            assert_eq!(
                early_poll_delay(uid, Duration::from_secs(5)),
                first_poll_delay(uid, Duration::from_secs(5))
            );
        }
        let start = Instant::now();
        let early = Some(start + Duration::from_secs(2));
        // A phase tick 10 s after the early poll is too close: left out; 16 s is not.
        assert!(skips_tick(early, start + Duration::from_secs(12), interval));
        assert!(!skips_tick(
            early,
            start + Duration::from_secs(18),
            interval
        ));
        // A tick before the early poll, or with no early poll, is kept.
        assert!(!skips_tick(early, start + Duration::from_secs(1), interval));
        assert!(!skips_tick(None, start + Duration::from_secs(12), interval));
    }

    use super::*;

    #[test]
    fn only_a_resting_count_is_trusted_and_only_while_nothing_fails() {
        let ten = Duration::from_secs(10);
        let day = Duration::from_secs(86_400);
        for watched in [Watched::Unchanged, Watched::Unknown] {
            assert!(trust_known_replicas(ten, true, false, watched));
            assert!(
                !trust_known_replicas(ten, false, false, watched),
                "above rest"
            );
            assert!(
                !trust_known_replicas(ten, true, true, watched),
                "a trigger fails"
            );
        }
        // A live watch that saw no change: trusted however old.
        assert!(trust_known_replicas(day, true, false, Watched::Unchanged));
        // The target moved: read again, however fresh the count.
        assert!(!trust_known_replicas(
            Duration::ZERO,
            true,
            false,
            Watched::Moved
        ));
        // Without a watch, the count is read again every REPLICAS_REFRESH.
        assert!(!trust_known_replicas(
            REPLICAS_REFRESH,
            true,
            false,
            Watched::Unknown
        ));
    }

    #[test]
    fn what_the_watch_says_of_a_count() {
        use crate::target_watch::Seen;
        let seen = |generation, live| Seen { generation, live };
        // Live, same generation: unchanged.
        assert_eq!(
            Watched::of(seen(Some(7), true), seen(Some(7), true)),
            Watched::Unchanged
        );
        // Read while the watch was down, live now with the same generation: unchanged.
        assert_eq!(
            Watched::of(seen(Some(7), false), seen(Some(7), true)),
            Watched::Unchanged
        );
        // Scaled since, deleted since, or first seen since the read: moved.
        assert_eq!(
            Watched::of(seen(Some(7), true), seen(Some(8), true)),
            Watched::Moved
        );
        assert_eq!(
            Watched::of(seen(Some(7), true), seen(None, true)),
            Watched::Moved
        );
        assert_eq!(
            Watched::of(seen(None, false), seen(Some(7), true)),
            Watched::Moved
        );
        // Not live, or never seen: the watch cannot tell.
        assert_eq!(
            Watched::of(seen(Some(7), true), seen(Some(7), false)),
            Watched::Unknown
        );
        assert_eq!(
            Watched::of(seen(None, true), seen(None, true)),
            Watched::Unknown
        );
    }

    #[test]
    fn the_activation_interval_is_checked() {
        let thirty = Duration::from_secs(30);
        assert_eq!(activation_polling(None, thirty), Ok(None));
        assert_eq!(
            activation_polling(Some(" 250 "), thirty),
            Ok(Some(Duration::from_millis(250)))
        );
        assert_eq!(activation_polling(Some("30000"), thirty), Ok(Some(thirty)));
        for bad in ["10", "30001", "0.5", "-1", "250ms", ""] {
            let e = activation_polling(Some(bad), thirty).expect_err(bad);
            assert!(
                e.contains(ANNOTATION_ACTIVATION_POLLING)
                    && e.contains("from 50 up to the pollingInterval (30000)"),
                "{e}"
            );
        }
    }

    #[test]
    fn polls_fall_on_the_grid() {
        let epoch = Instant::now();
        for ms in [0u64, 1, 99, 100, 101, 250, 29_999] {
            let at = epoch + Duration::from_millis(ms);
            let on = on_grid(at, epoch);
            assert!(on >= at && on < at + POLL_GRID, "{ms} ms");
            assert_eq!((on - epoch).as_nanos() % POLL_GRID.as_nanos(), 0, "{ms} ms");
        }
        // Each later poll, a whole number of seconds on, stays on it.
        let first = on_grid(epoch + Duration::from_millis(1234), epoch);
        assert_eq!(
            on_grid(first + Duration::from_secs(30), epoch),
            first + Duration::from_secs(30)
        );
        // Before the epoch nothing moves.
        let early = epoch.checked_sub(Duration::from_millis(5)).unwrap_or(epoch);
        assert_eq!(on_grid(early, epoch), early);
    }

    #[test]
    fn first_polls_spread_over_the_interval_and_are_stable() {
        let interval = Duration::from_secs(30);
        let mut buckets = [0usize; 10];
        for i in 0..1000 {
            let uid = format!("6f1c2a4e-0000-4000-8000-{i:012}");
            let delay = first_poll_delay(&uid, interval);
            assert!(delay < interval);
            assert_eq!(delay, first_poll_delay(&uid, interval), "stable");
            buckets[(delay.as_millis() * 10 / interval.as_millis()) as usize] += 1;
        }
        // 100 per bucket on average; no three-second slice is empty or crowded.
        assert!(
            buckets.iter().all(|n| (50..=200).contains(n)),
            "{buckets:?}"
        );
        assert_eq!(first_poll_delay("x", Duration::ZERO), Duration::ZERO);
    }
}
