//! How long a storefront request may have waited before it is shed, chosen CoDel-style (the
//! controlled-delay rule Facebook describes for server queues in "Fail at Scale", 2015).
//!
//! A single fixed bound has to pick between two harms. Set tight (5 ms), it answers 503 on a
//! busy host that is not overloaded at all, where a request now and then waits a few
//! milliseconds behind other processes. Set loose (20 ms), it keeps every accepted request of
//! a real overload waiting nearly that long. The two cases differ in whether the queue ever
//! empties: a burst leaves some requests served at once, a standing queue makes every request
//! wait. CoDel watches the shortest wait of each interval; under tokio that is no guide,
//! because a task woken by the one running is polled right after it (the scheduler's LIFO
//! slot) and some request of every interval waits next to nothing, overloaded or not. So the
//! rule watches the median instead: while more than half the requests of an interval (100 ms
//! by default) waited longer than the target (5 ms by default; a target at or above the bound
//! turns the rule off), the queue is standing, and requests that waited longer
//! than the target are shed; otherwise only those beyond the loose bound are. The standing
//! queue ends once half the requests of an interval wait less than half the target, so that
//! shedding, which itself shortens the waits, does not switch the tight bound off and on
//! every interval.
//!
//! The tight target sheds about three requests in four of an interval at most (the count is
//! read and raised apart, so concurrent workers can pass it by one or two). Against
//! clients that ask again as soon as they are refused, shedding shortens nothing: every 503
//! brings the next request at once, the queue stays as long as the clients are many, and a
//! target below what that queue waits would refuse nearly everything while the server's core
//! goes to answering 503s. Requests beyond the loose bound are shed whatever the share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The shared state of the rule: one per server, updated by every storefront request.
#[derive(Debug)]
pub struct QueueDelayLimit {
    /// Bound while the queue drains now and then (nanoseconds).
    bound: u64,
    /// Bound while it does not, and the shortest wait that says it does not (nanoseconds).
    target: u64,
    /// Length of an interval (nanoseconds).
    interval: u64,
    /// When the current interval began (the caller's clock, nanoseconds).
    interval_start: AtomicU64,
    /// Requests seen in the current interval.
    seen: AtomicU64,
    /// Of them, those that waited longer than the target.
    over_target: AtomicU64,
    /// Of them, those that waited longer than half the target.
    over_half_target: AtomicU64,
    /// Of them, those shed by the tight target.
    shed_by_target: AtomicU64,
    /// Whether the last interval ended with a standing queue.
    standing: AtomicBool,
}

/// The largest share of an interval's requests the tight target may shed, as a fraction
/// `MAX_TARGET_SHED.0 / MAX_TARGET_SHED.1` (see the module doc).
const MAX_TARGET_SHED: (u64, u64) = (3, 4);

impl QueueDelayLimit {
    /// A rule shedding beyond `bound`, or beyond `target` while a standing queue lasts, judged
    /// every `interval`. A target at or above the bound leaves the fixed bound alone.
    pub fn new(bound: Duration, target: Duration, interval: Duration) -> Self {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self {
            bound: nanos(bound),
            target: nanos(target).min(nanos(bound)),
            interval: nanos(interval).max(1),
            interval_start: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            over_target: AtomicU64::new(0),
            over_half_target: AtomicU64::new(0),
            shed_by_target: AtomicU64::new(0),
            standing: AtomicBool::new(false),
        }
    }

    /// Notes a request that waited `waited` at time `now` (nanoseconds on any monotonic
    /// clock) and returns the longest wait a request may have now.
    pub fn observe(&self, now: u64, waited: Duration) -> Duration {
        if self.target >= self.bound {
            // Off: no shared counters to touch on every request.
            return Duration::from_nanos(self.bound);
        }
        let waited = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        let start = self.interval_start.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= self.interval
            && self
                .interval_start
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let seen = self.seen.swap(0, Ordering::Relaxed);
            let over_target = self.over_target.swap(0, Ordering::Relaxed);
            let over_half_target = self.over_half_target.swap(0, Ordering::Relaxed);
            self.shed_by_target.store(0, Ordering::Relaxed);
            let over = if self.standing.load(Ordering::Relaxed) {
                over_half_target
            } else {
                over_target
            };
            // An interval longer than two (the server was idle for part of it) saw an empty
            // queue, whatever its few requests waited.
            let idle = now.saturating_sub(start) >= self.interval.saturating_mul(2);
            self.standing
                .store(!idle && over.saturating_mul(2) > seen, Ordering::Relaxed);
        }
        // After the judgement, so a request that opens an interval counts in it.
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if waited > self.target / 2 {
            self.over_half_target.fetch_add(1, Ordering::Relaxed);
            if waited > self.target {
                self.over_target.fetch_add(1, Ordering::Relaxed);
            }
        }
        let tight = self.standing.load(Ordering::Relaxed)
            && (waited <= self.target
                || waited > self.bound
                || self.shed_by_target.load(Ordering::Relaxed) * MAX_TARGET_SHED.1
                    < seen * MAX_TARGET_SHED.0);
        if tight && waited > self.target && waited <= self.bound {
            self.shed_by_target.fetch_add(1, Ordering::Relaxed);
        }
        Duration::from_nanos(if tight { self.target } else { self.bound })
    }

    /// Whether the last interval ended with a standing queue.
    #[cfg(test)]
    fn standing(&self) -> bool {
        self.standing.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn rule() -> QueueDelayLimit {
        QueueDelayLimit::new(
            Duration::from_millis(20),
            Duration::from_millis(5),
            Duration::from_millis(100),
        )
    }

    /// Feeds one interval of requests with the given waits (ms), starting at `at` (ms).
    fn interval(rule: &QueueDelayLimit, at: u64, waits: &[u64]) -> Duration {
        let mut limit = Duration::ZERO;
        for (i, &wait) in waits.iter().enumerate() {
            limit = rule.observe(at * MS + i as u64, Duration::from_millis(wait));
        }
        limit
    }

    #[test]
    fn bursts_that_drain_keep_the_loose_bound() {
        let rule = rule();
        for n in 1..20 {
            // Some requests wait 8 to 15 ms, most are served at once.
            let limit = interval(&rule, n * 100, &[12, 0, 1, 15, 0]);
            assert_eq!(limit, Duration::from_millis(20), "interval {n}");
        }
        assert!(!rule.standing());
    }

    #[test]
    fn a_standing_queue_tightens_the_bound_until_it_drains() {
        let rule = rule();
        interval(&rule, 100, &[6, 7, 0, 9]);
        // Judged at the first request of the next interval: one request served at once does
        // not hide a queue the others all waited in.
        assert_eq!(
            interval(&rule, 200, &[7, 8, 6]),
            Duration::from_millis(5),
            "every wait above the target"
        );
        assert!(rule.standing());
        // Shedding shortens the waits; while most are above half the target the queue still
        // stands, whatever the few served at once.
        interval(&rule, 300, &[3, 4, 0, 5]);
        assert_eq!(interval(&rule, 400, &[1]), Duration::from_millis(5));
        // Most below half the target: it has drained.
        assert_eq!(interval(&rule, 500, &[1]), Duration::from_millis(20));
        assert!(!rule.standing());
    }

    #[test]
    fn the_tight_target_sheds_at_most_three_requests_in_four() {
        let rule = rule();
        interval(&rule, 100, &[9, 9]);
        assert!(interval(&rule, 200, &[9]) == Duration::from_millis(5));
        // Clients that ask again at once keep every request waiting past the target: of the
        // next interval's requests three in four are shed by it, the rest only by the bound.
        let limits: Vec<Duration> = (0..100)
            .map(|i| rule.observe(300 * MS + i, Duration::from_millis(9)))
            .collect();
        let shed = limits
            .iter()
            .filter(|&&l| l < Duration::from_millis(9))
            .count();
        assert_eq!(shed, 75, "{limits:?}");
    }

    #[test]
    fn an_idle_gap_ends_a_standing_queue() {
        let rule = rule();
        interval(&rule, 100, &[9, 9]);
        interval(&rule, 200, &[9, 9]);
        assert!(rule.standing());
        // Nothing for a second: the next request finds an empty queue.
        assert_eq!(interval(&rule, 1_300, &[9]), Duration::from_millis(20));
    }

    #[test]
    fn a_target_above_the_bound_leaves_the_fixed_bound() {
        let rule = QueueDelayLimit::new(
            Duration::from_millis(20),
            Duration::from_millis(50),
            Duration::from_millis(100),
        );
        interval(&rule, 100, &[30, 30]);
        assert_eq!(interval(&rule, 200, &[30]), Duration::from_millis(20));
    }
}
