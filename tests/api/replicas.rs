//! Several replicas on one database: an activation on any of them (or by `tandem activate`)
//! reaches every replica through LISTEN/NOTIFY, and a replica started later serves the active
//! version, not merely the newest one.

use std::time::{Duration, Instant};

use tandem::app::InitialModel;
use tandem::domain::ModelVersion;
use tandem::store;

use crate::helpers::{
    first_item, fresh_database, test_settings, wait_until_ready, write_version, RunningServer,
    ADMIN_TOKEN,
};

async fn model_version(client: &reqwest::Client, server: &RunningServer) -> Option<i64> {
    let response = client
        .get(format!("{}/model", server.address))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    body["version"].as_i64()
}

async fn wait_for_version(client: &reqwest::Client, server: &RunningServer, version: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while model_version(client, server).await != Some(version) {
        assert!(
            Instant::now() < deadline,
            "{} never served version {version}",
            server.address
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn an_activation_on_one_replica_reaches_the_others_and_later_ones() {
    let db = fresh_database().await;
    let v1 = write_version(&db.pool, 30, 1).await;
    let a = RunningServer::start(test_settings(&db), InitialModel::FromDatabase).await;
    let b = RunningServer::start(test_settings(&db), InitialModel::FromDatabase).await;
    let client = reqwest::Client::new();
    wait_for_version(&client, &a, v1.0).await;
    wait_for_version(&client, &b, v1.0).await;

    // POST /reload on A activates v2: B follows without being asked.
    let v2 = write_version(&db.pool, 40, 2).await;
    let response = client
        .post(format!("{}/reload", a.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"version": v2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    wait_for_version(&client, &b, v2.0).await;

    // `tandem activate` rolls every replica back to v1; a newer v3 is written but not active.
    store::activate(&db.pool, v1).await.unwrap();
    wait_for_version(&client, &a, v1.0).await;
    wait_for_version(&client, &b, v1.0).await;
    let v3 = write_version(&db.pool, 50, 3).await;

    // A replica started now serves the active v1, not the newest v3.
    let c = RunningServer::start(test_settings(&db), InitialModel::FromDatabase).await;
    wait_for_version(&client, &c, v1.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for server in [&a, &b, &c] {
        assert_eq!(model_version(&client, server).await, Some(v1.0));
    }
    assert!(store::activate(&db.pool, ModelVersion(v3.0 + 100))
        .await
        .is_err());
    for server in [a, b, c] {
        server.stop().await;
    }
}

#[tokio::test]
async fn an_erasure_on_one_replica_reaches_the_state_every_replica_holds() {
    let db = fresh_database().await;
    write_version(&db.pool, 40, 3).await;
    let settings = || {
        let mut settings = test_settings(&db);
        // Each replica caps in memory: its own state, which only an announcement can reach.
        settings.capping.max_impressions_per_item = 1;
        // B's events wait in its queue until the test stops it.
        settings.events.flush_interval_ms = 60_000;
        settings.events.batch_size = 1_000;
        settings
    };
    let a = RunningServer::start(settings(), InitialModel::FromDatabase).await;
    let b = RunningServer::start(settings(), InitialModel::FromDatabase).await;
    let client = reqwest::Client::new();
    wait_until_ready(&client, &a.address).await;
    wait_until_ready(&client, &b.address).await;

    let query = "cart=S0000001&k=1&user=ivy";
    let shown = first_item(&client, &b, query).await;
    assert_ne!(first_item(&client, &b, query).await, shown, "b capped ivy");
    let events = serde_json::json!([
        {"kind": "click", "item_id": "S0000002", "user": "ivy"},
        {"kind": "click", "item_id": "S0000002", "user": "jan"}
    ]);
    let posted = client
        .post(format!("{}/events", b.address))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);

    let erased = client
        .delete(format!("{}/shoppers/ivy", a.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while first_item(&client, &b, query).await != shown {
        assert!(Instant::now() < deadline, "b kept ivy's cap state");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    b.stop().await;
    a.stop().await;
    let stored: Vec<(Option<String>,)> = sqlx::query_as("SELECT shopper FROM events")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "only jan's event was written: {stored:?}");
}

#[tokio::test]
async fn a_server_with_a_database_does_not_start_without_a_pseudonym_key() {
    let db = fresh_database().await;
    let mut settings = test_settings(&db);
    settings.pseudonym_key = None;
    let built = tandem::app::Application::build(settings, InitialModel::FromDatabase).await;
    assert!(
        matches!(built, Err(tandem::app::StartError::PseudonymKey)),
        "it started with a key of its own"
    );
}
