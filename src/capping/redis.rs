//! The Redis cap store: frequency-capping and "not interested" state shared by every replica,
//! in sorted sets scored by wall-clock milliseconds, with TTLs, one pipelined round trip per
//! call.
//!
//! Keys, per shopper key `K` (hex) under the configured prefix `P`: `P:K:imp` (one member per
//! impression, `item`, a separator and a unique suffix), `P:K:resp` (one member per served
//! list) and `P:K:dis` (one member per dismissed item). Every call has a deadline; when Redis is
//! slow or down the store fails open (no capping for that request), counts the failure in
//! `tandem_capping_store_errors_total` and logs it at most once per [`LOG_INTERVAL`]. After
//! `capping.breaker_failures` failures in a row a circuit breaker stops calling Redis for
//! `capping.breaker_open_ms` (see [`super::breaker`]), so an outage costs capping, not a
//! timeout per request. Erasure always calls Redis: it must say truthfully whether it worked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::breaker::{Admission, Breaker, Ticket};
use super::{CapPolicy, CapState, CapStore, Feedback, ShopperKey};
use crate::metrics::Metrics;

/// Failures are logged at most once per this interval (each is counted).
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Separates the item id from the unique suffix in impression members.
const SEPARATOR: char = '\u{1f}';

/// Frequency-capping state in Redis.
pub struct RedisCapStore {
    policy: CapPolicy,
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    sequence: AtomicU64,
    last_logged_ms: AtomicU64,
    breaker: Breaker,
    metrics: Metrics,
}

impl std::fmt::Debug for RedisCapStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCapStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl RedisCapStore {
    /// A store on the Redis at `url`; connects on first use and reconnects by itself.
    pub fn new(policy: CapPolicy, url: &str, metrics: Metrics) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let timeout = Duration::from_millis(policy.redis_timeout_ms);
        // Calls wait for a reconnection in progress, so its retry must come well within a
        // call's deadline: with redis's default delay (up to 100 ms) every call made while
        // Redis is gone waits out its whole deadline until the breaker opens.
        let retry_delay = timeout / 10;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(retry_delay)
            .set_max_delay(retry_delay);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        let breaker = Breaker::new(
            policy.breaker_failures,
            Duration::from_millis(policy.breaker_open_ms),
            metrics.clone(),
        );
        Ok(Self {
            prefix: policy.redis_prefix.clone(),
            policy,
            connection,
            timeout,
            sequence: AtomicU64::new(0),
            last_logged_ms: AtomicU64::new(0),
            breaker,
            metrics,
        })
    }

    fn key(&self, shopper: ShopperKey, kind: &str) -> String {
        format!("{}:{}:{kind}", self.prefix, shopper.to_hex())
    }

    /// Runs `pipe` unless the breaker is open, failing open: `None` (counted and, now and
    /// then, logged) on any error, when the deadline passes, or at once while the breaker is
    /// open.
    async fn run<T: redis::FromRedisValue>(&self, pipe: redis::Pipeline) -> Option<T> {
        let admission = self.breaker.admit();
        if admission == Admission::Skip {
            self.metrics.capping_breaker_skipped();
            return None;
        }
        let ticket = Ticket::new(&self.breaker, admission);
        let outcome = self.call(pipe).await;
        ticket.finish(outcome.is_some());
        outcome
    }

    /// Runs `pipe` whatever the breaker says (its outcome still counts).
    async fn call<T: redis::FromRedisValue>(&self, pipe: redis::Pipeline) -> Option<T> {
        let mut connection = self.connection.clone();
        let outcome = tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut connection));
        let error = match outcome.await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        self.metrics.capping_store_error();
        let now = now_ms();
        let last = self.last_logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= millis(LOG_INTERVAL)
            && self
                .last_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%error, "redis cap store unavailable; serving without capping");
        }
        None
    }

    fn unique(&self, now: u64) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{now}.{n}.{}", std::process::id())
    }

    /// Adds impressions of `items` to `pipe`, trimmed to the window and the per-shopper bound.
    fn add_impressions(&self, pipe: &mut redis::Pipeline, key: &str, items: &[&str], now: u64) {
        let window = millis(self.policy.impression_window());
        for item in items {
            let member = format!("{item}{SEPARATOR}{}", self.unique(now));
            pipe.zadd(key, member, now).ignore();
        }
        let keep =
            self.policy.max_items_per_shopper * self.policy.max_impressions_per_item as usize;
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(key)
            .arg("-inf")
            .arg(format!("({}", now.saturating_sub(window)))
            .ignore();
        pipe.cmd("ZREMRANGEBYRANK")
            .arg(key)
            .arg(0)
            .arg(-(keep as i64) - 1)
            .ignore();
        pipe.pexpire(key, window as i64).ignore();
    }

    async fn state_at(&self, shopper: ShopperKey) -> CapState {
        let now = now_ms();
        let since = |window: Duration| now.saturating_sub(millis(window));
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGEBYSCORE")
            .arg(self.key(shopper, "imp"))
            .arg(since(self.policy.impression_window()))
            .arg("+inf");
        pipe.zcount(
            self.key(shopper, "resp"),
            since(self.policy.response_window()),
            "+inf",
        );
        pipe.cmd("ZRANGEBYSCORE")
            .arg(self.key(shopper, "dis"))
            .arg(since(self.policy.dismiss_window()))
            .arg("+inf");
        let Some((impressions, responses, dismissed_items)) =
            self.run::<(Vec<String>, u64, Vec<String>)>(pipe).await
        else {
            return CapState::default();
        };
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for member in &impressions {
            let item = member.split(SEPARATOR).next().unwrap_or(member);
            *counts.entry(item).or_default() += 1;
        }
        let limit = self.policy.max_impressions_per_item;
        CapState {
            capped_items: counts
                .into_iter()
                .filter(|&(_, n)| n >= limit)
                .map(|(item, _)| item)
                .collect(),
            fatigued: responses >= u64::from(self.policy.max_responses_per_window),
            dismissed_items: dismissed_items.iter().map(String::as_str).collect(),
        }
    }

    async fn served(&self, shopper: ShopperKey, items: &[&str]) {
        let now = now_ms();
        let mut pipe = redis::pipe();
        let responses = self.key(shopper, "resp");
        let window = millis(self.policy.response_window());
        pipe.zadd(&responses, self.unique(now), now).ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&responses)
            .arg("-inf")
            .arg(format!("({}", now.saturating_sub(window)))
            .ignore();
        pipe.pexpire(&responses, window as i64).ignore();
        if self.policy.count_served_as_impressions {
            self.add_impressions(&mut pipe, &self.key(shopper, "imp"), items, now);
        }
        self.run::<()>(pipe).await;
    }

    async fn feedback(&self, events: &[(ShopperKey, &str, Feedback)]) {
        let now = now_ms();
        let mut pipe = redis::pipe();
        let mut commands = 0;
        for &(shopper, item, feedback) in events {
            match feedback {
                Feedback::Impression if !self.policy.count_served_as_impressions => {
                    self.add_impressions(&mut pipe, &self.key(shopper, "imp"), &[item], now);
                }
                Feedback::Engaged if self.policy.reset_fatigue_on_engagement => {
                    pipe.del(self.key(shopper, "resp")).ignore();
                }
                Feedback::Dismissed => {
                    let key = self.key(shopper, "dis");
                    let window = millis(self.policy.dismiss_window());
                    pipe.zadd(&key, item, now).ignore();
                    pipe.cmd("ZREMRANGEBYRANK")
                        .arg(&key)
                        .arg(0)
                        .arg(-(self.policy.max_items_per_shopper as i64) - 1)
                        .ignore();
                    pipe.pexpire(&key, window as i64).ignore();
                }
                Feedback::Impression | Feedback::Engaged => continue,
            }
            commands += 1;
        }
        if commands > 0 {
            self.run::<()>(pipe).await;
        }
    }

    async fn erase(&self, shopper: ShopperKey) -> bool {
        let mut pipe = redis::pipe();
        pipe.del(&[
            self.key(shopper, "imp"),
            self.key(shopper, "resp"),
            self.key(shopper, "dis"),
        ])
        .ignore();
        let outcome = self.call::<()>(pipe).await;
        self.breaker.record(&Admission::Call, outcome.is_some());
        outcome.is_some()
    }
}

impl CapStore for RedisCapStore {
    fn check(&self, shopper: ShopperKey, _now: Instant) -> BoxFuture<'_, CapState> {
        Box::pin(self.state_at(shopper))
    }

    fn record_served<'a>(
        &'a self,
        shopper: ShopperKey,
        items: &'a [&'a str],
        _now: Instant,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.served(shopper, items))
    }

    fn record_feedback<'a>(
        &'a self,
        events: &'a [(ShopperKey, &'a str, Feedback)],
        _now: Instant,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.feedback(events))
    }

    fn forget(&self, shopper: ShopperKey) -> BoxFuture<'_, bool> {
        Box::pin(self.erase(shopper))
    }
}
