//! Training a model version from baskets: catalogue rows, popularity, the co-purchase table,
//! content embeddings and content neighbours, all in memory ([`TrainedModel`]); then either
//! written to Postgres as a new version or turned straight into a [`Snapshot`].
//!
//! Popularity is the number of training baskets holding the item (no time decay: the
//! evaluation's popularity baseline is the plain count, and a decay would need a half-life
//! chosen per shop). Every item of the training history is `in_stock`.

use std::borrow::Cow;
use std::ops::Range;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::estimators::{
    self, Baskets, Counts, MeasureError, MeasureParams, MeasureStats, Neighbours,
};
use super::history::History;
use super::history::NO_CUSTOMER;
use super::privacy::{self, DpParams};
use super::progress::Progress;
use super::{behaviour, content};
use crate::domain::ModelVersion;
use crate::model::{ItemRecord, ModelError, Snapshot, SnapshotBuilder};
use crate::store::{self, ExistingItems, ItemRow, ModelRows, NewVersion};

/// Parameters of a training run (stored with the version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// The co-purchase table.
    pub measure: MeasureParams,
    /// Dimension of the title (content) embedding (0 = no embeddings and no content
    /// neighbours).
    pub dim: usize,
    /// Dimension of the behavioural (co-purchase) embedding that forms the diversity
    /// embedding the DPP compares (joined with the title embedding when `behaviour_weight` is
    /// below 1; 0 = no diversity embedding: the DPP compares title embeddings).
    #[serde(default)]
    pub behaviour_dim: usize,
    /// Share of the behavioural part in the diversity cosine of two items (0 to 1).
    #[serde(default)]
    pub behaviour_weight: f32,
    /// Content neighbours per item.
    pub content_neighbours: usize,
    /// Smallest cosine for a content neighbour.
    pub content_min_similarity: f32,
    /// Seed of the embedding projection.
    pub seed: u64,
    /// Only baskets before this time (UTC seconds) were used, when set.
    pub until: Option<i64>,
    /// Treat variants of one product (same stock-code stem) as unrelated items: they may then
    /// be each other's neighbours and recommended with each other. Off in production; on to
    /// compare with published results whose protocol does not know variants.
    #[serde(default)]
    pub keep_variants: bool,
}

impl TrainParams {
    /// The variant group of each id (see [`estimators::variant_groups`]); every id its own
    /// group under `keep_variants`.
    pub fn variant_groups<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
        if self.keep_variants {
            (0..ids.into_iter().count() as u32).collect()
        } else {
            estimators::variant_groups(ids)
        }
    }

    /// The product group of `id` in a snapshot (none under `keep_variants`).
    pub fn product_group<'a>(&self, id: &'a str) -> Option<&'a str> {
        if self.keep_variants {
            None
        } else {
            estimators::variant_stem(id)
        }
    }
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            measure: MeasureParams::default(),
            dim: 64,
            behaviour_dim: 32,
            behaviour_weight: 1.0,
            content_neighbours: 20,
            content_min_similarity: 0.3,
            seed: 42,
            until: None,
            keep_variants: false,
        }
    }
}

/// One item of a trained model.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedItem {
    /// Item id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Derived category.
    pub category: Option<String>,
    /// Median price.
    pub price: Option<f32>,
    /// Popularity (training baskets holding it).
    pub popularity: f32,
    /// Training baskets holding it.
    pub baskets: u32,
}

/// Figures about a training run (stored with the version).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrainStats {
    /// Training baskets.
    pub baskets: usize,
    /// Item entries over the training baskets.
    pub lines: usize,
    /// Items in the model.
    pub items: usize,
    /// First and last training basket time (UTC seconds).
    pub time_range: Option<(i64, i64)>,
    /// The co-purchase table.
    pub co_purchase: MeasureStats,
    /// Content neighbour entries.
    pub content_pairs: usize,
    /// Seconds spent on embeddings and content neighbours.
    pub content_seconds: f64,
    /// Seconds for the whole run.
    pub seconds: f64,
}

/// A model version in memory.
#[derive(Debug, Clone)]
pub struct TrainedModel {
    /// How it was trained.
    pub params: TrainParams,
    /// Items by model index.
    pub items: Vec<TrainedItem>,
    /// Co-purchase neighbours by model index.
    pub co_purchase: Neighbours,
    /// Embeddings, row-major `items × dim`, rows L2-normalised.
    pub embeddings: Vec<f32>,
    /// Diversity embeddings, row-major `items × diversity_dim` (empty when the version has
    /// none).
    pub diversity: Vec<f32>,
    /// Dimension of the diversity embeddings (0 when the model has none).
    pub diversity_dim: usize,
    /// Content neighbours by model index.
    pub content: Neighbours,
    /// Figures about the run.
    pub stats: TrainStats,
    /// What tuning on the shop's own history chose (none under `--no-tune`).
    pub tuning: Option<super::tune::Tuning>,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// No baskets in the training period.
    #[error("no baskets to train on")]
    NoBaskets,
    /// The co-purchase table could not be computed.
    #[error(transparent)]
    Measure(#[from] MeasureError),
}

/// Why writing a version failed (the version, if created, is marked `failed`).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Postgres failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The training baskets of `history` in `range`, renumbered to the items they use.
pub struct TrainingSet {
    /// Baskets over model item numbers.
    pub baskets: Baskets,
    /// History item number of each model item.
    pub history_items: Vec<u32>,
    /// Model item number of each history item (`u32::MAX` when not in the training range).
    pub model_item: Vec<u32>,
}

impl TrainingSet {
    /// Renumbers the items of `history`'s baskets in `range` densely, in history order; each
    /// basket keeps the order of its lines.
    pub fn new(history: &History, range: Range<usize>) -> Self {
        let (history_items, model_item) = Self::numbering(history, range.clone());
        let mut baskets = Baskets::new(history_items.len());
        let mut buffer = Vec::with_capacity(256);
        for b in range {
            buffer.clear();
            buffer.extend(
                history
                    .basket_in_line_order(b)
                    .iter()
                    .map(|&i| model_item[i as usize]),
            );
            baskets.push(&buffer);
        }
        Self {
            baskets,
            history_items,
            model_item,
        }
    }

    /// The history item of each model item and the model item of each history item
    /// (`u32::MAX` when not in `range`), without copying the baskets.
    fn numbering(history: &History, range: Range<usize>) -> (Vec<u32>, Vec<u32>) {
        let mut used = vec![false; history.items.len()];
        for b in range {
            for &i in history.basket(b) {
                used[i as usize] = true;
            }
        }
        let mut model_item = vec![u32::MAX; used.len()];
        let mut history_items = Vec::new();
        for (i, _) in used.iter().enumerate().filter(|(_, &u)| u) {
            model_item[i] = history_items.len() as u32;
            history_items.push(i as u32);
        }
        (history_items, model_item)
    }
}

/// Title embeddings and content neighbours of `titles` (with their variant `groups`).
fn content_of(titles: &[&str], groups: &[u32], params: &TrainParams) -> (Vec<f32>, Neighbours) {
    let embeddings = content::embed(titles, params.dim, params.seed);
    let neighbours = content::neighbours(
        titles,
        &embeddings,
        params.dim,
        groups,
        params.content_neighbours,
        params.content_min_similarity,
        estimators::worker_threads(params.measure.threads),
    );
    (embeddings, neighbours)
}

/// The title embeddings and content neighbours of the items of a history's baskets in a
/// range. They read titles only, so a run that fits several models on parts of that range
/// (tuning's fit before its validation split, then the final fit) computes them once.
pub struct Content {
    /// Model index of each history item in this set (`u32::MAX` when not in it).
    index: Vec<u32>,
    embeddings: Vec<f32>,
    neighbours: Neighbours,
}

impl Content {
    /// The content of the items in `history`'s baskets in `range`.
    pub fn new(history: &History, range: Range<usize>, params: &TrainParams) -> Self {
        let (history_items, index) = TrainingSet::numbering(history, range);
        let titles: Vec<&str> = history_items
            .iter()
            .map(|&h| history.items[h as usize].title.as_str())
            .collect();
        let ids = history_items
            .iter()
            .map(|&h| history.items[h as usize].id.as_str());
        let groups = params.variant_groups(ids);
        let (embeddings, neighbours) = content_of(&titles, &groups, params);
        Self {
            index,
            embeddings,
            neighbours,
        }
    }

    /// The embeddings and content neighbours of `history_items` (a subset of this set's
    /// items, in model order): their rows, with neighbours outside the subset left out. The
    /// idf weights stay those of the whole set, as the catalogue is the same.
    fn for_items(&self, history_items: &[u32], dim: usize) -> (Vec<f32>, Neighbours) {
        let mut position = vec![u32::MAX; self.index.len()];
        let mut embeddings = Vec::with_capacity(history_items.len() * dim);
        for (p, &h) in history_items.iter().enumerate() {
            position[h as usize] = p as u32;
        }
        // Rows of this set by model index, to translate neighbour numbers.
        let mut of_row = vec![u32::MAX; self.neighbours.items()];
        for (h, &row) in self.index.iter().enumerate() {
            if row != u32::MAX {
                of_row[row as usize] = position[h];
            }
        }
        let rows = history_items.iter().enumerate().map(|(p, &h)| {
            let row = self.index[h as usize];
            let mut kept = Vec::new();
            if row != u32::MAX {
                let r = row as usize;
                embeddings.extend_from_slice(&self.embeddings[r * dim..(r + 1) * dim]);
                let (others, scores, support) = self.neighbours.row(row);
                for ((&o, &score), &s) in others.iter().zip(scores).zip(support) {
                    if of_row[o as usize] != u32::MAX {
                        kept.push((of_row[o as usize], score, s));
                    }
                }
            } else {
                embeddings.extend(std::iter::repeat_n(0.0, dim));
            }
            (p as u32, kept)
        });
        let rows: Vec<_> = rows.collect();
        let neighbours = Neighbours::from_rows(history_items.len(), rows);
        (embeddings, neighbours)
    }
}

/// The behavioural embeddings (see [`behaviour`]) from `counts`, or from counting `baskets`
/// when the estimator did not count them; none when `params.behaviour_dim` or
/// `params.behaviour_weight` is 0, and none under differential privacy.
fn behavioural_embeddings(
    baskets: Option<&Baskets>,
    counts: Option<&Counts>,
    params: &TrainParams,
) -> Option<Vec<f32>> {
    // The behavioural embedding reads raw co-purchases, which differential privacy forbids.
    let private = params.measure.dp.is_some();
    if params.behaviour_dim == 0 || params.behaviour_weight <= 0.0 || private {
        return None;
    }
    let (dim, seed, threads) = (params.behaviour_dim, params.seed, params.measure.threads);
    match (counts, baskets) {
        (Some(counts), _) => Some(behaviour::embed(counts, dim, seed, threads)),
        (None, Some(baskets)) => {
            let counts = Counts::from_baskets(baskets, params.measure.min_baskets, threads);
            Some(behaviour::embed(&counts, dim, seed, threads))
        }
        (None, None) => None,
    }
}

/// The diversity embeddings and their dimension: the behavioural embeddings, joined with the
/// title embeddings when `params.behaviour_weight` is below 1; none (dimension 0) without
/// behavioural embeddings.
fn diversity_embeddings(
    text: &[f32],
    items: usize,
    behavioural: Option<Vec<f32>>,
    params: &TrainParams,
) -> (Vec<f32>, usize) {
    let Some(behavioural) = behavioural else {
        return (Vec::new(), 0);
    };
    if params.behaviour_weight >= 1.0 {
        return (behavioural, params.behaviour_dim);
    }
    let joined = behaviour::join(
        items,
        text,
        params.dim,
        &behavioural,
        params.behaviour_dim,
        params.behaviour_weight,
    );
    (joined, params.dim + params.behaviour_dim)
}

impl TrainingSet {
    /// The baskets of `range` with every shopper's contribution bounded for differential
    /// privacy (see [`privacy::bound_contributions`]).
    pub fn bounded(history: &History, range: Range<usize>, dp: &DpParams) -> Self {
        // The item universe stands for the shop's catalogue at the cut-off, which is public;
        // a history file only shows it as the items ordered before then. A shop training
        // privately from its own `items` table has the catalogue itself.
        let mut set = Self::new(history, range.clone());
        let order = range.map(|b| {
            let customer = history.customer(b);
            (
                (customer != NO_CUSTOMER).then_some(customer),
                history.basket(b),
            )
        });
        let mut baskets = Baskets::new(set.history_items.len());
        let mut buffer = Vec::with_capacity(64);
        for basket in privacy::bound_contributions(order, dp) {
            buffer.clear();
            buffer.extend(basket.iter().map(|&i| set.model_item[i as usize]));
            buffer.sort_unstable();
            baskets.push(&buffer);
        }
        set.baskets = baskets;
        set
    }
}

/// Trains on the baskets of `history` in `range`.
pub fn train(
    history: &History,
    range: Range<usize>,
    params: &TrainParams,
    progress: &Progress,
) -> Result<TrainedModel, TrainError> {
    train_sharing_content(history, range, params, None, progress)
}

/// [`train`], taking the title embeddings and content neighbours from `content` (computed
/// once for a run that fits several models over one catalogue) instead of computing them.
pub fn train_sharing_content(
    history: &History,
    range: Range<usize>,
    params: &TrainParams,
    content: Option<&Content>,
    progress: &Progress,
) -> Result<TrainedModel, TrainError> {
    let started = Instant::now();
    if range.is_empty() {
        return Err(TrainError::NoBaskets);
    }
    progress.message("items");
    let set = match &params.measure.dp {
        Some(dp) => TrainingSet::bounded(history, range.clone(), dp),
        None => TrainingSet::new(history, range.clone()),
    };
    let counts = set.baskets.item_counts();
    let items: Vec<TrainedItem> = set
        .history_items
        .iter()
        .zip(&counts)
        .map(|(&h, &count)| {
            let row = &history.items[h as usize];
            TrainedItem {
                id: row.id.clone(),
                title: row.title.clone(),
                category: row.category.clone(),
                price: row.price,
                popularity: count as f32,
                baskets: count,
            }
        })
        .collect();
    let groups = params.variant_groups(items.iter().map(|i| i.id.as_str()));
    progress.inc(1);
    progress.message(params.measure.estimator.name());
    let (co_purchase, measure_stats, counts) =
        estimators::co_purchase_keeping_counts(&set.baskets, &groups, &params.measure)?;
    // Before the counts are dropped, so that they are held no longer than needed.
    let behavioural = behavioural_embeddings(Some(&set.baskets), counts.as_ref(), params);
    drop(counts);
    let mut items = items;
    if let Some(released) = &measure_stats.released_item_counts {
        // Under differential privacy only released counts may leave training.
        for (item, &count) in items.iter_mut().zip(released) {
            item.popularity = count;
            item.baskets = count.round() as u32;
        }
    }
    progress.inc(1);
    // Under differential privacy the raw basket figures and dates stay in here.
    let private = params.measure.dp.is_some();
    let stats = TrainStats {
        baskets: if private { 0 } else { set.baskets.len() },
        lines: if private {
            0
        } else {
            range.clone().map(|b| history.basket(b).len()).sum()
        },
        time_range: (!private).then(|| (history.time(range.start), history.time(range.end - 1))),
        ..TrainStats::default()
    };
    let shared = content.map(|c| c.for_items(&set.history_items, params.dim));
    // The baskets are not read again; the content step below needs the memory more.
    drop(set);
    let parts = Assembly {
        items,
        groups,
        co_purchase,
        measure_stats,
        behavioural,
        stats,
        started,
    };
    Ok(parts.finish(shared, params, progress))
}

/// Trains from co-occurrence counts alone (counted in Postgres or by an outside job; see
/// [`super::counts_file`]): `items` are the counts' items in order, with their catalogue
/// rows. Only `sparse-ease` needs nothing but counts.
pub fn train_from_counts(
    counts: &Counts,
    items: Vec<TrainedItem>,
    params: &TrainParams,
    progress: &Progress,
) -> Result<TrainedModel, TrainError> {
    let started = Instant::now();
    if items.is_empty() {
        return Err(TrainError::NoBaskets);
    }
    let groups = params.variant_groups(items.iter().map(|i| i.id.as_str()));
    progress.inc(1);
    progress.message(params.measure.estimator.name());
    let (co_purchase, measure_stats) =
        estimators::co_purchase_from_counts(counts, &groups, &params.measure)?;
    progress.inc(1);
    let stats = TrainStats {
        baskets: counts.baskets,
        ..TrainStats::default()
    };
    let parts = Assembly {
        items,
        groups,
        co_purchase,
        measure_stats,
        behavioural: behavioural_embeddings(None, Some(counts), params),
        stats,
        started,
    };
    Ok(parts.finish(None, params, progress))
}

/// What both ways of training share once the co-purchase table is made.
struct Assembly {
    items: Vec<TrainedItem>,
    groups: Vec<u32>,
    co_purchase: Neighbours,
    measure_stats: MeasureStats,
    /// The behavioural embeddings, made while the co-occurrence counts were at hand.
    behavioural: Option<Vec<f32>>,
    stats: TrainStats,
    started: Instant,
}

impl Assembly {
    /// Adds the title embeddings, content neighbours and diversity embeddings.
    fn finish(
        self,
        shared: Option<(Vec<f32>, Neighbours)>,
        params: &TrainParams,
        progress: &Progress,
    ) -> TrainedModel {
        progress.message("content");
        let content_started = Instant::now();
        let (embeddings, content) = match shared {
            Some(parts) => parts,
            None => {
                let titles: Vec<&str> = self.items.iter().map(|i| i.title.as_str()).collect();
                content_of(&titles, &self.groups, params)
            }
        };
        let (diversity, diversity_dim) =
            diversity_embeddings(&embeddings, self.items.len(), self.behavioural, params);
        progress.inc(1);
        let stats = TrainStats {
            items: self.items.len(),
            co_purchase: self.measure_stats,
            content_pairs: content.len(),
            content_seconds: content_started.elapsed().as_secs_f64(),
            seconds: self.started.elapsed().as_secs_f64(),
            ..self.stats
        };
        TrainedModel {
            params: params.clone(),
            items: self.items,
            co_purchase: self.co_purchase,
            embeddings,
            diversity,
            diversity_dim,
            content,
            stats,
            tuning: None,
        }
    }
}

impl TrainedModel {
    /// Index of an item id (linear; for tests and small lookups).
    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.items.iter().position(|i| i.id == id).map(|p| p as u32)
    }

    /// The in-memory snapshot of this model as version `version`.
    pub fn to_snapshot(&self, version: ModelVersion) -> Result<Snapshot, ModelError> {
        self.snapshot_with_pairs(version, &self.co_purchase)
    }

    /// A snapshot of this model whose co-purchase rows are `pairs` (for evaluation variants:
    /// other estimators, or none); content neighbours and embeddings are the model's own.
    pub fn snapshot_with_pairs(
        &self,
        version: ModelVersion,
        pairs: &Neighbours,
    ) -> Result<Snapshot, ModelError> {
        let dim = self.params.dim;
        let diversity_dim = self.diversity_dim;
        let mut builder =
            SnapshotBuilder::new(version, dim, self.items.len()).with_diversity_dim(diversity_dim);
        builder.reserve_pairs(pairs.len());
        for item in &self.items {
            builder.add_item(ItemRecord {
                id: &item.id,
                popularity: item.popularity,
                title: Some(&item.title),
                category: item.category.as_deref(),
                price: item.price,
                in_stock: true,
                product_group: self.params.product_group(&item.id),
                ..Default::default()
            })?;
        }
        for (i, item) in self.items.iter().enumerate() {
            let (others, scores, _) = pairs.row(i as u32);
            for (&other, &score) in others.iter().zip(scores) {
                builder.add_pair(&item.id, &self.items[other as usize].id, score)?;
            }
            let (others, scores, _) = self.content.row(i as u32);
            for (&other, &score) in others.iter().zip(scores) {
                builder.add_content_pair(&item.id, &self.items[other as usize].id, score)?;
            }
            if dim > 0 {
                builder.add_embedding(&item.id, &self.embeddings[i * dim..(i + 1) * dim])?;
            }
            if diversity_dim > 0 {
                let row = &self.diversity[i * diversity_dim..(i + 1) * diversity_dim];
                builder.add_diversity_embedding(&item.id, row)?;
            }
        }
        builder.finish()
    }

    /// Writes this model as a new version ([`store::write_version`]): `building`, then every
    /// table in one transaction, then `ready`; on any error the version is marked `failed`.
    /// Items the catalogue does not know yet get their derived rows; existing catalogue rows
    /// are the shop's and are left alone.
    pub async fn write_version(&self, pool: &PgPool) -> Result<ModelVersion, WriteError> {
        let params = serde_json::json!({ "trainer": "tandem train", "params": self.params });
        let tuning = self
            .tuning
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| WriteError::Database(sqlx::Error::Encode(Box::new(e))))?;
        let new = NewVersion {
            embedding_dim: self.params.dim,
            diversity_dim: self.diversity_dim,
            params: &params,
            tuning: tuning.as_ref(),
        };
        let stats = serde_json::to_value(&self.stats).unwrap_or_default();
        let rows = [Rows(self)];
        Ok(store::write_version(pool, new, ExistingItems::Keep, rows, |_| stats).await?)
    }
}

/// A trained model as the store writes it.
struct Rows<'a>(&'a TrainedModel);

impl ModelRows for Rows<'_> {
    fn items(&self) -> usize {
        self.0.items.len()
    }

    fn id(&self, i: usize) -> &str {
        &self.0.items[i].id
    }

    fn item(&self, i: usize) -> ItemRow<'_> {
        let item = &self.0.items[i];
        ItemRow {
            id: &item.id,
            title: &item.title,
            category: item.category.as_deref(),
            price: item.price,
            in_stock: true,
            product_group: self.0.params.product_group(&item.id),
            popularity: item.popularity,
            baskets: item.baskets,
        }
    }

    fn co_purchase(&self, i: usize) -> impl Iterator<Item = (Cow<'_, str>, f32, u32)> {
        let (others, scores, support) = self.0.co_purchase.row(i as u32);
        others
            .iter()
            .zip(scores)
            .zip(support)
            .map(|((&other, &score), &support)| {
                (Cow::Borrowed(self.id(other as usize)), score, support)
            })
    }

    fn content_neighbours(&self, i: usize) -> impl Iterator<Item = (Cow<'_, str>, f32)> {
        let (others, scores, _) = self.0.content.row(i as u32);
        others
            .iter()
            .zip(scores)
            .map(|(&other, &score)| (Cow::Borrowed(self.id(other as usize)), score))
    }

    fn has_vectors(&self) -> bool {
        self.0.params.dim > 0 || self.0.diversity_dim > 0
    }

    fn embedding(&self, i: usize) -> &[f32] {
        let dim = self.0.params.dim;
        &self.0.embeddings[i * dim..(i + 1) * dim]
    }

    fn diversity(&self, i: usize) -> Option<&[f32]> {
        let dim = self.0.diversity_dim;
        (dim > 0).then(|| &self.0.diversity[i * dim..(i + 1) * dim])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::estimators::Estimator;
    use crate::offline::history::tests::fixture;

    fn params() -> TrainParams {
        TrainParams {
            measure: MeasureParams {
                estimator: Estimator::Count,
                threads: 2,
                ..MeasureParams::default()
            },
            dim: 16,
            content_min_similarity: 0.0,
            ..TrainParams::default()
        }
    }

    #[test]
    fn a_model_trained_on_a_fixture_has_items_pairs_and_embeddings() {
        let h = fixture();
        let m = train(&h, 0..h.len(), &params(), &Progress::hidden()).unwrap();
        assert_eq!(m.items.len(), 5);
        let cup = m.index_of("10001").unwrap();
        let saucer = m.index_of("10002").unwrap();
        assert_eq!(m.items[cup as usize].popularity, 4.0);
        assert_eq!(m.co_purchase.row(cup).0[0], saucer);
        let (pink, blue) = (m.index_of("10003A").unwrap(), m.index_of("10003B").unwrap());
        assert!(!m.co_purchase.row(pink).0.contains(&blue), "variants");
        assert!(!m.content.row(pink).0.contains(&blue), "variants");
        assert_eq!(m.embeddings.len(), 5 * 16);
        let s = m.to_snapshot(ModelVersion(9)).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s.version(), ModelVersion(9));
        assert_eq!(s.stats().items_with_embedding, 5);
        assert_eq!(
            s.attributes().title(s.index_of("10001").unwrap()),
            "RED TEA CUP"
        );
        assert_eq!(
            s.co_purchase(s.index_of("10001").unwrap()).0[0],
            s.index_of("10002").unwrap()
        );
    }

    #[test]
    fn a_model_without_embeddings_still_makes_a_snapshot() {
        let h = fixture();
        let params = TrainParams { dim: 0, ..params() };
        let m = train(&h, 0..h.len(), &params, &Progress::hidden()).unwrap();
        assert!(m.content.is_empty() && m.content.items() == m.items.len());
        assert_eq!(m.to_snapshot(ModelVersion(1)).unwrap().len(), 5);
    }

    #[test]
    fn shared_content_gives_the_rows_of_the_items_trained_on() {
        let h = fixture();
        let content = Content::new(&h, 0..h.len(), &params());
        let whole = train(&h, 0..h.len(), &params(), &Progress::hidden()).unwrap();
        let shared = train_sharing_content(
            &h,
            0..h.len(),
            &params(),
            Some(&content),
            &Progress::hidden(),
        )
        .unwrap();
        assert_eq!(shared.embeddings, whole.embeddings);
        assert_eq!(shared.content, whole.content);
        // A fit on fewer baskets gets its own items' rows, neighbours among them only.
        let part = train_sharing_content(&h, 0..2, &params(), Some(&content), &Progress::hidden())
            .unwrap();
        assert_eq!(part.items.len(), 3);
        for (p, item) in part.items.iter().enumerate() {
            let w = whole.index_of(&item.id).unwrap() as usize;
            assert_eq!(
                part.embeddings[p * 16..(p + 1) * 16],
                whole.embeddings[w * 16..(w + 1) * 16]
            );
            let kept: Vec<&str> = part
                .content
                .row(p as u32)
                .0
                .iter()
                .map(|&o| part.items[o as usize].id.as_str())
                .collect();
            let expected: Vec<&str> = whole
                .content
                .row(w as u32)
                .0
                .iter()
                .map(|&o| whole.items[o as usize].id.as_str())
                .filter(|id| part.index_of(id).is_some())
                .collect();
            assert_eq!(kept, expected);
        }
    }

    #[test]
    fn training_uses_only_the_baskets_in_its_range() {
        let h = fixture();
        let m = train(&h, 0..2, &params(), &Progress::hidden()).unwrap();
        assert_eq!(m.items.len(), 3);
        assert_eq!(m.stats.baskets, 2);
        assert!(matches!(
            train(&h, 3..3, &params(), &Progress::hidden()),
            Err(TrainError::NoBaskets)
        ));
    }
}
