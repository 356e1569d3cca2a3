//! Guard rails: which items may be shown at all for this request (hard filters), and which
//! are substitutes of a cart item (demoted, not dropped).

use crate::domain::ItemIndex;
use crate::model::{Snapshot, NO_CATEGORY};

use super::dpp::dot;
use super::{CapView, Request};

/// The hard filters of one request: not in the cart nor a variant of a cart item, in stock,
/// within budget, not in an excluded category, not capped for this shopper.
pub(super) struct Eligibility<'a> {
    snapshot: &'a Snapshot,
    cart: &'a [ItemIndex],
    max_price: Option<f32>,
    excluded_categories: Vec<u32>,
    caps: &'a dyn CapView,
}

impl<'a> Eligibility<'a> {
    pub(super) fn new(
        snapshot: &'a Snapshot,
        request: &Request,
        cart: &'a [ItemIndex],
        caps: &'a dyn CapView,
    ) -> Self {
        let excluded_categories = request
            .exclude_categories
            .iter()
            .filter_map(|name| snapshot.catalogue().category_index(name))
            .collect();
        Self {
            snapshot,
            cart,
            max_price: request.max_price,
            excluded_categories,
            caps,
        }
    }

    /// Whether `item` may be recommended.
    #[inline]
    pub(super) fn allows(&self, item: ItemIndex) -> bool {
        let catalogue = self.snapshot.catalogue();
        // An unknown price (NaN) fails the comparison, so a budget excludes it.
        catalogue.in_stock(item)
            && self
                .max_price
                .is_none_or(|max| catalogue.price(item) <= max)
            && !self.cart.iter().any(|&c| catalogue.same_product(c, item))
            && !self.excluded_categories.contains(&catalogue.category(item))
            && !self.caps.is_capped(item)
    }
}

/// Whether `item` is a substitute of a cart item: same category and embeddings at least
/// `min_similarity` alike (a second camera for a camera).
pub(super) fn is_substitute(
    snapshot: &Snapshot,
    cart: &[ItemIndex],
    item: ItemIndex,
    min_similarity: f32,
) -> bool {
    let catalogue = snapshot.catalogue();
    let category = catalogue.category(item);
    if category == NO_CATEGORY || snapshot.embedding_dim() == 0 {
        return false;
    }
    let e = snapshot.embedding_slice(item);
    cart.iter().any(|&c| {
        catalogue.category(c) == category && dot(e, snapshot.embedding_slice(c)) >= min_similarity
    })
}
