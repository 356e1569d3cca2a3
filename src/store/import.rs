//! Writing order history into `items`, `orders` and `order_lines`, all in one transaction
//! ([`HistoryImport`]): order lines arrive as COPY text while the file is still being read,
//! orders and items are COPYed once it is read, each into a temporary table, and three upserts
//! move everything into place, updating a row only when it differs (`IS DISTINCT FROM`).

use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::mpsc::Receiver;

use super::{CopyRows, CopyText};

/// One stored line of an order.
#[derive(Debug, Clone, Copy)]
pub struct ImportLine<'a> {
    /// Order id.
    pub order_id: &'a str,
    /// Number of the line within its order.
    pub line_no: u32,
    /// Item id.
    pub item_id: &'a str,
    /// Quantity.
    pub quantity: i32,
    /// Unit price, when known.
    pub unit_price: Option<f32>,
}

/// One order.
#[derive(Debug, Clone, Copy)]
pub struct ImportOrder<'a> {
    /// Order id.
    pub id: &'a str,
    /// Customer id, when known.
    pub customer_id: Option<&'a str>,
    /// When it was placed.
    pub ordered_at: chrono::DateTime<chrono::Utc>,
    /// Country, when known.
    pub country: Option<&'a str>,
    /// Whether it is a cancellation.
    pub cancelled: bool,
}

/// One item's catalogue row as the history describes it.
#[derive(Debug, Clone, Copy)]
pub struct ImportItem<'a> {
    /// Item id.
    pub id: &'a str,
    /// Title.
    pub title: &'a str,
    /// Category, used only where the catalogue has none.
    pub category: Option<&'a str>,
    /// Unit price.
    pub price: Option<f32>,
    /// Product group, used only where the catalogue has none.
    pub product_group: Option<&'a str>,
}

/// Order lines encoded for [`HistoryImport::copy_lines`] on a thread with no connection, handed
/// over in chunks of about a megabyte.
#[derive(Debug, Default)]
pub struct ImportLines(CopyText);

impl ImportLines {
    /// No lines yet.
    pub fn new() -> Self {
        Self(CopyText::new())
    }

    /// Appends `line`; returns a chunk to send when one is full.
    pub fn push(&mut self, line: ImportLine<'_>) -> Option<Vec<u8>> {
        self.0
            .text(line.order_id)
            .display(line.line_no)
            .text(line.item_id)
            .display(line.quantity)
            .opt_display(line.unit_price)
            .end_row();
        self.0.is_full().then(|| self.0.take())
    }

    /// The last chunk (empty when there is none).
    pub fn finish(mut self) -> Vec<u8> {
        self.0.take()
    }
}

/// Rows changed (inserted or updated) by an import.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportChanges {
    /// In `items`.
    pub items: u64,
    /// In `orders`.
    pub orders: u64,
    /// In `order_lines`.
    pub order_lines: u64,
}

/// An import of order history, all or nothing: [`HistoryImport::commit`] stores it, and
/// dropping it before stores nothing.
pub struct HistoryImport {
    tx: Transaction<'static, Postgres>,
}

impl HistoryImport {
    /// Begins the transaction and creates its temporary tables.
    pub async fn begin(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let mut tx = pool.begin().await?;
        for statement in [
            "CREATE TEMP TABLE lines_incoming (order_id text, line_no integer, item_id text,
             quantity integer, unit_price real) ON COMMIT DROP",
            "CREATE TEMP TABLE orders_incoming (id text, customer_id text, ordered_at timestamptz,
             country text, cancelled boolean) ON COMMIT DROP",
            "CREATE TEMP TABLE items_incoming (id text, title text, category text, price real,
             product_group text) ON COMMIT DROP",
        ] {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        Ok(Self { tx })
    }

    /// COPYs the chunks of [`ImportLines`] that arrive on `chunks` until its senders are gone,
    /// and returns the number of lines. If the COPY fails, `chunks` is dropped at once, which
    /// tells the sender to stop sending.
    pub async fn copy_lines(&mut self, mut chunks: Receiver<Vec<u8>>) -> Result<u64, sqlx::Error> {
        let mut copy = self
            .tx
            .copy_in_raw(
                "COPY lines_incoming (order_id, line_no, item_id, quantity, unit_price) FROM STDIN",
            )
            .await?;
        let mut failed = None;
        while let Some(chunk) = chunks.recv().await {
            if let Err(e) = copy.send(chunk).await {
                failed = Some(e);
                break;
            }
        }
        drop(chunks);
        match failed {
            Some(e) => {
                let _ = copy.abort("import failed").await;
                Err(e)
            }
            None => copy.finish().await,
        }
    }

    /// COPYs `orders`.
    pub async fn copy_orders<'a>(
        &mut self,
        orders: impl IntoIterator<Item = ImportOrder<'a>>,
    ) -> Result<(), sqlx::Error> {
        let mut copy = CopyRows::start(
            &mut self.tx,
            "COPY orders_incoming (id, customer_id, ordered_at, country, cancelled) FROM STDIN",
        )
        .await?;
        for order in orders {
            copy.text(order.id)
                .opt_text(order.customer_id)
                .text(&order.ordered_at.to_rfc3339())
                .opt_text(order.country)
                .display(order.cancelled);
            copy.end_row().await?;
        }
        copy.finish().await?;
        Ok(())
    }

    /// COPYs `items`.
    pub async fn copy_items<'a>(
        &mut self,
        items: impl IntoIterator<Item = ImportItem<'a>>,
    ) -> Result<(), sqlx::Error> {
        let mut copy = CopyRows::start(
            &mut self.tx,
            "COPY items_incoming (id, title, category, price, product_group) FROM STDIN",
        )
        .await?;
        for item in items {
            copy.text(item.id).text(item.title).opt_text(item.category);
            copy.opt_display(item.price).opt_text(item.product_group);
            copy.end_row().await?;
        }
        copy.finish().await?;
        Ok(())
    }

    /// Moves what was copied into `items`, `orders` and `order_lines`, and commits.
    pub async fn commit(mut self) -> Result<ImportChanges, sqlx::Error> {
        // A category or product group the shop set itself wins over the derived one.
        let items = sqlx::query(
            "INSERT INTO items (id, title, category, price, product_group)
             SELECT id, title, category, price, product_group FROM items_incoming
             ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, price = EXCLUDED.price,
               category = COALESCE(items.category, EXCLUDED.category),
               product_group = COALESCE(items.product_group, EXCLUDED.product_group),
               updated_at = now()
             WHERE (items.title, items.price, items.category, items.product_group)
               IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.price,
                                 COALESCE(items.category, EXCLUDED.category),
                                 COALESCE(items.product_group, EXCLUDED.product_group))",
        )
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        let orders = sqlx::query(
            "INSERT INTO orders (id, customer_id, ordered_at, country, cancelled)
             SELECT id, customer_id, ordered_at, country, cancelled FROM orders_incoming
             ON CONFLICT (id) DO UPDATE SET customer_id = EXCLUDED.customer_id,
               ordered_at = EXCLUDED.ordered_at, country = EXCLUDED.country, cancelled = EXCLUDED.cancelled
             WHERE (orders.customer_id, orders.ordered_at, orders.country, orders.cancelled)
               IS DISTINCT FROM (EXCLUDED.customer_id, EXCLUDED.ordered_at, EXCLUDED.country, EXCLUDED.cancelled)",
        )
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        let order_lines = sqlx::query(
            "INSERT INTO order_lines (order_id, line_no, item_id, quantity, unit_price)
             SELECT order_id, line_no, item_id, quantity, unit_price FROM lines_incoming
             ON CONFLICT (order_id, line_no) DO UPDATE SET item_id = EXCLUDED.item_id,
               quantity = EXCLUDED.quantity, unit_price = EXCLUDED.unit_price
             WHERE (order_lines.item_id, order_lines.quantity, order_lines.unit_price)
               IS DISTINCT FROM (EXCLUDED.item_id, EXCLUDED.quantity, EXCLUDED.unit_price)",
        )
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        self.tx.commit().await?;
        Ok(ImportChanges {
            items,
            orders,
            order_lines,
        })
    }
}
