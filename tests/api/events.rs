//! `POST /events` against a real Postgres: events stored exactly once, pseudonymised, all or
//! nothing on bad input, nothing about an opted-out shopper, and none lost at shutdown.

use serde_json::{json, Value};

use crate::helpers::{fresh_database, spawn_app, spawn_app_with, test_settings, TestApp};

async fn post_events(app: &TestApp, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/events", app.address))
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn stored(app: &TestApp) -> Vec<(String, String, Option<String>, Option<String>)> {
    sqlx::query_as("SELECT kind, item_id, shopper, session FROM events ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

async fn wait_for_rows(app: &TestApp, rows: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stored(app).await.len() < rows {
        assert!(std::time::Instant::now() < deadline, "events never arrived");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn events_are_stored_once_with_pseudonymous_ids() {
    let app = spawn_app().await;
    let event_id = "0b8f3a52-6c1e-4c55-9a65-1d0f2f0c9e01";
    let body = json!([
        {"kind": "impression", "item_id": "22386", "user": "alice", "session": "s-1",
         "request_id": "6f1c2e0a-0000-4000-8000-000000000001", "touchpoint": "checkout",
         "variant": "control", "model_version": 3, "event_id": event_id},
        {"kind": "click", "item_id": "22386", "user": "alice", "session": "s-1"},
        {"kind": "dismiss", "item_id": "85099B", "session": "s-1",
         "timestamp": "2026-01-02T03:04:05Z"}
    ]);
    assert_eq!(
        post_events(&app, &body, &[]).await,
        (202, json!({"accepted": 3, "stored": true}))
    );
    // The storefront resends the first event (same event_id): it is stored once.
    let resent = json!([body[0].clone()]);
    assert_eq!(post_events(&app, &resent, &[]).await.0, 202);
    wait_for_rows(&app, 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;

    let rows = stored(&app).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows.iter()
            .map(|r| (r.0.as_str(), r.1.as_str()))
            .collect::<Vec<_>>(),
        [
            ("impression", "22386"),
            ("click", "22386"),
            ("dismiss", "85099B")
        ]
    );
    let shopper = rows[0].2.clone().unwrap();
    assert_eq!(shopper.len(), 32);
    assert_ne!(shopper, "alice");
    assert_eq!(
        rows[1].2.as_deref(),
        Some(shopper.as_str()),
        "one shopper, one key"
    );
    assert_eq!(rows[2].2, None, "no user given");
    assert_eq!(rows[0].3, rows[2].3, "one session, one key");
    let (touchpoint, version): (Option<String>, Option<i64>) =
        sqlx::query_as("SELECT touchpoint, model_version FROM events WHERE event_id = $1::uuid")
            .bind(event_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (touchpoint.as_deref(), version),
        (Some("checkout"), Some(3))
    );
    let (occurred,): (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("SELECT occurred_at FROM events WHERE kind = 'dismiss'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        occurred,
        "2026-01-02T03:04:05Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    );

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("tandem_events_written_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tandem_events_duplicate_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"tandem_events_received_total{kind="impression"} 2"#));
    app.stop().await;
}

#[tokio::test]
async fn a_body_with_one_bad_event_is_refused_whole_and_says_which() {
    let app = spawn_app().await;
    let body = json!([
        {"kind": "click", "item_id": "a"},
        {"kind": "purchase", "item_id": ""},
        {"kind": "clicked", "item_id": "b"}
    ]);
    let (status, answer) = post_events(&app, &body, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "invalid_events");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("event 1: item_id") && message.contains("event 2:"),
        "{message}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(stored(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_opted_out_shopper_is_stored_without_any_id() {
    let app = spawn_app().await;
    let body = json!([{"kind": "click", "item_id": "a", "user": "bob", "session": "s-9"}]);
    assert_eq!(post_events(&app, &body, &[("sec-gpc", "1")]).await.0, 202);
    assert_eq!(post_events(&app, &body, &[("dnt", "1")]).await.0, 202);
    wait_for_rows(&app, 2).await;
    let rows = stored(&app).await;
    assert!(
        rows.iter().all(|r| r.2.is_none() && r.3.is_none()),
        "{rows:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_full_queue_is_written_completely_at_shutdown() {
    let db = fresh_database().await;
    let mut settings = test_settings(&db);
    // A long flush interval keeps accepted events in the queue until shutdown drains it.
    settings.events.flush_interval_ms = 60_000;
    settings.events.batch_size = 100_000;
    settings.events.queue_capacity = 1_000;
    let app = spawn_app_with(db, settings).await;
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"kind": "impression", "item_id": format!("item-{i}"), "session": "s"}))
        .collect();
    for _ in 0..20 {
        assert_eq!(post_events(&app, &json!(batch), &[]).await.0, 202);
    }
    // The queue is full now: more is refused, and nothing accepted may be lost on the way out.
    assert_eq!(post_events(&app, &json!(batch), &[]).await.0, 503);
    let db = app.stop().await;
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 1000);
}

#[tokio::test]
async fn a_full_queue_refuses_the_whole_body_with_503() {
    let db = fresh_database().await;
    let mut settings = test_settings(&db);
    settings.events.queue_capacity = 10;
    settings.events.max_events_per_request = 10;
    settings.events.flush_interval_ms = 60_000;
    settings.events.batch_size = 1_000;
    let app = spawn_app_with(db, settings).await;
    let six: Vec<Value> = (0..6)
        .map(|i| json!({"kind": "click", "item_id": format!("i{i}")}))
        .collect();
    assert_eq!(post_events(&app, &json!(six), &[]).await.0, 202);
    let (status, answer) = post_events(&app, &json!(six), &[]).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("events_queue_full"))
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"tandem_events_rejected_total{reason="queue_full"} 6"#));
    let db = app.stop().await;
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        count, 6,
        "the accepted body is written, the refused one is not"
    );
}

#[tokio::test]
async fn erasing_a_shopper_leaves_no_event_and_no_cap_state() {
    let db = fresh_database().await;
    let mut settings = test_settings(&db);
    settings.capping.max_impressions_per_item = 1;
    let app = spawn_app_with(db, settings).await;
    crate::helpers::write_version(&app.db.pool, 40, 3).await;
    app.wait_until_ready().await;
    let body = json!([
        {"kind": "click", "item_id": "S0000002", "user": "zoe", "session": "zoe-session"},
        {"kind": "add_to_cart", "item_id": "S0000003", "session": "zoe-session"},
        {"kind": "click", "item_id": "S0000002", "user": "yann"}
    ]);
    assert_eq!(post_events(&app, &body, &[]).await.0, 202);
    wait_for_rows(&app, 3).await;
    let first = |body: Value| body["items"][0]["item_id"].as_str().unwrap().to_string();
    let query = "/recommendations?cart=S0000001&k=1&user=zoe";
    let shown = first(app.get_json(query).await.1);
    assert_ne!(
        first(app.get_json(query).await.1),
        shown,
        "capped after one impression"
    );

    let erase = |id: &'static str| {
        app.client
            .delete(format!("{}/shoppers/{id}", app.address))
            .bearer_auth(crate::helpers::ADMIN_TOKEN)
            .send()
    };
    let response = erase("zoe").await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["events_deleted"], 1);
    let answer: Value = erase("zoe-session").await.unwrap().json().await.unwrap();
    assert_eq!(answer["events_deleted"], 1);

    let rows = stored(&app).await;
    assert_eq!(rows.len(), 1, "only yann's event is left: {rows:?}");
    assert_eq!(
        first(app.get_json(query).await.1),
        shown,
        "zoe's cap state is gone"
    );
    let unauthorised = app
        .client
        .delete(format!("{}/shoppers/zoe", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
    app.stop().await;
}
