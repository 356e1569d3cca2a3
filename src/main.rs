//! The `tandem` binary: parse the command line, start telemetry, run.

use clap::Parser;

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
