//! The in-memory cap store's work per request for a returning shopper: `check` (which items
//! are capped, whether the shopper is fatigued) and `record_served` of a list of 10, for a
//! shopper who has seen 10, 100 or 500 distinct items (the store keeps at most 512 by
//! default). Beside them, `check` of a shopper the store has never seen (one hash lookup) as
//! the reference, so the ratio survives a noisy machine. Time stands still in the loop, so
//! the shopper is past the fatigue cap (200 lists an hour) from the setup on, and each
//! iteration also keeps the list of their newest 200 responses (the handler would serve them
//! empty lists and record nothing); that part costs the same whatever the number of items.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use tandem::capping::{CapPolicy, CapStore, MemoryCapStore, ShopperKey};

/// Ids shaped like the Online Retail stock codes (5 digits, some with a letter).
fn item_id(i: usize) -> String {
    if i.is_multiple_of(4) {
        format!("{}A", 20000 + i)
    } else {
        format!("{}", 20000 + i)
    }
}

fn bench_capping(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("capping");
    for seen in [10usize, 100, 500] {
        let store = MemoryCapStore::new(CapPolicy::default());
        let shopper = ShopperKey([7; 16]);
        let ids: Vec<String> = (0..seen).map(item_id).collect();
        // Every item shown once or twice, a third of them three times (at the cap).
        for (i, id) in ids.iter().enumerate() {
            for _ in 0..(1 + i % 3) {
                let list = [id.as_str()];
                black_box(store.record_served(shopper, &list, now).now_or_never());
            }
        }
        // The list served each time: ten of the items seen, spread over them.
        let served: Vec<&str> = (0..10).map(|i| ids[i * seen / 10].as_str()).collect();
        group.bench_function(format!("check_and_record_10_seen_{seen}"), |b| {
            b.iter(|| {
                let state = store.check(black_box(shopper), now).now_or_never();
                let capped = state.map_or(0, |s| s.capped_items.len());
                black_box(store.record_served(shopper, &served, now).now_or_never());
                capped
            })
        });
        group.bench_function(format!("reference_check_unknown_shopper_{seen}"), |b| {
            let stranger = ShopperKey([9; 16]);
            b.iter(|| {
                let state = store.check(black_box(stranger), now).now_or_never();
                state.map_or(0, |s| s.capped_items.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_capping);
criterion_main!(benches);
