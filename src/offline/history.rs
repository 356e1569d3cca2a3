//! Cleaned order history in memory: baskets (the distinct items of one non-cancelled order,
//! with its time and customer) over an item table with derived catalogue rows.
//!
//! Loaded from an order-history file ([`History::read`], no database needed: the embedded
//! demo and fast evaluation use it) or from Postgres ([`load_history`]: the basket lines of
//! imported orders, the purchases the storefront reported through `POST /events` grouped into
//! baskets, or both, and the catalogue rows the store reads). A file and its import give the
//! same baskets: both apply the cleaning rules of [`super::orders`].

use std::io::Read;

use foldhash::{HashMap, HashMapExt};
use sqlx::PgPool;

use super::derived_items::{DerivedItem, DerivedItems};
use super::orders::{self, LineUse, ReadError, ReadOptions, RowReport};
use crate::store;

/// No customer.
pub const NO_CUSTOMER: u32 = u32::MAX;

/// Baskets in time order, as flat arrays indexed by basket number.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Catalogue rows of the items, by item number.
    pub items: Vec<DerivedItem>,
    offsets: Vec<usize>,
    basket_items: Vec<u32>,
    /// The same items per basket in the order of their first line (the order the shopper
    /// added them, for a storefront that numbers lines so).
    line_items: Vec<u32>,
    times: Vec<i64>,
    customers: Vec<u32>,
}

impl History {
    /// Number of baskets.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether there are no baskets.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The distinct item numbers of basket `b`, ascending.
    #[inline]
    pub fn basket(&self, b: usize) -> &[u32] {
        &self.basket_items[self.offsets[b]..self.offsets[b + 1]]
    }

    /// The distinct item numbers of basket `b`, in the order of their first line.
    #[inline]
    pub fn basket_in_line_order(&self, b: usize) -> &[u32] {
        &self.line_items[self.offsets[b]..self.offsets[b + 1]]
    }

    /// Time of basket `b` (UTC seconds).
    pub fn time(&self, b: usize) -> i64 {
        self.times[b]
    }

    /// Customer number of basket `b`, or [`NO_CUSTOMER`].
    pub fn customer(&self, b: usize) -> u32 {
        self.customers[b]
    }

    /// The first basket at or after `time`: baskets before it are the history before `time`.
    pub fn split_at(&self, time: i64) -> usize {
        self.times.partition_point(|&t| t < time)
    }

    /// Total item entries over all baskets.
    pub fn lines(&self) -> usize {
        self.basket_items.len()
    }

    /// Time of the first and last basket.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        Some((*self.times.first()?, *self.times.last()?))
    }

    /// Reads and cleans an order-history file (plain or gzip bytes).
    pub fn read(
        input: impl Read + Send,
        options: &ReadOptions,
    ) -> Result<(History, RowReport), ReadError> {
        Self::read_with_progress(input, options, |_| {})
    }

    /// Like [`History::read`], calling `progress` with the rows read now and then.
    pub fn read_with_progress(
        input: impl Read + Send,
        options: &ReadOptions,
        mut progress: impl FnMut(u64),
    ) -> Result<(History, RowReport), ReadError> {
        let input = orders::decompressed(input).map_err(|source| ReadError::Io {
            path: "input".into(),
            source,
        })?;
        let mut builder = HistoryBuilder::new();
        let mut derived = DerivedItems::new();
        let mut rows = 0u64;
        let report = orders::read_lines(input, options, |_, line, line_use| {
            rows += 1;
            if rows.is_multiple_of(65_536) {
                progress(rows);
            }
            let item = derived.add(
                line.item_id,
                line.description,
                line.unit_price,
                line_use == LineUse::Basket,
            );
            if line_use == LineUse::Basket {
                // A file's lines are in order: the row number orders an order's lines.
                builder.add(
                    line.order_id,
                    line.ordered_at,
                    line.customer_id,
                    rows as u32,
                    item,
                );
            }
        })?;
        Ok((builder.finish(derived.finish()), report))
    }
}

#[derive(Debug)]
struct OpenBasket {
    time: i64,
    customer: u32,
    /// (line number, item number) of each line.
    lines: Vec<(u32, u32)>,
}

/// Groups basket lines into baskets; items are numbered by the caller.
#[derive(Debug)]
pub struct HistoryBuilder {
    orders: HashMap<Box<str>, OpenBasket>,
    customers: HashMap<Box<str>, u32>,
}

impl Default for HistoryBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HistoryBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self {
            orders: HashMap::with_capacity(1 << 15),
            customers: HashMap::with_capacity(1 << 12),
        }
    }

    /// Adds item number `item` to order `order_id` as its line `line` (any numbering that
    /// orders an order's lines); the basket's time is its earliest line's.
    pub fn add(&mut self, order_id: &str, time: i64, customer: Option<&str>, line: u32, item: u32) {
        let customer = match customer {
            None => NO_CUSTOMER,
            Some(c) => match self.customers.get(c) {
                Some(&n) => n,
                None => {
                    let n = self.customers.len() as u32;
                    self.customers.insert(c.into(), n);
                    n
                }
            },
        };
        match self.orders.get_mut(order_id) {
            Some(open) => {
                open.time = open.time.min(time);
                if open.customer == NO_CUSTOMER {
                    open.customer = customer;
                }
                open.lines.push((line, item));
            }
            None => {
                self.orders.insert(
                    order_id.into(),
                    OpenBasket {
                        time,
                        customer,
                        lines: vec![(line, item)],
                    },
                );
            }
        }
    }

    /// Orders the baskets by time (then order id), keeps only the items that appear in a
    /// basket (numbered in order of their ids), and builds the history.
    pub fn finish(self, items: Vec<DerivedItem>) -> History {
        let mut open: Vec<(Box<str>, OpenBasket)> = self.orders.into_iter().collect();
        open.sort_unstable_by(|a, b| a.1.time.cmp(&b.1.time).then_with(|| a.0.cmp(&b.0)));
        let mut used = vec![false; items.len()];
        for (_, basket) in &open {
            for &(_, i) in &basket.lines {
                used[i as usize] = true;
            }
        }
        // Items are numbered in id order, not in the order the source listed them (a database
        // streams rows in whatever order its plan gives), so one set of baskets makes one model
        // whichever way it was read: ties and seeded initialisations follow the numbering.
        let mut order: Vec<usize> = (0..items.len()).filter(|&i| used[i]).collect();
        order.sort_unstable_by(|&a, &b| items[a].id.cmp(&items[b].id));
        let mut renumber = vec![u32::MAX; items.len()];
        for (n, &i) in order.iter().enumerate() {
            renumber[i] = n as u32;
        }
        let mut slots: Vec<Option<DerivedItem>> = items.into_iter().map(Some).collect();
        let kept: Vec<DerivedItem> = order.iter().filter_map(|&i| slots[i].take()).collect();
        let lines: usize = open.iter().map(|(_, b)| b.lines.len()).sum();
        let mut history = History {
            items: kept,
            offsets: Vec::with_capacity(open.len() + 1),
            basket_items: Vec::with_capacity(lines),
            line_items: Vec::with_capacity(lines),
            times: Vec::with_capacity(open.len()),
            customers: Vec::with_capacity(open.len()),
        };
        history.offsets.push(0);
        let mut seen = vec![false; history.items.len()];
        for (_, mut basket) in open {
            // Stable: lines with one number keep the order they were added in.
            basket.lines.sort_by_key(|&(line, _)| line);
            let start = history.line_items.len();
            for &(_, i) in &basket.lines {
                let i = renumber[i as usize];
                if !std::mem::replace(&mut seen[i as usize], true) {
                    history.line_items.push(i);
                }
            }
            let in_order = &history.line_items[start..];
            for &i in in_order {
                seen[i as usize] = false;
            }
            history.basket_items.extend_from_slice(in_order);
            history.basket_items[start..].sort_unstable();
            history.offsets.push(history.basket_items.len());
            history.times.push(basket.time);
            history.customers.push(basket.customer);
        }
        history
    }
}

/// Where the baskets `train` learns from are read in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HistorySource {
    /// Imported orders (`orders`, `order_lines`).
    #[default]
    Orders,
    /// Purchases reported through `POST /events`, grouped into baskets per buyer and time.
    Events,
    /// Both: for a shop that imported its past orders and now reports purchases as events.
    Both,
}

/// Groups purchase events into baskets: one buyer's purchases, each within `gap` seconds of
/// the one before, make one basket (a checkout reports its lines one event each, moments
/// apart). A purchase with neither shopper nor session is a basket of its own.
#[derive(Debug)]
pub struct EventBaskets {
    gap: i64,
    buyer: String,
    last: i64,
    basket: String,
    anonymous: u64,
}

impl EventBaskets {
    /// Baskets split where one buyer's purchases are more than `gap` seconds apart.
    pub fn new(gap: i64) -> Self {
        Self {
            gap,
            buyer: String::new(),
            last: i64::MIN,
            basket: String::new(),
            anonymous: 0,
        }
    }

    /// The basket id (never one an order can have: order ids hold no NUL) and customer key
    /// of the next purchase; purchases must come in order of buyer, then time.
    pub fn next(
        &mut self,
        buyer: Option<&str>,
        is_shopper: bool,
        time: i64,
    ) -> (&str, Option<String>) {
        use std::fmt::Write;
        let Some(buyer) = buyer else {
            self.anonymous += 1;
            self.buyer.clear();
            self.basket.clear();
            let _ = write!(self.basket, "\0event:{}", self.anonymous);
            return (&self.basket, None);
        };
        if buyer != self.buyer || time.saturating_sub(self.last) > self.gap {
            self.buyer.clear();
            self.buyer.push_str(buyer);
            self.basket.clear();
            let _ = write!(self.basket, "\0event:{buyer}:{time}");
        }
        self.last = time;
        let customer = is_shopper.then(|| format!("\0shopper:{buyer}"));
        (&self.basket, customer)
    }
}

/// Loads the cleaned history before `until` (all of it when `None`) from Postgres, from
/// `source`: basket lines in one streaming query per source, then their items' catalogue rows.
/// Purchase events are grouped into baskets by [`EventBaskets`] with `basket_gap` seconds.
pub async fn load_history(
    pool: &PgPool,
    until: Option<i64>,
    source: HistorySource,
    basket_gap: i64,
) -> Result<History, sqlx::Error> {
    let until = until.and_then(|t| chrono::DateTime::from_timestamp(t, 0));
    let mut builder = HistoryBuilder::new();
    let mut index: HashMap<String, u32> = HashMap::with_capacity(4096);
    let mut ids: Vec<String> = Vec::with_capacity(4096);
    let mut number = |item_id: &str| match index.get(item_id) {
        Some(&n) => n,
        None => {
            let n = ids.len() as u32;
            index.insert(item_id.to_string(), n);
            ids.push(item_id.to_string());
            n
        }
    };
    if matches!(source, HistorySource::Orders | HistorySource::Both) {
        store::for_each_basket_line(pool, until, |line| {
            let n = number(line.item_id);
            builder.add(
                line.order_id,
                line.ordered_at.timestamp(),
                line.customer_id,
                line.line_no,
                n,
            );
        })
        .await?;
    }
    if matches!(source, HistorySource::Events | HistorySource::Both) {
        let mut baskets = EventBaskets::new(basket_gap);
        // Events come in order of buyer, then time: their count orders a basket's purchases.
        let mut purchases = 0u32;
        store::for_each_purchase_event(pool, until, |purchase| {
            let n = number(purchase.item_id);
            let time = purchase.occurred_at.timestamp();
            let (basket, customer) = baskets.next(purchase.buyer, purchase.is_shopper, time);
            purchases = purchases.wrapping_add(1);
            builder.add(basket, time, customer.as_deref(), purchases, n);
        })
        .await?;
    }
    drop(index);
    let catalogue = store::catalogue_of(pool, &ids).await?;
    let items = ids
        .into_iter()
        .zip(catalogue)
        .map(|(id, row)| match row {
            Some((title, category, price)) => DerivedItem {
                id,
                title,
                category,
                price,
            },
            None => DerivedItem {
                title: id.clone(),
                id,
                category: None,
                price: None,
            },
        })
        .collect();
    Ok(builder.finish(items))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small history file: 8 baskets, with cancellations, non-products and a variant pair.
    pub(crate) const FIXTURE: &str = "\
InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
1,10001,RED TEA CUP,1,2011-01-01 10:00:00,1.0,1.0,UK
1,10002,RED SAUCER,1,2011-01-01 10:00:00,1.0,1.0,UK
1,POST,POSTAGE,1,2011-01-01 10:00:00,5.0,1.0,UK
2,10001,RED TEA CUP,2,2011-01-02 10:00:00,1.0,,UK
2,10002,RED SAUCER,2,2011-01-02 10:00:00,1.0,,UK
2,10003A,JUMBO BAG PINK,1,2011-01-02 10:00:00,2.0,,UK
3,10003A,JUMBO BAG PINK,1,2011-01-03 10:00:00,2.0,2.0,UK
3,10003B,JUMBO BAG BLUE,1,2011-01-03 10:00:00,2.0,2.0,UK
3,10004,LUNCH BOX,1,2011-01-03 10:00:00,3.0,2.0,UK
C4,10004,LUNCH BOX,-1,2011-01-04 10:00:00,3.0,2.0,UK
5,10003B,JUMBO BAG BLUE,1,2011-01-05 10:00:00,2.0,3.0,UK
5,10004,LUNCH BOX,1,2011-01-05 10:00:00,3.0,3.0,UK
5,10004,LUNCH BOX,3,2011-01-05 10:00:00,3.0,3.0,UK
6,10001,RED TEA CUP,1,2011-02-01 10:00:00,1.0,4.0,UK
6,10002,RED SAUCER,1,2011-02-01 10:00:00,1.0,4.0,UK
6,10005,GHOST,0,2011-02-01 10:00:00,1.0,4.0,UK
7,10001,RED TEA CUP,1,2011-02-02 10:00:00,1.0,5.0,UK
7,10002,RED SAUCER,1,2011-02-02 10:00:00,1.0,5.0,UK
7,10003A,JUMBO BAG PINK,1,2011-02-02 10:00:00,2.0,5.0,UK
8,10004,LUNCH BOX,1,2011-02-03 10:00:00,3.0,6.0,UK
8,10003A,JUMBO BAG PINK,1,2011-02-03 10:00:00,2.0,6.0,UK
";

    pub(crate) fn fixture() -> History {
        History::read(FIXTURE.as_bytes(), &ReadOptions::default())
            .unwrap()
            .0
    }

    fn ids(h: &History, b: usize) -> Vec<&str> {
        h.basket(b)
            .iter()
            .map(|&i| h.items[i as usize].id.as_str())
            .collect()
    }

    #[test]
    fn baskets_are_distinct_products_of_non_cancelled_orders_in_time_order() {
        let h = fixture();
        assert_eq!(h.len(), 7, "C4 is a cancellation");
        assert_eq!(ids(&h, 0), ["10001", "10002"], "POST is not a product");
        assert_eq!(
            ids(&h, 3),
            ["10003B", "10004"],
            "duplicate lines count once"
        );
        assert_eq!(ids(&h, 4), ["10001", "10002"], "quantity 0 never counts");
        assert!(
            h.items.iter().all(|i| i.id != "10005"),
            "items never in a basket are left out"
        );
        assert_eq!(h.customer(1), NO_CUSTOMER);
        assert_ne!(h.customer(0), h.customer(2));
        let feb = parse("2011-02-01");
        assert_eq!(h.split_at(feb), 4);
        assert_eq!(h.items[0].title, "RED TEA CUP");
        assert_eq!(h.items[0].category.as_deref(), Some("cup"));
    }

    #[test]
    fn one_set_of_lines_makes_one_history_whatever_order_it_is_read_in() {
        let lines = [
            ("o1", 10, "p3", 1),
            ("o1", 10, "p1", 2),
            ("o2", 20, "p2", 1),
            ("o2", 20, "p3", 2),
        ];
        let build = |order: &[usize]| {
            let mut ids: Vec<&str> = Vec::new();
            let mut builder = HistoryBuilder::new();
            for &l in order {
                let (order_id, time, item, line) = lines[l];
                let n = ids.iter().position(|&i| i == item).unwrap_or_else(|| {
                    ids.push(item);
                    ids.len() - 1
                });
                builder.add(order_id, time, Some("c"), line, n as u32);
            }
            let items = ids
                .iter()
                .map(|&id| DerivedItem {
                    id: id.to_string(),
                    title: id.to_string(),
                    category: None,
                    price: None,
                })
                .collect();
            builder.finish(items)
        };
        let forward = build(&[0, 1, 2, 3]);
        let backward = build(&[3, 2, 1, 0]);
        assert_eq!(forward, backward);
        let ids: Vec<&str> = forward.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["p1", "p2", "p3"]);
    }

    fn parse(date: &str) -> i64 {
        orders::parse_timestamp(date).unwrap()
    }

    #[test]
    fn purchase_events_of_one_buyer_close_in_time_make_one_basket() {
        let mut baskets = EventBaskets::new(3600);
        let mut next = |buyer, shopper, time| {
            let (basket, customer) = baskets.next(buyer, shopper, time);
            (basket.to_string(), customer)
        };
        let (a1, customer) = next(Some("s1"), true, 100);
        assert_eq!(customer.as_deref(), Some("\0shopper:s1"));
        assert_eq!(
            next(Some("s1"), true, 100 + 3600).0,
            a1,
            "within the gap of the last one"
        );
        let a2 = next(Some("s1"), true, 100 + 2 * 3600 + 1).0;
        assert_ne!(a2, a1, "more than the gap after the last purchase");
        let (b, customer) = next(Some("session-9"), false, 150);
        assert_ne!(b, a2, "another buyer");
        assert_eq!(customer, None, "a session is not a customer across visits");
        let (x, _) = next(None, false, 150);
        let (y, _) = next(None, false, 150);
        assert_ne!(x, y, "purchases of nobody in particular stay apart");
        assert!(x.starts_with('\0'), "never an order's id");
    }
}
