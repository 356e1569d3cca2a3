//! The immutable model snapshot a request reads: interned items, their attributes,
//! co-purchase rows, embeddings and popularity, all indexed by dense item index.

use std::sync::{Arc, OnceLock};

use foldhash::HashMap;
use ndarray::Array2;
use serde::Serialize;

use super::catalogue::TitleSearch;
use super::columns::{json_plain, Chunked, Csr, Interner, StrColumn};
use crate::domain::{ItemIndex, ModelVersion};

/// Category index meaning "no category".
pub const NO_CATEGORY: u32 = u32::MAX;

/// Product-group index meaning "a product of its own" (no variants).
pub const NO_GROUP: u32 = u32::MAX;

/// Bits of [`ItemState::flags`].
pub(super) mod flags {
    /// The catalogue says it can be sold now.
    pub const IN_STOCK: u8 = 1;
    /// Merchandising promotes it.
    pub const PROMOTED: u8 = 2;
    /// Withdrawn from recommendations (kept for history).
    pub const WITHDRAWN: u8 = 4;
    /// Its title is in [`super::ItemAttributes::retitled`], not the version's column.
    pub const RETITLED: u8 = 8;
}

/// What the live catalogue says of one item, in one value: a change copies it whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ItemState {
    pub(super) price: f32,
    pub(super) margin: f32,
    pub(super) category: u32,
    pub(super) product_group: u32,
    pub(super) flags: u8,
}

impl ItemState {
    /// The state of an item the catalogue has no row for: never recommended.
    pub(super) const UNKNOWN: Self = Self {
        price: f32::NAN,
        margin: 0.0,
        category: NO_CATEGORY,
        product_group: NO_GROUP,
        flags: 0,
    };

    #[inline]
    fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// What the shop's catalogue says of each item (title, category, price, stock, product group,
/// merchandising, withdrawal), by item index: the part of a snapshot a catalogue change
/// replaces. Every part is shared between the states a change makes (columns in copy-on-write
/// chunks, the rest behind `Arc`), so a new state costs the chunks it changes.
#[derive(Debug, Clone)]
pub struct ItemAttributes {
    /// The titles the version was loaded with.
    pub(super) titles: Arc<StrColumn>,
    /// Titles changed since the load, and the titles of items added since.
    pub(super) retitled: Arc<HashMap<ItemIndex, Box<str>>>,
    pub(super) state: Chunked<ItemState>,
    pub(super) categories: Arc<Interner>,
    pub(super) product_groups: Arc<Interner>,
    /// The items of each product group (a group's row) as loaded...
    pub(super) variants: Arc<Csr>,
    /// ...and the groups whose members changed since.
    pub(super) regrouped: Arc<HashMap<u32, Vec<ItemIndex>>>,
    /// `(item, image link)` for the items that have one as loaded, by item: most catalogues
    /// have none, so nothing is spent on a column...
    pub(super) image_links: Arc<Vec<(ItemIndex, Box<str>)>>,
    /// ...and the links changed since (`None`: the item has none now).
    pub(super) relinked: Arc<HashMap<ItemIndex, Option<Box<str>>>>,
}

impl ItemAttributes {
    /// The item's image link (the catalogue's `image_link` attribute), when it has one.
    pub fn image_link(&self, item: ItemIndex) -> Option<&str> {
        if !self.relinked.is_empty() {
            if let Some(link) = self.relinked.get(&item) {
                return link.as_deref();
            }
        }
        self.image_links
            .binary_search_by_key(&item, |(i, _)| *i)
            .ok()
            .map(|n| &*self.image_links[n].1)
    }

    #[inline]
    pub(super) fn state(&self, item: ItemIndex) -> ItemState {
        self.state
            .get(item as usize)
            .copied()
            .unwrap_or(ItemState::UNKNOWN)
    }

    /// Display title (the id when the catalogue has no row for the item).
    #[inline]
    pub fn title(&self, item: ItemIndex) -> &str {
        if self.state(item).has(flags::RETITLED) {
            if let Some(title) = self.retitled.get(&item) {
                return title;
            }
        }
        if (item as usize) < self.titles.len() {
            self.titles.get(item)
        } else {
            ""
        }
    }

    /// Whether the title of `item` can stand inside a JSON string unescaped.
    #[inline]
    pub fn title_is_json_plain(&self, item: ItemIndex) -> bool {
        if self.state(item).has(flags::RETITLED) {
            return json_plain(self.title(item));
        }
        self.titles.is_json_plain(item)
    }

    /// Category index, or [`NO_CATEGORY`].
    #[inline]
    pub fn category(&self, item: ItemIndex) -> u32 {
        self.state(item).category
    }

    /// Index of a category name, if any item has it.
    pub fn category_index(&self, name: &str) -> Option<u32> {
        self.categories.get(name)
    }

    /// Name of a category index.
    pub fn category_name(&self, category: u32) -> Option<&str> {
        (category != NO_CATEGORY).then(|| self.categories.name(category))
    }

    /// Name of a product group index.
    pub fn product_group_name(&self, group: u32) -> Option<&str> {
        (group != NO_GROUP).then(|| self.product_groups.name(group))
    }

    /// Unit price; NaN when unknown.
    #[inline]
    pub fn price(&self, item: ItemIndex) -> f32 {
        self.state(item).price
    }

    /// Whether the item may be recommended now: in stock and not withdrawn (false when the
    /// catalogue does not know it).
    #[inline]
    pub fn in_stock(&self, item: ItemIndex) -> bool {
        self.state(item).flags & (flags::IN_STOCK | flags::WITHDRAWN) == flags::IN_STOCK
    }

    /// Whether the catalogue says the item is in stock, withdrawn or not.
    pub fn stocked(&self, item: ItemIndex) -> bool {
        self.state(item).has(flags::IN_STOCK)
    }

    /// Whether the item was withdrawn from recommendations.
    pub fn withdrawn(&self, item: ItemIndex) -> bool {
        self.state(item).has(flags::WITHDRAWN)
    }

    /// The product `item` is a variant of, or [`NO_GROUP`].
    #[inline]
    pub fn product_group(&self, item: ItemIndex) -> u32 {
        self.state(item).product_group
    }

    /// Every item of product `group` (none for [`NO_GROUP`]).
    #[inline]
    pub fn variants_of(&self, group: u32) -> &[ItemIndex] {
        if !self.regrouped.is_empty() {
            if let Some(items) = self.regrouped.get(&group) {
                return items;
            }
        }
        self.variants.row(group).0
    }

    /// Whether `a` and `b` are variants of one product (never both when one is in the cart).
    #[inline]
    pub fn same_product(&self, a: ItemIndex, b: ItemIndex) -> bool {
        let group = self.product_group(a);
        a == b || (group != NO_GROUP && group == self.product_group(b))
    }

    /// Whether merchandising promotes the item.
    #[inline]
    pub fn promoted(&self, item: ItemIndex) -> bool {
        self.state(item).has(flags::PROMOTED)
    }

    /// Margin in [0, 1] (0 when unknown).
    #[inline]
    pub fn margin(&self, item: ItemIndex) -> f32 {
        self.state(item).margin
    }

    /// Heap bytes held (shared parts counted in full).
    pub(super) fn heap_bytes(&self) -> usize {
        self.titles.heap_bytes()
            + self.state.heap_bytes()
            + self.categories.heap_bytes()
            + self.product_groups.heap_bytes()
            + self.variants.heap_bytes()
            + self
                .image_links
                .iter()
                .map(|(_, link)| 24 + link.len())
                .sum::<usize>()
    }
}

/// The items a live catalogue added to a version that does not know them: indexes from the
/// version's item count on, with their title embeddings and content neighbours.
#[derive(Debug, Clone, Default)]
pub(super) struct AddedItems {
    pub(super) ids: Interner,
    /// Title embeddings, `embedding_dim` per added item.
    pub(super) embeddings: Vec<f32>,
    /// Diversity embeddings (zeros: neither like nor unlike any item), `diversity_dim` each.
    pub(super) diversity: Vec<f32>,
    /// Content rows replacing the version's: the added items' own, and those of the items an
    /// added item became a neighbour of.
    pub(super) content: HashMap<ItemIndex, (Vec<ItemIndex>, Vec<f32>)>,
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

/// One loaded model version with a state of the live catalogue; immutable once built. The
/// version's parts are shared behind `Arc`s, so a catalogue change makes a new snapshot that
/// shares them and replaces only the catalogue's.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(super) version: ModelVersion,
    pub(super) items: Arc<Interner>,
    pub(super) attributes: ItemAttributes,
    pub(super) co_purchase: Arc<Csr>,
    pub(super) content: Arc<Csr>,
    pub(super) embeddings: Arc<Array2<f32>>,
    /// What the DPP compares, when the version has its own (else `embeddings`): items a
    /// shopper sees as alike need not have alike titles.
    pub(super) diversity: Arc<Array2<f32>>,
    pub(super) popularity: Arc<Vec<f32>>,
    /// `ln(1 + popularity)`, the form the popularity prior uses, computed once per load.
    pub(super) log_popularity: Arc<Vec<f32>>,
    pub(super) by_popularity: Arc<Vec<ItemIndex>>,
    pub(super) stats: LoadStats,
    /// What tuning on the shop's history chose for this version (see `offline::tune`).
    pub(super) tuning: Option<Arc<serde_json::Value>>,
    /// Seed of the version's title embedding projection.
    pub(super) embedding_seed: u64,
    /// The version's title corpus and word index, built the first time an item is added.
    pub(super) corpus: Arc<OnceLock<TitleSearch>>,
    /// Items the live catalogue added since the load.
    pub(super) added: Arc<AddedItems>,
    /// The last catalogue change this snapshot holds (0: none applied since the load).
    pub(super) catalogue_seq: i64,
}

impl Snapshot {
    /// This snapshot with what tuning chose for its version (`None`: untuned).
    pub fn with_tuning(mut self, tuning: Option<serde_json::Value>) -> Self {
        self.tuning = tuning.map(Arc::new);
        self
    }

    /// This snapshot with the seed its version's title embeddings were projected with.
    pub fn with_embedding_seed(mut self, seed: u64) -> Self {
        self.embedding_seed = seed;
        self
    }

    /// What tuning chose for this version: the validation split, the estimator trials, the
    /// tuned settings as a partial `[pipeline]` table under `"pipeline"`, and their scores.
    pub fn tuning(&self) -> Option<&serde_json::Value> {
        self.tuning.as_deref()
    }

    /// The model version this snapshot was built from.
    pub fn version(&self) -> ModelVersion {
        self.version
    }

    /// Whether `other` serves the same loaded version (the same model parts, whatever the
    /// catalogue state).
    pub fn same_model(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.items, &other.items)
    }

    /// The last catalogue change applied to this snapshot (0: none since the load).
    pub fn catalogue_seq(&self) -> i64 {
        self.catalogue_seq
    }

    /// Items the live catalogue added to the version.
    pub fn added_items(&self) -> usize {
        self.added.ids.len()
    }

    /// Whether the version itself (not the live catalogue) knows `item`.
    pub fn in_version(&self, item: ItemIndex) -> bool {
        (item as usize) < self.items.len()
    }

    /// Number of items: the version's and those the catalogue added.
    pub fn len(&self) -> usize {
        self.items.len() + self.added.ids.len()
    }

    /// Whether the snapshot has no items (never true for a built snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Dense index of an item id.
    #[inline]
    pub fn index_of(&self, id: &str) -> Option<ItemIndex> {
        self.items.get(id).or_else(|| {
            if self.added.ids.is_empty() {
                return None;
            }
            let added = self.added.ids.get(id)?;
            Some(self.items.len() as ItemIndex + added)
        })
    }

    /// Item id of a dense index.
    #[inline]
    pub fn item_id(&self, item: ItemIndex) -> &str {
        match (item as usize).checked_sub(self.items.len()) {
            None => self.items.name(item),
            Some(added) => self.added.ids.name(added as u32),
        }
    }

    /// Whether the id of `item` can stand inside a JSON string unescaped.
    #[inline]
    pub fn item_id_is_json_plain(&self, item: ItemIndex) -> bool {
        match (item as usize).checked_sub(self.items.len()) {
            None => self.items.is_json_plain(item),
            Some(added) => self.added.ids.is_json_plain(added as u32),
        }
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
        if !self.added.content.is_empty() {
            if let Some((items, scores)) = self.added.content.get(&item) {
                return (items, scores);
            }
        }
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
        Rows::of(&self.embeddings, &self.added.embeddings)
    }

    /// The diversity embeddings (the content ones when the version has none), for loops
    /// that read many rows.
    #[inline]
    pub fn diversity_rows(&self) -> Rows<'_> {
        if self.diversity.ncols() == 0 {
            return self.embedding_rows();
        }
        Rows::of(&self.diversity, &self.added.diversity)
    }

    /// Dimension of the diversity embeddings (0 when the version has none).
    pub fn diversity_dim(&self) -> usize {
        self.diversity.ncols()
    }

    /// Embedding dimension (0 when the version has none).
    pub fn embedding_dim(&self) -> usize {
        self.embeddings.ncols()
    }

    /// Popularity of `item` (non-negative; 0 for an item the catalogue added).
    #[inline]
    pub fn popularity(&self, item: ItemIndex) -> f32 {
        self.popularity.get(item as usize).copied().unwrap_or(0.0)
    }

    /// `ln(1 + popularity)` of `item`.
    #[inline]
    pub fn log_popularity(&self, item: ItemIndex) -> f32 {
        self.log_popularity
            .get(item as usize)
            .copied()
            .unwrap_or(0.0)
    }

    /// The version's items, most popular first.
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
    /// The rows of the items the catalogue added, after the version's.
    added: &'a [f32],
    dim: usize,
}

impl<'a> Rows<'a> {
    pub(super) fn of(matrix: &'a Array2<f32>, added: &'a [f32]) -> Self {
        Self {
            data: matrix.as_slice().unwrap_or(&[]),
            added,
            dim: matrix.ncols(),
        }
    }

    /// Row `item` (empty when there is no such row).
    #[inline]
    pub fn row(&self, item: ItemIndex) -> &'a [f32] {
        let start = item as usize * self.dim;
        match self.data.get(start..start + self.dim) {
            Some(row) => row,
            None => {
                let start = start - self.data.len();
                self.added.get(start..start + self.dim).unwrap_or(&[])
            }
        }
    }
}
