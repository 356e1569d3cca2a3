//! Postgres, and every SQL statement of the crate: migrations; the model tables (loading a
//! version into a snapshot, writing and activating versions); order history (reading the
//! baskets, importing a file's orders, counting co-occurrences); storefront events and the
//! erasures announced to every replica; the live catalogue and the announcements of its changes.
//!
//! Loads stream one query per table (never a query per item); bulk writes use
//! `COPY FROM STDIN`. The other layers hand rows in and get rows out through the types here:
//! the store uses `domain`, `model` and `events` types, never `offline` ones.

mod catalogue;
mod copy;
mod copy_out;
mod counts;
mod erasures;
mod events;
mod history;
mod import;
mod model_tables;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::ConnectOptions;
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

pub use catalogue::{
    announce_catalogue, catalogue_changes_after, stored_item, update_item, upsert_items,
    CatalogueListener, StoredItem, StoredItemRow, CATALOGUE_CHANNEL,
};
pub use copy::{CopyRows, CopyText};
pub use counts::{count_cooccurrences, DatabaseCounts};
pub use erasures::{
    announce_erasure, erasures_after, last_erasure, Erasure, ErasureListener, ERASURE_CHANNEL,
};
pub use events::{delete_shopper_events, insert_events};
pub use history::{
    catalogue_of, for_each_basket_line, for_each_purchase_event, BasketLine, PurchaseEvent,
};
pub use import::{HistoryImport, ImportChanges, ImportItem, ImportLine, ImportLines, ImportOrder};
pub use model_tables::{
    activate, active_version, begin_version, load_snapshot, mark_failed, mark_ready, write_version,
    ActivationListener, ExistingItems, Heard, ItemRow, ModelRows, NewVersion, VersionSelector,
    ACTIVATION_CHANNEL,
};

use crate::domain::ModelVersion;
use crate::model::ModelError;

/// Why a model version could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No version has status `ready`.
    #[error("no model version is ready")]
    NoReadyVersion,
    /// The requested version does not exist.
    #[error("model version {0} does not exist")]
    VersionNotFound(ModelVersion),
    /// The requested version exists but is not `ready`.
    #[error("model version {version} is {status}, not ready")]
    VersionNotReady {
        /// The version asked for.
        version: ModelVersion,
        /// Its status.
        status: String,
    },
    /// The version's rows do not make a valid snapshot.
    #[error("model version {version} is invalid: {source}")]
    Invalid {
        /// The version.
        version: ModelVersion,
        /// What is wrong.
        source: ModelError,
    },
    /// Postgres failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The CPU-bound build task died.
    #[error("snapshot build task failed: {0}")]
    Task(String),
}

/// Builds a lazily-connecting pool: the service starts even while Postgres is down.
pub fn connect_lazy(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    // Loading a version reads millions of rows in one statement by design; sqlx's default
    // would warn about every such "slow statement" on every reload.
    let options = PgConnectOptions::from_str(url)?
        .application_name("tandem")
        .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(options))
}

/// Applies the migrations under `migrations/` (idempotent).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}
