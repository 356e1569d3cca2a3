//! The embedded demo: no database, a model trained on the bundled Online Retail sample,
//! real carts answered over HTTP.

use crate::helpers::{demo_server, ADMIN_TOKEN};

#[tokio::test]
async fn the_demo_serves_real_carts_without_a_database() {
    let server = demo_server().await;
    let address = server.address.clone();
    let client = reqwest::Client::new();

    assert_eq!(
        client
            .get(format!("{address}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The README's first example cart: a regency cake stand and a green regency teacup.
    let body: serde_json::Value = client
        .get(format!("{address}/recommendations?cart=22423,22697&k=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{body}");
    assert_eq!(body["model_version"], 0, "{body}");
    for item in items {
        let id = item["item_id"].as_str().unwrap();
        assert!(
            id != "22423" && id != "22697",
            "a cart item came back: {body}"
        );
        let reason = item["reason"]["text"].as_str().unwrap();
        assert!(
            reason.contains("REGENCY CAKESTAND") || reason.contains("GREEN REGENCY TEACUP"),
            "the reason should name a cart item by its title: {body}"
        );
    }

    let reload = client
        .post(format!("{address}/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 503);
    let error: serde_json::Value = reload.json().await.unwrap();
    assert_eq!(error["error"]["code"], "database_not_configured", "{error}");

    server.stop().await;
}
