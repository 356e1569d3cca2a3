//! Guard rails: which items may be shown at all for this request.

use crate::domain::ItemIndex;
use crate::model::Snapshot;

use super::Request;

/// The hard filters of one request: not in the cart, in stock, within budget, not excluded.
pub(super) struct Eligibility<'a> {
    snapshot: &'a Snapshot,
    cart: &'a [ItemIndex],
    max_price: Option<f32>,
    excluded_categories: Vec<u32>,
}

impl<'a> Eligibility<'a> {
    pub(super) fn new(snapshot: &'a Snapshot, request: &Request, cart: &'a [ItemIndex]) -> Self {
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
        }
    }

    /// Whether `item` may be recommended.
    #[inline]
    pub(super) fn allows(&self, item: ItemIndex) -> bool {
        let catalogue = self.snapshot.catalogue();
        // An unknown price (NaN) fails the comparison, so a budget excludes it.
        catalogue.in_stock(item)
            && !self.cart.contains(&item)
            && self
                .max_price
                .is_none_or(|max| catalogue.price(item) <= max)
            && !self.excluded_categories.contains(&catalogue.category(item))
    }
}
