//! Reading order history: the lines of cleaned baskets in one streaming query over
//! `order_lines` joined with `orders`, the purchases the storefront reported as events, and
//! the catalogue rows of their items.

use foldhash::HashMap;
use futures_util::TryStreamExt;
use sqlx::{PgPool, Row};

/// The lines that make baskets, of orders placed before `$1` (all orders when it is null):
/// quantity and price positive (non-products are never imported, and a cancelling line is
/// negative). The same rule as `OrderLine::line_use` == Basket in `src/offline/orders.rs`,
/// whatever an order's `cancelled` flag says: a line that cancels marks its whole order, but
/// the order's other lines count as a file read counts them. Order lines are `l`, orders `o`.
pub(super) const BASKET_LINES: &str = "
    FROM order_lines l JOIN orders o ON o.id = l.order_id
    WHERE l.quantity > 0
      AND (l.unit_price IS NULL OR l.unit_price > 0)
      AND ($1::timestamptz IS NULL OR o.ordered_at < $1)";

/// One line of a basket.
#[derive(Debug, Clone, Copy)]
pub struct BasketLine<'a> {
    /// Order id.
    pub order_id: &'a str,
    /// When the order was placed.
    pub ordered_at: chrono::DateTime<chrono::Utc>,
    /// Customer id, when known.
    pub customer_id: Option<&'a str>,
    /// Item id.
    pub item_id: &'a str,
    /// The line's number within its order.
    pub line_no: u32,
}

/// Calls `line` with every basket line of the orders placed before `until` (all orders when
/// `None`), streamed from one query.
pub async fn for_each_basket_line(
    pool: &PgPool,
    until: Option<chrono::DateTime<chrono::Utc>>,
    mut line: impl FnMut(BasketLine<'_>),
) -> Result<(), sqlx::Error> {
    let statement =
        format!("SELECT o.id, o.ordered_at, o.customer_id, l.item_id, l.line_no {BASKET_LINES}");
    let mut rows = sqlx::query(&statement).bind(until).fetch(pool);
    while let Some(row) = rows.try_next().await? {
        line(BasketLine {
            order_id: row.try_get(0)?,
            ordered_at: row.try_get(1)?,
            customer_id: row.try_get(2)?,
            item_id: row.try_get(3)?,
            // Order-preserving over all of i32: a writer may number lines from below zero.
            line_no: (i64::from(row.try_get::<i32, _>(4)?) - i64::from(i32::MIN)) as u32,
        });
    }
    Ok(())
}

/// One purchase reported through `POST /events`.
#[derive(Debug, Clone, Copy)]
pub struct PurchaseEvent<'a> {
    /// The shopper's pseudonym, else the session's; `None` when the event carried neither.
    pub buyer: Option<&'a str>,
    /// Whether `buyer` is a shopper (kept across visits) rather than a session.
    pub is_shopper: bool,
    /// When the purchase happened, as the storefront reported it.
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// Item id.
    pub item_id: &'a str,
}

/// Calls `purchase` with every purchase event that occurred before `until` (all when `None`),
/// streamed from one query in order of buyer, then time, so that consecutive calls of one
/// buyer can be grouped into baskets.
pub async fn for_each_purchase_event(
    pool: &PgPool,
    until: Option<chrono::DateTime<chrono::Utc>>,
    mut purchase: impl FnMut(PurchaseEvent<'_>),
) -> Result<(), sqlx::Error> {
    let mut rows = sqlx::query(
        "SELECT coalesce(shopper, session), shopper IS NOT NULL, occurred_at, item_id
         FROM events
         WHERE kind = 'purchase' AND ($1::timestamptz IS NULL OR occurred_at < $1)
         ORDER BY 1, 3, id",
    )
    .bind(until)
    .fetch(pool);
    while let Some(row) = rows.try_next().await? {
        purchase(PurchaseEvent {
            buyer: row.try_get(0)?,
            is_shopper: row.try_get(1)?,
            occurred_at: row.try_get(2)?,
            item_id: row.try_get(3)?,
        });
    }
    Ok(())
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
