//! Frequency capping shared through Redis: two servers in one process agree on what a shopper
//! has seen and dismissed, and a Redis that is down costs capping, never an answer.
//!
//! These tests need `REDIS_URL` (scripts/test starts a throwaway Redis); without it they fail,
//! as the Postgres tests do without `DATABASE_URL`.

use serde_json::json;
use tandem::app::InitialModel;
use tandem::capping::CapStoreKind;
use tandem::config::{Secret, Settings};

use crate::helpers::{
    first_item, fresh_database, metrics_text, test_settings, wait_until_ready, write_version,
    RunningServer, TestDatabase,
};

fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "REDIS_URL is not set: these tests need a real Redis. Run them with scripts/test, \
                 which starts a throwaway one."
            )
        })
}

/// Settings for a server on `db` whose capping lives in Redis under a prefix of its own.
fn redis_settings(db: &TestDatabase, url: &str, prefix: &str) -> Settings {
    let mut settings = test_settings(db);
    settings.capping.store = CapStoreKind::Redis;
    settings.capping.redis_prefix = prefix.to_string();
    settings.capping.max_impressions_per_item = 1;
    settings.capping.redis_timeout_ms = 500;
    settings.redis_url = Some(Secret::new(url));
    // Replicas share the pseudonym key, or they would not recognise one another's shoppers.
    settings.pseudonym_key = Some(Secret::new("shared-test-key"));
    settings
}

#[tokio::test]
async fn two_servers_share_impression_caps_and_dismissals_through_redis() {
    let url = redis_url();
    let db = fresh_database().await;
    write_version(&db.pool, 40, 3).await;
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let a = RunningServer::start(
        redis_settings(&db, &url, &prefix),
        InitialModel::FromDatabase,
    )
    .await;
    let b = RunningServer::start(
        redis_settings(&db, &url, &prefix),
        InitialModel::FromDatabase,
    )
    .await;
    let client = reqwest::Client::new();
    wait_until_ready(&client, &a.address).await;
    wait_until_ready(&client, &b.address).await;

    let query = "cart=S0000001&k=1&user=alice";
    let shown_by_a = first_item(&client, &a, query).await;
    assert!(!shown_by_a.is_empty());
    // One impression per item is the cap: B must not show alice the same item again.
    let shown_by_b = first_item(&client, &b, query).await;
    assert_ne!(shown_by_b, shown_by_a, "b saw a's impression through redis");
    assert_eq!(
        first_item(&client, &b, "cart=S0000001&k=1&user=bob").await,
        shown_by_a
    );

    // carol dismisses an item on A; B keeps it from her.
    let carol = "cart=S0000001&k=1&user=carol";
    let top = first_item(&client, &b, "cart=S0000001&k=1").await;
    let response = client
        .post(format!("{}/events", a.address))
        .json(&json!([{"kind": "dismiss", "item_id": top, "user": "carol"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_ne!(first_item(&client, &b, carol).await, top);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_redis_that_is_down_costs_capping_not_answers() {
    let db = fresh_database().await;
    write_version(&db.pool, 40, 3).await;
    // Nothing listens on port 9 (discard) here: every Redis call fails.
    let settings = redis_settings(&db, "redis://127.0.0.1:9", "down");
    let server = RunningServer::start(settings, InitialModel::FromDatabase).await;
    let client = reqwest::Client::new();
    wait_until_ready(&client, &server.address).await;
    for _ in 0..3 {
        let query = "cart=S0000001&k=1&user=dave";
        assert!(!first_item(&client, &server, query).await.is_empty());
    }
    let errors = capping_errors(&client, &server).await;
    assert!(errors >= 3.0, "{errors}");
    server.stop().await;
}

async fn capping_errors(client: &reqwest::Client, server: &RunningServer) -> f64 {
    metrics_text(client, &server.address)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("tandem_capping_store_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn redis_stopped_under_load_costs_capping_not_a_single_request() {
    // Starts a redis-server of its own; REDIS_URL says the suite was given one to run with.
    redis_url();
    // A Redis of this test's own, so stopping it disturbs no other test.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let Ok(mut redis) = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
    else {
        eprintln!("SKIPPED: no redis-server binary to start and stop");
        return;
    };
    let db = fresh_database().await;
    write_version(&db.pool, 40, 3).await;
    let url = format!("redis://127.0.0.1:{port}");
    let server = RunningServer::start(
        redis_settings(&db, &url, "stop"),
        InitialModel::FromDatabase,
    )
    .await;
    let client = reqwest::Client::new();
    wait_until_ready(&client, &server.address).await;

    let stop_at = std::time::Instant::now() + std::time::Duration::from_millis(500);
    let end = stop_at + std::time::Duration::from_millis(1_000);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (client, address) = (client.clone(), server.address.clone());
            tokio::spawn(async move {
                let (mut ok, mut other) = (0usize, Vec::new());
                let mut i = 0;
                while std::time::Instant::now() < end {
                    i += 1;
                    let url = format!("{address}/recommendations?cart=S0000001&user=u{w}-{i}");
                    match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r) => other.push(r.status().as_u16()),
                        Err(e) => panic!("request failed: {e}"),
                    }
                }
                (ok, other)
            })
        })
        .collect();
    tokio::time::sleep_until(stop_at.into()).await;
    let errors_before = capping_errors(&client, &server).await;
    redis.kill().await.unwrap();
    let mut served = 0;
    for worker in workers {
        let (ok, other) = worker.await.unwrap();
        assert!(
            other.is_empty(),
            "non-200 answers while redis stopped: {other:?}"
        );
        served += ok;
    }
    assert!(served > 20, "{served}");
    let errors = capping_errors(&client, &server).await;
    assert!(
        errors > errors_before,
        "the stop was noticed and counted: {errors_before} -> {errors}"
    );
    server.stop().await;
}

/// A metric's value in the `/metrics` text of `server` (0 when absent).
async fn metric(client: &reqwest::Client, server: &RunningServer, name: &str) -> f64 {
    let prefix = format!("{name} ");
    metrics_text(client, &server.address)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_redis_outage_opens_the_breaker_and_a_probe_closes_it_when_redis_is_back() {
    // A port nothing listens on yet; the test starts its own Redis there later.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let db = fresh_database().await;
    write_version(&db.pool, 40, 3).await;
    let mut settings = redis_settings(&db, &format!("redis://127.0.0.1:{port}"), "breaker");
    settings.capping.breaker_failures = 3;
    settings.capping.breaker_open_ms = 200;
    let server = RunningServer::start(settings, InitialModel::FromDatabase).await;
    let client = reqwest::Client::new();
    wait_until_ready(&client, &server.address).await;
    for i in 0..20 {
        let query = format!("cart=S0000001&k=1&user=erin{i}");
        assert!(!first_item(&client, &server, &query).await.is_empty());
    }
    // Three calls failed; every later one within the open window was not made at all.
    let errors = capping_errors(&client, &server).await;
    let skipped = metric(&client, &server, "tandem_capping_breaker_skipped_total").await;
    assert!((3.0..=6.0).contains(&errors), "{errors}");
    assert!(skipped >= 30.0, "{skipped}");
    assert_eq!(
        metric(&client, &server, "tandem_capping_breaker_state").await,
        1.0
    );

    let mut redis = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("this test needs a redis-server binary (scripts/test provides one)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Once the open window has passed, one request probes, and capping resumes.
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        first_item(&client, &server, "cart=S0000001&k=1&user=frank").await;
        if metric(&client, &server, "tandem_capping_breaker_state").await == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the breaker never closed"
        );
    }
    let query = "cart=S0000001&k=1&user=grace";
    let shown = first_item(&client, &server, query).await;
    assert_ne!(
        first_item(&client, &server, query).await,
        shown,
        "capped again"
    );
    server.stop().await;
    redis.kill().await.ok();
}
