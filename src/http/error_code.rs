//! The one list of error codes the API answers with: each code's string, HTTP status and
//! meaning. Responses take their code and status from here, the OpenAPI document's `Error`
//! schema lists exactly these codes (a test checks), and [`ErrorCode::markdown_table`] prints
//! them for the documentation.

use axum::http::StatusCode;

/// Defines [`ErrorCode`] from one table, so a code's string, status and description cannot
/// drift apart.
macro_rules! error_codes {
    ($($variant:ident = ($code:literal, $status:ident, $description:literal),)+) => {
        /// A stable, machine-readable error code, as in `{"error": {"code": ..., "message": ...}}`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $description] $variant,)+
        }

        impl ErrorCode {
            /// Every code, in the order the documentation lists them (by status).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as sent to clients.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// The HTTP status a response with this code has.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)+
                }
            }

            /// When a client gets this code, in one sentence.
            pub const fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $description,)+
                }
            }
        }
    };
}

error_codes! {
    InvalidCart = ("invalid_cart", BAD_REQUEST,
        "`cart` has more than 2000 ids, or an id that is empty, longer than 128 bytes or holds a \
         control character"),
    InvalidViewed = ("invalid_viewed", BAD_REQUEST,
        "`viewed` has more than 50 ids, or an id that is empty, longer than 128 bytes or holds a \
         control character"),
    InvalidPurchased = ("invalid_purchased", BAD_REQUEST,
        "`purchased` has more than 10000 ids, or an id that is empty, longer than 128 bytes or holds \
         a control character"),
    InvalidK = ("invalid_k", BAD_REQUEST, "`k` is not a whole number from 1 to 50"),
    InvalidTouchpoint = ("invalid_touchpoint", BAD_REQUEST,
        "`touchpoint` is not `checkout`, `cart` or `product`"),
    InvalidMaxPrice = ("invalid_max_price", BAD_REQUEST,
        "`max_price` is not a non-negative number"),
    InvalidShopper = ("invalid_shopper", BAD_REQUEST,
        "`user` or `session` is longer than 128 bytes or holds a control character, or a shopper \
         id to erase is not 1 to 128 bytes"),
    InvalidVariant = ("invalid_variant", BAD_REQUEST,
        "`variant` (admin only) names no configured experiment variant and is not `control`"),
    InvalidQuery = ("invalid_query", BAD_REQUEST,
        "the query string is malformed, repeats or misspells a field, has a flag that is not true \
         or false, or excludes more than 50 categories"),
    InvalidBody = ("invalid_body", BAD_REQUEST,
        "the body is not `application/json`, or not JSON of the expected shape"),
    QueryTooLarge = ("query_too_large", BAD_REQUEST,
        "the query string is longer than `server.max_query_bytes`"),
    InvalidEvents = ("invalid_events", BAD_REQUEST,
        "an event of the `POST /events` body is invalid (the message names each by index); none is \
         accepted"),
    InvalidItem = ("invalid_item", BAD_REQUEST,
        "an item of `PUT` or `PATCH /items/{id}` is invalid: an unknown field, a missing title, a \
         negative price, a margin outside 0 to 1, an unknown availability, attributes that are not \
         an object of at most 8192 bytes; the message says which"),
    InvalidItems = ("invalid_items", BAD_REQUEST,
        "an item of the `POST /items` body is invalid (the message names each by index), or the \
         body holds more than 10000 items; none is stored"),
    BadRequest = ("bad_request", BAD_REQUEST,
        "the request is malformed in a way no other code names (e.g. a path that is not valid \
         UTF-8 once decoded, or a body that broke off)"),
    Unauthorized = ("unauthorized", UNAUTHORIZED,
        "an admin endpoint was called without a bearer token"),
    Forbidden = ("forbidden", FORBIDDEN, "the bearer token is not the admin token"),
    AdminDisabled = ("admin_disabled", FORBIDDEN,
        "admin endpoints are off because `TANDEM_ADMIN_TOKEN` is not set"),
    NotFound = ("not_found", NOT_FOUND, "no endpoint has this path"),
    NoReadyVersion = ("no_ready_version", NOT_FOUND, "a reload found no ready model version"),
    VersionNotFound = ("version_not_found", NOT_FOUND,
        "the model version a reload asked for does not exist"),
    ItemNotFound = ("item_not_found", NOT_FOUND, "the catalogue has no item with this id"),
    MethodNotAllowed = ("method_not_allowed", METHOD_NOT_ALLOWED,
        "the endpoint does not take this method"),
    BodyTimeout = ("body_timeout", REQUEST_TIMEOUT,
        "the request body did not arrive within `server.body_read_timeout_ms`"),
    ReloadInProgress = ("reload_in_progress", CONFLICT, "another reload is running"),
    VersionNotReady = ("version_not_ready", CONFLICT,
        "the model version a reload asked for is not ready"),
    BodyTooLarge = ("body_too_large", PAYLOAD_TOO_LARGE,
        "the request body is longer than `server.max_body_bytes`"),
    UriTooLong = ("uri_too_long", URI_TOO_LONG,
        "the request target (path and query) is longer than `server.max_uri_bytes`"),
    InvalidModel = ("invalid_model", UNPROCESSABLE_ENTITY,
        "the model version's rows do not make a valid model; the old one keeps serving"),
    HeadersTooLarge = ("headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE,
        "the request's header fields together are longer than `server.max_header_bytes`"),
    Internal = ("internal", INTERNAL_SERVER_ERROR,
        "a bug or an unexpected failure; the detail is logged, not returned"),
    ModelNotLoaded = ("model_not_loaded", SERVICE_UNAVAILABLE, "no model is loaded yet"),
    Timeout = ("timeout", SERVICE_UNAVAILABLE,
        "the request took longer than `server.request_timeout_ms`"),
    Overloaded = ("overloaded", SERVICE_UNAVAILABLE,
        "more than `server.max_in_flight` storefront requests are in flight, or the request \
         waited longer than `server.max_queue_delay_ms` (or `server.queue_delay_target_ms` while \
         the queue stands) to be worked on; retry shortly"),
    DatabaseNotConfigured = ("database_not_configured", SERVICE_UNAVAILABLE,
        "a reload or a catalogue call needs a database and none is configured"),
    ActivationFailed = ("activation_failed", SERVICE_UNAVAILABLE,
        "the version serves on this replica but could not be activated for the others"),
    DatabaseUnavailable = ("database_unavailable", SERVICE_UNAVAILABLE,
        "the database failed or could not be reached"),
    CappingStoreUnavailable = ("capping_store_unavailable", SERVICE_UNAVAILABLE,
        "the capping store could not be reached, so a shopper's state may remain; retry"),
    EventsQueueFull = ("events_queue_full", SERVICE_UNAVAILABLE,
        "the event write queue has no room for the body; retry shortly"),
    ShuttingDown = ("shutting_down", SERVICE_UNAVAILABLE,
        "the service is shutting down and takes no more events"),
}

impl ErrorCode {
    /// Every code as a Markdown table (code, status, when), for the API documentation.
    pub fn markdown_table() -> String {
        let mut table = String::from("| code | status | when |\n|---|---|---|\n");
        for code in Self::ALL {
            table.push_str(&format!(
                "| `{}` | {} | {} |\n",
                code.as_str(),
                code.status().as_u16(),
                code.description()
            ));
        }
        table
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_listed_by_status() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(code.status().is_client_error() || code.status().is_server_error());
            assert!(!code.description().is_empty() && !code.description().contains('|'));
        }
        let statuses: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.status().as_u16()).collect();
        assert!(statuses.is_sorted(), "{statuses:?}");
    }

    #[test]
    fn descriptions_give_the_limits_the_code_enforces() {
        use super::super::request::{
            MAX_CART_ITEMS, MAX_EXCLUDED_CATEGORIES, MAX_PURCHASED_SENT, MAX_VIEWED_ITEMS,
        };
        use crate::domain::MAX_ID_BYTES;
        use crate::pipeline::MAX_K;
        let cases = [
            (ErrorCode::InvalidCart, vec![MAX_CART_ITEMS, MAX_ID_BYTES]),
            (
                ErrorCode::InvalidViewed,
                vec![MAX_VIEWED_ITEMS, MAX_ID_BYTES],
            ),
            (
                ErrorCode::InvalidPurchased,
                vec![MAX_PURCHASED_SENT, MAX_ID_BYTES],
            ),
            (ErrorCode::InvalidK, vec![MAX_K]),
            (ErrorCode::InvalidShopper, vec![MAX_ID_BYTES]),
            (ErrorCode::InvalidQuery, vec![MAX_EXCLUDED_CATEGORIES]),
        ];
        for (code, limits) in cases {
            let numbers: Vec<&str> = code
                .description()
                .split(|c: char| !c.is_ascii_digit())
                .collect();
            for limit in limits {
                assert!(
                    numbers.contains(&limit.to_string().as_str()),
                    "{code}: {} does not say {limit}",
                    code.description()
                );
            }
        }
    }

    /// docs/api.md's table of codes is this enum's; `TANDEM_UPDATE_GOLDEN=1` rewrites it.
    #[test]
    fn the_documented_codes_are_exactly_the_enum() {
        const START: &str =
            "<!-- error codes: generated from src/http/error_code.rs; a test checks this table -->\n";
        const END: &str = "<!-- end of error codes -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let start = doc
            .find(START)
            .expect("docs/api.md marks its table of codes")
            + START.len();
        let end = start + doc[start..].find(END).expect("and where it ends");
        let table = ErrorCode::markdown_table();
        if std::env::var_os("TANDEM_UPDATE_GOLDEN").is_some() {
            let updated = format!("{}{table}{}", &doc[..start], &doc[end..]);
            std::fs::write(path, updated).unwrap();
        } else {
            assert_eq!(
                &doc[start..end],
                table,
                "run with TANDEM_UPDATE_GOLDEN=1 to update"
            );
        }
    }

    #[test]
    fn the_markdown_table_has_a_row_per_code() {
        let table = ErrorCode::markdown_table();
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(rows.len(), ErrorCode::ALL.len());
        assert_eq!(rows[0].split('|').nth(1), Some(" `invalid_cart` "));
        assert!(table.contains("| `overloaded` | 503 |"), "{table}");
    }
}
