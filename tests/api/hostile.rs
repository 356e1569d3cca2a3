//! Hostile clients against a real server: heads and bodies sent slowly or never finished,
//! more connections than the cap, oversized requests, and events that follow an erasure.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem::app::InitialModel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    fresh_database, metrics_text, spawn_app_with, test_settings, RunningServer, TestApp,
    ADMIN_TOKEN,
};

fn host(address: &str) -> String {
    address.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection or `within` passes; returns what was read and
/// whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return (answer, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (answer, true),
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Status and JSON body of a raw HTTP/1.1 response.
fn parse_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, json)
}

/// Sends `head` (and nothing more) on a fresh connection and reads the answer until the server
/// closes the connection or a second passes.
async fn send_raw(address: &str, request: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(host(address)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(2)).await;
    parse_response(&answer)
}

async fn app_with(tweak: impl FnOnce(&mut tandem::config::Settings)) -> TestApp {
    let db = fresh_database().await;
    let mut settings = test_settings(&db);
    tweak(&mut settings);
    spawn_app_with(db, settings).await
}

#[tokio::test]
async fn a_half_sent_head_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let app = app_with(|s| s.server.header_read_timeout_ms = 300).await;
    let mut half = TcpStream::connect(host(&app.address)).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut half, Duration::from_secs(5)).await;
    assert!(closed, "a half-sent head was held open");
    assert!(started.elapsed() < Duration::from_secs(3));

    let mut idle = TcpStream::connect(host(&app.address)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection was held open");
    app.stop().await;
}

/// The value of the unlabelled metric `name` in a `/metrics` text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn many_half_sent_heads_wait_outside_hyper_and_are_closed_at_the_deadline() {
    let app = app_with(|s| s.server.header_read_timeout_ms = 4000).await;
    const SLOW: usize = 300;
    let mut slow = Vec::new();
    for i in 0..SLOW {
        let mut stream = TcpStream::connect(host(&app.address)).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        if i % 2 == 0 {
            stream.write_all(b"Host: x\r\nX-Slow: ").await.unwrap();
        }
        slow.push(stream);
    }
    // Every one of them waits for its head before hyper gets it.
    // (The server may not have accepted the last ones yet.)
    let accepted = Instant::now() + Duration::from_secs(2);
    let waiting = loop {
        let metrics = metrics_text(&app.client, &app.address).await;
        let waiting = metric(&metrics, "tandem_http_connections_reading_first_head");
        if waiting == Some(SLOW as f64) || Instant::now() > accepted {
            break waiting;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(waiting, Some(SLOW as f64));

    // Meanwhile other clients are served: one on a keep-alive connection, one sending its head
    // a byte at a time, one sending two requests in one write.
    assert_eq!(app.get("/healthz").await.status(), 200);
    let mut trickle = TcpStream::connect(host(&app.address)).await.unwrap();
    trickle.set_nodelay(true).unwrap();
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" {
        trickle.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (answer, _) = read_until_closed(&mut trickle, Duration::from_secs(10)).await;
    assert_eq!(parse_response(&answer).0, 200);
    let mut pipelined = TcpStream::connect(host(&app.address)).await.unwrap();
    pipelined
        .write_all(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut pipelined, Duration::from_secs(10)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    let metrics = metrics_text(&app.client, &app.address).await;
    assert_eq!(
        metric(&metrics, "tandem_http_connections_reading_first_head"),
        Some(SLOW as f64),
        "a half-sent head was closed before its deadline"
    );

    // At the deadline each is closed without an answer.
    let closed = futures_util::future::join_all(
        slow.iter_mut()
            .map(|stream| read_until_closed(stream, Duration::from_secs(30))),
    )
    .await;
    for (answer, closed) in closed {
        assert!(closed, "a half-sent head was held open");
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    }
    let metrics = metrics_text(&app.client, &app.address).await;
    assert_eq!(
        metric(&metrics, "tandem_http_connections_reading_first_head"),
        Some(0.0)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_shutdown_closes_a_half_open_connection_at_once() {
    let db = fresh_database().await;
    let mut settings = test_settings(&db);
    settings.server.shutdown_grace_ms = 10_000;
    let server = RunningServer::start(settings, InitialModel::FromDatabase).await;
    let mut half = TcpStream::connect(host(&server.address)).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    let (_, closed) = read_until_closed(&mut half, Duration::from_secs(1)).await;
    assert!(closed);
    drop(db);
}

#[tokio::test]
async fn an_admin_call_without_a_token_is_refused_before_its_body_arrives() {
    let app = app_with(|_| {}).await;
    let mut stream = TcpStream::connect(host(&app.address)).await.unwrap();
    stream
        .write_all(b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_millis(1500)).await;
    let (status, body) = parse_response(&answer);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let app = app_with(|s| s.server.body_read_timeout_ms = 300).await;
    for head in [
        "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".to_string(),
        format!("POST /reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"),
    ] {
        let mut stream = TcpStream::connect(host(&app.address)).await.unwrap();
        let request = format!("{head}Content-Length: 100\r\n\r\n[{{\"kind\"");
        stream.write_all(request.as_bytes()).await.unwrap();
        let started = Instant::now();
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        let (status, body) = parse_response(&answer);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (408, Some("body_timeout")),
            "{head}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    app.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = app_with(|s| s.server.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(host(&app.address)).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(host(&app.address)).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (early, _) = read_until_closed(&mut third, Duration::from_millis(300)).await;
    assert!(
        early.is_empty(),
        "a third connection was served over the cap"
    );
    held.pop();
    let (answer, _) = read_until_closed(&mut third, Duration::from_secs(3)).await;
    assert_eq!(parse_response(&answer).0, 200);
    let metrics = metrics_text(&app.client, &app.address).await;
    assert!(
        metrics.contains("tandem_http_connections_open 2"),
        "{metrics}"
    );
    drop(held);
    app.stop().await;
}

#[tokio::test]
async fn every_error_a_client_can_cause_has_the_json_shape() {
    let app = app_with(|s| {
        s.server.max_body_bytes = 1024;
        s.server.max_uri_bytes = 2048;
        s.server.max_header_bytes = 2048;
    })
    .await;
    let big = "x".repeat(4000);
    let cases = [
        (
            format!("POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{big}"),
            413,
            "body_too_large",
        ),
        (
            format!("GET /recommendations?cart={big} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            414,
            "uri_too_long",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"),
            431,
            "headers_too_large",
        ),
        (
            format!("DELETE /shoppers/%FF%FE HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"),
            400,
            "invalid_shopper",
        ),
    ];
    for (request, status, code) in cases {
        let (got, body) = send_raw(&app.address, request.as_bytes()).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(body["error"]["message"].is_string());
    }
    // A chunked body over the limit, with no length to refuse it by up front.
    let chunk = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let request = format!(
        "POST /events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}"
    );
    let (got, body) = send_raw(&app.address, request.as_bytes()).await;
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    // A head past hyper's own buffer is answered by hyper, with no body (docs/api.md says so).
    let huge = "x".repeat(80_000);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\n\r\n");
    let (got, body) = send_raw(&app.address, request.as_bytes()).await;
    assert_eq!((got, body), (431, Value::Null));
    app.stop().await;
}

async fn post_events(app: &TestApp, body: &Value) -> u16 {
    app.client
        .post(format!("{}/events", app.address))
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_erasure_removes_queued_events_and_later_ones_are_stored() {
    let app = app_with(|s| {
        // Events wait in the queue until five have arrived.
        s.events.batch_size = 5;
        s.events.flush_interval_ms = 60_000;
    })
    .await;
    let event = |item: &str| json!({"kind": "dismiss", "item_id": item, "user": "zoe"});
    assert_eq!(
        post_events(&app, &json!([event("a"), event("b")])).await,
        202
    );
    let erased = app
        .client
        .delete(format!("{}/shoppers/zoe", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200);
    let answer: Value = app
        .client
        .post(format!("{}/events", app.address))
        .json(&json!([event("c"), event("d"), event("e")]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"accepted": 3, "stored": true}));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = metrics_text(&app.client, &app.address).await;
        if metrics.contains("tandem_events_written_total 3") {
            assert!(
                metrics.contains(r#"tandem_events_rejected_total{reason="erased"} 2"#),
                "{metrics}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let items: Vec<(String,)> = sqlx::query_as("SELECT item_id FROM events ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let items: Vec<&str> = items.iter().map(|(i,)| i.as_str()).collect();
    assert_eq!(
        items,
        ["c", "d", "e"],
        "what came after the erasure is kept"
    );
    app.stop().await;
}

#[tokio::test]
async fn dismissals_of_items_the_model_does_not_know_create_no_cap_state() {
    let app = app_with(|s| s.events.max_events_per_request = 1000).await;
    crate::helpers::write_version(&app.db.pool, 40, 3).await;
    app.wait_until_ready().await;
    let memory = |metrics: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("tandem_capping_memory_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    for body in 0..5 {
        let events: Vec<Value> = (0..1000)
            .map(|i| {
                let id = format!("{body:04}-{i:04}-{}", "z".repeat(118));
                json!({"kind": "dismiss", "item_id": id, "user": format!("mallory{}", i % 7)})
            })
            .collect();
        assert_eq!(post_events(&app, &json!(events)).await, 202);
    }
    let metrics = metrics_text(&app.client, &app.address).await;
    assert_eq!(memory(&metrics), 0.0, "{metrics}");
    let known = json!([{"kind": "dismiss", "item_id": "S0000002", "user": "mallory0"}]);
    assert_eq!(post_events(&app, &known).await, 202);
    let metrics = metrics_text(&app.client, &app.address).await;
    assert!(memory(&metrics) > 0.0, "{metrics}");
    // Every event is still stored: only capping ignores the unknown items.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !metrics_text(&app.client, &app.address)
        .await
        .contains("tandem_events_written_total 5001")
    {
        assert!(Instant::now() < deadline, "not every event was written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}
