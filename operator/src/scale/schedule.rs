//! When a ScaledObject's polls happen.

use std::time::Duration;

/// Delay before a ScaledObject's first poll: a fraction of its polling interval derived from its
/// uid. Objects created together (or found together when ebb starts) spread over the interval
/// instead of polling their brokers at once, and a restart keeps each object's phase.
pub fn first_poll_delay(uid: &str, interval: Duration) -> Duration {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in uid.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(hash % millis)
}

#[cfg(test)]
mod tests {
    use super::*;

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
