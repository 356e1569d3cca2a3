//! The batched event writer: a bounded queue in front of one background task that writes
//! events to Postgres in batches (by size, or after a short interval), retries a failed batch,
//! and drains the queue on shutdown.
//!
//! A full queue refuses the whole submission (the handler answers 503, so the storefront can
//! retry) rather than dropping events; a batch that still fails after its retries is counted
//! in `tandem_events_rejected_total{reason="write_failed"}` and logged, never lost silently.

use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Event;
use crate::metrics::Metrics;
use crate::store;

/// The `[events]` section of the settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Events waiting to be written at most; beyond this `POST /events` gets 503.
    pub queue_capacity: usize,
    /// Most events written in one statement.
    pub batch_size: usize,
    /// Longest an accepted event waits for its batch to fill.
    pub flush_interval_ms: u64,
    /// Attempts per batch before it is counted as failed.
    pub write_attempts: u32,
    /// Most events in one `POST /events` body.
    pub max_events_per_request: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            queue_capacity: 100_000,
            batch_size: 1_000,
            flush_interval_ms: 200,
            write_attempts: 5,
            max_events_per_request: 1_000,
        }
    }
}

impl EventSettings {
    /// Checks ranges serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue_capacity == 0 || self.batch_size == 0 || self.max_events_per_request == 0 {
            return Err("events: capacities and sizes must be positive".into());
        }
        if self.max_events_per_request > self.queue_capacity {
            return Err("events.max_events_per_request must not exceed queue_capacity".into());
        }
        if self.flush_interval_ms == 0 || self.write_attempts == 0 {
            return Err("events.flush_interval_ms and write_attempts must be positive".into());
        }
        Ok(())
    }
}

/// Why a submission was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue has no room for the whole submission.
    #[error("the event queue is full")]
    QueueFull,
    /// The writer is shutting down.
    #[error("the event writer is shutting down")]
    Closed,
}

/// Handle of the writer task; submissions are cheap and never wait.
pub struct EventWriter {
    queue: mpsc::Sender<Event>,
    capacity: usize,
    stop: std::sync::Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
    metrics: Metrics,
}

impl EventWriter {
    /// Starts the writer task on the current runtime.
    pub fn start(pool: PgPool, settings: EventSettings, metrics: Metrics) -> Self {
        let (queue, receiver) = mpsc::channel(settings.queue_capacity);
        let stop = std::sync::Arc::new(Notify::new());
        let task = tokio::spawn(run(
            receiver,
            pool,
            settings.clone(),
            metrics.clone(),
            std::sync::Arc::clone(&stop),
        ));
        Self {
            queue,
            capacity: settings.queue_capacity,
            stop,
            task: Mutex::new(Some(task)),
            metrics,
        }
    }

    /// Queues every event of `events`, or none of them.
    pub fn submit(&self, events: Vec<Event>) -> Result<(), SubmitError> {
        let permits = self
            .queue
            .try_reserve_many(events.len())
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(()) => SubmitError::QueueFull,
                mpsc::error::TrySendError::Closed(()) => SubmitError::Closed,
            })?;
        for (permit, event) in permits.zip(events) {
            self.metrics.event_received(event.kind);
            permit.send(event);
        }
        self.metrics
            .event_queue_depth(self.capacity - self.queue.capacity());
        Ok(())
    }

    /// Stops accepting events and waits up to `grace` for the queue to be written.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.notify_one();
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = task {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::error!(
                    ?grace,
                    "event writer did not drain its queue within the grace period"
                );
            }
        }
    }
}

/// The writer task: batches by size or interval; on the stop signal, closes the queue and
/// writes what is left.
async fn run(
    mut receiver: mpsc::Receiver<Event>,
    pool: PgPool,
    settings: EventSettings,
    metrics: Metrics,
    stop: std::sync::Arc<Notify>,
) {
    let interval = Duration::from_millis(settings.flush_interval_ms);
    let mut batch: Vec<Event> = Vec::with_capacity(settings.batch_size);
    loop {
        let received = tokio::select! {
            biased;
            () = stop.notified() => break,
            n = receiver.recv_many(&mut batch, settings.batch_size) => n,
        };
        if received == 0 {
            // Every sender is gone: nothing more can arrive.
            return;
        }
        let deadline = Instant::now() + interval;
        while batch.len() < settings.batch_size {
            let room = settings.batch_size - batch.len();
            match tokio::time::timeout_at(deadline, receiver.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        write_batch(&pool, &batch, &settings, &metrics).await;
        batch.clear();
        metrics.event_queue_depth(receiver.len());
    }
    receiver.close();
    while receiver.recv_many(&mut batch, settings.batch_size).await > 0 {
        write_batch(&pool, &batch, &settings, &metrics).await;
        batch.clear();
    }
    metrics.event_queue_depth(0);
    tracing::info!("event writer drained its queue");
}

/// Writes one batch, retrying with back-off; counts it as failed after the last attempt.
async fn write_batch(pool: &PgPool, batch: &[Event], settings: &EventSettings, metrics: &Metrics) {
    let mut backoff = Duration::from_millis(50);
    for attempt in 1..=settings.write_attempts {
        match store::insert_events(pool, batch).await {
            Ok(written) => {
                metrics.events_written(written, batch.len() as u64 - written);
                return;
            }
            Err(error) if attempt < settings.write_attempts => {
                tracing::warn!(%error, attempt, events = batch.len(), "event batch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(error) => {
                tracing::error!(%error, events = batch.len(), "event batch failed; events dropped");
                metrics.events_rejected("write_failed", batch.len() as u64);
            }
        }
    }
}
