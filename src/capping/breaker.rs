//! A circuit breaker for the Redis cap store: after a few failures in a row it stops calling
//! Redis for a while, so an outage costs capping, not a timeout per request; then one call at a
//! time probes whether Redis is back.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// The breaker's state as exported (`tandem_capping_breaker_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed = 0,
    /// Calls are skipped.
    Open = 1,
    /// One probe call is allowed.
    HalfOpen = 2,
}

/// Whether a call may go through, and as what.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed.
    Call,
    /// The breaker was open long enough: this call probes.
    Probe,
    /// The breaker is open: do not call.
    Skip,
}

/// Consecutive-failure breaker with a half-open probe.
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    epoch: Instant,
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the breaker is open; 0 when closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    metrics: Metrics,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` failures in a row, for `open_for`.
    pub fn new(threshold: u32, open_for: Duration, metrics: Metrics) -> Self {
        metrics.capping_breaker_state(BreakerState::Closed as i64);
        Self {
            threshold: threshold.max(1),
            open_for,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            metrics,
        }
    }

    fn now_ms(&self) -> u64 {
        // Never 0, which means closed.
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    /// Whether the next call may go through.
    pub fn admit(&self) -> Admission {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admission::Call;
        }
        if self.now_ms() < until {
            return Admission::Skip;
        }
        if self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.metrics
                .capping_breaker_state(BreakerState::HalfOpen as i64);
            Admission::Probe
        } else {
            Admission::Skip
        }
    }

    /// Records how an admitted call ended.
    pub fn record(&self, admission: &Admission, ok: bool) {
        if ok {
            self.failures.store(0, Ordering::Release);
            if self.open_until.swap(0, Ordering::AcqRel) != 0 {
                self.metrics
                    .capping_breaker_state(BreakerState::Closed as i64);
                tracing::info!("redis cap store answers again; capping resumes");
            }
            if *admission == Admission::Probe {
                self.probing.store(false, Ordering::Release);
            }
            return;
        }
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if *admission == Admission::Probe || failures >= self.threshold {
            let until = self.now_ms() + self.open_for.as_millis() as u64;
            if self.open_until.swap(until, Ordering::AcqRel) == 0 {
                tracing::warn!(
                    failures,
                    open_for = ?self.open_for,
                    "redis cap store keeps failing; not calling it for a while"
                );
            }
            self.metrics
                .capping_breaker_state(BreakerState::Open as i64);
        }
        if *admission == Admission::Probe {
            self.probing.store(false, Ordering::Release);
        }
    }
}

/// An admitted call: when dropped before [`Ticket::finish`] (its request was cancelled), it
/// counts as a failure, so a probe can never be left outstanding.
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    admission: Option<Admission>,
}

impl<'a> Ticket<'a> {
    /// A ticket for a call `breaker` admitted as `admission` (not [`Admission::Skip`]).
    pub fn new(breaker: &'a Breaker, admission: Admission) -> Self {
        Self {
            breaker,
            admission: Some(admission),
        }
    }

    /// Records the call's outcome.
    pub fn finish(mut self, ok: bool) {
        if let Some(admission) = self.admission.take() {
            self.breaker.record(&admission, ok);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.breaker.record(&admission, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_once_and_closes_on_success() {
        let breaker = Breaker::new(2, Duration::from_millis(30), Metrics::new().unwrap());
        breaker.record(&Admission::Call, false);
        assert_eq!(
            breaker.admit(),
            Admission::Call,
            "one failure is not an outage"
        );
        breaker.record(&Admission::Call, false);
        assert_eq!(breaker.admit(), Admission::Skip);
        std::thread::sleep(Duration::from_millis(40));
        let probe = breaker.admit();
        assert_eq!(probe, Admission::Probe);
        assert_eq!(breaker.admit(), Admission::Skip, "one probe at a time");
        breaker.record(&probe, false);
        assert_eq!(breaker.admit(), Admission::Skip, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        // A probe whose call was cancelled counts as failed, and frees the next probe.
        drop(Ticket::new(&breaker, breaker.admit()));
        std::thread::sleep(Duration::from_millis(40));
        let probe = breaker.admit();
        assert_eq!(probe, Admission::Probe);
        Ticket::new(&breaker, probe).finish(true);
        assert_eq!(breaker.admit(), Admission::Call);
    }
}
