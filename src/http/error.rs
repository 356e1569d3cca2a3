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
use crate::catalogue::CatalogueError;
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

/// Marks a response rendered from an [`ApiError`], so the router can tell the JSON error
/// shape from a plain-text rejection that still needs it.
#[derive(Debug, Clone, Copy)]
pub struct Rendered;

/// Everything an HTTP handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed or out-of-range input.
    #[error(transparent)]
    BadRequest(#[from] RequestError),
    /// 400: a malformed request no field-specific code covers.
    #[error("{0}")]
    Malformed(String),
    /// 408: the body did not arrive in time.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// 413: the body is over the limit.
    #[error("the request body is longer than the limit of {0} bytes")]
    BodyTooLarge(usize),
    /// 414: the request target is over the limit.
    #[error(
        "the request target is longer than the limit of {0} bytes; send long lists (a large \
         cart, a whole purchase history) as a JSON body to POST /recommendations"
    )]
    UriTooLong(usize),
    /// 431: the header fields are over the limit.
    #[error("the request's header fields are longer than the limit of {0} bytes")]
    HeadersTooLarge(usize),
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
    /// 503: Postgres failed during an erasure, so data may remain; retry.
    #[error("the database could not be reached; nothing is certain to be erased, retry")]
    DatabaseUnavailable(String),
    /// 503: the cap store could not be reached, so state may remain; retry.
    #[error("the capping store could not be reached; nothing is certain to be erased, retry")]
    CapStoreUnavailable,
    /// 503: the event queue is full or closing; the storefront should retry.
    #[error("events not accepted: {0}; retry shortly")]
    EventsRefused(#[from] SubmitError),
    /// A catalogue call failed.
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    /// 500: a bug or an unexpected failure; detail is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The code the client is given (its status comes with it).
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(e) => e.code,
            ApiError::Malformed(_) => ErrorCode::BadRequest,
            ApiError::BodyTimeout(_) => ErrorCode::BodyTimeout,
            ApiError::BodyTooLarge(_) => ErrorCode::BodyTooLarge,
            ApiError::UriTooLong(_) => ErrorCode::UriTooLong,
            ApiError::HeadersTooLarge(_) => ErrorCode::HeadersTooLarge,
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
            ApiError::DatabaseUnavailable(_) => ErrorCode::DatabaseUnavailable,
            ApiError::EventsRefused(SubmitError::QueueFull) => ErrorCode::EventsQueueFull,
            ApiError::EventsRefused(SubmitError::Closed) => ErrorCode::ShuttingDown,
            ApiError::Catalogue(e) => match e {
                CatalogueError::NoDatabase => ErrorCode::DatabaseNotConfigured,
                CatalogueError::Invalid(_) => ErrorCode::InvalidItem,
                CatalogueError::NotFound(_) => ErrorCode::ItemNotFound,
                CatalogueError::Database(_) => ErrorCode::DatabaseUnavailable,
            },
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl ApiError {
    /// The error a response with `status` but without the JSON shape stands for: what the
    /// router's extractors and layers answer on their own (e.g. a path that does not decode);
    /// `max_body_bytes` is the body limit a 413 stands for.
    pub fn from_status(status: StatusCode, max_body_bytes: usize) -> Self {
        match status {
            StatusCode::NOT_FOUND => ApiError::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge(max_body_bytes),
            StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::UNPROCESSABLE_ENTITY => {
                RequestError::new(
                    ErrorCode::InvalidBody,
                    "the body is not what this endpoint takes",
                )
                .into()
            }
            status if status.is_client_error() => ApiError::Malformed(format!(
                "the request is malformed ({})",
                status.canonical_reason().unwrap_or("client error")
            )),
            status => ApiError::Internal(format!("a layer answered {status} without detail")),
        }
    }
}

impl From<EraseError> for ApiError {
    fn from(error: EraseError) -> Self {
        match error {
            EraseError::CapStoreUnavailable => ApiError::CapStoreUnavailable,
            EraseError::Events(e) | EraseError::Announce(e) => {
                ApiError::DatabaseUnavailable(e.to_string())
            }
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
        response.extensions_mut().insert(Rendered);
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
                ApiError::Internal(detail) | ApiError::DatabaseUnavailable(detail) => {
                    detail.clone()
                }
                ApiError::Catalogue(CatalogueError::Database(e)) => e.to_string(),
                other => other.to_string(),
            };
            response.extensions_mut().insert(ErrorDetail(detail));
        }
        response
    }
}

/// The body of `503 overloaded`, rendered once: a shed request must cost far less than a
/// served one.
pub fn overloaded_body() -> bytes::Bytes {
    static BODY: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    BODY.get_or_init(|| {
        let error = ApiError::Overloaded;
        let body =
            json!({ "error": { "code": error.code().as_str(), "message": error.to_string() } });
        bytes::Bytes::from(body.to_string())
    })
    .clone()
}
