//! Reading a request body within a size limit and a deadline, so a slow or oversized upload
//! costs the client an error in the JSON shape, not the server a connection held open.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use bytes::BytesMut;
use http_body_util::BodyExt;

use super::error::ApiError;

/// Limits on one request body (a request extension the router adds).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body accepted.
    pub max_bytes: usize,
    /// Longest the whole body may take to arrive, from when the handler starts reading it.
    pub read_timeout: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            read_timeout: Duration::from_secs(10),
        }
    }
}

/// A request body read whole within the router's [`BodyLimits`].
pub struct ReadBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ReadBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        read_request_body(request).await.map(ReadBody)
    }
}

/// Reads the body of `request` whole within the router's [`BodyLimits`] (see [`read_body`]).
pub async fn read_request_body(request: Request) -> Result<Bytes, ApiError> {
    let limits = request
        .extensions()
        .get::<BodyLimits>()
        .copied()
        .unwrap_or_default();
    let (parts, body) = request.into_parts();
    read_body(&parts.headers, body, limits).await
}

/// Reads `body` whole: 413 as soon as it is known to be over the limit (from its
/// `content-length`, before reading any of it), 408 when it has not arrived by the deadline.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_bytes as u64) {
        return Err(ApiError::BodyTooLarge(limits.max_bytes));
    }
    let deadline = tokio::time::Instant::now() + limits.read_timeout;
    let mut body = body;
    // Most bodies come in one frame, which is returned without a copy.
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ApiError::BodyTimeout(limits.read_timeout)),
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                return Err(ApiError::Malformed(format!(
                    "the request body could not be read: {error}"
                )))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let read = first.as_ref().map_or(0, Bytes::len) + rest.len() + data.len();
        if read > limits.max_bytes {
            return Err(ApiError::BodyTooLarge(limits.max_bytes));
        }
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(first) = first.take() {
                    rest.extend_from_slice(&first);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(match first {
        Some(first) => first,
        None => rest.freeze(),
    })
}
