//! Building the application from settings: the shared state ([`build_state`]: the model
//! handle, the reloader, the serving service with its cap store and event writer), the router
//! and the bound listener; then serving until a shutdown signal, with a bounded grace period,
//! and draining the event queue.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::capping::{CapStore, CapStoreKind, MemoryCapStore, Pseudonymizer, RedisCapStore};
use crate::config::Settings;
use crate::events::{EventLimits, EventWriter};
use crate::experiments::Experiments;
use crate::http::{self, AppState, RouterLimits};
use crate::metrics::Metrics;
use crate::model::{ModelHandle, Snapshot};
use crate::reload::Reloader;
use crate::serving::{self, Recommender};
use crate::store::{self, VersionSelector};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// Address asked for.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database URL is malformed.
    #[error("invalid DATABASE_URL: {0}")]
    DatabaseUrl(sqlx::Error),
    /// The experiments are inconsistent (settings validation catches this first).
    #[error("invalid experiments: {0}")]
    Experiments(String),
    /// The Redis cap store cannot be set up (a malformed URL).
    #[error("invalid REDIS_URL: {0}")]
    Redis(String),
    /// The metrics registry refused a metric (a bug).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A built application: bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    shutdown_grace: Duration,
    start_up_load: Option<JoinHandle<()>>,
}

/// Where the first model comes from.
pub enum InitialModel {
    /// Load from Postgres (the configured version or the newest ready one), retrying with
    /// back-off until it succeeds.
    FromDatabase,
    /// Serve this snapshot from the start (the embedded demo, tests); reloads still use
    /// Postgres when one is configured.
    Snapshot(Arc<Snapshot>),
}

impl Application {
    /// Binds the listener (port 0 picks a free one) and prepares everything the server needs.
    pub async fn build(settings: Settings, initial: InitialModel) -> Result<Self, StartError> {
        // Before the model is loaded, so its pages follow the setting too.
        crate::huge_pages::set_transparent_huge_pages(settings.server.transparent_huge_pages);
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| StartError::Bind { address, source })?;
        let pool = match &settings.database.url {
            Some(url) => Some(
                store::connect_lazy(
                    url.expose(),
                    settings.database.max_connections,
                    Duration::from_millis(settings.database.acquire_timeout_ms),
                )
                .map_err(StartError::DatabaseUrl)?,
            ),
            None => None,
        };
        let metrics = Metrics::new()?;
        let caps = cap_store(&settings, &metrics)?;
        let model = Arc::new(ModelHandle::default());
        let state = build_state(&settings, model, pool, caps, metrics)?;
        let start_up_load = match initial {
            InitialModel::Snapshot(snapshot) => {
                state.metrics.model_loaded(&snapshot, Duration::ZERO);
                state.model.replace(snapshot);
                None
            }
            InitialModel::FromDatabase => {
                let reloader = Arc::clone(&state.reloader);
                let selector = settings.model.version.map_or(VersionSelector::Active, |v| {
                    VersionSelector::Exact(crate::domain::ModelVersion(v))
                });
                let migrate = settings.database.migrate_on_start;
                let initial_backoff = Duration::from_millis(settings.model.retry_initial_ms);
                let max_backoff = Duration::from_millis(settings.model.retry_max_ms);
                // A replica pinned to a version stays on it; the others follow activations.
                let follow = settings.model.version.is_none();
                Some(tokio::spawn(async move {
                    reloader
                        .load_at_start(migrate, selector, initial_backoff, max_backoff)
                        .await;
                    if follow {
                        reloader.follow_activations(max_backoff).await;
                    }
                }))
            }
        };
        let limits = RouterLimits {
            request_timeout: settings.request_timeout(),
            max_body_bytes: settings.server.max_body_bytes,
            max_in_flight: settings.server.max_in_flight,
        };
        let router = http::router(state.clone(), limits);
        Ok(Self {
            listener,
            router,
            state,
            shutdown_grace: Duration::from_millis(settings.server.shutdown_grace_ms),
            start_up_load,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The state handlers share (the model handle, metrics, reloader).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish for at most the
    /// configured grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stopping = Arc::new(tokio::sync::Notify::new());
        let signal = {
            let stopping = Arc::clone(&stopping);
            async move {
                shutdown.await;
                tracing::info!("shutting down: no new connections, finishing in-flight requests");
                stopping.notify_one();
            }
        };
        let address = self.listener.local_addr()?;
        tracing::info!(%address, "listening");
        // No Nagle delay: with it, a small segment waits while an earlier small one is still
        // unacknowledged, and a client may hold its ACK for tens of milliseconds (delayed
        // ACK). hyper writes a response in one `writev`, so this guards the partial writes of
        // a full socket buffer and whatever writes come later; HTTP servers set it as a rule.
        let listener = self.listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
            }
        });
        let server = axum::serve(listener, self.router).with_graceful_shutdown(signal);
        let grace = self.shutdown_grace;
        let result = tokio::select! {
            result = server.into_future() => result,
            () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "grace period over; exiting with requests still in flight");
                Ok(())
            }
        };
        if let Some(task) = self.start_up_load {
            task.abort();
        }
        // Requests are done: whatever events they queued are written before we exit.
        if let Some(writer) = self.state.recommender.event_writer() {
            writer.shutdown(grace).await;
        }
        result
    }
}

/// Builds the state the router shares from `settings`, around the model handle and the cap
/// store: the one place it is put together, for the server and for the router's tests. With
/// no `pool` there is no event writer, and reloads answer that no database is configured.
pub fn build_state(
    settings: &Settings,
    model: Arc<ModelHandle>,
    pool: Option<PgPool>,
    caps: Arc<dyn CapStore>,
    metrics: Metrics,
) -> Result<AppState, StartError> {
    // Checked before the event writer's task starts, so a bad configuration leaves none behind.
    let experiments = Experiments::build(&settings.experiments, &settings.pipeline)
        .map_err(StartError::Experiments)?;
    let reloader = Arc::new(Reloader::new(
        pool.clone(),
        Arc::clone(&model),
        metrics.clone(),
    ));
    let events = pool.map(|pool| {
        Arc::new(EventWriter::start(
            pool,
            settings.events.clone(),
            metrics.clone(),
        ))
    });
    let layers = settings.clone();
    let resolver: Arc<serving::ConfigResolver> = Arc::new(move |tuned| {
        let pipeline = layers.pipeline_for(tuned).map_err(|e| e.to_string())?;
        let experiments = Experiments::build(&layers.experiments, &pipeline)?;
        Ok((pipeline, experiments))
    });
    let recommender = Recommender::new(serving::Parts {
        resolver: Some(resolver),
        pipeline: settings.pipeline.clone(),
        experiments,
        caps,
        capping_enabled: settings.capping.enabled,
        pseudonymizer: pseudonymizer(settings),
        attribution_capacity: NonZeroUsize::new(settings.events.attribution_capacity)
            .unwrap_or(NonZeroUsize::MIN),
        events,
        metrics: metrics.clone(),
    });
    Ok(AppState {
        model,
        reloader,
        metrics,
        recommender,
        admin_token: settings.admin_token.clone(),
        max_query_bytes: settings.server.max_query_bytes,
        event_limits: EventLimits {
            max_events: settings.events.max_events_per_request,
            max_future_skew: chrono::Duration::minutes(10),
        },
    })
}

/// The configured cap store: in memory, or Redis (connected lazily, so a Redis that is down at
/// start only means uncapped requests until it is back).
fn cap_store(settings: &Settings, metrics: &Metrics) -> Result<Arc<dyn CapStore>, StartError> {
    match (settings.capping.store, &settings.redis_url) {
        (CapStoreKind::Redis, Some(url)) => {
            let store = RedisCapStore::new(settings.capping.clone(), url.expose(), metrics.clone())
                .map_err(|e| StartError::Redis(e.to_string()))?;
            Ok(Arc::new(store))
        }
        (CapStoreKind::Redis, None) => Err(StartError::Redis("REDIS_URL is not set".into())),
        (CapStoreKind::Memory, _) => Ok(Arc::new(MemoryCapStore::new(settings.capping.clone()))),
    }
}

/// The shopper-id hash, keyed from settings or, without a configured key, at random: state
/// then cannot be joined across restarts, which is harmless for an in-memory store.
fn pseudonymizer(settings: &Settings) -> Pseudonymizer {
    match &settings.pseudonym_key {
        Some(key) => Pseudonymizer::new(key.expose().as_bytes()),
        None => {
            if settings.database.url.is_some() {
                tracing::warn!(
                    "TANDEM_PSEUDONYM_KEY is not set: stored events get a key that dies with \
                     this process, so DELETE /shoppers cannot find them after a restart"
                );
            }
            let key: [u8; 32] = rand::random();
            Pseudonymizer::new(&key)
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
