//! The `tandem` binary: parse the command line, start telemetry, run.

use clap::Parser;

/// mimalloc instead of glibc's malloc: a request allocates small, short-lived buffers on every
/// worker thread, where glibc's arenas contend.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tandem::telemetry::init();
    let cli = tandem::cli::Cli::parse();
    match tandem::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
