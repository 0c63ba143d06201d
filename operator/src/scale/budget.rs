//! Adaptive activation: while a target rests, its triggers are also read between polls when
//! they are cheap to read (each trigger says so through `Scaler::activation_server`), within a
//! budget of such reads a second per server that every resting object on that server shares.
//! A check that finds a trigger active runs a full poll at once, as the opt-in
//! `ebb.sh/activation-polling-interval-ms` path does; a check that finds none changes nothing.
//!
//! With B reads a second for a server and N triggers on it, each is checked every N / B
//! seconds (at least [`MIN_INTERVAL`]), so the server sees at most B checks a second however
//! many objects there are, and activation waits about half that instead of half the
//! pollingInterval. When N / B comes to more than half the pollingInterval the checks would
//! gain little, and none are made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The default budget: activation checks a second for one server (a Redis, a RabbitMQ).
pub const DEFAULT_PER_SERVER: f64 = 200.0;

/// The shortest interval between two checks of one object.
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// How often each of `seats` triggers on one server is checked within `per_server` checks a
/// second, or None when that would not be at least twice per `polling` interval (or the budget
/// is off).
pub fn interval(seats: usize, per_server: f64, polling: Duration) -> Option<Duration> {
    if per_server.is_nan() || per_server <= 0.0 || seats == 0 {
        return None;
    }
    let every = Duration::from_secs_f64(seats as f64 / per_server).max(MIN_INTERVAL);
    // Whole milliseconds, rounded up: never above the budget.
    let every = Duration::from_millis(u64::try_from(every.as_nanos().div_ceil(1_000_000)).ok()?);
    (every * 2 <= polling).then_some(every)
}

/// The budgets of every server, shared by the scale loops.
pub struct Budgets {
    per_server: f64,
    seats: Mutex<HashMap<String, usize>>,
}

impl Budgets {
    /// `per_server` checks a second for each server (0 turns adaptive checks off).
    pub fn new(per_server: f64) -> Arc<Self> {
        Arc::new(Self {
            per_server,
            seats: Mutex::new(HashMap::new()),
        })
    }

    /// Seats for an object whose triggers read `servers` (one entry per trigger), or None
    /// when the budget is off or some trigger is not cheap to read (it has no server).
    pub fn seat(self: &Arc<Self>, servers: Vec<Option<String>>) -> Option<Seat> {
        if self.per_server.is_nan() || self.per_server <= 0.0 || servers.is_empty() {
            return None;
        }
        let servers: Vec<String> = servers.into_iter().collect::<Option<_>>()?;
        let mut seats = self.seats.lock().unwrap_or_else(PoisonError::into_inner);
        for server in &servers {
            *seats.entry(server.clone()).or_default() += 1;
        }
        Some(Seat {
            budgets: self.clone(),
            servers,
        })
    }
}

/// One object's share of its servers' budgets, until dropped.
pub struct Seat {
    budgets: Arc<Budgets>,
    servers: Vec<String>,
}

impl Seat {
    /// How often the object is checked now: the longest of its servers' intervals, or None
    /// when one of them has no room.
    pub fn interval(&self, polling: Duration) -> Option<Duration> {
        let seats = self
            .budgets
            .seats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut longest = Duration::ZERO;
        for server in &self.servers {
            let n = seats.get(server).copied().unwrap_or(0);
            longest = longest.max(interval(n, self.budgets.per_server, polling)?);
        }
        Some(longest)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut seats = self
            .budgets
            .seats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for server in &self.servers {
            if let Some(n) = seats.get_mut(server) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    seats.remove(server);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THIRTY: Duration = Duration::from_secs(30);

    #[test]
    fn the_checks_share_the_budget_of_their_server() {
        // 1,000 objects on one server at 200 a second: each every 5 s, 200 checks a second.
        assert_eq!(interval(1_000, 200.0, THIRTY), Some(Duration::from_secs(5)));
        // Few objects: never faster than MIN_INTERVAL.
        assert_eq!(interval(3, 200.0, THIRTY), Some(MIN_INTERVAL));
        // 6,000 objects: every 30 s is no better than the polls; none.
        assert_eq!(interval(6_000, 200.0, THIRTY), None);
        // Up to half the interval, checks are still made.
        assert_eq!(
            interval(3_000, 200.0, THIRTY),
            Some(Duration::from_secs(15))
        );
        // A one-second interval gains nothing from checks every 250 ms or more... but does at
        // exactly half.
        assert_eq!(
            interval(1, 200.0, Duration::from_secs(1)),
            Some(MIN_INTERVAL)
        );
        assert_eq!(interval(200, 200.0, Duration::from_secs(1)), None);
        // Off.
        assert_eq!(interval(10, 0.0, THIRTY), None);
        assert_eq!(interval(10, f64::NAN, THIRTY), None);
        assert_eq!(interval(0, 200.0, THIRTY), None);
        // Rounded up to whole milliseconds: 333.33 ms becomes 334.
        assert_eq!(interval(1, 3.0, THIRTY), Some(Duration::from_millis(334)));
    }

    #[test]
    fn seats_are_counted_per_trigger_and_given_back() {
        let budgets = Budgets::new(2.0);
        let a = budgets
            .seat(vec![Some("redis r1".into())])
            .expect("cheap trigger");
        assert_eq!(a.interval(THIRTY), Some(Duration::from_millis(500)));
        // Two triggers on r1 and one on r2: r1 now has three seats.
        let b = budgets
            .seat(vec![
                Some("redis r1".into()),
                Some("redis r1".into()),
                Some("rabbitmq q".into()),
            ])
            .expect("cheap triggers");
        assert_eq!(a.interval(THIRTY), Some(Duration::from_millis(1_500)));
        assert_eq!(b.interval(THIRTY), Some(Duration::from_millis(1_500)));
        drop(b);
        assert_eq!(a.interval(THIRTY), Some(Duration::from_millis(500)));
        // A trigger that is not cheap to read (no server) keeps the object out.
        assert!(budgets.seat(vec![Some("redis r1".into()), None]).is_none());
        assert!(budgets.seat(vec![]).is_none());
        assert!(
            Budgets::new(0.0)
                .seat(vec![Some("redis r1".into())])
                .is_none()
        );
        drop(a);
        assert!(budgets.seats.lock().unwrap().is_empty());
    }
}
