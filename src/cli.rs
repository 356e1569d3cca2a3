//! The command line: `serve`, `migrate` and the offline commands, each a thin call into the
//! library.

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
    /// Import an order-history CSV (plain or gzip) into items, orders and order_lines.
    Import(ImportArgs),
    /// Build a new model version from the order history and mark it ready.
    Train(TrainArgs),
    /// Train before a date, test on the baskets after it, and compare variants.
    Evaluate(EvaluateArgs),
    /// Write a synthetic model version of any size (for load and scale tests) and mark it ready.
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
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Co-purchase neighbours per item.
    #[arg(long, default_value_t = 50)]
    pub neighbours: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
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
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
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
