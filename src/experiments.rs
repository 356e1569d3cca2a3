//! Experiments: named variants of the pipeline (signal weights, theta, k) with traffic shares.
//!
//! A shopper (user id, else session id) is assigned by hashing the id with the experiment's
//! name, so assignment is stable across requests and replicas, and changing one experiment
//! never reshuffles the shoppers of another. Each touchpoint runs at most one experiment.
//! The variant that produced a list is remembered by request id ([`Attribution`]) so the
//! events that follow it are counted for that variant.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::Touchpoint;
use crate::pipeline::{PipelineConfig, MAX_K};

/// The label of shoppers outside any experiment (and of anonymous requests).
pub const CONTROL: &str = "control";

/// One experiment, from a `[[experiments]]` entry of the settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Name (the hash salt, and the first part of variant labels).
    pub name: String,
    /// Touchpoints it runs on (empty: every one).
    #[serde(default)]
    pub touchpoints: Vec<Touchpoint>,
    /// Its variants; shares add up to 1.
    pub variants: Vec<VariantConfig>,
}

/// One variant: a traffic share and what it changes of the touchpoint's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    /// Name, unique within the experiment.
    pub name: String,
    /// Share of the experiment's shoppers, in (0, 1].
    pub share: f64,
    /// List length when the request does not say.
    #[serde(default)]
    pub k: Option<usize>,
    /// Weight of co-purchase with the cart.
    #[serde(default)]
    pub collaborative: Option<f32>,
    /// Weight of content similarity.
    #[serde(default)]
    pub content: Option<f32>,
    /// Weight of the session.
    #[serde(default)]
    pub session: Option<f32>,
    /// Weight of the shopper's earlier purchases (scaled per request by the cart's restock
    /// share when `pipeline.restock_scaling` is on, as the serving weight is).
    #[serde(default)]
    pub purchased: Option<f32>,
    /// Weight of the popularity prior.
    #[serde(default)]
    pub popularity: Option<f32>,
    /// DPP trade-off.
    #[serde(default)]
    pub theta: Option<f32>,
    /// Whether substitutes are demoted.
    #[serde(default)]
    pub demote_substitutes: Option<bool>,
    /// Whether the `purchased` weight is scaled by the cart's restock share
    /// (`pipeline.restock_scaling`), for the requests this variant serves: so an experiment
    /// can test the scaling itself, or give a `purchased` weight that is taken as it stands.
    #[serde(default)]
    pub restock_scaling: Option<bool>,
    /// Weight of having been bought beside a cart item (`pipeline.purchased_beside_cart`),
    /// for the requests this variant serves.
    #[serde(default)]
    pub purchased_beside_cart: Option<f32>,
}

impl VariantConfig {
    /// A variant named `name` with `share` of the traffic that changes nothing (yet).
    pub fn new(name: impl Into<String>, share: f64) -> Self {
        Self {
            name: name.into(),
            share,
            k: None,
            collaborative: None,
            content: None,
            session: None,
            purchased: None,
            popularity: None,
            theta: None,
            demote_substitutes: None,
            restock_scaling: None,
            purchased_beside_cart: None,
        }
    }
}

/// An assigned variant: its label and the configuration its requests use.
#[derive(Debug)]
pub struct Variant {
    /// `experiment/variant`, as in responses, metric labels and stored events.
    pub label: Arc<str>,
    /// The pipeline configuration with the variant's changes.
    pub pipeline: Arc<PipelineConfig>,
    /// List length when the request does not say.
    pub k: usize,
    upper: f64,
}

#[derive(Debug)]
struct Experiment {
    name: String,
    touchpoints: Vec<Touchpoint>,
    variants: Vec<Variant>,
}

/// Every configured experiment, ready to assign shoppers.
#[derive(Debug, Default)]
pub struct Experiments {
    experiments: Vec<Experiment>,
}

/// A hash of the experiment and the shopper, uniform in [0, 1).
fn bucket(experiment: &str, kind: &str, id: &str) -> f64 {
    let digest = Sha256::new()
        .chain_update(experiment.as_bytes())
        .chain_update([0])
        .chain_update(kind.as_bytes())
        .chain_update([0])
        .chain_update(id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

impl Experiments {
    /// Checks `configs` against `base` and builds each variant's configuration.
    pub fn build(configs: &[ExperimentConfig], base: &PipelineConfig) -> Result<Self, String> {
        let mut experiments: Vec<Experiment> = Vec::with_capacity(configs.len());
        for config in configs {
            let name = &config.name;
            if name.is_empty() || name.contains('/') {
                return Err(format!(
                    "experiment name {name:?} must be non-empty, without '/'"
                ));
            }
            if experiments.iter().any(|e| &e.name == name) {
                return Err(format!("experiment {name} is defined twice"));
            }
            let touchpoints = if config.touchpoints.is_empty() {
                Touchpoint::ALL.to_vec()
            } else {
                config.touchpoints.clone()
            };
            for other in &experiments {
                if let Some(t) = touchpoints.iter().find(|t| other.touchpoints.contains(t)) {
                    return Err(format!(
                        "experiments {} and {name} both run on {}; one per touchpoint",
                        other.name,
                        t.as_str()
                    ));
                }
            }
            let total: f64 = config.variants.iter().map(|v| v.share).sum();
            if config.variants.is_empty() || (total - 1.0).abs() > 1e-6 {
                return Err(format!(
                    "experiment {name}: variant shares must add up to 1"
                ));
            }
            let mut variants: Vec<Variant> = Vec::with_capacity(config.variants.len());
            let mut upper = 0.0;
            for v in &config.variants {
                if !(v.share > 0.0 && v.share <= 1.0) {
                    return Err(format!(
                        "experiment {name}, variant {}: share must be in (0, 1]",
                        v.name
                    ));
                }
                let label: Arc<str> = format!("{name}/{}", v.name).into();
                if v.name.is_empty() || variants.iter().any(|o| o.label == label) {
                    return Err(format!(
                        "experiment {name}: variant names must be unique and non-empty"
                    ));
                }
                let mut pipeline = base.clone();
                for t in &touchpoints {
                    let weights = match t {
                        Touchpoint::Checkout => &mut pipeline.checkout,
                        Touchpoint::Cart => &mut pipeline.cart,
                        Touchpoint::Product => &mut pipeline.product,
                    };
                    weights.collaborative = v.collaborative.unwrap_or(weights.collaborative);
                    weights.content = v.content.unwrap_or(weights.content);
                    weights.session = v.session.unwrap_or(weights.session);
                    weights.purchased = v.purchased.unwrap_or(weights.purchased);
                    weights.popularity = v.popularity.unwrap_or(weights.popularity);
                    weights.theta = v.theta.unwrap_or(weights.theta);
                    weights.demote_substitutes =
                        v.demote_substitutes.unwrap_or(weights.demote_substitutes);
                }
                // Pipeline-wide, but a variant's configuration only serves the requests
                // assigned to it, which are on the experiment's touchpoints.
                pipeline.restock_scaling = v.restock_scaling.unwrap_or(base.restock_scaling);
                pipeline.purchased_beside_cart = v
                    .purchased_beside_cart
                    .unwrap_or(base.purchased_beside_cart);
                let k = v.k.unwrap_or(base.default_k);
                pipeline.default_k = k;
                if !(1..=MAX_K).contains(&k) {
                    return Err(format!(
                        "experiment {name}, variant {}: k must be 1 to {MAX_K}",
                        v.name
                    ));
                }
                pipeline
                    .validate()
                    .map_err(|e| format!("experiment {name}, variant {}: {e}", v.name))?;
                upper += v.share;
                variants.push(Variant {
                    label,
                    pipeline: Arc::new(pipeline),
                    k,
                    upper,
                });
            }
            if let Some(last) = variants.last_mut() {
                // Rounding must never leave the top of the range unassigned.
                last.upper = f64::INFINITY;
            }
            experiments.push(Experiment {
                name: name.clone(),
                touchpoints,
                variants,
            });
        }
        Ok(Self { experiments })
    }

    /// The variant of the shopper (user id, else session id) at `touchpoint`; `None` outside
    /// any experiment or when the request names no shopper.
    pub fn assign(
        &self,
        touchpoint: Touchpoint,
        user: Option<&str>,
        session: Option<&str>,
    ) -> Option<&Variant> {
        let experiment = self
            .experiments
            .iter()
            .find(|e| e.touchpoints.contains(&touchpoint))?;
        let (kind, id) = match (user, session) {
            (Some(user), _) => ("user", user),
            (None, Some(session)) => ("session", session),
            (None, None) => return None,
        };
        let point = bucket(&experiment.name, kind, id);
        experiment.variants.iter().find(|v| point < v.upper)
    }

    /// The variant labelled `label` (`experiment/variant`).
    pub fn variant(&self, label: &str) -> Option<&Variant> {
        self.experiments
            .iter()
            .flat_map(|e| e.variants.iter())
            .find(|v| &*v.label == label)
    }

    /// Every variant label, for metrics and dashboards.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.experiments
            .iter()
            .flat_map(|e| e.variants.iter().map(|v| &*v.label))
    }
}

/// Which variant and touchpoint served each recent request id, so events that cite the request
/// are counted for its variant. Bounded: the least recently served ids are forgotten first.
pub struct Attribution {
    served: Mutex<LruCache<Uuid, (Arc<str>, Touchpoint)>>,
}

impl Attribution {
    /// Remembers up to `capacity` request ids.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self {
            served: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Records that `request_id` was served by `variant` at `touchpoint`.
    pub fn record(&self, request_id: Uuid, variant: Arc<str>, touchpoint: Touchpoint) {
        if let Ok(mut served) = self.served.lock() {
            served.put(request_id, (variant, touchpoint));
        }
    }

    /// The variant and touchpoint that served `request_id`, if remembered here.
    pub fn lookup(&self, request_id: Uuid) -> Option<(Arc<str>, Touchpoint)> {
        self.served.lock().ok()?.get(&request_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(name: &str, touchpoints: Vec<Touchpoint>, shares: &[f64]) -> ExperimentConfig {
        ExperimentConfig {
            name: name.into(),
            touchpoints,
            variants: shares
                .iter()
                .enumerate()
                .map(|(i, &s)| VariantConfig::new(format!("v{i}"), s))
                .collect(),
        }
    }

    #[test]
    fn assignment_is_stable_and_close_to_the_shares_on_10000_ids() {
        let configs = [experiment("diversity", vec![], &[0.2, 0.3, 0.5])];
        let experiments = Experiments::build(&configs, &PipelineConfig::default()).unwrap();
        let mut counts = [0usize; 3];
        for i in 0..10_000 {
            let id = format!("user-{i}");
            let v = experiments
                .assign(Touchpoint::Checkout, Some(&id), None)
                .unwrap();
            let again = experiments
                .assign(Touchpoint::Cart, Some(&id), Some("s"))
                .unwrap();
            assert_eq!(
                v.label, again.label,
                "stable across requests and touchpoints"
            );
            counts[v.label.as_bytes()[v.label.len() - 1] as usize - b'0' as usize] += 1;
        }
        for (count, share) in counts.iter().zip([0.2, 0.3, 0.5]) {
            let observed = *count as f64 / 10_000.0;
            // Four standard errors of a binomial share at n = 10,000.
            let tolerance = 4.0 * (share * (1.0 - share) / 10_000.0f64).sqrt();
            assert!((observed - share).abs() < tolerance, "{counts:?}");
        }
        assert!(experiments
            .assign(Touchpoint::Checkout, None, None)
            .is_none());
    }

    #[test]
    fn changing_one_experiment_does_not_reshuffle_another() {
        let base = PipelineConfig::default();
        let before = Experiments::build(
            &[
                experiment("a", vec![Touchpoint::Checkout], &[0.5, 0.5]),
                experiment("b", vec![Touchpoint::Product], &[0.5, 0.5]),
            ],
            &base,
        )
        .unwrap();
        let after = Experiments::build(
            &[
                experiment("a", vec![Touchpoint::Checkout], &[0.1, 0.9]),
                experiment("b", vec![Touchpoint::Product], &[0.5, 0.5]),
            ],
            &base,
        )
        .unwrap();
        for i in 0..1000 {
            let id = format!("u{i}");
            let b1 = before.assign(Touchpoint::Product, Some(&id), None).unwrap();
            let b2 = after.assign(Touchpoint::Product, Some(&id), None).unwrap();
            assert_eq!(b1.label, b2.label);
        }
    }

    #[test]
    fn variants_change_only_what_they_name_and_bad_configs_are_refused() {
        let base = PipelineConfig::default();
        let mut config = experiment("t", vec![Touchpoint::Cart], &[1.0]);
        config.variants[0].theta = Some(0.7);
        config.variants[0].k = Some(4);
        let experiments = Experiments::build(&[config], &base).unwrap();
        let v = experiments
            .assign(Touchpoint::Cart, None, Some("s1"))
            .unwrap();
        assert_eq!((v.pipeline.cart.theta, v.k), (0.7, 4));
        assert_eq!(v.pipeline.checkout, base.checkout);
        assert_eq!(v.pipeline.restock_scaling, base.restock_scaling);
        assert!(experiments
            .assign(Touchpoint::Checkout, Some("u"), None)
            .is_none());

        for bad in [
            vec![experiment("x", vec![], &[0.5, 0.4])],
            vec![
                experiment("x", vec![], &[0.5, 0.5]),
                experiment("y", vec![Touchpoint::Cart], &[1.0]),
            ],
            vec![experiment("a/b", vec![], &[1.0])],
        ] {
            assert!(Experiments::build(&bad, &base).is_err());
        }
        let mut out_of_range = experiment("x", vec![], &[1.0]);
        out_of_range.variants[0].theta = Some(2.0);
        assert!(Experiments::build(&[out_of_range], &base).is_err());
    }

    #[test]
    fn a_variant_can_switch_restock_scaling_for_its_requests_only() {
        let base = PipelineConfig::default();
        assert!(base.restock_scaling);
        let mut config = experiment("restock", vec![Touchpoint::Checkout], &[0.5, 0.5]);
        config.variants[1].restock_scaling = Some(false);
        config.variants[1].purchased = Some(0.5);
        config.variants[1].purchased_beside_cart = Some(2.0);
        let experiments = Experiments::build(&[config], &base).unwrap();
        let mut seen = [false, false];
        for shopper in 0..200 {
            let id = format!("s{shopper}");
            let v = experiments
                .assign(Touchpoint::Checkout, None, Some(&id))
                .unwrap();
            let unscaled = v.label.ends_with("/v1");
            assert_eq!(v.pipeline.restock_scaling, !unscaled);
            let beside = if unscaled {
                2.0
            } else {
                base.purchased_beside_cart
            };
            assert_eq!(v.pipeline.purchased_beside_cart, beside);
            let purchased = if unscaled {
                0.5
            } else {
                base.checkout.purchased
            };
            assert_eq!(v.pipeline.checkout.purchased, purchased);
            seen[usize::from(unscaled)] = true;
        }
        assert_eq!(seen, [true, true], "both variants were assigned");
    }

    #[test]
    fn attribution_remembers_recent_requests_within_its_bound() {
        let attribution = Attribution::new(NonZeroUsize::new(2).unwrap());
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            attribution.record(*id, "e/v".into(), Touchpoint::Cart);
        }
        assert!(attribution.lookup(ids[0]).is_none());
        assert_eq!(attribution.lookup(ids[2]).unwrap().1, Touchpoint::Cart);
    }
}
