//! A validated recommendation request, as every caller hands it to the pipeline, with the
//! limits on its lists that callers check before they build one.

use crate::domain::Touchpoint;

/// Largest `k` a request may ask for.
pub const MAX_K: usize = 50;

/// Most earlier purchases the pipeline reads: the newest of what a request carries. More
/// gained nothing on Online Retail and costs every request.
pub const MAX_PURCHASED_ITEMS: usize = 200;

/// Most earlier purchases one request may carry. A shop that sends a loyal shopper's whole
/// history gets a list built from its newest [`MAX_PURCHASED_ITEMS`], not an error; the bound
/// keeps what one request may make the server parse small.
pub const MAX_PURCHASED_SENT: usize = 10_000;

/// A validated recommendation request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// Item ids in the cart, as sent.
    pub cart: Vec<String>,
    /// Items this session viewed or added, most recent last.
    pub viewed: Vec<String>,
    /// Items this shopper bought before, most recent last (an item bought again is listed
    /// again).
    pub purchased: Vec<String>,
    /// Opaque shopper id.
    pub user: Option<String>,
    /// Opaque session id.
    pub session: Option<String>,
    /// Where the list is shown.
    pub touchpoint: Touchpoint,
    /// How many items to return (1 to [`MAX_K`]).
    pub k: usize,
    /// Most an item may cost.
    pub max_price: Option<f32>,
    /// Categories never to recommend.
    pub exclude_categories: Vec<String>,
    /// False when the shopper opted out: no shopper or session state is used.
    pub personalize: bool,
    /// Whether to report per-signal contributions.
    pub explain: bool,
}
