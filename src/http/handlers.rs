//! Request handlers: each turns an HTTP request into a call on the model, the pipeline or the
//! reloader, and the result into JSON.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::auth::authorize_admin;
use super::error::{ApiError, ErrorCode, RequestError};
use super::request::{RecommendationRequestJson, RecommendationRequestQuery};
use super::response::{JsonStr, RecommendationsResponse, ResponseItem, ResponseReason};
use super::AppState;
use crate::capping::{CapState, Feedback, ItemIds, ShopperKey};
use crate::domain::{ItemIndex, ModelVersion};
use crate::events::{self, EventKind, SubmitError};
use crate::experiments::CONTROL;
use crate::model::Snapshot;
use crate::pipeline::{self, CappedItems, ReasonKind, ReasonText, Request};
use crate::reload::ReloadReport;
use crate::store::VersionSelector;

/// `body` as a JSON response.
fn json_response(body: &RecommendationsResponse<'_>) -> Response {
    match body.to_json() {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::Internal(format!("serialising the response: {e}")).into_response(),
    }
}

/// The id of `item`, with whether it needs JSON escaping.
fn item_id(snapshot: &Snapshot, item: ItemIndex) -> JsonStr<'_> {
    JsonStr::known(snapshot.item_id(item), snapshot.item_id_is_json_plain(item))
}

/// The title of `item`, with whether it needs JSON escaping.
fn title(snapshot: &Snapshot, item: ItemIndex) -> JsonStr<'_> {
    let catalogue = snapshot.catalogue();
    JsonStr::known(catalogue.title(item), catalogue.title_is_json_plain(item))
}

fn current_model(state: &AppState) -> Result<Arc<Snapshot>, ApiError> {
    state.model.current().ok_or(ApiError::ModelNotLoaded)
}

/// Whether the request carries a Do-Not-Track or Global Privacy Control signal.
fn opted_out(headers: &HeaderMap) -> bool {
    ["dnt", "sec-gpc"].iter().any(|name| {
        headers
            .get(*name)
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
    })
}

/// Answers `request`, whose `k` is 0 when the client did not give one (the variant's default
/// applies then).
async fn respond(state: &AppState, snapshot: &Snapshot, mut request: Request) -> Response {
    // Opted-out requests are not assigned: they get the control configuration.
    let variant = request
        .personalize
        .then(|| {
            state.experiments.assign(
                request.touchpoint,
                request.user.as_deref(),
                request.session.as_deref(),
            )
        })
        .flatten();
    let pipeline = variant.map_or(&state.pipeline, |v| &v.pipeline);
    if request.k == 0 {
        request.k = pipeline.default_k;
    }
    let request = &request;
    let shopper = if request.personalize && state.capping_enabled {
        state
            .pseudonymizer
            .shopper_key(request.user.as_deref(), request.session.as_deref())
    } else {
        None
    };
    let now = Instant::now();
    let cap_state = match shopper {
        Some(key) => state.caps.check(key, now).await,
        None => CapState::default(),
    };
    let known = |ids: &ItemIds| ids.iter().filter_map(|id| snapshot.index_of(id)).collect();
    let capped = CappedItems::with_dismissed(
        known(&cap_state.capped_items),
        known(&cap_state.dismissed_items),
    );
    let mut result = pipeline::recommend(snapshot, request, pipeline, &capped);
    if cap_state.fatigued {
        // This shopper has seen enough lists for now: an empty list is a valid answer.
        result.items.clear();
    }
    if let Some(key) = shopper.filter(|_| !result.items.is_empty()) {
        let served: Vec<&str> = result
            .items
            .iter()
            .map(|r| snapshot.item_id(r.item))
            .collect();
        state.caps.record_served(key, &served, now).await;
    }
    let popular = result
        .items
        .iter()
        .filter(|r| r.reason.kind == ReasonKind::Popular)
        .count();
    state
        .metrics
        .recommendation(result.unknown_items.len(), popular);
    let request_id = uuid::Uuid::new_v4();
    let variant_label = variant.map_or(CONTROL, |v| &v.label);
    if !result.items.is_empty() {
        state
            .metrics
            .list_served(request.touchpoint.as_str(), variant_label);
        if let Some(v) = variant {
            state
                .attribution
                .record(request_id, v.label.clone(), request.touchpoint);
        }
    }
    let mut id_buffer = uuid::Uuid::encode_buffer();
    let request_id: &str = request_id.hyphenated().encode_lower(&mut id_buffer);
    let items = result
        .items
        .iter()
        .map(|r| ResponseItem {
            item_id: item_id(snapshot, r.item),
            title: title(snapshot, r.item),
            score: r.score,
            reason: ResponseReason {
                kind: r.reason.kind,
                anchor: r.reason.anchor.map(|a| item_id(snapshot, a)),
                text: ReasonText::new(snapshot, &r.reason),
                text_plain: r
                    .reason
                    .anchor
                    .is_none_or(|a| snapshot.catalogue().title_is_json_plain(a)),
            },
            contributions: r.contributions,
        })
        .collect();
    let body = RecommendationsResponse {
        // Hyphenated lowercase hex.
        request_id: JsonStr::known(request_id, true),
        model_version: snapshot.version(),
        touchpoint: request.touchpoint,
        variant: variant_label,
        items,
        unknown_items: &result.unknown_items,
    };
    let mut response = json_response(&body);
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// `GET /recommendations`: fields in the query string.
pub async fn recommendations_get(
    State(state): State<Arc<AppState>>,
    // The request itself, not a `HeaderMap` extractor, which clones every header.
    http_request: HttpRequest,
) -> Result<Response, ApiError> {
    let query = http_request.uri().query();
    let length = query.map_or(0, str::len);
    if length > state.max_query_bytes {
        return Err(RequestError::new(
            ErrorCode::QueryTooLarge,
            format!(
                "the query string is {length} bytes, more than the limit of {}",
                state.max_query_bytes
            ),
        )
        .into());
    }
    // k 0: not given; `respond` applies the (variant's) default.
    let mut request = RecommendationRequestQuery::parse(query)?.into_request(0)?;
    request.personalize &= !opted_out(http_request.headers());
    let snapshot = current_model(&state)?;
    Ok(respond(&state, &snapshot, request).await)
}

/// `POST /recommendations`: the same fields as a JSON object, for large carts.
pub async fn recommendations_post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(
            RequestError::new(ErrorCode::InvalidBody, "the body must be application/json").into(),
        );
    }
    let mut request = RecommendationRequestJson::parse(&body)?.into_request(0)?;
    request.personalize &= !opted_out(&headers);
    let snapshot = current_model(&state)?;
    Ok(respond(&state, &snapshot, request).await)
}

/// `POST /events`: a JSON array of storefront events, validated as a whole, fed to frequency
/// capping ("not interested", engagement, reported impressions) and queued for the batched
/// writer; 202 with the number accepted and whether they are stored (not without a database:
/// the embedded demo still honours "not interested").
pub async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // An opted-out shopper's events are kept for counting, without any id.
    let pseudonymizer = (!opted_out(&headers)).then_some(&state.pseudonymizer);
    let mut events = events::parse_events(&body, state.event_limits, Utc::now(), pseudonymizer)
        .map_err(|e| {
            state.metrics.events_rejected("invalid", 1);
            RequestError::new(ErrorCode::InvalidEvents, e.message)
        })?;
    let accepted = events.len();
    let counted: Vec<(EventKind, &str, &str)> =
        events.iter_mut().map(|e| attribute(&state, e)).collect();
    // What capping needs is taken before the events move into the queue.
    let feedback: Vec<(ShopperKey, String, Feedback)> = if state.capping_enabled {
        events
            .iter()
            .filter_map(|e| {
                let feedback = match e.kind {
                    EventKind::Impression => Feedback::Impression,
                    EventKind::Click | EventKind::AddToCart => Feedback::Engaged,
                    EventKind::Dismiss => Feedback::Dismissed,
                    EventKind::Purchase => return None,
                };
                Some((e.cap_key?, e.item_id.clone(), feedback))
            })
            .collect()
    } else {
        Vec::new()
    };
    if let Some(writer) = &state.events {
        writer.submit(events).map_err(|e| {
            let reason = match e {
                SubmitError::QueueFull => "queue_full",
                SubmitError::Closed => "shutting_down",
            };
            state.metrics.events_rejected(reason, accepted as u64);
            ApiError::from(e)
        })?;
    }
    for (kind, touchpoint, variant) in counted {
        state.metrics.feedback_event(kind, touchpoint, variant);
    }
    let feedback: Vec<(ShopperKey, &str, Feedback)> = feedback
        .iter()
        .map(|(key, item, kind)| (*key, item.as_str(), *kind))
        .collect();
    if !feedback.is_empty() {
        state.caps.record_feedback(&feedback, Instant::now()).await;
    }
    let stored = state.events.is_some();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": accepted, "stored": stored })),
    )
        .into_response())
}

/// Fills an event's variant and touchpoint from the request it cites when it does not carry
/// them; returns its metric labels (kind, touchpoint, variant). Variant labels only take
/// configured names ("other" for anything else), so a client cannot grow them without bound.
fn attribute<'s>(
    state: &'s AppState,
    event: &mut events::Event,
) -> (EventKind, &'static str, &'s str) {
    if let Some((variant, touchpoint)) = event
        .request_id
        .filter(|_| event.variant.is_none() || event.touchpoint.is_none())
        .and_then(|id| state.attribution.lookup(id))
    {
        event.variant.get_or_insert_with(|| variant.to_string());
        event.touchpoint.get_or_insert(touchpoint);
    }
    let variant = match event.variant.as_deref() {
        None => "unknown",
        Some(CONTROL) => CONTROL,
        Some(label) => state
            .experiments
            .labels()
            .find(|known| *known == label)
            .unwrap_or("other"),
    };
    let touchpoint = event.touchpoint.map_or("unknown", |t| t.as_str());
    (event.kind, touchpoint, variant)
}

/// `DELETE /shoppers/{id}` (admin): erases what Tandem holds about a shopper, whether `id` is
/// their user id or a session id: stored events and frequency-capping state.
pub async fn erase_shopper(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize_admin(state.admin_token.as_ref(), &headers)?;
    if id.is_empty() || id.len() > 128 {
        return Err(
            RequestError::new(ErrorCode::InvalidShopper, "the id must be 1 to 128 bytes").into(),
        );
    }
    let as_user = state.pseudonymizer.shopper_key(Some(&id), None);
    let as_session = state.pseudonymizer.shopper_key(None, Some(&id));
    let (Some(as_user), Some(as_session)) = (as_user, as_session) else {
        return Err(ApiError::Internal(
            "no shopper key for a non-empty id".into(),
        ));
    };
    let events_deleted = match &state.events {
        Some(writer) => writer
            .erase(&as_user.to_hex(), &as_session.to_hex())
            .await
            .map_err(|e| ApiError::Internal(format!("cannot delete events: {e}")))?,
        None => 0,
    };
    let erased = state.caps.forget(as_user).await & state.caps.forget(as_session).await;
    if !erased {
        return Err(ApiError::CapStoreUnavailable);
    }
    Ok(Json(json!({ "events_deleted": events_deleted, "cap_state_erased": true })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadRequest {
    version: Option<i64>,
}

/// `POST /reload` (admin): loads the newest ready version, or `{"version": N}`, swaps it in and
/// activates it, so every replica follows.
pub async fn reload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ReloadReport>, ApiError> {
    authorize_admin(state.admin_token.as_ref(), &headers)?;
    let parsed: ReloadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            RequestError::new(
                ErrorCode::InvalidBody,
                format!("expected an empty body or {{\"version\": N}}: {e}"),
            )
        })?
    };
    let selector = match parsed.version {
        None => VersionSelector::NewestReady,
        Some(v) if v > 0 => VersionSelector::Exact(ModelVersion(v)),
        Some(v) => {
            return Err(RequestError::new(
                ErrorCode::InvalidBody,
                format!("version must be a positive integer, not {v}"),
            )
            .into())
        }
    };
    // The load runs in its own task: a client that hangs up must not cancel it half-way.
    let reloader = Arc::clone(&state.reloader);
    let report = tokio::spawn(async move { reloader.activate(selector).await })
        .await
        .map_err(|e| ApiError::Internal(format!("reload task failed: {e}")))??;
    Ok(Json(report))
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let text = state
        .metrics
        .render()
        .map_err(|e| ApiError::Internal(format!("cannot render metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// The OpenAPI description of this API (kept beside the router; a test checks they agree).
const OPENAPI: &str = include_str!("openapi.json");

/// `GET /openapi.json`: the OpenAPI 3.1 description of the API.
pub async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

/// `GET /healthz`: the process is alive and answering.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once a model is loaded, 503 before.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.model.current() {
        Some(snapshot) => Json(json!({
            "status": "ready",
            "model_version": snapshot.version(),
        }))
        .into_response(),
        None => ApiError::ModelNotLoaded.into_response(),
    }
}

/// `GET /model`: the version this replica serves and its figures.
pub async fn model(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let snapshot = current_model(&state)?;
    Ok(Json(json!({
        "version": snapshot.version(),
        "stats": snapshot.stats(),
    }))
    .into_response())
}

/// Any path no route matches.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// A known path with a method it does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
