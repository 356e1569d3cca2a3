//! Candidate generation: items related to the cart, with their accumulated signal.

use foldhash::HashMap;
use foldhash::HashMapExt;

use crate::domain::ItemIndex;
use crate::model::Snapshot;

/// A candidate with its collaborative score and the cart item that contributed most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Candidate {
    pub item: ItemIndex,
    pub score: f32,
    pub anchor: ItemIndex,
    anchor_contribution: f32,
}

/// Co-purchase neighbours of the cart, scored by the sum of their weights to cart items;
/// cart items themselves and non-positive totals are left out. At most `pool` candidates,
/// taken from the best neighbours of each cart item first.
pub(super) fn collaborative(
    snapshot: &Snapshot,
    cart: &[ItemIndex],
    pool: usize,
) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = Vec::with_capacity(pool.min(256));
    let mut position: HashMap<ItemIndex, usize> = HashMap::with_capacity(pool.min(256));
    // Per-item budget so one cart item with long rows cannot crowd out the others.
    let per_item = pool.div_ceil(cart.len().max(1));
    for &anchor in cart {
        let (neighbours, scores) = snapshot.co_purchase(anchor);
        for (&item, &score) in neighbours.iter().zip(scores).take(per_item) {
            if cart.contains(&item) {
                continue;
            }
            match position.get(&item) {
                Some(&at) => {
                    let c = &mut candidates[at];
                    c.score += score;
                    if score > c.anchor_contribution {
                        c.anchor = anchor;
                        c.anchor_contribution = score;
                    }
                }
                None if candidates.len() < pool => {
                    position.insert(item, candidates.len());
                    candidates.push(Candidate {
                        item,
                        score,
                        anchor,
                        anchor_contribution: score,
                    });
                }
                None => {}
            }
        }
    }
    candidates.retain(|c| c.score > 0.0 && c.score.is_finite());
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::small_snapshot;

    #[test]
    fn scores_add_up_over_cart_items_and_the_strongest_anchor_wins() {
        let s = small_snapshot();
        let (bag, strap, cable) = (
            s.index_of("bag").unwrap(),
            s.index_of("strap").unwrap(),
            s.index_of("cable").unwrap(),
        );
        let got = collaborative(&s, &[bag, strap], 100);
        let c = got.iter().find(|c| c.item == cable).unwrap();
        assert!((c.score - 1.6).abs() < 1e-6);
        assert_eq!(c.anchor, bag);
        assert!(got.iter().all(|c| c.item != bag && c.item != strap));
    }

    #[test]
    fn the_pool_is_bounded() {
        let s = small_snapshot();
        let got = collaborative(&s, &[s.index_of("bag").unwrap()], 2);
        assert_eq!(got.len(), 2);
    }
}
