//! `tandem import`: an order-history file into `items`, `orders` and `order_lines`.
//!
//! A blocking thread parses and cleans the file ([`super::orders`]) and streams order lines,
//! already encoded for COPY, over a bounded channel; the async side COPYs them into a
//! temporary table while the thread keeps reading. Orders and derived item rows
//! ([`super::derived_items`]) are small and collected in memory, then COPYed into temporary
//! tables too. Three upserts move everything into place in one transaction, updating a row
//! only when it differs (`IS DISTINCT FROM`), so importing the same file twice changes
//! nothing.
//!
//! What is stored: every well-formed product row, including cancellations (their orders
//! get `cancelled = true`) and rows with quantity or price <= 0 (the raw history keeps them;
//! training never counts them). Non-product rows and bad rows are not stored. An order's
//! time is its earliest line's; `line_no` numbers an order's stored lines in file order. An
//! existing item keeps its category (a shop's own taxonomy wins over the derived one);
//! title and price follow the latest import.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use foldhash::{HashMap, HashMapExt};
use serde::Serialize;
use sqlx::PgPool;

use super::derived_items::DerivedItems;
use super::estimators;
use super::orders::{self, LineUse, ReadError, ReadOptions, RowReport};
use crate::store::CopyRows;

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// What reading the file found.
    pub rows: RowReport,
    /// Distinct items in the file's stored lines.
    pub items: usize,
    /// Distinct orders stored (cancellations included).
    pub orders: usize,
    /// Cancelled orders among them.
    pub cancelled_orders: usize,
    /// Order lines stored.
    pub order_lines: u64,
    /// Item rows inserted or changed.
    pub items_changed: u64,
    /// Order rows inserted or changed.
    pub orders_changed: u64,
    /// Order-line rows inserted or changed.
    pub order_lines_changed: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl ImportReport {
    /// One line summarising the import.
    pub fn summary(&self) -> String {
        format!(
            "{}; stored {} items, {} orders ({} cancelled), {} lines; changed {} items, {} orders, {} lines",
            self.rows.summary(),
            self.items,
            self.orders,
            self.cancelled_orders,
            self.order_lines,
            self.items_changed,
            self.orders_changed,
            self.order_lines_changed
        )
    }
}

/// Why an import failed (it is all or nothing: nothing is stored on error).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Postgres failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The reading thread died.
    #[error("import reader failed: {0}")]
    Reader(String),
}

/// Text-format COPY encoding into a byte buffer (what [`CopyRows`] does, for a thread with
/// no connection).
struct CopyText(Vec<u8>);

impl CopyText {
    fn text(&mut self, value: &str) -> &mut Self {
        for &b in value.as_bytes() {
            match b {
                b'\\' => self.0.extend_from_slice(b"\\\\"),
                b'\t' => self.0.extend_from_slice(b"\\t"),
                b'\n' => self.0.extend_from_slice(b"\\n"),
                b'\r' => self.0.extend_from_slice(b"\\r"),
                _ => self.0.push(b),
            }
        }
        self.0.push(b'\t');
        self
    }

    fn display(&mut self, value: impl std::fmt::Display) -> &mut Self {
        use std::io::Write;
        let _ = write!(self.0, "{value}\t");
        self
    }

    fn null(&mut self) -> &mut Self {
        self.0.extend_from_slice(b"\\N\t");
        self
    }

    fn end_row(&mut self) {
        if let Some(last) = self.0.last_mut() {
            *last = b'\n';
        }
    }
}

#[derive(Debug)]
struct OrderRow {
    customer: Option<Box<str>>,
    country: Option<Box<str>>,
    ordered_at: i64,
    lines: u32,
}

struct Parsed {
    report: RowReport,
    derived: DerivedItems,
    orders: HashMap<Box<str>, OrderRow>,
}

const CHUNK_BYTES: usize = 1 << 20;

fn parse_into_chunks(
    input: Box<dyn Read + Send>,
    options: &ReadOptions,
    chunks: tokio::sync::mpsc::Sender<Vec<u8>>,
    tick: &(dyn Fn() + Send + Sync),
) -> Result<Parsed, ReadError> {
    let input = orders::decompressed(input).map_err(|source| ReadError::Io {
        path: "input".into(),
        source,
    })?;
    let mut rows = 0u64;
    let mut derived = DerivedItems::new();
    let mut orders: HashMap<Box<str>, OrderRow> = HashMap::with_capacity(1 << 15);
    let mut buffer = CopyText(Vec::with_capacity(CHUNK_BYTES + 4096));
    let mut receiver_gone = false;
    let report = orders::read_lines(input, options, |_, line, line_use| {
        derived.add(
            line.item_id,
            line.description,
            line.unit_price,
            line_use == LineUse::Basket,
        );
        let order = match orders.get_mut(line.order_id) {
            Some(order) => order,
            None => orders.entry(line.order_id.into()).or_insert(OrderRow {
                customer: None,
                country: None,
                ordered_at: line.ordered_at,
                lines: 0,
            }),
        };
        order.ordered_at = order.ordered_at.min(line.ordered_at);
        if order.customer.is_none() {
            order.customer = line.customer_id.map(Into::into);
        }
        if order.country.is_none() {
            order.country = line.country.map(Into::into);
        }
        order.lines += 1;
        buffer
            .text(line.order_id)
            .display(order.lines)
            .text(line.item_id)
            .display(line.quantity);
        match line.unit_price {
            Some(p) => buffer.display(p),
            None => buffer.null(),
        };
        buffer.end_row();
        rows += 1;
        if rows.is_multiple_of(8192) {
            tick();
        }
        if buffer.0.len() >= CHUNK_BYTES && !receiver_gone {
            let full = std::mem::replace(&mut buffer.0, Vec::with_capacity(CHUNK_BYTES + 4096));
            // The receiver only goes away when the import already failed.
            receiver_gone = chunks.blocking_send(full).is_err();
        }
    })?;
    if !buffer.0.is_empty() && !receiver_gone {
        let _ = chunks.blocking_send(buffer.0);
    }
    Ok(Parsed {
        report,
        derived,
        orders,
    })
}

/// Imports an order-history file (plain or gzip bytes) in one transaction; `tick` is called
/// now and then from the reading thread (for progress).
pub async fn import_orders(
    pool: &PgPool,
    input: Box<dyn Read + Send>,
    options: &ReadOptions,
    tick: Arc<dyn Fn() + Send + Sync>,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let (sender, mut chunks) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let reader_options = options.clone();
    let reader = tokio::task::spawn_blocking(move || {
        parse_into_chunks(input, &reader_options, sender, tick.as_ref())
    });

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
    let copied = {
        let mut copy = tx
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
        // Dropping the receiver stops the reader if the COPY failed.
        drop(chunks);
        match failed {
            Some(e) => {
                let _ = copy.abort("import failed").await;
                Err(e)
            }
            None => copy.finish().await,
        }
    };
    let parsed = reader
        .await
        .map_err(|e| ImportError::Reader(e.to_string()))??;
    let order_lines = copied?;

    let Parsed {
        report,
        derived,
        orders,
    } = parsed;
    let mut copy = CopyRows::start(
        &mut tx,
        "COPY orders_incoming (id, customer_id, ordered_at, country, cancelled) FROM STDIN",
    )
    .await?;
    let mut cancelled_orders = 0;
    for (id, order) in &orders {
        let cancelled = orders::is_cancellation(id);
        cancelled_orders += usize::from(cancelled);
        let at = chrono::DateTime::from_timestamp(order.ordered_at, 0).unwrap_or_default();
        copy.text(id)
            .opt_text(order.customer.as_deref())
            .text(&at.to_rfc3339())
            .opt_text(order.country.as_deref())
            .display(cancelled);
        copy.end_row().await?;
    }
    copy.finish().await?;
    let items = derived.finish();
    let mut copy = CopyRows::start(
        &mut tx,
        "COPY items_incoming (id, title, category, price, product_group) FROM STDIN",
    )
    .await?;
    for item in &items {
        copy.text(&item.id)
            .text(&item.title)
            .opt_text(item.category.as_deref());
        copy.opt_display(item.price)
            .opt_text(estimators::variant_stem(&item.id));
        copy.end_row().await?;
    }
    copy.finish().await?;

    // A category or product group the shop set itself wins over the derived one.
    let items_changed = sqlx::query(
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
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let orders_changed = sqlx::query(
        "INSERT INTO orders (id, customer_id, ordered_at, country, cancelled)
         SELECT id, customer_id, ordered_at, country, cancelled FROM orders_incoming
         ON CONFLICT (id) DO UPDATE SET customer_id = EXCLUDED.customer_id,
           ordered_at = EXCLUDED.ordered_at, country = EXCLUDED.country, cancelled = EXCLUDED.cancelled
         WHERE (orders.customer_id, orders.ordered_at, orders.country, orders.cancelled)
           IS DISTINCT FROM (EXCLUDED.customer_id, EXCLUDED.ordered_at, EXCLUDED.country, EXCLUDED.cancelled)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let order_lines_changed = sqlx::query(
        "INSERT INTO order_lines (order_id, line_no, item_id, quantity, unit_price)
         SELECT order_id, line_no, item_id, quantity, unit_price FROM lines_incoming
         ON CONFLICT (order_id, line_no) DO UPDATE SET item_id = EXCLUDED.item_id,
           quantity = EXCLUDED.quantity, unit_price = EXCLUDED.unit_price
         WHERE (order_lines.item_id, order_lines.quantity, order_lines.unit_price)
           IS DISTINCT FROM (EXCLUDED.item_id, EXCLUDED.quantity, EXCLUDED.unit_price)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(ImportReport {
        rows: report,
        items: items.len(),
        orders: orders.len(),
        cancelled_orders,
        order_lines,
        items_changed,
        orders_changed,
        order_lines_changed,
        seconds: started.elapsed().as_secs_f64(),
    })
}
