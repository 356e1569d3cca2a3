//! Several replicas on one database: an activation on any of them (or by `tandem activate`)
//! reaches every replica through LISTEN/NOTIFY, and a replica started later serves the active
//! version, not merely the newest one.

use std::time::{Duration, Instant};

use tandem::app::InitialModel;
use tandem::domain::ModelVersion;
use tandem::store;

use crate::helpers::{fresh_database, test_settings, write_version, RunningServer, ADMIN_TOKEN};

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
