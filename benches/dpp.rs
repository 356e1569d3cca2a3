//! The DPP alone (fast greedy MAP): 300 candidates, k = 10, 64 dimensions, on a seeded
//! fixture; beside it, sorting the same 300 qualities (the plain ranking it replaces) as the
//! reference, so the ratio survives a noisy machine.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tandem::pipeline::dpp;

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

criterion_group!(benches, bench_dpp);
criterion_main!(benches);
