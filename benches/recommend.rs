//! `recommend()` on the Online Retail model (trained on the real file before 2011-10-01, carts
//! of five items from the baskets after it) and on seeded synthetic snapshots, each beside a
//! reference (looking the cart ids up), so the ratio survives a noisy machine. The DPP alone
//! is `benches/dpp.rs`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tandem::domain::ModelVersion;
use tandem::model::Snapshot;
use tandem::offline::history::{History, NO_CUSTOMER};
use tandem::offline::orders::{self, ReadOptions};
use tandem::offline::progress::Progress;
use tandem::offline::synthetic::SyntheticSpec;
use tandem::offline::train::{self, TrainParams};
use tandem::pipeline::{recommend, NoCaps, PipelineConfig, Request, MAX_PURCHASED_ITEMS};

fn carts(spec: &SyntheticSpec, count: usize, size: usize) -> Vec<Request> {
    (0..count)
        .map(|c| Request {
            cart: (0..size)
                .map(|j| spec.item_id((c * 7919 + j * 104_729) % spec.items))
                .collect(),
            k: 10,
            personalize: true,
            ..Default::default()
        })
        .collect()
}

/// Catalogue sizes: 100,000 and 1,000,000 items under `cargo bench`; a small one when the test
/// suite runs the benches once as a smoke test (no `--bench` flag).
fn snapshot_sizes() -> Vec<usize> {
    if is_full_run() {
        vec![100_000, 1_000_000]
    } else {
        vec![5_000]
    }
}

/// The real order history, read from `../shared/data` (never committed to the project).
const ONLINE_RETAIL: &str = "../shared/data/online_retail/online_retail.csv.gz";

fn is_full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The Online Retail model and 256 five-item carts from held-out baskets, then the same carts
/// with their customers' training-period purchases (the newest 200, each order in line order)
/// as `purchased`, then the held-out baskets of 200 known items or more as whole carts (a
/// wholesale checkout).
fn online_retail() -> (Snapshot, Vec<Request>, Vec<Request>, Vec<Request>) {
    let file = std::fs::File::open(ONLINE_RETAIL)
        .unwrap_or_else(|e| panic!("{ONLINE_RETAIL}: {e} (run from the project root)"));
    let (history, _) = History::read(file, &ReadOptions::default()).unwrap();
    let until = orders::parse_timestamp("2011-10-01").unwrap();
    let split = history.split_at(until);
    let model = train::train(
        &history,
        0..split,
        &TrainParams::default(),
        &Progress::hidden(),
    )
    .unwrap_or_else(|e| panic!("training: {e}"));
    let snapshot = model.to_snapshot(ModelVersion(1)).unwrap();
    let mut bought: std::collections::HashMap<u32, Vec<String>> = Default::default();
    for b in 0..split {
        bought.entry(history.customer(b)).or_default().extend(
            history
                .basket_in_line_order(b)
                .iter()
                .map(|&i| history.items[i as usize].id.clone()),
        );
    }
    let (requests, with_purchases): (Vec<Request>, Vec<Request>) = (split..history.len())
        .filter_map(|b| {
            let cart: Vec<String> = history
                .basket_in_line_order(b)
                .iter()
                .map(|&i| history.items[i as usize].id.clone())
                .filter(|id| snapshot.index_of(id).is_some())
                .take(5)
                .collect();
            let request = Request {
                cart,
                k: 10,
                personalize: true,
                ..Default::default()
            };
            let purchased = bought
                .get(&history.customer(b))
                .filter(|_| history.customer(b) != NO_CUSTOMER)
                .map_or_else(Vec::new, |items| {
                    items[items.len().saturating_sub(MAX_PURCHASED_ITEMS)..].to_vec()
                });
            (request.cart.len() == 5).then(|| {
                let with_purchases = Request {
                    purchased,
                    ..request.clone()
                };
                (request, with_purchases)
            })
        })
        .take(256)
        .unzip();
    let wholesale = (split..history.len())
        .map(|b| Request {
            cart: history
                .basket_in_line_order(b)
                .iter()
                .map(|&i| history.items[i as usize].id.clone())
                .filter(|id| snapshot.index_of(id).is_some())
                .collect(),
            k: 10,
            personalize: true,
            ..Default::default()
        })
        .filter(|r| r.cart.len() >= 200)
        .collect();
    (snapshot, requests, with_purchases, wholesale)
}

fn bench_pair(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    parameter: impl std::fmt::Display,
    snapshot: &Snapshot,
    requests: &[Request],
    config: &PipelineConfig,
) {
    let mut next = 0;
    group.bench_function(BenchmarkId::new(name, &parameter), |b| {
        b.iter(|| {
            next = (next + 1) % requests.len();
            black_box(
                recommend(snapshot, &requests[next], config, &NoCaps)
                    .items
                    .len(),
            )
        })
    });
    // Reference: the cost of looking the cart up in the interner, nothing else (one per
    // case: criterion rejects an id twice in a group).
    let reference = format!("reference_cart_lookup_for_{name}");
    group.bench_function(BenchmarkId::new(reference, &parameter), |b| {
        b.iter(|| {
            next = (next + 1) % requests.len();
            black_box(
                requests[next]
                    .cart
                    .iter()
                    .filter_map(|id| snapshot.index_of(id))
                    .count(),
            )
        })
    });
}

fn bench_recommend(c: &mut Criterion) {
    let config = PipelineConfig::default();
    let mut group = c.benchmark_group("recommend");
    if is_full_run() {
        let (snapshot, requests, with_purchases, wholesale) = online_retail();
        bench_pair(
            &mut group,
            "online_retail_5_item_cart_k10",
            snapshot.len(),
            &snapshot,
            &requests,
            &config,
        );
        bench_pair(
            &mut group,
            "online_retail_5_item_cart_with_purchases_k10",
            snapshot.len(),
            &snapshot,
            &with_purchases,
            &config,
        );
        bench_pair(
            &mut group,
            "online_retail_5_item_cart_with_purchases_beside_cart_k10",
            snapshot.len(),
            &snapshot,
            &with_purchases,
            &PipelineConfig {
                purchased_beside_cart: 1.0,
                ..config.clone()
            },
        );
        bench_pair(
            &mut group,
            "online_retail_wholesale_cart_k10",
            snapshot.len(),
            &snapshot,
            &wholesale,
            &config,
        );
    }
    for items in snapshot_sizes() {
        let spec = SyntheticSpec {
            items,
            ..SyntheticSpec::default()
        };
        let snapshot = spec
            .build_snapshot(ModelVersion(1))
            .unwrap_or_else(|e| panic!("synthetic snapshot: {e}"));
        let requests = carts(&spec, 256, 5);
        bench_pair(
            &mut group,
            "synthetic_5_item_cart_k10",
            items,
            &snapshot,
            &requests,
            &config,
        );
    }
    group.finish();
}

criterion_group!(benches, bench_recommend);
criterion_main!(benches);
