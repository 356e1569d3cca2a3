//! Command-line glue for `tandem import`, `tandem train` and `tandem evaluate`: clap
//! argument structs and one `run_*` function per command (`anyhow` lives only here).
//!
//! Each function takes the database pool when `DATABASE_URL` is set; `import` needs it,
//! `train` writes a version when it has one (or with `--dry-run` only reports), and
//! `evaluate` reads history from `--orders FILE` or else from the database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use sqlx::PgPool;

use super::counts_file::{self, CountTables};
use super::estimators::{Estimator, MeasureParams};
use super::evaluate::{self, EvaluateParams};
use super::feed::{self, FeedColumns};
use super::history::{self, History, HistorySource};
use super::import;
use super::orders::{self, ColumnMap, ProductCodes, ReadOptions};
use super::privacy::DpParams;
use super::progress::Progress;
use super::report;
use super::train::{self, TrainParams};
use super::tune::{self, TuneError, TuneParams};
use crate::config::Settings;
use crate::domain::Touchpoint;
use crate::store;

/// How to read an order-history file: column names (defaults: UCI Online Retail).
#[derive(Debug, Clone, clap::Args)]
pub struct ColumnArgs {
    /// Column holding the order (invoice) id.
    #[arg(long, default_value = "InvoiceNo")]
    pub col_order: String,
    /// Column holding the item (stock code) id.
    #[arg(long, default_value = "StockCode")]
    pub col_item: String,
    /// Column holding the item description.
    #[arg(long, default_value = "Description")]
    pub col_description: String,
    /// Column holding the quantity (optional: a file without it counts each line once).
    #[arg(long, default_value = "Quantity")]
    pub col_quantity: String,
    /// Column holding the order timestamp.
    #[arg(long, default_value = "InvoiceDate")]
    pub col_date: String,
    /// Column holding the unit price.
    #[arg(long, default_value = "UnitPrice")]
    pub col_price: String,
    /// Column holding the customer id.
    #[arg(long, default_value = "CustomerID")]
    pub col_customer: String,
    /// Column holding the country.
    #[arg(long, default_value = "Country")]
    pub col_country: String,
    /// Treat every item code as a product (default: the Online Retail rule, which drops
    /// postage, fees and vouchers).
    #[arg(long)]
    pub all_codes_are_products: bool,
}

impl ColumnArgs {
    /// The read options these arguments describe.
    pub fn read_options(&self) -> ReadOptions {
        ReadOptions {
            columns: ColumnMap {
                order: self.col_order.clone(),
                item: self.col_item.clone(),
                description: self.col_description.clone(),
                quantity: self.col_quantity.clone(),
                ordered_at: self.col_date.clone(),
                price: self.col_price.clone(),
                customer: self.col_customer.clone(),
                country: self.col_country.clone(),
            },
            product_codes: if self.all_codes_are_products {
                ProductCodes::All
            } else {
                ProductCodes::OnlineRetail
            },
        }
    }
}

/// `tandem import`: load an order-history file, or a product feed, into Postgres.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "input", required = true, multiple = false, args = ["orders", "catalogue"])]
pub struct ImportArgs {
    /// Order-history CSV file, plain or gzip.
    #[arg(long)]
    pub orders: Option<PathBuf>,
    /// Product feed (Google Merchant Center layout, tab-separated or CSV, plain or gzip; a
    /// plain CSV names its columns with the --feed-* flags) into the live catalogue.
    #[arg(long)]
    pub catalogue: Option<PathBuf>,
    /// Announce each stored chunk of the feed, so running servers apply it at once.
    #[arg(long, requires = "catalogue")]
    pub notify: bool,
    /// Column mapping of an order history.
    #[command(flatten)]
    pub columns: ColumnArgs,
    /// Column mapping of a product feed.
    #[command(flatten)]
    pub feed: FeedColumnArgs,
}

/// How to read a product feed: column names (defaults: Google Merchant Center). An empty name
/// means the feed has no such column.
#[derive(Debug, Clone, clap::Args)]
pub struct FeedColumnArgs {
    /// Column holding the item id.
    #[arg(long, default_value = "id")]
    pub feed_id: String,
    /// Column holding the title.
    #[arg(long, default_value = "title")]
    pub feed_title: String,
    /// Column holding the description (kept in attributes).
    #[arg(long, default_value = "description")]
    pub feed_description: String,
    /// Column holding the availability ("in stock", "out of stock", "preorder", "backorder").
    #[arg(long, default_value = "availability")]
    pub feed_availability: String,
    /// Column holding stock as true/false (a plain CSV, instead of an availability).
    #[arg(long, default_value = "")]
    pub feed_in_stock: String,
    /// Column holding the price ("12.99" or "12.99 GBP").
    #[arg(long, default_value = "price")]
    pub feed_price: String,
    /// Column holding the sale price: below the price, it is the price and the item is
    /// promoted.
    #[arg(long, default_value = "sale_price")]
    pub feed_sale_price: String,
    /// Column holding the category.
    #[arg(long, default_value = "product_type")]
    pub feed_category: String,
    /// Column holding the brand.
    #[arg(long, default_value = "brand")]
    pub feed_brand: String,
    /// Column holding the product group shared by variants.
    #[arg(long, default_value = "item_group_id")]
    pub feed_product_group: String,
    /// Column holding promoted as true/false.
    #[arg(long, default_value = "")]
    pub feed_promoted: String,
    /// Column holding the margin, 0 to 1.
    #[arg(long, default_value = "")]
    pub feed_margin: String,
}

impl FeedColumnArgs {
    /// The columns these arguments name.
    pub fn columns(&self) -> FeedColumns {
        let named = |name: &String| (!name.is_empty()).then(|| name.clone());
        FeedColumns {
            id: self.feed_id.clone(),
            title: self.feed_title.clone(),
            description: named(&self.feed_description),
            availability: named(&self.feed_availability),
            in_stock: named(&self.feed_in_stock),
            price: named(&self.feed_price),
            sale_price: named(&self.feed_sale_price),
            category: named(&self.feed_category),
            brand: named(&self.feed_brand),
            product_group: named(&self.feed_product_group),
            promoted: named(&self.feed_promoted),
            margin: named(&self.feed_margin),
        }
    }
}

/// Model parameters shared by `train` and `evaluate`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Co-purchase estimator (default: sparse-ease; ease under differential privacy, which
    /// releases the dense Gram matrix).
    #[arg(long, value_enum)]
    pub estimator: Option<Estimator>,
    /// Fewest baskets a pair must share.
    #[arg(long, default_value_t = 1)]
    pub min_support: u32,
    /// Fewest training baskets an item needs to get co-purchase neighbours (sparse-ease;
    /// items below it keep their content neighbours) and a behavioural diversity embedding.
    #[arg(long, default_value_t = 5)]
    pub min_baskets: u32,
    /// Items each item's sparse-ease solve covers (those sharing most baskets with it).
    #[arg(long, default_value_t = 128)]
    pub neighbourhood: usize,
    /// Co-purchase neighbours kept per item.
    #[arg(long, default_value_t = 100)]
    pub neighbours: usize,
    /// EASE regularisation λ.
    #[arg(long, default_value_t = 50.0)]
    pub lambda: f64,
    /// Weight of adjacent order lines in sparse-ease's Gram matrix (0: line order ignored;
    /// tuning tries more).
    #[arg(long, default_value_t = 0.0)]
    pub adjacency: f64,
    /// BM25 k1.
    #[arg(long, default_value_t = 1.2)]
    pub bm25_k1: f64,
    /// BM25 b.
    #[arg(long, default_value_t = 0.75)]
    pub bm25_b: f64,
    /// Most items EASE inverts densely (the ones in most baskets).
    #[arg(long, default_value_t = 6000)]
    pub max_dense_items: usize,
    /// Embedding dimension (0 = none).
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Dimension of the behavioural (co-purchase) embedding that forms the diversity embedding
    /// the DPP compares (0 = the DPP compares title embeddings).
    #[arg(long, default_value_t = 32)]
    pub behaviour_dim: usize,
    /// Share of the behavioural embedding in the diversity similarity (0 to 1).
    #[arg(long, default_value_t = 1.0, value_parser = unit_interval)]
    pub behaviour_weight: f32,
    /// Content neighbours per item.
    #[arg(long, default_value_t = 20)]
    pub content_neighbours: usize,
    /// Seed of the embedding projection.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Worker threads (0 = available cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Treat variants of one product as unrelated items (to compare with published results;
    /// never for a served model, where a second colour of a cart item is not a cross-sell).
    #[arg(long)]
    pub keep_variants: bool,
    /// Train with (ε, δ)-differential privacy at this ε: bounded contributions per shopper and
    /// Gaussian noise on the co-occurrence counts (EASE only).
    #[arg(long)]
    pub dp_epsilon: Option<f64>,
    /// δ of the differential privacy.
    #[arg(long, default_value_t = 1e-6)]
    pub dp_delta: f64,
    /// Baskets kept per shopper under differential privacy (the most recent).
    #[arg(long, default_value_t = 1)]
    pub dp_max_baskets_per_shopper: usize,
    /// Items kept per basket under differential privacy.
    #[arg(long, default_value_t = 20)]
    pub dp_max_items_per_basket: usize,
    /// Noisy pair counts below this many noise deviations are dropped: every one of the
    /// millions of absent pairs gets noise too, and 5σ lets almost none through.
    #[arg(long, default_value_t = 5.0)]
    pub dp_threshold_sigmas: f64,
}

impl ModelArgs {
    /// The training parameters these arguments describe.
    pub fn train_params(&self, until: Option<i64>) -> TrainParams {
        TrainParams {
            measure: MeasureParams {
                estimator: self.estimator.unwrap_or(if self.dp_epsilon.is_some() {
                    Estimator::Ease
                } else {
                    Estimator::SparseEase
                }),
                min_support: self.min_support,
                min_baskets: self.min_baskets,
                neighbourhood: self.neighbourhood,
                neighbours: self.neighbours,
                lambda: self.lambda,
                adjacency: self.adjacency,
                bm25_k1: self.bm25_k1,
                bm25_b: self.bm25_b,
                max_dense_items: self.max_dense_items,
                threads: self.threads,
                dp: self.dp_epsilon.map(|epsilon| DpParams {
                    epsilon,
                    delta: self.dp_delta,
                    max_baskets_per_shopper: self.dp_max_baskets_per_shopper,
                    max_items_per_basket: self.dp_max_items_per_basket,
                    threshold_sigmas: self.dp_threshold_sigmas,
                    seed: rand::random(),
                }),
            },
            dim: self.dim,
            behaviour_dim: self.behaviour_dim,
            behaviour_weight: self.behaviour_weight,
            content_neighbours: self.content_neighbours,
            seed: self.seed,
            until,
            keep_variants: self.keep_variants,
            ..TrainParams::default()
        }
    }
}

/// How `train` and `evaluate` tune a version on the shop's own history.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    /// Serve the configured settings as they are: no validation split, no search.
    #[arg(long)]
    pub no_tune: bool,
    /// The validation split covers at least the last this many days of the training history...
    #[arg(long, default_value_t = 28.0)]
    pub validation_days: f64,
    /// ...and at least this share of its baskets (at most half of them in any case).
    #[arg(long, default_value_t = 0.1, value_parser = unit_interval_f64)]
    pub validation_share: f64,
    /// Most validation cases scored per touchpoint and setting.
    #[arg(long, default_value_t = TuneParams::default().max_cases)]
    pub tune_cases: usize,
    /// Also try weighing adjacent order lines in sparse-ease (off by default: on a synthetic
    /// history the weight that won validation lowered the hit rate with purchases).
    #[arg(long)]
    pub tune_adjacency: bool,
}

impl TuneArgs {
    /// The tuning parameters, or `None` under `--no-tune`.
    pub fn tune_params(&self, threads: usize) -> Option<TuneParams> {
        (!self.no_tune).then(|| TuneParams {
            validation_days: self.validation_days,
            validation_share: self.validation_share,
            max_cases: self.tune_cases.max(1),
            adjacency: self.tune_adjacency,
            threads,
            ..TuneParams::default()
        })
    }
}

fn parse_touchpoint(text: &str) -> Result<Touchpoint, String> {
    text.parse()
        .map_err(|()| format!("expected checkout, cart or product, not {text}"))
}

/// A number in [0, 1], as f64.
fn unit_interval_f64(text: &str) -> Result<f64, String> {
    unit_interval(text).map(f64::from)
}

/// A number in [0, 1].
fn unit_interval(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number from 0 to 1, not {text}")),
    }
}

/// `tandem train`: build a model version from order history.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Use only orders placed before this date (`YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS`, UTC).
    #[arg(long)]
    pub until: Option<String>,
    /// Read history from this file instead of the database.
    #[arg(long)]
    pub orders: Option<PathBuf>,
    /// Which history in the database to learn from: imported orders, the purchases reported
    /// through `POST /events`, or both.
    #[arg(long = "from", value_enum, default_value_t = HistorySource::Orders)]
    pub source: HistorySource,
    /// Purchase events of one shopper or session at most this many minutes apart make one
    /// basket (with `--from events|both`).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub basket_gap_minutes: u32,
    /// Train and report, but write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Build the version from co-occurrence counts in this directory (`items.parquet` and
    /// `pairs.parquet`, written by any engine) instead of from order history; titles and
    /// prices come from the `items` table when there is a database. No tuning: that needs
    /// the baskets.
    #[arg(long, conflicts_with_all = ["orders", "count_in_database"])]
    pub counts: Option<PathBuf>,
    /// Count co-occurrences in Postgres (one SQL query over `order_lines`) and build the
    /// version from the counts; no tuning.
    #[arg(long, conflicts_with = "orders")]
    pub count_in_database: bool,
    /// Model parameters.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tuning on the shop's own history.
    #[command(flatten)]
    pub tune: TuneArgs,
    /// Column mapping (with `--orders`).
    #[command(flatten)]
    pub columns: ColumnArgs,
}

/// `tandem evaluate`: compare variants on a temporal split.
#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateArgs {
    /// Train before this date, test at or after it.
    #[arg(long)]
    pub until: String,
    /// Recommendations per test case.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Read history from this file instead of the database.
    #[arg(long)]
    pub orders: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write every test case (cart, hidden item, earlier purchases) with whether the
    /// serving row listed it, one JSON object per line, to replay against a running server
    /// (`scripts/served-quality`).
    #[arg(long)]
    pub cases: Option<PathBuf>,
    /// Also write JSON, a Markdown table and an SVG chart of HitRate@k against diversity
    /// across theta into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Seed of the hidden-item choice.
    #[arg(long, default_value_t = 1)]
    pub split_seed: u64,
    /// Only the serving pipeline's rows (skip the baselines, which train every estimator).
    #[arg(long)]
    pub serving_only: bool,
    /// The touchpoint evaluated: each test cart is cut to what it knows (checkout the whole
    /// cart, cart the first half, product its first item) and served with its settings.
    #[arg(long, default_value = "checkout", value_parser = parse_touchpoint)]
    pub touchpoint: Touchpoint,
    /// Model parameters of the serving model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tuning of the serving model on the training history.
    #[command(flatten)]
    pub tune: TuneArgs,
    /// Column mapping (with `--orders`).
    #[command(flatten)]
    pub columns: ColumnArgs,
}

fn parse_until(text: &str) -> anyhow::Result<i64> {
    orders::parse_timestamp(text.trim()).with_context(|| {
        format!("--until {text:?} is not a date (YYYY-MM-DD or YYYY-MM-DD HH:MM:SS)")
    })
}

fn read_history_file(path: &std::path::Path, options: &ReadOptions) -> anyhow::Result<History> {
    let total = std::fs::metadata(path).map(|m| m.len()).ok();
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let read = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("read", total, "bytes");
    let counting = orders::CountingReader::new(file, read.clone());
    let (history, report) = History::read_with_progress(counting, options, |_| {
        progress.set(read.load(Ordering::Relaxed))
    })?;
    progress.finish(&format!(
        "{}; {} baskets, {} items",
        report.summary(),
        history.len(),
        history.items.len()
    ));
    print_bad_rows(&report);
    Ok(history)
}

fn print_bad_rows(report: &orders::RowReport) {
    if let Some(hint) = report.product_codes_hint() {
        eprintln!("  warning: {hint}");
    }
    if report.without_quantity {
        eprintln!(
            "  note: the file has no quantity column (--col-quantity names it), so each line \
             counts as one unit and none is a return"
        );
    }
    for bad in &report.first_bad_rows {
        eprintln!("  bad row at line {}: {}", bad.line, bad.reason);
    }
    if report.bad_rows > report.first_bad_rows.len() as u64 {
        eprintln!(
            "  ... and {} more bad rows",
            report.bad_rows - report.first_bad_rows.len() as u64
        );
    }
}

/// The order history to train or evaluate on: read from `orders` (a file with `columns`), else
/// loaded from the database (the orders before `until`, when set).
async fn load_history(
    orders: Option<&Path>,
    columns: &ColumnArgs,
    pool: Option<&PgPool>,
    until: Option<i64>,
    source: (HistorySource, i64),
) -> anyhow::Result<History> {
    let pool = match (orders, pool) {
        (Some(path), _) => {
            let (path, options) = (path.to_path_buf(), columns.read_options());
            return tokio::task::spawn_blocking(move || read_history_file(&path, &options)).await?;
        }
        (None, Some(pool)) => pool,
        (None, None) => bail!("no history: pass --orders FILE or set DATABASE_URL"),
    };
    let progress = Progress::start("load", None, "");
    let (source, basket_gap) = source;
    let history = history::load_history(pool, until, source, basket_gap)
        .await
        .context("cannot load order history")?;
    let from = match source {
        HistorySource::Orders => "orders",
        HistorySource::Events => "purchase events",
        HistorySource::Both => "orders and purchase events",
    };
    progress.finish(&format!(
        "{} baskets, {} items from the database's {from}",
        history.len(),
        history.items.len()
    ));
    if history.is_empty() && source == HistorySource::Orders {
        eprintln!(
            "train: no imported orders; a shop that reports purchases through POST /events \
             trains on them with --from events"
        );
    }
    Ok(history)
}

/// Runs `tandem import`.
pub async fn run_import(args: ImportArgs, pool: Option<PgPool>) -> anyhow::Result<()> {
    let Some(pool) = pool else {
        bail!("import needs a database: set DATABASE_URL");
    };
    store::migrate(&pool)
        .await
        .context("cannot apply migrations")?;
    let orders_path = match (&args.orders, &args.catalogue) {
        (Some(orders), _) => orders.clone(),
        (None, Some(feed)) => return run_feed_import(&pool, feed, &args).await,
        (None, None) => bail!("give --orders FILE or --catalogue FILE"),
    };
    let total = std::fs::metadata(&orders_path).map(|m| m.len()).ok();
    let file = std::fs::File::open(&orders_path)
        .with_context(|| format!("cannot open {}", orders_path.display()))?;
    let read = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress::start("import", total, "bytes"));
    let tick = {
        let (read, progress) = (read.clone(), progress.clone());
        Arc::new(move || progress.set(read.load(Ordering::Relaxed)))
    };
    let input = Box::new(orders::CountingReader::new(file, read));
    let report = import::import_orders(&pool, input, &args.columns.read_options(), tick)
        .await
        .with_context(|| format!("cannot import {}", orders_path.display()))?;
    match Arc::try_unwrap(progress) {
        Ok(progress) => progress.finish(&report.summary()),
        Err(_) => eprintln!("import: {}", report.summary()),
    }
    print_bad_rows(&report.rows);
    Ok(())
}

/// `tandem import --catalogue FILE`.
async fn run_feed_import(pool: &PgPool, path: &Path, args: &ImportArgs) -> anyhow::Result<()> {
    let input = orders::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let report = feed::import_feed(pool, input, args.feed.columns(), args.notify)
        .await
        .with_context(|| format!("cannot import {}", path.display()))?;
    eprintln!("import: {}", report.summary());
    for bad in &report.first_bad_rows {
        eprintln!("  bad row at line {}: {}", bad.line, bad.reason);
    }
    if report.bad_rows > report.first_bad_rows.len() as u64 {
        eprintln!(
            "  ... and {} more bad rows",
            report.bad_rows - report.first_bad_rows.len() as u64
        );
    }
    Ok(())
}

/// Runs `tandem train`; `settings` gives the configured pipeline tuning starts from.
pub async fn run_train(
    args: TrainArgs,
    pool: Option<PgPool>,
    settings: &Settings,
) -> anyhow::Result<()> {
    let until = args.until.as_deref().map(parse_until).transpose()?;
    if pool.is_none() && !args.dry_run {
        bail!("train writes a model version: set DATABASE_URL, or pass --dry-run");
    }
    if args.counts.is_some() && until.is_some() {
        bail!("--until does not apply to counts made elsewhere: count the orders before the date");
    }
    if args.source != HistorySource::Orders && (args.orders.is_some() || args.counts.is_some()) {
        bail!("--from reads the database's history: it does not apply to --orders or --counts");
    }
    if args.source != HistorySource::Orders && args.count_in_database {
        bail!("--count-in-database counts imported orders only: drop it to train --from events");
    }
    if args.counts.is_some() || args.count_in_database {
        let model = train_from_counts(&args, pool.as_ref(), until).await?;
        return write_model(model, &args, pool).await;
    }
    let source = (args.source, i64::from(args.basket_gap_minutes) * 60);
    let history = load_history(
        args.orders.as_deref(),
        &args.columns,
        pool.as_ref(),
        until,
        source,
    )
    .await?;
    let end = until.map_or(history.len(), |t| history.split_at(t));
    let params = args.model.train_params(until);
    let tune_params = args.tune.tune_params(args.model.threads);
    let configured = settings.pipeline.clone();
    let model = tokio::task::spawn_blocking(move || -> anyhow::Result<train::TrainedModel> {
        let started = std::time::Instant::now();
        let mut params = params;
        let mut tuning = None;
        // Tuning fits a model before its validation split, then the final one: both read the
        // same titles.
        let content = tune_params
            .is_some()
            .then(|| train::Content::new(&history, 0..end, &params));
        if let Some(tune_params) = &tune_params {
            let progress = Progress::start("tune", None, "");
            let tuned = tune::tune(
                &history,
                0..end,
                &params,
                &configured,
                tune_params,
                content.as_ref(),
                &progress,
            );
            match tuned {
                Ok((tuned, chosen)) => {
                    progress.finish(&chosen.headline());
                    eprint!("{}", chosen.summary());
                    params = tuned;
                    tuning = Some(chosen);
                }
                Err(TuneError::TooLittleHistory(why)) => {
                    progress.finish(&format!("skipped: {why}; the configured settings are served"))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let progress = Progress::start("train", Some(3), "steps");
        let mut model =
            train::train_sharing_content(&history, 0..end, &params, content.as_ref(), &progress)?;
        model.stats.seconds = started.elapsed().as_secs_f64();
        model.tuning = tuning;
        let m = &model;
        progress.finish(&format!(
                "{} baskets, {} items, {} with co-purchase neighbours, {} co-purchase pairs ({}), {} content pairs",
                m.stats.baskets,
                m.stats.items,
                m.stats.co_purchase.items_with_neighbours,
                m.stats.co_purchase.pairs_kept,
                m.stats.co_purchase.estimator,
                m.stats.content_pairs
            ));
        Ok(model)
    })
    .await??;
    write_model(model, &args, pool).await
}

/// Trains from counts: read from `--counts DIR` or counted in Postgres.
async fn train_from_counts(
    args: &TrainArgs,
    pool: Option<&PgPool>,
    until: Option<i64>,
) -> anyhow::Result<train::TrainedModel> {
    let params = args.model.train_params(until);
    if params.measure.estimator != Estimator::SparseEase || params.measure.dp.is_some() {
        bail!("training from counts needs the sparse-ease estimator, without differential privacy");
    }
    let progress = Progress::start("count", None, "");
    let (tables, baskets) = match (&args.counts, pool) {
        (Some(dir), _) => {
            let dir = dir.clone();
            let tables =
                tokio::task::spawn_blocking(move || counts_file::read_counts(&dir)).await??;
            (tables, 0)
        }
        (None, Some(pool)) => {
            let until = until.and_then(|t| chrono::DateTime::from_timestamp(t, 0));
            let counted = store::count_cooccurrences(pool, until)
                .await
                .context("cannot count in the database")?;
            let baskets = counted.baskets as usize;
            let tables = CountTables {
                items: counted.items,
                item_baskets: counted.item_baskets,
                pairs: counted.pairs,
            };
            (tables, baskets)
        }
        (None, None) => bail!("--count-in-database needs DATABASE_URL"),
    };
    progress.finish(&format!(
        "{} items, {} pairs{}",
        tables.items.len(),
        tables.pairs.len(),
        if baskets > 0 {
            format!(" over {baskets} baskets")
        } else {
            String::new()
        }
    ));
    let catalogue = match pool {
        Some(pool) => store::catalogue_of(pool, &tables.items)
            .await
            .context("cannot read the items table")?,
        None => vec![None; tables.items.len()],
    };
    eprintln!("train: counts carry no baskets, so the version is not tuned; it serves the configured settings");
    tokio::task::spawn_blocking(move || -> anyhow::Result<train::TrainedModel> {
        let counts = tables.to_counts(baskets, params.measure.min_baskets);
        let items = tables
            .items
            .into_iter()
            .zip(tables.item_baskets)
            .zip(catalogue)
            .map(|((id, n), row)| {
                let (title, category, price) = row.unwrap_or_else(|| (id.clone(), None, None));
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                train::TrainedItem {
                    id,
                    title,
                    category,
                    price,
                    popularity: n as f32,
                    baskets: n,
                }
            })
            .collect();
        let progress = Progress::start("train", Some(3), "steps");
        let model = train::train_from_counts(&counts, items, &params, &progress)?;
        progress.finish(&format!(
            "{} items, {} with co-purchase neighbours, {} co-purchase pairs, {} content pairs",
            model.stats.items,
            model.stats.co_purchase.items_with_neighbours,
            model.stats.co_purchase.pairs_kept,
            model.stats.content_pairs
        ));
        Ok(model)
    })
    .await?
}

/// Reports a trained model and, unless `--dry-run`, writes it as a new version.
async fn write_model(
    model: train::TrainedModel,
    args: &TrainArgs,
    pool: Option<PgPool>,
) -> anyhow::Result<()> {
    eprintln!("{}", serde_json::to_string(&model.stats)?);
    if args.dry_run {
        return Ok(());
    }
    let Some(pool) = pool else {
        bail!("train writes a model version: set DATABASE_URL");
    };
    store::migrate(&pool)
        .await
        .context("cannot apply migrations")?;
    let progress = Progress::start("write", None, "");
    let version = model
        .write_version(&pool)
        .await
        .context("cannot write the model version")?;
    progress.finish(&format!("version {version} is ready"));
    println!("{version}");
    Ok(())
}

/// Writes `cases` as JSON lines.
fn write_cases(path: &Path, cases: &[evaluate::ServedCase]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for case in cases {
        serde_json::to_writer(&mut out, case)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Runs `tandem evaluate`; `serving` is the configured pipeline (the "serving" rows).
pub async fn run_evaluate(
    args: EvaluateArgs,
    pool: Option<PgPool>,
    settings: Settings,
) -> anyhow::Result<()> {
    let until = parse_until(&args.until)?;
    if !(1..=crate::pipeline::MAX_K).contains(&args.k) {
        bail!("--k must be between 1 and {}", crate::pipeline::MAX_K);
    }
    let history = load_history(
        args.orders.as_deref(),
        &args.columns,
        pool.as_ref(),
        None,
        (HistorySource::Orders, 0),
    )
    .await?;
    let params = EvaluateParams {
        until,
        k: args.k,
        seed: args.split_seed,
        train: args.model.train_params(Some(until)),
        threads: args.model.threads,
        baselines: !args.serving_only,
        tune: args.tune.tune_params(args.model.threads),
        touchpoint: args.touchpoint,
        record_cases: args.cases.is_some(),
    };
    let configured = settings.pipeline.clone();
    let report = tokio::task::spawn_blocking(move || {
        let resolve = |tuned: &serde_json::Value| {
            settings
                .pipeline_for(Some(tuned))
                .map_err(|e| e.to_string())
        };
        evaluate::evaluate(&history, &params, &configured, &resolve)
    })
    .await??;
    if let Some(tuning) = &report.tuning {
        eprint!("{}", tuning.summary());
    }
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.cases {
        write_cases(path, &report.served_cases)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(dir) = &args.report {
        let files = report::write_report(&report, dir)?;
        eprintln!(
            "report: {}, {}, {}",
            files.json.display(),
            files.table.display(),
            files.chart.display()
        );
    }
    Ok(())
}
