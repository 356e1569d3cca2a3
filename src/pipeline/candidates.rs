//! Candidate generation: the union of co-purchase neighbours of the cart, content neighbours
//! of the cart, co-purchase neighbours of viewed items and popular items, each with the raw
//! signal it arrived with. Ineligible items never enter, so later stages only see items that
//! may be shown.

use super::guard::Eligibility;
use crate::domain::ItemIndex;
use crate::model::Snapshot;

/// No anchor item (the signal is absent).
pub(super) const NO_ANCHOR: ItemIndex = ItemIndex::MAX;

/// One candidate and its raw signals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Candidate {
    pub item: ItemIndex,
    /// Sum of co-purchase weights from cart items.
    pub collaborative: f32,
    /// The cart item whose co-purchase weight was largest.
    pub collaborative_anchor: ItemIndex,
    collaborative_best: f32,
    /// Recency-weighted sum of co-purchase weights from viewed items.
    pub session: f32,
    /// The viewed item whose weighted contribution was largest.
    pub session_anchor: ItemIndex,
    session_best: f32,
    /// Recency-weighted count of the shopper's earlier purchases of this item; the signals
    /// stage replaces it by `ln(1 + count)` plus the weighted [`Self::bought_beside_cart`].
    pub purchased: f32,
    /// How near, in the shopper's earlier purchases, this item was bought to an item now in
    /// the cart (the closest such item 1).
    pub bought_beside_cart: f32,
    /// Content neighbour of a cart item (cosine of the closest); refined by the signals stage.
    pub content: f32,
    /// The cart item it is the content neighbour of.
    pub content_anchor: ItemIndex,
    /// Weighted sum of the normalised signals (filled by the signals stage).
    pub relevance: f32,
    /// Blended score: relevance, demoted or boosted (filled by the signals stage).
    pub score: f32,
    /// Whether it was demoted as a substitute of a cart item (filled by the signals stage).
    pub substitute: bool,
    /// Whether it was demoted as close to a dismissed item (filled by the signals stage).
    pub near_dismissed: bool,
}

impl Candidate {
    pub(super) fn new(item: ItemIndex) -> Self {
        Self {
            item,
            collaborative: 0.0,
            collaborative_anchor: NO_ANCHOR,
            collaborative_best: 0.0,
            session: 0.0,
            session_anchor: NO_ANCHOR,
            session_best: 0.0,
            purchased: 0.0,
            bought_beside_cart: 0.0,
            content: 0.0,
            content_anchor: NO_ANCHOR,
            relevance: 0.0,
            score: 0.0,
            substitute: false,
            near_dismissed: false,
        }
    }
}

/// Slot value marking an item this request excludes (see [`Eligibility::excluded_items`]).
const EXCLUDED: u32 = u32::MAX - 1;

/// The bounded set of candidates of one request.
pub(super) struct CandidatePool<'a> {
    eligibility: &'a Eligibility<'a>,
    capacity: usize,
    /// Slot of each item of the model in `items`, indexed by item: a direct lookup, not a hash
    /// per candidate. Reused across requests (see [`CandidatePool::finish`]);
    /// a slot is trusted only when it points at its own item, so a stale one is harmless.
    /// Excluded items hold [`EXCLUDED`] for the length of the request.
    position: &'a mut Vec<u32>,
    /// The candidates, in order of arrival.
    pub items: Vec<Candidate>,
}

impl Drop for CandidatePool<'_> {
    /// Also when a request unwinds: an [`EXCLUDED`] mark left in the per-thread table would
    /// hide that item from every later request this thread serves.
    fn drop(&mut self) {
        self.clear_slots();
    }
}

impl<'a> CandidatePool<'a> {
    /// An empty pool; `position` is scratch space kept between requests (grown as needed), and
    /// `items` a buffer to fill (its contents are dropped, its capacity reused).
    pub(super) fn new(
        eligibility: &'a Eligibility<'a>,
        capacity: usize,
        position: &'a mut Vec<u32>,
        mut items: Vec<Candidate>,
    ) -> Self {
        items.clear();
        items.reserve(capacity.min(1024));
        if position.len() < eligibility.item_count() {
            position.resize(eligibility.item_count(), u32::MAX);
        }
        for item in eligibility.excluded_items() {
            if let Some(slot) = position.get_mut(item as usize) {
                *slot = EXCLUDED;
            }
        }
        Self {
            eligibility,
            capacity,
            position,
            items,
        }
    }

    /// The index in `items` of `item`, if it is in the pool.
    #[inline]
    fn slot(&self, item: ItemIndex) -> Option<usize> {
        let at = *self.position.get(item as usize)? as usize;
        (self.items.get(at).is_some_and(|c| c.item == item)).then_some(at)
    }

    /// The candidate for `item`, adding it when it is eligible and there is room.
    #[inline(always)]
    fn entry(&mut self, item: ItemIndex) -> Option<&mut Candidate> {
        match self.slot(item) {
            Some(at) => Some(&mut self.items[at]),
            None => self.insert(item),
        }
    }

    /// Adds `item` when it is eligible and there is room (kept out of line: the loops that
    /// call [`Self::entry`] stay small).
    #[inline(never)]
    fn insert(&mut self, item: ItemIndex) -> Option<&mut Candidate> {
        let slot = self.position.get_mut(item as usize)?;
        if *slot == EXCLUDED || self.items.len() >= self.capacity || !self.eligibility.allows(item)
        {
            return None;
        }
        *slot = self.items.len() as u32;
        self.items.push(Candidate::new(item));
        self.items.last_mut()
    }

    /// The candidate for `item` if it is already in the pool.
    fn existing(&mut self, item: ItemIndex) -> Option<&mut Candidate> {
        let at = self.slot(item)?;
        Some(&mut self.items[at])
    }

    /// Candidates so far.
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// The candidates, leaving the scratch clean for the next request.
    pub(super) fn finish(mut self) -> Vec<Candidate> {
        let items = std::mem::take(&mut self.items);
        for c in &items {
            self.position[c.item as usize] = u32::MAX;
        }
        items
    }

    /// Resets the slots this request set, so the table is clean for the next one.
    fn clear_slots(&mut self) {
        let excluded = self.eligibility.excluded_items();
        for item in self.items.iter().map(|c| c.item).chain(excluded) {
            if let Some(slot) = self.position.get_mut(item as usize) {
                *slot = u32::MAX;
            }
        }
    }

    /// Adds the positively weighted ones among the best `per_anchor` co-purchase neighbours
    /// of each cart item (negative weights are applied by [`Self::apply_negative_weights`]).
    pub(super) fn add_collaborative(
        &mut self,
        snapshot: &Snapshot,
        cart: &[ItemIndex],
        per_anchor: usize,
    ) {
        for &anchor in cart {
            let (neighbours, scores) = snapshot.co_purchase(anchor);
            for (&item, &score) in neighbours.iter().zip(scores).take(per_anchor) {
                if score <= 0.0 {
                    // Rows are sorted best first: the rest are negative too.
                    break;
                }
                if let Some(c) = self.entry(item) {
                    c.collaborative += score;
                    if score > c.collaborative_best || c.collaborative_anchor == NO_ANCHOR {
                        c.collaborative_best = score;
                        c.collaborative_anchor = anchor;
                    }
                }
            }
        }
    }

    /// Adds the best `per_anchor` content neighbours of each cart item.
    pub(super) fn add_content(
        &mut self,
        snapshot: &Snapshot,
        cart: &[ItemIndex],
        per_anchor: usize,
    ) {
        for &anchor in cart {
            let (neighbours, scores) = snapshot.content_neighbours(anchor);
            for (&item, &score) in neighbours.iter().zip(scores).take(per_anchor) {
                if let Some(c) = self.entry(item) {
                    if score > c.content || c.content_anchor == NO_ANCHOR {
                        c.content = score;
                        c.content_anchor = anchor;
                    }
                }
            }
        }
    }

    /// Adds co-purchase neighbours of viewed items, each weighted by the item's recency.
    pub(super) fn add_session(
        &mut self,
        snapshot: &Snapshot,
        viewed: &[(ItemIndex, f32)],
        per_anchor: usize,
    ) {
        for &(anchor, weight) in viewed {
            let (neighbours, scores) = snapshot.co_purchase(anchor);
            for (&item, &score) in neighbours.iter().zip(scores).take(per_anchor) {
                if score <= 0.0 {
                    break;
                }
                if let Some(c) = self.entry(item) {
                    let contribution = weight * score;
                    c.session += contribution;
                    if contribution > c.session_best || c.session_anchor == NO_ANCHOR {
                        c.session_best = contribution;
                        c.session_anchor = anchor;
                    }
                }
            }
        }
    }

    /// The shopper's earlier purchases, newest first, each with its weight ("buy again"); an
    /// item's purchases add up.
    pub(super) fn add_purchased(&mut self, purchased: &[(ItemIndex, f32)]) {
        for &(item, weight) in purchased {
            if let Some(c) = self.entry(item) {
                c.purchased += weight;
            }
        }
    }

    /// Adds how near each earlier purchase was bought to an item now in the cart.
    pub(super) fn add_bought_beside_cart(&mut self, beside: &[(ItemIndex, f32)]) {
        for &(item, closeness) in beside {
            if let Some(c) = self.entry(item) {
                c.bought_beside_cart += closeness;
            }
        }
    }

    /// Applies the negative co-purchase weights (EASE keeps them: the cart argues against
    /// those items) of the cart and viewed items to candidates already in the pool. They
    /// never bring a candidate in, so they cannot crowd positive ones out of a full pool.
    pub(super) fn apply_negative_weights(
        &mut self,
        snapshot: &Snapshot,
        cart: &[ItemIndex],
        viewed: &[(ItemIndex, f32)],
        per_anchor: usize,
    ) {
        let anchors = cart
            .iter()
            .map(|&a| (a, 1.0, true))
            .chain(viewed.iter().map(|&(a, w)| (a, w, false)));
        for (anchor, weight, in_cart) in anchors {
            let (neighbours, scores) = snapshot.co_purchase(anchor);
            // Rows are sorted best first, so the strongest negatives are at the end.
            let row = neighbours.iter().zip(scores).rev();
            for (&item, &score) in row.take_while(|(_, &s)| s < 0.0).take(per_anchor) {
                if let Some(c) = self.existing(item) {
                    if in_cart {
                        c.collaborative += score;
                    } else {
                        c.session += weight * score;
                    }
                }
            }
        }
    }

    /// Adds up to `count` of the most popular eligible items (the fallback).
    pub(super) fn add_popular(&mut self, snapshot: &Snapshot, count: usize) {
        let mut added = 0;
        for &item in snapshot.by_popularity() {
            if added == count || self.items.len() >= self.capacity {
                break;
            }
            if self.entry(item).is_some() {
                added += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixtures::small_snapshot;
    use crate::pipeline::{NoCaps, Request};

    #[test]
    fn scores_add_up_over_cart_items_and_the_strongest_anchor_wins() {
        let s = small_snapshot();
        let (bag, strap, cable) = (
            s.index_of("bag").unwrap(),
            s.index_of("strap").unwrap(),
            s.index_of("cable").unwrap(),
        );
        let request = Request::default();
        let cart = [bag, strap];
        let eligibility = Eligibility::new(&s, &request, &cart, &NoCaps);
        let mut positions = Vec::new();
        let mut pool = CandidatePool::new(&eligibility, 100, &mut positions, Vec::new());
        pool.add_collaborative(&s, &cart, 50);
        let c = pool.items.iter().find(|c| c.item == cable).unwrap();
        assert!((c.collaborative - 1.6).abs() < 1e-6);
        assert_eq!(c.collaborative_anchor, bag);
        assert!(pool.items.iter().all(|c| c.item != bag && c.item != strap));
    }

    #[test]
    fn negative_weights_lower_candidates_but_never_bring_one_in() {
        use crate::domain::ModelVersion;
        use crate::model::{ItemRecord, SnapshotBuilder};
        let mut b = SnapshotBuilder::new(ModelVersion(1), 0, 5);
        for id in ["a", "b", "c", "d", "e"] {
            b.add_item(ItemRecord {
                id,
                title: Some(id),
                in_stock: true,
                ..Default::default()
            })
            .unwrap();
        }
        for (x, y, w) in [
            ("a", "b", 1.0),
            ("a", "c", -0.5),
            ("d", "c", 0.8),
            ("d", "e", -0.3),
        ] {
            b.add_pair(x, y, w).unwrap();
        }
        let s = b.finish().unwrap();
        let at = |id| s.index_of(id).unwrap();
        let request = Request::default();
        let cart = [at("a"), at("d")];
        let eligibility = Eligibility::new(&s, &request, &cart, &NoCaps);
        let mut positions = Vec::new();
        let mut pool = CandidatePool::new(&eligibility, 100, &mut positions, Vec::new());
        pool.add_collaborative(&s, &cart, 50);
        pool.apply_negative_weights(&s, &cart, &[], 50);
        let c = pool.items.iter().find(|c| c.item == at("c")).unwrap();
        assert!((c.collaborative - 0.3).abs() < 1e-6);
        assert_eq!(c.collaborative_anchor, at("d"));
        assert!(pool.items.iter().all(|c| c.item != at("e")));
    }

    #[test]
    fn variants_of_a_large_product_group_are_excluded_too() {
        use crate::domain::ModelVersion;
        use crate::model::{ItemRecord, SnapshotBuilder};
        let ids: Vec<String> = (0..300).map(|i| format!("g{i}")).collect();
        let mut b = SnapshotBuilder::new(ModelVersion(1), 0, 301);
        for id in &ids {
            b.add_item(ItemRecord {
                id,
                title: Some(id),
                in_stock: true,
                product_group: Some("g"),
                ..Default::default()
            })
            .unwrap();
        }
        b.add_item(ItemRecord {
            id: "other",
            title: Some("other"),
            in_stock: true,
            ..Default::default()
        })
        .unwrap();
        for (other, w) in [("g1", 0.9), ("g299", 0.8), ("other", 0.5)] {
            b.add_pair("g0", other, w).unwrap();
        }
        let s = b.finish().unwrap();
        let request = Request::default();
        let cart = [s.index_of("g0").unwrap()];
        let eligibility = Eligibility::new(&s, &request, &cart, &NoCaps);
        let mut positions = Vec::new();
        let mut pool = CandidatePool::new(&eligibility, 100, &mut positions, Vec::new());
        pool.add_collaborative(&s, &cart, 50);
        let got: Vec<&str> = pool.items.iter().map(|c| s.item_id(c.item)).collect();
        assert_eq!(got, ["other"]);
    }

    #[test]
    fn a_pool_leaves_the_slot_table_clean_even_when_dropped_midway() {
        let s = small_snapshot();
        let request = Request::default();
        let cart = [s.index_of("bag").unwrap()];
        let eligibility = Eligibility::new(&s, &request, &cart, &NoCaps);
        let mut positions = Vec::new();
        let mut pool = CandidatePool::new(&eligibility, 100, &mut positions, Vec::new());
        pool.add_collaborative(&s, &cart, 50);
        assert!(!pool.items.is_empty());
        drop(pool);
        assert!(positions.iter().all(|&p| p == u32::MAX), "{positions:?}");
        let mut pool = CandidatePool::new(&eligibility, 100, &mut positions, Vec::new());
        pool.add_collaborative(&s, &cart, 50);
        let items = pool.finish();
        assert!(!items.is_empty());
        assert!(positions.iter().all(|&p| p == u32::MAX), "{positions:?}");
    }

    #[test]
    fn the_pool_is_bounded_and_ineligible_items_never_enter() {
        let s = small_snapshot();
        let request = Request::default();
        let cart = [s.index_of("bag").unwrap()];
        let eligibility = Eligibility::new(&s, &request, &cart, &NoCaps);
        let mut positions = Vec::new();
        let mut pool = CandidatePool::new(&eligibility, 2, &mut positions, Vec::new());
        pool.add_collaborative(&s, &cart, 50);
        assert_eq!(pool.items.len(), 2);
        let ink = s.index_of("ink").unwrap();
        assert!(
            pool.items.iter().all(|c| c.item != ink),
            "ink is out of stock"
        );
    }
}
