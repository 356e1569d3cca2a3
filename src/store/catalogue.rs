//! The live catalogue in Postgres: upserting items (one API call or one chunk of a feed, each
//! in one transaction), withdrawing them, reading one, reading the changes after a position,
//! and the `NOTIFY` channel that announces them.
//!
//! Every writer takes the catalogue's transaction-scoped advisory lock before it draws change
//! numbers from `catalogue_seq`, so changes commit in the order of their numbers: a reader
//! that has seen every change up to N misses none by reading the rows above N later.

use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::model::CatalogueItem;

/// The channel a committed batch of catalogue changes is announced on (payload: its last
/// change number).
pub const CATALOGUE_CHANNEL: &str = "tandem_catalogue_changed";

/// Key of the advisory lock every catalogue writer holds until it commits.
const WRITE_LOCK: i64 = 0x0074_616e_6463_6174; // "tandcat"

/// One item as the catalogue stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    /// Item id (1 to 128 bytes).
    pub id: String,
    /// Display title.
    pub title: String,
    /// Category name.
    pub category: Option<String>,
    /// Brand.
    pub brand: Option<String>,
    /// Product group shared by the variants of one product.
    pub product_group: Option<String>,
    /// Unit price (finite, non-negative).
    pub price: Option<f32>,
    /// Whether it can be sold now.
    pub in_stock: bool,
    /// Whether merchandising promotes it.
    pub promoted: bool,
    /// Margin as a fraction of the price, in [0, 1].
    pub margin: Option<f32>,
    /// The shop's own attributes (a JSON object).
    pub attributes: Value,
    /// Withdrawn from recommendations (kept for history).
    pub withdrawn: bool,
}

/// A stored item with the position of its last catalogue change.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItemRow {
    /// The item.
    pub item: StoredItem,
    /// Its last change's number (none when it never changed through the catalogue).
    pub seq: Option<i64>,
}

/// The columns [`StoredItem`] is read from, in its field order.
const STORED_COLUMNS: &str = "id, title, category, brand, product_group, price, in_stock, \
     coalesce(promoted, attributes->'promoted' = 'true'::jsonb, false), \
     coalesce(margin, CASE WHEN jsonb_typeof(attributes->'margin') = 'number' \
                          THEN (attributes->>'margin')::real END), \
     attributes, withdrawn, catalogue_seq";

fn stored_row(row: &sqlx::postgres::PgRow) -> Result<StoredItemRow, sqlx::Error> {
    Ok(StoredItemRow {
        item: StoredItem {
            id: row.try_get(0)?,
            title: row.try_get(1)?,
            category: row.try_get(2)?,
            brand: row.try_get(3)?,
            product_group: row.try_get(4)?,
            price: row.try_get(5)?,
            in_stock: row.try_get(6)?,
            promoted: row.try_get(7)?,
            margin: row.try_get(8)?,
            attributes: row.try_get(9)?,
            withdrawn: row.try_get(10)?,
        },
        seq: row.try_get(11)?,
    })
}

/// Takes the writers' lock for the rest of `tx`.
async fn lock(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Announces the changes up to `seq` within `tx` (delivered when it commits).
async fn announce(tx: &mut Transaction<'_, Postgres>, seq: i64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CATALOGUE_CHANNEL)
        .bind(seq.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Sends a `NOTIFY` for the newest change, so running servers catch up (after a bulk import
/// that did not announce its chunks).
pub async fn announce_catalogue(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let last = last_catalogue_seq(&mut tx).await?;
    announce(&mut tx, last).await?;
    tx.commit().await?;
    Ok(last)
}

async fn last_catalogue_seq(tx: &mut Transaction<'_, Postgres>) -> Result<i64, sqlx::Error> {
    let (last,): (Option<i64>,) = sqlx::query_as("SELECT max(catalogue_seq) FROM items")
        .fetch_one(&mut **tx)
        .await?;
    Ok(last.unwrap_or(0))
}

/// Creates or replaces `items` (ids distinct) in one transaction, each with a new change
/// number, and announces them on [`CATALOGUE_CHANNEL`] when `notify`; returns the last number.
pub async fn upsert_items(
    pool: &PgPool,
    items: &[StoredItem],
    notify: bool,
) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock(&mut tx).await?;
    let last = upsert_locked(&mut tx, items, notify).await?;
    tx.commit().await?;
    Ok(last)
}

/// Upserts `items` within `tx`, which holds the writers' lock, and announces them when
/// `notify` (in the same statement: one round trip fewer while the lock is held).
async fn upsert_locked(
    tx: &mut Transaction<'_, Postgres>,
    items: &[StoredItem],
    notify: bool,
) -> Result<i64, sqlx::Error> {
    if items.is_empty() {
        return last_catalogue_seq(tx).await;
    }
    let announce = if notify {
        format!(", pg_notify('{CATALOGUE_CHANNEL}', max(catalogue_seq)::text)")
    } else {
        String::new()
    };
    let column = |f: fn(&StoredItem) -> Option<String>| items.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let titles: Vec<&str> = items.iter().map(|i| i.title.as_str()).collect();
    let categories = column(|i| i.category.clone());
    let brands = column(|i| i.brand.clone());
    let groups = column(|i| i.product_group.clone());
    let prices: Vec<Option<f32>> = items.iter().map(|i| i.price).collect();
    let in_stock: Vec<bool> = items.iter().map(|i| i.in_stock).collect();
    let promoted: Vec<bool> = items.iter().map(|i| i.promoted).collect();
    let margins: Vec<Option<f32>> = items.iter().map(|i| i.margin).collect();
    let attributes: Vec<String> = items.iter().map(|i| i.attributes.to_string()).collect();
    let withdrawn: Vec<bool> = items.iter().map(|i| i.withdrawn).collect();
    let row = sqlx::query(&format!(
        "WITH written AS (
             INSERT INTO items (id, title, category, brand, product_group, price, in_stock,
                                promoted, margin, attributes, withdrawn, catalogue_seq,
                                catalogue_changed_at, updated_at)
             SELECT u.id, u.title, u.category, u.brand, u.product_group, u.price, u.in_stock,
                    u.promoted, u.margin, u.attributes::jsonb, u.withdrawn,
                    nextval('catalogue_seq'), now(), now()
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::real[],
                         $7::bool[], $8::bool[], $9::real[], $10::text[], $11::bool[])
                  WITH ORDINALITY
                  AS u(id, title, category, brand, product_group, price, in_stock, promoted,
                       margin, attributes, withdrawn, n)
             ORDER BY u.n
             ON CONFLICT (id) DO UPDATE SET
                 title = excluded.title, category = excluded.category, brand = excluded.brand,
                 product_group = excluded.product_group, price = excluded.price,
                 in_stock = excluded.in_stock, promoted = excluded.promoted,
                 margin = excluded.margin, attributes = excluded.attributes,
                 withdrawn = excluded.withdrawn, catalogue_seq = excluded.catalogue_seq,
                 catalogue_changed_at = excluded.catalogue_changed_at,
                 updated_at = excluded.updated_at
             RETURNING catalogue_seq)
         SELECT max(catalogue_seq){announce} FROM written"
    ))
    .bind(&ids)
    .bind(&titles)
    .bind(&categories)
    .bind(&brands)
    .bind(&groups)
    .bind(&prices)
    .bind(&in_stock)
    .bind(&promoted)
    .bind(&margins)
    .bind(&attributes)
    .bind(&withdrawn)
    .fetch_one(&mut **tx)
    .await?;
    let last: Option<i64> = row.try_get(0)?;
    Ok(last.unwrap_or(0))
}

/// Changes one stored item in one transaction: `change` gets its current row (none when the
/// catalogue has no such item) and returns the row to store, or `Ok(None)` to leave it;
/// announces the change. Returns the number of the change stored.
pub async fn update_item<E>(
    pool: &PgPool,
    id: &str,
    change: impl FnOnce(Option<StoredItem>) -> Result<Option<StoredItem>, E>,
) -> Result<Result<Option<i64>, E>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The lock first (the sub-select), then the row.
    let current = sqlx::query(&format!(
        "SELECT {STORED_COLUMNS} FROM items, (SELECT pg_advisory_xact_lock($2)) AS locked
         WHERE id = $1 FOR UPDATE OF items"
    ))
    .bind(id)
    .bind(WRITE_LOCK)
    .fetch_optional(&mut *tx)
    .await?
    .map(|row| stored_row(&row))
    .transpose()?;
    let next = match change(current.map(|row| row.item)) {
        Ok(Some(next)) => next,
        Ok(None) => return Ok(Ok(None)),
        Err(error) => return Ok(Err(error)),
    };
    let last = upsert_locked(&mut tx, std::slice::from_ref(&next), true).await?;
    tx.commit().await?;
    Ok(Ok(Some(last)))
}

/// The stored row of `id`, if the catalogue has it.
pub async fn stored_item(pool: &PgPool, id: &str) -> Result<Option<StoredItemRow>, sqlx::Error> {
    sqlx::query(&format!("SELECT {STORED_COLUMNS} FROM items WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .map(|row| stored_row(&row))
        .transpose()
}

/// The current rows of the items changed after change `after`, oldest change first, at most
/// `limit` of them (one statement: what it returns is everything committed up to its last
/// number).
pub async fn catalogue_changes_after(
    pool: &PgPool,
    after: i64,
    limit: i64,
) -> Result<Vec<CatalogueItem>, sqlx::Error> {
    // Only what serving reads: the shop's attributes are not decoded for every change.
    let rows = sqlx::query(
        "SELECT id, title, category, product_group, price, in_stock,
                coalesce(promoted, attributes->'promoted' = 'true'::jsonb, false),
                coalesce(margin, CASE WHEN jsonb_typeof(attributes->'margin') = 'number'
                                      THEN (attributes->>'margin')::real END),
                withdrawn, catalogue_seq, attributes->>'image_link'
         FROM items WHERE catalogue_seq > $1 ORDER BY catalogue_seq LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(CatalogueItem {
                id: row.try_get(0)?,
                title: row.try_get(1)?,
                category: row.try_get(2)?,
                product_group: row.try_get(3)?,
                price: row.try_get(4)?,
                in_stock: row.try_get(5)?,
                promoted: row.try_get(6)?,
                margin: row.try_get(7)?,
                withdrawn: row.try_get(8)?,
                image_link: row.try_get(10)?,
                seq: row.try_get(9)?,
            })
        })
        .collect()
}

/// A connection that hears catalogue changes (LISTEN on [`CATALOGUE_CHANNEL`]).
pub struct CatalogueListener(PgListener);

impl CatalogueListener {
    /// Connects and listens, on a connection of its own beside `pool`'s (a listener holds
    /// its connection for good; the pool's are for queries).
    pub async fn connect(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let own = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*pool.connect_options()).clone());
        let mut listener = PgListener::connect_with(&own).await?;
        listener.listen(CATALOGUE_CHANNEL).await?;
        Ok(Self(listener))
    }

    /// Waits for the next announcement, or a reconnection (announcements may have been lost
    /// meanwhile); then drops the announcements already buffered, which the caller's next
    /// read covers as well.
    pub async fn next(&mut self) -> Result<(), sqlx::Error> {
        self.0.try_recv().await?;
        while self.0.next_buffered().is_some() {}
        Ok(())
    }
}
