//! The live catalogue against a real Postgres: changes through `/items` reach every replica
//! without a model reload, new products are recommended from their `PUT`, batches are all or
//! nothing, a replica that lost its listener catches up, and changes under load fail no
//! request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem::app::InitialModel;
use tandem::offline::history;
use tandem::offline::import::import_orders;
use tandem::offline::orders::ReadOptions;
use tandem::store;

use crate::helpers::{
    fresh_database, test_settings, train_default, wait_until_ready, write_version, RunningServer,
    ADMIN_TOKEN,
};

/// The ids `server` recommends for `query`, and the whole body.
async fn recommended(
    client: &reqwest::Client,
    server: &RunningServer,
    query: &str,
) -> (Vec<String>, Value) {
    let response = client
        .get(format!("{}/recommendations?{query}", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let ids = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect();
    (ids, body)
}

/// Polls until `done` holds, for at most `bound` (a functional deadline, not a timing
/// assertion: the benchmark measures the delay).
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    bound: Duration,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + bound;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn put(client: &reqwest::Client, server: &RunningServer, id: &str, item: Value) -> Value {
    let response = client
        .put(format!("{}/items/{id}", server.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&item)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

async fn get_item(client: &reqwest::Client, server: &RunningServer, id: &str) -> (u16, Value) {
    let response = client
        .get(format!("{}/items/{id}", server.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn an_out_of_stock_change_stops_the_item_on_every_replica() {
    let db = fresh_database().await;
    write_version(&db.pool, 40, 7).await;
    let a = RunningServer::start(test_settings(&db), InitialModel::FromDatabase).await;
    let b = RunningServer::start(test_settings(&db), InitialModel::FromDatabase).await;
    let client = reqwest::Client::new();
    wait_until_ready(&client, &a.address).await;
    wait_until_ready(&client, &b.address).await;

    let query = "cart=S0000001&k=5";
    let (before, _) = recommended(&client, &b, query).await;
    let item = before.first().expect("a recommendation").clone();
    let stored = put(
        &client,
        &a,
        &item,
        json!({"title": "Sold out", "availability": "out of stock", "price": 3.5}),
    )
    .await;
    assert_eq!(stored["in_stock"], false, "{stored}");
    assert_eq!(stored["served"]["recommendable"], false, "{stored}");
    assert_eq!(stored["served"]["in_model"], true, "{stored}");
    // The replica that took the write serves it when it answers...
    let (on_a, _) = recommended(&client, &a, query).await;
    assert!(!on_a.contains(&item), "{on_a:?}");
    // ...and the other one follows the announcement.
    eventually(
        "b kept recommending the sold-out item",
        Duration::from_secs(10),
        || {
            let (client, b, item) = (&client, &b, &item);
            async move { !recommended(client, b, query).await.0.contains(item) }
        },
    )
    .await;
    let (status, on_b) = get_item(&client, &b, &item).await;
    assert_eq!(status, 200);
    assert_eq!(on_b["served"]["in_stock"], false, "{on_b}");
    assert_eq!(on_b["served"]["price"], 3.5, "{on_b}");

    // Back in stock, through a PATCH that keeps the other fields.
    let response = client
        .patch(format!("{}/items/{item}", a.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"in_stock": true}))
        .send()
        .await
        .unwrap();
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["title"], "Sold out", "{patched}");
    assert_eq!(patched["in_stock"], true, "{patched}");
    eventually(
        "b never saw the item back in stock",
        Duration::from_secs(10),
        || {
            let (client, b, item) = (&client, &b, &item);
            async move { recommended(client, b, query).await.0.contains(item) }
        },
    )
    .await;

    // Withdrawn: kept in the catalogue, recommended by neither.
    let response = client
        .delete(format!("{}/items/{item}", b.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let withdrawn: Value = response.json().await.unwrap();
    assert_eq!(withdrawn["withdrawn"], true, "{withdrawn}");
    eventually(
        "a kept recommending the withdrawn item",
        Duration::from_secs(10),
        || {
            let (client, a, item) = (&client, &a, &item);
            async move { !recommended(client, a, query).await.0.contains(item) }
        },
    )
    .await;
    let (status, missing) = get_item(&client, &a, "no-such-item").await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("item_not_found"))
    );
    for server in [a, b] {
        server.stop().await;
    }
}

/// Baskets of bags, teacups and cake stands whose titles share words within each kind.
fn order_file() -> String {
    let mut csv = String::from(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n",
    );
    let kinds = [
        [
            ("10001", "JUMBO BAG RED RETROSPOT"),
            ("10002", "LUNCH BAG RED RETROSPOT"),
        ],
        [
            ("20001", "ROSES REGENCY TEACUP AND SAUCER"),
            ("20002", "GREEN REGENCY TEACUP AND SAUCER"),
        ],
        [
            ("30001", "REGENCY CAKESTAND 3 TIER"),
            ("30002", "SWEETHEART CAKESTAND 3 TIER"),
        ],
    ];
    for d in 0..30 {
        let invoice = 570_000 + d;
        let date = format!("2011-0{}-{:02} 10:00:00", 1 + d % 3, 1 + d % 28);
        for (code, title) in kinds[d % 3] {
            csv.push_str(&format!(
                "{invoice},{code},{title},2,{date},2.50,{}.0,United Kingdom\n",
                13_000 + d
            ));
        }
    }
    csv
}

#[tokio::test]
async fn a_new_item_is_recommended_beside_similar_items_from_its_put_and_after_a_reload() {
    let db = fresh_database().await;
    import_orders(
        &db.pool,
        Box::new(std::io::Cursor::new(order_file().into_bytes())),
        &ReadOptions::default(),
        Arc::new(|| {}),
    )
    .await
    .unwrap();
    let history = history::load_history(&db.pool, None, history::HistorySource::Orders, 0)
        .await
        .unwrap();
    let model = train_default(history).await;
    model.write_version(&db.pool).await.unwrap();
    let server = RunningServer::start(test_settings(&db), InitialModel::FromDatabase).await;
    let client = reqwest::Client::new();
    wait_until_ready(&client, &server.address).await;

    let new = "NEW-TEACUP";
    let (_, before) = recommended(&client, &server, &format!("cart={new}")).await;
    assert_eq!(before["unknown_items"], json!([new]), "{before}");
    let stored = put(
        &client,
        &server,
        new,
        json!({"title": "BLUE REGENCY TEACUP AND SAUCER", "category": "teacups",
               "price": 2.95, "in_stock": true, "attributes": {"colour": "blue"}}),
    )
    .await;
    assert_eq!(stored["served"]["in_model"], false, "{stored}");
    assert_eq!(stored["attributes"]["colour"], "blue", "{stored}");

    // Beside a similar cart item, at once.
    let (ids, body) = recommended(&client, &server, "cart=20001&k=10").await;
    assert!(ids.contains(&new.to_owned()), "{body}");
    // A cart holding it gets content recommendations, with a reason anchored on it.
    let (ids, body) = recommended(&client, &server, &format!("cart={new}&k=10")).await;
    assert_eq!(body["unknown_items"], json!([]), "{body}");
    assert!(ids.contains(&"20002".to_owned()), "{body}");
    let teacup = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["item_id"] == "20002")
        .unwrap();
    assert_eq!(teacup["reason"]["anchor"], new, "{body}");
    assert_eq!(
        teacup["reason"]["text"], "Goes well with BLUE REGENCY TEACUP AND SAUCER",
        "{body}"
    );

    // A reload keeps the live catalogue: the new item is still served. (A follower of
    // activations may be running a reload of its own at start on a busy machine: 409, retry.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let response = client
            .post(format!("{}/reload", server.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        if response.status() != 409 || std::time::Instant::now() > deadline {
            assert_eq!(response.status(), 200);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (ids, body) = recommended(&client, &server, "cart=20001&k=10").await;
    assert!(ids.contains(&new.to_owned()), "after the reload: {body}");
    server.stop().await;
}

#[tokio::test]
async fn a_batch_is_stored_all_or_nothing_and_names_each_bad_entry() {
    let db = fresh_database().await;
    write_version(&db.pool, 40, 3).await;
    let server = RunningServer::start(test_settings(&db), InitialModel::FromDatabase).await;
    let client = reqwest::Client::new();
    wait_until_ready(&client, &server.address).await;
    let post = |body: Value| {
        client
            .post(format!("{}/items", server.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };

    let bad = json!([
        {"id": "S0000002", "title": "Fine", "in_stock": false},
        {"id": "S0000003", "title": "Bad price", "price": -2},
        {"id": "S0000004", "title": "Unknown field", "colour": "red"},
        {"id": "S0000005", "title": "Bad margin", "margin": 2}
    ]);
    let response = post(bad).await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_items", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for index in ["item 1:", "item 2:", "item 3:"] {
        assert!(message.contains(index), "{message}");
    }
    assert!(!message.contains("item 0:"), "{message}");
    let (stored,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM items WHERE catalogue_seq IS NOT NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored, 0, "nothing of a refused batch is stored");

    let batch: Vec<Value> = (2..=11)
        .map(|i| json!({"id": format!("S{i:07}"), "title": format!("Item {i}"), "in_stock": false}))
        .collect();
    let response = post(json!(batch)).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["upserted"], 10, "{body}");
    for i in 2..=11 {
        let (_, item) = get_item(&client, &server, &format!("S{i:07}")).await;
        assert_eq!(item["served"]["in_stock"], false, "{item}");
    }
    // Without the admin token, nothing.
    let response = client
        .post(format!("{}/items", server.address))
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn a_replica_whose_listener_dropped_catches_up_on_reconnecting() {
    let db = fresh_database().await;
    write_version(&db.pool, 40, 5).await;
    let server = RunningServer::start(test_settings(&db), InitialModel::FromDatabase).await;
    let client = reqwest::Client::new();
    wait_until_ready(&client, &server.address).await;
    let query = "cart=S0000001&k=5";
    let item = |id: &str, in_stock: bool| store::StoredItem {
        id: id.to_owned(),
        title: format!("Changed {id}"),
        category: None,
        brand: None,
        product_group: None,
        price: Some(123.25),
        in_stock,
        promoted: false,
        margin: None,
        attributes: json!({}),
        withdrawn: false,
    };
    // An announced change (out of stock: recommended by no cart) that only the follower can
    // apply: once it is served, the follower is past its first catch-up and waits for
    // announcements.
    store::upsert_items(&db.pool, &[item("S0000039", false)], true)
        .await
        .unwrap();
    eventually(
        "the follower never applied an announced change",
        Duration::from_secs(15),
        || {
            let (client, server) = (&client, &server);
            async move { get_item(client, server, "S0000039").await.1["served"]["price"] == 123.25 }
        },
    )
    .await;
    // The announcement can reach the follower after its first catch-up already applied the
    // change; the catch-up it then triggers must be over before the silent change is written.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (before, _) = recommended(&client, &server, query).await;
    let sold_out: Vec<store::StoredItem> = before.iter().map(|id| item(id, false)).collect();
    // Changes whose announcement never arrives (as while the connection was down)...
    store::upsert_items(&db.pool, &sold_out, false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (still, _) = recommended(&client, &server, query).await;
    assert_eq!(
        still, before,
        "applied without an announcement or a reconnection"
    );
    // ...are applied once the listener's connection comes back.
    let (terminated,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%tandem_catalogue_changed%') t",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(terminated, 1, "the catalogue listener's backend");
    eventually(
        "the replica never caught up",
        Duration::from_secs(15),
        || {
            let (client, server, before) = (&client, &server, &before);
            async move {
                let (now, _) = recommended(client, server, query).await;
                now.iter().all(|id| !before.contains(id))
            }
        },
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn stock_changes_under_load_never_fail_a_request() {
    let db = fresh_database().await;
    write_version(&db.pool, 200, 11).await;
    let a = RunningServer::start(test_settings(&db), InitialModel::FromDatabase).await;
    let b = RunningServer::start(test_settings(&db), InitialModel::FromDatabase).await;
    let client = reqwest::Client::new();
    wait_until_ready(&client, &a.address).await;
    wait_until_ready(&client, &b.address).await;
    let changes = {
        let (client, address) = (client.clone(), a.address.clone());
        tokio::spawn(async move {
            for round in 0..40 {
                let batch: Vec<Value> = (1..=50)
                    .map(|i| {
                        json!({"id": format!("S{i:07}"), "title": format!("Item {i}"),
                               "in_stock": (i + round) % 2 == 0, "price": round as f64})
                    })
                    .collect();
                let response = client
                    .post(format!("{address}/items"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&batch)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        })
    };
    let mut requests = Vec::new();
    for worker in 0..8 {
        let client = client.clone();
        let address = if worker % 2 == 0 {
            &a.address
        } else {
            &b.address
        }
        .clone();
        requests.push(tokio::spawn(async move {
            let mut served = 0;
            for n in 0..60 {
                let response = client
                    .get(format!(
                        "{address}/recommendations?cart=S{:07}&k=10",
                        1 + (n * 7 + worker) % 60
                    ))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                served += 1;
            }
            served
        }));
    }
    let mut served = 0;
    for worker in requests {
        served += worker.await.unwrap();
    }
    changes.await.unwrap();
    assert_eq!(served, 8 * 60);
    for server in [a, b] {
        server.stop().await;
    }
}

#[tokio::test]
async fn a_product_feed_is_imported_with_every_field_and_its_bad_lines_reported() {
    use tandem::offline::feed::{import_feed, FeedColumns};
    let db = fresh_database().await;
    write_version(&db.pool, 40, 9).await;
    let server = RunningServer::start(test_settings(&db), InitialModel::FromDatabase).await;
    let client = reqwest::Client::new();
    wait_until_ready(&client, &server.address).await;

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/merchant_feed.tsv"
    );
    let file = std::fs::File::open(path).unwrap();
    let report = import_feed(&db.pool, Box::new(file), FeedColumns::default(), true)
        .await
        .unwrap();
    assert_eq!(
        (report.rows, report.items, report.bad_rows),
        (7, 4, 3),
        "{report:?}"
    );
    let lines: Vec<u64> = report.first_bad_rows.iter().map(|b| b.line).collect();
    assert_eq!(lines, [5, 6, 7], "{report:?}");
    assert!(
        report.first_bad_rows[0].reason.contains("title"),
        "{report:?}"
    );
    assert!(
        report.first_bad_rows[1].reason.contains("price"),
        "{report:?}"
    );
    assert!(
        report.first_bad_rows[2].reason.contains("availability"),
        "{report:?}"
    );

    // Every field, as stored; the running server applied the announced chunk.
    let (status, f1) = get_item(&client, &server, "F1").await;
    assert_eq!(status, 200, "{f1}");
    assert_eq!(f1["title"], "Blue regency teacup");
    assert_eq!(f1["category"], "Home > Kitchen > Teacups");
    assert_eq!(f1["brand"], "Acme");
    assert_eq!(f1["product_group"], "TEACUP");
    assert_eq!(f1["price"], 3.95, "the sale price is the price");
    assert_eq!(f1["promoted"], true, "a sale promotes");
    assert_eq!(f1["attributes"]["regular_price"], 4.5);
    assert_eq!(f1["attributes"]["currency"], "GBP");
    assert_eq!(f1["attributes"]["description"], "Fine bone china");
    eventually(
        "the server never applied the feed",
        Duration::from_secs(10),
        || {
            let (client, server) = (&client, &server);
            async move { get_item(client, server, "F1").await.1["served"]["recommendable"] == true }
        },
    )
    .await;
    let (_, f2) = get_item(&client, &server, "F2").await;
    assert_eq!(
        (f2["in_stock"].as_bool(), f2["promoted"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(f2["served"]["recommendable"], false, "{f2}");
    for id in ["F3", "F7"] {
        let (_, item) = get_item(&client, &server, id).await;
        assert_eq!(
            item["in_stock"], false,
            "preorder and backorder are not in stock: {item}"
        );
    }
    let (_, f7) = get_item(&client, &server, "F7").await;
    assert_eq!(
        f7["price"], 2.0,
        "a sale price above the price is ignored: {f7}"
    );
    assert_eq!(f7["promoted"], false, "{f7}");

    // A plain CSV names its columns; a second import of a row replaces it.
    let plain = "sku,name,stock,cost,group\nF2,Green regency teacup,yes,4.25,\n";
    let columns = FeedColumns {
        id: "sku".into(),
        title: "name".into(),
        in_stock: Some("stock".into()),
        price: Some("cost".into()),
        product_group: Some("group".into()),
        ..FeedColumns::default()
    };
    let report = import_feed(
        &db.pool,
        Box::new(std::io::Cursor::new(plain.as_bytes().to_vec())),
        columns,
        true,
    )
    .await
    .unwrap();
    assert_eq!((report.items, report.bad_rows), (1, 0), "{report:?}");
    eventually(
        "the server never applied the plain feed",
        Duration::from_secs(10),
        || {
            let (client, server) = (&client, &server);
            async move { get_item(client, server, "F2").await.1["served"]["recommendable"] == true }
        },
    )
    .await;
    let (_, f2) = get_item(&client, &server, "F2").await;
    assert_eq!(f2["price"], 4.25, "{f2}");
    assert_eq!(f2["product_group"], Value::Null, "{f2}");
    server.stop().await;
}
