//! The versioned model tables: their columns, resolving a version, streaming it into a
//! snapshot, writing a new version, and activating one.

use std::borrow::Cow;

use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Row};

use super::{copy_out, CopyRows, LoadError};
use crate::domain::ModelVersion;
use crate::model::{ItemRecord, Snapshot, SnapshotBuilder};

/// A table a version is stored in. With the constants below, the one place the model tables'
/// columns are named: the loader ([`load_snapshot`]) and the writer ([`write_version`]) build
/// their statements from these.
struct Table {
    name: &'static str,
    /// The columns the writer fills, in the order it sends each row's fields.
    written: &'static [&'static str],
    /// What the loader reads back, in the order it decodes the fields.
    read: &'static [&'static str],
}

/// Per item of a version: its popularity and the training baskets holding it.
const ITEM_STATS: Table = Table {
    name: "item_stats",
    written: &["version", "item_id", "popularity", "baskets"],
    read: &["item_id", "popularity"],
};

/// Per item and co-purchase neighbour: the score and the baskets behind it.
const CO_PURCHASE: Table = Table {
    name: "co_purchase",
    written: &["version", "item_id", "other_item_id", "score", "support"],
    read: &["item_id", "other_item_id", "score"],
};

/// Per item and content neighbour: the cosine of their title embeddings.
const CONTENT_NEIGHBOURS: Table = Table {
    name: "content_neighbours",
    written: &["version", "item_id", "other_item_id", "score"],
    read: &["item_id", "other_item_id", "score"],
};

/// Per item: the title embedding and the diversity embedding (NULL when the version has none),
/// as little-endian `f32` bytes.
const ITEM_EMBEDDINGS: Table = Table {
    name: "item_embeddings",
    written: &["version", "item_id", "embedding", "diversity"],
    read: &["item_id", "embedding", "diversity"],
};

/// The catalogue: the rows a version writes for its items (see [`ExistingItems`]), and what the
/// loader joins to `item_stats`, merchandising flags included. No column name is in both
/// tables, so the join's select list names them without their table.
const ITEMS: Table = Table {
    name: "items",
    written: &[
        "id",
        "title",
        "category",
        "price",
        "in_stock",
        "product_group",
    ],
    read: &[
        "title",
        "category",
        "price",
        "in_stock",
        "product_group",
        "coalesce(promoted, attributes->'promoted' = 'true'::jsonb, false)",
        "coalesce(margin, CASE WHEN jsonb_typeof(attributes->'margin') = 'number' \
         THEN (attributes->>'margin')::real END)",
        "attributes->>'image_link'",
    ],
};

/// The tables a written version touches, in the order `VACUUM` settles them.
const WRITTEN_TABLES: [&Table; 5] = [
    &ITEMS,
    &ITEM_STATS,
    &CO_PURCHASE,
    &CONTENT_NEIGHBOURS,
    &ITEM_EMBEDDINGS,
];

impl Table {
    /// The column a row is found by: the first one written.
    fn key(&self) -> &'static str {
        self.written[0]
    }

    fn written(&self) -> String {
        self.written.join(", ")
    }

    fn read(&self) -> String {
        self.read.join(", ")
    }

    /// The `COPY ... FROM STDIN` of the written columns.
    fn copy_in(&self) -> String {
        format!("COPY {} ({}) FROM STDIN", self.name, self.written())
    }
}

/// Which version to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    /// The `ready` version activated last; the newest ready one when none was ever activated.
    Active,
    /// The highest-numbered `ready` version.
    NewestReady,
    /// Exactly this version (must be `ready`).
    Exact(ModelVersion),
}

/// A `model_versions` row as `resolve` reads it: number, status, embedding dimensions, tuning
/// and the seed of the title embeddings (as text).
type VersionRow = (i64, String, i32, i32, Option<Value>, Option<String>);

/// A resolved version: its number, embedding dimensions, tuning (when tuned) and the seed of
/// its title embeddings.
type ResolvedVersion = (ModelVersion, usize, usize, Option<Value>, u64);

async fn resolve(
    conn: &mut sqlx::PgConnection,
    selector: VersionSelector,
) -> Result<ResolvedVersion, LoadError> {
    let row: Option<VersionRow> =
        match selector {
            VersionSelector::Active => sqlx::query_as(
                "SELECT version, status, embedding_dim, diversity_dim, tuning, params->'params'->>'seed'
                 FROM model_versions
                 WHERE status = 'ready'
                 ORDER BY activated_at DESC NULLS LAST, version DESC LIMIT 1",
            )
            .fetch_optional(&mut *conn)
            .await?,
            VersionSelector::NewestReady => sqlx::query_as(
                "SELECT version, status, embedding_dim, diversity_dim, tuning, params->'params'->>'seed'
                 FROM model_versions
                 WHERE status = 'ready' ORDER BY version DESC LIMIT 1",
            )
            .fetch_optional(&mut *conn)
            .await?,
            VersionSelector::Exact(v) => sqlx::query_as(
                "SELECT version, status, embedding_dim, diversity_dim, tuning, params->'params'->>'seed'
                 FROM model_versions
                 WHERE version = $1",
            )
            .bind(v.0)
            .fetch_optional(&mut *conn)
            .await?,
        };
    match (row, selector) {
        (None, VersionSelector::NewestReady | VersionSelector::Active) => {
            Err(LoadError::NoReadyVersion)
        }
        (None, VersionSelector::Exact(v)) => Err(LoadError::VersionNotFound(v)),
        (Some((version, status, _, _, _, _)), _) if status != "ready" => {
            Err(LoadError::VersionNotReady {
                version: ModelVersion(version),
                status,
            })
        }
        (Some((version, _, dim, diversity_dim, tuning, seed)), _) => Ok((
            ModelVersion(version),
            dim.max(0) as usize,
            diversity_dim.max(0) as usize,
            tuning,
            seed.and_then(|s| s.parse().ok())
                .unwrap_or(crate::model::DEFAULT_EMBEDDING_SEED),
        )),
    }
}

/// Loads a `ready` version with one streaming query per table and builds its snapshot.
pub async fn load_snapshot(
    pool: &PgPool,
    selector: VersionSelector,
) -> Result<Snapshot, LoadError> {
    let mut conn = pool.acquire().await?;
    // A load that stops early (a bad row, a cancelled task) leaves its COPY unfinished, and a
    // connection handed back in that state answers the next query with the copy's leftovers:
    // this one is closed, not pooled. Loads are rare; a connection costs milliseconds.
    conn.close_on_drop();
    // Rows in the order they were written: a parallel scan interleaves its workers' rows and
    // so can split an item's neighbours, while an item's neighbours that arrive together stay
    // in place in the snapshot (`CsrBuilder`: no second copy of the largest table). The
    // setting dies with the connection.
    sqlx::query("SET max_parallel_workers_per_gather = 0")
        .execute(&mut *conn)
        .await?;
    let (version, dim, diversity_dim, tuning, seed) = resolve(&mut conn, selector).await?;
    let invalid = |source| LoadError::Invalid { version, source };

    let mut phases = Vec::with_capacity(5);
    let mut phase = |name: &'static str, since: &mut std::time::Instant| {
        phases.push((name, since.elapsed().as_millis()));
        *since = std::time::Instant::now();
    };
    let mut since = std::time::Instant::now();
    // Capacities only: the version's statistics when they have the counts (counting 50
    // million co-purchase rows took 7 s), else a count; Postgres runs a count only when the
    // statistics lack its figure.
    let (item_stats, co_purchase) = (ITEM_STATS.name, CO_PURCHASE.name);
    let (items, pairs): (i64, i64) = sqlx::query_as(&format!(
        "SELECT coalesce(CASE WHEN jsonb_typeof(stats->'items') = 'number'
                               AND (stats->>'items')::numeric BETWEEN 0 AND 4294967295
                              THEN (stats->>'items')::numeric::bigint END,
                         (SELECT count(*) FROM {item_stats} WHERE version = $1)),
                coalesce(CASE WHEN jsonb_typeof(stats->'pairs') = 'number'
                               AND (stats->>'pairs')::numeric BETWEEN 0 AND 4294967295
                              THEN (stats->>'pairs')::numeric::bigint END,
                         CASE WHEN jsonb_typeof(stats->'co_purchase'->'pairs_kept') = 'number'
                               AND (stats->'co_purchase'->>'pairs_kept')::numeric
                                   BETWEEN 0 AND 4294967295
                              THEN (stats->'co_purchase'->>'pairs_kept')::numeric::bigint END,
                         (SELECT count(*) FROM {co_purchase} WHERE version = $1))
         FROM model_versions WHERE version = $1",
    ))
    .bind(version.0)
    .fetch_one(&mut *conn)
    .await?;
    let mut builder = SnapshotBuilder::new(version, dim, items.clamp(0, 1 << 25) as usize)
        .with_diversity_dim(diversity_dim);
    builder.reserve_pairs(pairs.clamp(0, 1 << 28) as usize);

    {
        // Items numbered by id, as training and `evaluate` number them: the number breaks ties
        // between equal scores, so a join plan that streamed the catalogue's order instead
        // would let the server list other items than `evaluate` scored.
        let (stats, items) = (ITEM_STATS.name, ITEMS.name);
        let statement = format!(
            "SELECT {}, {} FROM {stats} LEFT JOIN {items} ON {items}.{} = {stats}.item_id
             WHERE {stats}.version = $1 ORDER BY {stats}.item_id COLLATE \"C\"",
            ITEM_STATS.read(),
            ITEMS.read(),
            ITEMS.key(),
        );
        let mut rows = sqlx::query(&statement).bind(version.0).fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            tokio::task::consume_budget().await;
            builder
                .add_item(ItemRecord {
                    id: row.try_get(0)?,
                    popularity: row.try_get(1)?,
                    title: row.try_get(2)?,
                    category: row.try_get(3)?,
                    price: row.try_get(4)?,
                    in_stock: row.try_get::<Option<bool>, _>(5)?.unwrap_or(false),
                    product_group: row.try_get(6)?,
                    promoted: row.try_get(7)?,
                    margin: row.try_get(8)?,
                    image_link: row.try_get(9)?,
                })
                .map_err(invalid)?;
        }
    }
    phase("items", &mut since);
    read_neighbours(&mut conn, &CO_PURCHASE, version, |item, other, score| {
        builder.add_pair(item, other, score).map_err(invalid)
    })
    .await?;
    phase("co_purchase", &mut since);
    read_neighbours(
        &mut conn,
        &CONTENT_NEIGHBOURS,
        version,
        |item, other, score| {
            builder
                .add_content_pair(item, other, score)
                .map_err(invalid)
        },
    )
    .await?;
    phase("content_neighbours", &mut since);
    {
        let statement = format!(
            "SELECT {} FROM {} WHERE version = $1",
            ITEM_EMBEDDINGS.read(),
            ITEM_EMBEDDINGS.name
        );
        let mut rows = sqlx::query(&statement).bind(version.0).fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            tokio::task::consume_budget().await;
            let item: &str = row.try_get(0)?;
            if dim > 0 {
                builder
                    .add_embedding_bytes(item, row.try_get(1)?)
                    .map_err(invalid)?;
            }
            if let Some(diversity) = row.try_get::<Option<&[u8]>, _>(2)? {
                builder
                    .add_diversity_embedding_bytes(item, diversity)
                    .map_err(invalid)?;
            }
        }
    }
    drop(conn);
    phase("embeddings", &mut since);
    // Sorting rows and normalising vectors is CPU work: keep it off the async workers.
    let snapshot = tokio::task::spawn_blocking(move || builder.finish())
        .await
        .map_err(|e| LoadError::Task(e.to_string()))?
        .map_err(invalid)?;
    phase("build", &mut since);
    tracing::debug!(%version, ?phases, "snapshot read and built (milliseconds per phase)");
    Ok(snapshot.with_tuning(tuning).with_embedding_seed(seed))
}

/// Streams a neighbour table's `(item, other item, score)` rows of `version` into `add`. The
/// neighbour tables are most of a version's rows, so they come as a binary copy stream.
async fn read_neighbours(
    conn: &mut sqlx::PgConnection,
    table: &Table,
    version: ModelVersion,
    mut add: impl FnMut(&str, &str, f32) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    // `table` is one of ours and `version` an integer: formatting them in is safe.
    let statement = format!(
        "COPY (SELECT {} FROM {} WHERE version = {})
         TO STDOUT (FORMAT binary)",
        table.read(),
        table.name,
        version.0
    );
    copy_out::for_each_row(conn, &statement, |[item, other, score]| {
        add(
            copy_out::text(item)?,
            copy_out::text(other)?,
            copy_out::real(score)?,
        )
    })
    .await
}

/// What writing a version does to the catalogue rows (`items`) its items already have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingItems {
    /// Leaves them alone: they are the shop's. Only items the catalogue lacks get the
    /// version's rows (a trained version).
    Keep,
    /// Replaces them with the version's rows where they differ (a synthetic version owns its
    /// items).
    Replace,
}

/// One item of a version as the writer stores it: its statistics, and the catalogue row
/// written for it (see [`ExistingItems`]).
#[derive(Debug, Clone, Copy)]
pub struct ItemRow<'a> {
    /// Item id.
    pub id: &'a str,
    /// Title.
    pub title: &'a str,
    /// Category name.
    pub category: Option<&'a str>,
    /// Unit price.
    pub price: Option<f32>,
    /// Whether it can be sold now.
    pub in_stock: bool,
    /// Product group shared by variants of one product.
    pub product_group: Option<&'a str>,
    /// Popularity.
    pub popularity: f32,
    /// Training baskets holding it.
    pub baskets: u32,
}

/// A model version, or one batch of its items, as the writer reads it: items by number
/// `0..items()`, each with its neighbours (named by id: a neighbour may lie outside the batch)
/// and its vectors.
pub trait ModelRows {
    /// Number of items.
    fn items(&self) -> usize;

    /// The id of item `i`.
    fn id(&self, i: usize) -> &str;

    /// Item `i`.
    fn item(&self, i: usize) -> ItemRow<'_>;

    /// The co-purchase neighbours of item `i`: other item, score and support.
    fn co_purchase(&self, i: usize) -> impl Iterator<Item = (Cow<'_, str>, f32, u32)>;

    /// The content neighbours of item `i`: other item and score.
    fn content_neighbours(&self, i: usize) -> impl Iterator<Item = (Cow<'_, str>, f32)>;

    /// Whether the version has vectors (rows in `item_embeddings`).
    fn has_vectors(&self) -> bool;

    /// The title embedding of item `i` (empty when the version has only diversity vectors).
    fn embedding(&self, i: usize) -> &[f32];

    /// The diversity embedding of item `i`, when the version has them.
    fn diversity(&self, i: usize) -> Option<&[f32]>;
}

/// What a new version records in `model_versions` when it is begun.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    /// Dimensions of its title embeddings (0 = none).
    pub embedding_dim: usize,
    /// Dimensions of its diversity embeddings (0 = none).
    pub diversity_dim: usize,
    /// How it was made.
    pub params: &'a Value,
    /// What tuning chose (none when untuned).
    pub tuning: Option<&'a Value>,
}

/// Writes a new version: creates it `building`, writes each batch of `batches` in a
/// transaction of its own (a trained model is one batch; a synthetic one is generated batch by
/// batch as it is written), then marks it `ready` with the statistics `stats` makes of the
/// co-purchase rows written. On any error the version is marked `failed`.
pub async fn write_version<R: ModelRows>(
    pool: &PgPool,
    new: NewVersion<'_>,
    existing: ExistingItems,
    batches: impl IntoIterator<Item = R>,
    stats: impl FnOnce(u64) -> Value,
) -> Result<ModelVersion, sqlx::Error> {
    let version = begin_version(
        pool,
        new.embedding_dim,
        new.diversity_dim,
        new.params,
        new.tuning,
    )
    .await?;
    let mut pairs = 0;
    for batch in batches {
        match write_rows(pool, version, &batch, existing).await {
            Ok(written) => pairs += written,
            Err(e) => {
                // Best effort: the version is unloadable either way ('building' or 'failed').
                let _ = mark_failed(pool, version, &e.to_string()).await;
                return Err(e);
            }
        }
    }
    mark_ready(pool, version, &stats(pairs)).await?;
    Ok(version)
}

/// Writes `rows` into every table of `version` by COPY, in one transaction; returns the
/// co-purchase rows written.
async fn write_rows(
    pool: &PgPool,
    version: ModelVersion,
    rows: &impl ModelRows,
    existing: ExistingItems,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    write_items(&mut tx, rows, existing).await?;

    let mut copy = CopyRows::start(&mut tx, &ITEM_STATS.copy_in()).await?;
    for i in 0..rows.items() {
        let item = rows.item(i);
        copy.display(version)
            .text(item.id)
            .display(item.popularity)
            .display(item.baskets);
        copy.end_row().await?;
    }
    copy.finish().await?;

    let mut copy = CopyRows::start(&mut tx, &CO_PURCHASE.copy_in()).await?;
    for i in 0..rows.items() {
        for (other, score, support) in rows.co_purchase(i) {
            copy.display(version)
                .text(rows.id(i))
                .text(&other)
                .display(score)
                .display(support);
            copy.end_row().await?;
        }
    }
    let pairs = copy.finish().await?;

    if rows.has_vectors() {
        let mut copy = CopyRows::start(&mut tx, &ITEM_EMBEDDINGS.copy_in()).await?;
        for i in 0..rows.items() {
            copy.display(version)
                .text(rows.id(i))
                .f32_bytea(rows.embedding(i));
            match rows.diversity(i) {
                Some(diversity) => copy.f32_bytea(diversity),
                None => copy.null(),
            };
            copy.end_row().await?;
        }
        copy.finish().await?;
    }

    let mut copy = CopyRows::start(&mut tx, &CONTENT_NEIGHBOURS.copy_in()).await?;
    for i in 0..rows.items() {
        for (other, score) in rows.content_neighbours(i) {
            copy.display(version)
                .text(rows.id(i))
                .text(&other)
                .display(score);
            copy.end_row().await?;
        }
    }
    copy.finish().await?;
    tx.commit().await?;
    Ok(pairs)
}

/// Writes the catalogue rows of `rows`' items: COPY into a temporary table, then one insert
/// that treats the rows `items` already has as `existing` says.
async fn write_items(
    tx: &mut sqlx::PgConnection,
    rows: &impl ModelRows,
    existing: ExistingItems,
) -> Result<(), sqlx::Error> {
    let (items, columns) = (ITEMS.name, ITEMS.written());
    sqlx::query(&format!(
        "CREATE TEMP TABLE items_incoming ON COMMIT DROP AS SELECT {columns} FROM {items}
         WITH NO DATA"
    ))
    .execute(&mut *tx)
    .await?;
    let mut copy = CopyRows::start(
        &mut *tx,
        &format!("COPY items_incoming ({columns}) FROM STDIN"),
    )
    .await?;
    for i in 0..rows.items() {
        let item = rows.item(i);
        copy.text(item.id).text(item.title).opt_text(item.category);
        copy.opt_display(item.price);
        copy.display(item.in_stock).opt_text(item.product_group);
        copy.end_row().await?;
    }
    copy.finish().await?;
    sqlx::query(&insert_items(existing))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The insert from `items_incoming` into `items`, treating existing rows as `existing` says.
fn insert_items(existing: ExistingItems) -> String {
    let (items, columns, key) = (ITEMS.name, ITEMS.written(), ITEMS.key());
    let updated = &ITEMS.written[1..];
    match existing {
        ExistingItems::Keep => format!(
            "INSERT INTO {items} ({columns}) SELECT {columns} FROM items_incoming
             ON CONFLICT ({key}) DO NOTHING"
        ),
        ExistingItems::Replace => {
            let each = |form: &dyn Fn(&str) -> String| {
                updated
                    .iter()
                    .map(|c| form(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "INSERT INTO {items} ({columns})
                 SELECT DISTINCT ON ({key}) {columns} FROM items_incoming
                 ON CONFLICT ({key}) DO UPDATE SET {}, updated_at = now()
                 WHERE ({}) IS DISTINCT FROM ({})",
                each(&|c| format!("{c} = EXCLUDED.{c}")),
                each(&|c| format!("{items}.{c}")),
                each(&|c| format!("EXCLUDED.{c}")),
            )
        }
    }
}

/// Creates a version in status `building` whose items have embeddings of `embedding_dim`
/// dimensions and diversity embeddings of `diversity_dim` (0 = none), with what tuning chose
/// (none when untuned), and returns its number.
pub async fn begin_version(
    pool: &PgPool,
    embedding_dim: usize,
    diversity_dim: usize,
    params: &Value,
    tuning: Option<&Value>,
) -> Result<ModelVersion, sqlx::Error> {
    let dimension = |d: usize| {
        i32::try_from(d).map_err(|_| sqlx::Error::Protocol("embedding dimension too large".into()))
    };
    let (version,): (i64,) = sqlx::query_as(
        "INSERT INTO model_versions (status, embedding_dim, diversity_dim, params, tuning)
         VALUES ('building', $1, $2, $3, $4) RETURNING version",
    )
    .bind(dimension(embedding_dim)?)
    .bind(dimension(diversity_dim)?)
    .bind(params)
    .bind(tuning)
    .fetch_one(pool)
    .await?;
    Ok(ModelVersion(version))
}

/// Vacuums and analyses the model tables after a version is written ([`mark_ready`] does it
/// first): otherwise the first server to read the fresh rows sets their hint bits (writing the
/// pages again as it loads) and autovacuum starts on them while servers are busy. A freshly
/// written 1,000,000-item version took 61 s to its first load and 38 s to the next. Failure
/// (e.g. a role that does not own the tables) only costs that time, so it is logged, not
/// returned.
async fn settle_model_tables(pool: &PgPool) {
    let tables: Vec<&str> = WRITTEN_TABLES.iter().map(|t| t.name).collect();
    let statement = format!("VACUUM (ANALYZE) {}", tables.join(", "));
    // The simple protocol, one statement: VACUUM may not run inside a transaction block.
    if let Err(error) = sqlx::raw_sql(&statement).execute(pool).await {
        tracing::warn!(%error, "could not vacuum the model tables; the first load will be slower");
    }
}

/// Marks a completely written version `ready`, recording its statistics, once its tables are
/// vacuumed (see `settle_model_tables`).
pub async fn mark_ready(
    pool: &PgPool,
    version: ModelVersion,
    stats: &Value,
) -> Result<(), sqlx::Error> {
    settle_model_tables(pool).await;
    let done = sqlx::query(
        "UPDATE model_versions SET status = 'ready', ready_at = now(), stats = $2
         WHERE version = $1 AND status = 'building'",
    )
    .bind(version.0)
    .bind(stats)
    .execute(pool)
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(sqlx::Error::RowNotFound)
    }
}

/// The channel on which activations are announced (payload: the version number).
pub const ACTIVATION_CHANNEL: &str = "tandem_model_activated";

/// Makes a `ready` version the active one and tells every replica (NOTIFY on
/// [`ACTIVATION_CHANNEL`], delivered when the transaction commits).
pub async fn activate(pool: &PgPool, version: ModelVersion) -> Result<(), LoadError> {
    let mut tx = pool.begin().await?;
    let status: Option<(String,)> =
        sqlx::query_as("SELECT status FROM model_versions WHERE version = $1 FOR UPDATE")
            .bind(version.0)
            .fetch_optional(&mut *tx)
            .await?;
    match status {
        None => return Err(LoadError::VersionNotFound(version)),
        Some((status,)) if status != "ready" => {
            return Err(LoadError::VersionNotReady { version, status })
        }
        Some(_) => {}
    }
    sqlx::query("UPDATE model_versions SET activated_at = clock_timestamp() WHERE version = $1")
        .bind(version.0)
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(ACTIVATION_CHANNEL)
        .bind(version.0.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A connection that hears activations (LISTEN on [`ACTIVATION_CHANNEL`]).
pub struct ActivationListener(PgListener);

/// What an [`ActivationListener`] heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// An activation was announced.
    Activation,
    /// The connection dropped and came back: announcements may have been lost.
    Reconnected,
}

impl ActivationListener {
    /// Connects and listens.
    pub async fn connect(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(ACTIVATION_CHANNEL).await?;
        Ok(Self(listener))
    }

    /// Waits for the next announcement or reconnection.
    pub async fn next(&mut self) -> Result<Heard, sqlx::Error> {
        Ok(match self.0.try_recv().await? {
            Some(_) => Heard::Activation,
            None => Heard::Reconnected,
        })
    }
}

/// The ready version activated last, if one ever was. (Unlike [`VersionSelector::Active`],
/// no fall-back to the newest: a running replica changes version only when told to.)
pub async fn active_version(pool: &PgPool) -> Result<Option<ModelVersion>, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT version FROM model_versions WHERE status = 'ready' AND activated_at IS NOT NULL
         ORDER BY activated_at DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(v,)| ModelVersion(v)))
}

/// Marks a version whose build failed, so it is never loaded.
pub async fn mark_failed(
    pool: &PgPool,
    version: ModelVersion,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE model_versions SET status = 'failed', stats = jsonb_build_object('error', $2::text)
         WHERE version = $1",
    )
    .bind(version.0)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}
