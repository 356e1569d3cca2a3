//! Admin authorisation: a bearer token compared in constant time, never logged.

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::Secret;

/// Checks the `Authorization: Bearer <token>` header against the configured admin token.
///
/// Both sides are hashed first so the comparison takes the same time whatever the lengths.
pub fn authorize_admin(expected: Option<&Secret>, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = expected.ok_or(ApiError::AdminDisabled)?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.expose().as_bytes());
    if bool::from(presented.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn the_right_token_passes_and_others_get_401_or_403() {
        let token = Secret::new("s3cret");
        assert!(authorize_admin(Some(&token), &headers("Bearer s3cret")).is_ok());
        assert!(matches!(
            authorize_admin(Some(&token), &headers("Bearer s3cre")),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            authorize_admin(Some(&token), &headers("Basic s3cret")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            authorize_admin(Some(&token), &HeaderMap::new()),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            authorize_admin(None, &headers("Bearer s3cret")),
            Err(ApiError::AdminDisabled)
        ));
    }
}
