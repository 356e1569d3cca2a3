//! Loading a model version from Postgres into the live handle: one load at a time, the old
//! snapshot kept serving whenever a load fails; activating a version for every replica and
//! following the activations other replicas (or `tandem activate`) announce with NOTIFY.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;

use crate::catalogue::{self, CatchUpError};
use crate::domain::ModelVersion;
use crate::metrics::{Metrics, ReloadOutcome};
use crate::model::{AddPolicy, LoadStats, ModelHandle};
use crate::store::{self, Heard, LoadError, VersionSelector};

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
    /// The version serves here but could not be made active for the other replicas.
    #[error(
        "version {version} serves on this replica but was not activated for the others: {source}"
    )]
    Activation {
        /// The version now serving here.
        version: ModelVersion,
        /// Why activation failed.
        source: LoadError,
    },
}

/// How often a replica checks the active version even without a notification.
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Serialises reloads and swaps their result into the live handle.
pub struct Reloader {
    pool: Option<PgPool>,
    model: Arc<ModelHandle>,
    metrics: Metrics,
    lock: tokio::sync::Mutex<()>,
    /// How a loaded version takes in the items the live catalogue added.
    catalogue: AddPolicy,
}

impl Reloader {
    /// A reloader reading from `pool` (none: every reload fails with `NoDatabase`).
    pub fn new(
        pool: Option<PgPool>,
        model: Arc<ModelHandle>,
        metrics: Metrics,
        catalogue: AddPolicy,
    ) -> Self {
        Self {
            pool,
            model,
            metrics,
            lock: tokio::sync::Mutex::new(()),
            catalogue,
        }
    }

    /// Loads the selected version and serves it; refuses at once if a reload is running.
    pub async fn reload(&self, selector: VersionSelector) -> Result<ReloadReport, ReloadError> {
        let pool = self.pool.as_ref().ok_or(ReloadError::NoDatabase)?;
        let Ok(guard) = self.lock.try_lock() else {
            self.metrics.reload(ReloadOutcome::Conflict);
            return Err(ReloadError::InProgress);
        };
        let started = Instant::now();
        // The live catalogue's changes are applied before the version serves (the catalogue
        // may have changed since the version was trained, or while it loaded).
        let loaded = match store::load_snapshot(pool, selector).await {
            Ok(snapshot) => catalogue::with_catalogue(pool, snapshot, self.catalogue)
                .await
                .map_err(|error| match error {
                    CatchUpError::Database(e) => LoadError::Database(e),
                    CatchUpError::Task(e) => LoadError::Task(e),
                }),
            Err(error) => Err(error),
        };
        let snapshot = match loaded {
            Ok(snapshot) => Arc::new(snapshot),
            Err(error) => {
                self.metrics.reload(ReloadOutcome::Failure);
                tracing::warn!(%error, ?selector, "model load failed; the current model keeps serving");
                return Err(error.into());
            }
        };
        let load_time = started.elapsed();
        let old = self.model.replace(Arc::clone(&snapshot));
        // The load is done: the catch-up below publishes through the handle, which serialises
        // its writers, so another reload need not be refused while it runs.
        drop(guard);
        // Changes applied to the old snapshot after the new one read the catalogue.
        if let Err(error) = catalogue::catch_up(pool, &self.model, self.catalogue).await {
            tracing::warn!(%error, "cannot apply catalogue changes; the follower retries");
        }
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

    /// Loads the selected version here, then makes it the active one, which every other
    /// replica then loads (see [`Reloader::follow_activations`]).
    pub async fn activate(&self, selector: VersionSelector) -> Result<ReloadReport, ReloadError> {
        let report = self.reload(selector).await?;
        let pool = self.pool.as_ref().ok_or(ReloadError::NoDatabase)?;
        store::activate(pool, report.new_version)
            .await
            .map_err(|source| ReloadError::Activation {
                version: report.new_version,
                source,
            })?;
        Ok(report)
    }

    /// Serves whatever version is activated, for as long as the process runs: LISTENs on the
    /// activation channel, and after every (re)connection loads the active version in case a
    /// notification was missed while disconnected.
    pub async fn follow_activations(self: Arc<Self>, retry: Duration) {
        let Some(pool) = self.pool.clone() else {
            return;
        };
        // Besides notifications, a periodic check: it heals a replica left behind (a reload
        // that lost a race, an activation that failed after a local load).
        let periodic = async {
            let mut tick = tokio::time::interval(RESYNC_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.serve_active(&pool, retry).await;
            }
        };
        tokio::join!(self.listen_for_activations(&pool, retry), periodic);
    }

    /// The LISTEN half of [`Reloader::follow_activations`].
    async fn listen_for_activations(&self, pool: &PgPool, retry: Duration) {
        let pool = pool.clone();
        loop {
            let mut listener = match store::ActivationListener::connect(&pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?retry, "cannot listen for activations");
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            self.serve_active(&pool, retry).await;
            loop {
                match listener.next().await {
                    // The announcement names the version, but it can arrive late (after a
                    // newer activation): what is active now is what counts.
                    Ok(Heard::Activation) => self.serve_active(&pool, retry).await,
                    // Announcements may have been lost while the connection was down.
                    Ok(Heard::Reconnected) => self.serve_active(&pool, retry).await,
                    Err(error) => {
                        tracing::warn!(%error, retry_in = ?retry, "activation listener failed");
                        tokio::time::sleep(retry).await;
                        break;
                    }
                }
            }
        }
    }

    /// Loads the active version unless it already serves.
    async fn serve_active(&self, pool: &PgPool, retry: Duration) {
        match store::active_version(pool).await {
            Ok(Some(version)) => self.serve_version(version, retry).await,
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot read the active version"),
        }
    }

    /// Loads `version` unless it already serves, waiting out a reload in progress.
    async fn serve_version(&self, version: ModelVersion, retry: Duration) {
        for _ in 0..20 {
            if self.model.current().is_some_and(|s| s.version() == version) {
                return;
            }
            match self.reload(VersionSelector::Exact(version)).await {
                Ok(_) => return,
                Err(ReloadError::InProgress) => {
                    tokio::time::sleep(retry.min(Duration::from_millis(200))).await
                }
                // Logged by `reload`; the old model keeps serving.
                Err(_) => return,
            }
        }
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
