//! The batched event writer: a bounded queue in front of one background task that writes
//! events to Postgres in batches (by size, or after a short interval), retries a failed batch,
//! and drains the queue on shutdown.
//!
//! The queue's capacity counts every accepted event until its batch is written (a semaphore,
//! not the channel's length, since the writer holds a batch while it fills). A full queue
//! refuses the whole submission (the handler answers 503, so the storefront can
//! retry) rather than dropping events; a batch that still fails after its retries is counted
//! in `tandem_events_rejected_total{reason="write_failed"}` and logged, never lost silently.
//!
//! An erasure removes what the queue holds of the shopper at that moment (counted as
//! `reason="erased"`) and deletes the stored rows, under the lock the writer holds while it
//! writes a batch, so no batch of older events lands after the delete. Events that arrive
//! after the erasure are new data and are stored like any other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use std::sync::Arc;

use tokio::sync::{mpsc, Notify, Semaphore};
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
    /// Recent request ids remembered with the variant that served them, so events citing
    /// them are attributed to it.
    pub attribution_capacity: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            queue_capacity: 100_000,
            batch_size: 1_000,
            flush_interval_ms: 200,
            write_attempts: 5,
            max_events_per_request: 1_000,
            attribution_capacity: 200_000,
        }
    }
}

impl EventSettings {
    /// Checks ranges serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue_capacity == 0
            || self.batch_size == 0
            || self.max_events_per_request == 0
            || self.attribution_capacity == 0
        {
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

/// An event in the queue with its place in the order of submission.
type Queued = (u64, Event);

/// Handle of the writer task; submissions are cheap and never wait.
pub struct EventWriter {
    pool: PgPool,
    erased: Arc<Erased>,
    /// Held while a batch is filtered and written, and while an erasure registers and deletes.
    writing: Arc<tokio::sync::Mutex<()>>,
    /// The place the next submitted event takes.
    sequence: AtomicU64,
    queue: mpsc::UnboundedSender<Queued>,
    /// One permit per event the queue still has room for.
    room: Arc<Semaphore>,
    capacity: usize,
    stop: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
    metrics: Metrics,
}

impl EventWriter {
    /// Starts the writer task on the current runtime.
    pub fn start(pool: PgPool, settings: EventSettings, metrics: Metrics) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let stop = Arc::new(Notify::new());
        let room = Arc::new(Semaphore::new(settings.queue_capacity));
        let erased = Arc::new(Erased::default());
        let writing = Arc::new(tokio::sync::Mutex::new(()));
        let task = tokio::spawn(run(
            receiver,
            pool.clone(),
            settings.clone(),
            metrics.clone(),
            Arc::clone(&stop),
            Arc::clone(&room),
            Writing {
                erased: Arc::clone(&erased),
                lock: Arc::clone(&writing),
            },
        ));
        Self {
            pool,
            queue,
            room,
            erased,
            writing,
            sequence: AtomicU64::new(0),
            capacity: settings.queue_capacity,
            stop,
            task: Mutex::new(Some(task)),
            metrics,
        }
    }

    /// Queues every event of `events`, or none of them.
    pub fn submit(&self, events: Vec<Event>) -> Result<(), SubmitError> {
        if self.queue.is_closed() {
            return Err(SubmitError::Closed);
        }
        let count = u32::try_from(events.len()).map_err(|_| SubmitError::QueueFull)?;
        self.room
            .try_acquire_many(count)
            .map_err(|_| SubmitError::QueueFull)?
            // The writer gives the room back once the events are written.
            .forget();
        for event in events {
            let kind = event.kind;
            let place = self.sequence.fetch_add(1, Ordering::Relaxed);
            self.queue
                .send((place, event))
                .map_err(|_| SubmitError::Closed)?;
            self.metrics.event_received(kind);
        }
        self.metrics
            .event_queue_depth(self.capacity - self.room.available_permits());
        Ok(())
    }

    /// Erases a shopper (user key `shopper`, session key `session`, both hex) as of `until`:
    /// drops their queued events accepted until then and deletes the stored ones; returns how
    /// many rows were deleted. Events accepted later are kept.
    pub async fn erase(
        &self,
        shopper: &str,
        session: &str,
        until: DateTime<Utc>,
    ) -> Result<u64, sqlx::Error> {
        // Under the writing lock: a batch being written finishes before the delete (which
        // then removes it), and every later batch is filtered.
        let _writing = self.writing.lock().await;
        let queued_before = self.sequence.load(Ordering::Relaxed);
        self.erased.add(shopper, session, until, queued_before);
        store::delete_shopper_events(&self.pool, shopper, session, until).await
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

/// Shopper and session keys erased while some of their events may still be queued, each with
/// the time it was erased as of (queued events accepted until then are dropped, later ones
/// kept) and the place in the queue the erasure came at. A key is forgotten as soon as the
/// writer has taken every event queued before that place, so this holds at most the erasures
/// of one batch's time.
#[derive(Default)]
struct Erased {
    keys: Mutex<HashMap<String, (DateTime<Utc>, u64)>>,
}

impl Erased {
    fn add(&self, shopper: &str, session: &str, until: DateTime<Utc>, queued_before: u64) {
        if let Ok(mut keys) = self.keys.lock() {
            for key in [shopper, session] {
                let entry = keys
                    .entry(key.to_string())
                    .or_insert((until, queued_before));
                *entry = (entry.0.max(until), entry.1.max(queued_before));
            }
        }
    }

    /// Drops the batch's events erased after they were accepted, and forgets the erasures
    /// every one of whose earlier events has now been taken (`taken`: the place after the
    /// last event received). Returns the events to write and how many were dropped.
    fn filter(&self, batch: &mut Vec<Queued>, taken: u64) -> (Vec<Event>, usize) {
        let Ok(mut keys) = self.keys.lock() else {
            return (batch.drain(..).map(|(_, e)| e).collect(), 0);
        };
        let before = batch.len();
        let erased = |key: &Option<String>, event: &Event| {
            key.as_ref()
                .and_then(|k| keys.get(k))
                .is_some_and(|&(until, _)| event.received_at <= until)
        };
        let kept: Vec<Event> = batch
            .drain(..)
            .filter(|(_, e)| !erased(&e.shopper, e) && !erased(&e.session, e))
            .map(|(_, e)| e)
            .collect();
        keys.retain(|_, &mut (_, queued_before)| queued_before > taken);
        let dropped = before - kept.len();
        (kept, dropped)
    }
}

/// What the writer task shares with erasures.
struct Writing {
    erased: Arc<Erased>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Writing {
    /// Writes `batch` (emptying it) without the events erased since they were queued.
    async fn write(
        &self,
        batch: &mut Vec<Queued>,
        pool: &PgPool,
        settings: &EventSettings,
        metrics: &Metrics,
    ) {
        let taken = batch.last().map_or(0, |(place, _)| place + 1);
        let _writing = self.lock.lock().await;
        let (events, dropped) = self.erased.filter(batch, taken);
        if dropped > 0 {
            metrics.events_rejected("erased", dropped as u64);
        }
        if !events.is_empty() {
            write_batch(pool, &events, settings, metrics).await;
        }
    }
}

/// The writer task: batches by size or interval; on the stop signal, closes the queue and
/// writes what is left.
async fn run(
    mut receiver: mpsc::UnboundedReceiver<Queued>,
    pool: PgPool,
    settings: EventSettings,
    metrics: Metrics,
    stop: Arc<Notify>,
    room: Arc<Semaphore>,
    writing: Writing,
) {
    let interval = Duration::from_millis(settings.flush_interval_ms);
    let mut batch: Vec<Queued> = Vec::with_capacity(settings.batch_size);
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
        let mut stopping = false;
        while batch.len() < settings.batch_size {
            let room_in_batch = settings.batch_size - batch.len();
            tokio::select! {
                biased;
                () = stop.notified() => {
                    stopping = true;
                    break;
                }
                more = tokio::time::timeout_at(deadline, receiver.recv_many(&mut batch, room_in_batch)) => {
                    if matches!(more, Ok(0) | Err(_)) {
                        break;
                    }
                }
            }
        }
        let accepted = batch.len();
        writing.write(&mut batch, &pool, &settings, &metrics).await;
        room.add_permits(accepted);
        metrics.event_queue_depth(settings.queue_capacity - room.available_permits());
        if stopping {
            break;
        }
    }
    receiver.close();
    while receiver.recv_many(&mut batch, settings.batch_size).await > 0 {
        let accepted = batch.len();
        writing.write(&mut batch, &pool, &settings, &metrics).await;
        room.add_permits(accepted);
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
