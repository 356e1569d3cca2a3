//! The orchestrator: one request through the stages (candidates, signals, guard rails, DPP
//! diversity, explain), with the per-thread buffers that let a request reuse the memory of the
//! one before.

use super::{
    candidates, dpp, explain, guard, signals, CapView, PipelineConfig, Recommendation,
    Recommendations, Request, TouchpointConfig, MAX_K, MAX_PURCHASED_ITEMS,
};
use crate::domain::ItemIndex;
use crate::model::Snapshot;

thread_local! {
    /// The DPP's buffers, grown once per thread and reused by every request it serves.
    static DPP_SCRATCH: std::cell::RefCell<dpp::DppScratch> =
        std::cell::RefCell::new(dpp::DppScratch::default());
    /// The candidate pool's item-to-slot table, likewise (one `u32` per item of the model).
    static POSITIONS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The candidate buffer, likewise: a request's pool is tens of kilobytes, and allocating
    /// it afresh each time makes the allocator fetch and zero new pages.
    static CANDIDATES: std::cell::RefCell<Vec<candidates::Candidate>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Recommends up to `request.k` items for `request` from `snapshot`, leaving out whatever
/// `caps` says this shopper must not see.
pub fn recommend<'r>(
    snapshot: &Snapshot,
    request: &'r Request,
    config: &PipelineConfig,
    caps: &dyn CapView,
) -> Recommendations<'r> {
    let (cart, unknown_items) = resolve_cart(snapshot, &request.cart);
    let weights = config.touchpoint(request.touchpoint);
    // Most recent last: the newest view weighs 1, each older one decays by the half-life.
    let viewed = if request.personalize && weights.session > 0.0 {
        recent_views(snapshot, &request.viewed, config.session_half_life)
    } else {
        Vec::new()
    };
    let (purchased, bought_beside) = if request.personalize && weights.purchased > 0.0 {
        let newest = request.purchased.len().saturating_sub(MAX_PURCHASED_ITEMS);
        let resolved: Vec<Option<ItemIndex>> = request.purchased[newest..]
            .iter()
            .map(|id| snapshot.index_of(id))
            .collect();
        let beside = if config.purchased_beside_cart > 0.0 {
            bought_beside_cart(&resolved, &cart, config.purchased_beside_lines)
        } else {
            Vec::new()
        };
        (
            earlier_purchases(&resolved, config.purchased_half_life),
            beside,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let request_weights = TouchpointConfig {
        purchased: if config.restock_scaling {
            weights.purchased * restock_share(&cart, &purchased)
        } else {
            weights.purchased
        },
        ..*weights
    };
    let weights = &request_weights;
    let k = request.k.clamp(1, MAX_K);
    let eligibility = guard::Eligibility::new(snapshot, request, &cart, caps);
    let buffer = CANDIDATES.with_borrow_mut(std::mem::take);
    let mut candidates = POSITIONS.with_borrow_mut(|positions| {
        let mut pool =
            candidates::CandidatePool::new(&eligibility, config.candidate_pool, positions, buffer);
        if weights.collaborative > 0.0 {
            pool.add_collaborative(snapshot, &cart, config.neighbours_per_anchor);
        }
        if weights.content > 0.0 {
            pool.add_content(snapshot, &cart, config.content_neighbours_per_anchor);
        }
        pool.add_session(snapshot, &viewed, config.neighbours_per_anchor);
        pool.add_purchased(&purchased);
        pool.add_bought_beside_cart(&bought_beside);
        // The fallback, for carts whose neighbours cannot fill the DPP's pool: with a full
        // pool, an item that is only popular never made a list on the Online Retail data.
        if pool.len() < config.diversity_pool.max(k) {
            pool.add_popular(snapshot, config.popular_candidates.max(k));
        }
        pool.apply_negative_weights(snapshot, &cart, &viewed, config.neighbours_per_anchor);
        pool.finish()
    });

    let blended = signals::blend(snapshot, &cart, &mut candidates, weights, config);
    let shortlist = signals::shortlist(
        snapshot,
        &cart,
        caps.dismissed(),
        &mut candidates,
        config.diversity_pool.max(k),
        weights,
        config,
    );
    CANDIDATES.with_borrow_mut(|buffer| *buffer = candidates);
    let top = shortlist.first().map_or(0.0, |c| c.score);
    let quality: Vec<f32> = shortlist
        .iter()
        .map(|c| {
            if top > 0.0 {
                (c.score / top).clamp(0.0, 1.0)
            } else {
                0.0
            }
        })
        .collect();
    // The DPP only chooses among candidates within `diversity_min_quality` of the best, so
    // a weakly related item that is merely unlike the rest never displaces a relevant one;
    // the list is filled by score from below that floor when it is short.
    let eligible = quality.partition_point(|&q| q >= config.diversity_min_quality);
    let mut picks = Vec::with_capacity(k);
    let diversity = snapshot.diversity_rows();
    DPP_SCRATCH.with_borrow_mut(|scratch| {
        dpp::select(
            &quality[..eligible],
            |i| diversity.row(shortlist[i].item),
            k,
            weights.theta,
            scratch,
            &mut picks,
        )
    });
    picks.extend((eligible..quality.len()).take(k - picks.len()));
    let items = picks
        .into_iter()
        .map(|i| {
            let candidate = &shortlist[i];
            let contributions = blended.contributions(snapshot, candidate, weights, config);
            Recommendation {
                item: candidate.item,
                score: quality[i],
                reason: explain::reason(snapshot, &cart, candidate, &contributions),
                contributions: request.explain.then_some(contributions),
            }
        })
        .collect();
    Recommendations {
        items,
        unknown_items,
    }
}

/// Carts up to this size are deduplicated by scanning what was kept so far.
const SCANNED_CART: usize = 32;

/// The cart's known items, each once in the order first given, and its unknown ids, each once.
/// A wholesale cart of hundreds of lines is deduplicated through hash sets, so its cost stays
/// linear in its length.
fn resolve_cart<'r>(snapshot: &Snapshot, ids: &'r [String]) -> (Vec<ItemIndex>, Vec<&'r str>) {
    let mut cart: Vec<ItemIndex> = Vec::with_capacity(ids.len());
    let mut unknown: Vec<&str> = Vec::new();
    if ids.len() <= SCANNED_CART {
        for id in ids {
            match snapshot.index_of(id) {
                Some(index) if !cart.contains(&index) => cart.push(index),
                Some(_) => {}
                None if !unknown.contains(&id.as_str()) => unknown.push(id.as_str()),
                None => {}
            }
        }
    } else {
        let mut seen_items = foldhash::HashSet::default();
        let mut seen_unknown = foldhash::HashSet::default();
        for id in ids {
            match snapshot.index_of(id) {
                Some(index) => {
                    if seen_items.insert(index) {
                        cart.push(index);
                    }
                }
                None => {
                    if seen_unknown.insert(id.as_str()) {
                        unknown.push(id.as_str());
                    }
                }
            }
        }
    }
    (cart, unknown)
}

/// How much the cart looks like a restock: the share of its items the shopper bought before,
/// smoothed towards one half (`(bought + 1) / (items + 2)`), so one repeated item in a
/// one-item cart is evidence, not certainty.
fn restock_share(cart: &[ItemIndex], purchased: &[(ItemIndex, f32)]) -> f32 {
    if purchased.is_empty() {
        return 1.0 / (cart.len() + 2) as f32;
    }
    // Sorted once and searched: up to 2,000 cart items against up to 200 purchases one by one
    // would be more work than the rest of the request.
    let mut bought_items: Vec<ItemIndex> = purchased.iter().map(|&(item, _)| item).collect();
    bought_items.sort_unstable();
    let bought = cart
        .iter()
        .filter(|item| bought_items.binary_search(item).is_ok())
        .count();
    (bought + 1) as f32 / (cart.len() + 2) as f32
}

/// The known items of `viewed` (sent most recent last), in the order sent, each with its
/// weight: the newest weighs 1, each older one decays by `half_life`. Views whose weight has
/// decayed to nothing are left out: with no weight they carry no signal, and their neighbours
/// would still take places in the candidate pool.
fn recent_views(snapshot: &Snapshot, viewed: &[String], half_life: f32) -> Vec<(ItemIndex, f32)> {
    let newest = viewed.len().saturating_sub(1);
    viewed
        .iter()
        .enumerate()
        .filter_map(|(position, id)| {
            let age = (newest - position) as f32;
            let weight = 0.5f32.powf(age / half_life);
            snapshot
                .index_of(id)
                .filter(|_| weight > 0.0)
                .map(|item| (item, weight))
        })
        .collect()
}

/// The known items of `purchased` (resolved, sent most recent last), newest first, each
/// purchase with its weight: the newest weighs 1, each older one decays by `half_life`. An
/// item bought again appears again; the candidate pool adds its purchases up and the blend
/// takes `ln(1 + sum)`. Purchases whose weight has decayed to nothing (a tiny half-life) are
/// left out, as in [`recent_views`].
fn earlier_purchases(purchased: &[Option<ItemIndex>], half_life: f32) -> Vec<(ItemIndex, f32)> {
    let decay = 0.5f32.powf(1.0 / half_life);
    let mut weight = 1.0;
    let mut items = Vec::with_capacity(purchased.len());
    for item in purchased.iter().rev() {
        if weight <= 0.0 {
            break;
        }
        if let Some(item) = *item {
            items.push((item, weight));
        }
        weight *= decay;
    }
    items
}

/// Each earlier purchase bought within `lines` places of an item now in the cart, in
/// `purchased` as sent (an order's lines in their order), with how near: `1 / distance`
/// summed over such places, scaled so the nearest item is 1. A shop's regulars restock what
/// they bought together before, and an order lists what belongs together side by side.
fn bought_beside_cart(
    purchased: &[Option<ItemIndex>],
    cart: &[ItemIndex],
    lines: usize,
) -> Vec<(ItemIndex, f32)> {
    let mut beside: Vec<(ItemIndex, f32)> = Vec::new();
    if lines == 0 || cart.is_empty() {
        return beside;
    }
    // Sorted once and searched, as in `restock_share`: up to 2,000 cart items against up to 200
    // purchases, each looked at once per place in its window.
    let mut sorted_cart = cart.to_vec();
    sorted_cart.sort_unstable();
    let in_cart =
        |item: &Option<ItemIndex>| item.is_some_and(|i| sorted_cart.binary_search(&i).is_ok());
    for (at, _) in purchased.iter().enumerate().filter(|(_, i)| in_cart(i)) {
        let from = at.saturating_sub(lines);
        let to = at.saturating_add(lines).min(purchased.len() - 1);
        for (near, item) in purchased[from..=to].iter().enumerate() {
            let distance = (from + near).abs_diff(at);
            if let (Some(item), false) = (*item, distance == 0 || in_cart(item)) {
                beside.push((item, 1.0 / distance as f32));
            }
        }
    }
    beside.sort_unstable_by_key(|&(item, _)| item);
    beside.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 += later.1;
        }
        same
    });
    let nearest = beside.iter().map(|&(_, c)| c).fold(0.0, f32::max);
    if nearest > 0.0 {
        beside.iter_mut().for_each(|(_, c)| *c /= nearest);
    }
    beside
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModelVersion;
    use crate::model::{ItemRecord, SnapshotBuilder};
    use crate::pipeline::fixtures::small_snapshot;
    use crate::pipeline::{CappedItems, NoCaps, ReasonKind, MAX_K};

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
        let r = recommend(&s, &req, &PipelineConfig::default(), &NoCaps);
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
        let r = recommend(&s, &req, &PipelineConfig::default(), &NoCaps);
        let got = ids(&s, &r);
        assert!(!got.contains(&"bag".to_string()) && !got.contains(&"cable".to_string()));
        assert_eq!(got[..2], ["lens", "strap"], "neighbours of bag, best first");
    }

    #[test]
    fn unknown_cart_items_are_reported_once_and_do_not_fail() {
        let s = small_snapshot();
        let req = request(&["nope", "bag", "nope"], 2);
        let r = recommend(&s, &req, &PipelineConfig::default(), &NoCaps);
        assert_eq!(r.unknown_items, ["nope"]);
        assert_eq!(r.items.len(), 2);
    }

    #[test]
    fn a_large_cart_is_deduplicated_like_a_small_one() {
        let s = small_snapshot();
        let mut ids: Vec<String> = (0..SCANNED_CART).map(|i| format!("unknown-{i}")).collect();
        ids.extend(["bag", "unknown-3", "bag", "mug"].map(String::from));
        let (cart, unknown) = resolve_cart(&s, &ids);
        assert_eq!(
            cart,
            [s.index_of("bag").unwrap(), s.index_of("mug").unwrap()]
        );
        assert_eq!(unknown.len(), SCANNED_CART);
        assert_eq!(unknown[3], "unknown-3");
        let (small_cart, small_unknown) = resolve_cart(&s, &ids[SCANNED_CART - 1..]);
        assert_eq!(small_cart, cart);
        assert_eq!(
            small_unknown,
            [format!("unknown-{}", SCANNED_CART - 1), "unknown-3".into()]
        );
    }

    #[test]
    fn an_empty_cart_gets_popular_in_stock_items() {
        let s = small_snapshot();
        let req = request(&[], 2);
        let r = recommend(&s, &req, &PipelineConfig::default(), &NoCaps);
        assert_eq!(ids(&s, &r), ["mug", "bag"], "ink is out of stock");
        assert!(r.items.iter().all(|i| i.reason.kind == ReasonKind::Popular));
    }

    #[test]
    fn price_budget_and_excluded_categories_are_respected() {
        let s = small_snapshot();
        let mut req = request(&["bag"], 10);
        req.max_price = Some(2.5);
        req.exclude_categories = vec!["cables".into(), "no-such-category".into()];
        let r = recommend(&s, &req, &PipelineConfig::default(), &NoCaps);
        assert_eq!(ids(&s, &r), Vec::<String>::new());
    }

    #[test]
    fn views_and_purchases_decayed_to_nothing_are_left_out() {
        let s = small_snapshot();
        let sent = ["mug", "cable", "bag"].map(String::from);
        let index = |id: &str| s.index_of(id).unwrap();
        // A half-life this small underflows every weight but the newest to zero.
        assert_eq!(recent_views(&s, &sent, 1e-30), vec![(index("bag"), 1.0)]);
        let resolved: Vec<Option<ItemIndex>> = sent.iter().map(|id| s.index_of(id)).collect();
        assert_eq!(
            earlier_purchases(&resolved, 1e-30),
            vec![(index("bag"), 1.0)]
        );
        // An ordinary one keeps them all, decayed.
        let views = recent_views(&s, &sent, 1.0);
        assert_eq!(views.len(), 3);
        assert_eq!(views[0], (index("mug"), 0.25));
        let purchases = earlier_purchases(&resolved, 1.0);
        assert_eq!(purchases.len(), 3);
        assert_eq!(purchases[2], (index("mug"), 0.25));
    }

    #[test]
    fn earlier_purchases_come_back_as_bought_before_unless_opted_out() {
        let s = small_snapshot();
        let mut req = request(&["bag"], 4);
        req.purchased = ["mug", "ink", "bag", "mug", "unknown"]
            .map(String::from)
            .to_vec();
        req.explain = true;
        let r = recommend(&s, &req, &PipelineConfig::default(), &NoCaps);
        let got = ids(&s, &r);
        let mug = got
            .iter()
            .position(|id| id == "mug")
            .expect("mug is listed");
        assert_eq!(r.items[mug].reason.kind, ReasonKind::BoughtBefore);
        assert_eq!(r.items[mug].reason.anchor, None);
        assert!(r.items[mug].contributions.unwrap().purchased > 0.0);
        assert!(
            !got.contains(&"bag".to_string()) && !got.contains(&"ink".to_string()),
            "cart and out-of-stock items stay out however often they were bought: {got:?}"
        );

        req.personalize = false;
        let r = recommend(&s, &req, &PipelineConfig::default(), &NoCaps);
        assert!(r
            .items
            .iter()
            .all(|i| i.reason.kind != ReasonKind::BoughtBefore
                && i.contributions.unwrap().purchased == 0.0));
    }

    #[test]
    fn purchases_near_a_cart_item_count_by_closeness_within_the_window() {
        let (bag, cable, strap, mug, lens) = (0, 1, 2, 5, 3);
        // Sent oldest first: mug and strap beside the bag, cable two away, lens three away (an
        // unknown item still takes its place), ink four away.
        let ink = 4;
        let purchased = [
            Some(cable),
            Some(mug),
            Some(bag),
            Some(strap),
            None,
            Some(lens),
            Some(ink),
        ];
        let beside = bought_beside_cart(&purchased, &[bag], 3);
        assert_eq!(
            beside,
            vec![(cable, 0.5), (strap, 1.0), (lens, 1.0 / 3.0), (mug, 1.0)]
        );
        // Two cart places add up; the nearest sum is scaled to 1.
        let purchased = [Some(mug), Some(bag), Some(strap), Some(bag)];
        let beside = bought_beside_cart(&purchased, &[bag], 1);
        assert_eq!(beside, vec![(strap, 1.0), (mug, 0.5)]);
        // Cart items never count as beside another cart item; no window, no signal.
        assert_eq!(
            bought_beside_cart(&[Some(bag), Some(cable)], &[bag, cable], 3),
            vec![]
        );
        assert_eq!(
            bought_beside_cart(&[Some(bag), Some(mug)], &[bag], 0),
            vec![]
        );
        // A window wider than any list reaches its ends without overflowing.
        assert_eq!(
            bought_beside_cart(&[Some(bag), Some(mug)], &[bag], usize::MAX),
            vec![(mug, 1.0)]
        );
    }

    #[test]
    fn a_purchase_made_beside_a_cart_item_outranks_one_bought_more_often() {
        let s = small_snapshot();
        let mut req = request(&["cable"], 6);
        // The strap was bought once, on the line after the cable; the mug four times, apart.
        req.purchased = ["mug", "mug", "mug", "mug", "bag", "cable", "strap"]
            .map(String::from)
            .to_vec();
        req.explain = true;
        let purchased = |r: &Recommendations<'_>, id: &str| {
            r.items
                .iter()
                .find(|i| s.item_id(i.item) == id)
                .map_or(0.0, |i| i.contributions.unwrap().purchased)
        };
        let off = recommend(&s, &req, &PipelineConfig::default(), &NoCaps);
        assert!(purchased(&off, "mug") > purchased(&off, "strap"));
        let config = PipelineConfig {
            purchased_beside_cart: 2.0,
            purchased_beside_lines: 1,
            ..PipelineConfig::default()
        };
        let on = recommend(&s, &req, &config, &NoCaps);
        assert!(purchased(&on, "strap") > purchased(&on, "mug"));
    }

    #[test]
    fn only_the_newest_purchases_are_read_of_a_long_history() {
        let s = small_snapshot();
        let mut long = request(&["cable"], 6);
        // Thousands of old purchases of the mug, then the newest ones.
        let newest: Vec<String> = ["strap", "bag"]
            .iter()
            .cycle()
            .take(MAX_PURCHASED_ITEMS)
            .map(|id| id.to_string())
            .collect();
        long.purchased = std::iter::repeat_n("mug".to_string(), 5 * MAX_PURCHASED_ITEMS)
            .chain(newest.iter().cloned())
            .collect();
        long.explain = true;
        let mut short = long.clone();
        short.purchased = newest;
        let config = PipelineConfig::default();
        let listed = |r: &Recommendations<'_>| -> Vec<(ItemIndex, f32)> {
            r.items.iter().map(|i| (i.item, i.score)).collect()
        };
        let from_long = recommend(&s, &long, &config, &NoCaps);
        assert_eq!(
            listed(&from_long),
            listed(&recommend(&s, &short, &config, &NoCaps))
        );
        let mug = from_long.items.iter().find(|i| s.item_id(i.item) == "mug");
        assert!(mug.is_none_or(|i| i.contributions.unwrap().purchased == 0.0));
    }

    #[test]
    fn a_cart_of_repeat_purchases_weighs_the_shoppers_history_more() {
        let s = small_snapshot();
        // The mug is the only bought candidate (the bag is in the cart), so its normalised
        // purchase signal is 1 and its contribution is the request's buy-again weight.
        let mug_weight = |purchased: &[&str], restock_scaling: bool| {
            let mut req = request(&["bag"], 6);
            req.purchased = purchased.iter().map(|id| id.to_string()).collect();
            req.explain = true;
            let config = PipelineConfig {
                restock_scaling,
                ..PipelineConfig::default()
            };
            let r = recommend(&s, &req, &config, &NoCaps);
            let mug = r.items.iter().find(|i| s.item_id(i.item) == "mug");
            mug.expect("mug is listed").contributions.unwrap().purchased
        };
        let weight = PipelineConfig::default().checkout.purchased;
        // One cart item: (bought before + 1) / (1 + 2).
        assert!((mug_weight(&["mug"], true) - weight / 3.0).abs() < 1e-6);
        assert!((mug_weight(&["bag", "mug"], true) - weight * 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(mug_weight(&["mug"], false), weight);
        assert_eq!(mug_weight(&["bag", "mug"], false), weight);
    }

    #[test]
    fn a_substitute_the_shopper_bought_before_is_not_demoted() {
        let mut b = SnapshotBuilder::new(ModelVersion(1), 2, 3);
        for (id, category, embedding) in [
            ("camera", "cameras", [1.0, 0.0]),
            ("camera-2", "cameras", [1.0, 0.0]),
            ("strap", "straps", [0.0, 1.0]),
        ] {
            b.add_item(ItemRecord {
                id,
                popularity: 1.0,
                title: Some(id),
                category: Some(category),
                in_stock: true,
                ..Default::default()
            })
            .unwrap();
            b.add_embedding(id, &embedding).unwrap();
        }
        for (other, score) in [("camera-2", 0.9), ("strap", 0.8)] {
            b.add_pair("camera", other, score).unwrap();
        }
        let s = b.finish().unwrap();
        let mut req = request(&["camera"], 2);
        req.explain = true;
        let demoted = |r: &Recommendations<'_>| {
            let twin = r.items.iter().find(|i| s.item_id(i.item) == "camera-2");
            twin.expect("camera-2 is listed")
                .contributions
                .unwrap()
                .substitute
        };
        let r = recommend(&s, &req, &PipelineConfig::default(), &NoCaps);
        assert!(demoted(&r), "a second camera for a camera");
        assert_eq!(ids(&s, &r), ["strap", "camera-2"]);
        req.purchased = vec!["camera-2".into()];
        let r = recommend(&s, &req, &PipelineConfig::default(), &NoCaps);
        assert!(!demoted(&r), "the shopper's own history says they buy both");
        assert_eq!(ids(&s, &r), ["camera-2", "strap"]);
    }

    #[test]
    fn explain_adds_contributions() {
        let s = small_snapshot();
        let mut req = request(&["bag"], 1);
        req.explain = true;
        let r = recommend(&s, &req, &PipelineConfig::default(), &NoCaps);
        let parts = r.items[0].contributions.unwrap();
        assert_eq!(parts.collaborative, 1.0);
        assert!(parts.popularity > 0.0 && parts.popularity < 0.02);
        assert_eq!(
            (parts.content, parts.session, parts.substitute),
            (0.0, 0.0, false)
        );
    }

    /// Items "cart", "a", "a-twin" and "b" (2-dimensional embeddings, `diversity_dim`
    /// diversity ones), the last three co-bought with "cart" with `scores`.
    fn cart_and_three(diversity_dim: usize, scores: [f32; 3]) -> SnapshotBuilder {
        let mut b = SnapshotBuilder::new(ModelVersion(1), 2, 4).with_diversity_dim(diversity_dim);
        for id in ["cart", "a", "a-twin", "b"] {
            b.add_item(ItemRecord {
                id,
                popularity: 1.0,
                title: Some(id),
                in_stock: true,
                ..Default::default()
            })
            .unwrap();
        }
        for (other, score) in ["a", "a-twin", "b"].into_iter().zip(scores) {
            b.add_pair("cart", other, score).unwrap();
        }
        b
    }

    #[test]
    fn items_close_to_a_dismissed_one_are_demoted_and_it_is_dropped() {
        let mut b = cart_and_three(0, [0.9, 0.8, 0.7]);
        for (id, e) in [
            ("cart", [0.0, 1.0]),
            ("a", [1.0, 0.0]),
            ("a-twin", [1.0, 0.0]),
            ("b", [0.0, 1.0]),
        ] {
            b.add_embedding(id, &e).unwrap();
        }
        let s = b.finish().unwrap();
        let mut config = PipelineConfig::default();
        config.checkout.theta = 1.0;
        config.checkout.content = 0.0;
        let req = request(&["cart"], 3);
        let dismissed = CappedItems::with_dismissed(Vec::new(), vec![s.index_of("a").unwrap()]);
        let r = recommend(&s, &req, &config, &dismissed);
        assert_eq!(
            ids(&s, &r),
            ["b", "a-twin"],
            "a is dropped, its twin demoted below b"
        );
        assert!(r.items[1].reason.anchor.is_some());
    }

    #[test]
    fn the_dpp_compares_diversity_embeddings_when_the_version_has_them() {
        // Every item has the same title embedding; a and a-twin are bought in the same
        // contexts (same diversity vector), b in others.
        let build = |with_diversity: bool| {
            let mut b = cart_and_three(if with_diversity { 2 } else { 0 }, [0.9, 0.85, 0.6]);
            for id in ["cart", "a", "a-twin", "b"] {
                b.add_embedding(id, &[1.0, 0.0]).unwrap();
            }
            if with_diversity {
                for (id, e) in [
                    ("cart", [1.0, 1.0]),
                    ("a", [1.0, 0.0]),
                    ("a-twin", [1.0, 0.0]),
                    ("b", [0.0, 1.0]),
                ] {
                    b.add_diversity_embedding(id, &e).unwrap();
                }
            }
            b.finish().unwrap()
        };
        let mut config = PipelineConfig::default();
        config.checkout.theta = 0.5;
        config.checkout.content = 0.0;
        config.checkout.demote_substitutes = false;
        let req = request(&["cart"], 2);
        let titles_only = build(false);
        let r = recommend(&titles_only, &req, &config, &NoCaps);
        assert_eq!(
            ids(&titles_only, &r),
            ["a", "a-twin"],
            "all alike: by score"
        );
        let with_diversity = build(true);
        assert_eq!(with_diversity.diversity_dim(), 2);
        let r = recommend(&with_diversity, &req, &config, &NoCaps);
        assert_eq!(ids(&with_diversity, &r), ["a", "b"], "a-twin repeats a");
        // b scores two thirds of a: under a higher floor it may not be picked for diversity.
        config.diversity_min_quality = 0.7;
        let r = recommend(&with_diversity, &req, &config, &NoCaps);
        assert_eq!(ids(&with_diversity, &r), ["a", "a-twin"]);
        // With the floor above every candidate the list is filled by score.
        config.diversity_min_quality = 1.0;
        let r = recommend(&with_diversity, &req, &config, &NoCaps);
        assert_eq!(ids(&with_diversity, &r), ["a", "a-twin"]);
    }

    /// A random model: categories, prices (some unknown), stock, product groups, promoted
    /// items and margins, co-purchase rows with negative weights, content rows and embeddings.
    fn random_snapshot(seed: u64, items: usize, dim: usize) -> Snapshot {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let ids: Vec<String> = (0..items).map(|i| format!("i{i}")).collect();
        let groups: Vec<String> = (0..items).map(|i| format!("g{}", i / 3)).collect();
        let mut b = SnapshotBuilder::new(ModelVersion(1), dim, items);
        for (i, id) in ids.iter().enumerate() {
            b.add_item(ItemRecord {
                id,
                popularity: rng.random_range(0.0f32..100.0),
                title: Some(id),
                category: Some(["bags", "cables", "mugs", "books"][i % 4]),
                price: rng
                    .random_bool(0.9)
                    .then(|| rng.random_range(1.0f32..100.0)),
                in_stock: rng.random_bool(0.85),
                product_group: rng.random_bool(0.5).then_some(groups[i].as_str()),
                promoted: rng.random_bool(0.1),
                margin: rng.random_bool(0.5).then(|| rng.random_range(0.0f32..1.0)),
                image_link: None,
            })
            .unwrap();
        }
        for i in 0..items {
            for _ in 0..rng.random_range(0..12) {
                let j = rng.random_range(0..items);
                if j != i {
                    b.add_pair(&ids[i], &ids[j], rng.random_range(-0.5f32..2.0))
                        .unwrap();
                }
            }
            for _ in 0..rng.random_range(0..4) {
                let j = rng.random_range(0..items);
                if j != i {
                    b.add_content_pair(&ids[i], &ids[j], rng.random_range(0.0f32..1.0))
                        .unwrap();
                }
            }
            if dim > 0 {
                let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                let v: Vec<f32> = v.iter().map(|x| x / norm).collect();
                b.add_embedding(&ids[i], &v).unwrap();
            }
        }
        b.finish().unwrap()
    }

    proptest::proptest! {
        /// Whatever the model, cart, session, budget, exclusions, caps and configuration:
        /// at most k items, no duplicates, nothing from the cart or a variant of it, nothing
        /// out of stock, capped, excluded or over budget, and finite scores in [0, 1].
        #[test]
        fn every_list_respects_the_guard_rails(
            seed in proptest::prelude::any::<u64>(),
            items in 2usize..80,
            dim in proptest::sample::select(vec![0usize, 4, 16]),
            cart_size in 0usize..8,
            viewed_size in 0usize..5,
            purchased_size in 0usize..12,
            k in 1usize..=MAX_K,
            max_price in proptest::option::of(0.5f32..120.0),
            exclude in proptest::sample::subsequence(vec!["bags", "cables", "mugs", "nothing"], 0..3),
            capped in proptest::collection::vec(0u32..80, 0..10),
            theta in 0.0f32..=1.0,
            content in 0.0f32..1.0,
            demote in proptest::prelude::any::<bool>(),
            promoted_boost in 0.0f32..0.5,
        ) {
            use rand::{Rng, SeedableRng};
            let snapshot = random_snapshot(seed, items, dim);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
            let mut pick = |n: usize| -> Vec<String> {
                (0..n).map(|_| format!("i{}", rng.random_range(0..items + 2))).collect()
            };
            let request = Request {
                cart: pick(cart_size),
                viewed: pick(viewed_size),
                purchased: pick(purchased_size),
                k,
                max_price,
                exclude_categories: exclude.iter().map(|c| c.to_string()).collect(),
                personalize: true,
                explain: true,
                ..Request::default()
            };
            let mut config = PipelineConfig {
                promoted_boost,
                margin_boost: promoted_boost,
                ..PipelineConfig::default()
            };
            config.checkout.theta = theta;
            config.checkout.content = content;
            config.checkout.demote_substitutes = demote;
            let caps = CappedItems::new(capped);
            let answer = recommend(&snapshot, &request, &config, &caps);

            proptest::prop_assert!(answer.items.len() <= k);
            let mut seen: Vec<ItemIndex> = answer.items.iter().map(|r| r.item).collect();
            seen.sort_unstable();
            seen.dedup();
            proptest::prop_assert_eq!(seen.len(), answer.items.len(), "duplicates");
            let cart: Vec<ItemIndex> =
                request.cart.iter().filter_map(|id| snapshot.index_of(id)).collect();
            let attributes = snapshot.attributes();
            for r in &answer.items {
                let item = r.item;
                proptest::prop_assert!(
                    !cart.iter().any(|&c| c == item || attributes.same_product(c, item)),
                    "{} is in the cart or a variant of a cart item", snapshot.item_id(item)
                );
                proptest::prop_assert!(attributes.in_stock(item));
                proptest::prop_assert!(!caps.is_capped(item));
                if let Some(max) = max_price {
                    proptest::prop_assert!(attributes.price(item) <= max);
                }
                let category = attributes.category_name(attributes.category(item));
                proptest::prop_assert!(!category.is_some_and(|c| exclude.contains(&c)));
                proptest::prop_assert!(r.score.is_finite() && (0.0..=1.0).contains(&r.score));
                let parts = r.contributions.unwrap();
                for part in [parts.collaborative, parts.content, parts.session, parts.purchased, parts.popularity, parts.boost] {
                    proptest::prop_assert!(part.is_finite());
                }
            }
            for id in &request.cart {
                if snapshot.index_of(id).is_none() {
                    proptest::prop_assert!(answer.unknown_items.contains(&id.as_str()));
                }
            }
        }
    }
}
