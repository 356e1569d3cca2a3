//! The HTTP layer: the router, its middleware and handlers, over the model, the serving service
//! ([`crate::serving`]), the reloader and the live catalogue ([`crate::catalogue`]). Handlers parse a request, call one of those and
//! render the result; nothing here knows about Postgres beyond what they report.

mod assets;
mod auth;
pub mod body;
pub mod error;
mod error_code;
mod first_head;
mod handlers;
mod pages;
pub mod request;
mod response;
pub mod server;
pub mod shedding;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{BoxError, Router};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::catalogue::Catalogue;
use crate::config::Secret;
use crate::events::EventLimits;
use crate::metrics::Metrics;
use crate::model::ModelHandle;
use crate::reload::Reloader;
use crate::serving::Recommender;
use body::BodyLimits;
use error::{ApiError, BackPressure, ErrorDetail, Rendered};

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
    /// Origins whose pages may call the storefront routes (`server.cors_origins`).
    pub cors_origins: Vec<HeaderValue>,
    /// Whether the explorer's item search answers without the admin token (`explore.open`).
    pub explore_open: bool,
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

/// Cross-origin access to the storefront routes for the configured origins only; no
/// credentials (the widget sends none). Preflights are answered here, before any limit.
fn storefront_cors(origins: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE])
        .expose_headers([HeaderName::from_static("x-request-id")])
        .max_age(Duration::from_secs(600))
}

/// Builds the service's router.
pub fn router(state: AppState, limits: RouterLimits) -> Router {
    // No origin configured (the default): no layer, so same-origin requests pay nothing for
    // it, and a preflight meets the route's 405.
    let cors = (!state.cors_origins.is_empty()).then(|| storefront_cors(&state.cors_origins));
    // Shared behind one `Arc`: extractors clone the state for every request, and cloning
    // its fields one by one (an HMAC state and a token among them) would show in every request.
    let state = Arc::new(state);
    // Only the storefront route is time-limited and shed under overload: a reload of a large
    // version may rightly take a minute, and ops endpoints must answer while we are busy.
    let storefront = Router::new()
        .route(
            "/recommendations",
            get(handlers::recommendations_get)
                .post(handlers::recommendations_post)
                .options(handlers::method_not_allowed),
        )
        .route(
            "/events",
            post(handlers::events).options(handlers::method_not_allowed),
        )
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(storefront_error))
                .load_shed()
                // One limit shared by every storefront endpoint and method: a per-route
                // `concurrency_limit` would give each its own budget (the overload test checks).
                .layer(GlobalConcurrencyLimitLayer::new(limits.max_in_flight))
                .timeout(limits.request_timeout),
        )
        .route(
            "/widget.js",
            get(pages::widget_js).options(handlers::method_not_allowed),
        )
        // Only these routes allow cross-origin calls; admin and ops routes never do. The
        // layer answers a preflight before the route's own OPTIONS (a 405 for any other
        // OPTIONS): without one, the router's method-not-allowed fallback would answer first.
        .layer(tower::util::option_layer(cors));
    let operations = Router::new()
        .route("/reload", post(handlers::reload))
        .route("/shoppers/{id}", delete(handlers::erase_shopper))
        .route("/model", get(handlers::model))
        .route("/metrics", get(handlers::metrics))
        .route("/healthz", get(handlers::healthz))
        .route("/openapi.json", get(handlers::openapi))
        .route("/readyz", get(handlers::readyz))
        .route("/explore", get(pages::explore_html))
        .route("/explore/explore.js", get(pages::explore_js))
        .route("/explore/explore.css", get(pages::explore_css))
        .route("/examples/storefront", get(pages::storefront_example))
        .merge(catalogue_routes());
    Router::new()
        .merge(storefront)
        .merge(operations)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        // Bodies are read by `body::ReadBody` within these limits; axum's own limit stays as
        // a backstop for any extractor that reads one otherwise.
        .layer(axum::Extension(BodyLimits {
            max_bytes: limits.max_body_bytes,
            read_timeout: limits.body_read_timeout,
        }))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        // One middleware rather than three: each `from_fn` layer costs every request a boxed
        // future.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            move |state: State<Arc<AppState>>, request: Request, next: Next| {
                edge(state, limits, request, next)
            },
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// The catalogue's routes: the item search (`GET /items`, for the explorer) and the live
/// catalogue's admin routes.
fn catalogue_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/items/{id}",
            get(handlers::get_item)
                .put(handlers::put_item)
                .patch(handlers::patch_item)
                .delete(handlers::withdraw_item),
        )
        .route(
            "/items",
            get(pages::search_items).post(handlers::upsert_items),
        )
}

/// What every request passes through: its head checked against the limits (414, 431), every
/// error given the JSON shape, and the request counted and timed by matched route.
async fn edge(
    State(state): State<Arc<AppState>>,
    limits: RouterLimits,
    request: Request,
    next: Next,
) -> Response {
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
    let response = match check_head(limits, &request) {
        Some(refused) => refused.into_response(),
        None => {
            let response = next.run(request).await;
            json_errors(response, limits.max_body_bytes)
        }
    };
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

/// The error for a request whose target or header fields are over the limits; hyper's own
/// buffer limit lies above both, so only a head beyond it gets hyper's bare 431.
fn check_head(limits: RouterLimits, request: &Request) -> Option<ApiError> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > limits.max_uri_bytes {
        return Some(ApiError::UriTooLong(limits.max_uri_bytes));
    }
    // As on the wire: "name: value\r\n".
    let fields: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (fields > limits.max_header_bytes).then_some(ApiError::HeadersTooLarge(limits.max_header_bytes))
}

/// Gives every error response the JSON shape: extractors and layers that answer on their own
/// (a path that does not decode, a body over axum's limit) write plain text.
fn json_errors(response: Response, max_body_bytes: usize) -> Response {
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

#[cfg(test)]
mod tests;
