//! Serving: what a storefront call does beyond reading its fields and writing its answer.
//!
//! [`Recommender::serve`] assigns the shopper's experiment variant, applies its default list
//! length, leaves out what frequency capping and "not interested" keep from the shopper, runs
//! the pipeline, records what was shown, and counts the list for its variant.
//! [`Recommender::feedback`] takes storefront events to attribution, capping and the event
//! store; [`Recommender::erase_shopper`] forgets a shopper. Nothing here knows HTTP: the
//! router's handlers parse, call this and render, and any other caller (another transport, an
//! offline replay of capping and experiments) goes through the same code.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use sqlx::PgPool;
use uuid::Uuid;

use crate::capping::{CapState, CapStore, Feedback, ItemIds, Pseudonymizer, ShopperKey};
use crate::domain::{ModelVersion, Touchpoint};
use crate::events::{Event, EventKind, EventWriter, SubmitError};
use crate::experiments::{Attribution, Experiments, CONTROL};
use crate::metrics::Metrics;
use crate::model::Snapshot;
use crate::pipeline::{self, CappedItems, PipelineConfig, ReasonKind, Recommendations, Request};
use crate::store::{self, Erasure};

/// Builds the configuration of shoppers outside any experiment, and the experiments, for a
/// version from its tuned values (a partial `[pipeline]` table; `None` when untuned): the
/// application layers them beneath its own settings.
pub type ConfigResolver = dyn Fn(Option<&serde_json::Value>) -> Result<(PipelineConfig, Experiments), String>
    + Send
    + Sync;

/// What a [`Recommender`] is made of (the application builds it once from its settings).
pub struct Parts {
    /// The configuration of shoppers outside any experiment, before any version's tuning.
    pub pipeline: PipelineConfig,
    /// Configured experiments.
    pub experiments: Experiments,
    /// How a version's tuned values become its configuration (`None`: every version is
    /// served with `pipeline` and `experiments` as they are).
    pub resolver: Option<Arc<ConfigResolver>>,
    /// Frequency-capping state.
    pub caps: Arc<dyn CapStore>,
    /// Whether capping applies.
    pub capping_enabled: bool,
    /// Turns shopper ids into keys before they reach any store.
    pub pseudonymizer: Pseudonymizer,
    /// How many recent request ids are remembered with the variant that served them.
    pub attribution_capacity: NonZeroUsize,
    /// Writes storefront events (none without a database).
    pub events: Option<Arc<EventWriter>>,
    /// Where erasures are announced to every replica (none without a database).
    pub erasures: Option<PgPool>,
    /// The service's metrics.
    pub metrics: Metrics,
}

/// The configuration one model version is served with.
struct VersionConfig {
    version: ModelVersion,
    pipeline: PipelineConfig,
    experiments: Experiments,
}

/// Serves lists and takes feedback, whatever the transport.
#[derive(Clone)]
pub struct Recommender {
    pipeline: Arc<PipelineConfig>,
    experiments: Arc<Experiments>,
    resolver: Option<Arc<ConfigResolver>>,
    /// The configuration of the version served last: resolved once per version, not per
    /// request.
    versioned: Arc<ArcSwapOption<VersionConfig>>,
    /// Whether an invalid tuning has been logged (once per process is enough).
    tuning_warned: Arc<AtomicBool>,
    caps: Arc<dyn CapStore>,
    capping_enabled: bool,
    pseudonymizer: Pseudonymizer,
    attribution: Arc<Attribution>,
    events: Option<Arc<EventWriter>>,
    erasures: Option<PgPool>,
    metrics: Metrics,
}

/// A list served to a shopper, ready to render.
#[derive(Debug)]
pub struct Served<'a> {
    /// Identifies this answer; events that cite it are counted for its variant.
    pub request_id: Uuid,
    /// `experiment/variant`, or [`CONTROL`].
    pub variant: &'a str,
    /// Where the list is shown.
    pub touchpoint: Touchpoint,
    /// The items in display order, and the cart ids the model does not know.
    pub recommendations: Recommendations<'a>,
}

/// What became of a body of storefront events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Events accepted (all of them).
    pub accepted: usize,
    /// Whether they are stored (not without a database).
    pub stored: bool,
}

/// Why a shopper could not be erased.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The pseudonymizer gave no key for the id (a bug: every non-empty id has one).
    #[error("no shopper key for a non-empty id")]
    NoShopperKey,
    /// The stored events could not be deleted.
    #[error("cannot delete events: {0}")]
    Events(#[from] sqlx::Error),
    /// The cap store could not be reached, so state may remain.
    #[error("the capping store could not be reached")]
    CapStoreUnavailable,
    /// The erasure could not be announced to the other replicas, whose state may remain.
    #[error("cannot announce the erasure to every replica: {0}")]
    Announce(sqlx::Error),
}

impl Recommender {
    /// A recommender made of `parts`.
    pub fn new(parts: Parts) -> Self {
        Self {
            pipeline: Arc::new(parts.pipeline),
            experiments: Arc::new(parts.experiments),
            resolver: parts.resolver,
            versioned: Arc::new(ArcSwapOption::empty()),
            tuning_warned: Arc::new(AtomicBool::new(false)),
            caps: parts.caps,
            capping_enabled: parts.capping_enabled,
            pseudonymizer: parts.pseudonymizer,
            attribution: Arc::new(Attribution::new(parts.attribution_capacity)),
            events: parts.events,
            erasures: parts.erasures,
            metrics: parts.metrics,
        }
    }

    /// The key used to pseudonymise shopper ids, for transports that parse events (which
    /// pseudonymise the ids as they read them).
    pub fn pseudonymizer(&self) -> &Pseudonymizer {
        &self.pseudonymizer
    }

    /// The event writer, when there is a database to write to.
    pub fn event_writer(&self) -> Option<&Arc<EventWriter>> {
        self.events.as_ref()
    }

    /// The configuration `snapshot`'s version is served with (its tuned values beneath the
    /// settings), resolved when the version changes; `None` without a resolver.
    fn version_config(&self, snapshot: &Snapshot) -> Option<Arc<VersionConfig>> {
        let resolver = self.resolver.as_ref()?;
        let current = self.versioned.load_full();
        if let Some(config) = current.filter(|c| c.version == snapshot.version()) {
            return Some(config);
        }
        let tuned = snapshot.tuning().and_then(|t| t.get("pipeline"));
        let (pipeline, experiments) = match resolver(tuned) {
            Ok(resolved) => resolved,
            Err(error) => {
                // A version's tuning is data, not configuration: serve the settings instead.
                if !self.tuning_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(version = %snapshot.version(), %error,
                        "the version's tuned settings are invalid; serving the configured ones");
                }
                resolver(None).ok()?
            }
        };
        let config = Arc::new(VersionConfig {
            version: snapshot.version(),
            pipeline,
            experiments,
        });
        self.versioned.store(Some(config.clone()));
        Some(config)
    }

    /// The configuration of shoppers outside any experiment for `snapshot`'s version.
    pub fn pipeline_for(&self, snapshot: &Snapshot) -> PipelineConfig {
        self.version_config(snapshot)
            .map_or_else(|| (*self.pipeline).clone(), |c| c.pipeline.clone())
    }

    /// Serves `request` from `snapshot`. A request whose `k` is 0 gets its variant's default
    /// length; one with `personalize` off (the shopper opted out) is neither assigned to an
    /// experiment nor capped, and leaves no state behind.
    pub async fn serve<'a>(&'a self, snapshot: &Snapshot, request: &'a mut Request) -> Served<'a> {
        self.serve_as(snapshot, request, None).await
    }

    /// Whether `label` can be forced on a request: a configured variant, or [`CONTROL`].
    pub fn knows_variant(&self, label: &str) -> bool {
        label == CONTROL || self.experiments.variant(label).is_some()
    }

    /// Every configured variant label.
    pub fn variant_labels(&self) -> Vec<&str> {
        self.experiments.labels().collect()
    }

    /// [`Recommender::serve`], but with the variant `forced` (a label [`knows_variant`]
    /// accepts) instead of the shopper's assignment, for inspecting what a variant serves. A
    /// forced list is neither counted in the per-variant metrics nor attributed to its variant.
    ///
    /// [`knows_variant`]: Recommender::knows_variant
    pub async fn serve_as<'a>(
        &'a self,
        snapshot: &Snapshot,
        request: &'a mut Request,
        forced: Option<&str>,
    ) -> Served<'a> {
        // Opted-out requests are not assigned: they get the control configuration.
        let variant = match forced {
            Some(label) => self.experiments.variant(label),
            None => request
                .personalize
                .then(|| {
                    self.experiments.assign(
                        request.touchpoint,
                        request.user.as_deref(),
                        request.session.as_deref(),
                    )
                })
                .flatten(),
        };
        let versioned = self.version_config(snapshot);
        let pipeline: &PipelineConfig = match (&versioned, variant) {
            (Some(config), Some(v)) => config
                .experiments
                .variant(&v.label)
                .map_or(&v.pipeline, |tuned| &tuned.pipeline),
            (Some(config), None) => &config.pipeline,
            (None, Some(v)) => &v.pipeline,
            (None, None) => &self.pipeline,
        };
        if request.k == 0 {
            request.k = pipeline.default_k;
        }
        let request: &'a Request = request;
        let shopper = if request.personalize && self.capping_enabled {
            self.pseudonymizer
                .shopper_key(request.user.as_deref(), request.session.as_deref())
        } else {
            None
        };
        let now = Instant::now();
        let cap_state = match shopper {
            Some(key) => self.caps.check(key, now).await,
            None => CapState::default(),
        };
        let known = |ids: &ItemIds| ids.iter().filter_map(|id| snapshot.index_of(id)).collect();
        let capped = CappedItems::with_dismissed(
            known(&cap_state.capped_items),
            known(&cap_state.dismissed_items),
        );
        let mut recommendations = pipeline::recommend(snapshot, request, pipeline, &capped);
        if cap_state.fatigued {
            // This shopper has seen enough lists for now: an empty list is a valid answer.
            recommendations.items.clear();
        }
        if let Some(key) = shopper.filter(|_| !recommendations.items.is_empty()) {
            let served: Vec<&str> = recommendations
                .items
                .iter()
                .map(|r| snapshot.item_id(r.item))
                .collect();
            self.caps.record_served(key, &served, now).await;
        }
        let popular = recommendations
            .items
            .iter()
            .filter(|r| r.reason.kind == ReasonKind::Popular)
            .count();
        self.metrics
            .recommendation(recommendations.unknown_items.len(), popular);
        let request_id = Uuid::new_v4();
        let variant_label = variant.map_or(CONTROL, |v| &v.label);
        if !recommendations.items.is_empty() && forced.is_none() {
            self.metrics
                .list_served(request.touchpoint.as_str(), variant_label);
            if let Some(v) = variant {
                self.attribution
                    .record(request_id, v.label.clone(), request.touchpoint);
            }
        }
        Served {
            request_id,
            variant: variant_label,
            touchpoint: request.touchpoint,
            recommendations,
        }
    }

    /// Takes a body of storefront events, already validated and pseudonymised: fills each
    /// one's variant and touchpoint from the list it cites, queues them for the event store
    /// (all or none), counts them, and feeds impressions, engagement and "not interested" to
    /// frequency capping, for the items `snapshot` (the model serving now) knows: an id it
    /// does not know can never be recommended, so capping it would only grow the cap store
    /// at a client's whim. Every event is stored, whatever its item.
    pub async fn feedback(
        &self,
        snapshot: Option<&Snapshot>,
        mut events: Vec<Event>,
    ) -> Result<Received, SubmitError> {
        let accepted = events.len();
        let counted: Vec<(EventKind, &str, &str)> =
            events.iter_mut().map(|e| self.attribute(e)).collect();
        // What capping needs is taken before the events move into the queue.
        let known = |item: &str| snapshot.is_some_and(|s| s.index_of(item).is_some());
        let feedback: Vec<(ShopperKey, String, Feedback)> = if self.capping_enabled {
            events
                .iter()
                .filter(|e| known(&e.item_id))
                .filter_map(|e| {
                    let feedback = match e.kind {
                        EventKind::Impression => Feedback::Impression,
                        EventKind::Click | EventKind::AddToCart => Feedback::Engaged,
                        EventKind::Dismiss => Feedback::Dismissed,
                        EventKind::Purchase => return None,
                    };
                    Some((e.cap_key?, e.item_id.clone(), feedback))
                })
                .collect()
        } else {
            Vec::new()
        };
        if let Some(writer) = &self.events {
            writer.submit(events).inspect_err(|e| {
                let reason = match e {
                    SubmitError::QueueFull => "queue_full",
                    SubmitError::Closed => "shutting_down",
                };
                self.metrics.events_rejected(reason, accepted as u64);
            })?;
        }
        for (kind, touchpoint, variant) in counted {
            self.metrics.feedback_event(kind, touchpoint, variant);
        }
        let feedback: Vec<(ShopperKey, &str, Feedback)> = feedback
            .iter()
            .map(|(key, item, kind)| (*key, item.as_str(), *kind))
            .collect();
        if !feedback.is_empty() {
            self.caps.record_feedback(&feedback, Instant::now()).await;
        }
        Ok(Received {
            accepted,
            stored: self.events.is_some(),
        })
    }

    /// Fills an event's variant and touchpoint from the request it cites when it does not
    /// carry them; returns its metric labels (kind, touchpoint, variant). Variant labels only
    /// take configured names ("other" for anything else), so a client cannot grow them without
    /// bound.
    fn attribute(&self, event: &mut Event) -> (EventKind, &'static str, &str) {
        if let Some((variant, touchpoint)) = event
            .request_id
            .filter(|_| event.variant.is_none() || event.touchpoint.is_none())
            .and_then(|id| self.attribution.lookup(id))
        {
            event.variant.get_or_insert_with(|| variant.to_string());
            event.touchpoint.get_or_insert(touchpoint);
        }
        let variant = match event.variant.as_deref() {
            None => "unknown",
            Some(CONTROL) => CONTROL,
            Some(label) => self
                .experiments
                .labels()
                .find(|known| *known == label)
                .unwrap_or("other"),
        };
        let touchpoint = event.touchpoint.map_or("unknown", |t| t.as_str());
        (event.kind, touchpoint, variant)
    }

    /// Erases what is held about a shopper, whether `id` is their user id or a session id:
    /// stored events, events still queued and frequency-capping state, here and, through an
    /// announcement in Postgres, on every replica. Returns the number of events deleted.
    pub async fn erase_shopper(&self, id: &str) -> Result<u64, EraseError> {
        let as_user = self.pseudonymizer.shopper_key(Some(id), None);
        let as_session = self.pseudonymizer.shopper_key(None, Some(id));
        let (Some(as_user), Some(as_session)) = (as_user, as_session) else {
            return Err(EraseError::NoShopperKey);
        };
        let erasure = Erasure {
            id: 0,
            shopper: as_user.to_hex(),
            session: as_session.to_hex(),
            erased_at: chrono::Utc::now(),
        };
        let events_deleted = match &self.events {
            Some(writer) => {
                writer
                    .erase(&erasure.shopper, &erasure.session, erasure.erased_at)
                    .await?
            }
            None => 0,
        };
        let erased = self.caps.forget(as_user).await & self.caps.forget(as_session).await;
        if !erased {
            return Err(EraseError::CapStoreUnavailable);
        }
        if let Some(pool) = &self.erasures {
            store::announce_erasure(pool, &erasure)
                .await
                .map_err(EraseError::Announce)?;
        }
        Ok(events_deleted)
    }

    /// Applies an erasure announced by any replica (this one included) to what this process
    /// holds: its queued events accepted before the erasure (and any of them its writer wrote
    /// after the erasing replica's delete) and its cap state. Cap state has no time of its own,
    /// so what this replica built for the shopper since the erasure goes too.
    async fn apply_erasure(&self, erasure: &Erasure) -> Result<(), EraseError> {
        if let Some(writer) = &self.events {
            writer
                .erase(&erasure.shopper, &erasure.session, erasure.erased_at)
                .await?;
        }
        for key in [&erasure.shopper, &erasure.session] {
            if let Some(key) = ShopperKey::from_hex(key) {
                if !self.caps.forget(key).await {
                    return Err(EraseError::CapStoreUnavailable);
                }
            }
        }
        Ok(())
    }

    /// Follows the erasures every replica announces, until the process ends: listens, and on
    /// every announcement or reconnection applies those after the last one applied here
    /// (a failed one is retried after `retry`).
    pub async fn follow_erasures(self, pool: PgPool, retry: Duration) {
        let mut applied: Option<i64> = None;
        loop {
            let mut listener = match store::ErasureListener::connect(&pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?retry, "cannot listen for erasures");
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            loop {
                // Listening first, then reading: an erasure announced in between is in the
                // log the read sees, or arrives as a notification after it.
                if let Err(error) = self.catch_up(&pool, &mut applied).await {
                    tracing::warn!(%error, retry_in = ?retry, "cannot apply announced erasures");
                    tokio::time::sleep(retry).await;
                    continue;
                }
                if let Err(error) = listener.next().await {
                    tracing::warn!(%error, retry_in = ?retry, "erasure listener failed");
                    tokio::time::sleep(retry).await;
                    break;
                }
            }
        }
    }

    /// Applies the announced erasures after `applied` (the first call only notes where the
    /// log ends: a process that starts holds nothing of earlier ones).
    async fn catch_up(&self, pool: &PgPool, applied: &mut Option<i64>) -> Result<(), EraseError> {
        let Some(after) = *applied else {
            *applied = Some(store::last_erasure(pool).await?);
            return Ok(());
        };
        for erasure in store::erasures_after(pool, after).await? {
            self.apply_erasure(&erasure).await?;
            *applied = Some(erasure.id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capping::{CapPolicy, MemoryCapStore};
    use crate::events::{parse_events, EventLimits};
    use crate::experiments::{ExperimentConfig, VariantConfig};
    use crate::pipeline::fixtures::small_snapshot;

    fn recommender(experiments: Experiments) -> Recommender {
        Recommender::new(Parts {
            resolver: None,
            pipeline: PipelineConfig::default(),
            experiments,
            caps: Arc::new(MemoryCapStore::new(CapPolicy {
                max_impressions_per_item: 1,
                ..CapPolicy::default()
            })),
            capping_enabled: true,
            pseudonymizer: Pseudonymizer::new(b"test"),
            attribution_capacity: NonZeroUsize::MIN,
            events: None,
            erasures: None,
            metrics: Metrics::new().unwrap(),
        })
    }

    fn request(user: &str, k: usize) -> Request {
        Request {
            cart: vec!["bag".into()],
            user: Some(user.into()),
            k,
            personalize: true,
            ..Request::default()
        }
    }

    fn first(snapshot: &Snapshot, served: &Served<'_>) -> String {
        let item = served.recommendations.items[0].item;
        snapshot.item_id(item).to_string()
    }

    #[tokio::test]
    async fn capping_and_not_interested_apply_without_any_transport() {
        let snapshot = small_snapshot();
        let recommender = recommender(Experiments::default());
        let mut once = request("ann", 1);
        let served = recommender.serve(&snapshot, &mut once).await;
        assert_eq!(
            (first(&snapshot, &served), served.variant),
            ("cable".into(), CONTROL)
        );
        let mut again = request("ann", 1);
        let served = recommender.serve(&snapshot, &mut again).await;
        assert_eq!(first(&snapshot, &served), "lens", "cable was shown once");

        let limits = EventLimits {
            max_events: 10,
            max_future_skew: chrono::Duration::minutes(10),
        };
        let dismiss = parse_events(
            br#"[{"kind": "dismiss", "item_id": "cable", "user": "ben"}]"#,
            limits,
            chrono::Utc::now(),
            Some(recommender.pseudonymizer()),
        )
        .unwrap();
        let received = recommender
            .feedback(Some(&snapshot), dismiss)
            .await
            .unwrap();
        assert_eq!(
            received,
            Received {
                accepted: 1,
                stored: false
            }
        );
        let mut ben = request("ben", 1);
        let served = recommender.serve(&snapshot, &mut ben).await;
        assert_eq!(first(&snapshot, &served), "lens", "ben is not interested");
    }

    #[tokio::test]
    async fn a_variant_gives_its_default_length_unless_the_request_names_one() {
        let snapshot = small_snapshot();
        let experiments = Experiments::build(
            &[ExperimentConfig {
                name: "length".into(),
                touchpoints: vec![],
                variants: vec![VariantConfig {
                    k: Some(2),
                    ..VariantConfig::new("two", 1.0)
                }],
            }],
            &PipelineConfig::default(),
        )
        .unwrap();
        let recommender = recommender(experiments);
        let mut unsized_request = request("cat", 0);
        let served = recommender.serve(&snapshot, &mut unsized_request).await;
        assert_eq!(served.variant, "length/two");
        assert_eq!(served.recommendations.items.len(), 2);
        let mut opted_out = Request {
            personalize: false,
            ..request("cat", 0)
        };
        let served = recommender.serve(&snapshot, &mut opted_out).await;
        assert_eq!(served.variant, CONTROL);
        assert_eq!(served.recommendations.items.len(), 4, "every item there is");
    }
}
