//! The versioned model tables: resolving a version, streaming it into a snapshot, and the
//! writes that create versions and catalogue rows.

use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::{PgPool, Row};

use super::{copy_out, CopyRows, LoadError};
use crate::domain::ModelVersion;
use crate::model::{ItemRecord, Snapshot, SnapshotBuilder};

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

/// A resolved version: its number, embedding dimensions and tuning (when tuned).
type ResolvedVersion = (ModelVersion, usize, usize, Option<Value>);

async fn resolve(
    conn: &mut sqlx::PgConnection,
    selector: VersionSelector,
) -> Result<ResolvedVersion, LoadError> {
    let row: Option<(i64, String, i32, i32, Option<Value>)> =
        match selector {
            VersionSelector::Active => sqlx::query_as(
                "SELECT version, status, embedding_dim, diversity_dim, tuning FROM model_versions
                 WHERE status = 'ready'
                 ORDER BY activated_at DESC NULLS LAST, version DESC LIMIT 1",
            )
            .fetch_optional(&mut *conn)
            .await?,
            VersionSelector::NewestReady => sqlx::query_as(
                "SELECT version, status, embedding_dim, diversity_dim, tuning FROM model_versions
                 WHERE status = 'ready' ORDER BY version DESC LIMIT 1",
            )
            .fetch_optional(&mut *conn)
            .await?,
            VersionSelector::Exact(v) => sqlx::query_as(
                "SELECT version, status, embedding_dim, diversity_dim, tuning FROM model_versions
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
        (Some((version, status, _, _, _)), _) if status != "ready" => {
            Err(LoadError::VersionNotReady {
                version: ModelVersion(version),
                status,
            })
        }
        (Some((version, _, dim, diversity_dim, tuning)), _) => Ok((
            ModelVersion(version),
            dim.max(0) as usize,
            diversity_dim.max(0) as usize,
            tuning,
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
    let (version, dim, diversity_dim, tuning) = resolve(&mut conn, selector).await?;
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
    let (items, pairs): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(CASE WHEN jsonb_typeof(stats->'items') = 'number'
                               AND (stats->>'items')::numeric BETWEEN 0 AND 4294967295
                              THEN (stats->>'items')::numeric::bigint END,
                         (SELECT count(*) FROM item_stats WHERE version = $1)),
                coalesce(CASE WHEN jsonb_typeof(stats->'pairs') = 'number'
                               AND (stats->>'pairs')::numeric BETWEEN 0 AND 4294967295
                              THEN (stats->>'pairs')::numeric::bigint END,
                         CASE WHEN jsonb_typeof(stats->'co_purchase'->'pairs_kept') = 'number'
                               AND (stats->'co_purchase'->>'pairs_kept')::numeric
                                   BETWEEN 0 AND 4294967295
                              THEN (stats->'co_purchase'->>'pairs_kept')::numeric::bigint END,
                         (SELECT count(*) FROM co_purchase WHERE version = $1))
         FROM model_versions WHERE version = $1",
    )
    .bind(version.0)
    .fetch_one(&mut *conn)
    .await?;
    let mut builder = SnapshotBuilder::new(version, dim, items.clamp(0, 1 << 25) as usize)
        .with_diversity_dim(diversity_dim);
    builder.reserve_pairs(pairs.clamp(0, 1 << 28) as usize);

    {
        let mut rows = sqlx::query(
            "SELECT s.item_id, s.popularity, i.title, i.category, i.price, i.in_stock,
                    i.product_group,
                    coalesce(i.attributes->'promoted' = 'true'::jsonb, false),
                    CASE WHEN jsonb_typeof(i.attributes->'margin') = 'number'
                         THEN (i.attributes->>'margin')::real END
             FROM item_stats s LEFT JOIN items i ON i.id = s.item_id
             WHERE s.version = $1",
        )
        .bind(version.0)
        .fetch(&mut *conn);
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
                })
                .map_err(invalid)?;
        }
    }
    phase("items", &mut since);
    read_neighbours(&mut conn, "co_purchase", version, |item, other, score| {
        builder.add_pair(item, other, score).map_err(invalid)
    })
    .await?;
    phase("co_purchase", &mut since);
    read_neighbours(
        &mut conn,
        "content_neighbours",
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
        let mut rows = sqlx::query(
            "SELECT item_id, embedding, diversity FROM item_embeddings WHERE version = $1",
        )
        .bind(version.0)
        .fetch(&mut *conn);
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
    Ok(snapshot.with_tuning(tuning))
}

/// Streams a neighbour table's `(item, other item, score)` rows of `version` into `add`. The
/// neighbour tables are most of a version's rows, so they come as a binary copy stream.
async fn read_neighbours(
    conn: &mut sqlx::PgConnection,
    table: &'static str,
    version: ModelVersion,
    mut add: impl FnMut(&str, &str, f32) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    // `table` is one of ours and `version` an integer: formatting them in is safe.
    let statement = format!(
        "COPY (SELECT item_id, other_item_id, score FROM {table} WHERE version = {})
         TO STDOUT (FORMAT binary)",
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
    const STATEMENT: &str =
        "VACUUM (ANALYZE) items, item_stats, co_purchase, content_neighbours, item_embeddings";
    // The simple protocol, one statement: VACUUM may not run inside a transaction block.
    if let Err(error) = sqlx::raw_sql(STATEMENT).execute(pool).await {
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

/// One catalogue row to insert or update.
#[derive(Debug, Clone, Copy)]
pub struct CatalogueRow<'a> {
    /// Item id.
    pub id: &'a str,
    /// Display title.
    pub title: &'a str,
    /// Category name.
    pub category: Option<&'a str>,
    /// Unit price.
    pub price: Option<f32>,
    /// Whether it can be sold now.
    pub in_stock: bool,
    /// Product group shared by variants of one product.
    pub product_group: Option<&'a str>,
}

/// Inserts or updates catalogue rows in bulk (COPY into a temporary table, then one upsert).
pub async fn upsert_catalogue<'a>(
    pool: &PgPool,
    rows: impl IntoIterator<Item = CatalogueRow<'a>>,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "CREATE TEMP TABLE items_incoming (id text, title text, category text, price real,
         in_stock boolean, product_group text) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await?;
    let mut copy = CopyRows::start(
        &mut tx,
        "COPY items_incoming (id, title, category, price, in_stock, product_group) FROM STDIN",
    )
    .await?;
    for row in rows {
        copy.text(row.id).text(row.title).opt_text(row.category);
        copy.opt_display(row.price);
        copy.display(row.in_stock).opt_text(row.product_group);
        copy.end_row().await?;
    }
    copy.finish().await?;
    let done = sqlx::query(
        "INSERT INTO items (id, title, category, price, in_stock, product_group)
         SELECT DISTINCT ON (id) id, title, category, price, in_stock, product_group
         FROM items_incoming
         ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, category = EXCLUDED.category,
           price = EXCLUDED.price, in_stock = EXCLUDED.in_stock,
           product_group = EXCLUDED.product_group, updated_at = now()
         WHERE (items.title, items.category, items.price, items.in_stock, items.product_group)
           IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.category, EXCLUDED.price,
                             EXCLUDED.in_stock, EXCLUDED.product_group)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}
