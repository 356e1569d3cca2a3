//! The offline side against a real Postgres: import (cleaning, bad rows, idempotence), train
//! from the imported history, and the server serving the trained version.

use std::sync::Arc;

use tandem::offline::counts_file::CountTables;
use tandem::offline::history::{self, HistorySource};
use tandem::offline::import::import_orders;
use tandem::offline::orders::ReadOptions;
use tandem::offline::progress::Progress;
use tandem::offline::train::{self, TrainParams};
use tandem::offline::tune::{Tuning, ValidationSplit};

use crate::helpers::{fresh_database, spawn_app_with, test_settings, train_default};

const HEADER: &str =
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n";

/// Twenty baskets: a red jumbo bag with its pink sibling product and, in half of them, a
/// black-and-white variant of the red bag; cake stands whose title holds a comma; shoppers
/// with and without ids. Then one cancellation, one postage row and one unparsable quantity
/// (line 64).
fn order_file() -> String {
    let mut csv = String::from(HEADER);
    for d in 0..20 {
        let invoice = 560_000 + d;
        let date = format!("2011-0{}-{:02} 10:00:00", 1 + d % 3, 1 + d);
        let customer = if d % 4 == 0 {
            String::new()
        } else {
            format!("{}.0", 12_000 + d)
        };
        csv.push_str(&format!(
            "{invoice},85099B,JUMBO BAG RED RETROSPOT,10,{date},1.95,{customer},United Kingdom\n"
        ));
        csv.push_str(&format!(
            "{invoice},22386,JUMBO BAG PINK POLKADOT,10,{date},1.95,{customer},United Kingdom\n"
        ));
        if d % 2 == 0 {
            csv.push_str(&format!(
                "{invoice},85099C,JUMBO BAG BAROQUE BLACK WHITE,10,{date},1.95,{customer},United Kingdom\n"
            ));
        } else {
            csv.push_str(&format!(
                "{invoice},22423,\"REGENCY CAKESTAND, 3 TIER\",1,{date},12.75,{customer},France\n"
            ));
        }
    }
    csv.push_str("C560001,85099B,JUMBO BAG RED RETROSPOT,-10,2011-03-30 11:00:00,1.95,12001.0,United Kingdom\n");
    csv.push_str("560001,POST,POSTAGE,1,2011-02-02 10:00:00,18.00,12001.0,United Kingdom\n");
    csv.push_str("560002,22386,JUMBO BAG PINK POLKADOT,ten,2011-03-03 10:00:00,1.95,12002.0,United Kingdom\n");
    csv
}

async fn import(pool: &sqlx::PgPool, csv: String) -> tandem::offline::import::ImportReport {
    import_orders(
        pool,
        Box::new(std::io::Cursor::new(csv.into_bytes())),
        &ReadOptions::default(),
        Arc::new(|| {}),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn import_cleans_reports_bad_rows_and_a_second_run_changes_nothing() {
    let db = fresh_database().await;
    let first = import(&db.pool, order_file()).await;
    assert_eq!(first.rows.bad_rows, 1, "{first:?}");
    assert_eq!(first.rows.first_bad_rows[0].line, 64, "{first:?}");
    assert_eq!(first.rows.cancellation_lines, 1);
    assert_eq!(first.rows.not_a_product_lines, 1);
    assert_eq!(first.rows.basket_lines, 60);
    assert_eq!(first.items, 4);
    assert!(
        first.items_changed == 4 && first.order_lines_changed > 0,
        "{first:?}"
    );

    let (title, group): (String, Option<String>) =
        sqlx::query_as("SELECT title, product_group FROM items WHERE id = '22423'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        title, "REGENCY CAKESTAND, 3 TIER",
        "a quoted comma stays in the title"
    );
    assert_eq!(group.as_deref(), Some("22423"));
    let (red, black): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT (SELECT product_group FROM items WHERE id = '85099B'),
                (SELECT product_group FROM items WHERE id = '85099C')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(red, black, "variants share a product group");
    let anonymous: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE customer_id IS NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(anonymous, 5, "orders without a customer are kept");
    let cancelled: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE cancelled")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(cancelled, 1);

    let second = import(&db.pool, order_file()).await;
    assert_eq!(
        (
            second.items_changed,
            second.orders_changed,
            second.order_lines_changed
        ),
        (0, 0, 0),
        "{second:?}"
    );
}

#[tokio::test]
async fn a_version_trained_from_the_imported_history_is_served() {
    let db = fresh_database().await;
    import(&db.pool, order_file()).await;
    let history = history::load_history(&db.pool, None, HistorySource::Orders, 0)
        .await
        .unwrap();
    assert_eq!(history.len(), 20);
    let model = train_default(history).await;
    let version = model.write_version(&db.pool).await.unwrap();
    let (status, params): (String, serde_json::Value) =
        sqlx::query_as("SELECT status, params FROM model_versions WHERE version = $1")
            .bind(version.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "ready");
    assert_eq!(params["params"]["measure"]["estimator"], "sparse_ease");
    let (diversity_rows,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM item_embeddings WHERE version = $1 AND diversity IS NOT NULL",
    )
    .bind(version.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(diversity_rows as usize, model.items.len());
    // The writer vacuumed and analysed its tables, so a server's first load does not set hint
    // bits. (Not checked through the visibility map: with the test server's
    // synchronous_commit=off a vacuum right after the commit may not mark the pages yet.
    // PostgreSQL 15 and later count a vacuum at once; older servers report it with a delay.)
    let (vacuumed, analysed): (i64, i64) = sqlx::query_as(
        "SELECT vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relname = 'co_purchase'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        vacuumed > 0 && analysed > 0,
        "co_purchase was not vacuumed ({vacuumed}) and analysed ({analysed})"
    );

    let settings = test_settings(&db);
    let app = spawn_app_with(db, settings).await;
    app.wait_until_ready().await;
    let (_, body) = app.get_json("/model").await;
    assert_eq!(
        body["stats"]["diversity_dim"], model.diversity_dim,
        "{body}"
    );
    assert_eq!(body["stats"]["embedding_dim"], 64, "{body}");
    let (status, body) = app.get_json("/recommendations?cart=85099B&k=3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_version"], version.0, "{body}");
    let items: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap())
        .collect();
    assert_eq!(items.first(), Some(&"22386"), "{body}");
    assert!(
        !items.contains(&"85099C"),
        "a variant of a cart item: {body}"
    );
    assert_eq!(
        body["items"][0]["reason"]["text"],
        "Often bought with JUMBO BAG RED RETROSPOT"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_versions_tuned_settings_are_served_beneath_the_configured_ones() {
    let db = fresh_database().await;
    import(&db.pool, order_file()).await;
    let history = history::load_history(&db.pool, None, HistorySource::Orders, 0)
        .await
        .unwrap();
    let mut model = train_default(history).await;
    model.tuning = Some(Tuning {
        validation: ValidationSplit::default(),
        estimator_trials: Vec::new(),
        lambda: Some(12.5),
        adjacency: Some(1.0),
        min_support: Some(1),
        touchpoints: Vec::new(),
        purchased_half_life: Some(100.0),
        restock_scaling: Some(false),
        purchased_beside_cart: Some(2.0),
        pipeline: serde_json::json!({
            "checkout": {"content": 0.0, "theta": 1.0},
            "cart": {"popularity": 0.5},
            "purchased_half_life": 100.0,
            "restock_scaling": false,
            "purchased_beside_cart": 2.0,
        }),
        seconds: 0.5,
    });
    let version = model.write_version(&db.pool).await.unwrap();
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT tuning FROM model_versions WHERE version = $1")
            .bind(version.0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored["lambda"], 12.5);

    // theta is set by the operator (as a config file or TANDEM__PIPELINE__CHECKOUT__THETA
    // would): it wins over the version's tuned value.
    let mut settings = test_settings(&db);
    settings.pipeline.checkout.theta = 0.8;
    settings.pipeline_overrides = serde_json::json!({"checkout": {"theta": 0.8}});
    let app = spawn_app_with(db, settings).await;
    app.wait_until_ready().await;
    let (_, body) = app.get_json("/model").await;
    let checkout = &body["touchpoints"]["checkout"];
    assert_eq!(checkout["content"], 0.0, "tuned: {body}");
    assert!(
        (checkout["theta"].as_f64().unwrap() - 0.8).abs() < 1e-6,
        "configured: {body}"
    );
    assert_eq!(
        body["touchpoints"]["cart"]["popularity"], 0.5,
        "tuned: {body}"
    );
    assert_eq!(
        body["touchpoints"]["product"]["content"], 0.5,
        "default: {body}"
    );
    assert_eq!(body["tuning"]["lambda"], 12.5, "{body}");
    assert_eq!(
        body["earlier_purchases"],
        serde_json::json!({
            "half_life": 100.0,
            "restock_scaling": false,
            "beside_cart": 2.0,
            "beside_lines": 3,
        }),
        "tuned: {body}"
    );
    assert!(
        body["stats"]["items_with_co_purchase"].as_u64().unwrap() > 0,
        "{body}"
    );
    let (status, body) = app.get_json("/recommendations?cart=85099B&k=3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["item_id"], "22386", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn counts_made_in_postgres_equal_the_in_process_counts_and_train_a_served_version() {
    let db = fresh_database().await;
    import(&db.pool, order_file()).await;
    // An order whose item ids sort otherwise than its lines, with a later repeat of an item and
    // a zero-quantity line before an item's first counted line: by first basket line, 22423,
    // 85099C, 85099B, 22386 follow one another.
    let date = "2011-01-25 10:00:00,1.95,12050.0,United Kingdom";
    import(
        &db.pool,
        format!(
            "{HEADER}560100,22423,\"REGENCY CAKESTAND, 3 TIER\",1,{date}
560100,85099C,JUMBO BAG BAROQUE BLACK WHITE,10,{date}
560100,22423,\"REGENCY CAKESTAND, 3 TIER\",2,{date}
560100,22386,JUMBO BAG PINK POLKADOT,0,{date}
560100,85099B,JUMBO BAG RED RETROSPOT,10,{date}
560100,22386,JUMBO BAG PINK POLKADOT,10,{date}
"
        ),
    )
    .await;
    let history = history::load_history(&db.pool, None, HistorySource::Orders, 0)
        .await
        .unwrap();
    let until = chrono::DateTime::parse_from_rfc3339("2011-02-15T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    for cut in [None, Some(until)] {
        let end = cut.map_or(history.len(), |t| history.split_at(t.timestamp()));
        let counted = tandem::store::count_cooccurrences(&db.pool, cut)
            .await
            .unwrap();
        assert_eq!(counted.baskets as usize, end, "{cut:?}");
        let tables = CountTables {
            items: counted.items,
            item_baskets: counted.item_baskets,
            pairs: counted.pairs,
        };
        let (items, pairs) = tables.by_id();
        assert!(
            pairs.values().any(|&(_, n)| n > 0) && pairs.values().any(|&(c, n)| n < c),
            "some pairs on adjacent lines, some not: {pairs:?}"
        );
        let key = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            (
                pairs[&key("22423", "85099C")],
                pairs[&key("85099B", "85099C")].1
            ),
            ((1, 1), 1),
            "next to each other only in the added order, where the repeat and the \
             zero-quantity line leave no gap: {cut:?}"
        );
        assert_eq!(
            (items, pairs),
            CountTables::from_history(&history, 0..end).by_id(),
            "{cut:?}"
        );
    }
    let counted = tandem::store::count_cooccurrences(&db.pool, None)
        .await
        .unwrap();
    let catalogue = tandem::store::catalogue_of(&db.pool, &counted.items)
        .await
        .unwrap();
    assert!(catalogue.iter().all(Option::is_some));
    let tables = CountTables {
        items: counted.items,
        item_baskets: counted.item_baskets,
        pairs: counted.pairs,
    };
    let params = TrainParams::default();
    let counts = tables.to_counts(counted.baskets as usize, params.measure.min_baskets);
    let items = tables
        .items
        .iter()
        .zip(&tables.item_baskets)
        .zip(catalogue)
        .map(|((id, &n), row)| {
            let (title, category, price) = row.unwrap();
            train::TrainedItem {
                id: id.clone(),
                title,
                category,
                price,
                popularity: n as f32,
                baskets: n as u32,
            }
        })
        .collect();
    let model = train::train_from_counts(&counts, items, &params, &Progress::hidden()).unwrap();
    let from_history =
        train::train(&history, 0..history.len(), &params, &Progress::hidden()).unwrap();
    // The same weights whichever way the counts came (item numbers, and so the order of
    // tied neighbours, differ).
    let neighbours = |m: &train::TrainedModel, id: &str| {
        let i = m.index_of(id).unwrap();
        let (others, scores, _) = m.co_purchase.row(i);
        let mut row: Vec<(String, i64)> = others
            .iter()
            .zip(scores)
            .map(|(&o, &s)| (m.items[o as usize].id.clone(), (s * 1e5).round() as i64))
            .collect();
        row.sort();
        row
    };
    for id in ["85099B", "22386", "22423"] {
        assert_eq!(
            neighbours(&model, id),
            neighbours(&from_history, id),
            "{id}"
        );
    }
    model.write_version(&db.pool).await.unwrap();
    let settings = test_settings(&db);
    let app = spawn_app_with(db, settings).await;
    app.wait_until_ready().await;
    let (status, body) = app.get_json("/recommendations?cart=85099B&k=3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["item_id"], "22386", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn purchases_reported_as_events_train_a_version_without_any_imported_orders() {
    let db = fresh_database().await;
    let settings = test_settings(&db);
    let app = spawn_app_with(db, settings).await;
    // Twelve shoppers each buy a teapot and its cosy within minutes; half of them come back
    // the next day for a mug. Sessions without a user buy candles with holders. One purchase
    // carries no id at all.
    let mut events = Vec::new();
    let purchase = |item: &str, buyer: (&str, String), at: &str| serde_json::json!({ "kind": "purchase", "item_id": item, buyer.0: buyer.1, "timestamp": at });
    for s in 0..12 {
        let user = || ("user", format!("shopper-{s}"));
        events.push(purchase("TEAPOT", user(), "2026-11-02T10:00:00Z"));
        events.push(purchase("TEA-COSY", user(), "2026-11-02T10:03:00Z"));
        if s % 2 == 0 {
            events.push(purchase("MUG", user(), "2026-11-03T09:00:00Z"));
        }
        let session = || ("session", format!("visit-{s}"));
        events.push(purchase("CANDLE", session(), "2026-11-04T18:00:00Z"));
        events.push(purchase("CANDLE-HOLDER", session(), "2026-11-04T18:01:00Z"));
    }
    events.push(serde_json::json!({ "kind": "purchase", "item_id": "MUG" }));
    let sent = events.len() as i64;
    let response = app
        .client
        .post(format!("{}/events", app.address))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (stored,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        if stored == sent {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stored} of {sent} events stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let pool = app.db.pool.clone();
    let orders = history::load_history(&pool, None, HistorySource::Orders, 3600)
        .await
        .unwrap();
    assert!(orders.is_empty(), "no orders were imported");
    let history = history::load_history(&pool, None, HistorySource::Events, 3600)
        .await
        .unwrap();
    // 12 teapot baskets, 6 mug baskets the next day, 12 candle baskets, 1 anonymous mug.
    assert_eq!(history.len(), 31);
    let index = |id: &str| history.items.iter().position(|i| i.id == id).unwrap() as u32;
    let (teapot, cosy, mug) = (index("TEAPOT"), index("TEA-COSY"), index("MUG"));
    let together = (0..history.len())
        .filter(|&b| history.basket(b).contains(&teapot) && history.basket(b).contains(&cosy))
        .count();
    assert_eq!(together, 12, "purchases minutes apart make one basket");
    assert!(
        (0..history.len())
            .all(|b| !history.basket(b).contains(&mug) || history.basket(b).len() == 1),
        "a purchase the next day is a basket of its own"
    );
    let model = train_default(history).await;
    let i = model.index_of("TEAPOT").unwrap();
    let (others, _, _) = model.co_purchase.row(i);
    let neighbours: Vec<&str> = others
        .iter()
        .map(|&o| model.items[o as usize].id.as_str())
        .collect();
    assert_eq!(neighbours.first(), Some(&"TEA-COSY"), "{neighbours:?}");
    app.stop().await;
}

/// Runs the `tandem` binary with `args` against the database at `url`, off the runtime.
async fn run_tandem(url: &str, args: &[&str]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"));
    command
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "tandem {args:?} failed: {stderr}");
    stderr
}

/// The path a new user takes, end to end, on the embedded demo's real sample: the binary
/// imports it into a fresh database and trains a version before a cut-off, `evaluate` writes
/// its test cases from the same database, and the server answers every case, with the cart
/// alone and with earlier purchases, exactly as `evaluate` scored it. (Untuned, to keep a
/// debug build's test short; tuning fits models the same way.) Some carts hold more than 100
/// items: Online Retail's customers are retailers.
#[tokio::test]
async fn the_server_answers_every_test_case_as_evaluate_scored_it() {
    let db = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let cases_file = dir.path().join("cases.jsonl");
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/demo/online_retail_sample.csv.gz"
    );
    let until = "2011-10-15";
    run_tandem(&db.url, &["import", "--orders", sample]).await;
    run_tandem(&db.url, &["train", "--until", until, "--no-tune"]).await;
    run_tandem(
        &db.url,
        &[
            "evaluate",
            "--until",
            until,
            "--serving-only",
            "--no-tune",
            "--cases",
            cases_file.to_str().unwrap(),
        ],
    )
    .await;
    let cases: Vec<serde_json::Value> = std::fs::read_to_string(&cases_file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(cases.len() > 500, "{} cases", cases.len());
    assert!(cases
        .iter()
        .any(|c| c["cart"].as_array().unwrap().len() > 100));

    let settings = test_settings(&db);
    let app = spawn_app_with(db, settings).await;
    app.wait_until_ready().await;
    let mut disagree = Vec::new();
    let (mut hits, mut hits_with) = (0, 0);
    for (n, case) in cases.iter().enumerate() {
        let with_purchases = !case["purchased"].as_array().unwrap().is_empty();
        for (purchased, recorded) in [
            (false, &case["listed"]),
            (true, &case["listed_with_purchased"]),
        ] {
            let mut body = serde_json::json!({"cart": case["cart"], "k": 10});
            if purchased && with_purchases {
                body["purchased"] = case["purchased"].clone();
            }
            let response = app
                .client
                .post(format!("{}/recommendations", app.address))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "case {n}");
            let answer: serde_json::Value = response.json().await.unwrap();
            let listed = answer["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|item| item["item_id"] == case["hidden"]);
            if listed != recorded.as_bool().unwrap() {
                disagree.push((n, purchased));
            }
            if listed {
                *(if purchased { &mut hits_with } else { &mut hits }) += 1;
            }
        }
    }
    assert!(
        hits > 0 && hits_with > 0,
        "{hits} hits, {hits_with} with purchases"
    );
    assert!(
        disagree.is_empty(),
        "{} of {} cases listed otherwise than evaluate scored them: {:?}",
        disagree.len(),
        cases.len(),
        &disagree[..disagree.len().min(10)]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_database_makes_the_baskets_a_file_makes_whatever_the_order_ids() {
    // A shop whose order ids start with C, and an order with a line that cancels: the
    // history read back from Postgres must hold the baskets reading the file gives.
    let csv = format!(
        "{HEADER}\
         C100,10001,CUP,1,2011-01-01 10:00:00,1.0,1.0,UK\n\
         C100,10002,SAUCER,1,2011-01-01 10:00:00,1.0,1.0,UK\n\
         C200,10001,CUP,2,2011-01-02 10:00:00,1.0,2.0,UK\n\
         C200,10002,SAUCER,-1,2011-01-02 10:00:00,1.0,2.0,UK\n\
         C200,10003,TEAPOT,1,2011-01-02 10:00:00,5.0,2.0,UK\n\
         300,10002,SAUCER,1,2011-01-03 10:00:00,1.0,3.0,UK\n\
         300,10003,TEAPOT,1,2011-01-03 10:00:00,5.0,3.0,UK\n"
    );
    let baskets = |h: &tandem::offline::history::History| -> Vec<Vec<String>> {
        let mut all: Vec<Vec<String>> = (0..h.len())
            .map(|b| {
                let mut items: Vec<String> = h
                    .basket(b)
                    .iter()
                    .map(|&i| h.items[i as usize].id.clone())
                    .collect();
                items.sort();
                items
            })
            .collect();
        all.sort();
        all
    };
    let (from_file, _) = history::History::read(csv.as_bytes(), &ReadOptions::default()).unwrap();
    assert_eq!(
        baskets(&from_file),
        [
            vec!["10001", "10002"],
            vec!["10001", "10003"],
            vec!["10002", "10003"]
        ]
    );
    let db = fresh_database().await;
    let report = import(&db.pool, csv).await;
    assert_eq!(report.rows.cancellation_lines, 1);
    let cancelled: Vec<String> = sqlx::query_scalar("SELECT id FROM orders WHERE cancelled")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(cancelled, ["C200"]);
    let from_database = history::load_history(&db.pool, None, HistorySource::Orders, 0)
        .await
        .unwrap();
    assert_eq!(baskets(&from_database), baskets(&from_file));
}
