//! `tandem import --catalogue`: a shop's product feed into the live catalogue, through the
//! validation and the store code of `PUT /items`.
//!
//! The default columns are those of a Google Merchant Center feed (`id`, `title`,
//! `description`, `availability`, `price` such as `12.99 GBP`, `product_type`, `brand`,
//! `item_group_id`, `sale_price`); a plain CSV names its own with the flags of
//! [`FeedColumns`]. The delimiter is found from the header line: a tab if it has one, else a
//! comma. Files may be gzip.
//!
//! How fields map: `product_type` is the category, whole (`Home > Kitchen > Teacups`);
//! `item_group_id` the product group; `description` and the price's currency go to
//! `attributes`. A `sale_price` below the `price` is what the shopper pays: it becomes the
//! price (so `max_price` filters by it), the item is `promoted`, and the regular price is kept
//! as `attributes.regular_price`. A plain CSV may give stock as `true`/`false` (also
//! `1`/`0`, `yes`/`no`) in its own column instead of an availability.
//!
//! A parsing thread sends chunks of [`CHUNK_ITEMS`] items over a bounded channel; each chunk
//! is upserted in one transaction (and announced with `--notify`) while the next is read. A
//! bad row is reported by line and skipped; the rest of the file is imported.

use std::io::{BufRead, BufReader, Read};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgPool;

use crate::catalogue::ItemInput;
use crate::store::{self, StoredItem};

/// Items per upsert transaction.
pub const CHUNK_ITEMS: usize = 10_000;

/// Bad rows listed in a report (all are counted).
const LISTED_BAD_ROWS: usize = 20;

/// The columns a feed is read from (`None`: the feed has no such column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedColumns {
    /// Item id (required).
    pub id: String,
    /// Title (required).
    pub title: String,
    /// Description, kept in `attributes.description`.
    pub description: Option<String>,
    /// Merchant Center availability (`in stock`, `out of stock`, `preorder`, `backorder`).
    pub availability: Option<String>,
    /// Stock as a boolean, for a plain CSV (instead of `availability`).
    pub in_stock: Option<String>,
    /// Price, a number with an optional currency code (`12.99 GBP`).
    pub price: Option<String>,
    /// Sale price, as `price`.
    pub sale_price: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Brand.
    pub brand: Option<String>,
    /// Product group (variants).
    pub product_group: Option<String>,
    /// Promoted, as a boolean.
    pub promoted: Option<String>,
    /// Margin, a number from 0 to 1.
    pub margin: Option<String>,
}

impl Default for FeedColumns {
    /// The Google Merchant Center layout.
    fn default() -> Self {
        let some = |name: &str| Some(name.to_owned());
        Self {
            id: "id".into(),
            title: "title".into(),
            description: some("description"),
            availability: some("availability"),
            in_stock: None,
            price: some("price"),
            sale_price: some("sale_price"),
            category: some("product_type"),
            brand: some("brand"),
            product_group: some("item_group_id"),
            promoted: None,
            margin: None,
        }
    }
}

/// A row that was not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRow {
    /// Line number in the file (1 is the header).
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

/// What a feed import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FeedReport {
    /// Data rows read.
    pub rows: u64,
    /// Items created or replaced.
    pub items: u64,
    /// Rows not imported.
    pub bad_rows: u64,
    /// The first of them.
    pub first_bad_rows: Vec<BadRow>,
    /// Number of the last catalogue change written.
    pub last_change: i64,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl FeedReport {
    /// One line summarising the import.
    pub fn summary(&self) -> String {
        format!(
            "{} rows read, {} items stored, {} bad rows, in {:.1} s",
            self.rows, self.items, self.bad_rows, self.seconds
        )
    }
}

/// Why a feed import stopped (chunks already stored stay stored).
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The file could not be read.
    #[error("cannot read the feed: {0}")]
    Read(String),
    /// The header lacks a required column.
    #[error("the feed has no {0:?} column")]
    MissingColumn(String),
    /// Postgres failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Where each mapped column is in the header.
struct Positions {
    id: usize,
    title: usize,
    description: Option<usize>,
    availability: Option<usize>,
    in_stock: Option<usize>,
    price: Option<usize>,
    sale_price: Option<usize>,
    category: Option<usize>,
    brand: Option<usize>,
    product_group: Option<usize>,
    promoted: Option<usize>,
    margin: Option<usize>,
}

impl Positions {
    fn of(header: &csv::StringRecord, columns: &FeedColumns) -> Result<Self, FeedError> {
        let find = |name: &str| header.iter().position(|h| h.trim() == name);
        let required =
            |name: &String| find(name).ok_or_else(|| FeedError::MissingColumn(name.clone()));
        let optional = |name: &Option<String>| -> Result<Option<usize>, FeedError> {
            // A column the default layout names may be absent; one named by a flag may not.
            Ok(name.as_deref().and_then(find))
        };
        Ok(Self {
            id: required(&columns.id)?,
            title: required(&columns.title)?,
            description: optional(&columns.description)?,
            availability: optional(&columns.availability)?,
            in_stock: optional(&columns.in_stock)?,
            price: optional(&columns.price)?,
            sale_price: optional(&columns.sale_price)?,
            category: optional(&columns.category)?,
            brand: optional(&columns.brand)?,
            product_group: optional(&columns.product_group)?,
            promoted: optional(&columns.promoted)?,
            margin: optional(&columns.margin)?,
        })
    }
}

/// A price such as `12.99`, `12.99 GBP` or `GBP 12.99`: the amount and the currency, if any.
pub fn parse_price(text: &str) -> Result<(f64, Option<String>), String> {
    let mut amount = None;
    let mut currency = None;
    for part in text.split_whitespace() {
        if let Ok(value) = part.parse::<f64>() {
            if amount.replace(value).is_some() {
                return Err(format!("price {text:?} has two amounts"));
            }
        } else if part.len() == 3 && part.bytes().all(|b| b.is_ascii_alphabetic()) {
            currency = Some(part.to_ascii_uppercase());
        } else {
            return Err(format!(
                "price {text:?} is not an amount with a currency code"
            ));
        }
    }
    let amount = amount.ok_or_else(|| format!("price {text:?} has no amount"))?;
    Ok((amount, currency))
}

fn parse_flag(name: &str, text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" => Ok(true),
        "false" | "0" | "no" | "n" => Ok(false),
        _ => Err(format!("{name} {text:?} is not true or false")),
    }
}

/// The item a row describes.
fn row_item(record: &csv::StringRecord, at: &Positions) -> Result<StoredItem, String> {
    let field = |position: Option<usize>| {
        position
            .and_then(|p| record.get(p))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let id = field(Some(at.id)).ok_or("the id is empty")?;
    let title = field(Some(at.title)).ok_or("the title is empty")?;
    let mut attributes = Map::new();
    if let Some(description) = field(at.description) {
        attributes.insert("description".into(), Value::String(description.into()));
    }
    let mut price = None;
    if let Some(text) = field(at.price) {
        let (amount, currency) = parse_price(text)?;
        price = Some(amount);
        if let Some(currency) = currency {
            attributes.insert("currency".into(), Value::String(currency));
        }
    }
    let mut promoted = field(at.promoted)
        .map(|v| parse_flag("promoted", v))
        .transpose()?;
    if let Some(text) = field(at.sale_price) {
        let (sale, _) = parse_price(text).map_err(|e| format!("sale_{e}"))?;
        if price.is_some_and(|regular| sale < regular) {
            attributes.insert("regular_price".into(), price.into());
            price = Some(sale);
            promoted = Some(true);
        }
    }
    let input = ItemInput {
        id: None,
        title: Some(title.into()),
        category: Some(field(at.category).map(Into::into)),
        brand: Some(field(at.brand).map(Into::into)),
        product_group: Some(field(at.product_group).map(Into::into)),
        price: Some(price),
        in_stock: field(at.in_stock)
            .map(|v| parse_flag("in_stock", v))
            .transpose()?,
        availability: field(at.availability).map(Into::into),
        promoted,
        margin: Some(
            field(at.margin)
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|_| format!("margin {v:?} is not a number"))
                })
                .transpose()?,
        ),
        attributes: Some(attributes),
    };
    input.into_item(id)
}

/// What the parsing thread sends: a chunk of items, or the end with the counts.
enum Parsed {
    Chunk(Vec<StoredItem>),
    Done {
        rows: u64,
        bad_rows: u64,
        first_bad_rows: Vec<BadRow>,
    },
    Failed(FeedError),
}

/// Parses `input`, sending chunks of distinct items (a later row of an id replaces an
/// earlier one in its chunk) over `send`.
fn parse(
    input: Box<dyn Read + Send>,
    columns: FeedColumns,
    send: tokio::sync::mpsc::Sender<Parsed>,
) {
    let fail = |send: &tokio::sync::mpsc::Sender<Parsed>, error| {
        let _ = send.blocking_send(Parsed::Failed(error));
    };
    let mut buffered = BufReader::with_capacity(1 << 16, input);
    let delimiter = match buffered.fill_buf() {
        Ok(head) => {
            let first_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
            if first_line.contains(&b'\t') {
                b'\t'
            } else {
                b','
            }
        }
        Err(e) => return fail(&send, FeedError::Read(e.to_string())),
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        // Merchant Center's tab-separated feeds do not quote.
        .quoting(delimiter == b',')
        .from_reader(buffered);
    let positions = match reader.headers() {
        Ok(header) => match Positions::of(header, &columns) {
            Ok(positions) => positions,
            Err(error) => return fail(&send, error),
        },
        Err(e) => return fail(&send, FeedError::Read(e.to_string())),
    };
    let (mut rows, mut bad_rows, mut first_bad_rows) = (0u64, 0u64, Vec::new());
    let mut chunk: Vec<StoredItem> = Vec::with_capacity(CHUNK_ITEMS);
    let mut in_chunk: foldhash::HashMap<String, usize> = foldhash::HashMap::default();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                rows += 1;
                let line = record.position().map_or(0, |p| p.line());
                match row_item(&record, &positions) {
                    Ok(item) => match in_chunk.get(&item.id) {
                        Some(&at) => chunk[at] = item,
                        None => {
                            in_chunk.insert(item.id.clone(), chunk.len());
                            chunk.push(item);
                        }
                    },
                    Err(reason) => {
                        bad_rows += 1;
                        if first_bad_rows.len() < LISTED_BAD_ROWS {
                            first_bad_rows.push(BadRow { line, reason });
                        }
                    }
                }
                if chunk.len() == CHUNK_ITEMS {
                    in_chunk.clear();
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ITEMS));
                    if send.blocking_send(Parsed::Chunk(full)).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                // A malformed record (bad UTF-8, an unterminated quote) is a bad row too.
                rows += 1;
                bad_rows += 1;
                let line = e.position().map_or(0, |p| p.line());
                if first_bad_rows.len() < LISTED_BAD_ROWS {
                    first_bad_rows.push(BadRow {
                        line,
                        reason: e.to_string(),
                    });
                }
                if e.is_io_error() {
                    return fail(&send, FeedError::Read(e.to_string()));
                }
            }
        }
    }
    if !chunk.is_empty() && send.blocking_send(Parsed::Chunk(chunk)).is_err() {
        return;
    }
    let _ = send.blocking_send(Parsed::Done {
        rows,
        bad_rows,
        first_bad_rows,
    });
}

/// Imports a product feed; with `notify`, each chunk is announced so running servers apply
/// it at once (without, they apply it on their next announcement, reconnection or reload).
pub async fn import_feed(
    pool: &PgPool,
    input: Box<dyn Read + Send>,
    columns: FeedColumns,
    notify: bool,
) -> Result<FeedReport, FeedError> {
    let started = Instant::now();
    let (send, mut receive) = tokio::sync::mpsc::channel(2);
    let reader = tokio::task::spawn_blocking(move || parse(input, columns, send));
    let mut report = FeedReport::default();
    while let Some(parsed) = receive.recv().await {
        match parsed {
            Parsed::Chunk(items) => {
                report.last_change = store::upsert_items(pool, &items, notify).await?;
                report.items += items.len() as u64;
            }
            Parsed::Done {
                rows,
                bad_rows,
                first_bad_rows,
            } => {
                report.rows = rows;
                report.bad_rows = bad_rows;
                report.first_bad_rows = first_bad_rows;
            }
            Parsed::Failed(error) => return Err(error),
        }
    }
    reader
        .await
        .map_err(|e| FeedError::Read(format!("the reading thread failed: {e}")))?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_carry_an_optional_currency() {
        assert_eq!(
            parse_price("12.99 GBP").unwrap(),
            (12.99, Some("GBP".into()))
        );
        assert_eq!(parse_price("USD 3").unwrap(), (3.0, Some("USD".into())));
        assert_eq!(parse_price("4.5").unwrap(), (4.5, None));
        assert!(parse_price("cheap").is_err());
        assert!(parse_price("GBP").is_err());
    }

    #[test]
    fn a_merchant_center_row_maps_to_an_item() {
        let header = csv::StringRecord::from(vec![
            "id",
            "title",
            "description",
            "availability",
            "price",
            "product_type",
            "brand",
            "item_group_id",
            "sale_price",
        ]);
        let at = Positions::of(&header, &FeedColumns::default()).unwrap();
        let row = csv::StringRecord::from(vec![
            "T1",
            "Blue teacup",
            "Fine china",
            "out of stock",
            "10.00 GBP",
            "Home > Teacups",
            "Acme",
            "TEACUPS",
            "8.00 GBP",
        ]);
        let item = row_item(&row, &at).unwrap();
        assert_eq!(item.id, "T1");
        assert!(!item.in_stock);
        assert_eq!(item.price, Some(8.0));
        assert!(item.promoted);
        assert_eq!(item.category.as_deref(), Some("Home > Teacups"));
        assert_eq!(item.product_group.as_deref(), Some("TEACUPS"));
        assert_eq!(item.brand.as_deref(), Some("Acme"));
        assert_eq!(item.attributes["regular_price"], 10.0);
        assert_eq!(item.attributes["currency"], "GBP");
        assert_eq!(item.attributes["description"], "Fine china");
    }
}
