//! The immutable model snapshot a request reads: interned items, their attributes,
//! co-purchase rows, embeddings and popularity, all indexed by dense item index.

use ndarray::{Array2, ArrayView1};
use serde::Serialize;

use super::columns::{Csr, Interner, StrColumn};
use crate::domain::{ItemIndex, ModelVersion};

/// Category index meaning "no category".
pub const NO_CATEGORY: u32 = u32::MAX;

/// Product-group index meaning "a product of its own" (no variants).
pub const NO_GROUP: u32 = u32::MAX;

/// What the shop's catalogue says of each item of the model (title, category, price, stock,
/// product group, merchandising), as columns by item index.
#[derive(Debug, Clone)]
pub struct ItemAttributes {
    pub(super) titles: StrColumn,
    pub(super) category: Vec<u32>,
    pub(super) categories: Interner,
    pub(super) price: Vec<f32>,
    pub(super) in_stock: Vec<bool>,
    pub(super) product_group: Vec<u32>,
    /// The items of each product group (a group's row).
    pub(super) variants: Csr,
    pub(super) promoted: Vec<bool>,
    pub(super) margin: Vec<f32>,
    /// `(item, image link)` for the items that have one, by item: most catalogues have none,
    /// so nothing is spent on a column.
    pub(super) image_links: Vec<(ItemIndex, Box<str>)>,
}

impl ItemAttributes {
    /// The item's image link (the catalogue's `image_link` attribute), when it has one.
    pub fn image_link(&self, item: ItemIndex) -> Option<&str> {
        self.image_links
            .binary_search_by_key(&item, |(i, _)| *i)
            .ok()
            .map(|n| &*self.image_links[n].1)
    }

    /// Display title (the id when the catalogue has no row for the item).
    #[inline]
    pub fn title(&self, item: ItemIndex) -> &str {
        self.titles.get(item)
    }

    /// Whether the title of `item` can stand inside a JSON string unescaped.
    #[inline]
    pub fn title_is_json_plain(&self, item: ItemIndex) -> bool {
        self.titles.is_json_plain(item)
    }

    /// Category index, or [`NO_CATEGORY`].
    #[inline]
    pub fn category(&self, item: ItemIndex) -> u32 {
        self.category[item as usize]
    }

    /// Index of a category name, if any item has it.
    pub fn category_index(&self, name: &str) -> Option<u32> {
        self.categories.get(name)
    }

    /// Name of a category index.
    pub fn category_name(&self, category: u32) -> Option<&str> {
        (category != NO_CATEGORY).then(|| self.categories.name(category))
    }

    /// Unit price; NaN when unknown.
    #[inline]
    pub fn price(&self, item: ItemIndex) -> f32 {
        self.price[item as usize]
    }

    /// Whether the item can be sold now (false when the catalogue does not know it).
    #[inline]
    pub fn in_stock(&self, item: ItemIndex) -> bool {
        self.in_stock[item as usize]
    }

    /// The product `item` is a variant of, or [`NO_GROUP`].
    #[inline]
    pub fn product_group(&self, item: ItemIndex) -> u32 {
        self.product_group[item as usize]
    }

    /// Every item of product `group` (none for [`NO_GROUP`]).
    #[inline]
    pub fn variants_of(&self, group: u32) -> &[ItemIndex] {
        self.variants.row(group).0
    }

    /// Whether `a` and `b` are variants of one product (never both when one is in the cart).
    #[inline]
    pub fn same_product(&self, a: ItemIndex, b: ItemIndex) -> bool {
        let group = self.product_group[a as usize];
        a == b || (group != NO_GROUP && group == self.product_group[b as usize])
    }

    /// Whether merchandising promotes the item.
    #[inline]
    pub fn promoted(&self, item: ItemIndex) -> bool {
        self.promoted[item as usize]
    }

    /// Margin in [0, 1] (0 when unknown).
    #[inline]
    pub fn margin(&self, item: ItemIndex) -> f32 {
        self.margin[item as usize]
    }
}

/// Figures about a built snapshot, reported by reloads and metrics.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LoadStats {
    /// Items in the version.
    pub items: usize,
    /// Stored co-purchase (item, neighbour) entries.
    pub pairs: usize,
    /// Items with at least one co-purchase neighbour.
    pub items_with_co_purchase: usize,
    /// Stored content-neighbour entries.
    pub content_pairs: usize,
    /// Embedding dimension (0 when the version has none).
    pub embedding_dim: usize,
    /// Items that have an embedding.
    pub items_with_embedding: usize,
    /// Diversity embedding dimension (0 when the DPP compares the content embeddings).
    pub diversity_dim: usize,
    /// Items of the version the catalogue has no row for (never recommended).
    pub items_without_catalogue: usize,
    /// Heap bytes held by the snapshot's arrays.
    pub heap_bytes: usize,
}

/// One loaded model version; immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub(super) version: ModelVersion,
    pub(super) items: Interner,
    pub(super) attributes: ItemAttributes,
    pub(super) co_purchase: Csr,
    pub(super) content: Csr,
    pub(super) embeddings: Array2<f32>,
    /// What the DPP compares, when the version has its own (else `embeddings`): items a
    /// shopper sees as alike need not have alike titles.
    pub(super) diversity: Array2<f32>,
    pub(super) popularity: Vec<f32>,
    /// `ln(1 + popularity)`, the form the popularity prior uses, computed once per load.
    pub(super) log_popularity: Vec<f32>,
    pub(super) by_popularity: Vec<ItemIndex>,
    pub(super) stats: LoadStats,
    /// What tuning on the shop's history chose for this version (see `offline::tune`).
    pub(super) tuning: Option<serde_json::Value>,
}

impl Snapshot {
    /// This snapshot with what tuning chose for its version (`None`: untuned).
    pub fn with_tuning(mut self, tuning: Option<serde_json::Value>) -> Self {
        self.tuning = tuning;
        self
    }

    /// What tuning chose for this version: the validation split, the estimator trials, the
    /// tuned settings as a partial `[pipeline]` table under `"pipeline"`, and their scores.
    pub fn tuning(&self) -> Option<&serde_json::Value> {
        self.tuning.as_ref()
    }

    /// The model version this snapshot was built from.
    pub fn version(&self) -> ModelVersion {
        self.version
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the snapshot has no items (never true for a built snapshot).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Dense index of an item id.
    #[inline]
    pub fn index_of(&self, id: &str) -> Option<ItemIndex> {
        self.items.get(id)
    }

    /// Item id of a dense index.
    #[inline]
    pub fn item_id(&self, item: ItemIndex) -> &str {
        self.items.name(item)
    }

    /// Whether the id of `item` can stand inside a JSON string unescaped.
    #[inline]
    pub fn item_id_is_json_plain(&self, item: ItemIndex) -> bool {
        self.items.is_json_plain(item)
    }

    /// The items' attributes from the shop's catalogue.
    pub fn attributes(&self) -> &ItemAttributes {
        &self.attributes
    }

    /// Co-purchase neighbours of `item` with their scores, best first.
    #[inline]
    pub fn co_purchase(&self, item: ItemIndex) -> (&[ItemIndex], &[f32]) {
        self.co_purchase.row(item)
    }

    /// Content neighbours of `item` (most similar by embedding) with their cosines, best first.
    #[inline]
    pub fn content_neighbours(&self, item: ItemIndex) -> (&[ItemIndex], &[f32]) {
        self.content.row(item)
    }

    /// The embedding of `item` as a slice (all zeros when it has none).
    #[inline]
    pub fn embedding_slice(&self, item: ItemIndex) -> &[f32] {
        self.embedding_rows().row(item)
    }

    /// The vector the DPP and the diversity measure compare for `item`: the version's
    /// diversity embedding when it has one, else the content embedding.
    #[inline]
    pub fn diversity_slice(&self, item: ItemIndex) -> &[f32] {
        self.diversity_rows().row(item)
    }

    /// The content embeddings, for loops that read many rows.
    #[inline]
    pub fn embedding_rows(&self) -> Rows<'_> {
        Rows::of(&self.embeddings)
    }

    /// The diversity embeddings (the content ones when the version has none), for loops
    /// that read many rows.
    #[inline]
    pub fn diversity_rows(&self) -> Rows<'_> {
        if self.diversity.ncols() == 0 {
            return self.embedding_rows();
        }
        Rows::of(&self.diversity)
    }

    /// Dimension of the diversity embeddings (0 when the version has none).
    pub fn diversity_dim(&self) -> usize {
        self.diversity.ncols()
    }

    /// The L2-normalised embedding of `item` (all zeros when it has none).
    #[inline]
    pub fn embedding(&self, item: ItemIndex) -> ArrayView1<'_, f32> {
        self.embeddings.row(item as usize)
    }

    /// Embedding dimension (0 when the version has none).
    pub fn embedding_dim(&self) -> usize {
        self.embeddings.ncols()
    }

    /// Popularity of `item` (non-negative).
    #[inline]
    pub fn popularity(&self, item: ItemIndex) -> f32 {
        self.popularity[item as usize]
    }

    /// `ln(1 + popularity)` of `item`.
    #[inline]
    pub fn log_popularity(&self, item: ItemIndex) -> f32 {
        self.log_popularity[item as usize]
    }

    /// All items, most popular first.
    pub fn by_popularity(&self) -> &[ItemIndex] {
        &self.by_popularity
    }

    /// Figures about this snapshot.
    pub fn stats(&self) -> &LoadStats {
        &self.stats
    }
}

/// The rows of a row-major matrix as one flat slice: resolved once per request, since
/// asking the matrix for its slice checks its layout on every call.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    data: &'a [f32],
    dim: usize,
}

impl<'a> Rows<'a> {
    fn of(matrix: &'a Array2<f32>) -> Self {
        Self {
            data: matrix.as_slice().unwrap_or(&[]),
            dim: matrix.ncols(),
        }
    }

    /// Row `item` (empty when the matrix has no such row).
    #[inline]
    pub fn row(&self, item: ItemIndex) -> &'a [f32] {
        let start = item as usize * self.dim;
        self.data.get(start..start + self.dim).unwrap_or(&[])
    }
}
