//! The scoring pipeline: from a cart to a short list of complementary items with reasons.
//!
//! Pure: no I/O, no async, no framework types. `recommend` is the one entry point the server,
//! the evaluator and the benchmarks all call.

mod candidates;
mod explain;
mod guard;

use serde::{Deserialize, Serialize};

use crate::domain::{ItemIndex, Touchpoint};
use crate::model::Snapshot;

pub use explain::reason_text;

/// Largest `k` a request may ask for.
pub const MAX_K: usize = 50;

/// Tunables of the pipeline, from the `[pipeline]` section of the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Number of recommendations when a request does not say.
    pub default_k: usize,
    /// Most candidates scored per request (bounds the work of a request with a large cart).
    pub candidate_pool: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            default_k: 10,
            candidate_pool: 500,
        }
    }
}

/// A validated recommendation request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// Item ids in the cart, as sent.
    pub cart: Vec<String>,
    /// Items this session viewed or added, most recent last.
    pub viewed: Vec<String>,
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
    /// Popular overall (fallback).
    Popular,
}

/// The dominant signal and the cart or session item it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    /// The signal.
    pub kind: ReasonKind,
    /// The item that contributed most, when the signal has one.
    pub anchor: Option<ItemIndex>,
}

/// Per-signal contributions to a score, reported with `explain=true`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Contributions {
    /// From co-purchase with the cart.
    pub collaborative: f32,
    /// From overall popularity.
    pub popularity: f32,
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The item.
    pub item: ItemIndex,
    /// Score in [0, 1], higher is better.
    pub score: f32,
    /// Why it is recommended.
    pub reason: Reason,
    /// Signal contributions, when asked for.
    pub contributions: Option<Contributions>,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recommendations<'r> {
    /// Recommended items, best first; at most `k`.
    pub items: Vec<Recommendation>,
    /// Cart ids the model does not know.
    pub unknown_items: Vec<&'r str>,
}

/// Recommends up to `request.k` items for `request` from `snapshot`.
pub fn recommend<'r>(
    snapshot: &Snapshot,
    request: &'r Request,
    config: &PipelineConfig,
) -> Recommendations<'r> {
    let mut unknown_items = Vec::new();
    let mut cart: Vec<ItemIndex> = Vec::with_capacity(request.cart.len());
    for id in &request.cart {
        match snapshot.index_of(id) {
            Some(index) if !cart.contains(&index) => cart.push(index),
            Some(_) => {}
            None if !unknown_items.contains(&id.as_str()) => unknown_items.push(id.as_str()),
            None => {}
        }
    }
    let eligibility = guard::Eligibility::new(snapshot, request, &cart);
    let mut pool = candidates::collaborative(snapshot, &cart, config.candidate_pool);
    pool.retain(|c| eligibility.allows(c.item));

    let k = request.k.clamp(1, MAX_K);
    pool.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
    pool.truncate(k);
    let top = pool.first().map_or(1.0, |c| c.score).max(f32::MIN_POSITIVE);
    let mut items: Vec<Recommendation> = pool
        .iter()
        .map(|c| Recommendation {
            item: c.item,
            score: c.score / top,
            reason: Reason {
                kind: ReasonKind::BoughtTogether,
                anchor: Some(c.anchor),
            },
            contributions: request.explain.then_some(Contributions {
                collaborative: c.score / top,
                popularity: 0.0,
            }),
        })
        .collect();

    if items.len() < k {
        let most_popular = snapshot
            .by_popularity()
            .first()
            .map_or(1.0, |&i| snapshot.popularity(i))
            .max(f32::MIN_POSITIVE);
        for &item in snapshot.by_popularity() {
            if items.len() == k {
                break;
            }
            if eligibility.allows(item) && !items.iter().any(|r| r.item == item) {
                let score = snapshot.popularity(item) / most_popular;
                items.push(Recommendation {
                    item,
                    score,
                    reason: Reason {
                        kind: ReasonKind::Popular,
                        anchor: None,
                    },
                    contributions: request.explain.then_some(Contributions {
                        collaborative: 0.0,
                        popularity: score,
                    }),
                });
            }
        }
    }
    Recommendations {
        items,
        unknown_items,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::ModelVersion;
    use crate::model::{ItemRecord, SnapshotBuilder};

    /// Six items: a bag, its strong complement, a weak one, an expensive one, an out-of-stock
    /// one and a popular unrelated one.
    pub(crate) fn small_snapshot() -> Snapshot {
        let mut b = SnapshotBuilder::new(ModelVersion(1), 0, 6);
        for (id, category, price, in_stock, popularity) in [
            ("bag", "bags", 2.0, true, 5.0),
            ("cable", "cables", 1.0, true, 2.0),
            ("strap", "bags", 3.0, true, 1.0),
            ("lens", "optics", 300.0, true, 1.0),
            ("ink", "office", 1.0, false, 8.0),
            ("mug", "kitchen", 4.0, true, 9.0),
        ] {
            b.add_item(ItemRecord {
                id,
                popularity,
                title: Some(id),
                category: Some(category),
                price: Some(price),
                in_stock,
            })
            .unwrap();
        }
        for (a, o, s) in [
            ("bag", "cable", 0.9),
            ("bag", "strap", 0.4),
            ("bag", "lens", 0.8),
            ("bag", "ink", 0.95),
            ("cable", "bag", 0.9),
            ("strap", "cable", 0.7),
        ] {
            b.add_pair(a, o, s).unwrap();
        }
        b.finish().unwrap()
    }

    fn request(cart: &[&str], k: usize) -> Request {
        Request {
            cart: cart.iter().map(|s| s.to_string()).collect(),
            k,
            personalize: true,
            ..Default::default()
        }
    }

    fn ids(s: &Snapshot, r: &Recommendations<'_>) -> Vec<String> {
        r.items
            .iter()
            .map(|i| s.item_id(i.item).to_string())
            .collect()
    }

    #[test]
    fn co_purchase_neighbours_come_first_then_popular_items() {
        let s = small_snapshot();
        let req = request(&["bag"], 4);
        let r = recommend(&s, &req, &PipelineConfig::default());
        assert_eq!(ids(&s, &r), ["cable", "lens", "strap", "mug"]);
        assert_eq!(r.items[0].score, 1.0);
        assert_eq!(r.items[0].reason.kind, ReasonKind::BoughtTogether);
        assert_eq!(r.items[0].reason.anchor, s.index_of("bag"));
        assert_eq!(r.items[3].reason.kind, ReasonKind::Popular);
    }

    #[test]
    fn cart_items_are_never_recommended() {
        let s = small_snapshot();
        let req = request(&["bag", "cable"], 10);
        let r = recommend(&s, &req, &PipelineConfig::default());
        let got = ids(&s, &r);
        assert!(!got.contains(&"bag".to_string()) && !got.contains(&"cable".to_string()));
        assert_eq!(got[0], "strap", "strap is a neighbour of both");
    }

    #[test]
    fn unknown_cart_items_are_reported_once_and_do_not_fail() {
        let s = small_snapshot();
        let req = request(&["nope", "bag", "nope"], 2);
        let r = recommend(&s, &req, &PipelineConfig::default());
        assert_eq!(r.unknown_items, ["nope"]);
        assert_eq!(r.items.len(), 2);
    }

    #[test]
    fn an_empty_cart_gets_popular_in_stock_items() {
        let s = small_snapshot();
        let req = request(&[], 2);
        let r = recommend(&s, &req, &PipelineConfig::default());
        assert_eq!(ids(&s, &r), ["mug", "bag"], "ink is out of stock");
        assert!(r.items.iter().all(|i| i.reason.kind == ReasonKind::Popular));
    }

    #[test]
    fn price_budget_and_excluded_categories_are_respected() {
        let s = small_snapshot();
        let mut req = request(&["bag"], 10);
        req.max_price = Some(2.5);
        req.exclude_categories = vec!["cables".into(), "no-such-category".into()];
        let r = recommend(&s, &req, &PipelineConfig::default());
        assert_eq!(ids(&s, &r), Vec::<String>::new());
    }

    #[test]
    fn explain_adds_contributions() {
        let s = small_snapshot();
        let mut req = request(&["bag"], 1);
        req.explain = true;
        let r = recommend(&s, &req, &PipelineConfig::default());
        assert_eq!(
            r.items[0].contributions,
            Some(Contributions {
                collaborative: 1.0,
                popularity: 0.0
            })
        );
    }
}
