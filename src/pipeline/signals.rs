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
            popularity: weights.popularity * self.popularity(snapshot, candidate.item),
            boost: boost(snapshot, candidate, config),
            substitute: candidate.substitute,
            near_dismissed: candidate.near_dismissed,
        }
    }
}

/// Merchandising boost: only for items the shopper's cart or session already relates to, so a
/// promotion can reorder relevant items but never bring in an unrelated one.
fn boost(snapshot: &Snapshot, candidate: &Candidate, config: &PipelineConfig) -> f32 {
    let related =
        candidate.collaborative > 0.0 || candidate.session > 0.0 || candidate.content > 0.0;
    if !related {
        return 0.0;
    }
    let catalogue = snapshot.catalogue();
    let promoted = if catalogue.promoted(candidate.item) {
        config.promoted_boost
    } else {
        0.0
    };
    promoted + config.margin_boost * catalogue.margin(candidate.item)
}

/// Fills every candidate's content signal and blended score.
pub(super) fn blend(
    snapshot: &Snapshot,
    cart: &[ItemIndex],
    dismissed: &[ItemIndex],
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
        content_max: 0.0,
        popularity_log_max: snapshot
            .by_popularity()
            .first()
            .map_or(0.0, |&i| snapshot.log_popularity(i)),
        centroid,
    };
    let items: Vec<ItemIndex> = candidates.iter().map(|c| c.item).collect();
    if has_centroid {
        // Similarity to the cart as a whole; a content neighbour keeps its own cosine to its
        // anchor when that is higher.
        each_dot(
            &blend.centroid,
            items.len(),
            |i| snapshot.embedding_slice(items[i]),
            |_| true,
            |i, to_cart| {
                let c = &mut candidates[i];
                c.content = c.content.max(to_cart.max(0.0));
            },
        );
    }
    for c in candidates.iter_mut() {
        c.content = c.content.max(0.0);
        blend.collaborative_max = blend.collaborative_max.max(c.collaborative);
        blend.session_max = blend.session_max.max(c.session);
        blend.content_max = blend.content_max.max(c.content);
    }
    if weights.demote_substitutes {
        mark_substitutes(snapshot, cart, &items, config.substitute_similarity, |i| {
            candidates[i].substitute = true
        });
    }
    if snapshot.embedding_dim() > 0 {
        // "Not interested" in one item says little for certain about its neighbours: demote
        // them, do not drop them.
        for &d in dismissed {
            each_dot(
                snapshot.embedding_slice(d),
                items.len(),
                |i| snapshot.embedding_slice(items[i]),
                |_| true,
                |i, similarity| {
                    if similarity >= config.dismissed_neighbour_similarity {
                        candidates[i].near_dismissed = true;
                    }
                },
            );
        }
    }
    for c in candidates.iter_mut() {
        let parts = blend.contributions(snapshot, c, weights, config);
        let mut score = parts.collaborative + parts.content + parts.session + parts.popularity;
        if c.substitute {
            score *= config.substitute_penalty;
        }
        if c.near_dismissed {
            score *= config.dismissed_neighbour_penalty;
        }
        score += parts.boost;
        c.score = if score.is_finite() {
            score.max(0.0)
        } else {
            0.0
        };
    }
    blend
}

/// Keeps the `size` best candidates, sorted by score (ties by item index, for determinism).
pub(super) fn shortlist(candidates: &mut Vec<Candidate>, size: usize) -> &[Candidate] {
    let order =
        |a: &Candidate, b: &Candidate| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item));
    if candidates.len() > size {
        candidates.select_nth_unstable_by(size - 1, order);
        candidates.truncate(size);
    }
    candidates.sort_unstable_by(order);
    candidates
}
