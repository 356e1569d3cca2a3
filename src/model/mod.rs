//! The model snapshot: immutable in-memory tables built once per load and shared read-only.
//!
//! `build` turns rows into a validated [`Snapshot`] (pure, no I/O); `handle` holds the live
//! snapshot behind an `ArcSwap` so a reload swaps it atomically; `catalogue` makes the snapshot
//! that holds a batch of live catalogue changes; `text` is the title embedding training and
//! the live catalogue share.

mod build;
mod catalogue;
mod columns;
mod handle;
mod search;
mod snapshot;
pub mod text;

pub use build::{ItemRecord, SnapshotBuilder, DEFAULT_EMBEDDING_SEED};
pub use catalogue::{AddPolicy, CatalogueApplied, CatalogueItem};
pub use columns::{json_plain, Chunked, Csr, Interner, StrColumn};
pub use handle::ModelHandle;
pub use search::find_by_title;
pub use snapshot::{ItemAttributes, LoadStats, Rows, Snapshot, NO_CATEGORY, NO_GROUP};

/// Why a set of model rows does not make a valid snapshot.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The version has no items at all.
    #[error("model version has no items")]
    Empty,
    /// An item id appears twice in the item table.
    #[error("item {0:?} is listed twice")]
    DuplicateItem(String),
    /// An item id is empty, too long or has control characters.
    #[error("item id {id:?} is invalid: {reason}")]
    InvalidItemId {
        /// The offending id (truncated for display).
        id: String,
        /// What is wrong with it.
        reason: crate::domain::IdError,
    },
    /// A row refers to an item the version's item table does not have.
    #[error("{table} refers to item {id:?}, which is not among the version's items")]
    DanglingItem {
        /// Table the row came from.
        table: &'static str,
        /// The unknown id.
        id: String,
    },
    /// A number is NaN or infinite.
    #[error("{table} has a non-finite {field} for item {id:?}")]
    NonFinite {
        /// Table the row came from.
        table: &'static str,
        /// Column holding the value.
        field: &'static str,
        /// Item the row belongs to.
        id: String,
    },
    /// An item is listed as its own co-purchase neighbour.
    #[error("co_purchase pairs item {0:?} with itself")]
    SelfPair(String),
    /// An embedding has the wrong number of bytes for the version's dimension.
    #[error(
        "embedding of item {id:?} has {bytes} bytes, expected {expected} ({dim} dimensions of f32)"
    )]
    EmbeddingLength {
        /// Item the embedding belongs to.
        id: String,
        /// Bytes found.
        bytes: usize,
        /// Bytes expected.
        expected: usize,
        /// Dimension declared by the version.
        dim: usize,
    },
    /// An item has two embeddings.
    #[error("item {0:?} has more than one embedding")]
    DuplicateEmbedding(String),
    /// More pairs than the CSR offsets can index.
    #[error("too many co-purchase pairs ({0}) for one snapshot")]
    TooManyPairs(usize),
}
