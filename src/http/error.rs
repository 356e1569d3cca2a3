//! The one error type of the HTTP layer: every failure a handler can return, with its status
//! and stable machine-readable code, rendered as `{"error": {"code", "message"}}`.
//!
//! Handlers return `Result<_, ApiError>`. Internal detail never reaches the client: it rides
//! in a response extension that the logging middleware prints.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::events::SubmitError;
use crate::reload::ReloadError;
use crate::store::LoadError;

/// A request the client got wrong, with a stable code and a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// Stable machine-readable code, e.g. `invalid_cart`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl RequestError {
    /// A 400 error with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Internal detail attached to 5xx responses for the logging middleware.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

/// Marks a 503 that is deliberate back-pressure (overload, a full event queue): counted in
/// metrics, but not logged as a failure, which would flood the log exactly when the service
/// is busiest.
#[derive(Debug, Clone, Copy)]
pub struct BackPressure;

/// Everything an HTTP handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed or out-of-range input.
    #[error(transparent)]
    BadRequest(#[from] RequestError),
    /// 401: no bearer token.
    #[error("missing or malformed bearer token")]
    Unauthorized,
    /// 403: wrong bearer token.
    #[error("the bearer token is not valid")]
    Forbidden,
    /// 403: admin endpoints are off because no token is configured.
    #[error("admin endpoints are disabled: TANDEM_ADMIN_TOKEN is not set")]
    AdminDisabled,
    /// 404: no such route.
    #[error("no such endpoint")]
    NotFound,
    /// 405: route exists, method does not.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// 503: no model is loaded yet.
    #[error("no model is loaded yet")]
    ModelNotLoaded,
    /// 503: the request took longer than the configured limit.
    #[error("the request timed out")]
    Timeout,
    /// 503: too many requests in flight; retry shortly.
    #[error("the service is at capacity; retry shortly")]
    Overloaded,
    /// A reload failed.
    #[error(transparent)]
    Reload(#[from] ReloadError),
    /// 503: the cap store could not be reached, so state may remain; retry.
    #[error("the capping store could not be reached; nothing is certain to be erased, retry")]
    CapStoreUnavailable,
    /// 503: the event queue is full or closing; the storefront should retry.
    #[error("events not accepted: {0}; retry shortly")]
    EventsRefused(#[from] SubmitError),
    /// 500: a bug or an unexpected failure; detail is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(e) => (StatusCode::BAD_REQUEST, e.code),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::AdminDisabled => (StatusCode::FORBIDDEN, "admin_disabled"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::ModelNotLoaded => (StatusCode::SERVICE_UNAVAILABLE, "model_not_loaded"),
            ApiError::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::Reload(ReloadError::NoDatabase) => {
                (StatusCode::SERVICE_UNAVAILABLE, "database_not_configured")
            }
            ApiError::Reload(ReloadError::InProgress) => {
                (StatusCode::CONFLICT, "reload_in_progress")
            }
            ApiError::Reload(ReloadError::Activation { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "activation_failed")
            }
            ApiError::Reload(ReloadError::Load(e)) => match e {
                LoadError::NoReadyVersion => (StatusCode::NOT_FOUND, "no_ready_version"),
                LoadError::VersionNotFound(_) => (StatusCode::NOT_FOUND, "version_not_found"),
                LoadError::VersionNotReady { .. } => (StatusCode::CONFLICT, "version_not_ready"),
                LoadError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_model"),
                LoadError::Database(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
                LoadError::Task(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
            ApiError::CapStoreUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "capping_store_unavailable")
            }
            ApiError::EventsRefused(SubmitError::QueueFull) => {
                (StatusCode::SERVICE_UNAVAILABLE, "events_queue_full")
            }
            ApiError::EventsRefused(SubmitError::Closed) => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal error".to_string()
        } else {
            self.to_string()
        };
        let mut response = (
            status,
            Json(json!({ "error": { "code": code, "message": message } })),
        )
            .into_response();
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(
            self,
            ApiError::Overloaded | ApiError::EventsRefused(SubmitError::QueueFull)
        ) {
            response.extensions_mut().insert(BackPressure);
        }
        if status.is_server_error() {
            let detail = match &self {
                ApiError::Internal(detail) => detail.clone(),
                other => other.to_string(),
            };
            response.extensions_mut().insert(ErrorDetail(detail));
        }
        response
    }
}
