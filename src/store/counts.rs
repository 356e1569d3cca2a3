//! Counting co-occurrences where the order history lives: one standard SQL query per table
//! over `order_lines`, which Postgres may run with parallel workers, so only the counts cross
//! the wire. The baskets are those [`super::history`] reads ([`BASKET_LINES`]), with their
//! items in the order of their first lines (`line_no`), as training counts adjacent lines.

use futures_util::TryStreamExt;
use sqlx::{PgPool, Row};

use super::history::BASKET_LINES;

/// The distinct items of each cleaned order before `$1` (all orders when null), with
/// baskets and items numbered (items in byte order of their ids, from 1), so the pair join and
/// its aggregate work on integers; `pos` numbers a basket's items by their first line, so
/// items are on adjacent lines when their positions differ by one (later repeats of an item
/// leave no gap, as in process). `line_no` is unique within an order, so positions do not tie.
fn numbered() -> String {
    format!(
        "WITH basket_items AS MATERIALIZED (
             SELECT l.order_id, l.item_id, min(l.line_no) AS first_line {BASKET_LINES}
             GROUP BY l.order_id, l.item_id
         ),
         numbered AS MATERIALIZED (
             SELECT order_id, item_id,
                    dense_rank() OVER (ORDER BY order_id) AS basket,
                    dense_rank() OVER (ORDER BY item_id COLLATE \"C\") AS item,
                    row_number() OVER (PARTITION BY order_id ORDER BY first_line) AS pos
             FROM basket_items
         )"
    )
}

/// Memory each sort or hash of the counting query may use before spilling to disk: the pair
/// aggregate holds one entry per co-occurring pair (about 110 bytes each).
const WORK_MEM: &str = "SET LOCAL work_mem = '1GB'";

/// Item and pair counts as Postgres counted them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatabaseCounts {
    /// Baskets counted.
    pub baskets: u64,
    /// Item ids.
    pub items: Vec<String>,
    /// Baskets holding each item.
    pub item_baskets: Vec<u64>,
    /// `(item, other, shared baskets, of them on adjacent lines)` by position in `items`, each
    /// unordered pair once.
    pub pairs: Vec<(u32, u32, u64, u64)>,
}

/// Counts baskets per item, and shared baskets per pair and in how many of them the pair is on
/// adjacent lines, over the orders before `until`.
pub async fn count_cooccurrences(
    pool: &PgPool,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<DatabaseCounts, sqlx::Error> {
    // One snapshot for the three statements, so they count the same orders.
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query(WORK_MEM).execute(&mut *tx).await?;
    let mut counts = DatabaseCounts::default();
    let numbered = numbered();
    let sql = format!(
        "{numbered} SELECT item, min(item_id), count(*), max(max(basket)) OVER ()
         FROM numbered GROUP BY item ORDER BY item"
    );
    let mut rows = sqlx::query(&sql).bind(until).fetch(&mut *tx);
    while let Some(row) = rows.try_next().await? {
        let (item, id): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        let (n, baskets): (i64, i64) = (row.try_get(2)?, row.try_get(3)?);
        if item != counts.items.len() as i64 + 1 {
            return Err(sqlx::Error::Protocol(format!(
                "item numbers out of order at {id}"
            )));
        }
        counts.items.push(id);
        counts.item_baskets.push(n.max(0) as u64);
        counts.baskets = baskets.max(0) as u64;
    }
    drop(rows);
    let sql = format!(
        "{numbered} SELECT a.item, b.item, count(*),
                count(*) FILTER (WHERE abs(a.pos - b.pos) = 1)
         FROM numbered a JOIN numbered b ON a.basket = b.basket AND a.item < b.item
         GROUP BY a.item, b.item"
    );
    let items = counts.items.len() as i64;
    let mut rows = sqlx::query(&sql).bind(until).fetch(&mut *tx);
    while let Some(row) = rows.try_next().await? {
        let (a, b): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let (n, adjacent): (i64, i64) = (row.try_get(2)?, row.try_get(3)?);
        if !(1..=items).contains(&a) || !(1..=items).contains(&b) {
            return Err(sqlx::Error::Protocol(format!(
                "pair ({a}, {b}) names an item the item count does not"
            )));
        }
        counts.pairs.push((
            (a - 1) as u32,
            (b - 1) as u32,
            n.max(0) as u64,
            adjacent.max(0) as u64,
        ));
    }
    drop(rows);
    tx.commit().await?;
    Ok(counts)
}
