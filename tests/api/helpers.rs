//! Test fixtures: a fresh database per test, model versions written into it, and a running app.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tandem::app::{Application, InitialModel};
use tandem::config::{Secret, Settings};
use tandem::domain::ModelVersion;
use tandem::offline::synthetic::SyntheticSpec;
use tandem::store;

/// The admin token every test app is configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: these tests need a real Postgres. Run them with \
             scripts/test, which starts a throwaway one."
        )
    })
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let prefix = match base
        .strip_prefix("postgres://")
        .or_else(|| base.strip_prefix("postgresql://"))
    {
        Some(rest) => match rest.split_once('/') {
            Some((authority, _)) => format!("postgres://{authority}"),
            None => format!("postgres://{rest}"),
        },
        None => panic!("DATABASE_URL must be a postgres:// URL"),
    };
    match query {
        Some(q) => format!("{prefix}/{database}?{q}"),
        None => format!("{prefix}/{database}"),
    }
}

/// A fresh, migrated database of its own, dropped again when the test is done with it.
pub struct TestDatabase {
    /// Pool on the fresh database.
    pub pool: PgPool,
    /// URL of the fresh database.
    pub url: String,
    name: String,
}

impl Drop for TestDatabase {
    /// Drops the database, so runs against a long-lived server (a shared `DATABASE_URL`) do
    /// not leave one behind per test. On a thread and runtime of its own: `drop` cannot await,
    /// and the test's runtime may be the current-thread one this call blocks. `WITH (FORCE)`
    /// ends the test app's connections that may still be open. Best effort: a failure only
    /// leaves the database behind, as before.
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(options) = PgConnectOptions::from_str(&server_url()) else {
                    return;
                };
                if let Ok(mut admin) = PgConnection::connect_with(&options).await {
                    let drop = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                    admin.execute(drop.as_str()).await.ok();
                    admin.close().await.ok();
                }
            });
        });
        cleanup.join().ok();
    }
}

/// Creates a fresh database in the server of `DATABASE_URL` and applies the migrations.
pub async fn fresh_database() -> TestDatabase {
    let url = server_url();
    let name = format!("tandem_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect_with(&PgConnectOptions::from_str(&url).unwrap())
        .await
        .expect("cannot connect to DATABASE_URL");
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap();
    admin.close().await.ok();
    let url = with_database(&url, &name);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    store::migrate(&pool).await.unwrap();
    TestDatabase { pool, url, name }
}

/// A small synthetic spec: `items` items in clusters of 20, 8 neighbours each.
pub fn small_spec(items: usize, seed: u64) -> SyntheticSpec {
    SyntheticSpec {
        items,
        dim: 8,
        neighbours: 8,
        cluster_size: 20,
        categories: 10,
        seed,
    }
}

/// Writes a ready synthetic version.
pub async fn write_version(pool: &PgPool, items: usize, seed: u64) -> ModelVersion {
    small_spec(items, seed).write_version(pool).await.unwrap()
}

/// Writes a version marked ready whose co-purchase table names an item it does not have.
pub async fn write_broken_version(pool: &PgPool) -> ModelVersion {
    let version = store::begin_version(pool, 0, 0, &serde_json::json!({"broken": true}), None)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO item_stats (version, item_id, popularity) VALUES ($1, 'a', 1), ($1, 'b', 2)",
    )
    .bind(version.0)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO co_purchase (version, item_id, other_item_id, score) VALUES ($1, 'a', 'ghost', 0.5)",
    )
    .bind(version.0)
    .execute(pool)
    .await
    .unwrap();
    store::mark_ready(pool, version, &serde_json::json!({}))
        .await
        .unwrap();
    version
}

/// A running server on a free port, on its own database.
pub struct TestApp {
    /// `http://127.0.0.1:port`.
    pub address: String,
    /// The app's database.
    pub db: TestDatabase,
    /// A client for calls.
    pub client: reqwest::Client,
    server: Option<RunningServer>,
}

/// Settings for a test app on `db`.
pub fn test_settings(db: &TestDatabase) -> Settings {
    let mut settings = Settings::defaults().unwrap();
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.database.url = Some(Secret::new(db.url.clone()));
    settings.database.max_connections = 4;
    settings.admin_token = Some(Secret::new(ADMIN_TOKEN));
    settings.pseudonym_key = Some(Secret::new("test-pseudonym-key"));
    // Tests run debug builds, many at once on few cores: a request's queueing delay there is
    // the test machine's, not a load to shed (the tests of shedding set their own limit).
    settings.server.max_queue_delay_ms = 10_000;
    settings.server.queue_delay_target_ms = 10_000;
    settings.model.retry_initial_ms = 20;
    settings.model.retry_max_ms = 200;
    settings
}

/// A server started from `settings` and `initial`: its address, and what stops and joins it.
pub struct RunningServer {
    /// `http://127.0.0.1:port`.
    pub address: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Binds a free port and serves in the background until [`RunningServer::stop`].
    pub async fn start(settings: Settings, initial: InitialModel) -> Self {
        let app = Application::build(settings, initial).await.unwrap();
        let address = format!("http://{}", app.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            address,
            stop,
            server,
        }
    }

    /// Sends the shutdown signal and waits for the server to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
    }
}

/// The id of the first item `server` recommends for `query` ("" when it recommends none).
pub async fn first_item(client: &reqwest::Client, server: &RunningServer, query: &str) -> String {
    let body: serde_json::Value = client
        .get(format!("{}/recommendations?{query}", server.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["items"][0]["item_id"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The `/metrics` text of the server at `address`.
pub async fn metrics_text(client: &reqwest::Client, address: &str) -> String {
    client
        .get(format!("{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until the server at `address` says on `/readyz` that a model is loaded.
pub async fn wait_until_ready(client: &reqwest::Client, address: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.get(format!("{address}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{address} never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a server on `db` with `settings` tweaked by the caller.
pub async fn spawn_app_with(db: TestDatabase, settings: Settings) -> TestApp {
    let server = RunningServer::start(settings, InitialModel::FromDatabase).await;
    TestApp {
        address: server.address.clone(),
        db,
        client: reqwest::Client::new(),
        server: Some(server),
    }
}

/// Starts a server on a fresh database (with no model version yet).
pub async fn spawn_app() -> TestApp {
    let db = fresh_database().await;
    let settings = test_settings(&db);
    spawn_app_with(db, settings).await
}

impl TestApp {
    /// GET `path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    /// GET `path` and parse the JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// POST /reload with `body` and the right token.
    pub async fn reload(&self, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let mut request = self
            .client
            .post(format!("{}/reload", self.address))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Waits until `/readyz` says a model is loaded.
    pub async fn wait_until_ready(&self) {
        wait_until_ready(&self.client, &self.address).await;
    }

    /// Sends the shutdown signal and waits for the server to finish; returns the app's
    /// database, which is dropped with the value (keep it to look at what the app wrote).
    pub async fn stop(mut self) -> TestDatabase {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        self.db
    }
}

/// The server `tandem serve` runs without `DATABASE_URL` (README's first command): the
/// embedded demo, here with the BM25 estimator, which trains in a fraction of EASE's time in a
/// debug build (serving is the same).
pub async fn demo_server() -> RunningServer {
    let mut params = tandem::offline::demo::demo_params();
    params.measure.estimator = tandem::offline::estimators::Estimator::Bm25;
    let (snapshot, _) = tokio::task::spawn_blocking(move || {
        tandem::offline::demo::build_demo_snapshot_with(&params)
    })
    .await
    .unwrap()
    .unwrap();
    let mut settings = Settings::defaults().unwrap();
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    // A test machine may be busy: shedding by queueing delay would answer 503 here.
    settings.server.max_queue_delay_ms = 10_000;
    settings.server.queue_delay_target_ms = 10_000;
    settings.database.url = None;
    settings.admin_token = Some(Secret::new(ADMIN_TOKEN));
    RunningServer::start(
        settings,
        InitialModel::Snapshot(std::sync::Arc::new(snapshot)),
    )
    .await
}

/// Trains a version on the whole of `history` with the default parameters (off the runtime).
pub async fn train_default(
    history: tandem::offline::history::History,
) -> tandem::offline::train::TrainedModel {
    tokio::task::spawn_blocking(move || {
        tandem::offline::train::train(
            &history,
            0..history.len(),
            &tandem::offline::train::TrainParams::default(),
            &tandem::offline::progress::Progress::hidden(),
        )
    })
    .await
    .unwrap()
    .unwrap()
}
