//! The HTTP layer: the router, its middleware and handlers, over the model, the serving service
//! ([`crate::serving`]), the reloader and the live catalogue ([`crate::catalogue`]). Handlers parse a request, call one of those and
//! render the result; nothing here knows about Postgres beyond what they report.

mod auth;
pub mod body;
pub mod error;
mod error_code;
mod handlers;
pub mod request;
mod response;
pub mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{BoxError, Router};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::catalogue::Catalogue;
use crate::config::Secret;
use crate::events::EventLimits;
use crate::metrics::Metrics;
use crate::model::ModelHandle;
use crate::reload::Reloader;
use crate::serving::Recommender;
use body::BodyLimits;
use error::{ApiError, BackPressure, ErrorDetail, Rendered};
use server::QueuedSince;

/// What every handler can reach; built once by [`crate::app::build_state`].
#[derive(Clone)]
pub struct AppState {
    /// The live model.
    pub model: Arc<ModelHandle>,
    /// Loads and swaps model versions.
    pub reloader: Arc<Reloader>,
    /// The live catalogue (`/items`).
    pub catalogue: Arc<Catalogue>,
    /// Largest `POST /items` body.
    pub catalogue_max_body_bytes: usize,
    /// The service's metrics.
    pub metrics: Metrics,
    /// Serves lists and takes feedback; handlers only parse, call it and render.
    pub recommender: Recommender,
    /// Admin token; admin endpoints are refused without one.
    pub admin_token: Option<Secret>,
    /// Largest query string accepted.
    pub max_query_bytes: usize,
    /// Limits on one `POST /events` body.
    pub event_limits: EventLimits,
}

/// Limits the router enforces.
#[derive(Debug, Clone, Copy)]
pub struct RouterLimits {
    /// Per-request time limit on storefront routes.
    pub request_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest a request body may take to arrive.
    pub body_read_timeout: Duration,
    /// Longest request target (path and query).
    pub max_uri_bytes: usize,
    /// Most bytes of header fields (names and values) in one request.
    pub max_header_bytes: usize,
    /// Most storefront requests in flight at once; more get 503 `overloaded` at once.
    pub max_in_flight: usize,
    /// Longest a storefront request may wait to be worked on (see [`server`]); older ones
    /// get 503 `overloaded` at once.
    pub max_queue_delay: Duration,
}

async fn storefront_error(error: BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::Timeout
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Overloaded
    } else {
        ApiError::Internal(format!("storefront middleware failed: {error}"))
    }
}

/// Builds the service's router.
pub fn router(state: AppState, limits: RouterLimits) -> Router {
    // Shared behind one `Arc`: extractors clone the state for every request, and cloning
    // its fields one by one (an HMAC state and a token among them) would show in every request.
    let state = Arc::new(state);
    // Only the storefront route is time-limited and shed under overload: a reload of a large
    // version may rightly take a minute, and ops endpoints must answer while we are busy.
    let storefront = Router::new()
        .route(
            "/recommendations",
            get(handlers::recommendations_get).post(handlers::recommendations_post),
        )
        .route("/events", post(handlers::events))
        .route_layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(move |request: Request, next: Next| {
                    shed_stale(limits.max_queue_delay, request, next)
                }))
                .layer(HandleErrorLayer::new(storefront_error))
                .load_shed()
                // One limit shared by every storefront endpoint and method: a per-route
                // `concurrency_limit` would give each its own budget (the overload test checks).
                .layer(GlobalConcurrencyLimitLayer::new(limits.max_in_flight))
                .timeout(limits.request_timeout),
        );
    let operations = Router::new()
        .route("/reload", post(handlers::reload))
        .route("/shoppers/{id}", delete(handlers::erase_shopper))
        .route("/model", get(handlers::model))
        .route("/metrics", get(handlers::metrics))
        .route("/healthz", get(handlers::healthz))
        .route("/openapi.json", get(handlers::openapi))
        .route("/readyz", get(handlers::readyz))
        .merge(catalogue_routes());
    Router::new()
        .merge(storefront)
        .merge(operations)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            check_head(limits, request, next)
        }))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        // Bodies are read by `body::ReadBody` within these limits; axum's own limit stays as
        // a backstop for any extractor that reads one otherwise.
        .layer(axum::Extension(BodyLimits {
            max_bytes: limits.max_body_bytes,
            read_timeout: limits.body_read_timeout,
        }))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            json_errors(limits.max_body_bytes, request, next)
        }))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// The live catalogue's admin routes. `GET /items` (a listing) is not one of them.
fn catalogue_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/items/{id}",
            get(handlers::get_item)
                .put(handlers::put_item)
                .patch(handlers::patch_item)
                .delete(handlers::withdraw_item),
        )
        .route("/items", post(handlers::upsert_items))
}

/// Refuses a storefront request that waited longer than `limit` to be worked on: under CPU
/// overload every request queues, and answering the stale ones at once (a 503 costs a
/// fraction of a list) keeps the queue, and so the wait of those that are served, short.
async fn shed_stale(limit: Duration, request: Request, next: Next) -> Response {
    let waited = request
        .extensions()
        .get::<QueuedSince>()
        .map(|queued| queued.0.elapsed());
    if waited.is_some_and(|waited| waited > limit) {
        return ApiError::Overloaded.into_response();
    }
    next.run(request).await
}

/// Refuses a request whose target or header fields are over the limits with the JSON error
/// shape; hyper's own buffer limit lies above both, so only a head beyond it gets hyper's
/// bare 431.
async fn check_head(limits: RouterLimits, request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > limits.max_uri_bytes {
        return ApiError::UriTooLong(limits.max_uri_bytes).into_response();
    }
    // As on the wire: "name: value\r\n".
    let fields: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if fields > limits.max_header_bytes {
        return ApiError::HeadersTooLarge(limits.max_header_bytes).into_response();
    }
    next.run(request).await
}

/// Gives every error response the JSON shape: extractors and layers that answer on their own
/// (a path that does not decode, a body over axum's limit) write plain text.
async fn json_errors(max_body_bytes: usize, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status < StatusCode::BAD_REQUEST || response.extensions().get::<Rendered>().is_some() {
        return response;
    }
    ApiError::from_status(status, max_body_bytes).into_response()
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}

/// Counts and times every request by matched route (never the raw path, which is unbounded)
/// and logs server errors with the detail the client does not see.
async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Custom methods are unbounded; they share one label value.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    let route = route.as_deref().unwrap_or("unmatched");
    state
        .metrics
        .observe_request(method, route, status.as_str(), started.elapsed());
    // A 503 from /readyz is a state a probe polls for, and back-pressure is by design: neither
    // is a failure.
    let expected = route == "/readyz" || response.extensions().get::<BackPressure>().is_some();
    if status.is_server_error() && !expected {
        let detail = response
            .extensions()
            .get::<ErrorDetail>()
            .map_or("", |d| d.0.as_str());
        tracing::warn!(%method, route, status = status.as_u16(), detail, "request failed");
    }
    response
}

#[cfg(test)]
mod tests;
