//! Probes and metrics of a real server: readiness before and after a model, metric names.

use crate::helpers::{spawn_app, write_version};

#[tokio::test]
async fn readiness_is_503_until_a_version_is_loaded_then_200() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("model_not_loaded"))
    );
    let (status, body) = app.get_json("/recommendations?cart=x").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("model_not_loaded"))
    );
    assert_eq!(app.get("/healthz").await.status(), 200);

    let version = write_version(&app.db.pool, 30, 1).await;
    // The start-up loader keeps retrying, so the new version is picked up without a reload.
    app.wait_until_ready().await;
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(
        (status, body["model_version"].as_i64()),
        (200, Some(version.0))
    );
    let (status, body) = app.get_json("/model").await;
    assert_eq!((status, body["stats"]["items"].as_i64()), (200, Some(30)));
    app.stop().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_every_documented_name() {
    let app = spawn_app().await;
    write_version(&app.db.pool, 30, 1).await;
    app.wait_until_ready().await;
    app.get("/recommendations?cart=S0000001").await;
    app.get("/recommendations?k=0").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    for name in [
        "tandem_http_requests_total",
        "tandem_http_request_duration_seconds_bucket",
        "tandem_model_version",
        "tandem_model_items",
        "tandem_model_co_purchase_pairs",
        "tandem_model_loaded_timestamp_seconds",
        "tandem_model_reloads_total",
        "tandem_model_load_duration_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
    assert!(
        text.contains(r#"route="/recommendations",status="400""#),
        "{text}"
    );
    app.stop().await;
}
