//! Settings: compiled-in `config/default.toml`, then `config/{TANDEM_ENV}.toml`, then
//! `TANDEM__SECTION__KEY` environment variables; `DATABASE_URL` and `TANDEM_ADMIN_TOKEN` for
//! secrets. Validated once at start.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

use crate::capping::{CapPolicy, CapStoreKind};
use crate::events::EventSettings;
use crate::experiments::{ExperimentConfig, Experiments};
use crate::pipeline::PipelineConfig;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// A value that must never be printed or logged.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// All settings of the service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP server.
    pub server: ServerSettings,
    /// Postgres.
    pub database: DatabaseSettings,
    /// Model loading.
    pub model: ModelSettings,
    /// Scoring pipeline.
    pub pipeline: PipelineConfig,
    /// Frequency capping.
    pub capping: CapPolicy,
    /// Storefront events and their writer.
    pub events: EventSettings,
    /// The explorer page.
    #[serde(default)]
    pub explore: ExploreSettings,
    /// The live catalogue (`/items`).
    pub catalogue: CatalogueSettings,
    /// Experiments (`[[experiments]]`), none by default.
    #[serde(default)]
    pub experiments: Vec<ExperimentConfig>,
    /// Key of the hash that pseudonymises shopper and session ids (from
    /// `TANDEM_PSEUDONYM_KEY`); required by `serve` with a database, a random one per process
    /// without (the state it keys then lives only in that process).
    #[serde(skip)]
    pub pseudonym_key: Option<Secret>,
    /// Admin bearer token (from `TANDEM_ADMIN_TOKEN`); admin endpoints refuse all calls without it.
    #[serde(skip)]
    pub admin_token: Option<Secret>,
    /// Redis URL of the shared cap store (from `REDIS_URL`), for `capping.store = "redis"`.
    #[serde(skip)]
    pub redis_url: Option<Secret>,
    /// The `[pipeline]` values set in a configuration file or the environment (not the
    /// compiled defaults): they win over a model version's tuned values.
    #[serde(skip)]
    pub pipeline_overrides: serde_json::Value,
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Interface to bind.
    pub host: String,
    /// Port to bind (0 = any free port).
    pub port: u16,
    /// Per-request time limit.
    pub request_timeout_ms: u64,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest query string.
    pub max_query_bytes: usize,
    /// Grace period for in-flight requests on shutdown.
    pub shutdown_grace_ms: u64,
    /// Most storefront requests in flight at once; beyond it requests get a fast 503.
    pub max_in_flight: usize,
    /// Longest a storefront request may wait to be worked on; older ones get a fast 503.
    pub max_queue_delay_ms: u64,
    /// The tighter bound on that wait while the queue stands.
    pub queue_delay_target_ms: u64,
    /// How often the server judges whether its queue stands.
    pub queue_delay_interval_ms: u64,
    /// Most connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Longest a client may take to send a request head; also how long an idle keep-alive
    /// connection stays open.
    pub header_read_timeout_ms: u64,
    /// Longest a request body may take to arrive.
    pub body_read_timeout_ms: u64,
    /// Longest request target (path and query).
    pub max_uri_bytes: usize,
    /// Most bytes of header fields in one request.
    pub max_header_bytes: usize,
    /// Whether the process may use transparent huge pages (see [`crate::huge_pages`]).
    #[serde(default)]
    pub transparent_huge_pages: bool,
    /// Origins (`scheme://host[:port]`) whose pages may call the storefront routes
    /// (`/recommendations`, `/events`, `/widget.js`) from the browser; none by default.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

/// The explorer page (`GET /explore`) and the item search it uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExploreSettings {
    /// Whether the explorer's item search answers without the admin token.
    #[serde(default)]
    pub open: bool,
}

/// Postgres settings; the URL comes from `DATABASE_URL`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connection URL; `None` runs without a database.
    #[serde(default)]
    pub url: Option<Secret>,
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a pooled connection.
    pub acquire_timeout_ms: u64,
    /// Whether `serve` applies migrations at start.
    pub migrate_on_start: bool,
}

/// Model loading settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Version to load at start (default: newest ready).
    #[serde(default)]
    pub version: Option<i64>,
    /// First back-off between start-up load attempts.
    pub retry_initial_ms: u64,
    /// Longest back-off between start-up load attempts.
    pub retry_max_ms: u64,
}

/// Live catalogue settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueSettings {
    /// Largest `POST /items` body (a batch of 10,000 items must fit).
    pub max_body_bytes: usize,
    /// Most items the live catalogue adds to one loaded model version.
    pub max_added_items: usize,
    /// Content neighbours computed for an added item.
    pub content_neighbours: usize,
    /// Smallest cosine for an added item's content neighbour.
    pub content_min_similarity: f32,
}

impl CatalogueSettings {
    /// How items unknown to the served version are added.
    pub fn add_policy(&self) -> crate::model::AddPolicy {
        crate::model::AddPolicy {
            max_added_items: self.max_added_items,
            content_neighbours: self.content_neighbours,
            min_similarity: self.content_min_similarity,
        }
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A source could not be read or parsed.
    #[error("cannot read settings: {0}")]
    Read(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// Dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Settings {
    /// Loads settings from the compiled-in defaults, `config_dir/{TANDEM_ENV}.toml` and the
    /// environment, then validates them.
    pub fn load(config_dir: &Path) -> Result<Self, SettingsError> {
        let env = std::env::var("TANDEM_ENV").unwrap_or_else(|_| "local".to_string());
        let file = || File::from(config_dir.join(format!("{env}.toml"))).required(false);
        let environment = || {
            Environment::with_prefix("TANDEM")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("server.cors_origins")
        };
        let mut settings: Settings = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(file())
            .add_source(environment())
            .build()?
            .try_deserialize()?;
        let user_set = Config::builder()
            .add_source(file())
            .add_source(environment())
            .build()?;
        settings.pipeline_overrides = match user_set.get::<serde_json::Value>("pipeline") {
            Ok(value) => value,
            Err(config::ConfigError::NotFound(_)) => serde_json::Value::Null,
            Err(error) => return Err(error.into()),
        };
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !url.is_empty() {
                settings.database.url = Some(Secret::new(url));
            }
        }
        settings.admin_token = std::env::var("TANDEM_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        settings.redis_url = std::env::var("REDIS_URL")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        settings.pseudonym_key = std::env::var("TANDEM_PSEUDONYM_KEY")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        settings.validate()?;
        Ok(settings)
    }

    /// The compiled-in defaults alone (no files, no environment).
    pub fn defaults() -> Result<Self, SettingsError> {
        let settings: Settings = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The pipeline configuration to serve a version with: the compiled defaults, then the
    /// version's `tuned` values (a partial `[pipeline]` table), then the values set in a
    /// configuration file or the environment. Built from [`Settings::pipeline`], which
    /// already holds the first and the last, by taking each tuned value the configuration
    /// does not set.
    pub fn pipeline_for(
        &self,
        tuned: Option<&serde_json::Value>,
    ) -> Result<PipelineConfig, SettingsError> {
        let Some(tuned) = tuned else {
            return Ok(self.pipeline.clone());
        };
        let invalid = |message: String| SettingsError::Invalid {
            key: "pipeline",
            message,
        };
        let mut layered =
            serde_json::to_value(&self.pipeline).map_err(|e| invalid(e.to_string()))?;
        merge_unset(&mut layered, tuned, &self.pipeline_overrides);
        let config: PipelineConfig =
            serde_json::from_value(layered).map_err(|e| invalid(format!("tuned values: {e}")))?;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Checks ranges that serde cannot express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key, message: &str| {
            Err(SettingsError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        if self.server.request_timeout_ms == 0 {
            return invalid("server.request_timeout_ms", "must be positive");
        }
        if self.server.max_body_bytes == 0 || self.server.max_query_bytes == 0 {
            return invalid("server.max_body_bytes", "size limits must be positive");
        }
        if let Some(origin) = self
            .server
            .cors_origins
            .iter()
            .find(|origin| !is_origin(origin))
        {
            return invalid(
                "server.cors_origins",
                &format!("{origin:?} is not an origin such as https://shop.example (scheme, host, optional port, no path)"),
            );
        }
        if let Err(message) = self.pipeline.validate() {
            return invalid("pipeline", &message);
        }
        if let Err(message) = self.capping.validate() {
            return invalid("capping", &message);
        }
        if self.capping.store == CapStoreKind::Redis && self.redis_url.is_none() {
            return invalid("capping.store", "\"redis\" needs REDIS_URL");
        }
        // A per-process random key would make replicas disagree about every shopper.
        if self.capping.store == CapStoreKind::Redis && self.pseudonym_key.is_none() {
            return invalid(
                "capping.store",
                "\"redis\" needs TANDEM_PSEUDONYM_KEY, shared by every replica",
            );
        }
        if self.catalogue.max_body_bytes == 0 {
            return invalid("catalogue.max_body_bytes", "must be positive");
        }
        if !(-1.0..=1.0).contains(&self.catalogue.content_min_similarity) {
            return invalid("catalogue.content_min_similarity", "must be from -1 to 1");
        }
        if let Err(message) = self.events.validate() {
            return invalid("events", &message);
        }
        if let Err(message) = Experiments::build(&self.experiments, &self.pipeline) {
            return invalid("experiments", &message);
        }
        if self.server.max_in_flight == 0 {
            return invalid("server.max_in_flight", "must be positive");
        }
        if self.server.max_connections == 0
            || self.server.max_queue_delay_ms == 0
            || self.server.queue_delay_target_ms == 0
            || self.server.queue_delay_interval_ms == 0
            || self.server.header_read_timeout_ms == 0
            || self.server.body_read_timeout_ms == 0
            || self.server.max_uri_bytes == 0
            || self.server.max_header_bytes == 0
        {
            return invalid(
                "server",
                "max_connections, max_queue_delay_ms, queue_delay_target_ms, \
                 queue_delay_interval_ms, header_read_timeout_ms, body_read_timeout_ms, \
                 max_uri_bytes and max_header_bytes must be positive",
            );
        }
        Ok(())
    }

    /// Per-request time limit.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.server.request_timeout_ms)
    }
}

/// Copies into `base` each value of `over` whose key path `set` does not hold (objects are
/// merged key by key).
fn merge_unset(base: &mut serde_json::Value, over: &serde_json::Value, set: &serde_json::Value) {
    let (serde_json::Value::Object(base), serde_json::Value::Object(over)) = (base, over) else {
        return;
    };
    for (key, value) in over {
        let set_here = set.get(key);
        match (base.get_mut(key), value) {
            (Some(existing), serde_json::Value::Object(_)) if existing.is_object() => {
                merge_unset(
                    existing,
                    value,
                    set_here.unwrap_or(&serde_json::Value::Null),
                );
            }
            (_, _) if set_here.is_some() => {}
            (_, serde_json::Value::Null) => {}
            (_, value) => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Whether `s` is a browser origin: `http` or `https`, a host, an optional port, nothing else
/// (an `Origin` header never has a path or a trailing slash, so such an entry would never match).
fn is_origin(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_value_wins_over_a_tuned_one_which_wins_over_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let env = std::env::var("TANDEM_ENV").unwrap_or_else(|_| "local".to_string());
        std::fs::write(
            dir.path().join(format!("{env}.toml")),
            "[pipeline.checkout]\ntheta = 0.8\n",
        )
        .unwrap();
        let s = Settings::load(dir.path()).unwrap();
        assert_eq!(s.pipeline.checkout.theta, 0.8);
        let tuned = serde_json::json!({
            "checkout": {"theta": 1.0, "content": 0.05},
            "cart": {"popularity": 0.1},
        });
        let served = s.pipeline_for(Some(&tuned)).unwrap();
        assert_eq!(served.checkout.theta, 0.8, "the file wins");
        assert_eq!(served.checkout.content, 0.05, "then the version's tuning");
        assert_eq!(served.cart.popularity, 0.1);
        assert_eq!(
            served.product,
            PipelineConfig::default().product,
            "then the default"
        );
        assert_eq!(
            s.pipeline_for(None).unwrap(),
            s.pipeline,
            "untuned: as configured"
        );
        let unknown = serde_json::json!({"checkout": {"colour": 1}});
        assert!(s.pipeline_for(Some(&unknown)).is_err());
    }

    #[test]
    fn compiled_in_defaults_deserialize_and_validate() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.pipeline, PipelineConfig::default());
        assert_eq!(s.capping, CapPolicy::default());
        assert_eq!(s.events, EventSettings::default());
        assert!(s.database.url.is_none() && s.admin_token.is_none());
    }

    #[test]
    fn cors_origins_must_be_bare_origins() {
        let mut s = Settings::defaults().unwrap();
        assert!(s.server.cors_origins.is_empty() && !s.explore.open);
        s.server.cors_origins = vec![
            "https://shop.example".into(),
            "http://127.0.0.1:3000".into(),
        ];
        assert!(s.validate().is_ok());
        for bad in [
            "https://shop.example/",
            "shop.example",
            "https://",
            "ftp://x",
            "*",
        ] {
            s.server.cors_origins = vec![bad.into()];
            assert!(s.validate().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn secrets_never_print() {
        let mut s = Settings::defaults().unwrap();
        s.admin_token = Some(Secret::new("hunter2-very-secret"));
        s.database.url = Some(Secret::new("postgres://u:pw@h/db"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("pw@"));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let mut s = Settings::defaults().unwrap();
        s.pipeline.default_k = 51;
        assert!(matches!(
            s.validate(),
            Err(SettingsError::Invalid {
                key: "pipeline",
                ..
            })
        ));
    }
}
