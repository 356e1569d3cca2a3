//! `GET /recommendations` on a server that loaded a version from Postgres.

use std::collections::HashSet;

use crate::helpers::{
    fresh_database, small_spec, spawn_app, spawn_app_with, test_settings, write_version,
};

#[tokio::test]
async fn a_loaded_version_serves_its_co_purchase_neighbours() {
    // Co-purchase alone decides the order here (no content blend, no DPP reordering).
    let db = fresh_database().await;
    let mut settings = test_settings(&db);
    settings.pipeline.checkout.content = 0.0;
    settings.pipeline.checkout.theta = 1.0;
    let app = spawn_app_with(db, settings).await;
    let version = write_version(&app.db.pool, 300, 1).await;
    app.wait_until_ready().await;
    let spec = small_spec(300, 1);
    let cart = spec.item_id(5);
    let (status, body) = app
        .get_json(&format!("/recommendations?cart={cart},NOT-AN-ITEM&k=5"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_version"], version.0);
    assert_eq!(body["unknown_items"], serde_json::json!(["NOT-AN-ITEM"]));
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let best_neighbour = spec
        .item(5)
        .neighbours
        .iter()
        .map(|&(other, _)| spec.item_id(other))
        .find(|id| spec.item(id[1..].parse().unwrap()).in_stock)
        .unwrap();
    assert_eq!(items[0]["item_id"], best_neighbour.as_str());
    assert_eq!(items[0]["reason"]["kind"], "bought_together");
    assert_eq!(items[0]["reason"]["anchor"], cart.as_str());
    assert!(items[0]["reason"]["text"]
        .as_str()
        .unwrap()
        .starts_with("Often bought with Synthetic product 5"));
    app.stop().await;
}

#[tokio::test]
async fn items_in_the_cart_are_never_recommended() {
    let app = spawn_app().await;
    write_version(&app.db.pool, 200, 2).await;
    app.wait_until_ready().await;
    let spec = small_spec(200, 2);
    for start in (0..200).step_by(7) {
        // Carts of related items, whose neighbours overlap with each other.
        let cart: Vec<String> = (start..(start + 4).min(200))
            .map(|i| spec.item_id(i))
            .collect();
        let (status, body) = app
            .get_json(&format!("/recommendations?cart={}&k=20", cart.join(",")))
            .await;
        assert_eq!(status, 200);
        let returned: HashSet<&str> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            returned.len(),
            body["items"].as_array().unwrap().len(),
            "duplicates"
        );
        for id in &cart {
            assert!(!returned.contains(id.as_str()), "{id} is in the cart");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_400_with_its_code_through_the_real_server() {
    let app = spawn_app().await;
    write_version(&app.db.pool, 50, 3).await;
    app.wait_until_ready().await;
    let too_many = vec!["a"; 2001];
    let cases = [
        (format!("cart={}", too_many.join(",")), "invalid_cart"),
        (format!("cart={}", "y".repeat(129)), "invalid_cart"),
        ("k=0".to_string(), "invalid_k"),
        ("k=51".to_string(), "invalid_k"),
        ("k=-3".to_string(), "invalid_k"),
        ("touchpoint=homepage".to_string(), "invalid_touchpoint"),
        ("max_price=cheap".to_string(), "invalid_max_price"),
        ("cart=a&cart=b".to_string(), "invalid_query"),
        (format!("viewed={}", "v,".repeat(20_000)), "query_too_large"),
    ];
    for (query, code) in cases {
        let (status, body) = app.get_json(&format!("/recommendations?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}");
    }
    let response = app
        .client
        .post(format!("{}/recommendations", app.address))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413, "bodies over the limit are refused");
    app.stop().await;
}

#[tokio::test]
async fn equal_scores_are_listed_in_item_id_order_whatever_order_the_version_was_written_in() {
    // `evaluate` numbers items by id, and the number breaks ties: the server must number them
    // alike, however Postgres streams the version's rows.
    let db = fresh_database().await;
    let mut settings = test_settings(&db);
    settings.pipeline.checkout.content = 0.0;
    settings.pipeline.checkout.theta = 1.0;
    let app = spawn_app_with(db, settings).await;
    let pool = &app.db.pool;
    sqlx::query(
        // Byte order, as `evaluate` sorts ids: 'B' before 'a', which a linguistic collation
        // would swap.
        "INSERT INTO items (id, title) VALUES ('x', 'X'), ('c', 'C'), ('a', 'A'), ('B', 'B')",
    )
    .execute(pool)
    .await
    .unwrap();
    let version = tandem::store::begin_version(pool, 0, 0, &serde_json::json!({}), None)
        .await
        .unwrap();
    for item in ["x", "c", "a", "B"] {
        sqlx::query("INSERT INTO item_stats (version, item_id, popularity) VALUES ($1, $2, 1)")
            .bind(version.0)
            .bind(item)
            .execute(pool)
            .await
            .unwrap();
    }
    for other in ["c", "a", "B"] {
        sqlx::query(
            "INSERT INTO co_purchase (version, item_id, other_item_id, score) VALUES ($1, 'x', $2, 0.5)",
        )
        .bind(version.0)
        .bind(other)
        .execute(pool)
        .await
        .unwrap();
    }
    tandem::store::mark_ready(pool, version, &serde_json::json!({}))
        .await
        .unwrap();
    app.wait_until_ready().await;
    let (status, body) = app.get_json("/recommendations?cart=x&k=3").await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["B", "a", "c"]);
    app.stop().await;
}
