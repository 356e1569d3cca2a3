//! The one error type of the HTTP layer: every failure a handler can return, with its stable
//! machine-readable code (and so its status, see [`ErrorCode`]), rendered as
//! `{"error": {"code", "message"}}`.
//!
//! Handlers return `Result<_, ApiError>`. Internal detail never reaches the client: it rides
//! in a response extension that the logging middleware prints.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub use super::error_code::ErrorCode;
use crate::events::SubmitError;
use crate::reload::ReloadError;
use crate::serving::EraseError;
use crate::store::LoadError;

/// A request the client got wrong, with a stable code and a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// Stable machine-readable code, e.g. [`ErrorCode::InvalidCart`].
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl RequestError {
    /// An error with `code` (a 400 one) and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
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
    /// The code the client is given (its status comes with it).
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(e) => e.code,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::Forbidden => ErrorCode::Forbidden,
            ApiError::AdminDisabled => ErrorCode::AdminDisabled,
            ApiError::NotFound => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::ModelNotLoaded => ErrorCode::ModelNotLoaded,
            ApiError::Timeout => ErrorCode::Timeout,
            ApiError::Overloaded => ErrorCode::Overloaded,
            ApiError::Reload(ReloadError::NoDatabase) => ErrorCode::DatabaseNotConfigured,
            ApiError::Reload(ReloadError::InProgress) => ErrorCode::ReloadInProgress,
            ApiError::Reload(ReloadError::Activation { .. }) => ErrorCode::ActivationFailed,
            ApiError::Reload(ReloadError::Load(e)) => match e {
                LoadError::NoReadyVersion => ErrorCode::NoReadyVersion,
                LoadError::VersionNotFound(_) => ErrorCode::VersionNotFound,
                LoadError::VersionNotReady { .. } => ErrorCode::VersionNotReady,
                LoadError::Invalid { .. } => ErrorCode::InvalidModel,
                LoadError::Database(_) => ErrorCode::DatabaseUnavailable,
                LoadError::Task(_) => ErrorCode::Internal,
            },
            ApiError::CapStoreUnavailable => ErrorCode::CappingStoreUnavailable,
            ApiError::EventsRefused(SubmitError::QueueFull) => ErrorCode::EventsQueueFull,
            ApiError::EventsRefused(SubmitError::Closed) => ErrorCode::ShuttingDown,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<EraseError> for ApiError {
    fn from(error: EraseError) -> Self {
        match error {
            EraseError::CapStoreUnavailable => ApiError::CapStoreUnavailable,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let status = code.status();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal error".to_string()
        } else {
            self.to_string()
        };
        let mut response = (
            status,
            Json(json!({ "error": { "code": code.as_str(), "message": message } })),
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
