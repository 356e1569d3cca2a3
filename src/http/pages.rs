//! What a browser loads: the storefront widget, the explorer page and its item search, and the
//! sample storefront page.

use std::sync::Arc;

use axum::extract::{Request as HttpRequest, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::assets::{EXPLORE_CSS, EXPLORE_HTML, EXPLORE_JS, STOREFRONT_HTML, WIDGET_JS};
use super::auth::authorize_admin;
use super::error::{ApiError, ErrorCode, RequestError};
use super::AppState;
use crate::domain::ModelVersion;
use crate::model::find_by_title;

/// Longest item search, in bytes.
const MAX_SEARCH_BYTES: usize = 200;
/// Most items one search returns.
const MAX_SEARCH_LIMIT: usize = 50;
/// Items a search returns when it does not say.
const DEFAULT_SEARCH_LIMIT: usize = 20;

/// `GET /widget.js`: the storefront widget.
pub async fn widget_js(headers: HeaderMap) -> Response {
    WIDGET_JS.serve(&headers)
}

/// `GET /explore`: the explorer page (static; its item search needs the admin token unless
/// `explore.open`).
pub async fn explore_html(headers: HeaderMap) -> Response {
    EXPLORE_HTML.serve(&headers)
}

/// `GET /explore/explore.js`.
pub async fn explore_js(headers: HeaderMap) -> Response {
    EXPLORE_JS.serve(&headers)
}

/// `GET /explore/explore.css`.
pub async fn explore_css(headers: HeaderMap) -> Response {
    EXPLORE_CSS.serve(&headers)
}

/// `GET /examples/storefront`: a sample shop page using the widget.
pub async fn storefront_example(headers: HeaderMap) -> Response {
    STOREFRONT_HTML.serve(&headers)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    q: Option<String>,
    limit: Option<String>,
}

/// One item found.
#[derive(Debug, Serialize)]
struct FoundItem<'a> {
    item_id: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<f32>,
    in_stock: bool,
}

#[derive(Debug, Serialize)]
struct SearchResponse<'a> {
    model_version: ModelVersion,
    items: Vec<FoundItem<'a>>,
}

/// `GET /items?q=…&limit=…`: items of the served snapshot whose title holds every word of
/// `q`, most popular first (admin token unless `explore.open`).
pub async fn search_items(
    State(state): State<Arc<AppState>>,
    request: HttpRequest,
) -> Result<Response, ApiError> {
    if !state.explore_open {
        authorize_admin(state.admin_token.as_ref(), request.headers())?;
    }
    let query: SearchQuery = serde_urlencoded::from_str(request.uri().query().unwrap_or(""))
        .map_err(|e| {
            RequestError::new(
                ErrorCode::InvalidQuery,
                format!("the item search takes q and limit: {e}"),
            )
        })?;
    let q = query.q.unwrap_or_default();
    if q.trim().is_empty() || q.len() > MAX_SEARCH_BYTES {
        return Err(RequestError::new(
            ErrorCode::InvalidQuery,
            format!("q must hold 1 to {MAX_SEARCH_BYTES} bytes of words to find in titles"),
        )
        .into());
    }
    let limit = match query.limit.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_SEARCH_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_SEARCH_LIMIT).contains(n))
            .ok_or_else(|| {
                RequestError::new(
                    ErrorCode::InvalidQuery,
                    format!("limit must be a whole number from 1 to {MAX_SEARCH_LIMIT}"),
                )
            })?,
    };
    let snapshot = state.model.current().ok_or(ApiError::ModelNotLoaded)?;
    let attributes = snapshot.attributes();
    let items = find_by_title(&snapshot, &q, limit)
        .into_iter()
        .map(|item| FoundItem {
            item_id: snapshot.item_id(item),
            title: attributes.title(item),
            category: attributes.category_name(attributes.category(item)),
            price: Some(attributes.price(item)).filter(|p| p.is_finite()),
            in_stock: attributes.in_stock(item),
        })
        .collect();
    Ok(Json(SearchResponse {
        model_version: snapshot.version(),
        items,
    })
    .into_response())
}
