//! Signals and blend: each raw signal normalised per request to [0, 1], weighted per
//! touchpoint, substitutes demoted, merchandising boost added; then the shortlist the DPP
//! chooses from.

use super::candidates::Candidate;
use super::guard::mark_substitutes;
use super::vector::{dot, each_dot};
use super::{Contributions, PipelineConfig, TouchpointConfig};
use crate::domain::ItemIndex;
use crate::model::Snapshot;

/// The per-request normalisers, kept to explain the finalists' scores.
pub(super) struct Blend {
    collaborative_max: f32,
    session_max: f32,
    purchased_max: f32,
    content_max: f32,
    popularity_log_max: f32,
    centroid: Vec<f32>,
}

fn inverse(max: f32) -> f32 {
    if max > 0.0 {
        1.0 / max
    } else {
        0.0
    }
}

impl Blend {
    fn popularity(&self, snapshot: &Snapshot, item: ItemIndex) -> f32 {
        snapshot.log_popularity(item) * inverse(self.popularity_log_max)
    }

    /// The weighted, normalised signals behind `candidate`'s score.
    pub(super) fn contributions(
        &self,
        snapshot: &Snapshot,
        candidate: &Candidate,
        weights: &TouchpointConfig,
        config: &PipelineConfig,
    ) -> Contributions {
        Contributions {
            collaborative: weights.collaborative
                * candidate.collaborative
                * inverse(self.collaborative_max),
            content: weights.content * candidate.content * inverse(self.content_max),
            session: weights.session * candidate.session * inverse(self.session_max),
            purchased: weights.purchased * candidate.purchased * inverse(self.purchased_max),
            popularity: weights.popularity * self.popularity(snapshot, candidate.item),
            boost: boost(snapshot, candidate, config),
            substitute: candidate.substitute,
            near_dismissed: candidate.near_dismissed,
        }
    }
}

/// Merchandising boost: only for items the shopper's cart, session or earlier purchases already
/// relate to, so a promotion can reorder relevant items but never bring in an unrelated one.
fn boost(snapshot: &Snapshot, candidate: &Candidate, config: &PipelineConfig) -> f32 {
    let related = candidate.collaborative > 0.0
        || candidate.session > 0.0
        || candidate.content > 0.0
        || candidate.purchased > 0.0;
    if !related {
        return 0.0;
    }
    let attributes = snapshot.attributes();
    let promoted = if attributes.promoted(candidate.item) {
        config.promoted_boost
    } else {
        0.0
    };
    promoted + config.margin_boost * attributes.margin(candidate.item)
}

/// Whether any merchandising boost is configured.
fn merchandising_boosts(config: &PipelineConfig) -> bool {
    config.promoted_boost > 0.0 || config.margin_boost > 0.0
}

/// Fills every candidate's content signal, relevance and (undemoted) score.
pub(super) fn blend(
    snapshot: &Snapshot,
    cart: &[ItemIndex],
    candidates: &mut [Candidate],
    weights: &TouchpointConfig,
    config: &PipelineConfig,
) -> Blend {
    let dim = snapshot.embedding_dim();
    let mut centroid = vec![0f32; dim];
    if weights.content > 0.0 && dim > 0 {
        for &item in cart {
            for (c, v) in centroid.iter_mut().zip(snapshot.embedding_slice(item)) {
                *c += v;
            }
        }
        let norm = dot(&centroid, &centroid).sqrt();
        if norm > 0.0 {
            centroid.iter_mut().for_each(|c| *c /= norm);
        }
    }
    let has_centroid = centroid.iter().any(|&c| c != 0.0);
    let mut blend = Blend {
        collaborative_max: 0.0,
        session_max: 0.0,
        purchased_max: 0.0,
        content_max: 0.0,
        popularity_log_max: snapshot
            .by_popularity()
            .first()
            .map_or(0.0, |&i| snapshot.log_popularity(i)),
        centroid,
    };
    if has_centroid {
        // Similarity to the cart as a whole; a content neighbour keeps its own cosine to its
        // anchor when that is higher.
        let items: Vec<ItemIndex> = candidates.iter().map(|c| c.item).collect();
        let rows = snapshot.embedding_rows();
        each_dot(
            &blend.centroid,
            items.len(),
            |i| rows.row(items[i]),
            |_| true,
            |i, to_cart| {
                let c = &mut candidates[i];
                c.content = c.content.max(to_cart.max(0.0));
            },
        );
    }
    for c in candidates.iter_mut() {
        c.content = c.content.max(0.0);
        // Sublinear, so a staple bought every week does not drown every other purchase. Most
        // candidates were never bought: skipping `ln_1p(0)` spares them a logarithm each.
        if c.purchased != 0.0 {
            c.purchased = c.purchased.ln_1p() + config.purchased_beside_cart * c.bought_beside_cart;
        }
        blend.collaborative_max = blend.collaborative_max.max(c.collaborative);
        blend.session_max = blend.session_max.max(c.session);
        blend.purchased_max = blend.purchased_max.max(c.purchased);
        blend.content_max = blend.content_max.max(c.content);
    }
    // The same products as `Blend::contributions`, in the same order, so the explained parts
    // of a finalist that was not demoted add up to exactly its score; without that call's
    // per-item lookups.
    let (inverse_collaborative, inverse_content, inverse_session, inverse_purchased) = (
        inverse(blend.collaborative_max),
        inverse(blend.content_max),
        inverse(blend.session_max),
        inverse(blend.purchased_max),
    );
    let boosted = merchandising_boosts(config);
    for c in candidates.iter_mut() {
        c.relevance = weights.collaborative * c.collaborative * inverse_collaborative
            + weights.content * c.content * inverse_content
            + weights.session * c.session * inverse_session
            + weights.purchased * c.purchased * inverse_purchased
            + weights.popularity * blend.popularity(snapshot, c.item);
        let boost = if boosted {
            boost(snapshot, c, config)
        } else {
            0.0
        };
        c.score = final_score(c.relevance, boost);
    }
    blend
}

/// A candidate's score from its (demoted) weighted signals and its boost (never negative,
/// never NaN).
fn final_score(relevance: f32, boost: f32) -> f32 {
    let score = relevance + boost;
    if score.is_finite() {
        score.max(0.0)
    } else {
        0.0
    }
}

/// Demotes the substitutes of cart items and the close neighbours of dismissed items among
/// the `ranked` candidates, rescoring them and updating their rank keys.
fn demote(
    snapshot: &Snapshot,
    cart: &[ItemIndex],
    dismissed: &[ItemIndex],
    candidates: &mut [Candidate],
    ranked: &mut [(u64, u32)],
    weights: &TouchpointConfig,
    config: &PipelineConfig,
) {
    if snapshot.embedding_dim() == 0 || (!weights.demote_substitutes && dismissed.is_empty()) {
        return;
    }
    let items: Vec<ItemIndex> = ranked
        .iter()
        .map(|&(_, at)| candidates[at as usize].item)
        .collect();
    if weights.demote_substitutes {
        // An item the shopper has bought before is not a stranger's alternative to a cart
        // item: their own history shows they buy both (another colour of a teacup, a second
        // ink), so it keeps its buy-again score.
        mark_substitutes(snapshot, cart, &items, config.substitute_similarity, |i| {
            let candidate = &mut candidates[ranked[i].1 as usize];
            candidate.substitute = candidate.purchased == 0.0;
        });
    }
    // "Not interested" in one item says little for certain about its neighbours: demote
    // them, do not drop them.
    let rows = snapshot.embedding_rows();
    for &d in dismissed {
        each_dot(
            rows.row(d),
            items.len(),
            |i| rows.row(items[i]),
            |_| true,
            |i, similarity| {
                if similarity >= config.dismissed_neighbour_similarity {
                    candidates[ranked[i].1 as usize].near_dismissed = true;
                }
            },
        );
    }
    for (key, at) in ranked.iter_mut() {
        let c = &mut candidates[*at as usize];
        if !(c.substitute || c.near_dismissed) {
            continue;
        }
        let mut relevance = c.relevance;
        if c.substitute {
            relevance *= config.substitute_penalty;
        }
        if c.near_dismissed {
            relevance *= config.dismissed_neighbour_penalty;
        }
        c.score = final_score(relevance, boost(snapshot, c, config));
        *key = rank_key(c);
    }
}

/// Orders candidates by score, best first, ties by item index (for determinism), as one
/// integer: a non-negative `f32`'s bits sort as the number does.
fn rank_key(candidate: &Candidate) -> u64 {
    let score_bits = if candidate.score > 0.0 {
        candidate.score.to_bits()
    } else {
        0
    };
    (u64::from(score_bits) << 32) | u64::from(ItemIndex::MAX - candidate.item)
}

/// Candidates beyond this many times the shortlist's size are only checked for demotion when
/// the best-scored ones (checked first) do not already fill the shortlist for certain.
const DEMOTION_PREFIX: usize = 2;

/// Demotes substitutes and items close to dismissed ones, then returns the `size` best
/// candidates, sorted by score (ties by item index).
///
/// Demotion needs a dot product per candidate and cart item, and only matters near the top:
/// the best `2 * size` by undemoted score are checked first, and the rest only when fewer
/// than `size` of those still rank above every unchecked candidate. That is exactly the
/// result of checking everything when a demotion cannot raise a score: penalties of at most
/// 1 and no merchandising boost (with a boost, a negative relevance halved plus the boost is
/// more than the relevance plus the boost, so then every candidate is checked). Selection and
/// sorting move 16-byte (rank key, position) pairs rather than whole candidates.
pub(super) fn shortlist(
    snapshot: &Snapshot,
    cart: &[ItemIndex],
    dismissed: &[ItemIndex],
    candidates: &mut [Candidate],
    size: usize,
    weights: &TouchpointConfig,
    config: &PipelineConfig,
) -> Vec<Candidate> {
    let mut ranked: Vec<(u64, u32)> = candidates
        .iter()
        .enumerate()
        .map(|(at, c)| (rank_key(c), at as u32))
        .collect();
    // Rank keys are unique (they end in the item index), so the position never decides.
    let best_first = |a: &(u64, u32), b: &(u64, u32)| b.0.cmp(&a.0);
    let prefix = size.saturating_mul(DEMOTION_PREFIX);
    let only_lowers = config.substitute_penalty <= 1.0
        && config.dismissed_neighbour_penalty <= 1.0
        && !merchandising_boosts(config);
    if only_lowers && prefix > 0 && ranked.len() > prefix {
        ranked.select_nth_unstable_by(prefix - 1, best_first);
        let (checked, unchecked) = ranked.split_at_mut(prefix);
        let best_unchecked = unchecked.iter().map(|r| r.0).max().unwrap_or(0);
        demote(
            snapshot, cart, dismissed, candidates, checked, weights, config,
        );
        let certain = checked.iter().filter(|r| r.0 > best_unchecked).count();
        if certain >= size {
            ranked.truncate(prefix);
        } else {
            demote(
                snapshot, cart, dismissed, candidates, unchecked, weights, config,
            );
        }
    } else {
        demote(
            snapshot,
            cart,
            dismissed,
            candidates,
            &mut ranked,
            weights,
            config,
        );
    }
    if ranked.len() > size {
        if size > 0 {
            ranked.select_nth_unstable_by(size - 1, best_first);
        }
        ranked.truncate(size);
    }
    ranked.sort_unstable_by(best_first);
    ranked
        .iter()
        .map(|&(_, at)| candidates[at as usize])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModelVersion;
    use crate::model::{ItemRecord, SnapshotBuilder};

    /// A promoted substitute with a negative relevance: demoting it raises its score (half of
    /// a negative number plus the boost), so it must be checked even from the bottom.
    #[test]
    fn a_demotion_that_raises_a_boosted_score_is_not_missed() {
        let mut b = SnapshotBuilder::new(ModelVersion(1), 2, 4);
        for (id, category, promoted) in [
            ("cart", "x", false),
            ("a", "y", false),
            ("b", "y", false),
            ("twin", "x", true),
        ] {
            b.add_item(ItemRecord {
                id,
                category: Some(category),
                in_stock: true,
                promoted,
                ..Default::default()
            })
            .unwrap();
        }
        for (id, e) in [
            ("cart", [1.0, 0.0]),
            ("a", [0.0, 1.0]),
            ("b", [0.0, 1.0]),
            ("twin", [1.0, 0.0]),
        ] {
            b.add_embedding(id, &e).unwrap();
        }
        let snapshot = b.finish().unwrap();
        let config = PipelineConfig {
            promoted_boost: 0.4,
            substitute_penalty: 0.0,
            ..PipelineConfig::default()
        };
        let mut candidates: Vec<Candidate> = [(1, 0.3), (2, 0.25), (3, -0.3)]
            .into_iter()
            .map(|(item, r)| {
                let mut c = Candidate::new(item);
                c.collaborative = 1.0;
                c.relevance = r;
                c.score = final_score(r, boost(&snapshot, &c, &config));
                c
            })
            .collect();
        let list = shortlist(
            &snapshot,
            &[0],
            &[],
            &mut candidates,
            1,
            &TouchpointConfig::CHECKOUT,
            &config,
        );
        assert_eq!(list.len(), 1);
        assert_eq!(snapshot.item_id(list[0].item), "twin");
        assert!(list[0].substitute);
        assert!((list[0].score - 0.4).abs() < 1e-6);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// Checking only the best-ranked candidates for demotion first gives exactly the
        /// shortlist of checking every candidate.
        #[test]
        fn the_lazy_shortlist_is_the_shortlist_of_demoting_everything(
            directions in proptest::collection::vec(0usize..3, 40),
            relevance in proptest::collection::vec(-0.3f32..1.0, 38),
            size in 1usize..12,
            dismissed_item in proptest::option::of(2u32..40),
            demote_substitutes in proptest::bool::ANY,
            promoted_boost in proptest::sample::select(vec![0.0f32, 0.4]),
            substitute_penalty in proptest::sample::select(vec![0.5f32, 0.0]),
            bought in proptest::collection::vec(proptest::bool::weighted(0.2), 38),
        ) {
            let ids: Vec<String> = (0..40).map(|i| format!("i{i}")).collect();
            let mut b = SnapshotBuilder::new(ModelVersion(1), 2, 40);
            for (i, id) in ids.iter().enumerate() {
                b.add_item(ItemRecord {
                    id,
                    category: Some(if i % 3 == 0 { "x" } else { "y" }),
                    in_stock: true,
                    promoted: i % 4 == 0,
                    ..Default::default()
                })
                .unwrap();
            }
            let axes = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]];
            for (id, &d) in ids.iter().zip(&directions) {
                b.add_embedding(id, &axes[d]).unwrap();
            }
            let snapshot = b.finish().unwrap();
            let cart = [0, 1];
            let dismissed: Vec<ItemIndex> = dismissed_item.into_iter().collect();
            let weights = TouchpointConfig {
                demote_substitutes,
                ..TouchpointConfig::CHECKOUT
            };
            let config = PipelineConfig {
                promoted_boost,
                substitute_penalty,
                ..PipelineConfig::default()
            };
            let mut candidates: Vec<Candidate> = (2..40)
                .zip(&relevance)
                .zip(&bought)
                .map(|((item, &r), &bought)| {
                    let mut c = Candidate::new(item);
                    // Related, so a promotion applies; the relevance may be negative (EASE's
                    // negative weights), where halving it raises it. A bought-before one is
                    // never a substitute.
                    c.collaborative = 1.0;
                    c.purchased = if bought { 1.0 } else { 0.0 };
                    c.relevance = r;
                    c.score = final_score(r, boost(&snapshot, &c, &config));
                    c
                })
                .collect();
            let mut everything = candidates.clone();
            let lazy = shortlist(&snapshot, &cart, &dismissed, &mut candidates, size, &weights, &config);

            let mut ranked: Vec<(u64, u32)> =
                (0..everything.len() as u32).map(|at| (rank_key(&everything[at as usize]), at)).collect();
            demote(&snapshot, &cart, &dismissed, &mut everything, &mut ranked, &weights, &config);
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            let expected: Vec<(ItemIndex, f32)> = ranked
                .iter()
                .take(size)
                .map(|&(_, at)| (everything[at as usize].item, everything[at as usize].score))
                .collect();
            let got: Vec<(ItemIndex, f32)> = lazy.iter().map(|c| (c.item, c.score)).collect();
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
