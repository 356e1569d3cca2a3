//! `tandem import`: an order-history file into `items`, `orders` and `order_lines`.
//!
//! A blocking thread parses and cleans the file ([`super::orders`]) and streams order lines,
//! already encoded for the store's bulk copy ([`ImportLines`]), over a bounded channel; the
//! store writes them while the thread keeps reading. Orders and derived item rows
//! ([`super::derived_items`]) are small and collected in memory, then handed to the store too,
//! which stores everything in one transaction, updating a row only when it differs, so
//! importing the same file twice changes nothing ([`HistoryImport`]).
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
use crate::store::{HistoryImport, ImportItem, ImportLine, ImportLines, ImportOrder};

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

#[derive(Debug)]
struct OrderRow {
    customer: Option<Box<str>>,
    country: Option<Box<str>>,
    ordered_at: i64,
    lines: u32,
    /// Whether a line of it is a cancellation.
    cancelled: bool,
}

struct Parsed {
    report: RowReport,
    derived: DerivedItems,
    orders: HashMap<Box<str>, OrderRow>,
}

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
    let mut lines = ImportLines::new();
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
                cancelled: false,
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
        order.cancelled |= line_use == LineUse::Cancellation;
        let full = lines.push(ImportLine {
            order_id: line.order_id,
            line_no: order.lines,
            item_id: line.item_id,
            quantity: line.quantity,
            unit_price: line.unit_price,
        });
        rows += 1;
        if rows.is_multiple_of(8192) {
            tick();
        }
        if let Some(full) = full.filter(|_| !receiver_gone) {
            // The receiver only goes away when the import already failed.
            receiver_gone = chunks.blocking_send(full).is_err();
        }
    })?;
    let rest = lines.finish();
    if !rest.is_empty() && !receiver_gone {
        let _ = chunks.blocking_send(rest);
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
    let (sender, chunks) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let reader_options = options.clone();
    let reader = tokio::task::spawn_blocking(move || {
        parse_into_chunks(input, &reader_options, sender, tick.as_ref())
    });

    let mut import = HistoryImport::begin(pool).await?;
    let copied = import.copy_lines(chunks).await;
    let parsed = reader
        .await
        .map_err(|e| ImportError::Reader(e.to_string()))??;
    let order_lines = copied?;

    let Parsed {
        report,
        derived,
        orders,
    } = parsed;
    let mut cancelled_orders = 0;
    import
        .copy_orders(orders.iter().map(|(id, order)| {
            let cancelled = order.cancelled;
            cancelled_orders += usize::from(cancelled);
            ImportOrder {
                id,
                customer_id: order.customer.as_deref(),
                ordered_at: chrono::DateTime::from_timestamp(order.ordered_at, 0)
                    .unwrap_or_default(),
                country: order.country.as_deref(),
                cancelled,
            }
        }))
        .await?;
    let items = derived.finish();
    import
        .copy_items(items.iter().map(|item| ImportItem {
            id: &item.id,
            title: &item.title,
            category: item.category.as_deref(),
            price: item.price,
            product_group: estimators::variant_stem(&item.id),
        }))
        .await?;
    let changed = import.commit().await?;
    Ok(ImportReport {
        rows: report,
        items: items.len(),
        orders: orders.len(),
        cancelled_orders,
        order_lines,
        items_changed: changed.items,
        orders_changed: changed.orders,
        order_lines_changed: changed.order_lines,
        seconds: started.elapsed().as_secs_f64(),
    })
}
