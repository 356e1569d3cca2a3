//! Tracing subscriber: human-readable logs by default, JSON with `TANDEM_LOG_FORMAT=json`;
//! levels from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber (call once, from `main`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("TANDEM_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
