//! Byte-for-byte answers on a fixed model: a fixed sequence of storefront requests (carts,
//! touchpoints, `k`, `explain`, viewed and purchased items, a shopper in an experiment, capping
//! and "not interested" across requests, bad input) against a server with no database, each
//! answer compared with `tests/golden/recommendations.txt` with its request id masked.
//!
//! The model is built here from a seeded hash, not trained, so the file only changes when
//! serving does. Embeddings are axis-aligned or have four ±1 entries, so every cosine is exact
//! whatever the SIMD width of the machine. After a deliberate change of answers, regenerate
//! the file with `TANDEM_UPDATE_GOLDEN=1 cargo test --test api golden` and review the diff.

use std::fmt::Write as _;
use std::sync::Arc;

use tandem::app::InitialModel;
use tandem::config::{Secret, Settings};
use tandem::domain::{ModelVersion, Touchpoint};
use tandem::experiments::{ExperimentConfig, VariantConfig};
use tandem::model::{ItemRecord, Snapshot, SnapshotBuilder};

use crate::helpers::{metrics_text, RunningServer, ADMIN_TOKEN};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/recommendations.txt"
);

/// Items in the fixed model.
const ITEMS: usize = 48;
const DIM: usize = 8;

/// SplitMix64: a fixed, dependency-free stream of numbers for the model's rows.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hash(item: usize, salt: u64) -> u64 {
    mix(((item as u64) << 8) | salt)
}

fn item_id(i: usize) -> String {
    // One id that needs escaping in JSON, one that is not ASCII.
    match i {
        17 => "Q\"17".to_string(),
        23 => "É23".to_string(),
        _ => format!("G{i:02}"),
    }
}

fn title(i: usize) -> String {
    match i % 16 {
        3 => format!("Mug \"Deluxe\" {i}"),
        7 => format!("Back\\slash bag {i}"),
        9 => format!("Tab\there {i}"),
        12 => format!("Café set {i}"),
        _ => format!("ITEM {i} {}", ["RED", "BLUE", "GREEN", "PINK"][i % 4]),
    }
}

/// An embedding whose normalised entries are 1 or ±0.5, so dot products are exact.
fn embedding(i: usize, salt: u64) -> Vec<f32> {
    let h = hash(i, salt);
    let mut v = vec![0.0f32; DIM];
    if h.is_multiple_of(3) {
        v[(h >> 8) as usize % DIM] = 1.0;
    } else {
        let mut placed = 0;
        let mut bits = h >> 8;
        let mut slot = (h >> 40) as usize % DIM;
        while placed < 4 {
            if v[slot] == 0.0 {
                v[slot] = if bits & 1 == 1 { 1.0 } else { -1.0 };
                bits >>= 1;
                placed += 1;
            }
            slot = (slot + 3) % DIM;
        }
    }
    v
}

/// The fixed model: categories, prices (some unknown), stock, product groups, promotions and
/// margins, co-purchase rows (a few negative), content rows, content and diversity embeddings.
fn fixed_snapshot() -> Snapshot {
    let ids: Vec<String> = (0..ITEMS).map(item_id).collect();
    let titles: Vec<String> = (0..ITEMS).map(title).collect();
    let categories: Vec<String> = (0..ITEMS).map(|i| format!("c{}", i % 6)).collect();
    let groups: Vec<String> = (0..ITEMS).map(|i| format!("p{}", i / 3)).collect();
    // Every seventh item has an image; one link no page may show is left out.
    let images: Vec<String> = (0..ITEMS)
        .map(|i| match i {
            14 => "javascript:alert(1)".to_string(),
            _ => format!("https://img.example/{i}.jpg?size=\"m\""),
        })
        .collect();
    let mut b = SnapshotBuilder::new(ModelVersion(42), DIM, ITEMS).with_diversity_dim(DIM);
    for i in 0..ITEMS {
        let h = hash(i, 1);
        b.add_item(ItemRecord {
            id: &ids[i],
            popularity: (h % 1000) as f32,
            title: (i != 31).then_some(titles[i].as_str()),
            category: (i % 10 != 9).then_some(categories[i].as_str()),
            price: (i % 8 != 5).then(|| 1.0 + (h >> 16) as f32 % 4000.0 / 100.0),
            in_stock: i % 11 != 5,
            product_group: (i < 12).then_some(groups[i].as_str()),
            promoted: i % 13 == 0,
            margin: (i % 2 == 0).then(|| (h >> 32) as f32 % 100.0 / 100.0),
            image_link: (i % 7 == 0).then_some(images[i].as_str()),
        })
        .unwrap();
    }
    for i in 0..ITEMS {
        for t in 0..6 {
            let j = (i * 7 + t * 5 + 1) % ITEMS;
            if j != i {
                let score = (hash(i * ITEMS + j, 2) % 1000) as f32 / 1000.0 - 0.08;
                b.add_pair(&ids[i], &ids[j], score).unwrap();
            }
        }
    }
    for i in 0..ITEMS {
        for t in 0..3 {
            let j = (i * 5 + t * 11 + 2) % ITEMS;
            if j != i {
                let score = (hash(i * ITEMS + j, 3) % 1000) as f32 / 1000.0;
                b.add_content_pair(&ids[i], &ids[j], score).unwrap();
            }
        }
    }
    for (i, id) in ids.iter().enumerate() {
        if i % 9 != 4 {
            b.add_embedding(id, &embedding(i, 4)).unwrap();
        }
        b.add_diversity_embedding(id, &embedding(i, 5)).unwrap();
    }
    b.finish().unwrap()
}

/// One request of the sequence.
struct Case {
    method: &'static str,
    path: String,
    headers: &'static [(&'static str, &'static str)],
    body: Option<String>,
}

fn get(path: &str) -> Case {
    Case {
        method: "GET",
        path: path.to_string(),
        headers: &[],
        body: None,
    }
}

fn post(path: &str, body: &str) -> Case {
    Case {
        method: "POST",
        path: path.to_string(),
        headers: &[("content-type", "application/json")],
        body: Some(body.to_string()),
    }
}

fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        "/recommendations?cart=G01",
        "/recommendations?cart=G01,G02&k=5",
        "/recommendations?cart=G03&touchpoint=cart&explain=true",
        "/recommendations?cart=G04,G05,G06&touchpoint=product&k=7&explain=true",
        "/recommendations?cart=G07&viewed=G10,G11,G12&explain=true",
        "/recommendations?cart=G08&purchased=G20,G21,G20,G22&explain=true",
        "/recommendations?cart=G09&viewed=G13&purchased=G14,G15&k=6&explain=true&touchpoint=cart",
        "/recommendations?cart=G01,nope,G02,nope,other&k=3",
        "/recommendations",
        "/recommendations?k=50&explain=true",
        "/recommendations?cart=G18&max_price=12.5&exclude_categories=c1,c2&explain=true",
        "/recommendations?cart=G00,G04&k=12",
        "/recommendations?cart=Q%2217,%C3%8923&explain=true",
        "/recommendations?cart=G30,G31,G32,G33,G34,G35,G36,G37&viewed=G40&purchased=G41,G42,G43,G44,G45&k=10&explain=true",
        "/recommendations?viewed=G25,G26&purchased=G27&touchpoint=product",
        // Shoppers: experiment assignment on the product page, the variant's k, and capping.
        "/recommendations?cart=G09&touchpoint=product&user=alice&explain=true",
        "/recommendations?cart=G09&touchpoint=product&user=bob&explain=true",
        "/recommendations?cart=G09&touchpoint=product&user=carol",
        "/recommendations?cart=G09&touchpoint=product&user=dave&k=4",
        "/recommendations?cart=G09&touchpoint=product&session=s-1",
        "/recommendations?cart=G10&k=3&user=erin",
        "/recommendations?cart=G10&k=3&user=erin",
        "/recommendations?cart=G10&k=3&user=erin",
        "/recommendations?cart=G10&k=3&user=erin",
        "/recommendations?cart=G10&k=3&user=erin&personalize=false",
        "/recommendations?cart=G10&k=3&session=erin-session&purchased=G12",
    ]
    .into_iter()
    .map(get)
    .collect();
    cases.push(Case {
        headers: &[("dnt", "1")],
        ..get("/recommendations?cart=G10&k=3&user=erin&purchased=G12")
    });
    cases.push(Case {
        headers: &[("sec-gpc", "1")],
        ..get("/recommendations?cart=G09&touchpoint=product&user=alice")
    });
    // Events that cite a list are counted for the variant that served it.
    cases.push(get("/recommendations?cart=G11&touchpoint=product&user=bob"));
    cases.push(post(
        "/events",
        r#"[{"kind": "click", "item_id": "G01", "request_id": "{previous}"}]"#,
    ));
    // "Not interested", then the same shopper's next list.
    cases.push(get("/recommendations?cart=G20&k=4&user=frank"));
    cases.push(post(
        "/events",
        r#"[{"kind": "dismiss", "item_id": "G07", "user": "frank"},
            {"kind": "click", "item_id": "G22", "user": "frank", "touchpoint": "checkout"},
            {"kind": "impression", "item_id": "G23", "user": "frank", "variant": "made-up"}]"#,
    ));
    cases.push(get("/recommendations?cart=G20&k=4&user=frank"));
    cases.push(post(
        "/events",
        r#"[{"kind": "click", "item_id": "G01"}, {"kind": "nope"}]"#,
    ));
    // The same fields as JSON.
    cases.push(post(
        "/recommendations",
        r#"{"cart": ["G05", "G06"], "viewed": ["G07"], "purchased": ["G08", "G08"],
            "touchpoint": "cart", "k": 4, "explain": true, "max_price": 30}"#,
    ));
    cases.push(post(
        "/recommendations",
        r#"{"cart": ["G09"], "user": "alice", "touchpoint": "product"}"#,
    ));
    // Bad input: each gets its code.
    for path in [
        "/recommendations?k=0",
        "/recommendations?k=51",
        "/recommendations?k=ten",
        "/recommendations?touchpoint=basket",
        "/recommendations?max_price=-1",
        "/recommendations?max_price=cheap",
        "/recommendations?personalize=maybe",
        "/recommendations?colour=red",
        "/recommendations?k=1&k=2",
        "/recommendations?user=a%0Ab",
        "/recommendations?session=a%0Ab",
        "/recommendations?viewed=a%0Ab",
        "/recommendations?purchased=a%0Ab",
        "/recommendations?cart=a%0Ab",
        "/nope",
    ] {
        cases.push(get(path));
    }
    cases.push(post(
        "/recommendations",
        &format!(r#"{{"cart": {:?}}}"#, vec!["a"; 2001]),
    ));
    cases.push(get(&format!("/recommendations?cart={}", "x".repeat(129))));
    cases.push(get(&format!(
        "/recommendations?exclude_categories={}",
        "c,".repeat(51)
    )));
    cases.push(get(&format!("/recommendations?cart={}", "a,".repeat(1100))));
    cases.push(post("/recommendations", "{"));
    cases.push(post("/recommendations", r#"{"cart": 5}"#));
    cases.push(post("/recommendations", r#"{"k": 99}"#));
    cases.push(Case {
        headers: &[("content-type", "text/plain")],
        ..post("/recommendations", "{}")
    });
    cases.push(Case {
        method: "DELETE",
        ..get("/recommendations")
    });
    cases.push(post("/reload", ""));
    cases.push(Case {
        headers: &[("authorization", "Bearer wrong")],
        ..post("/reload", "")
    });
    cases.push(Case {
        method: "DELETE",
        headers: &[("authorization", "Bearer test-admin-token")],
        ..get(&format!("/shoppers/{}", "x".repeat(129)))
    });
    cases
}

/// Stands in a case's body for the request id of the answer before it.
const PREVIOUS: &str = "{previous}";

const REQUEST_ID_KEY: &str = "\"request_id\":\"";

/// Where the value of `"request_id"` lies in `body`.
fn request_id_range(body: &str) -> Option<std::ops::Range<usize>> {
    let start = body.find(REQUEST_ID_KEY)? + REQUEST_ID_KEY.len();
    let end = body[start..].find('"').map_or(body.len(), |e| start + e);
    Some(start..end)
}

/// The value of `"request_id"` in `body`.
fn request_id(body: &str) -> Option<&str> {
    request_id_range(body).map(|range| &body[range])
}

/// `body` with the value of `"request_id"` replaced, as it is random.
fn mask_request_id(body: &str) -> String {
    match request_id_range(body) {
        Some(range) => format!("{}<request-id>{}", &body[..range.start], &body[range.end..]),
        None => body.to_string(),
    }
}

/// How a case is shown in the file: long paths are cut (the file is for reading).
fn shown(case: &Case) -> String {
    let path = if case.path.len() > 160 {
        format!("{}… ({} bytes)", &case.path[..120], case.path.len())
    } else {
        case.path.clone()
    };
    let mut line = format!("### {} {path}", case.method);
    for (name, value) in case.headers {
        let _ = write!(line, " [{name}: {value}]");
    }
    if let Some(body) = &case.body {
        let flat = body.split_whitespace().collect::<Vec<_>>().join(" ");
        if flat.len() > 1000 {
            let head: String = flat.chars().take(120).collect();
            let _ = write!(line, "\n    {head}… ({} bytes)", body.len());
        } else {
            let _ = write!(line, "\n    {flat}");
        }
    }
    line
}

/// Counters the storefront requests move, in the order `/metrics` prints them.
fn counters(metrics: &str) -> String {
    const FAMILIES: [&str; 6] = [
        "tandem_recommendation_unknown_cart_items_total",
        "tandem_recommendation_popular_fallback_items_total",
        "tandem_recommendation_lists_total",
        "tandem_feedback_events_total",
        "tandem_events_rejected_total",
        "tandem_http_requests_total",
    ];
    metrics
        .lines()
        .filter(|line| FAMILIES.iter().any(|f| line.starts_with(f)))
        .map(|line| format!("{line}\n"))
        .collect()
}

#[tokio::test]
async fn storefront_answers_are_byte_for_byte_those_of_the_golden_file() {
    let snapshot = tokio::task::spawn_blocking(fixed_snapshot).await.unwrap();
    let mut settings = Settings::defaults().unwrap();
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    // A test machine may be busy: shedding by queueing delay would answer 503 here.
    settings.server.max_queue_delay_ms = 10_000;
    settings.server.queue_delay_target_ms = 10_000;
    settings.server.max_query_bytes = 2048;
    settings.database.url = None;
    settings.admin_token = Some(Secret::new(ADMIN_TOKEN));
    settings.pseudonym_key = Some(Secret::new("golden"));
    settings.experiments = vec![ExperimentConfig {
        name: "length".into(),
        touchpoints: vec![Touchpoint::Product],
        variants: vec![
            VariantConfig {
                k: Some(3),
                theta: Some(0.5),
                ..VariantConfig::new("short", 0.5)
            },
            VariantConfig {
                content: Some(0.0),
                ..VariantConfig::new("long", 0.5)
            },
        ],
    }];
    let server = RunningServer::start(settings, InitialModel::Snapshot(Arc::new(snapshot))).await;
    let client = reqwest::Client::new();

    let mut answers = String::new();
    let mut previous_request_id = String::new();
    for case in cases() {
        let url = format!("{}{}", server.address, case.path);
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut request = client.request(method, url);
        for (name, value) in case.headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = &case.body {
            request = request.body(body.replace(PREVIOUS, &previous_request_id));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = response.text().await.unwrap();
        if let Some(id) = request_id(&body) {
            previous_request_id = id.to_string();
        }
        let _ = write!(
            answers,
            "{}\n{status} {content_type}\n{}\n\n",
            shown(&case),
            mask_request_id(&body)
        );
    }
    let metrics = metrics_text(&client, &server.address).await;
    let _ = write!(answers, "### counters\n{}", counters(&metrics));
    server.stop().await;

    if std::env::var_os("TANDEM_UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &answers).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(GOLDEN).unwrap_or_else(|e| {
        panic!("cannot read {GOLDEN} ({e}); create it with TANDEM_UPDATE_GOLDEN=1")
    });
    if answers != expected {
        let ours: Vec<&str> = answers.split("\n\n").collect();
        let theirs: Vec<&str> = expected.split("\n\n").collect();
        for (n, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a, b, "answer {n} differs from {GOLDEN}");
        }
        assert_eq!(ours.len(), theirs.len(), "number of answers in {GOLDEN}");
        panic!("the answers differ from {GOLDEN}");
    }
}
