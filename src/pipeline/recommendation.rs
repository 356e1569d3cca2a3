//! What the pipeline answers: the recommended items in display order, each with its score,
//! the reason it is listed and, on request, the contributions of each signal.

use serde::Serialize;

use crate::domain::ItemIndex;

/// Which signal put an item on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    /// Co-purchase with a cart item.
    BoughtTogether,
    /// Content similarity to a cart item.
    SimilarTo,
    /// Co-occurrence with an item viewed in this session.
    ViewedTogether,
    /// The shopper bought it before.
    BoughtBefore,
    /// Popular overall (fallback).
    Popular,
}

impl ReasonKind {
    /// The name in the API (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::BoughtTogether => "bought_together",
            ReasonKind::SimilarTo => "similar_to",
            ReasonKind::ViewedTogether => "viewed_together",
            ReasonKind::BoughtBefore => "bought_before",
            ReasonKind::Popular => "popular",
        }
    }
}

/// The dominant signal and the cart or session item it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    /// The signal.
    pub kind: ReasonKind,
    /// The item that contributed most, when the signal has one.
    pub anchor: Option<ItemIndex>,
}

/// Per-signal contributions to a score (weight times normalised signal), with `explain=true`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Contributions {
    /// From co-purchase with the cart.
    pub collaborative: f32,
    /// From content similarity to the cart.
    pub content: f32,
    /// From this session's viewed items.
    pub session: f32,
    /// From the shopper's earlier purchases.
    pub purchased: f32,
    /// From overall popularity.
    pub popularity: f32,
    /// Merchandising boost.
    pub boost: f32,
    /// Whether the item was demoted as a substitute of a cart item.
    pub substitute: bool,
    /// Whether the item was demoted as close to one the shopper dismissed.
    pub near_dismissed: bool,
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The item.
    pub item: ItemIndex,
    /// Score in [0, 1], higher is better (relative to the best candidate of the request).
    pub score: f32,
    /// Why it is recommended.
    pub reason: Reason,
    /// Signal contributions, when asked for.
    pub contributions: Option<Contributions>,
}

/// The answer to a [`Request`](super::Request).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recommendations<'r> {
    /// Recommended items in display order; at most `k`.
    pub items: Vec<Recommendation>,
    /// Cart ids the model does not know.
    pub unknown_items: Vec<&'r str>,
}
