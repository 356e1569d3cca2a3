//! Building a validated [`Snapshot`] from rows, one row at a time (pure: the caller does I/O).

use ndarray::Array2;

use std::sync::Arc;

use super::columns::{Chunked, Csr, CsrBuilder, Interner, StrColumn};
use super::snapshot::{
    flags, ItemAttributes, ItemState, LoadStats, Snapshot, NO_CATEGORY, NO_GROUP,
};
use super::ModelError;
use crate::domain::{validate_id, ModelVersion};

/// The seed `train` projects title embeddings with unless told otherwise.
pub const DEFAULT_EMBEDDING_SEED: u64 = 42;

/// One item of a version, joined with its catalogue row when the catalogue has one.
#[derive(Debug, Clone, Copy, Default)]
pub struct ItemRecord<'a> {
    /// Item id.
    pub id: &'a str,
    /// Popularity from `item_stats` (non-negative, finite).
    pub popularity: f32,
    /// Catalogue title; `None` when the catalogue has no row for the item.
    pub title: Option<&'a str>,
    /// Catalogue category.
    pub category: Option<&'a str>,
    /// Unit price.
    pub price: Option<f32>,
    /// Whether it is in stock.
    pub in_stock: bool,
    /// Product group shared by variants of one product (sizes, colours).
    pub product_group: Option<&'a str>,
    /// Whether merchandising promotes the item.
    pub promoted: bool,
    /// Margin as a fraction of the price, in [0, 1], when known.
    pub margin: Option<f32>,
    /// The catalogue's `image_link` attribute; kept only when it is an http(s) URL of at most
    /// [`MAX_IMAGE_LINK_BYTES`].
    pub image_link: Option<&'a str>,
}

/// Longest `image_link` kept.
pub const MAX_IMAGE_LINK_BYTES: usize = 2048;

/// Whether `link` is an image URL a page may show: http(s), bounded, no control characters.
pub(crate) fn is_image_link(link: &str) -> bool {
    link.len() <= MAX_IMAGE_LINK_BYTES
        && (link.starts_with("https://") || link.starts_with("http://"))
        && !link.chars().any(char::is_control)
}

/// Accumulates the rows of one version and checks each as it arrives.
#[derive(Debug)]
pub struct SnapshotBuilder {
    version: ModelVersion,
    embedding_dim: usize,
    items: Interner,
    titles: StrColumn,
    category: Vec<u32>,
    categories: Interner,
    price: Vec<f32>,
    in_stock: Vec<bool>,
    product_group: Vec<u32>,
    product_groups: Interner,
    promoted: Vec<bool>,
    margin: Vec<f32>,
    /// Image links of the items that have one, in item order.
    image_links: Vec<(u32, Box<str>)>,
    popularity: Vec<f32>,
    items_without_catalogue: usize,
    pairs: CsrBuilder,
    content_pairs: CsrBuilder,
    /// The item of the last neighbour row added (see `source_index`).
    last_source: Option<u32>,
    embeddings: Vec<f32>,
    has_embedding: Vec<bool>,
    diversity_dim: usize,
    diversity: Vec<f32>,
    has_diversity: Vec<bool>,
}

fn shown(id: &str) -> String {
    id.chars().take(160).collect()
}

impl SnapshotBuilder {
    /// A builder for `version`, whose embeddings have `embedding_dim` dimensions (0 = none).
    pub fn new(version: ModelVersion, embedding_dim: usize, expected_items: usize) -> Self {
        Self {
            version,
            embedding_dim,
            items: Interner::with_capacity(expected_items),
            titles: StrColumn::with_capacity(expected_items, expected_items * 24),
            category: Vec::with_capacity(expected_items),
            categories: Interner::with_capacity(64),
            price: Vec::with_capacity(expected_items),
            in_stock: Vec::with_capacity(expected_items),
            product_group: Vec::with_capacity(expected_items),
            product_groups: Interner::with_capacity(expected_items / 2),
            promoted: Vec::with_capacity(expected_items),
            margin: Vec::with_capacity(expected_items),
            image_links: Vec::new(),
            popularity: Vec::with_capacity(expected_items),
            items_without_catalogue: 0,
            pairs: CsrBuilder::default(),
            content_pairs: CsrBuilder::default(),
            last_source: None,
            embeddings: Vec::new(),
            has_embedding: Vec::new(),
            diversity_dim: 0,
            diversity: Vec::new(),
            has_diversity: Vec::new(),
        }
    }

    /// Gives the version diversity embeddings of `dim` dimensions (0 = none: the DPP then
    /// compares the content embeddings).
    pub fn with_diversity_dim(mut self, dim: usize) -> Self {
        self.diversity_dim = dim;
        self
    }

    /// Reserves room for `pairs` co-purchase rows.
    pub fn reserve_pairs(&mut self, pairs: usize) {
        self.pairs.reserve(pairs);
    }

    /// Adds an item of the version.
    pub fn add_item(&mut self, item: ItemRecord<'_>) -> Result<(), ModelError> {
        validate_id(item.id).map_err(|reason| ModelError::InvalidItemId {
            id: shown(item.id),
            reason,
        })?;
        if !item.popularity.is_finite() {
            return Err(ModelError::NonFinite {
                table: "item_stats",
                field: "popularity",
                id: shown(item.id),
            });
        }
        if item.price.is_some_and(|p| !p.is_finite()) {
            return Err(ModelError::NonFinite {
                table: "items",
                field: "price",
                id: shown(item.id),
            });
        }
        self.items
            .insert(item.id)
            .map_err(|_| ModelError::DuplicateItem(shown(item.id)))?;
        // Index of the item just interned: one entry per earlier item in every column.
        let index = self.price.len() as u32;
        // A link no page could show is left out, never a reason to refuse the version.
        if let Some(link) = item.image_link.filter(|link| is_image_link(link)) {
            self.image_links.push((index, link.into()));
        }
        match item.title {
            Some(title) => {
                self.titles.push(title);
                self.in_stock.push(item.in_stock);
            }
            None => {
                // Without a catalogue row the item cannot be shown or sold, but it still
                // anchors recommendations when it is in a cart.
                self.titles.push(item.id);
                self.in_stock.push(false);
                self.items_without_catalogue += 1;
            }
        }
        self.category.push(
            item.category
                .map_or(NO_CATEGORY, |c| self.categories.intern(c)),
        );
        self.price.push(item.price.unwrap_or(f32::NAN));
        self.product_group.push(
            item.product_group
                .map_or(NO_GROUP, |g| self.product_groups.intern(g)),
        );
        self.promoted.push(item.promoted);
        // An unusable margin is treated as unknown rather than failing the version.
        self.margin.push(
            item.margin
                .filter(|m| m.is_finite())
                .map_or(0.0, |m| m.clamp(0.0, 1.0)),
        );
        self.popularity.push(item.popularity.max(0.0));
        Ok(())
    }

    fn index(&self, table: &'static str, id: &str) -> Result<u32, ModelError> {
        self.items.get(id).ok_or_else(|| ModelError::DanglingItem {
            table,
            id: shown(id),
        })
    }

    /// The index of a neighbour row's `item`: rows usually come grouped by item, so the last
    /// one is compared first (a string comparison instead of a hash probe into a table of a
    /// million ids).
    fn source_index(&mut self, table: &'static str, id: &str) -> Result<u32, ModelError> {
        if let Some(last) = self.last_source.filter(|&last| self.items.name(last) == id) {
            return Ok(last);
        }
        let index = self.index(table, id)?;
        self.last_source = Some(index);
        Ok(index)
    }

    /// Adds a co-purchase row: `other` is a neighbour of `item` with `score`.
    pub fn add_pair(&mut self, item: &str, other: &str, score: f32) -> Result<(), ModelError> {
        self.add_neighbour(Neighbours::CoPurchase, item, other, score)
    }

    /// Adds a content-neighbour row: `other` is similar to `item` with `score`.
    pub fn add_content_pair(
        &mut self,
        item: &str,
        other: &str,
        score: f32,
    ) -> Result<(), ModelError> {
        self.add_neighbour(Neighbours::Content, item, other, score)
    }

    /// Adds a neighbour row to the table `which` (inlined, so each caller's table is fixed).
    #[inline]
    fn add_neighbour(
        &mut self,
        which: Neighbours,
        item: &str,
        other: &str,
        score: f32,
    ) -> Result<(), ModelError> {
        let table = which.table();
        let from = self.source_index(table, item)?;
        let to = self.index(table, other)?;
        if from == to {
            return Err(ModelError::SelfPair(shown(item)));
        }
        if !score.is_finite() {
            return Err(ModelError::NonFinite {
                table,
                field: "score",
                id: shown(item),
            });
        }
        match which {
            Neighbours::CoPurchase => self.pairs.push(from, to, score),
            Neighbours::Content => self.content_pairs.push(from, to, score),
        }
        Ok(())
    }

    /// Adds an embedding given as little-endian f32 bytes.
    pub fn add_embedding_bytes(&mut self, item: &str, bytes: &[u8]) -> Result<(), ModelError> {
        self.add_vector_bytes(Vectors::Content, item, bytes)
    }

    /// Adds an embedding given as floats.
    pub fn add_embedding(&mut self, item: &str, values: &[f32]) -> Result<(), ModelError> {
        self.add_vector(Vectors::Content, item, values)
    }

    /// Adds a diversity embedding given as little-endian f32 bytes.
    pub fn add_diversity_embedding_bytes(
        &mut self,
        item: &str,
        bytes: &[u8],
    ) -> Result<(), ModelError> {
        self.add_vector_bytes(Vectors::Diversity, item, bytes)
    }

    /// Adds a diversity embedding given as floats.
    pub fn add_diversity_embedding(
        &mut self,
        item: &str,
        values: &[f32],
    ) -> Result<(), ModelError> {
        self.add_vector(Vectors::Diversity, item, values)
    }

    fn add_vector_bytes(
        &mut self,
        which: Vectors,
        item: &str,
        bytes: &[u8],
    ) -> Result<(), ModelError> {
        let index = self.index("item_embeddings", item)? as usize;
        let dim = self.dim(which);
        if bytes.len() != dim * 4 || dim == 0 {
            return Err(ModelError::EmbeddingLength {
                id: shown(item),
                bytes: bytes.len(),
                expected: dim * 4,
                dim,
            });
        }
        let row = self.vector_row(which, item, index)?;
        for (value, chunk) in row.iter_mut().zip(bytes.chunks_exact(4)) {
            *value = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        if row.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite {
                table: "item_embeddings",
                field: which.field(),
                id: shown(item),
            });
        }
        Ok(())
    }

    fn add_vector(&mut self, which: Vectors, item: &str, values: &[f32]) -> Result<(), ModelError> {
        let index = self.index("item_embeddings", item)? as usize;
        let dim = self.dim(which);
        if values.len() != dim || dim == 0 {
            return Err(ModelError::EmbeddingLength {
                id: shown(item),
                bytes: values.len() * 4,
                expected: dim * 4,
                dim,
            });
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite {
                table: "item_embeddings",
                field: which.field(),
                id: shown(item),
            });
        }
        self.vector_row(which, item, index)?.copy_from_slice(values);
        Ok(())
    }

    fn dim(&self, which: Vectors) -> usize {
        match which {
            Vectors::Content => self.embedding_dim,
            Vectors::Diversity => self.diversity_dim,
        }
    }

    fn vector_row(
        &mut self,
        which: Vectors,
        item: &str,
        index: usize,
    ) -> Result<&mut [f32], ModelError> {
        let dim = self.dim(which);
        let needed = self.items.len();
        let (values, present) = match which {
            Vectors::Content => (&mut self.embeddings, &mut self.has_embedding),
            Vectors::Diversity => (&mut self.diversity, &mut self.has_diversity),
        };
        if present.len() < needed {
            present.resize(needed, false);
            values.resize(needed * dim, 0.0);
        }
        if std::mem::replace(&mut present[index], true) {
            return Err(ModelError::DuplicateEmbedding(shown(item)));
        }
        Ok(&mut values[index * dim..(index + 1) * dim])
    }

    /// Validates the whole and builds the immutable snapshot.
    pub fn finish(mut self) -> Result<Snapshot, ModelError> {
        let n = self.items.len();
        if n == 0 {
            return Err(ModelError::Empty);
        }
        for pairs in [self.pairs.entries(), self.content_pairs.entries()] {
            if u32::try_from(pairs).is_err() {
                return Err(ModelError::TooManyPairs(pairs));
            }
        }
        let dim = self.embedding_dim;
        let items_with_embedding = self.has_embedding.iter().filter(|&&b| b).count();
        let embeddings = normalised_rows(self.embeddings, n, dim)?;
        let diversity = normalised_rows(self.diversity, n, self.diversity_dim)?;
        let co_purchase = self.pairs.finish(n);
        let content = self.content_pairs.finish(n);
        let mut by_popularity: Vec<u32> = (0..n as u32).collect();
        let popularity = self.popularity;
        by_popularity.sort_by(|&a, &b| {
            popularity[b as usize]
                .total_cmp(&popularity[a as usize])
                .then(a.cmp(&b))
        });
        self.items.shrink_to_fit();
        self.categories.shrink_to_fit();
        let variants = Csr::from_triples(
            self.product_groups.len(),
            self.product_group
                .iter()
                .enumerate()
                .filter(|&(_, &group)| group != NO_GROUP)
                .map(|(item, &group)| (group, item as u32, 0.0))
                .collect(),
        );
        self.product_groups.shrink_to_fit();
        let state = Chunked::from_values((0..n).map(|i| ItemState {
            price: self.price[i],
            margin: self.margin[i],
            category: self.category[i],
            product_group: self.product_group[i],
            flags: u8::from(self.in_stock[i]) * flags::IN_STOCK
                + u8::from(self.promoted[i]) * flags::PROMOTED,
        }));
        let attributes = ItemAttributes {
            titles: Arc::new(self.titles),
            retitled: Arc::default(),
            state,
            categories: Arc::new(self.categories),
            product_groups: Arc::new(self.product_groups),
            variants: Arc::new(variants),
            regrouped: Arc::default(),
            image_links: Arc::new(self.image_links),
            relinked: Arc::default(),
        };
        let heap_bytes = self.items.heap_bytes()
            + attributes.heap_bytes()
            + n * (4 + 4 + 4)
            + co_purchase.heap_bytes()
            + content.heap_bytes()
            + embeddings.len() * 4
            + diversity.len() * 4;
        let stats = LoadStats {
            items: n,
            pairs: co_purchase.len(),
            items_with_co_purchase: (0..n as u32)
                .filter(|&i| !co_purchase.row(i).0.is_empty())
                .count(),
            content_pairs: content.len(),
            embedding_dim: dim,
            items_with_embedding,
            diversity_dim: self.diversity_dim,
            items_without_catalogue: self.items_without_catalogue,
            heap_bytes,
        };
        Ok(Snapshot {
            version: self.version,
            items: Arc::new(self.items),
            attributes,
            co_purchase: Arc::new(co_purchase),
            content: Arc::new(content),
            embeddings: Arc::new(embeddings),
            diversity: Arc::new(diversity),
            log_popularity: Arc::new(popularity.iter().map(|p| p.ln_1p()).collect()),
            popularity: Arc::new(popularity),
            by_popularity: Arc::new(by_popularity),
            tuning: None,
            embedding_seed: DEFAULT_EMBEDDING_SEED,
            corpus: Arc::default(),
            added: Arc::default(),
            catalogue_seq: 0,
            stats,
        })
    }
}

/// The two kinds of neighbour row a version carries.
#[derive(Debug, Clone, Copy)]
enum Neighbours {
    /// Items bought together (`co_purchase`).
    CoPurchase,
    /// Items with similar titles (`content_neighbours`).
    Content,
}

impl Neighbours {
    fn table(self) -> &'static str {
        match self {
            Self::CoPurchase => "co_purchase",
            Self::Content => "content_neighbours",
        }
    }
}

/// The two kinds of vector a version may carry per item.
#[derive(Debug, Clone, Copy)]
enum Vectors {
    /// What content similarity compares (`item_embeddings.embedding`).
    Content,
    /// What the DPP and the diversity measure compare (`item_embeddings.diversity`).
    Diversity,
}

impl Vectors {
    fn field(self) -> &'static str {
        match self {
            Self::Content => "embedding",
            Self::Diversity => "diversity",
        }
    }
}

/// `n` rows of `dim` values (missing rows all zeros), each L2-normalised.
fn normalised_rows(mut values: Vec<f32>, n: usize, dim: usize) -> Result<Array2<f32>, ModelError> {
    values.resize(n * dim, 0.0);
    for row in values.chunks_exact_mut(dim.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    Array2::from_shape_vec((n, dim), values).map_err(|_| ModelError::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, popularity: f32) -> ItemRecord<'_> {
        ItemRecord {
            id,
            popularity,
            title: Some(id),
            category: Some("bags"),
            price: Some(1.5),
            in_stock: true,
            ..Default::default()
        }
    }

    fn builder() -> SnapshotBuilder {
        let mut b = SnapshotBuilder::new(ModelVersion(3), 2, 3);
        for (id, pop) in [("a", 3.0), ("b", 1.0), ("c", 2.0)] {
            b.add_item(item(id, pop)).unwrap();
        }
        b
    }

    #[test]
    fn a_valid_version_builds_a_snapshot_with_every_table() {
        let mut b = builder();
        b.add_pair("a", "b", 0.5).unwrap();
        b.add_pair("a", "c", 0.9).unwrap();
        b.add_embedding("a", &[3.0, 4.0]).unwrap();
        b.add_embedding_bytes("b", &[0, 0, 128, 63, 0, 0, 0, 0])
            .unwrap();
        let s = b.finish().unwrap();
        assert_eq!(s.version(), ModelVersion(3));
        assert_eq!(s.len(), 3);
        assert_eq!(s.index_of("c"), Some(2));
        assert_eq!(s.item_id(1), "b");
        assert_eq!(s.co_purchase(0), (&[2, 1][..], &[0.9, 0.5][..]));
        assert_eq!(s.embedding_slice(0).to_vec(), vec![0.6, 0.8]);
        assert_eq!(s.embedding_slice(1).to_vec(), vec![1.0, 0.0]);
        assert_eq!(s.embedding_slice(2).to_vec(), vec![0.0, 0.0]);
        assert_eq!(s.by_popularity(), &[0, 2, 1]);
        assert_eq!(
            s.attributes().category_name(s.attributes().category(1)),
            Some("bags")
        );
        assert_eq!(s.stats().pairs, 2);
        assert_eq!(s.stats().items_with_embedding, 2);
    }

    #[test]
    fn diversity_embeddings_are_normalised_and_compared_instead_of_embeddings() {
        let mut b = builder().with_diversity_dim(3);
        b.add_embedding("a", &[3.0, 4.0]).unwrap();
        b.add_diversity_embedding("a", &[0.0, 0.0, 2.0]).unwrap();
        b.add_diversity_embedding_bytes("b", &[0, 0, 128, 63, 0, 0, 0, 0, 0, 0, 0, 0])
            .unwrap();
        assert!(matches!(
            b.add_diversity_embedding("c", &[1.0, 0.0]),
            Err(ModelError::EmbeddingLength { dim: 3, .. })
        ));
        assert!(matches!(
            b.add_diversity_embedding("a", &[1.0, 0.0, 0.0]),
            Err(ModelError::DuplicateEmbedding(_))
        ));
        let s = b.finish().unwrap();
        assert_eq!(s.diversity_slice(0), [0.0, 0.0, 1.0]);
        assert_eq!(s.diversity_slice(1), [1.0, 0.0, 0.0]);
        assert_eq!(s.diversity_slice(2), [0.0, 0.0, 0.0]);
        assert_eq!(s.embedding_slice(0), [0.6, 0.8]);
        assert_eq!(s.stats().diversity_dim, 3);

        let without = builder().finish().unwrap();
        assert_eq!(without.diversity_dim(), 0);
        assert_eq!(without.diversity_slice(0), without.embedding_slice(0));
    }

    #[test]
    fn items_without_a_catalogue_row_are_kept_but_never_in_stock() {
        let mut b = builder();
        b.add_item(ItemRecord {
            id: "ghost",
            popularity: 9.0,
            in_stock: true,
            ..Default::default()
        })
        .unwrap();
        let s = b.finish().unwrap();
        let ghost = s.index_of("ghost").unwrap();
        assert!(!s.attributes().in_stock(ghost));
        assert_eq!(s.attributes().title(ghost), "ghost");
        assert!(s.attributes().price(ghost).is_nan());
        assert_eq!(s.stats().items_without_catalogue, 1);
    }

    #[test]
    fn dangling_pairs_are_rejected_with_the_table_and_id() {
        let err = builder().add_pair("a", "zz", 1.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "co_purchase refers to item \"zz\", which is not among the version's items"
        );
        assert!(matches!(
            builder().add_embedding("nope", &[1.0, 0.0]),
            Err(ModelError::DanglingItem {
                table: "item_embeddings",
                ..
            })
        ));
    }

    #[test]
    fn nan_and_infinite_values_are_rejected() {
        assert!(matches!(
            builder().add_pair("a", "b", f32::NAN),
            Err(ModelError::NonFinite { field: "score", .. })
        ));
        assert!(matches!(
            builder().add_embedding("a", &[f32::INFINITY, 0.0]),
            Err(ModelError::NonFinite {
                field: "embedding",
                ..
            })
        ));
        assert!(matches!(
            builder().add_embedding_bytes("a", &[0, 0, 192, 127, 0, 0, 0, 0]),
            Err(ModelError::NonFinite { .. })
        ));
        let mut b = builder();
        assert!(matches!(
            b.add_item(item("d", f32::NAN)),
            Err(ModelError::NonFinite {
                field: "popularity",
                ..
            })
        ));
    }

    #[test]
    fn embeddings_of_the_wrong_dimension_are_rejected() {
        let err = builder().add_embedding_bytes("a", &[0; 12]).unwrap_err();
        assert!(matches!(
            err,
            ModelError::EmbeddingLength {
                bytes: 12,
                expected: 8,
                dim: 2,
                ..
            }
        ));
        let mut none = SnapshotBuilder::new(ModelVersion(1), 0, 1);
        none.add_item(item("a", 1.0)).unwrap();
        assert!(none.add_embedding("a", &[]).is_err());
    }

    #[test]
    fn duplicates_self_pairs_bad_ids_and_empty_versions_are_rejected() {
        let mut b = builder();
        assert!(matches!(
            b.add_item(item("a", 1.0)),
            Err(ModelError::DuplicateItem(_))
        ));
        assert!(matches!(
            b.add_pair("a", "a", 1.0),
            Err(ModelError::SelfPair(_))
        ));
        assert!(matches!(
            b.add_item(item(&"x".repeat(129), 1.0)),
            Err(ModelError::InvalidItemId { .. })
        ));
        b.add_embedding("a", &[1.0, 0.0]).unwrap();
        assert!(matches!(
            b.add_embedding("a", &[1.0, 0.0]),
            Err(ModelError::DuplicateEmbedding(_))
        ));
        assert!(matches!(
            SnapshotBuilder::new(ModelVersion(1), 0, 0).finish(),
            Err(ModelError::Empty)
        ));
    }
}
