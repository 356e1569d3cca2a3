//! Faults: the database dropping out during a reload or missing at start, and a shutdown
//! under load. A proxy in front of the test's Postgres plays the network failing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::app::InitialModel;
use tandem::config::Secret;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{
    fresh_database, spawn_app_with, test_settings, wait_until_ready, write_version, RunningServer,
};

/// A TCP proxy to Postgres that can be cut (every connection dropped, new ones refused) and
/// restored.
struct FlakyProxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl FlakyProxy {
    async fn start(upstream: String, up: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(up));
        let (cut, _) = watch::channel(0u64);
        let (flag, cuts) = (Arc::clone(&up), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees its connection closed
                }
                let upstream = upstream.clone();
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { port, up, cut }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `url` with its host and port replaced by the proxy's.
fn through(url: &str, port: u16) -> String {
    let (scheme_user, rest) = url.split_once('@').unwrap();
    let (_, path) = rest.split_once('/').unwrap();
    format!("{scheme_user}@127.0.0.1:{port}/{path}")
}

fn upstream(url: &str) -> String {
    let rest = url.split_once('@').unwrap().1;
    rest.split_once('/').unwrap().0.to_string()
}

#[tokio::test]
async fn a_database_that_drops_out_costs_a_reload_not_the_model_and_the_next_reload_succeeds() {
    let db = fresh_database().await;
    let v1 = write_version(&db.pool, 30, 1).await;
    let proxy = FlakyProxy::start(upstream(&db.url), true).await;
    let mut settings = test_settings(&db);
    settings.database.url = Some(Secret::new(through(&db.url, proxy.port)));
    settings.database.acquire_timeout_ms = 1_000;
    let app = spawn_app_with(db, settings).await;
    app.wait_until_ready().await;
    let v2 = write_version(&app.db.pool, 40, 2).await;

    proxy.down();
    let (status, body) = app.reload(Some(serde_json::json!({"version": v2.0}))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "database_unavailable");
    let (status, body) = app.get_json("/recommendations?cart=S0000001").await;
    assert_eq!((status, body["model_version"].as_i64()), (200, Some(v1.0)));

    proxy.up();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = app.reload(Some(serde_json::json!({"version": v2.0}))).await;
        if status == 200 {
            assert_eq!(body["new_version"], v2.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload never succeeded again: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_database_missing_at_start_leaves_the_server_live_but_not_ready_until_it_returns() {
    let db = fresh_database().await;
    let v1 = write_version(&db.pool, 30, 1).await;
    let proxy = FlakyProxy::start(upstream(&db.url), false).await;
    let mut settings = test_settings(&db);
    settings.database.url = Some(Secret::new(through(&db.url, proxy.port)));
    settings.database.acquire_timeout_ms = 500;
    let app = spawn_app_with(db, settings).await;
    for _ in 0..5 {
        assert_eq!(app.get("/healthz").await.status(), 200);
        assert_eq!(app.get("/readyz").await.status(), 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.up();
    app.wait_until_ready().await;
    let (_, body) = app.get_json("/model").await;
    assert_eq!(body["version"], v1.0);
    app.stop().await;
}

#[tokio::test]
async fn a_shutdown_under_load_lets_every_request_in_flight_finish() {
    let db = fresh_database().await;
    write_version(&db.pool, 30, 1).await;
    let server = RunningServer::start(test_settings(&db), InitialModel::FromDatabase).await;
    let client = reqwest::Client::new();
    let url = format!("{}/recommendations?cart=S0000001,S0000002", server.address);
    wait_until_ready(&client, &server.address).await;
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, ok, failed) =
                (client.clone(), url.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                loop {
                    match client.get(&url).send().await {
                        // A response that arrives must be a whole, good one.
                        Ok(r) => {
                            let good = r.status() == 200;
                            if good && r.bytes().await.is_ok() {
                                ok.fetch_add(1, Ordering::SeqCst);
                            } else {
                                failed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        // No response at all: the listener has closed, or an idle keep-alive
                        // connection was closed as the request went out (the server never read
                        // it; clients retry such requests). A response cut short after its head
                        // arrived is caught above, as a body that fails to read.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop().await;
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .expect("a client hung after shutdown")
            .unwrap();
    }
    assert!(
        ok.load(Ordering::SeqCst) > 50,
        "{}",
        ok.load(Ordering::SeqCst)
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_get_an_immediate_503_not_a_queue() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = fresh_database().await;
    write_version(&db.pool, 30, 1).await;
    let mut settings = test_settings(&db);
    settings.server.max_in_flight = 1;
    let app = spawn_app_with(db, settings).await;
    app.wait_until_ready().await;

    // A client that sends its headers and then trickles its body holds the one slot.
    let body = r#"{"cart": ["S0000001"]}"#;
    let address = app.address.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /recommendations HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body.as_bytes()[..1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut early = [0u8; 64];
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), slow.read(&mut early)).await
    {
        panic!(
            "the server answered early: {}",
            String::from_utf8_lossy(&early[..n])
        );
    }

    let (status, answer) = app.get_json("/recommendations?cart=S0000001").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("overloaded"))
    );
    // Operations endpoints are not limited: a busy server still says how it is.
    assert_eq!(app.get("/healthz").await.status(), 200);

    slow.write_all(&body.as_bytes()[1..]).await.unwrap();
    let mut response = vec![0u8; 16];
    slow.read_exact(&mut response).await.unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    app.stop().await;
}
