//! Every metric the service exports, in one place: names carry the `tandem_` prefix and their
//! unit. One registry per app (no global statics), so several apps can run in one process.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::events::EventKind;
use crate::model::Snapshot;

/// Latency buckets from 50 µs to 5 s: the interesting range of a sub-millisecond service.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Model load durations, 10 ms to 5 min.
const LOAD_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Outcome label values of `tandem_model_reloads_total`.
#[derive(Debug, Clone, Copy)]
pub enum ReloadOutcome {
    /// A new snapshot is serving.
    Success,
    /// Loading or validation failed; the old snapshot keeps serving.
    Failure,
    /// Another reload was running.
    Conflict,
}

impl ReloadOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Success => "success",
            ReloadOutcome::Failure => "failure",
            ReloadOutcome::Conflict => "conflict",
        }
    }
}

/// The service's metrics and the registry that exports them; a cheap handle (one reference
/// count), since every request clones the application state that holds it.
#[derive(Clone)]
pub struct Metrics(Arc<Collectors>);

impl std::ops::Deref for Metrics {
    type Target = Collectors;

    fn deref(&self) -> &Collectors {
        &self.0
    }
}

/// Counts one connection in a gauge (open, or waiting for its first head) while it lives.
pub struct ConnectionGuard(IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The registered collectors behind [`Metrics`].
pub struct Collectors {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    model_version: IntGauge,
    model_items: IntGauge,
    model_pairs: IntGauge,
    model_loaded_at: IntGauge,
    model_reloads: IntCounterVec,
    model_load_duration: Histogram,
    unknown_cart_items: IntCounter,
    popular_fallback_items: IntCounter,
    events_received: IntCounterVec,
    events_written: IntCounter,
    events_duplicate: IntCounter,
    events_rejected: IntCounterVec,
    event_queue_depth: IntGauge,
    capping_store_errors: IntCounter,
    capping_breaker_state: IntGauge,
    capping_breaker_skipped: IntCounter,
    capping_memory_bytes: IntGauge,
    connections_open: IntGauge,
    connections_first_head: IntGauge,
    lists_served: IntCounterVec,
    feedback_events: IntCounterVec,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let r = &registry;
        Ok(Self(Arc::new(Collectors {
            http_requests: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tandem_http_requests_total",
                        "HTTP requests by matched route and status",
                    ),
                    &["method", "route", "status"],
                )?,
            )?,
            http_duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tandem_http_request_duration_seconds",
                        "HTTP request latency by matched route and status",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["method", "route", "status"],
                )?,
            )?,
            model_version: register(
                r,
                IntGauge::new(
                    "tandem_model_version",
                    "Model version being served (0 = none)",
                )?,
            )?,
            model_items: register(
                r,
                IntGauge::new("tandem_model_items", "Items in the served model")?,
            )?,
            model_pairs: register(
                r,
                IntGauge::new(
                    "tandem_model_co_purchase_pairs",
                    "Co-purchase entries in the served model",
                )?,
            )?,
            model_loaded_at: register(
                r,
                IntGauge::new(
                    "tandem_model_loaded_timestamp_seconds",
                    "Unix time the served model was loaded",
                )?,
            )?,
            model_reloads: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tandem_model_reloads_total",
                        "Model loads and reloads by outcome",
                    ),
                    &["outcome"],
                )?,
            )?,
            model_load_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tandem_model_load_duration_seconds",
                        "Time to load and build a model version",
                    )
                    .buckets(LOAD_BUCKETS.to_vec()),
                )?,
            )?,
            unknown_cart_items: register(
                r,
                IntCounter::new(
                    "tandem_recommendation_unknown_cart_items_total",
                    "Cart items the served model does not know",
                )?,
            )?,
            popular_fallback_items: register(
                r,
                IntCounter::new(
                    "tandem_recommendation_popular_fallback_items_total",
                    "Recommended items that came from the popularity fallback",
                )?,
            )?,
            events_received: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tandem_events_received_total",
                        "Storefront events accepted into the write queue, by kind",
                    ),
                    &["kind"],
                )?,
            )?,
            events_written: register(
                r,
                IntCounter::new(
                    "tandem_events_written_total",
                    "Storefront events written to Postgres",
                )?,
            )?,
            events_duplicate: register(
                r,
                IntCounter::new(
                    "tandem_events_duplicate_total",
                    "Storefront events skipped because their event_id was already stored",
                )?,
            )?,
            events_rejected: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tandem_events_rejected_total",
                        "Storefront events not stored, by reason (invalid, queue_full, \
                         shutting_down, write_failed, erased: queued when their shopper was \
                         erased)",
                    ),
                    &["reason"],
                )?,
            )?,
            event_queue_depth: register(
                r,
                IntGauge::new(
                    "tandem_event_queue_depth",
                    "Storefront events waiting to be written",
                )?,
            )?,
            capping_store_errors: register(
                r,
                IntCounter::new(
                    "tandem_capping_store_errors_total",
                    "Cap store calls that failed or timed out (the request was served uncapped)",
                )?,
            )?,
            capping_breaker_state: register(
                r,
                IntGauge::new(
                    "tandem_capping_breaker_state",
                    "The Redis cap store's circuit breaker: 0 closed (calling Redis), 1 open \
                     (not calling it; requests are served uncapped), 2 half-open (one probe)",
                )?,
            )?,
            capping_breaker_skipped: register(
                r,
                IntCounter::new(
                    "tandem_capping_breaker_skipped_total",
                    "Cap store calls not made because the breaker was open (served uncapped)",
                )?,
            )?,
            capping_memory_bytes: register(
                r,
                IntGauge::new(
                    "tandem_capping_memory_bytes",
                    "Bytes the in-memory cap store holds (at most capping.max_memory_bytes)",
                )?,
            )?,
            connections_open: register(
                r,
                IntGauge::new(
                    "tandem_http_connections_open",
                    "HTTP connections open now (at most server.max_connections)",
                )?,
            )?,
            connections_first_head: register(
                r,
                IntGauge::new(
                    "tandem_http_connections_reading_first_head",
                    "Open HTTP connections whose first request head has not arrived whole yet",
                )?,
            )?,
            lists_served: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tandem_recommendation_lists_total",
                        "Non-empty recommendation lists served, by touchpoint and experiment variant",
                    ),
                    &["touchpoint", "variant"],
                )?,
            )?,
            feedback_events: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "tandem_feedback_events_total",
                        "Storefront events by kind, touchpoint and experiment variant \
                         (click-through: click / impression; conversion: purchase / impression)",
                    ),
                    &["kind", "touchpoint", "variant"],
                )?,
            )?,
            registry,
        })))
    }

    /// Counts a non-empty list served at `touchpoint` by `variant`.
    pub fn list_served(&self, touchpoint: &str, variant: &str) {
        self.lists_served
            .with_label_values(&[touchpoint, variant])
            .inc();
    }

    /// Counts a storefront event for its touchpoint and variant (label values from a bounded
    /// set: see the events handler).
    pub fn feedback_event(&self, kind: EventKind, touchpoint: &str, variant: &str) {
        self.feedback_events
            .with_label_values(&[kind.as_str(), touchpoint, variant])
            .inc();
    }

    /// Counts a cap store call that failed open.
    pub fn capping_store_error(&self) {
        self.capping_store_errors.inc();
    }

    /// Sets the Redis breaker's state (0 closed, 1 open, 2 half-open).
    pub fn capping_breaker_state(&self, state: i64) {
        self.capping_breaker_state.set(state);
    }

    /// Counts a cap store call skipped while the breaker is open.
    pub fn capping_breaker_skipped(&self) {
        self.capping_breaker_skipped.inc();
    }

    /// Moves the in-memory cap store's byte count by `delta`.
    pub fn capping_memory_bytes(&self, delta: i64) {
        self.capping_memory_bytes.add(delta);
    }

    /// Counts an open connection until the guard is dropped.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.connections_open.inc();
        ConnectionGuard(self.connections_open.clone())
    }

    /// Counts one connection as waiting for its first request head until the guard drops.
    pub fn first_head_awaited(&self) -> ConnectionGuard {
        self.connections_first_head.inc();
        ConnectionGuard(self.connections_first_head.clone())
    }

    /// Counts an event accepted into the write queue.
    pub fn event_received(&self, kind: EventKind) {
        self.events_received
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// Counts events written, and those skipped as already stored.
    pub fn events_written(&self, written: u64, duplicates: u64) {
        self.events_written.inc_by(written);
        self.events_duplicate.inc_by(duplicates);
    }

    /// Counts events refused or lost, by reason.
    pub fn events_rejected(&self, reason: &str, count: u64) {
        self.events_rejected
            .with_label_values(&[reason])
            .inc_by(count);
    }

    /// Sets the number of events waiting to be written.
    pub fn event_queue_depth(&self, depth: usize) {
        self.event_queue_depth.set(depth as i64);
    }

    /// Records one finished HTTP request.
    pub fn observe_request(&self, method: &str, route: &str, status: &str, elapsed: Duration) {
        let labels = [method, route, status];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Records that `snapshot` is now serving.
    pub fn model_loaded(&self, snapshot: &Snapshot, load_time: Duration) {
        self.model_version.set(snapshot.version().0);
        self.model_items.set(snapshot.len() as i64);
        self.model_pairs.set(snapshot.stats().pairs as i64);
        self.model_loaded_at.set(chrono::Utc::now().timestamp());
        self.model_load_duration.observe(load_time.as_secs_f64());
    }

    /// Counts a reload attempt.
    pub fn reload(&self, outcome: ReloadOutcome) {
        self.model_reloads
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    /// Counts what one recommendation response contained.
    pub fn recommendation(&self, unknown_cart_items: usize, popular_fallback_items: usize) {
        self.unknown_cart_items.inc_by(unknown_cart_items as u64);
        self.popular_fallback_items
            .inc_by(popular_fallback_items as u64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the Grafana dashboard (`config/grafana-dashboard.json`) queries is one this
    /// service exports, so a renamed metric cannot silently blank a panel.
    #[test]
    fn the_dashboard_queries_only_exported_metrics() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_request("GET", "/recommendations", "200", Duration::from_millis(1));
        metrics.reload(ReloadOutcome::Success);
        metrics.model_load_duration.observe(1.0);
        metrics.recommendation(1, 1);
        metrics.event_received(EventKind::Click);
        metrics.events_written(1, 1);
        metrics.events_rejected("queue_full", 1);
        metrics.event_queue_depth(1);
        metrics.capping_store_error();
        metrics.list_served("checkout", "control");
        metrics.feedback_event(EventKind::Click, "checkout", "control");
        let exported = metrics.render().unwrap();

        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../config/grafana-dashboard.json")).unwrap();
        let mut queried = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for (at, _) in expr.match_indices("tandem_") {
                    let name: String = expr[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    queried.push(name);
                }
            }
        }
        assert!(queried.len() > 10, "{queried:?}");
        for name in queried {
            assert!(
                exported.lines().any(|l| l.starts_with(&name)),
                "the dashboard queries {name}, which is not exported"
            );
        }
    }
}
