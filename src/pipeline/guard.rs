//! Guard rails: which items may be shown at all for this request (hard filters), and which
//! are substitutes of a cart item (demoted, not dropped).

use crate::domain::ItemIndex;
use crate::model::{Snapshot, NO_CATEGORY, NO_GROUP};

use super::vector::each_dot;
use super::{CapView, Request};

/// Product groups with more variants than this are not marked item by item (a request would
/// pay for every variant of every cart item); their variants are checked per candidate.
const MARKED_VARIANTS: usize = 256;

/// Most cart items, the newest, whose substitutes are looked for: the check is a pass over
/// the ranked candidates per cart item, and a wholesale cart of hundreds of lines would make
/// it cart × candidates. A substitute stands in for what the shopper added lately.
const SUBSTITUTE_ANCHORS: usize = 100;

/// The hard filters of one request: not in the cart nor a variant of a cart item, in stock,
/// within budget, not in an excluded category, not capped for this shopper.
pub(super) struct Eligibility<'a> {
    snapshot: &'a Snapshot,
    cart: &'a [ItemIndex],
    /// The products the cart's items are variants of (their other variants are excluded too),
    /// those with at most [`MARKED_VARIANTS`] variants, whose items are marked one by one...
    cart_products: Vec<u32>,
    /// ...and the larger ones, checked per candidate instead.
    large_cart_products: Vec<u32>,
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
            .filter_map(|name| snapshot.attributes().category_index(name))
            .collect();
        let attributes = snapshot.attributes();
        let mut cart_products: Vec<u32> = cart
            .iter()
            .map(|&c| attributes.product_group(c))
            .filter(|&g| g != NO_GROUP)
            .collect();
        cart_products.sort_unstable();
        cart_products.dedup();
        let (large_cart_products, cart_products) = cart_products
            .into_iter()
            .partition(|&g| attributes.variants_of(g).len() > MARKED_VARIANTS);
        Self {
            snapshot,
            cart,
            cart_products,
            large_cart_products,
            max_price: request.max_price,
            excluded_categories,
            caps,
        }
    }

    /// The items excluded one by one, whatever their columns say: the cart, every variant of
    /// a cart item, and what this shopper's caps block. The candidate pool marks them once
    /// per request, so adding a candidate does not search these lists.
    pub(super) fn excluded_items(&self) -> impl Iterator<Item = ItemIndex> + '_ {
        let attributes = self.snapshot.attributes();
        self.cart
            .iter()
            .chain(
                self.cart_products
                    .iter()
                    .flat_map(|&group| attributes.variants_of(group)),
            )
            .chain(self.caps.blocked())
            .copied()
    }

    /// Whether an item that is not one of [`Self::excluded_items`] may be recommended: in
    /// stock, within budget, not in an excluded category, not a variant of a cart item's large
    /// product group.
    #[inline]
    pub(super) fn allows(&self, item: ItemIndex) -> bool {
        let attributes = self.snapshot.attributes();
        // An unknown price (NaN) fails the comparison, so a budget excludes it.
        attributes.in_stock(item)
            && self
                .max_price
                .is_none_or(|max| attributes.price(item) <= max)
            && (self.excluded_categories.is_empty()
                || !holds(&self.excluded_categories, attributes.category(item)))
            && (self.large_cart_products.is_empty()
                || !holds(&self.large_cart_products, attributes.product_group(item)))
    }

    /// Items in the model.
    pub(super) fn item_count(&self) -> usize {
        self.snapshot.len()
    }
}

/// Whether `values` holds `value`: for the few ids of a cart, a branch-free pass the compiler
/// vectorises, cheaper than `contains` and its early exit on lists this short.
#[inline(always)]
fn holds(values: &[u32], value: u32) -> bool {
    values.iter().fold(false, |found, &v| found | (v == value))
}

/// Calls `mark(i)` for every `items[i]` that is a substitute of a cart item: same category
/// and embeddings at least `min_similarity` alike (a second camera for a camera). One SIMD
/// pass over the items per cart item that has a category, for the newest
/// [`SUBSTITUTE_ANCHORS`] cart items.
pub(super) fn mark_substitutes(
    snapshot: &Snapshot,
    cart: &[ItemIndex],
    items: &[ItemIndex],
    min_similarity: f32,
    mut mark: impl FnMut(usize),
) {
    let attributes = snapshot.attributes();
    if snapshot.embedding_dim() == 0 {
        return;
    }
    let rows = snapshot.embedding_rows();
    for &c in &cart[cart.len().saturating_sub(SUBSTITUTE_ANCHORS)..] {
        let category = attributes.category(c);
        if category == NO_CATEGORY {
            continue;
        }
        each_dot(
            rows.row(c),
            items.len(),
            |i| rows.row(items[i]),
            |i| attributes.category(items[i]) == category,
            |i, similarity| {
                if similarity >= min_similarity {
                    mark(i);
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModelVersion;
    use crate::model::{ItemRecord, SnapshotBuilder};

    #[test]
    fn substitutes_are_looked_for_among_the_newest_cart_items_only() {
        let fillers: Vec<String> = (0..SUBSTITUTE_ANCHORS).map(|i| format!("f{i}")).collect();
        let mut b = SnapshotBuilder::new(ModelVersion(1), 2, fillers.len() + 2);
        let items = [
            ("camera", "cameras", [1.0, 0.0]),
            ("camera-2", "cameras", [1.0, 0.0]),
        ]
        .into_iter()
        .chain(fillers.iter().map(|f| (f.as_str(), "straps", [0.0, 1.0])));
        for (id, category, embedding) in items {
            b.add_item(ItemRecord {
                id,
                popularity: 1.0,
                category: Some(category),
                in_stock: true,
                ..Default::default()
            })
            .unwrap();
            b.add_embedding(id, &embedding).unwrap();
        }
        let s = b.finish().unwrap();
        let index = |id: &str| s.index_of(id).unwrap();
        let twin = [index("camera-2")];
        let marked = |cart: &[ItemIndex]| {
            let mut marked = false;
            mark_substitutes(&s, cart, &twin, 0.9, |_| marked = true);
            marked
        };
        let mut cart: Vec<ItemIndex> = fillers.iter().map(|f| index(f)).collect();
        cart.push(index("camera"));
        assert!(marked(&cart), "the newest cart item is checked");
        cart.rotate_right(1);
        assert!(
            !marked(&cart),
            "the camera is older than the newest {SUBSTITUTE_ANCHORS}"
        );
    }
}
