//! Router tests with `oneshot` on an in-memory snapshot: no network, no database.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::error::ErrorCode;
use super::{router, AppState, RouterLimits};
use crate::app::build_state;
use crate::capping::{CapPolicy, CapStore, MemoryCapStore};
use crate::config::{Secret, Settings};
use crate::metrics::Metrics;
use crate::model::ModelHandle;
use crate::pipeline::fixtures::small_snapshot;

const LIMITS: RouterLimits = RouterLimits {
    request_timeout: Duration::from_secs(2),
    max_body_bytes: 64 * 1024,
    body_read_timeout: Duration::from_secs(2),
    max_uri_bytes: 8192,
    max_header_bytes: 8192,
    max_in_flight: 64,
};

/// The settings of the router tests: no database, an admin token, small limits, a cap of two
/// impressions per item.
fn settings() -> Settings {
    let mut settings = Settings::defaults().unwrap();
    settings.database.url = None;
    settings.admin_token = Some(Secret::new("token"));
    settings.pseudonym_key = Some(Secret::new("test"));
    settings.server.max_query_bytes = 4096;
    settings.capping.max_impressions_per_item = 2;
    settings.events.max_events_per_request = 10;
    settings.events.attribution_capacity = 100;
    settings
}

/// The state the server would build from `settings`, with `caps` and the small snapshot
/// (unless not `loaded`).
fn state_with(settings: &Settings, caps: Arc<dyn CapStore>, loaded: bool) -> AppState {
    let metrics = Metrics::new().unwrap();
    let model = Arc::new(ModelHandle::default());
    if loaded {
        let snapshot = Arc::new(small_snapshot());
        metrics.model_loaded(&snapshot, Duration::ZERO);
        model.replace(snapshot);
    }
    build_state(settings, model, None, caps, metrics).unwrap()
}

fn state(loaded: bool) -> AppState {
    let settings = settings();
    let caps = Arc::new(MemoryCapStore::new(settings.capping.clone()));
    state_with(&settings, caps, loaded)
}

async fn call(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    let response = router(state.clone(), LIMITS)
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, body)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn recommendations_have_the_documented_shape() {
    let s = state(true);
    let (status, body) = call(&s, get("/recommendations?cart=bag,nope&k=2")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], 1);
    assert_eq!(body["touchpoint"], "checkout");
    assert_eq!(body["variant"], "control");
    assert_eq!(body["unknown_items"], serde_json::json!(["nope"]));
    assert_eq!(body["request_id"].as_str().unwrap().len(), 36);
    let first = &body["items"][0];
    assert_eq!(first["item_id"], "cable");
    assert_eq!(first["reason"]["kind"], "bought_together");
    assert_eq!(first["reason"]["anchor"], "bag");
    assert_eq!(first["reason"]["text"], "Often bought with bag");
    assert!(first.get("contributions").is_none());
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn post_takes_the_same_fields_as_json() {
    let s = state(true);
    let request = Request::post("/recommendations")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"cart": ["bag"], "k": 1, "explain": true}"#))
        .unwrap();
    let (status, body) = call(&s, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"][0]["item_id"], "cable");
    assert_eq!(body["items"][0]["contributions"]["collaborative"], 1.0);
}

#[tokio::test]
async fn earlier_purchases_are_offered_again_with_their_own_reason_but_not_after_opt_out() {
    let s = state(true);
    let uri = "/recommendations?cart=bag&purchased=mug,mug&k=4";
    let (status, body) = call(&s, get(uri)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    let mug = items.iter().find(|i| i["item_id"] == "mug").expect("mug");
    assert_eq!(mug["reason"]["kind"], "bought_before");
    assert_eq!(mug["reason"]["text"], "You bought this before");
    assert!(mug["reason"].get("anchor").is_none_or(Value::is_null));

    let opted_out = Request::get(uri)
        .header("sec-gpc", "1")
        .body(Body::empty())
        .unwrap();
    let (_, body) = call(&s, opted_out).await;
    let kinds: Vec<&Value> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["reason"]["kind"])
        .collect();
    assert!(!kinds.contains(&&Value::from("bought_before")), "{kinds:?}");
}

#[tokio::test]
async fn a_whole_purchase_history_is_read_from_its_newest_purchases_and_a_flood_is_refused() {
    let s = state(true);
    let post = |purchased: Vec<&str>| {
        Request::post("/recommendations")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::json!({"cart": ["bag"], "purchased": purchased, "k": 4}).to_string(),
            ))
            .unwrap()
    };
    let sent = crate::pipeline::MAX_PURCHASED_SENT;
    let newest = crate::pipeline::MAX_PURCHASED_ITEMS;
    // The mug was bought long ago; the newest purchases are all of the strap.
    let history: Vec<&str> = std::iter::repeat_n("mug", sent - newest)
        .chain(std::iter::repeat_n("strap", newest))
        .collect();
    let (status, body) = call(&s, post(history)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bought_before: Vec<&Value> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["reason"]["kind"] == "bought_before")
        .map(|i| &i["item_id"])
        .collect();
    assert!(!bought_before.contains(&&Value::from("mug")), "{body}");

    let (status, body) = call(&s, post(vec!["mug"; sent + 1])).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_purchased"))
    );
}

#[tokio::test]
async fn bad_input_gets_400_with_a_stable_code() {
    let s = state(true);
    let too_many = vec!["a"; crate::http::request::MAX_CART_ITEMS + 1].join(",");
    let cases = [
        format!("/recommendations?cart={too_many}"),
        format!("/recommendations?cart={}", "x".repeat(129)),
        "/recommendations?k=0".to_string(),
        "/recommendations?k=51".to_string(),
        "/recommendations?touchpoint=basket".to_string(),
        "/recommendations?k=1&k=2".to_string(),
        format!("/recommendations?cart={}", "a,".repeat(3000)),
        format!("/recommendations?purchased={}", "x".repeat(129)),
    ];
    let codes = [
        "invalid_cart",
        "invalid_cart",
        "invalid_k",
        "invalid_k",
        "invalid_touchpoint",
        "invalid_query",
        "query_too_large",
        "invalid_purchased",
    ];
    for (uri, code) in cases.iter().zip(codes) {
        let (status, body) = call(&s, get(uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["code"], code, "{uri}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let request = Request::post("/recommendations")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"cart\": 5}"))
        .unwrap();
    let (status, body) = call(&s, request).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_body"))
    );
}

#[tokio::test]
async fn readiness_follows_the_model_and_recommendations_wait_for_it() {
    let empty = state(false);
    let (status, body) = call(&empty, get("/readyz")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("model_not_loaded"))
    );
    let (status, _) = call(&empty, get("/recommendations?cart=bag")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = call(&empty, get("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&state(true), get("/readyz")).await;
    assert_eq!(
        (status, body["model_version"].as_i64()),
        (StatusCode::OK, Some(1))
    );
}

#[tokio::test]
async fn reload_requires_the_admin_token() {
    let s = state(true);
    let (status, body) = call(&s, Request::post("/reload").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let wrong = Request::post("/reload")
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&s, wrong).await.0, StatusCode::FORBIDDEN);
    let right = Request::post("/reload")
        .header(header::AUTHORIZATION, "Bearer token")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&s, right).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("database_not_configured")
        )
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors_and_metrics_use_route_labels() {
    let s = state(true);
    let (status, body) = call(&s, get("/nope/123")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body) = call(
        &s,
        Request::delete("/recommendations")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    call(&s, get("/recommendations?cart=bag")).await;
    let (status, Value::String(text)) = call(&s, get("/metrics")).await else {
        panic!("metrics are not text");
    };
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains(
            r#"tandem_http_requests_total{method="GET",route="/recommendations",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(!text.contains("/nope/123"));
    for name in [
        "tandem_http_request_duration_seconds_bucket",
        "tandem_model_version 1",
        "tandem_model_items 6",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
}

fn first_item(body: &Value) -> String {
    body["items"][0]["item_id"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn an_item_shown_to_a_shopper_n_times_is_capped_across_requests() {
    let s = state(true);
    let uri = "/recommendations?cart=bag&k=1&user=alice";
    assert_eq!(first_item(&call(&s, get(uri)).await.1), "cable");
    assert_eq!(first_item(&call(&s, get(uri)).await.1), "cable");
    let (status, body) = call(&s, get(uri)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(first_item(&body), "cable", "cable was shown twice already");
    // Another shopper, an anonymous request and an opted-out one are not affected.
    assert_eq!(
        first_item(
            &call(&s, get("/recommendations?cart=bag&k=1&user=bob"))
                .await
                .1
        ),
        "cable"
    );
    assert_eq!(
        first_item(&call(&s, get("/recommendations?cart=bag&k=1")).await.1),
        "cable"
    );
    let opted_out = "/recommendations?cart=bag&k=1&user=alice&personalize=false";
    assert_eq!(first_item(&call(&s, get(opted_out)).await.1), "cable");
    let gpc = Request::get(uri)
        .header("sec-gpc", "1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(first_item(&call(&s, gpc).await.1), "cable");
}

#[tokio::test]
async fn opted_out_requests_write_no_capping_state() {
    let store = Arc::new(MemoryCapStore::new(CapPolicy::default()));
    let s = state_with(&settings(), store.clone(), true);
    call(
        &s,
        get("/recommendations?cart=bag&user=carol&personalize=false"),
    )
    .await;
    let dnt = Request::get("/recommendations?cart=bag&session=s1")
        .header("dnt", "1")
        .body(Body::empty())
        .unwrap();
    call(&s, dnt).await;
    assert_eq!(store.shoppers(), 0);
    call(&s, get("/recommendations?cart=bag&session=s1")).await;
    assert_eq!(store.shoppers(), 1);
}

fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn a_dismissed_item_is_not_shown_to_that_shopper_again() {
    let s = state(true);
    let uri = "/recommendations?cart=bag&k=1&user=dana";
    assert_eq!(first_item(&call(&s, get(uri)).await.1), "cable");
    let (status, body) = call(
        &s,
        post_json(
            "/events",
            r#"[{"kind": "dismiss", "item_id": "cable", "user": "dana"}]"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, serde_json::json!({"accepted": 1, "stored": false}));
    assert_ne!(first_item(&call(&s, get(uri)).await.1), "cable");
    let other = "/recommendations?cart=bag&k=1&user=erin";
    assert_eq!(first_item(&call(&s, get(other)).await.1), "cable");
}

#[tokio::test]
async fn bad_events_get_400_with_the_event_index() {
    let s = state(true);
    let (status, body) = call(
        &s,
        post_json(
            "/events",
            r#"[{"kind": "click", "item_id": "a"}, {"kind": "nope"}]"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_events");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("event 1:"));
}

#[tokio::test]
async fn an_experiment_variant_serves_its_configuration_and_events_are_counted_for_it() {
    use crate::experiments::{ExperimentConfig, VariantConfig};
    let mut settings = settings();
    settings.experiments = vec![ExperimentConfig {
        name: "length".into(),
        touchpoints: vec![crate::domain::Touchpoint::Checkout],
        variants: vec![VariantConfig {
            k: Some(1),
            ..VariantConfig::new("short", 1.0)
        }],
    }];
    let caps = Arc::new(MemoryCapStore::new(settings.capping.clone()));
    let s = state_with(&settings, caps, true);
    let (_, body) = call(&s, get("/recommendations?cart=bag&user=frank")).await;
    assert_eq!(body["variant"], "length/short");
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        1,
        "the variant's k"
    );
    let (_, body) = call(&s, get("/recommendations?cart=bag&user=frank&k=3")).await;
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        3,
        "a requested k wins"
    );
    let (_, anonymous) = call(&s, get("/recommendations?cart=bag")).await;
    assert_eq!(anonymous["variant"], "control");
    let (_, opted_out) = call(
        &s,
        get("/recommendations?cart=bag&user=frank&personalize=false"),
    )
    .await;
    assert_eq!(opted_out["variant"], "control");

    let request_id = body["request_id"].as_str().unwrap();
    let events = format!(
        r#"[{{"kind": "click", "item_id": "cable", "request_id": "{request_id}"}},
           {{"kind": "impression", "item_id": "cable", "variant": "made-up"}}]"#
    );
    assert_eq!(
        call(&s, post_json("/events", &events)).await.0,
        StatusCode::ACCEPTED
    );
    let metrics = s.metrics.render().unwrap();
    assert!(metrics.contains(
        r#"tandem_feedback_events_total{kind="click",touchpoint="checkout",variant="length/short"} 1"#
    ), "{metrics}");
    assert!(metrics.contains(
        r#"tandem_feedback_events_total{kind="impression",touchpoint="unknown",variant="other"} 1"#
    ));
    assert!(metrics.contains(
        r#"tandem_recommendation_lists_total{touchpoint="checkout",variant="length/short"} 2"#
    ));
}

use proptest::strategy::Strategy;

/// Any status a client can be given for bad or odd input: 2xx, 4xx, or 503 where the service
/// says so deliberately (no database for a reload), errors with a code from [`ErrorCode`].
fn acceptable(status: StatusCode, body: &Value) -> bool {
    let known_code = body["error"]["code"]
        .as_str()
        .is_some_and(|code| ErrorCode::ALL.iter().any(|c| c.as_str() == code));
    let has_error_shape = known_code && body["error"]["message"].is_string();
    status.is_success()
        || (status.is_client_error() && has_error_shape)
        || (status == StatusCode::SERVICE_UNAVAILABLE && has_error_shape)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

    /// Random query strings (separators, escapes, unicode, repeated and unknown keys, long
    /// values) never panic or hang the router, and always get 2xx or a 4xx with the error shape.
    #[test]
    fn random_query_strings_get_2xx_or_a_described_4xx(
        parts in proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    "cart", "viewed", "user", "session", "touchpoint", "k", "max_price",
                    "exclude_categories", "personalize", "explain", "kk", "", "cart[]",
                ]),
                "[a-zA-Z0-9,%&=+;. \\-_\u{e9}\u{1F600}]{0,40}",
            ),
            0..8,
        ),
    ) {
        let query: String = parts
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "%20")))
            .collect::<Vec<_>>()
            .join("&");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = state(true);
        let uri = format!("/recommendations?{query}");
        let Ok(request) = Request::get(uri.as_str()).body(Body::empty()) else {
            // Not a valid URI at all: no HTTP client could send it.
            return Ok(());
        };
        let (status, body) = runtime.block_on(call(&s, request));
        proptest::prop_assert!(acceptable(status, &body), "{uri} -> {status} {body}");
    }

    /// Random JSON (and not-quite-JSON) bodies at every POST endpoint: the same promise.
    #[test]
    fn random_bodies_get_2xx_or_a_described_4xx(
        endpoint in proptest::sample::select(vec!["/recommendations", "/events", "/reload"]),
        body in proptest::prop_oneof![
            proptest::strategy::Just(String::new()),
            "[\\[\\]{}\",:a-z0-9 .\\-]{0,80}",
            proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "cart", "k", "kind", "item_id", "user", "timestamp", "version", "viewed",
                        "touchpoint", "request_id", "max_price",
                    ]),
                    proptest::prop_oneof![
                        proptest::strategy::Just("1".to_string()),
                        proptest::strategy::Just("-1".to_string()),
                        proptest::strategy::Just("1e308".to_string()),
                        proptest::strategy::Just("null".to_string()),
                        proptest::strategy::Just("\"click\"".to_string()),
                        proptest::strategy::Just("[\"bag\", \"cable\"]".to_string()),
                        proptest::strategy::Just("\"2026-11-26T00:00:00Z\"".to_string()),
                        "\"[a-z0-9]{0,12}\"",
                    ],
                ),
                0..6,
            )
            .prop_map(|fields| {
                let object = fields
                    .iter()
                    .map(|(k, v)| format!("\"{k}\": {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("[{{{object}}}]")
            }),
        ],
        admin in proptest::prelude::any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = state(true);
        // Bodies for /recommendations are objects; give it the object inside the array too.
        let body = if endpoint == "/recommendations" {
            body.trim_start_matches('[').trim_end_matches(']').to_string()
        } else {
            body
        };
        let mut request = Request::post(endpoint).header("content-type", "application/json");
        if admin {
            request = request.header("authorization", "Bearer token");
        }
        let request = request.body(Body::from(body.clone())).unwrap();
        let (status, answer) = runtime.block_on(call(&s, request));
        proptest::prop_assert!(acceptable(status, &answer), "{endpoint} {body} -> {status} {answer}");
    }
}

/// The served OpenAPI description and the router agree: every documented operation is routed
/// (neither 404 nor 405), and a real response has every property the schema requires and
/// none it does not document.
#[tokio::test]
async fn the_openapi_description_matches_the_router() {
    let s = state(true);
    let (status, spec) = call(&s, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().unwrap();
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let uri = path.replace("{id}", "someone");
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(uri.as_str())
                .header("content-type", "application/json")
                .body(Body::empty())
                .unwrap();
            let (status, body) = call(&s, request).await;
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed: {status} {body}"
            );
        }
    }
    let schema = &spec["components"]["schemas"]["Recommendations"];
    let (_, body) = call(&s, get("/recommendations?cart=bag&explain=true")).await;
    let documented: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in body.as_object().unwrap().keys() {
        assert!(
            documented.contains(&key.as_str()),
            "{key} is not documented"
        );
    }
    for required in schema["required"].as_array().unwrap() {
        assert!(
            body.get(required.as_str().unwrap()).is_some(),
            "{required} missing"
        );
    }
    let item = &spec["components"]["schemas"]["Item"];
    let item_keys: Vec<&str> = item["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in body["items"][0].as_object().unwrap().keys() {
        assert!(
            item_keys.contains(&key.as_str()),
            "item field {key} is not documented"
        );
    }
    let contributions: Vec<&str> = item["properties"]["contributions"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in body["items"][0]["contributions"]
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(
            contributions.contains(&key.as_str()),
            "contribution {key} is not documented"
        );
    }
}

/// The OpenAPI document's `Error` schema lists exactly the codes of [`ErrorCode`], in order.
#[tokio::test]
async fn the_openapi_error_codes_are_exactly_the_enum() {
    let (_, spec) = call(&state(true), get("/openapi.json")).await;
    let documented: Vec<&str> = spec["components"]["schemas"]["Error"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .expect("the Error schema lists its codes as an enum")
        .iter()
        .map(|code| code.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(documented, ours);
}

fn state_with_origins(origins: &[&str], explore_open: bool) -> AppState {
    let mut settings = settings();
    settings.server.cors_origins = origins.iter().map(|o| o.to_string()).collect();
    settings.explore.open = explore_open;
    let caps = Arc::new(MemoryCapStore::new(settings.capping.clone()));
    state_with(&settings, caps, true)
}

async fn raw(state: &AppState, request: Request<Body>) -> axum::response::Response {
    router(state.clone(), LIMITS)
        .oneshot(request)
        .await
        .unwrap()
}

fn preflight(uri: &str, origin: &str) -> Request<Body> {
    Request::options(uri)
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn storefront_routes_allow_the_configured_origins_and_no_other() {
    let s = state_with_origins(&["https://shop.example"], false);
    for uri in ["/recommendations", "/events"] {
        let allowed = raw(&s, preflight(uri, "https://shop.example")).await;
        assert!(allowed.status().is_success(), "{uri}: {}", allowed.status());
        let h = allowed.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://shop.example"
        );
        assert!(h[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("POST"));
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        let refused = raw(&s, preflight(uri, "https://evil.example")).await;
        assert!(
            refused
                .headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none(),
            "{uri} allowed an origin it was not given"
        );
    }
    let simple = Request::get("/recommendations?cart=bag")
        .header(header::ORIGIN, "https://shop.example")
        .body(Body::empty())
        .unwrap();
    let answer = raw(&s, simple).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://shop.example"
    );
    assert!(answer.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .unwrap()
        .contains("x-request-id"));
    let widget = Request::get("/widget.js")
        .header(header::ORIGIN, "https://shop.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        raw(&s, widget).await.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://shop.example"
    );
}

#[tokio::test]
async fn admin_and_ops_routes_never_allow_cross_origin_calls() {
    let s = state_with_origins(&["https://shop.example"], false);
    for uri in [
        "/reload",
        "/shoppers/someone",
        "/model",
        "/items?q=bag",
        "/explore",
    ] {
        let response = raw(&s, preflight(uri, "https://shop.example")).await;
        assert!(
            response
                .headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none(),
            "{uri} allowed a cross-origin call"
        );
    }
    // No origins configured (the default): not even the storefront routes.
    let closed = state(true);
    let response = raw(&closed, preflight("/events", "https://shop.example")).await;
    assert!(response
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());
}

#[tokio::test]
async fn static_pages_are_served_with_type_and_cache_headers() {
    let s = state(true);
    for (uri, kind) in [
        ("/widget.js", "text/javascript"),
        ("/explore", "text/html"),
        ("/explore/explore.js", "text/javascript"),
        ("/explore/explore.css", "text/css"),
        ("/examples/storefront", "text/html"),
    ] {
        let response = raw(&s, get(uri)).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let h = response.headers();
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
        assert!(h.contains_key(header::ETAG) && h.contains_key(header::CACHE_CONTROL));
        let again = Request::get(uri)
            .header(header::IF_NONE_MATCH, h[header::ETAG].clone())
            .body(Body::empty())
            .unwrap();
        assert_eq!(raw(&s, again).await.status(), StatusCode::NOT_MODIFIED);
    }
    let explorer = raw(&s, get("/explore")).await;
    assert!(explorer.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
}

#[tokio::test]
async fn the_item_search_needs_the_token_unless_the_explorer_is_open() {
    let s = state(true);
    let (status, body) = call(&s, get("/items?q=bag")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let authorised = Request::get("/items?q=BAG&limit=5")
        .header(header::AUTHORIZATION, "Bearer token")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&s, authorised).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], 1);
    assert_eq!(body["items"][0]["item_id"], "bag");
    let open = state_with_origins(&[], true);
    let (status, body) = call(&open, get("/items?q=bag")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for bad in [
        "/items",
        "/items?q=",
        "/items?q=bag&limit=0",
        "/items?q=bag&limit=51",
        "/items?q=bag&x=1",
    ] {
        let (status, body) = call(&open, get(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query");
    }
}

#[tokio::test]
async fn an_admin_can_force_a_variant_which_is_then_not_counted_for_it() {
    use crate::experiments::{ExperimentConfig, VariantConfig};
    let mut settings = settings();
    settings.experiments = vec![ExperimentConfig {
        name: "length".into(),
        touchpoints: vec![],
        variants: vec![VariantConfig {
            k: Some(1),
            ..VariantConfig::new("short", 1.0)
        }],
    }];
    let caps = Arc::new(MemoryCapStore::new(settings.capping.clone()));
    let s = state_with(&settings, caps, true);
    let forced = |uri: &str, token: Option<&str>| {
        let mut request = Request::get(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    };
    let uri = "/recommendations?cart=bag&variant=length/short";
    assert_eq!(
        call(&s, forced(uri, None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&s, forced(uri, Some("wrong"))).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = call(&s, forced(uri, Some("token"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["variant"], "length/short",
        "an anonymous request, forced"
    );
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        1,
        "the variant's k"
    );
    // A shopper the experiment holds, forced back to control.
    let (_, control) = call(
        &s,
        forced(
            "/recommendations?cart=bag&user=frank&variant=control",
            Some("token"),
        ),
    )
    .await;
    assert_eq!(control["variant"], "control");
    assert!(control["items"].as_array().unwrap().len() > 1);
    let (status, body) = call(
        &s,
        forced(
            "/recommendations?cart=bag&variant=length/long",
            Some("token"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_variant");
    let json = Request::post("/recommendations")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer token")
        .body(Body::from(
            r#"{"cart": ["bag"], "variant": "length/short"}"#,
        ))
        .unwrap();
    let (status, body) = call(&s, json).await;
    assert_eq!(
        (status, &body["variant"]),
        (StatusCode::OK, &serde_json::json!("length/short"))
    );
    // Counted: only the one list the experiment itself assigned.
    call(&s, get("/recommendations?cart=bag&user=frank")).await;
    let metrics = s.metrics.render().unwrap();
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("tandem_recommendation_lists_total") && l.contains("length/short")
        })
        .collect();
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert!(
        counted[0].ends_with(" 1"),
        "forced lists are not counted: {counted:?}"
    );
    let (_, model) = call(&s, get("/model")).await;
    assert_eq!(model["variants"], serde_json::json!(["length/short"]));
}
