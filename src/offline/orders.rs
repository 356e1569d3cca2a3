//! Order-history files: opening (plain or gzip), mapping columns, and parsing and cleaning
//! one row at a time (pure; the callers decide where rows go).
//!
//! The default layout is UCI Online Retail
//! (`InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country`);
//! the "Online Retail II" names (`Invoice`, `Price`, `Customer ID`) are recognised too, and any
//! other layout can be mapped column by column with a [`ColumnMap`].
//!
//! Cleaning rules, decided from the data (4,070 stock codes, 33 of them not starting with a
//! digit):
//! - a row whose order id starts with `C` and whose quantity is negative belongs to a
//!   cancellation: it is kept in the raw history (the order is stored with `cancelled =
//!   true`) but never counts in a basket. Every cancellation line of Online Retail is
//!   negative; a shop whose order ids merely start with `C` keeps its orders;
//! - a row with quantity <= 0 or unit price <= 0 (adjustments, damages, free samples) is kept
//!   in the raw history but never counts in a basket;
//! - an item code is a product unless it is one of Online Retail's charges, fees and vouchers,
//!   which are dropped entirely: `POST`, `DOT` (postage), `C2` (carriage), `M`/`m` (manual),
//!   `D` (discount), `S` (samples), `B` (bad debt), `BANK CHARGES`, `AMAZONFEE`, `CRUK`,
//!   `PADS`, `gift_0001_*` (vouchers). These are exactly the file's codes that do not start
//!   with a digit, except the `DCGS` goods of its dotcom gift shop (party bags, an ashtray);
//!   another shop's item ids that start with a letter stay products;
//! - a file without a quantity column counts each line once (one line per unit or per item);
//! - a row with a missing field, an unparsable number or date, or an id that is empty, longer
//!   than 128 bytes or has control characters is a bad row: counted and reported with its
//!   line number, never fatal.
//!
//! Ids are kept as the file spells them (`15056bl` and `15056BL` stay two items); customer ids
//! written as floats (`17850.0`) lose the `.0`. Timestamps carry no zone and are read as UTC.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime};
use csv::ByteRecord;
use flate2::read::MultiGzDecoder;

use crate::domain::{validate_id, IdError};

/// How many bad rows are reported by line number; the rest are only counted.
pub const REPORTED_BAD_ROWS: usize = 20;

/// Names of the columns of an order-history file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    /// Order (invoice) id.
    pub order: String,
    /// Item (stock code) id.
    pub item: String,
    /// Item description (optional column).
    pub description: String,
    /// Quantity (optional column: without it every line is one unit).
    pub quantity: String,
    /// Order timestamp.
    pub ordered_at: String,
    /// Unit price (optional column).
    pub price: String,
    /// Customer id (optional column).
    pub customer: String,
    /// Country (optional column).
    pub country: String,
}

impl Default for ColumnMap {
    fn default() -> Self {
        Self {
            order: "InvoiceNo".into(),
            item: "StockCode".into(),
            description: "Description".into(),
            quantity: "Quantity".into(),
            ordered_at: "InvoiceDate".into(),
            price: "UnitPrice".into(),
            customer: "CustomerID".into(),
            country: "Country".into(),
        }
    }
}

/// Which item codes are products.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductCodes {
    /// The Online Retail rule of the module doc (its charges, fees and vouchers dropped).
    #[default]
    OnlineRetail,
    /// Every code is a product (for shops whose files hold no fees or postage).
    All,
}

impl ProductCodes {
    /// Whether `item_id` is a product under this rule.
    pub fn is_product(self, item_id: &str) -> bool {
        match self {
            ProductCodes::OnlineRetail => is_product_code(item_id),
            ProductCodes::All => true,
        }
    }
}

/// How to read an order-history file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Column names.
    pub columns: ColumnMap,
    /// Which codes are products.
    pub product_codes: ProductCodes,
}

/// Other spellings of the default columns (the "Online Retail II" layout).
const ALIASES: [(&str, &str); 3] = [
    ("InvoiceNo", "Invoice"),
    ("UnitPrice", "Price"),
    ("CustomerID", "Customer ID"),
];

/// Why a header cannot be read with a column map.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// A required column is missing from the header.
    #[error("the header has no column {0:?} (columns: {1})")]
    MissingColumn(String, String),
}

/// Positions of the mapped columns in a file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnIndex {
    order: usize,
    item: usize,
    description: Option<usize>,
    quantity: Option<usize>,
    ordered_at: usize,
    price: Option<usize>,
    customer: Option<usize>,
    country: Option<usize>,
    /// Whether numbers may use a decimal comma (a semicolon-separated file).
    decimal_comma: bool,
}

impl ColumnIndex {
    /// Finds the columns of `map` in `header` (names compared without case or surrounding
    /// spaces; the defaults also match their Online Retail II spellings).
    pub fn from_header(header: &ByteRecord, map: &ColumnMap) -> Result<Self, HeaderError> {
        let names: Vec<String> = header
            .iter()
            .map(|f| {
                String::from_utf8_lossy(f)
                    .trim()
                    .trim_start_matches('\u{feff}')
                    .to_string()
            })
            .collect();
        let find = |wanted: &str| -> Option<usize> {
            let position = |name: &str| names.iter().position(|n| n.eq_ignore_ascii_case(name));
            position(wanted).or_else(|| {
                ALIASES
                    .iter()
                    .find(|(default, _)| default.eq_ignore_ascii_case(wanted))
                    .and_then(|(_, alias)| position(alias))
            })
        };
        let required = |wanted: &str| {
            find(wanted).ok_or_else(|| HeaderError::MissingColumn(wanted.into(), names.join(",")))
        };
        Ok(Self {
            order: required(&map.order)?,
            item: required(&map.item)?,
            description: find(&map.description),
            quantity: find(&map.quantity),
            ordered_at: required(&map.ordered_at)?,
            price: find(&map.price),
            customer: find(&map.customer),
            country: find(&map.country),
            decimal_comma: false,
        })
    }
}

/// One parsed row of an order-history file, borrowing from the record it was read from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderLine<'a> {
    /// Order id as written (cancellations keep their `C`).
    pub order_id: &'a str,
    /// Item id.
    pub item_id: &'a str,
    /// Description (may be empty).
    pub description: &'a str,
    /// Quantity (negative in cancellations and adjustments).
    pub quantity: i32,
    /// Order time, seconds since the Unix epoch (UTC).
    pub ordered_at: i64,
    /// Unit price, when the file has the column.
    pub unit_price: Option<f32>,
    /// Customer id, when known.
    pub customer_id: Option<&'a str>,
    /// Country, when known.
    pub country: Option<&'a str>,
}

/// What a parsed line is good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineUse {
    /// A product bought: counts in its order's basket.
    Basket,
    /// A line of a cancellation (order id starting with `C`, negative quantity): kept, never
    /// in a basket.
    Cancellation,
    /// Quantity or price not positive: kept, never in a basket.
    NonPositive,
    /// Not a product (postage, fees, vouchers, manual adjustments): dropped.
    NotAProduct,
}

impl OrderLine<'_> {
    /// Whether the line cancels an order (Online Retail's convention: a `C` order id and a
    /// negative quantity).
    pub fn is_cancellation(&self) -> bool {
        self.order_id.starts_with('C') && self.quantity < 0
    }

    /// Classifies the line by the cleaning rules of this module.
    pub fn line_use(&self, product_codes: ProductCodes) -> LineUse {
        if !product_codes.is_product(self.item_id) {
            LineUse::NotAProduct
        } else if self.is_cancellation() {
            LineUse::Cancellation
        } else if self.quantity <= 0 || self.unit_price.is_some_and(|p| p <= 0.0) {
            LineUse::NonPositive
        } else {
            LineUse::Basket
        }
    }
}

/// Online Retail's codes for charges, fees and adjustments: not products.
const ONLINE_RETAIL_CHARGES: [&str; 16] = [
    "POST",
    "DOT",
    "C2",
    "M",
    "m",
    "D",
    "S",
    "B",
    "BANK CHARGES",
    "AMAZONFEE",
    "CRUK",
    "PADS",
    // Adjustment and test codes reported for the later "Online Retail II" export, which the
    // same reader takes (that file is not at hand to check).
    "ADJUST",
    "ADJUST2",
    "TEST001",
    "TEST002",
];

/// Whether an item code is a product (see the module doc for the rule).
pub fn is_product_code(item_id: &str) -> bool {
    !(ONLINE_RETAIL_CHARGES.contains(&item_id) || item_id.starts_with("gift_0001_"))
}

/// Why a row was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowError {
    /// A required field is missing or empty.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A field is not valid UTF-8.
    #[error("{0} is not valid utf-8")]
    NotUtf8(&'static str),
    /// A number does not parse.
    #[error("{field} {value:?} is not a number")]
    BadNumber {
        /// The column.
        field: &'static str,
        /// The text found (shortened).
        value: String,
    },
    /// A timestamp does not parse.
    #[error("date {0:?} is not a recognised timestamp")]
    BadDate(String),
    /// An id cannot be used.
    #[error("{field} is invalid: {reason}")]
    BadId {
        /// The column.
        field: &'static str,
        /// What is wrong.
        reason: IdError,
    },
}

fn shortened(value: &str) -> String {
    value.chars().take(40).collect()
}

fn field<'r>(record: &'r ByteRecord, at: usize, name: &'static str) -> Result<&'r str, RowError> {
    let bytes = record.get(at).ok_or(RowError::Missing(name))?;
    std::str::from_utf8(bytes)
        .map(str::trim)
        .map_err(|_| RowError::NotUtf8(name))
}

fn optional<'r>(
    record: &'r ByteRecord,
    at: Option<usize>,
    name: &'static str,
) -> Result<Option<&'r str>, RowError> {
    match at {
        None => Ok(None),
        Some(at) => match record.get(at) {
            None => Ok(None),
            Some(_) => field(record, at, name).map(|v| (!v.is_empty()).then_some(v)),
        },
    }
}

fn id<'r>(value: &'r str, name: &'static str) -> Result<&'r str, RowError> {
    validate_id(value).map_err(|reason| match reason {
        IdError::Empty => RowError::Missing(name),
        reason => RowError::BadId {
            field: name,
            reason,
        },
    })?;
    Ok(value)
}

/// Parses an integer quantity; `"6"`, `"-2"` and `"6.0"` are accepted, and `"6,0"` where
/// `decimal_comma`.
fn parse_quantity(value: &str, decimal_comma: bool) -> Option<i32> {
    value.parse::<i32>().ok().or_else(|| {
        let f = parse_decimal(value, decimal_comma)?;
        (f.fract() == 0.0 && f.abs() <= f64::from(i32::MAX)).then_some(f as i32)
    })
}

/// Parses a decimal number written with a point or, where `decimal_comma` (a semicolon-
/// separated file, as spreadsheets in much of Europe export them), with a comma: `"2,55"`.
/// Elsewhere a comma is a thousands separator, so `"1,234"` stays unreadable rather than
/// becoming 1.234.
fn parse_decimal(value: &str, decimal_comma: bool) -> Option<f64> {
    value.parse::<f64>().ok().or_else(|| {
        let (whole, fraction) = value.split_once(',').filter(|_| decimal_comma)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !(digits(whole.strip_prefix('-').unwrap_or(whole)) && digits(fraction)) {
            return None;
        }
        format!("{whole}.{fraction}").parse::<f64>().ok()
    })
}

/// Parses a timestamp in the forms order-history exports use, as UTC seconds: ISO dates and
/// times (with `T`, fractional seconds or a zone), US `month/day/year` (Online Retail's),
/// `year/month/day`, `yyyymmdd`, and Unix time in seconds or milliseconds.
pub fn parse_timestamp(value: &str) -> Option<i64> {
    const FORMATS: [&str; 9] = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%m/%d/%Y %H:%M",
        "%m/%d/%Y %H:%M:%S",
        "%Y/%m/%d %H:%M:%S",
        "%Y/%m/%d %H:%M",
    ];
    const DATES: [&str; 3] = ["%Y-%m-%d", "%m/%d/%Y", "%Y/%m/%d"];
    // With a zone: `+01`, `+0100`, `+01:00` (`%#z`), after the time or a space.
    const ZONED: [&str; 6] = [
        "%Y-%m-%d %H:%M:%S%#z",
        "%Y-%m-%dT%H:%M:%S%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S %#z",
        "%Y-%m-%dT%H:%M%#z",
    ];
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return match value.len() {
            8 => NaiveDate::parse_from_str(value, "%Y%m%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp()),
            9 | 10 => value.parse().ok(),
            12 | 13 => value.parse::<i64>().ok().map(|ms| ms / 1000),
            _ => None,
        };
    }
    FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .or_else(|| {
            DATES
                .iter()
                .find_map(|f| NaiveDate::parse_from_str(value, f).ok())
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .map(|t| t.and_utc().timestamp())
        .or_else(|| {
            ZONED
                .iter()
                .find_map(|f| chrono::DateTime::parse_from_str(value, f).ok())
                .or_else(|| chrono::DateTime::parse_from_rfc3339(value).ok())
                .map(|zoned| zoned.timestamp())
        })
}

/// Customer ids exported as floats (`17850.0`) lose the `.0`.
fn customer_id(value: &str) -> &str {
    value.strip_suffix(".0").unwrap_or(value)
}

/// Parses one record with the columns of `columns`; pure and allocation-free on success.
pub fn parse_row<'r>(
    record: &'r ByteRecord,
    columns: &ColumnIndex,
) -> Result<OrderLine<'r>, RowError> {
    let order_id = id(field(record, columns.order, "order id")?, "order id")?;
    let item_id = id(field(record, columns.item, "item id")?, "item id")?;
    let description = optional(record, columns.description, "description")?.unwrap_or("");
    // Many shops export one line per unit, or baskets without quantities: a file without the
    // column counts each line once (only whether a basket holds an item matters to training).
    let quantity = match columns.quantity {
        None => 1,
        Some(at) => {
            let quantity_text = field(record, at, "quantity")?;
            if quantity_text.is_empty() {
                return Err(RowError::Missing("quantity"));
            }
            parse_quantity(quantity_text, columns.decimal_comma).ok_or_else(|| {
                RowError::BadNumber {
                    field: "quantity",
                    value: shortened(quantity_text),
                }
            })?
        }
    };
    let date_text = field(record, columns.ordered_at, "date")?;
    if date_text.is_empty() {
        return Err(RowError::Missing("date"));
    }
    let ordered_at =
        parse_timestamp(date_text).ok_or_else(|| RowError::BadDate(shortened(date_text)))?;
    let unit_price = match optional(record, columns.price, "price")? {
        None => None,
        Some(text) => Some(
            parse_decimal(text, columns.decimal_comma)
                .map(|p| p as f32)
                .filter(|p| p.is_finite())
                .ok_or_else(|| RowError::BadNumber {
                    field: "price",
                    value: shortened(text),
                })?,
        ),
    };
    let customer_id = match optional(record, columns.customer, "customer id")? {
        None => None,
        Some(c) => Some(id(customer_id(c), "customer id")?),
    };
    let country = optional(record, columns.country, "country")?;
    Ok(OrderLine {
        order_id,
        item_id,
        description,
        quantity,
        ordered_at,
        unit_price,
        customer_id,
        country,
    })
}

/// A bad row: its line number in the file and why it was rejected.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BadRow {
    /// 1-based line number (the header is line 1).
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// Counts of what reading a file found.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RowReport {
    /// Data rows read (without the header).
    pub rows: u64,
    /// Rows that count in a basket.
    pub basket_lines: u64,
    /// Rows of cancellations.
    pub cancellation_lines: u64,
    /// Rows with quantity or price not positive.
    pub non_positive_lines: u64,
    /// Rows that are not products (dropped).
    pub not_a_product_lines: u64,
    /// Rows rejected as bad.
    pub bad_rows: u64,
    /// The first [`REPORTED_BAD_ROWS`] bad rows.
    pub first_bad_rows: Vec<BadRow>,
    /// Bytes of (decompressed) input read.
    pub bytes: u64,
    /// Whether the file had no quantity column (each line then counts once).
    pub without_quantity: bool,
}

impl RowReport {
    fn count(&mut self, line_use: LineUse) {
        match line_use {
            LineUse::Basket => self.basket_lines += 1,
            LineUse::Cancellation => self.cancellation_lines += 1,
            LineUse::NonPositive => self.non_positive_lines += 1,
            LineUse::NotAProduct => self.not_a_product_lines += 1,
        }
    }

    /// What to do when most rows were dropped as not products: a shop whose item ids happen
    /// to be Online Retail's codes for charges would otherwise import next to nothing without
    /// knowing why.
    pub fn product_codes_hint(&self) -> Option<String> {
        (self.not_a_product_lines > 0 && self.not_a_product_lines * 2 >= self.rows).then(|| {
            format!(
                "{} of {} rows were dropped as not products: by default the codes Online \
                 Retail uses for postage, fees and vouchers (POST, DOT, M, D, S, ...) are not \
                 products; if this file's item ids are all products, pass \
                 --all-codes-are-products",
                self.not_a_product_lines, self.rows
            )
        })
    }

    /// One line summarising the counts.
    pub fn summary(&self) -> String {
        format!(
            "{} rows: {} in baskets, {} cancellation lines, {} with quantity or price <= 0, \
             {} not products, {} bad",
            self.rows,
            self.basket_lines,
            self.cancellation_lines,
            self.non_positive_lines,
            self.not_a_product_lines,
            self.bad_rows
        )
    }
}

/// Why a file could not be read at all (bad rows never end up here).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The CSV reader failed (an I/O error while decompressing or reading).
    #[error("cannot read order history: {0}")]
    Csv(#[from] csv::Error),
    /// The header does not have the needed columns.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The file has no header row.
    #[error("order history is empty (no header row)")]
    NoHeader,
}

/// Wraps `reader` in a gzip decoder when its first bytes are the gzip magic number.
pub fn decompressed<'a>(reader: impl Read + Send + 'a) -> io::Result<Box<dyn Read + Send + 'a>> {
    let mut buffered = BufReader::with_capacity(1 << 16, reader);
    let head = buffered.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(MultiGzDecoder::new(buffered)))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Opens an order-history file, plain or gzip (detected by its magic bytes).
pub fn open(path: &Path) -> Result<Box<dyn Read + Send>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    decompressed(file).map_err(io)
}

/// Counts the bytes that pass through a reader (for progress).
pub struct CountingReader<R> {
    inner: R,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> CountingReader<R> {
    /// Wraps `inner`; `bytes` grows by what is read.
    pub fn new(inner: R, bytes: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self { inner, bytes }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// The field delimiter of a file that starts with `head`: whichever of comma, tab, semicolon
/// and bar its header line holds most (spreadsheets export semicolons where the decimal mark
/// is a comma); a comma when it holds none.
fn delimiter_of(head: &[u8]) -> u8 {
    const CANDIDATES: [u8; 4] = [b',', b'\t', b';', b'|'];
    let mut counts = [0usize; CANDIDATES.len()];
    // Outside quotes only: a quoted column name may hold a comma.
    let mut quoted = false;
    for &b in head.iter().take_while(|&&b| b != b'\n') {
        if b == b'"' {
            quoted = !quoted;
        } else if let Some(at) = CANDIDATES.iter().position(|&d| d == b && !quoted) {
            counts[at] += 1;
        }
    }
    // The first of the most frequent, so a header with none of them is comma-separated.
    let best = (0..CANDIDATES.len()).fold(
        0,
        |best, at| if counts[at] > counts[best] { at } else { best },
    );
    CANDIDATES[best]
}

/// Reads every row of an order-history CSV, calling `on_line` with each well-formed product
/// row (any [`LineUse`] but `NotAProduct`) and its line number; bad rows are counted in the
/// returned report. Only I/O failures and an unusable header are errors.
pub fn read_lines(
    input: impl Read,
    options: &ReadOptions,
    mut on_line: impl FnMut(u64, &OrderLine<'_>, LineUse),
) -> Result<RowReport, ReadError> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let delimiter = delimiter_of(input.fill_buf().map_err(csv::Error::from)?);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .delimiter(delimiter)
        .buffer_capacity(1 << 16)
        .from_reader(input);
    let mut record = ByteRecord::new();
    if !reader.read_byte_record(&mut record)? {
        return Err(ReadError::NoHeader);
    }
    let columns = ColumnIndex {
        decimal_comma: delimiter == b';',
        ..ColumnIndex::from_header(&record, &options.columns)?
    };
    let mut report = RowReport {
        without_quantity: columns.quantity.is_none(),
        ..RowReport::default()
    };
    while reader.read_byte_record(&mut record)? {
        let line = record.position().map_or(0, |p| p.line());
        report.bytes = record.position().map_or(0, |p| p.byte());
        if record.len() == 1
            && record
                .get(0)
                .is_some_and(|f| f.iter().all(u8::is_ascii_whitespace))
        {
            continue; // blank line
        }
        report.rows += 1;
        match parse_row(&record, &columns) {
            Ok(parsed) => {
                let line_use = parsed.line_use(options.product_codes);
                report.count(line_use);
                if line_use != LineUse::NotAProduct {
                    on_line(line, &parsed, line_use);
                }
            }
            Err(e) => {
                report.bad_rows += 1;
                if report.first_bad_rows.len() < REPORTED_BAD_ROWS {
                    report.first_bad_rows.push(BadRow {
                        line,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n";

    fn lines(body: &str) -> (Vec<(u64, String, String, LineUse)>, RowReport) {
        let text = format!("{HEADER}{body}");
        let mut got = Vec::new();
        let report = read_lines(text.as_bytes(), &ReadOptions::default(), |n, l, u| {
            got.push((n, l.order_id.to_string(), l.item_id.to_string(), u))
        })
        .unwrap();
        (got, report)
    }

    fn record(fields: &[&str]) -> ByteRecord {
        ByteRecord::from(fields.to_vec())
    }

    fn columns() -> ColumnIndex {
        let header: Vec<&str> = HEADER.trim().split(',').collect();
        ColumnIndex::from_header(&record(&header), &ColumnMap::default()).unwrap()
    }

    #[test]
    fn a_plain_row_parses_with_customer_and_utc_time() {
        let r = record(&[
            "536365",
            "85123A",
            "WHITE HANGING HEART T-LIGHT HOLDER",
            "6",
            "2010-12-01 08:26:00",
            "2.55",
            "17850.0",
            "United Kingdom",
        ]);
        let line = parse_row(&r, &columns()).unwrap();
        assert_eq!(line.order_id, "536365");
        assert_eq!(line.item_id, "85123A");
        assert_eq!(line.quantity, 6);
        assert_eq!(line.unit_price, Some(2.55));
        assert_eq!(line.customer_id, Some("17850"));
        assert_eq!(line.country, Some("United Kingdom"));
        assert_eq!(line.ordered_at, 1_291_191_960);
        assert_eq!(line.line_use(ProductCodes::OnlineRetail), LineUse::Basket);
    }

    #[test]
    fn quoted_commas_in_descriptions_stay_in_the_description() {
        let (got, report) = lines(
            "536365,22633,\"HAND WARMER, UNION JACK\",6,2010-12-01 08:26:00,1.85,17850.0,United Kingdom\n",
        );
        assert_eq!(report.basket_lines, 1);
        assert_eq!(got[0].2, "22633");
        let r = record(&[
            "1",
            "22633",
            "HAND WARMER, UNION JACK",
            "6",
            "2010-12-01 08:26:00",
            "1.85",
            "",
            "",
        ]);
        assert_eq!(
            parse_row(&r, &columns()).unwrap().description,
            "HAND WARMER, UNION JACK"
        );
    }

    #[test]
    fn a_missing_customer_is_kept_as_none() {
        let r = record(&[
            "536414",
            "22139",
            "",
            "56",
            "2010-12-01 11:52:00",
            "0",
            "",
            "United Kingdom",
        ]);
        let line = parse_row(&r, &columns()).unwrap();
        assert_eq!(line.customer_id, None);
        assert_eq!(line.description, "");
        assert_eq!(
            line.line_use(ProductCodes::OnlineRetail),
            LineUse::NonPositive,
            "price 0 never counts"
        );
    }

    #[test]
    fn cancellations_non_positive_rows_and_non_products_are_classified() {
        let (got, report) = lines(concat!(
            "C536379,22556,PLASTERS IN TIN CIRCUS PARADE,-12,2010-12-01 09:41:00,1.65,14527.0,United Kingdom\n",
            "536380,POST,POSTAGE,1,2010-12-01 09:41:00,18,12583.0,France\n",
            "536381,gift_0001_20,Dotcomgiftshop Gift Voucher £20.00,1,2010-12-01 09:41:00,17.02,,United Kingdom\n",
            "536382,22139,damaged,-5,2010-12-01 09:41:00,0,,United Kingdom\n",
            "536383,DCGSSGIRL,GIRLS PARTY BAG,1,2010-12-01 09:41:00,3.29,,United Kingdom\n",
            "536384,BANK CHARGES,Bank Charges,1,2010-12-01 09:41:00,15,,United Kingdom\n",
        ));
        let uses: Vec<LineUse> = got.iter().map(|g| g.3).collect();
        assert_eq!(
            uses,
            [LineUse::Cancellation, LineUse::NonPositive, LineUse::Basket]
        );
        assert_eq!(report.not_a_product_lines, 3);
        assert_eq!(report.rows, 6);
        assert_eq!(got[2].2, "DCGSSGIRL");
    }

    #[test]
    fn bad_rows_are_counted_with_line_numbers_and_do_not_stop_reading() {
        let long = "9".repeat(129);
        let body = format!(
            "1,85123A,X,six,2010-12-01 08:26:00,2.55,,UK\n\
             2,85123A,X,6,yesterday,2.55,,UK\n\
             3,85123A,X,6,2010-12-01 08:26:00,cheap,,UK\n\
             4,{long},X,6,2010-12-01 08:26:00,2.55,,UK\n\
             5,85123A\n\
             6,85123A,X,6,2010-12-01 08:26:00,2.55,,UK\n"
        );
        let (got, report) = lines(&body);
        assert_eq!(report.bad_rows, 5);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 7);
        let reported: Vec<u64> = report.first_bad_rows.iter().map(|b| b.line).collect();
        assert_eq!(reported, [2, 3, 4, 5, 6]);
        assert!(report.first_bad_rows[0].reason.contains("quantity"));
        assert!(report.first_bad_rows[1].reason.contains("date"));
        assert!(report.first_bad_rows[3].reason.contains("128"));
        assert_eq!(report.first_bad_rows[4].reason, "missing quantity");
    }

    #[test]
    fn gzip_input_is_detected_by_its_magic_bytes() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let text = format!("{HEADER}536365,85123A,X,6,2010-12-01 08:26:00,2.55,,UK\n");
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let bytes = gz.finish().unwrap();
        for input in [bytes.as_slice(), text.as_bytes()] {
            let report = read_lines(
                decompressed(input).unwrap(),
                &ReadOptions::default(),
                |_, _, _| {},
            )
            .unwrap();
            assert_eq!(report.basket_lines, 1);
        }
    }

    #[test]
    fn other_layouts_map_by_name_and_retail_ii_spellings_are_found() {
        let text = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n\
                    489434,85048,X,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom\n";
        let report = read_lines(text.as_bytes(), &ReadOptions::default(), |_, l, _| {
            assert_eq!(l.customer_id, Some("13085"));
        })
        .unwrap();
        assert_eq!(report.basket_lines, 1);
        let mut options = ReadOptions {
            columns: ColumnMap {
                order: "basket".into(),
                item: "sku".into(),
                quantity: "qty".into(),
                ordered_at: "when".into(),
                ..ColumnMap::default()
            },
            product_codes: ProductCodes::OnlineRetail,
        };
        let text =
            "when,sku,qty,basket\n2024-01-02,A1,1,b1\n2024-01-02,POST,1,b1\n2024-01-02,42,1,b1\n";
        let mut items = Vec::new();
        read_lines(text.as_bytes(), &options, |_, l, _| {
            items.push(l.item_id.to_string())
        })
        .unwrap();
        assert_eq!(
            items,
            ["A1", "42"],
            "POST is a charge by the retail rule; A1 is another shop's product"
        );
        options.product_codes = ProductCodes::All;
        items.clear();
        read_lines(text.as_bytes(), &options, |_, l, _| {
            items.push(l.item_id.to_string())
        })
        .unwrap();
        assert_eq!(items, ["A1", "POST", "42"]);
        let err =
            read_lines("a,b\n".as_bytes(), &ReadOptions::default(), |_, _, _| {}).unwrap_err();
        assert!(err.to_string().contains("InvoiceNo"));
    }

    #[test]
    fn a_file_without_quantities_counts_each_line_once_and_a_file_of_charges_gets_a_hint() {
        let options = ReadOptions {
            columns: ColumnMap {
                order: "order_id".into(),
                item: "product_id".into(),
                ordered_at: "order_date".into(),
                ..ColumnMap::default()
            },
            product_codes: ProductCodes::OnlineRetail,
        };
        let text = "order_id,product_id,order_date\n1,123,2024-01-02\n1,456,2024-01-02\n";
        let mut quantities = Vec::new();
        let report = read_lines(text.as_bytes(), &options, |_, l, _| {
            quantities.push(l.quantity)
        })
        .unwrap();
        assert_eq!((report.basket_lines, report.bad_rows), (2, 0));
        assert_eq!(quantities, [1, 1]);
        assert!(report.without_quantity);
        assert_eq!(report.product_codes_hint(), None);

        let letters = "order_id,product_id,order_date\n1,POST,2024-01-02\n1,DOT,2024-01-02\n";
        let report = read_lines(letters.as_bytes(), &options, |_, _, _| {}).unwrap();
        let hint = report.product_codes_hint().expect("a hint");
        assert!(hint.contains("--all-codes-are-products"), "{hint}");
    }

    #[test]
    fn timestamps_in_the_forms_shops_export_are_read_as_utc() {
        let noon = parse_timestamp("2011-12-01 12:00:00").unwrap();
        let midnight = parse_timestamp("2011-12-01").unwrap();
        for (text, expected) in [
            ("2011-12-01T12:00:00", noon),
            ("2011-12-01 12:00:00.250", noon),
            ("2011-12-01T12:00:00Z", noon),
            ("2011-12-01T13:00:00+01:00", noon),
            ("2011-12-01 12:00:00+00", noon),
            ("2011-12-01T13:00:00+0100", noon),
            ("2011-12-01 07:00:00 -0500", noon),
            ("2011-12-01T12:00Z", noon),
            ("12/1/2011 12:00", noon),
            ("2011/12/01 12:00:00", noon),
            ("12/1/2011", midnight),
            ("2011/12/01", midnight),
            ("20111201", midnight),
            ("1322740800", noon),
            ("1322740800000", noon),
        ] {
            assert_eq!(parse_timestamp(text), Some(expected), "{text}");
        }
        for text in [
            "",
            "1",
            "12345",
            "2011-13-01",
            "next tuesday",
            "99999999999999999999",
        ] {
            assert_eq!(parse_timestamp(text), None, "{text}");
        }
    }

    #[test]
    fn a_semicolon_file_may_write_decimal_commas_and_a_comma_file_may_not() {
        let semicolons = "InvoiceNo;StockCode;Quantity;InvoiceDate;UnitPrice\n\
                          1;85123A;6;2010-12-01 08:26:00;2,55\n";
        let mut prices = Vec::new();
        read_lines(semicolons.as_bytes(), &ReadOptions::default(), |_, l, _| {
            prices.push(l.unit_price)
        })
        .unwrap();
        assert_eq!(prices, [Some(2.55)]);
        let commas = "InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice\n\
                      1,85123A,6,2010-12-01 08:26:00,\"1,234\"\n";
        let report = read_lines(commas.as_bytes(), &ReadOptions::default(), |_, _, _| {}).unwrap();
        assert_eq!(
            report.bad_rows, 1,
            "a thousands separator is not a decimal comma"
        );
        assert_eq!(delimiter_of(b"\"order;id\",item,date\n"), b',');
    }

    #[test]
    fn tab_semicolon_and_bar_separated_files_are_read_like_csv() {
        for d in ["\t", ";", "|"] {
            let text = [
                "InvoiceNo",
                "StockCode",
                "Quantity",
                "InvoiceDate",
                "UnitPrice",
            ]
            .join(d)
                + "\n"
                + &["536365", "85123A", "6", "2010-12-01 08:26:00", "2.55"].join(d)
                + "\n";
            let mut items = Vec::new();
            let report = read_lines(text.as_bytes(), &ReadOptions::default(), |_, l, _| {
                items.push((l.item_id.to_string(), l.unit_price))
            })
            .unwrap();
            assert_eq!(report.bad_rows, 0, "{d:?}");
            assert_eq!(items, [("85123A".to_string(), Some(2.55))], "{d:?}");
        }
    }

    #[test]
    fn only_negative_lines_of_c_orders_are_cancellations() {
        let text = "InvoiceNo,StockCode,Quantity,InvoiceDate\n\
                    C536379,85123A,-1,2010-12-01 09:41:00\n\
                    C100,85123A,2,2010-12-01 09:41:00\n";
        let mut uses = Vec::new();
        read_lines(text.as_bytes(), &ReadOptions::default(), |_, l, u| {
            uses.push((l.order_id.to_string(), u))
        })
        .unwrap();
        assert_eq!(
            uses,
            [
                ("C536379".to_string(), LineUse::Cancellation),
                ("C100".to_string(), LineUse::Basket)
            ]
        );
    }
}
