//! Request handlers: each parses an HTTP request, calls the serving service, the reloader or
//! the model handle, and renders the result as JSON.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use super::auth::authorize_admin;
use super::body::{read_body, read_request_body, BodyLimits, ReadBody};
use super::error::{ApiError, ErrorCode, RequestError};
use super::request::{RecommendationRequestJson, RecommendationRequestQuery};
use super::{response, AppState};
use crate::catalogue::{self, ItemInput, ItemView};
use crate::domain::ModelVersion;
use crate::events;
use crate::model::Snapshot;
use crate::pipeline::Request;
use crate::reload::ReloadReport;
use crate::store::VersionSelector;

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

/// Serves `request`, whose `k` is 0 when the client did not give one (the variant's default
/// applies then), with the variant `forced` if any, and renders the list.
async fn respond(
    state: &AppState,
    snapshot: &Snapshot,
    mut request: Request,
    forced: Option<&str>,
) -> Response {
    let served = state
        .recommender
        .serve_as(snapshot, &mut request, forced)
        .await;
    response::render(snapshot, &served)
}

/// Checks a request's forced variant: admin only, and a variant the server knows.
fn check_forced_variant(
    state: &AppState,
    headers: &HeaderMap,
    variant: Option<&str>,
) -> Result<(), ApiError> {
    let Some(label) = variant else {
        return Ok(());
    };
    authorize_admin(state.admin_token.as_ref(), headers)?;
    if state.recommender.knows_variant(label) {
        Ok(())
    } else {
        let known = state.recommender.variant_labels().join(", ");
        Err(RequestError::new(
            ErrorCode::InvalidVariant,
            format!("no variant is labelled {label:?}; known: control, {known}"),
        )
        .into())
    }
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
    // k 0: not given; serving applies the (variant's) default.
    let mut parsed = RecommendationRequestQuery::parse(query)?;
    let forced = parsed.take_variant();
    check_forced_variant(&state, http_request.headers(), forced.as_deref())?;
    let mut request = parsed.into_request(0)?;
    request.personalize &= !opted_out(http_request.headers());
    let snapshot = current_model(&state)?;
    Ok(respond(&state, &snapshot, request, forced.as_deref()).await)
}

/// `POST /recommendations`: the same fields as a JSON object, for large carts.
pub async fn recommendations_post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ReadBody(body): ReadBody,
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
    let mut parsed = RecommendationRequestJson::parse(&body)?;
    let forced = parsed.take_variant();
    check_forced_variant(&state, &headers, forced.as_deref())?;
    let mut request = parsed.into_request(0)?;
    request.personalize &= !opted_out(&headers);
    let snapshot = current_model(&state)?;
    Ok(respond(&state, &snapshot, request, forced.as_deref()).await)
}

/// `POST /events`: a JSON array of storefront events, validated as a whole, fed to frequency
/// capping ("not interested", engagement, reported impressions) and queued for the batched
/// writer; 202 with the number accepted and whether they are stored (not without a database:
/// the embedded demo still honours "not interested").
pub async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ReadBody(body): ReadBody,
) -> Result<Response, ApiError> {
    // An opted-out shopper's events are kept for counting, without any id.
    let pseudonymizer = (!opted_out(&headers)).then_some(state.recommender.pseudonymizer());
    let events = events::parse_events(&body, state.event_limits, Utc::now(), pseudonymizer)
        .map_err(|e| {
            state.metrics.events_rejected("invalid", 1);
            RequestError::new(ErrorCode::InvalidEvents, e.message)
        })?;
    let snapshot = state.model.current();
    let received = state
        .recommender
        .feedback(snapshot.as_deref(), events)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": received.accepted, "stored": received.stored })),
    )
        .into_response())
}

/// `DELETE /shoppers/{id}` (admin): erases what Tandem holds about a shopper, whether `id` is
/// their user id or a session id: stored events and frequency-capping state.
pub async fn erase_shopper(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    authorize_admin(state.admin_token.as_ref(), &headers)?;
    let Path(id) = id.map_err(|e| {
        RequestError::new(
            ErrorCode::InvalidShopper,
            format!("the id is not a valid path segment: {e}"),
        )
    })?;
    if id.is_empty() || id.len() > 128 {
        return Err(
            RequestError::new(ErrorCode::InvalidShopper, "the id must be 1 to 128 bytes").into(),
        );
    }
    let events_deleted = state.recommender.erase_shopper(&id).await?;
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
    request: HttpRequest,
) -> Result<Json<ReloadReport>, ApiError> {
    // The token before the body: a caller without one must not hold the connection for as
    // long as it cares to trickle a body.
    authorize_admin(state.admin_token.as_ref(), request.headers())?;
    let body = read_request_body(request).await?;
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
    let pipeline = state.recommender.pipeline_for(&snapshot);
    Ok(Json(json!({
        "version": snapshot.version(),
        "stats": snapshot.stats(),
        "touchpoints": {
            "checkout": pipeline.checkout,
            "cart": pipeline.cart,
            "product": pipeline.product,
        },
        "earlier_purchases": {
            "half_life": pipeline.purchased_half_life,
            "restock_scaling": pipeline.restock_scaling,
            "beside_cart": pipeline.purchased_beside_cart,
            "beside_lines": pipeline.purchased_beside_lines,
        },
        "tuning": snapshot.tuning(),
        "variants": state.recommender.variant_labels(),
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

/// The `{id}` of an `/items/{id}` path.
fn item_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = id.map_err(|e| {
        RequestError::new(
            ErrorCode::InvalidItem,
            format!("the id is not a valid path segment: {e}"),
        )
    })?;
    Ok(id)
}

/// The item fields of a `PUT` or `PATCH /items/{id}` body, after the admin token.
async fn item_body(state: &AppState, request: HttpRequest) -> Result<ItemInput, ApiError> {
    authorize_admin(state.admin_token.as_ref(), request.headers())?;
    let body = read_request_body(request).await?;
    catalogue::parse_item(&body)
        .map_err(|e| RequestError::new(ErrorCode::InvalidItem, e.message).into())
}

/// `PUT /items/{id}` (admin): creates or replaces an item; it serves on this replica when the
/// response is sent, and on every other within a second.
pub async fn put_item(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    request: HttpRequest,
) -> Result<Json<ItemView>, ApiError> {
    let id = item_id(id)?;
    let input = item_body(&state, request).await?;
    Ok(Json(state.catalogue.put(&id, input).await?))
}

/// `PATCH /items/{id}` (admin): changes the given fields of a stored item.
pub async fn patch_item(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    request: HttpRequest,
) -> Result<Json<ItemView>, ApiError> {
    let id = item_id(id)?;
    let input = item_body(&state, request).await?;
    Ok(Json(state.catalogue.patch(&id, input).await?))
}

/// `GET /items/{id}` (admin): the stored item and what this replica serves for it.
pub async fn get_item(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ItemView>, ApiError> {
    authorize_admin(state.admin_token.as_ref(), &headers)?;
    let id = item_id(id)?;
    Ok(Json(state.catalogue.view(&id).await?))
}

/// `DELETE /items/{id}` (admin): withdraws an item from recommendations; its row is kept.
pub async fn withdraw_item(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ItemView>, ApiError> {
    authorize_admin(state.admin_token.as_ref(), &headers)?;
    let id = item_id(id)?;
    Ok(Json(state.catalogue.withdraw(&id).await?))
}

/// `POST /items` (admin): creates or replaces up to 10,000 items, all or nothing, within
/// `catalogue.max_body_bytes`.
pub async fn upsert_items(
    State(state): State<Arc<AppState>>,
    request: HttpRequest,
) -> Result<Response, ApiError> {
    authorize_admin(state.admin_token.as_ref(), request.headers())?;
    let mut limits = request
        .extensions()
        .get::<BodyLimits>()
        .copied()
        .unwrap_or_default();
    limits.max_bytes = state.catalogue_max_body_bytes;
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body, limits).await?;
    let items = catalogue::parse_batch(&body)
        .map_err(|e| RequestError::new(ErrorCode::InvalidItems, e.message))?;
    // The write runs in its own task: a client that hangs up must not leave this replica
    // behind the others on its own write.
    let catalogue = Arc::clone(&state.catalogue);
    let count = items.len();
    let change = tokio::spawn(async move { catalogue.upsert(&items).await })
        .await
        .map_err(|e| ApiError::Internal(format!("catalogue task failed: {e}")))??;
    Ok(Json(json!({ "upserted": count, "change": change })).into_response())
}
