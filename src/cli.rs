//! The command line: `serve`, `migrate` and the offline commands, each a thin call into the
//! library.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app::{shutdown_signal, Application, InitialModel};
use crate::config::Settings;
use crate::model::Snapshot;
use crate::offline::cli::{
    run_evaluate, run_import, run_train, EvaluateArgs, ImportArgs, TrainArgs,
};
use crate::offline::demo;
use crate::offline::order_generator::{write_orders, OrderReport, OrderSpec};
use crate::offline::synthetic::SyntheticSpec;
use crate::store;

/// Tandem: cross-sell recommendations. "What else belongs in this basket?"
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
pub struct Cli {
    /// Directory holding `{TANDEM_ENV}.toml` overrides.
    #[arg(
        long,
        global = true,
        default_value = "config",
        env = "TANDEM_CONFIG_DIR"
    )]
    pub config_dir: PathBuf,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve recommendations over HTTP (the default).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Import an order-history CSV (plain or gzip) into items, orders and order_lines, or a
    /// product feed (--catalogue) into the live catalogue.
    Import(ImportArgs),
    /// Build a new model version from the order history and mark it ready.
    Train(TrainArgs),
    /// Train before a date, test on the baskets after it, and compare variants.
    Evaluate(EvaluateArgs),
    /// Write a synthetic model version of any size (for load and scale tests) and mark it
    /// ready; with `--orders FILE`, write a synthetic order history instead (no database).
    Generate(GenerateArgs),
    /// Make a ready version the active one: every running replica loads it (LISTEN/NOTIFY),
    /// and replicas started later load it too.
    Activate(ActivateArgs),
}

/// Options of `tandem activate`.
#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// The version to activate.
    pub version: i64,
}

/// Options of `tandem serve`.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Port to listen on (overrides `server.port`).
    #[arg(long, env = "TANDEM_PORT")]
    pub port: Option<u16>,
}

/// Options of `tandem generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of items.
    #[arg(long, default_value_t = 100_000)]
    pub items: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 64, conflicts_with = "orders")]
    pub dim: usize,
    /// Co-purchase neighbours per item.
    #[arg(long, default_value_t = 50, conflicts_with = "orders")]
    pub neighbours: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write a synthetic order history to this CSV file (gzip when it ends in `.gz`) in the
    /// layout `train --orders` reads, instead of a model version; needs no database.
    #[arg(long, requires = "lines")]
    pub orders: Option<PathBuf>,
    /// Order lines of the history (with `--orders`).
    #[arg(long, requires = "orders")]
    pub lines: Option<u64>,
    /// Customers with an id (with `--orders`; default: one per five expected baskets).
    #[arg(long, requires = "orders")]
    pub customers: Option<usize>,
}

/// Writes the synthetic order history of `tandem generate --orders` (gzip for `*.gz`).
fn generate_orders(path: &std::path::Path, spec: &OrderSpec) -> anyhow::Result<OrderReport> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let file = std::io::BufWriter::with_capacity(1 << 20, file);
    let context = || format!("cannot write {}", path.display());
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let report = write_orders(spec, &mut gz).with_context(context)?;
        gz.finish()
            .with_context(context)?
            .flush()
            .with_context(context)?;
        Ok(report)
    } else {
        let mut file = file;
        let report = write_orders(spec, &mut file).with_context(context)?;
        file.flush().with_context(context)?;
        Ok(report)
    }
}

fn database_pool(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    let url = settings
        .database
        .url
        .as_ref()
        .context("DATABASE_URL is not set; this command needs Postgres")?;
    Ok(store::connect_lazy(
        url.expose(),
        settings.database.max_connections,
        Duration::from_millis(settings.database.acquire_timeout_ms),
    )?)
}

fn optional_pool(settings: &Settings) -> anyhow::Result<Option<sqlx::PgPool>> {
    match settings.database.url {
        Some(_) => database_pool(settings).map(Some),
        None => Ok(None),
    }
}

/// Trains the embedded demo model (no database configured), off the async runtime.
async fn demo_snapshot() -> anyhow::Result<Snapshot> {
    tracing::info!(
        "DATABASE_URL is not set: training the embedded demo model on the bundled sample of \
         the UCI Online Retail data (CC BY 4.0); set DATABASE_URL to serve your own versions"
    );
    let (snapshot, stats) = tokio::task::spawn_blocking(demo::build_demo_snapshot)
        .await
        .context("the demo training task failed")??;
    tracing::info!(
        baskets = stats.baskets,
        items = stats.items,
        pairs = stats.pairs,
        seconds = stats.elapsed.as_secs_f64(),
        "serving the embedded demo model (version 0); /reload needs a database"
    );
    Ok(snapshot)
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = Settings::load(&cli.config_dir)?;
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    if matches!(command, Command::Train(_) | Command::Evaluate(_)) {
        // Training allocates and frees large buffers over and over; with huge pages every
        // fresh one is zeroed 2 MB at a time, which cost a fifth of a training run's CPU
        // (docs/performance.md).
        crate::huge_pages::set_transparent_huge_pages(false);
    }
    match command {
        Command::Serve(args) => {
            if let Some(port) = args.port {
                settings.server.port = port;
            }
            let initial = if settings.database.url.is_some() {
                InitialModel::FromDatabase
            } else if std::env::var("TANDEM_ENV").is_ok_and(|env| env == "production") {
                // A deployment that lost its database secret must fail, not serve demo data.
                anyhow::bail!("DATABASE_URL is not set and TANDEM_ENV=production: refusing to serve the demo model");
            } else {
                InitialModel::Snapshot(Arc::new(demo_snapshot().await?))
            };
            let app = Application::build(settings, initial).await?;
            app.run_until_stopped(shutdown_signal()).await?;
        }
        Command::Import(args) => run_import(args, optional_pool(&settings)?).await?,
        Command::Train(args) => run_train(args, optional_pool(&settings)?, &settings).await?,
        Command::Evaluate(args) => {
            let pool = optional_pool(&settings)?;
            run_evaluate(args, pool, settings).await?
        }
        Command::Activate(args) => {
            let pool = database_pool(&settings)?;
            store::migrate(&pool).await?;
            store::activate(&pool, crate::domain::ModelVersion(args.version)).await?;
            println!(
                "activated version {}; running replicas are loading it",
                args.version
            );
        }
        Command::Migrate => {
            let pool = database_pool(&settings)?;
            store::migrate(&pool).await?;
            tracing::info!("migrations applied");
        }
        Command::Generate(GenerateArgs {
            orders: Some(path),
            items,
            lines,
            seed,
            customers,
            ..
        }) => {
            let spec = OrderSpec {
                items,
                lines: lines.context("--orders needs --lines")?,
                seed,
                customers,
                ..OrderSpec::default()
            };
            let started = Instant::now();
            let r = tokio::task::spawn_blocking(move || {
                generate_orders(&path, &spec).map(|r| (path, r))
            })
            .await
            .context("the generator task failed")??;
            let (path, r) = r;
            let customer_baskets = r.baskets - r.anonymous_baskets;
            println!(
                "wrote {}: {} items ({} sold, {} in at least 5 baskets, {} variants), {} baskets, \
                 {} lines, {} customers ({} returning; {:.1} % of customer baskets by returning \
                 customers, {:.1} % of lines re-bought), {:.1} % of baskets anonymous, in {:.1} s",
                path.display(),
                r.items,
                r.items_sold,
                r.items_with_5_baskets,
                r.variant_items,
                r.baskets,
                r.lines,
                r.customers,
                r.returning_customers,
                100.0 * r.returning_baskets as f64 / customer_baskets.max(1) as f64,
                100.0 * r.repeat_lines as f64 / r.lines.max(1) as f64,
                100.0 * r.anonymous_baskets as f64 / r.baskets.max(1) as f64,
                started.elapsed().as_secs_f64()
            );
            eprintln!("{}", serde_json::to_string(&r)?);
        }
        Command::Generate(args) => {
            let pool = database_pool(&settings)?;
            store::migrate(&pool).await?;
            let spec = SyntheticSpec {
                items: args.items,
                dim: args.dim,
                neighbours: args.neighbours,
                seed: args.seed,
                ..SyntheticSpec::default()
            };
            let started = Instant::now();
            let version = spec.write_version(&pool).await?;
            println!(
                "wrote synthetic version {version}: {} items, {} neighbours each, {} dimensions, in {:.1} s",
                spec.items,
                spec.neighbours,
                spec.dim,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
