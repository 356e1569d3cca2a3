//! Snapshots the pipeline's tests and the router's tests share.

use crate::domain::ModelVersion;
use crate::model::{ItemRecord, Snapshot, SnapshotBuilder};

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
            ..Default::default()
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
