//! Building the application from settings: the shared state ([`build_state`]: the model
//! handle, the reloader, the serving service with its cap store and event writer), the router
//! and the bound listener; then serving until a shutdown signal, with a bounded grace period,
//! and draining the event queue.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::capping::{CapStore, CapStoreKind, MemoryCapStore, Pseudonymizer, RedisCapStore};
use crate::catalogue::Catalogue;
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
    /// A database is configured but no pseudonym key: each process would key its own.
    #[error(
        "TANDEM_PSEUDONYM_KEY is not set: with a database, every replica and restart must \
         pseudonymise shoppers with one key, or erasures cannot find what was stored"
    )]
    PseudonymKey,
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
    connections: http::server::ConnectionLimits,
    start_up_load: Option<JoinHandle<()>>,
    erasures: Option<JoinHandle<()>>,
    catalogue: Option<JoinHandle<()>>,
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
        if settings.database.url.is_some() && settings.pseudonym_key.is_none() {
            return Err(StartError::PseudonymKey);
        }
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
        let state = build_state(&settings, model, pool.clone(), caps, metrics)?;
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
        // Every replica applies every catalogue change announced in Postgres.
        let catalogue = pool.is_some().then(|| {
            let catalogue = Arc::clone(&state.catalogue);
            let retry = Duration::from_millis(settings.model.retry_initial_ms);
            tokio::spawn(catalogue.follow(retry))
        });
        // Every replica applies every erasure announced in Postgres to what it holds.
        let erasures = pool.map(|pool| {
            let recommender = state.recommender.clone();
            let retry = Duration::from_millis(settings.model.retry_max_ms);
            tokio::spawn(recommender.follow_erasures(pool, retry))
        });
        let server = &settings.server;
        let limits = RouterLimits {
            request_timeout: settings.request_timeout(),
            max_body_bytes: server.max_body_bytes,
            body_read_timeout: Duration::from_millis(server.body_read_timeout_ms),
            max_uri_bytes: server.max_uri_bytes,
            max_header_bytes: server.max_header_bytes,
            max_in_flight: server.max_in_flight,
        };
        let router = http::router(state.clone(), limits);
        let connections = http::server::ConnectionLimits {
            max_connections: server.max_connections,
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            // Room for the longest target and header fields we answer ourselves (with the
            // JSON error shape), and the request line around them.
            max_buffer_bytes: server.max_uri_bytes + server.max_header_bytes + 4096,
            max_queue_delay: Duration::from_millis(server.max_queue_delay_ms),
            queue_delay_target: Duration::from_millis(server.queue_delay_target_ms),
            queue_delay_interval: Duration::from_millis(server.queue_delay_interval_ms),
        };
        Ok(Self {
            listener,
            router,
            state,
            shutdown_grace: Duration::from_millis(server.shutdown_grace_ms),
            connections,
            start_up_load,
            erasures,
            catalogue,
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
        let server = http::server::serve(
            self.listener,
            self.router,
            self.connections,
            self.state.metrics.clone(),
            signal,
        );
        let grace = self.shutdown_grace;
        let result = tokio::select! {
            () = server => Ok(()),
            () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "grace period over; exiting with requests still in flight");
                Ok(())
            }
        };
        for task in [self.start_up_load, self.erasures, self.catalogue]
            .into_iter()
            .flatten()
        {
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
        settings.catalogue.add_policy(),
    ));
    let catalogue = Arc::new(Catalogue::new(
        pool.clone(),
        Arc::clone(&model),
        settings.catalogue.add_policy(),
    ));
    let erasures = pool.clone();
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
        erasures,
        metrics: metrics.clone(),
    });
    Ok(AppState {
        model,
        reloader,
        catalogue,
        catalogue_max_body_bytes: settings.catalogue.max_body_bytes,
        metrics,
        recommender,
        admin_token: settings.admin_token.clone(),
        max_query_bytes: settings.server.max_query_bytes,
        event_limits: EventLimits {
            max_events: settings.events.max_events_per_request,
            max_future_skew: chrono::Duration::minutes(10),
        },
        // Checked by `Settings::validate`: every entry is a bare origin, so a valid header.
        cors_origins: settings
            .server
            .cors_origins
            .iter()
            .filter_map(|origin| HeaderValue::from_str(origin).ok())
            .collect(),
        explore_open: settings.explore.open,
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
        (CapStoreKind::Memory, _) => Ok(Arc::new(MemoryCapStore::with_metrics(
            settings.capping.clone(),
            metrics.clone(),
        ))),
    }
}

/// The shopper-id hash, keyed from settings or, without a configured key (only without a
/// database, see [`Application::build`]), at random: the in-memory state it keys dies with
/// the process anyway.
fn pseudonymizer(settings: &Settings) -> Pseudonymizer {
    match &settings.pseudonym_key {
        Some(key) => Pseudonymizer::new(key.expose().as_bytes()),
        None => {
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
