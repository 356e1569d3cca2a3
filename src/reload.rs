//! Loading a model version from Postgres into the live handle: one load at a time, the old
//! snapshot kept serving whenever a load fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;

use crate::domain::ModelVersion;
use crate::metrics::{Metrics, ReloadOutcome};
use crate::model::{LoadStats, ModelHandle};
use crate::store::{self, LoadError, VersionSelector};

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Version served before (none on the first load).
    pub old_version: Option<ModelVersion>,
    /// Version served now.
    pub new_version: ModelVersion,
    /// Items in the new version.
    pub items: usize,
    /// Co-purchase entries in the new version.
    pub pairs: usize,
    /// Time to read, validate and build the snapshot, in milliseconds.
    pub load_ms: u64,
    /// Further figures about the new snapshot.
    pub stats: LoadStats,
}

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The server runs without a database.
    #[error("this server has no database configured")]
    NoDatabase,
    /// Another reload is running.
    #[error("a reload is already in progress")]
    InProgress,
    /// The version could not be loaded; the old model keeps serving.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Serialises reloads and swaps their result into the live handle.
pub struct Reloader {
    pool: Option<PgPool>,
    model: Arc<ModelHandle>,
    metrics: Metrics,
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader reading from `pool` (none: every reload fails with `NoDatabase`).
    pub fn new(pool: Option<PgPool>, model: Arc<ModelHandle>, metrics: Metrics) -> Self {
        Self {
            pool,
            model,
            metrics,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Loads the selected version and serves it; refuses at once if a reload is running.
    pub async fn reload(&self, selector: VersionSelector) -> Result<ReloadReport, ReloadError> {
        let pool = self.pool.as_ref().ok_or(ReloadError::NoDatabase)?;
        let Ok(_guard) = self.lock.try_lock() else {
            self.metrics.reload(ReloadOutcome::Conflict);
            return Err(ReloadError::InProgress);
        };
        let started = Instant::now();
        let snapshot = match store::load_snapshot(pool, selector).await {
            Ok(snapshot) => Arc::new(snapshot),
            Err(error) => {
                self.metrics.reload(ReloadOutcome::Failure);
                tracing::warn!(%error, ?selector, "model load failed; the current model keeps serving");
                return Err(error.into());
            }
        };
        let load_time = started.elapsed();
        let old = self.model.replace(Arc::clone(&snapshot));
        self.metrics.model_loaded(&snapshot, load_time);
        self.metrics.reload(ReloadOutcome::Success);
        let report = ReloadReport {
            old_version: old.as_ref().map(|s| s.version()),
            new_version: snapshot.version(),
            items: snapshot.len(),
            pairs: snapshot.stats().pairs,
            load_ms: load_time.as_millis() as u64,
            stats: snapshot.stats().clone(),
        };
        tracing::info!(
            old_version = ?report.old_version,
            new_version = %report.new_version,
            items = report.items,
            pairs = report.pairs,
            load_ms = report.load_ms,
            "model loaded"
        );
        Ok(report)
    }

    /// At start-up: migrate if asked, then load until a model serves, backing off between tries.
    pub async fn load_at_start(
        &self,
        migrate: bool,
        selector: VersionSelector,
        initial_backoff: Duration,
        max_backoff: Duration,
    ) {
        let Some(pool) = &self.pool else { return };
        let mut backoff = initial_backoff;
        let mut migrated = !migrate;
        loop {
            if !migrated {
                match store::migrate(pool).await {
                    Ok(()) => migrated = true,
                    Err(error) => {
                        tracing::warn!(%error, retry_in = ?backoff, "cannot apply migrations")
                    }
                }
            }
            if migrated {
                if self.model.current().is_some() {
                    return;
                }
                match self.reload(selector).await {
                    Ok(_) => return,
                    Err(ReloadError::InProgress) => {}
                    Err(ReloadError::Load(LoadError::NoReadyVersion)) => tracing::info!(
                        retry_in = ?backoff,
                        "no ready model version yet; build one, then POST /reload or wait"
                    ),
                    Err(error) => tracing::warn!(%error, retry_in = ?backoff, "model not loaded"),
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max_backoff);
        }
    }
}
