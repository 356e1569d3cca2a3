//! `POST /reload`: swapping versions, rollback, failures that keep the old model, auth and
//! concurrency, and zero failed requests while a reload happens under load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::helpers::{
    fresh_database, spawn_app, spawn_app_with, test_settings, write_broken_version, write_version,
    ADMIN_TOKEN,
};

async fn served_version(app: &crate::helpers::TestApp) -> i64 {
    let (status, body) = app.get_json("/recommendations?cart=S0000001").await;
    assert_eq!(status, 200, "{body}");
    body["model_version"].as_i64().unwrap()
}

async fn reload_failures(app: &crate::helpers::TestApp) -> u64 {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"tandem_model_reloads_total{outcome="failure"} "#))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn reload_swaps_in_the_newest_version_and_can_roll_back() {
    let app = spawn_app().await;
    let v1 = write_version(&app.db.pool, 100, 1).await;
    app.wait_until_ready().await;
    assert_eq!(served_version(&app).await, v1.0);

    let v2 = write_version(&app.db.pool, 120, 2).await;
    let (status, report) = app.reload(None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["old_version"], v1.0);
    assert_eq!(report["new_version"], v2.0);
    assert_eq!(report["items"], 120);
    assert_eq!(report["pairs"], 120 * 8);
    assert!(report["load_ms"].is_u64());
    assert_eq!(served_version(&app).await, v2.0);

    let (status, report) = app.reload(Some(serde_json::json!({"version": v1.0}))).await;
    assert_eq!((status, report["new_version"].as_i64()), (200, Some(v1.0)));
    assert_eq!(served_version(&app).await, v1.0);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!("tandem_model_version {}", v1.0)),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failed_reload_says_why_and_the_old_model_keeps_serving() {
    let app = spawn_app().await;
    let good = write_version(&app.db.pool, 100, 1).await;
    app.wait_until_ready().await;
    let broken = write_broken_version(&app.db.pool).await;
    let failures_before = reload_failures(&app).await;

    let (status, body) = app
        .reload(Some(serde_json::json!({"version": broken.0})))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_model");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("ghost"),
        "{body}"
    );
    assert_eq!(served_version(&app).await, good.0);

    // The broken version is also the newest ready one: a plain reload fails the same way.
    let (status, _) = app.reload(None).await;
    assert_eq!(status, 422);
    assert_eq!(served_version(&app).await, good.0);

    let (status, body) = app.reload(Some(serde_json::json!({"version": 9999}))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("version_not_found"))
    );
    let building = tandem::store::begin_version(&app.db.pool, 0, 0, &serde_json::json!({}), None)
        .await
        .unwrap();
    let (status, body) = app
        .reload(Some(serde_json::json!({"version": building.0})))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("version_not_ready"))
    );
    let (status, body) = app
        .reload(Some(serde_json::json!({"version": "seven"})))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );

    assert_eq!(reload_failures(&app).await - failures_before, 4);
    assert_eq!(served_version(&app).await, good.0);
    app.stop().await;
}

#[tokio::test]
async fn reload_needs_the_admin_token() {
    let app = spawn_app().await;
    let url = format!("{}/reload", app.address);
    let response = app.client.post(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = app
        .client
        .post(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(!body.to_string().contains(ADMIN_TOKEN));
    app.stop().await;
}

#[tokio::test]
async fn a_second_reload_while_one_runs_gets_409() {
    let db = fresh_database().await;
    let mut settings = test_settings(&db);
    // Room for the followers' queries that the lock below also blocks, beside the reload's.
    settings.database.max_connections = 10;
    let app = spawn_app_with(db, settings).await;
    write_version(&app.db.pool, 50, 1).await;
    app.wait_until_ready().await;
    // Hold a lock the loader needs, so the first reload is certainly still running.
    let mut blocker = app.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE model_versions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    // Other work of the server may wait for the lock too (the followers read model_versions):
    // count those first, then wait until one more backend, the first reload, is waiting.
    let lock_waiters = || async {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        waiting
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let others = lock_waiters().await;
    let first = {
        let client = app.client.clone();
        let url = format!("{}/reload", app.address);
        tokio::spawn(async move { client.post(url).bearer_auth(ADMIN_TOKEN).send().await })
    };
    // On a busy machine the first request may take longer than any fixed pause to arrive.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lock_waiters().await <= others {
        assert!(
            std::time::Instant::now() < deadline,
            "the first reload never reached the database"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, body) = app.reload(None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("reload_in_progress"))
    );
    blocker.rollback().await.unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn no_request_fails_while_versions_are_swapped_under_load() {
    let app = Arc::new(spawn_app().await);
    let v1 = write_version(&app.db.pool, 2_000, 1).await;
    let v2 = write_version(&app.db.pool, 2_000, 2).await;
    app.wait_until_ready().await;
    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (app, running, ok, failed) = (app.clone(), running.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while running.load(Ordering::Relaxed) {
                let cart = format!("S{:07},S{:07}", i % 2_000, (i * 7) % 2_000);
                match app
                    .client
                    .get(format!("{}/recommendations?cart={cart}", app.address))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        let status = r.status();
                        eprintln!("answered {status}: {}", r.text().await.unwrap_or_default());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("no answer: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                i += 8;
            }
        }));
    }
    for round in 0..6 {
        let target = if round % 2 == 0 { v1 } else { v2 };
        let (status, body) = app
            .reload(Some(serde_json::json!({"version": target.0})))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    running.store(false, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
}
