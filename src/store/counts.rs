//! Counting co-occurrences where the order history lives: one standard SQL query per table
//! over `order_lines`, which Postgres may run with parallel workers, so only the counts cross
//! the wire. The baskets are those [`crate::offline::history::load_history`] reads.

use futures_util::TryStreamExt;
use sqlx::{PgPool, Row};

use foldhash::{HashMap, HashMapExt};

/// The distinct items of each cleaned order before `$1` (all orders when null).
const BASKETS: &str = "
    WITH basket_items AS (
        SELECT DISTINCT l.order_id, l.item_id
        FROM order_lines l JOIN orders o ON o.id = l.order_id
        WHERE NOT o.cancelled AND l.quantity > 0
          AND (l.unit_price IS NULL OR l.unit_price > 0)
          AND ($1::timestamptz IS NULL OR o.ordered_at < $1)
    )";

/// Item and pair counts as Postgres counted them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatabaseCounts {
    /// Baskets counted.
    pub baskets: u64,
    /// Item ids.
    pub items: Vec<String>,
    /// Baskets holding each item.
    pub item_baskets: Vec<u64>,
    /// `(item, other, shared baskets)` by position in `items`, each unordered pair once.
    pub pairs: Vec<(u32, u32, u64)>,
}

/// Counts baskets per item and shared baskets per pair over the orders before `until`.
pub async fn count_cooccurrences(
    pool: &PgPool,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<DatabaseCounts, sqlx::Error> {
    let baskets: i64 = sqlx::query_scalar(&format!(
        "{BASKETS} SELECT count(DISTINCT order_id) FROM basket_items"
    ))
    .bind(until)
    .fetch_one(pool)
    .await?;
    let mut counts = DatabaseCounts {
        baskets: baskets.max(0) as u64,
        ..DatabaseCounts::default()
    };
    let mut position: HashMap<String, u32> = HashMap::with_capacity(4096);
    let sql = format!(
        "{BASKETS} SELECT item_id, count(*) FROM basket_items GROUP BY item_id ORDER BY item_id"
    );
    let mut rows = sqlx::query(&sql).bind(until).fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let id: String = row.try_get(0)?;
        let n: i64 = row.try_get(1)?;
        position.insert(id.clone(), counts.items.len() as u32);
        counts.items.push(id);
        counts.item_baskets.push(n.max(0) as u64);
    }
    drop(rows);
    let sql = format!(
        "{BASKETS} SELECT a.item_id, b.item_id, count(*)
         FROM basket_items a JOIN basket_items b
           ON a.order_id = b.order_id AND a.item_id < b.item_id
         GROUP BY a.item_id, b.item_id"
    );
    let mut rows = sqlx::query(&sql).bind(until).fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let (a, b): (&str, &str) = (row.try_get(0)?, row.try_get(1)?);
        let n: i64 = row.try_get(2)?;
        let (Some(&a), Some(&b)) = (position.get(a), position.get(b)) else {
            return Err(sqlx::Error::Protocol(format!(
                "pair ({a}, {b}) names an item the item count does not"
            )));
        };
        counts.pairs.push((a.min(b), a.max(b), n.max(0) as u64));
    }
    Ok(counts)
}

/// Title, category and price of each item the `items` table has among `ids`, in the order
/// of `ids` (`None` for an id it lacks).
pub async fn catalogue_of(
    pool: &PgPool,
    ids: &[String],
) -> Result<Vec<Option<(String, Option<String>, Option<f32>)>>, sqlx::Error> {
    let mut out = vec![None; ids.len()];
    let position: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(p, id)| (id.as_str(), p))
        .collect();
    let mut rows = sqlx::query("SELECT id, title, category, price FROM items").fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let id: &str = row.try_get(0)?;
        if let Some(&p) = position.get(id) {
            out[p] = Some((row.try_get(1)?, row.try_get(2)?, row.try_get(3)?));
        }
    }
    Ok(out)
}
