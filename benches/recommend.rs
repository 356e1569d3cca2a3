//! `recommend()` on a seeded synthetic snapshot, beside a reference (hashing the cart ids),
//! so the ratio between the two survives a noisy machine.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tandem::domain::ModelVersion;
use tandem::offline::synthetic::SyntheticSpec;
use tandem::pipeline::{dpp, recommend, NoCaps, PipelineConfig, Request};

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
    if std::env::args().any(|a| a == "--bench") {
        vec![100_000, 1_000_000]
    } else {
        vec![5_000]
    }
}

fn bench_recommend(c: &mut Criterion) {
    let config = PipelineConfig::default();
    let mut group = c.benchmark_group("recommend");
    for items in snapshot_sizes() {
        let spec = SyntheticSpec {
            items,
            ..SyntheticSpec::default()
        };
        let snapshot = spec
            .build_snapshot(ModelVersion(1))
            .unwrap_or_else(|e| panic!("synthetic snapshot: {e}"));
        let requests = carts(&spec, 256, 5);
        let mut next = 0;
        group.bench_function(BenchmarkId::new("synthetic_5_item_cart_k10", items), |b| {
            b.iter(|| {
                next = (next + 1) % requests.len();
                black_box(
                    recommend(&snapshot, &requests[next], &config, &NoCaps)
                        .items
                        .len(),
                )
            })
        });
        // Reference: the cost of looking the cart up in the interner, nothing else.
        group.bench_function(BenchmarkId::new("reference_cart_lookup", items), |b| {
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
    group.finish();
}

/// The DPP alone: 300 candidates, k = 10, 64 dimensions; beside it, sorting the same 300
/// qualities (the plain ranking it replaces) as the reference.
fn bench_dpp(c: &mut Criterion) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (n, dim) = (300, 64);
    let rows: Vec<Vec<f32>> = (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect();
    let quality: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let mut scratch = dpp::DppScratch::default();
    let mut picks = Vec::new();
    let mut group = c.benchmark_group("dpp");
    group.bench_function("greedy_map_300_candidates_k10_64d_theta0.7", |b| {
        b.iter(|| {
            dpp::select(
                black_box(&quality),
                |i| &rows[i],
                10,
                0.7,
                &mut scratch,
                &mut picks,
            );
            black_box(picks.len())
        })
    });
    group.bench_function("reference_sort_300_qualities", |b| {
        b.iter(|| {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_unstable_by(|&a, &b| quality[b].total_cmp(&quality[a]));
            black_box(order[..10].len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_recommend, bench_dpp);
criterion_main!(benches);
