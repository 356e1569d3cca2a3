//! Synthetic model versions of any size, for load tests and scale benchmarks.
//!
//! Items fall into clusters of related products; each item's co-purchase neighbours come
//! mostly from its own cluster and its embedding lies near its cluster's centre, so the
//! tables have the shape of a real catalogue. Every value derives from `(seed, item)`, so a
//! spec always produces the same version, row by row, without holding it all in memory.

use std::borrow::Cow;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sqlx::PgPool;

use crate::domain::ModelVersion;
use crate::model::{ItemRecord, ModelError, Snapshot, SnapshotBuilder};
use crate::store::{self, ExistingItems, ItemRow, ModelRows, NewVersion};

/// Content neighbours stored per synthetic item.
const CONTENT_NEIGHBOURS: usize = 10;

/// Shape of a synthetic version.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SyntheticSpec {
    /// Number of items.
    pub items: usize,
    /// Embedding dimension.
    pub dim: usize,
    /// Co-purchase neighbours per item.
    pub neighbours: usize,
    /// Items per cluster of related products.
    pub cluster_size: usize,
    /// Number of categories.
    pub categories: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            items: 100_000,
            dim: 64,
            neighbours: 50,
            cluster_size: 200,
            categories: 500,
            seed: 42,
        }
    }
}

/// One generated item with its catalogue row, popularity, neighbours and embedding.
#[derive(Debug, Clone)]
pub struct SyntheticItem {
    /// Item id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Category name.
    pub category: String,
    /// Price.
    pub price: f32,
    /// In stock.
    pub in_stock: bool,
    /// Popularity.
    pub popularity: f32,
    /// Neighbour item numbers with scores, best first.
    pub neighbours: Vec<(usize, f32)>,
    /// Content neighbours (items of the same cluster) with their cosines, best first.
    pub content_neighbours: Vec<(usize, f32)>,
    /// Embedding (not normalised).
    pub embedding: Vec<f32>,
}

impl SyntheticSpec {
    /// The id of item number `i`.
    pub fn item_id(&self, i: usize) -> String {
        format!("S{i:07}")
    }

    fn rng(&self, stream: u64, i: usize) -> ChaCha8Rng {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.set_stream(i as u64);
        rng
    }

    /// Generates item number `i`.
    pub fn item(&self, i: usize) -> SyntheticItem {
        let n = self.items.max(1);
        let cluster_size = self.cluster_size.clamp(1, n);
        let cluster = i / cluster_size;
        let mut rng = self.rng(1, i);

        let embedding = self.raw_embedding(i);
        // Advance past the draws raw_embedding made from this item's stream.
        for _ in 0..self.dim {
            let _: f32 = rng.random_range(-0.6f32..0.6);
        }

        let wanted = self.neighbours.min(n - 1);
        let mut neighbours: Vec<(usize, f32)> = Vec::with_capacity(wanted);
        let cluster_start = cluster * cluster_size;
        let cluster_len = cluster_size.min(n - cluster_start);
        let mut attempts = 0;
        while neighbours.len() < wanted && attempts < wanted * 20 {
            attempts += 1;
            let other = if rng.random_bool(0.8) && cluster_len > 1 {
                cluster_start + rng.random_range(0..cluster_len)
            } else {
                rng.random_range(0..n)
            };
            if other != i && !neighbours.iter().any(|&(o, _)| o == other) {
                let rank = neighbours.len() as f32;
                neighbours.push((other, (-rank / 12.0).exp() * rng.random_range(0.8f32..1.0)));
            }
        }
        neighbours.sort_by(|a, b| b.1.total_cmp(&a.1));

        // Content neighbours: a sample of the cluster, scored by the cosine of their embeddings
        // (an exact top-N over a million items would dominate the generator's time).
        let mut content_neighbours: Vec<(usize, f32)> = Vec::new();
        if self.dim > 0 && cluster_len > 1 {
            let own_norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
            for _ in 0..CONTENT_NEIGHBOURS.min(cluster_len - 1) * 2 {
                let other = cluster_start + rng.random_range(0..cluster_len);
                if other == i || content_neighbours.iter().any(|&(o, _)| o == other) {
                    continue;
                }
                let theirs = self.raw_embedding(other);
                let norm = theirs.iter().map(|v| v * v).sum::<f32>().sqrt();
                let dot: f32 = embedding.iter().zip(&theirs).map(|(a, b)| a * b).sum();
                if own_norm > 0.0 && norm > 0.0 {
                    content_neighbours.push((other, dot / (own_norm * norm)));
                }
                if content_neighbours.len() == CONTENT_NEIGHBOURS {
                    break;
                }
            }
            content_neighbours.sort_by(|a, b| b.1.total_cmp(&a.1));
        }

        SyntheticItem {
            id: self.item_id(i),
            title: format!("Synthetic product {i} of range {cluster}"),
            category: format!("category-{}", cluster % self.categories.max(1)),
            price: (rng.random_range(0.5f32..200.0) * 100.0).round() / 100.0,
            in_stock: rng.random_bool(0.95),
            popularity: (rng.random_range(0.0f32..9.0)).exp().round(),
            neighbours,
            content_neighbours,
            embedding,
        }
    }

    /// The embedding of item `i` alone (the same values [`Self::item`] gives it).
    fn raw_embedding(&self, i: usize) -> Vec<f32> {
        let cluster_size = self.cluster_size.clamp(1, self.items.max(1));
        let mut rng = self.rng(1, i);
        let mut centre = self.rng(2, i / cluster_size);
        let mut embedding: Vec<f32> = (0..self.dim)
            .map(|_| centre.random_range(-1.0f32..1.0))
            .collect();
        for v in &mut embedding {
            *v += rng.random_range(-0.6f32..0.6);
        }
        embedding
    }

    /// Builds the snapshot directly in memory (no database), for benchmarks and tests.
    pub fn build_snapshot(&self, version: ModelVersion) -> Result<Snapshot, ModelError> {
        let mut builder = SnapshotBuilder::new(version, self.dim, self.items);
        builder.reserve_pairs(self.items * self.neighbours);
        let items: Vec<SyntheticItem> = (0..self.items).map(|i| self.item(i)).collect();
        for item in &items {
            builder.add_item(ItemRecord {
                id: &item.id,
                popularity: item.popularity,
                title: Some(&item.title),
                category: Some(&item.category),
                price: Some(item.price),
                in_stock: item.in_stock,
                ..Default::default()
            })?;
        }
        for item in &items {
            for &(other, score) in &item.neighbours {
                builder.add_pair(&item.id, &items[other].id, score)?;
            }
            for &(other, score) in &item.content_neighbours {
                builder.add_content_pair(&item.id, &items[other].id, score)?;
            }
            if self.dim > 0 {
                builder.add_embedding(&item.id, &item.embedding)?;
            }
        }
        builder.finish()
    }

    /// Writes the version (and its catalogue rows) to Postgres and marks it `ready`.
    pub async fn write_version(&self, pool: &PgPool) -> Result<ModelVersion, sqlx::Error> {
        /// Items generated and written at a time.
        const BATCH: usize = 50_000;
        let params = serde_json::json!({ "generator": "synthetic", "spec": self });
        let new = NewVersion {
            embedding_dim: self.dim,
            diversity_dim: 0,
            params: &params,
            tuning: None,
        };
        let batches = (0..self.items).step_by(BATCH).map(|start| Batch {
            spec: self,
            items: (start..(start + BATCH).min(self.items))
                .map(|i| self.item(i))
                .collect(),
        });
        store::write_version(
            pool,
            new,
            ExistingItems::Replace,
            batches,
            |pairs| serde_json::json!({ "items": self.items, "pairs": pairs }),
        )
        .await
    }
}

/// Generated items as the store writes them.
struct Batch<'a> {
    spec: &'a SyntheticSpec,
    items: Vec<SyntheticItem>,
}

impl ModelRows for Batch<'_> {
    fn items(&self) -> usize {
        self.items.len()
    }

    fn id(&self, i: usize) -> &str {
        &self.items[i].id
    }

    fn item(&self, i: usize) -> ItemRow<'_> {
        let item = &self.items[i];
        ItemRow {
            id: &item.id,
            title: &item.title,
            category: Some(&item.category),
            price: Some(item.price),
            in_stock: item.in_stock,
            product_group: None,
            popularity: item.popularity,
            baskets: 0,
        }
    }

    fn co_purchase(&self, i: usize) -> impl Iterator<Item = (Cow<'_, str>, f32, u32)> {
        self.items[i].neighbours.iter().map(|&(other, score)| {
            let support = 1 + (score * 100.0) as u32;
            (Cow::Owned(self.spec.item_id(other)), score, support)
        })
    }

    fn content_neighbours(&self, i: usize) -> impl Iterator<Item = (Cow<'_, str>, f32)> {
        self.items[i]
            .content_neighbours
            .iter()
            .map(|&(other, score)| (Cow::Owned(self.spec.item_id(other)), score))
    }

    fn has_vectors(&self) -> bool {
        self.spec.dim > 0
    }

    fn embedding(&self, i: usize) -> &[f32] {
        &self.items[i].embedding
    }

    fn diversity(&self, _: usize) -> Option<&[f32]> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_spec_generates_the_same_items() {
        let spec = SyntheticSpec {
            items: 300,
            dim: 8,
            neighbours: 10,
            cluster_size: 50,
            ..Default::default()
        };
        let (a, b) = (spec.item(17), spec.item(17));
        assert_eq!(a.neighbours, b.neighbours);
        assert_eq!(a.embedding, b.embedding);
        assert_eq!(a.neighbours.len(), 10);
        assert!(a.neighbours.iter().all(|&(o, _)| o != 17 && o < 300));
    }

    #[test]
    fn a_synthetic_snapshot_builds_and_validates() {
        let spec = SyntheticSpec {
            items: 500,
            dim: 16,
            neighbours: 20,
            cluster_size: 50,
            ..Default::default()
        };
        let s = spec.build_snapshot(ModelVersion(1)).unwrap();
        assert_eq!(s.len(), 500);
        assert_eq!(s.stats().pairs, 500 * 20);
        assert_eq!(s.stats().items_with_embedding, 500);
        let norm: f32 = s.embedding_slice(3).iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}
