//! Tests of the estimators over small hand-checked baskets.

use super::*;

fn baskets(items: usize, list: &[&[u32]]) -> Baskets {
    let mut b = Baskets::new(items);
    for basket in list {
        b.push(basket);
    }
    b
}

fn params(estimator: Estimator) -> MeasureParams {
    MeasureParams {
        estimator,
        threads: 2,
        min_baskets: 1,
        ..MeasureParams::default()
    }
}

fn table(b: &Baskets, p: &MeasureParams) -> Neighbours {
    co_purchase(b, &vec![u32::MAX; b.items()], p).unwrap().0
}

fn score(n: &Neighbours, i: u32, j: u32) -> Option<f32> {
    let (others, scores, _) = n.row(i);
    others.iter().position(|&o| o == j).map(|p| scores[p])
}

#[test]
fn llr_matches_the_published_test_vectors() {
    for (k, expected) in [
        ((110, 2442, 111, 29114), 270.72),
        ((29, 13, 123, 31612), 263.90),
        ((9, 12, 429, 31327), 48.94),
    ] {
        let got = log_likelihood_ratio(k.0, k.1, k.2, k.3);
        assert!((got - expected).abs() < 0.01, "{k:?}: {got} != {expected}");
    }
    assert!((log_likelihood_ratio(1, 0, 0, 1) - 2.772589).abs() < 1e-5);
    assert_eq!(log_likelihood_ratio(10, 0, 0, 0), 0.0);
}

/// Items 0..4; 0 and 1 always together, 2 with 0 once, 3 everywhere.
fn small() -> Baskets {
    baskets(4, &[&[0, 1, 3], &[0, 1, 3], &[0, 1, 2, 3], &[2, 3], &[3]])
}

#[test]
fn count_cosine_jaccard_and_lift_follow_their_formulas() {
    let b = small();
    // n = [3, 3, 2, 5], N = 5; c01 = 3, c02 = 1, c23 = 2, c03 = 3.
    let count = table(&b, &params(Estimator::Count));
    assert_eq!(score(&count, 0, 1), Some(3.0));
    assert_eq!(score(&count, 0, 2), Some(1.0));
    assert_eq!(count.row(0).0, &[1, 3, 2], "best first, ties by item");
    assert_eq!(count.row(0).2, &[3, 3, 1], "support is the shared baskets");
    let cosine = table(&b, &params(Estimator::Cosine));
    assert!((score(&cosine, 0, 2).unwrap() - 1.0 / 6f32.sqrt()).abs() < 1e-6);
    assert!((score(&cosine, 0, 1).unwrap() - 1.0).abs() < 1e-6);
    let jaccard = table(&b, &params(Estimator::Jaccard));
    assert!((score(&jaccard, 2, 3).unwrap() - 2.0 / 5.0).abs() < 1e-6);
    assert!((score(&jaccard, 0, 2).unwrap() - 1.0 / 4.0).abs() < 1e-6);
    let lift = table(&b, &params(Estimator::Lift));
    assert!((score(&lift, 0, 1).unwrap() - 5.0 / 3.0).abs() < 1e-6);
    assert!((score(&lift, 0, 3).unwrap() - 1.0).abs() < 1e-6);
}

#[test]
fn llr_keeps_only_pairs_seen_more_often_than_chance() {
    let b = small();
    let llr = table(&b, &params(Estimator::Llr));
    let expected = log_likelihood_ratio(3, 0, 0, 2) as f32;
    assert!((score(&llr, 0, 1).unwrap() - expected).abs() < 1e-5);
    assert_eq!(
        score(&llr, 0, 2),
        None,
        "1 shared basket is fewer than the 1.2 expected"
    );
    assert_eq!(score(&llr, 0, 3), None, "3 everywhere: independent");
}

#[test]
fn bm25_weights_shared_baskets_by_idf_and_items_by_saturation() {
    // The baskets of `small` in a catalogue of 20 items (idf needs baskets smaller than it).
    let b = baskets(20, &[&[0, 1, 3], &[0, 1, 3], &[0, 1, 2, 3], &[2, 3], &[3]]);
    let p = MeasureParams {
        bm25_k1: 1.2,
        bm25_b: 0.75,
        ..params(Estimator::Bm25)
    };
    let got = table(&b, &p);
    let idf2 = |size: f64| ((20f64).ln() - (1.0 + size).ln()).powi(2);
    let mean = (3.0 + 3.0 + 2.0 + 5.0) / 20.0;
    let f = |n: f64| 2.2 / (1.2 * (0.25 + 0.75 * n / mean) + 1.0);
    let expected = (2.0 * idf2(3.0) + idf2(4.0)) * f(3.0) * f(3.0);
    assert!((f64::from(score(&got, 0, 1).unwrap()) - expected).abs() < 1e-5 * expected);
    let expected = idf2(4.0) * f(3.0) * f(2.0);
    assert!((f64::from(score(&got, 0, 2).unwrap()) - expected).abs() < 1e-5 * expected);
}

#[test]
fn ease_matches_a_hand_computed_inverse() {
    // X (4 baskets × 3 items): [1,1,0],[1,1,0],[0,1,1],[1,0,1]; λ = 1.
    let b = baskets(3, &[&[0, 1], &[0, 1], &[1, 2], &[0, 2]]);
    // G + λI = [[4,2,1],[2,4,1],[1,1,3]]; its inverse, by cofactors / det 34:
    let det = 32.0;
    let p = [
        [11.0 / det, -5.0 / det, -2.0 / det],
        [-5.0 / det, 11.0 / det, -2.0 / det],
        [-2.0 / det, -2.0 / det, 12.0 / det],
    ];
    let weight = |i: usize, j: usize| -p[i][j] / p[j][j];
    let got = table(
        &b,
        &MeasureParams {
            lambda: 1.0,
            ..params(Estimator::Ease)
        },
    );
    assert!((f64::from(score(&got, 0, 1).unwrap()) - weight(0, 1)).abs() < 1e-6);
    assert!((f64::from(score(&got, 2, 0).unwrap()) - weight(2, 0)).abs() < 1e-6);
    assert!((f64::from(score(&got, 0, 2).unwrap()) - weight(0, 2)).abs() < 1e-6);
    assert!((weight(0, 1) - 5.0 / 11.0).abs() < 1e-12);
    assert!((weight(0, 2) - 2.0 / 12.0).abs() < 1e-12);
}

#[test]
fn ease_rows_keep_strong_negative_weights_after_the_positive_ones() {
    // 0 and 1 each go with 2 but never with each other: alternatives, so B_01 < 0.
    let b = baskets(3, &[&[0, 2], &[1, 2], &[0, 2], &[1, 2], &[0, 2], &[1, 2]]);
    let p = MeasureParams {
        lambda: 1.0,
        min_support: 0,
        ..params(Estimator::Ease)
    };
    let (n, _) = co_purchase(&b, &[u32::MAX; 3], &p).unwrap();
    let (others, scores, _) = n.row(0);
    assert_eq!(others, [2, 1]);
    assert!(scores[0] > 0.0 && scores[1] < 0.0, "{scores:?}");
}

#[test]
fn ease_inverts_only_the_items_in_most_baskets_when_limited() {
    let b = small();
    let p = MeasureParams {
        max_dense_items: 2,
        ..params(Estimator::Ease)
    };
    let (got, stats) = co_purchase(&b, &[u32::MAX; 4], &p).unwrap();
    assert_eq!((stats.dense_items, stats.items_beyond_dense_limit), (2, 2));
    assert!(
        got.row(1).0.is_empty() && got.row(2).0.is_empty(),
        "3 and then 0 are densest"
    );
    assert!(matches!(
        co_purchase(&b, &[u32::MAX; 4], &MeasureParams { lambda: 0.0, ..p }),
        Err(MeasureError::InvalidParameter(_))
    ));
}

#[test]
fn min_support_and_top_n_bound_the_rows() {
    let b = small();
    let p = MeasureParams {
        min_support: 2,
        neighbours: 1,
        ..params(Estimator::Count)
    };
    let got = table(&b, &p);
    assert_eq!(got.row(0).0, &[1]);
    assert_eq!(got.row(2).0, &[3], "2 shares only one basket with 0");
}

#[test]
fn variants_of_one_product_are_never_each_others_neighbours() {
    let ids = ["85099B", "85099C", "22386", "85099", "DCGS01", "DCGS02"];
    let groups = variant_groups(ids);
    assert_eq!(groups[0], groups[1]);
    assert_eq!(groups[0], groups[3]);
    assert_ne!(groups[0], groups[2]);
    assert_eq!((groups[4], groups[5]), (u32::MAX, u32::MAX));
    let b = baskets(6, &[&[0, 1, 2, 3, 4, 5], &[0, 1, 2, 3, 4, 5]]);
    for estimator in Estimator::ALL {
        let (got, stats) = co_purchase(&b, &groups, &params(estimator)).unwrap();
        assert_eq!(
            got.row(0).0.iter().filter(|&&o| o == 1 || o == 3).count(),
            0,
            "{estimator:?}"
        );
        assert!(stats.variant_pairs_dropped >= 6, "{estimator:?}");
    }
    assert_eq!(variant_stem("15056bl"), Some("15056"));
    assert_eq!(variant_stem("POST"), None);
}

#[test]
fn a_private_table_releases_only_pairs_that_clear_the_noise() {
    // 400 baskets of {0, 1}, and one basket of {2, 3}.
    let mut list: Vec<&[u32]> = vec![&[0, 1]; 400];
    list.push(&[2, 3]);
    let b = baskets(4, &list);
    let dp = DpParams {
        epsilon: 5.0,
        delta: 1e-6,
        max_baskets_per_shopper: 1,
        max_items_per_basket: 2,
        threshold_sigmas: 5.0,
        seed: 3,
    };
    let p = MeasureParams {
        dp: Some(dp),
        ..params(Estimator::Ease)
    };
    let (n, stats) = co_purchase(&b, &[u32::MAX; 4], &p).unwrap();
    let report = stats.dp.unwrap();
    assert_eq!(report.pairs_kept, 1, "{report:?}");
    assert!(score(&n, 0, 1).is_some_and(|s| s > 0.0));
    assert!(score(&n, 2, 3).is_none());
    let released = stats.released_item_counts.unwrap();
    assert!((released[0] - 400.0).abs() < 10.0 * report.sigma as f32);
    let bm25 = MeasureParams {
        estimator: Estimator::Bm25,
        ..p
    };
    assert!(co_purchase(&b, &[u32::MAX; 4], &bm25).is_err());
}

#[test]
fn the_table_does_not_depend_on_the_number_of_threads() {
    let b = baskets(
        6,
        &[&[0, 1, 2], &[1, 2, 3], &[3, 4, 5], &[0, 5], &[0, 1, 5]],
    );
    for estimator in Estimator::ALL {
        let one = table(
            &b,
            &MeasureParams {
                threads: 1,
                ..params(estimator)
            },
        );
        let three = table(
            &b,
            &MeasureParams {
                threads: 3,
                ..params(estimator)
            },
        );
        assert_eq!(one, three, "{estimator:?}");
    }
}

/// Baskets over 12 items from a fixed generator: a few items in many baskets, the rest rare.
fn random_baskets() -> Baskets {
    let mut state = 7u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let mut b = Baskets::new(12);
    for _ in 0..400 {
        let mut basket: Vec<u32> = (0..2 + next() % 4)
            .map(|_| (next() % 12).min(next() % 12))
            .collect();
        basket.sort_unstable();
        basket.dedup();
        b.push(&basket);
    }
    b
}

#[test]
fn sparse_ease_is_exact_ease_when_every_neighbourhood_holds_every_item() {
    let b = random_baskets();
    let exact = table(
        &b,
        &MeasureParams {
            lambda: 5.0,
            ..params(Estimator::Ease)
        },
    );
    let sparse = table(
        &b,
        &MeasureParams {
            lambda: 5.0,
            min_baskets: 1,
            neighbourhood: 12,
            ..params(Estimator::SparseEase)
        },
    );
    assert_eq!(exact.len(), sparse.len());
    for i in 0..12 {
        let (others, scores, support) = exact.row(i);
        let (sparse_others, sparse_scores, sparse_support) = sparse.row(i);
        assert_eq!(others, sparse_others, "row {i}");
        assert_eq!(support, sparse_support, "row {i}");
        for (a, b) in scores.iter().zip(sparse_scores) {
            assert!((a - b).abs() < 1e-5, "row {i}: {a} against {b}");
        }
    }
}

#[test]
fn sparse_ease_gives_rows_only_to_items_with_enough_baskets() {
    let b = random_baskets();
    let counts = b.item_counts();
    let p = MeasureParams {
        min_baskets: 60,
        neighbourhood: 3,
        neighbours: 2,
        ..params(Estimator::SparseEase)
    };
    let (table, stats) = co_purchase(&b, &[u32::MAX; 12], &p).unwrap();
    let rare: Vec<u32> = (0..12).filter(|&i| counts[i as usize] < 60).collect();
    assert!(!rare.is_empty() && rare.len() < 12, "{counts:?}");
    assert_eq!(stats.items_below_min_baskets, rare.len());
    assert_eq!(stats.eligible_items, 12 - rare.len());
    for i in 0..12u32 {
        let (others, _, _) = table.row(i);
        if rare.contains(&i) {
            assert!(others.is_empty(), "{i} has too few baskets for a row");
        } else {
            assert!(!others.is_empty() && others.len() <= 2, "{i}: {others:?}");
            assert!(others.iter().all(|o| !rare.contains(o)), "{i}: {others:?}");
        }
    }
    let threads = MeasureParams { threads: 1, ..p };
    assert_eq!(co_purchase(&b, &[u32::MAX; 12], &threads).unwrap().0, table);
}

#[test]
fn one_pass_over_several_settings_gives_each_setting_its_own_table() {
    let b = random_baskets();
    let groups = [u32::MAX; 12];
    let p = MeasureParams {
        neighbourhood: 4,
        neighbours: 5,
        ..params(Estimator::SparseEase)
    };
    let counts = Counts::from_baskets(&b, p.min_baskets, 2);
    let ridges = [(2.0, 0.0), (40.0, 0.0), (300.0, 0.0), (40.0, 1.0)]
        .map(|(lambda, adjacency)| Ridge { lambda, adjacency });
    let together = co_purchase_for_ridges(&counts, &groups, &p, &ridges).unwrap();
    assert_eq!(together.len(), 4);
    for (ridge, (table, _)) in ridges.iter().zip(&together) {
        let alone = MeasureParams {
            lambda: ridge.lambda,
            adjacency: ridge.adjacency,
            ..p.clone()
        };
        assert_eq!(
            &co_purchase_from_counts(&counts, &groups, &alone).unwrap().0,
            table,
            "{ridge:?}"
        );
    }
    assert_ne!(together[0].0, together[2].0, "λ changes the weights");
    assert_ne!(together[1].0, together[3].0, "so do adjacent lines");
}

#[test]
fn adjacent_lines_tell_apart_items_that_share_the_same_baskets() {
    // 0 and 1 are always added one after the other, as are 2 and 3; every basket holds all
    // four, so the shared baskets alone cannot tell the pairs apart.
    let b = baskets(4, &[&[0u32, 1, 2, 3][..], &[2, 3, 0, 1]].repeat(10));
    let plain = table(&b, &params(Estimator::SparseEase));
    let (to_partner, to_other) = (score(&plain, 0, 1), score(&plain, 0, 2));
    assert_eq!(to_partner, to_other, "ties without line order");
    let ordered = table(
        &b,
        &MeasureParams {
            adjacency: 1.0,
            ..params(Estimator::SparseEase)
        },
    );
    let weight = |j| score(&ordered, 0, j).unwrap_or(f32::NEG_INFINITY);
    assert!(weight(1) > weight(3), "{ordered:?}");
    assert!(
        weight(3) > weight(2),
        "next to it in half the baskets: {ordered:?}"
    );
    let dense = MeasureParams {
        adjacency: 1.0,
        ..params(Estimator::Ease)
    };
    assert!(
        co_purchase(&b, &[u32::MAX; 4], &dense).is_err(),
        "only sparse-ease weighs line order"
    );
}

#[test]
fn a_set_always_bought_whole_in_one_order_keeps_its_neighbours_under_line_order() {
    // With each item's baskets on the diagonal of the adjacent-line matrix this Gram matrix
    // has a negative direction (+1, −1, +1, −1, +1) and every solve fails; with each item's
    // adjacent pairs there it stays positive semi-definite.
    let b = baskets(5, &[&[0u32, 1, 2, 3, 4][..]].repeat(100));
    for adjacency in [0.5, 1.0, 2.0, 4.0] {
        let p = MeasureParams {
            adjacency,
            ..params(Estimator::SparseEase)
        };
        let ordered = table(&b, &p);
        for i in 0..5 {
            assert_eq!(
                ordered.row(i).0.len(),
                4,
                "α {adjacency}, item {i}: {ordered:?}"
            );
        }
    }
}
