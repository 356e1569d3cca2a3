//! Offline evaluation: a temporal split, basket completion, and one row of metrics per
//! variant, every variant served by the same [`crate::pipeline::recommend`] the server calls.
//!
//! Protocol: train on baskets before `until`; for every basket at or after it with at least
//! two items the model knows, hide one known item (chosen by a ChaCha8 generator seeded with
//! `seed` and the basket's number, so the choice does not depend on threads or variants) and
//! ask for `k` items with the other known items as the cart (in line order) and, as `purchased`, what the
//! basket's customer bought in every earlier basket (strictly earlier in time, training or test
//! period alike: what the shop knows at that checkout; none without a customer id).
//! Metrics: HitRate@k, NDCG@k (one relevant item: `1 / log2(rank + 1)`), MRR@k (reciprocal
//! rank within the list, 0 outside), catalogue coverage (distinct items recommended / model items) and two intra-list
//! diversities, each a mean over lists of a mean over pairs of listed items: `diversity`,
//! `1 - cos` of the vectors the DPP compares (the diversity embeddings when the version has
//! them, else the title embeddings), and `category_diversity`, the share of pairs in different
//! categories (an item without a category is a category of its own), the taxonomy distance
//! of Ziegler et al. (WWW 2005) at its coarsest.
//!
//! Every row is scored on requests with the cart alone (`hit_rate`, `ndcg`, `mrr`, and the
//! list metrics), and rows whose configuration reads earlier purchases also on the same
//! requests carrying them (`with_purchased`), so neither figure can pass for the other.
//!
//! Unless told not to, the serving model is tuned on the training history first, exactly as
//! `tandem train` tunes a version (see [`super::tune`]), and the serving rows use the tuned
//! settings beneath whatever the configuration sets, as the server would.
//!
//! A variant is a name, a snapshot and a pipeline configuration ([`Variant`]); adding one is
//! one line in [`standard_variants`].

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::estimators::{self, Estimator, Neighbours};
use super::history::{History, NO_CUSTOMER};
use super::progress::Progress;
use super::train::{self, TrainError, TrainParams, TrainedModel};
use super::tune::{self, TuneError, TuneParams, Tuning};
use crate::domain::{ModelVersion, Touchpoint};
use crate::model::{ModelError, Snapshot, NO_CATEGORY};
use crate::pipeline::vector::dot;
use crate::pipeline::{self, PipelineConfig, Request, TouchpointConfig, MAX_PURCHASED_ITEMS};

/// How the serving row's name ends.
const SERVING: &str = "(serving)";

/// Parameters of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluateParams {
    /// First test time (UTC seconds): train before, test at or after.
    pub until: i64,
    /// List length.
    pub k: usize,
    /// Seed of the hidden-item choice.
    pub seed: u64,
    /// Training parameters of the serving model (the other variants change the estimator).
    pub train: TrainParams,
    /// Worker threads (0 = available cores).
    pub threads: usize,
    /// Whether the baseline rows (popularity, every estimator, content only) are evaluated.
    pub baselines: bool,
    /// Tune the serving model on the training history first (`None`: serve the configured
    /// settings).
    pub tune: Option<TuneParams>,
    /// The touchpoint whose requests are evaluated: each test cart is cut to what that
    /// touchpoint knows ([`touchpoint_cart`]) and served with its settings.
    pub touchpoint: Touchpoint,
    /// Whether the report keeps every case with the serving row's hits
    /// ([`EvaluationReport::served_cases`]; a copy of every cart, so only when asked).
    #[serde(skip)]
    pub record_cases: bool,
}

/// One way of recommending, evaluated as a row.
pub struct Variant {
    /// Row name.
    pub name: String,
    /// The model it serves from (shared by the rows that only change the configuration).
    pub snapshot: Arc<Snapshot>,
    /// Pipeline configuration.
    pub config: PipelineConfig,
}

/// One held-out item and the cart it is to be found from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestCase {
    /// Cart item ids.
    pub cart: Vec<String>,
    /// The hidden item id.
    pub hidden: String,
    /// The customer's purchases before this basket, oldest first (items the model knows;
    /// empty without a customer id).
    pub purchased: Vec<String>,
}

/// Metrics of one variant.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VariantResult {
    /// Row name.
    pub name: String,
    /// Test cases.
    pub cases: usize,
    /// Share of cases whose hidden item is in the list.
    pub hit_rate: f64,
    /// Mean NDCG@k.
    pub ndcg: f64,
    /// Mean reciprocal rank within the list.
    pub mrr: f64,
    /// Distinct items recommended over model items.
    pub coverage: f64,
    /// Mean intra-list diversity (1 - cosine).
    pub diversity: f64,
    /// Mean share of listed pairs in different categories.
    pub category_diversity: f64,
    /// Co-purchase entries in the snapshot.
    pub pairs: usize,
    /// Seconds to answer every case.
    pub seconds: f64,
    /// The same requests carrying the shopper's earlier purchases (rows that read them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with_purchased: Option<PurchasedResult>,
}

/// Relevance of a row on requests that carry the shopper's earlier purchases.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PurchasedResult {
    /// Share of cases whose hidden item is in the list.
    pub hit_rate: f64,
    /// Mean NDCG@k.
    pub ndcg: f64,
    /// Mean reciprocal rank within the list.
    pub mrr: f64,
}

/// A group of the serving row's cases, by what ties the hidden item to the cart (see
/// [`case_groups`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CaseGroup {
    /// What the group's cases have in common.
    pub name: &'static str,
    /// Cases in the group.
    pub cases: usize,
    /// Of them, cases whose hidden item the shopper bought before (it is in `purchased`).
    pub bought_before: usize,
    /// Serving HitRate@k on the group's requests with the cart alone.
    pub hit_rate: f64,
    /// The same with the shopper's earlier purchases.
    pub hit_rate_purchased: f64,
}

/// The whole evaluation, as written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluationReport {
    /// Parameters.
    pub params: EvaluateParams,
    /// Training baskets.
    pub train_baskets: usize,
    /// Test baskets.
    pub test_baskets: usize,
    /// Test baskets with fewer than two known items (skipped).
    pub skipped_baskets: usize,
    /// Items in the trained model.
    pub model_items: usize,
    /// DPP theta of the serving configuration at the touchpoint evaluated.
    pub serving_theta: f32,
    /// What tuning chose on the training history, when it ran.
    pub tuning: Option<Tuning>,
    /// One row per variant.
    pub variants: Vec<VariantResult>,
    /// The serving row's cases by what ties the hidden item to the cart.
    pub case_groups: Vec<CaseGroup>,
    /// Every test case with whether the serving row listed its hidden item, for replaying
    /// the same requests against a running server (`tandem evaluate --cases`).
    #[serde(skip)]
    pub served_cases: Vec<ServedCase>,
    /// Seconds for everything.
    pub seconds: f64,
}

/// One test case as sent to the serving row, and whether that row listed the hidden item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServedCase {
    /// The case, its cart as the evaluated touchpoint knows it.
    #[serde(flatten)]
    pub case: TestCase,
    /// Whether the serving row listed the hidden item for the cart alone.
    pub listed: bool,
    /// Whether it listed it with the earlier purchases.
    pub listed_with_purchased: bool,
}

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A variant's snapshot is invalid.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Tuning failed.
    #[error(transparent)]
    Tune(#[from] TuneError),
    /// The tuned settings do not make a valid configuration.
    #[error("the tuned settings are invalid: {0}")]
    Settings(String),
    /// The split leaves nothing to test.
    #[error("no test basket has two items known in training")]
    NoTestCases,
}

/// The part of a test cart a request from `touchpoint` knows: checkout the whole cart, the
/// cart page the first half of it (a basket being filled), a product page its first item.
pub fn touchpoint_cart(touchpoint: Touchpoint, cart: &[String]) -> &[String] {
    match touchpoint {
        Touchpoint::Checkout => cart,
        Touchpoint::Cart => &cart[..cart.len().div_ceil(2)],
        Touchpoint::Product => &cart[..cart.len().min(1)],
    }
}

/// The test cases of the baskets in `test` (see the module doc).
pub fn test_cases(
    history: &History,
    test: Range<usize>,
    model: &TrainedModel,
    seed: u64,
) -> (Vec<TestCase>, usize) {
    let known: foldhash::HashSet<&str> = model.items.iter().map(|i| i.id.as_str()).collect();
    // What each customer bought before the basket in question, as the shop would send it at
    // checkout: baskets are in time order, and a basket joins its customer's list once every
    // basket of its time has been tested (same-time baskets never see each other).
    let mut bought: foldhash::HashMap<u32, Vec<&str>> = foldhash::HashMap::default();
    let mut pending = 0;
    let mut cases = Vec::with_capacity(test.len());
    let mut skipped = 0;
    for b in test {
        // Every basket strictly earlier than this one.
        let earlier = history.split_at(history.time(b));
        for e in pending..earlier {
            let customer = history.customer(e);
            if customer == NO_CUSTOMER {
                continue;
            }
            bought.entry(customer).or_default().extend(
                // In line order, as a shop lists an order's purchases.
                history
                    .basket_in_line_order(e)
                    .iter()
                    .map(|&i| history.items[i as usize].id.as_str())
                    .filter(|id| known.contains(id)),
            );
        }
        pending = pending.max(earlier);
        // In line order, the order the shopper added them: the cart page's first half and the
        // product page's item are the basket's first lines.
        let cart: Vec<&str> = history
            .basket_in_line_order(b)
            .iter()
            .map(|&i| history.items[i as usize].id.as_str())
            .filter(|id| known.contains(id))
            .collect();
        if cart.len() < 2 {
            skipped += 1;
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(b as u64);
        let hidden = rng.random_range(0..cart.len());
        cases.push(TestCase {
            hidden: cart[hidden].to_string(),
            cart: cart
                .iter()
                .enumerate()
                .filter(|&(p, _)| p != hidden)
                .map(|(_, id)| id.to_string())
                .collect(),
            purchased: bought
                .get(&history.customer(b))
                .map_or_else(Vec::new, |items| {
                    let newest = items.len().saturating_sub(MAX_PURCHASED_ITEMS);
                    items[newest..].iter().map(|id| id.to_string()).collect()
                }),
        });
    }
    (cases, skipped)
}

struct CaseScore {
    rank: Option<usize>,
    diversity: Option<f64>,
    category_diversity: Option<f64>,
}

fn category_diversity(snapshot: &Snapshot, items: &[u32]) -> Option<f64> {
    if items.len() < 2 {
        return None;
    }
    let attributes = snapshot.attributes();
    let mut different = 0usize;
    let mut pairs = 0usize;
    for (a, &i) in items.iter().enumerate() {
        for &j in &items[a + 1..] {
            let (ci, cj) = (attributes.category(i), attributes.category(j));
            if ci != cj || ci == NO_CATEGORY {
                different += 1;
            }
            pairs += 1;
        }
    }
    Some(different as f64 / pairs as f64)
}

fn diversity(snapshot: &Snapshot, items: &[u32]) -> Option<f64> {
    if items.len() < 2 || snapshot.diversity_slice(0).is_empty() {
        return None;
    }
    let mut sum = 0.0;
    let mut pairs = 0;
    for (a, &i) in items.iter().enumerate() {
        for &j in &items[a + 1..] {
            let similarity = dot(snapshot.diversity_slice(i), snapshot.diversity_slice(j));
            sum += 1.0 - f64::from(similarity);
            pairs += 1;
        }
    }
    Some(sum / f64::from(pairs))
}

/// Answers every case with `variant` and computes its metrics.
pub fn evaluate_variant(
    variant: &Variant,
    cases: &[TestCase],
    k: usize,
    threads: usize,
) -> VariantResult {
    evaluate_variant_by_case(variant, cases, k, threads).0
}

/// [`evaluate_variant`], with whether each case's hidden item was listed (in case order).
fn evaluate_variant_by_case(
    variant: &Variant,
    cases: &[TestCase],
    k: usize,
    threads: usize,
) -> (VariantResult, Vec<bool>) {
    let started = Instant::now();
    let snapshot: &Snapshot = &variant.snapshot;
    let threads = estimators::worker_threads(threads).clamp(1, cases.len().max(1));
    let chunk = cases.len().div_ceil(threads).max(1);
    let parts: Vec<(Vec<CaseScore>, Vec<bool>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut recommended = vec![false; snapshot.len()];
                    let mut request = Request {
                        k,
                        personalize: true,
                        ..Request::default()
                    };
                    let mut list = Vec::with_capacity(k);
                    let scores = part
                        .iter()
                        .map(|case| {
                            request.cart.clone_from(&case.cart);
                            request.purchased.clone_from(&case.purchased);
                            let answer = pipeline::recommend(
                                snapshot,
                                &request,
                                &variant.config,
                                &pipeline::NoCaps,
                            );
                            list.clear();
                            list.extend(answer.items.iter().map(|r| r.item));
                            for &i in &list {
                                recommended[i as usize] = true;
                            }
                            let hidden = snapshot.index_of(&case.hidden);
                            CaseScore {
                                rank: list.iter().position(|&i| Some(i) == hidden),
                                diversity: diversity(snapshot, &list),
                                category_diversity: category_diversity(snapshot, &list),
                            }
                        })
                        .collect();
                    (scores, recommended)
                })
            })
            .collect();
        estimators::join_all(handles)
    });
    let mut covered = vec![false; snapshot.len()];
    let (mut hits, mut ndcg, mut mrr, mut diversity_sum, mut lists) =
        (0usize, 0.0, 0.0, 0.0, 0usize);
    let (mut category_sum, mut category_lists) = (0.0, 0usize);
    for (scores, recommended) in &parts {
        for (c, &r) in covered.iter_mut().zip(recommended) {
            *c |= r;
        }
        for s in scores {
            if let Some(rank) = s.rank {
                hits += 1;
                ndcg += 1.0 / ((rank + 2) as f64).log2();
                mrr += 1.0 / (rank + 1) as f64;
            }
            if let Some(d) = s.diversity {
                diversity_sum += d;
                lists += 1;
            }
            if let Some(d) = s.category_diversity {
                category_sum += d;
                category_lists += 1;
            }
        }
    }
    let n = cases.len().max(1) as f64;
    let listed = parts
        .iter()
        .flat_map(|(scores, _)| scores.iter().map(|s| s.rank.is_some()))
        .collect();
    let result = VariantResult {
        name: variant.name.clone(),
        cases: cases.len(),
        hit_rate: hits as f64 / n,
        ndcg: ndcg / n,
        mrr: mrr / n,
        coverage: covered.iter().filter(|&&c| c).count() as f64 / snapshot.len().max(1) as f64,
        diversity: if lists > 0 {
            diversity_sum / lists as f64
        } else {
            0.0
        },
        category_diversity: if category_lists > 0 {
            category_sum / category_lists as f64
        } else {
            0.0
        },
        pairs: snapshot.stats().pairs,
        seconds: started.elapsed().as_secs_f64(),
        with_purchased: None,
    };
    (result, listed)
}

/// A configuration that ranks by the given signal weights only: no DPP (`theta = 1`), no
/// substitute demotion, the same at every touchpoint; pool sizes as in `base`. The baselines
/// use it so each row measures its signal alone.
pub fn ranking_config(
    base: &PipelineConfig,
    collaborative: f32,
    content: f32,
    popularity: f32,
) -> PipelineConfig {
    let weights = TouchpointConfig {
        collaborative,
        content,
        session: 0.0,
        purchased: 0.0,
        popularity,
        theta: 1.0,
        demote_substitutes: false,
    };
    PipelineConfig {
        checkout: weights,
        cart: weights,
        product: weights,
        ..base.clone()
    }
}

/// The serving configuration with its checkout slot (which holds the touchpoint evaluated)
/// changed by `f`.
fn serving_with(serving: &PipelineConfig, f: impl FnOnce(&mut TouchpointConfig)) -> PipelineConfig {
    let mut config = serving.clone();
    f(&mut config.checkout);
    config
}

/// DPP trade-offs evaluated beside the serving one.
pub const THETAS: [f32; 5] = [1.0, 0.95, 0.9, 0.8, 0.6];

/// Popularity weight of the baselines: a tie-break and the order of the fallback fill, too
/// small to reorder anything the signal itself ranks.
const FILL: f32 = 0.001;

/// The standard rows (see the module doc): the baselines, each ranking by one signal
/// ([`ranking_config`]); then the serving model (`serving`, trained with `params.train`) with
/// the serving configuration, without substitute demotion, and at every theta of [`THETAS`].
/// The other estimators are trained on the same baskets.
pub fn standard_variants(
    history: &History,
    range: Range<usize>,
    params: &EvaluateParams,
    serving: &TrainedModel,
    serving_config: &PipelineConfig,
    configured: &PipelineConfig,
    progress: &Progress,
) -> Result<Vec<Variant>, EvaluateError> {
    let version = ModelVersion(0);
    let snapshot = Arc::new(serving.to_snapshot(version)?);
    let mut variants = Vec::new();
    if params.baselines {
        variants = baseline_variants(history, range, params, serving, serving_config, progress)?;
        variants.push(Variant {
            name: "content only".into(),
            snapshot: snapshot.clone(),
            config: ranking_config(serving_config, 0.0, 1.0, FILL),
        });
        // "Buy again" alone: what the shopper's earlier purchases find without the cart (so
        // without weighing what was bought beside a cart item).
        let mut purchases_only = PipelineConfig {
            purchased_beside_cart: 0.0,
            ..ranking_config(serving_config, 0.0, 0.0, FILL)
        };
        for touchpoint in [
            &mut purchases_only.checkout,
            &mut purchases_only.cart,
            &mut purchases_only.product,
        ] {
            touchpoint.purchased = 1.0;
        }
        variants.push(Variant {
            name: "earlier purchases only".into(),
            snapshot: snapshot.clone(),
            config: purchases_only,
        });
    }
    let estimator = serving.params.measure.estimator.name();
    let serving_theta = serving_config.checkout.theta;
    variants.push(Variant {
        name: format!("pipeline {estimator} {SERVING}"),
        snapshot: snapshot.clone(),
        config: serving_config.clone(),
    });
    variants.push(Variant {
        name: "pipeline, substitutes kept".into(),
        snapshot: snapshot.clone(),
        config: serving_with(serving_config, |t| t.demote_substitutes = false),
    });
    if configured.checkout != serving_config.checkout {
        variants.push(Variant {
            name: "pipeline, configured weights".into(),
            snapshot: snapshot.clone(),
            config: serving_with(serving_config, |t| *t = configured.checkout),
        });
    }
    for theta in THETAS.into_iter().filter(|&t| t != serving_theta) {
        variants.push(Variant {
            name: format!("pipeline, theta {theta}"),
            snapshot: snapshot.clone(),
            config: serving_with(serving_config, |t| t.theta = theta),
        });
    }
    Ok(variants)
}

/// The popularity row, one row per co-purchase estimator (each trained on the same baskets as
/// the serving model, without line order) and the serving model's own table, each ranking by
/// its own signal.
fn baseline_variants(
    history: &History,
    range: Range<usize>,
    params: &EvaluateParams,
    serving: &TrainedModel,
    serving_config: &PipelineConfig,
    progress: &Progress,
) -> Result<Vec<Variant>, EvaluateError> {
    let version = ModelVersion(0);
    let set = train::TrainingSet::new(history, range);
    let groups = serving
        .params
        .variant_groups(serving.items.iter().map(|i| i.id.as_str()));
    let mut variants = vec![Variant {
        name: "popularity".into(),
        snapshot: Arc::new(
            serving.snapshot_with_pairs(version, &Neighbours::empty(serving.items.len()))?,
        ),
        config: ranking_config(serving_config, 0.0, 0.0, 1.0),
    }];
    for estimator in Estimator::ALL {
        progress.message(estimator.name());
        // Baselines are exact: privacy is a property of the serving model under test. They
        // read the baskets as published methods do, as sets.
        let measure = estimators::MeasureParams {
            estimator,
            dp: None,
            adjacency: 0.0,
            ..params.train.measure.clone()
        };
        let (pairs, _) =
            estimators::co_purchase(&set.baskets, &groups, &measure).map_err(TrainError::from)?;
        variants.push(Variant {
            name: format!("co-purchase {}", estimator.name()),
            snapshot: Arc::new(serving.snapshot_with_pairs(version, &pairs)?),
            config: ranking_config(serving_config, 1.0, 0.0, FILL),
        });
        progress.inc(1);
    }
    // The serving model's own table (tuned λ and adjacency weight) ranking by itself: the
    // single signal the served pipeline must not fall below.
    variants.push(Variant {
        name: "co-purchase, serving table".into(),
        snapshot: Arc::new(serving.snapshot_with_pairs(version, &serving.co_purchase)?),
        config: ranking_config(serving_config, 1.0, 0.0, FILL),
    });
    Ok(variants)
}

/// Trains on the baskets before `params.until` (tuned first unless `params.tune` is `None`),
/// then evaluates the standard variants. `configured` is the configured pipeline, and
/// `resolve` layers a version's tuned values beneath the configuration as the server does.
pub fn evaluate(
    history: &History,
    params: &EvaluateParams,
    configured: &PipelineConfig,
    resolve: &dyn Fn(&serde_json::Value) -> Result<PipelineConfig, String>,
) -> Result<EvaluationReport, EvaluateError> {
    let started = Instant::now();
    let split = history.split_at(params.until);
    // Every row is answered in the checkout slot; the touchpoint evaluated lends it its
    // settings and its share of the cart.
    let at_touchpoint = |config: &PipelineConfig| PipelineConfig {
        checkout: *config.touchpoint(params.touchpoint),
        ..config.clone()
    };
    let mut train_params = TrainParams {
        until: Some(params.until),
        ..params.train.clone()
    };
    let configured_here = at_touchpoint(configured);
    let mut serving_config = configured_here.clone();
    let mut tuning = None;
    let content = params
        .tune
        .is_some()
        .then(|| train::Content::new(history, 0..split, &train_params));
    if let Some(tune_params) = &params.tune {
        let progress = Progress::start("tune", None, "");
        match tune::tune(
            history,
            0..split,
            &train_params,
            configured,
            tune_params,
            content.as_ref(),
            &progress,
        ) {
            Ok((tuned_params, chosen)) => {
                serving_config =
                    at_touchpoint(&resolve(&chosen.pipeline).map_err(EvaluateError::Settings)?);
                progress.finish(&chosen.headline());
                train_params = tuned_params;
                tuning = Some(chosen);
            }
            Err(TuneError::TooLittleHistory(why)) => {
                progress.finish(&format!(
                    "skipped: {why}; the configured settings are served"
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let progress = Progress::start("train", Some(3), "steps");
    let model = train::train_sharing_content(
        history,
        0..split,
        &train_params,
        content.as_ref(),
        &progress,
    )?;
    let privacy = model
        .stats
        .co_purchase
        .dp
        .as_ref()
        .map_or(String::new(), |dp| {
            format!(
                "; differential privacy ε {} δ {}: noise σ {:.1}, {} pairs kept",
                dp.epsilon, dp.delta, dp.sigma, dp.pairs_kept
            )
        });
    progress.finish(&format!(
        "{} baskets, {} items, {} pairs{privacy}",
        model.stats.baskets, model.stats.items, model.stats.co_purchase.pairs_kept
    ));
    let (mut cases, skipped) = test_cases(history, split..history.len(), &model, params.seed);
    if cases.is_empty() {
        return Err(EvaluateError::NoTestCases);
    }
    for case in &mut cases {
        let known = touchpoint_cart(params.touchpoint, &case.cart).len();
        case.cart.truncate(known);
    }
    let cart_alone: Vec<TestCase> = cases
        .iter()
        .map(|c| TestCase {
            purchased: Vec::new(),
            ..c.clone()
        })
        .collect();
    let progress = Progress::start("variants", Some(Estimator::ALL.len() as u64), "estimators");
    let variants = standard_variants(
        history,
        0..split,
        params,
        &model,
        &serving_config,
        &configured_here,
        &progress,
    )?;
    progress.finish(&format!("{} variants built", variants.len()));
    let progress = Progress::start("evaluate", Some(variants.len() as u64), "variants");
    let mut results = Vec::with_capacity(variants.len());
    let mut groups = Vec::new();
    let mut served_cases = Vec::new();
    for variant in &variants {
        progress.message(&variant.name);
        let (mut result, listed) =
            evaluate_variant_by_case(variant, &cart_alone, params.k, params.threads);
        let serving = variant.name.ends_with(SERVING);
        if variant.config.checkout.purchased > 0.0 || serving {
            let (with, listed_with) =
                evaluate_variant_by_case(variant, &cases, params.k, params.threads);
            result.with_purchased =
                (variant.config.checkout.purchased > 0.0).then_some(PurchasedResult {
                    hit_rate: with.hit_rate,
                    ndcg: with.ndcg,
                    mrr: with.mrr,
                });
            if serving {
                groups = case_groups(variant, &cases, &listed, &listed_with);
            }
            if serving && params.record_cases {
                served_cases = cases
                    .iter()
                    .zip(&listed)
                    .zip(&listed_with)
                    .map(|((case, &listed), &listed_with_purchased)| ServedCase {
                        case: case.clone(),
                        listed,
                        listed_with_purchased,
                    })
                    .collect();
            }
        }
        results.push(result);
        progress.inc(1);
    }
    progress.finish(&format!(
        "{} cases × {} variants",
        cases.len(),
        variants.len()
    ));
    Ok(EvaluationReport {
        params: params.clone(),
        train_baskets: split,
        test_baskets: history.len() - split,
        skipped_baskets: skipped,
        model_items: model.items.len(),
        serving_theta: serving_config.checkout.theta,
        tuning,
        variants: results,
        case_groups: groups,
        served_cases,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Groups the cases by what ties the hidden item to the cart, each in the first group it fits:
/// a variant of a cart item (never recommended, by the guard rail); an item with no
/// co-purchase neighbours of its own (too few training baskets); one that is not among the
/// co-purchase neighbours the pipeline reads for any cart item; and the rest, which
/// co-purchase alone could list. `listed` and `listed_with` say whether each case's hidden
/// item was listed with the cart alone and with purchases.
pub fn case_groups(
    variant: &Variant,
    cases: &[TestCase],
    listed: &[bool],
    listed_with: &[bool],
) -> Vec<CaseGroup> {
    const NAMES: [&str; 4] = [
        "a variant of a cart item",
        "no co-purchase neighbours",
        "no co-purchase tie to the cart",
        "a co-purchase neighbour of a cart item",
    ];
    let snapshot = &variant.snapshot;
    let read = variant.config.neighbours_per_anchor;
    let mut groups = NAMES.map(|name| CaseGroup {
        name,
        ..CaseGroup::default()
    });
    for ((case, &hit), &hit_with) in cases.iter().zip(listed).zip(listed_with) {
        let Some(hidden) = snapshot.index_of(&case.hidden) else {
            continue;
        };
        let cart: Vec<u32> = case
            .cart
            .iter()
            .filter_map(|id| snapshot.index_of(id))
            .collect();
        let group = if cart
            .iter()
            .any(|&c| snapshot.attributes().same_product(c, hidden))
        {
            0
        } else if snapshot.co_purchase(hidden).0.is_empty() {
            1
        } else if !cart.iter().any(|&c| {
            let neighbours = snapshot.co_purchase(c).0;
            neighbours[..neighbours.len().min(read)].contains(&hidden)
        }) {
            2
        } else {
            3
        };
        let g = &mut groups[group];
        g.cases += 1;
        g.bought_before += usize::from(case.purchased.contains(&case.hidden));
        g.hit_rate += f64::from(u8::from(hit));
        g.hit_rate_purchased += f64::from(u8::from(hit_with));
    }
    for g in &mut groups {
        let n = g.cases.max(1) as f64;
        g.hit_rate /= n;
        g.hit_rate_purchased /= n;
    }
    groups.into()
}

impl EvaluationReport {
    /// The metrics as a plain-text table.
    pub fn table(&self) -> String {
        let k = self.params.k;
        let mut out = format!(
            "{:<32} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11}\n",
            "variant",
            format!("HR@{k}"),
            format!("NDCG@{k}"),
            "MRR",
            "coverage",
            "diversity",
            "cat.div.",
            "pairs",
            format!("HR@{k} +p"),
            format!("NDCG@{k} +p"),
        );
        for v in &self.variants {
            let (hr, ndcg) = v.with_purchased.as_ref().map_or_else(
                || ("–".to_string(), "–".to_string()),
                |p| (format!("{:.4}", p.hit_rate), format!("{:.4}", p.ndcg)),
            );
            out.push_str(&format!(
                "{:<32} {:>9.4} {:>9.4} {:>7.4} {:>9.4} {:>9.4} {:>9.4} {:>9} {:>11} {:>11}\n",
                v.name,
                v.hit_rate,
                v.ndcg,
                v.mrr,
                v.coverage,
                v.diversity,
                v.category_diversity,
                v.pairs,
                hr,
                ndcg
            ));
        }
        out.push_str(
            "Every row: requests with the cart alone; \"+p\": the same requests with the shopper's earlier purchases, for rows that read them.\n",
        );
        if self.params.touchpoint != Touchpoint::Checkout {
            out.push_str(&format!(
                "Touchpoint {}: each cart cut to what it knows, served with its settings.\n",
                self.params.touchpoint.as_str()
            ));
        }
        out.push_str(&format!(
            "{} training baskets, {} test baskets ({} cases, {} with fewer than 2 known items skipped), {} items\n",
            self.train_baskets,
            self.test_baskets,
            self.variants.first().map_or(0, |v| v.cases),
            self.skipped_baskets,
            self.model_items
        ));
        if !self.case_groups.is_empty() {
            out.push_str(&format!(
                "\nServing row by what ties the hidden item to the cart:\n{:<40} {:>7} {:>13} {:>9} {:>11}\n",
                "hidden item",
                "cases",
                "bought before",
                format!("HR@{k}"),
                format!("HR@{k} +p"),
            ));
            let total = self
                .case_groups
                .iter()
                .map(|g| g.cases)
                .sum::<usize>()
                .max(1);
            for g in &self.case_groups {
                out.push_str(&format!(
                    "{:<40} {:>7} {:>13} {:>9.4} {:>11.4}\n",
                    g.name,
                    format!("{:.1} %", 100.0 * g.cases as f64 / total as f64),
                    format!(
                        "{:.1} %",
                        100.0 * g.bought_before as f64 / g.cases.max(1) as f64
                    ),
                    g.hit_rate,
                    g.hit_rate_purchased
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::orders::{parse_timestamp, ReadOptions};

    /// Pairs (a_i, b_i) always bought together, plus a few very popular fillers.
    fn paired_history() -> History {
        let mut csv = String::from(
            "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n",
        );
        let mut invoice = 0;
        for month in 1..=3 {
            for day in 1..=28 {
                for pair in 0..6 {
                    invoice += 1;
                    let date = format!("2011-{month:02}-{day:02} 10:00:00");
                    csv.push_str(&format!(
                        "{invoice},{}1,ITEM A{pair},1,{date},1.0,,UK\n",
                        100 + pair
                    ));
                    csv.push_str(&format!(
                        "{invoice},{}2,ITEM B{pair},1,{date},1.0,,UK\n",
                        200 + pair
                    ));
                    csv.push_str(&format!(
                        "{invoice},{},FILLER {},1,{date},1.0,,UK\n",
                        900 + day % 3,
                        day % 3
                    ));
                }
            }
        }
        History::read(csv.as_bytes(), &ReadOptions::default())
            .unwrap()
            .0
    }

    fn params() -> EvaluateParams {
        EvaluateParams {
            until: parse_timestamp("2011-03-01").unwrap(),
            k: 2,
            seed: 7,
            train: TrainParams {
                dim: 16,
                ..TrainParams::default()
            },
            threads: 2,
            baselines: true,
            tune: None,
            touchpoint: Touchpoint::Checkout,
            record_cases: false,
        }
    }

    #[test]
    fn co_purchase_finds_items_that_always_go_together_and_popularity_does_not() {
        let h = paired_history();
        let config = PipelineConfig::default();
        let report = evaluate(&h, &params(), &config, &|_| Ok(config.clone())).unwrap();
        let row = |name: &str| {
            report
                .variants
                .iter()
                .find(|v| v.name == name)
                .unwrap()
                .clone()
        };
        assert_eq!(report.test_baskets, 28 * 6);
        for estimator in Estimator::ALL {
            let r = row(&format!("co-purchase {}", estimator.name()));
            assert!(r.hit_rate > 0.6, "{estimator:?}: {r:?}");
        }
        let ease = row("co-purchase ease");
        assert!(ease.hit_rate > 0.6 && ease.ndcg <= ease.hit_rate && ease.mrr <= ease.hit_rate);
        let popularity = row("popularity");
        assert!(popularity.hit_rate < 0.5, "{popularity:?}");
        assert!(row("pipeline sparse-ease (serving)").hit_rate > popularity.hit_rate);
        assert!(row("pipeline, theta 1").diversity <= row("pipeline, theta 0.6").diversity);
        assert_eq!(row("pipeline, substitutes kept").cases, 28 * 6);
        assert!(
            row("pipeline sparse-ease (serving)")
                .with_purchased
                .is_some(),
            "the serving row reads earlier purchases, so it is scored with them too"
        );
        assert!(row("co-purchase ease").with_purchased.is_none());
        assert!(report.table().contains("co-purchase llr"));

        // Every serving case is in one group; the hidden half of an always-together pair is
        // its cart partner's co-purchase neighbour, and the serving row finds those.
        let grouped: usize = report.case_groups.iter().map(|g| g.cases).sum();
        assert_eq!(grouped, row("pipeline sparse-ease (serving)").cases);
        let tied = &report.case_groups[3];
        assert!(tied.cases * 2 > grouped && tied.hit_rate > 0.6, "{tied:?}");
        assert!(report
            .table()
            .contains("a co-purchase neighbour of a cart item"));

        let dir = tempfile::tempdir().unwrap();
        let files = super::super::report::write_report(&report, dir.path()).unwrap();
        let svg = std::fs::read_to_string(&files.chart).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("θ=0.6") && svg.contains("θ=1"));
        assert!(
            svg.contains("co-purchase ease"),
            "baselines are on the chart"
        );
        let table = std::fs::read_to_string(&files.table).unwrap();
        assert!(table.contains("| pipeline sparse-ease (serving) |"));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&files.json).unwrap()).unwrap();
        assert_eq!(
            json["variants"].as_array().unwrap().len(),
            report.variants.len()
        );
    }

    #[test]
    fn a_touchpoint_is_evaluated_with_its_own_settings() {
        let h = paired_history();
        let mut config = PipelineConfig::default();
        config.product.theta = 0.8;
        let params = EvaluateParams {
            baselines: false,
            touchpoint: Touchpoint::Product,
            record_cases: true,
            ..params()
        };
        let report = evaluate(&h, &params, &config, &|_| Ok(config.clone())).unwrap();
        assert_eq!(report.serving_theta, 0.8);
        // The recorded cases are the product page's: one cart item each, hits as scored.
        let serving = &report.variants[0];
        assert_eq!(report.served_cases.len(), serving.cases);
        assert!(report.served_cases.iter().all(|c| c.case.cart.len() == 1));
        let hits = report.served_cases.iter().filter(|c| c.listed).count();
        assert_eq!(hits as f64 / serving.cases as f64, serving.hit_rate);
        assert!(report.table().contains("Touchpoint product"));
        // A product page knows one item of a pair's basket and finds the other.
        let serving = &report.variants[0];
        assert!(
            serving.name.ends_with(SERVING) && serving.hit_rate > 0.5,
            "{serving:?}"
        );
    }

    #[test]
    fn purchased_lists_hold_the_customers_strictly_earlier_baskets_only() {
        let mut csv = String::from(
            "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n",
        );
        let mut line = |invoice: &str, item: &str, date: &str, customer: &str| {
            csv.push_str(&format!(
                "{invoice},{item},ITEM {item},1,2011-{date}:00,1.0,{customer},UK\n"
            ));
        };
        for day in 1..=20 {
            for item in ["101", "102", "103"] {
                line(&format!("{day}"), item, &format!("01-{day:02} 10:00"), "");
            }
        }
        for (invoice, items, date, customer) in [
            ("100", ["101", "102"], "01-25 10:00", "7"),
            ("101", ["101", "103"], "02-10 10:00", "7"),
            ("102", ["102", "103"], "02-10 10:00", "7"),
            ("103", ["101", "102"], "02-20 10:00", "7"),
            ("104", ["101", "102"], "02-20 11:00", ""),
        ] {
            for item in items {
                line(invoice, item, date, customer);
            }
        }
        let h = History::read(csv.as_bytes(), &ReadOptions::default())
            .unwrap()
            .0;
        let until = chrono::NaiveDate::from_ymd_opt(2011, 2, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        let split = h.split_at(until);
        let model = train::train(&h, 0..split, &params().train, &Progress::hidden()).unwrap();
        let (cases, _) = test_cases(&h, split..h.len(), &model, 1);
        let purchased: Vec<Vec<&str>> = cases
            .iter()
            .map(|c| c.purchased.iter().map(String::as_str).collect())
            .collect();
        // Same-time baskets do not see each other; a later one sees both; no customer, nothing.
        assert_eq!(
            purchased,
            [
                vec!["101", "102"],
                vec!["101", "102"],
                vec!["101", "102", "101", "103", "102", "103"],
                vec![],
            ]
        );
    }

    #[test]
    fn each_touchpoint_knows_its_share_of_the_cart() {
        let cart: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(touchpoint_cart(Touchpoint::Checkout, &cart), &cart[..]);
        assert_eq!(touchpoint_cart(Touchpoint::Cart, &cart), &cart[..2]);
        assert_eq!(touchpoint_cart(Touchpoint::Product, &cart), &cart[..1]);
        assert!(touchpoint_cart(Touchpoint::Product, &[]).is_empty());
    }

    #[test]
    fn test_cases_hide_one_known_item_with_a_fixed_seed() {
        let h = paired_history();
        let p = params();
        let split = h.split_at(p.until);
        let model = train::train(&h, 0..split, &p.train, &Progress::hidden()).unwrap();
        let (a, skipped) = test_cases(&h, split..h.len(), &model, 7);
        let (b, _) = test_cases(&h, split..h.len(), &model, 7);
        assert_eq!(a, b);
        assert_eq!(skipped, 0);
        assert!(a
            .iter()
            .all(|c| c.cart.len() == 2 && !c.cart.contains(&c.hidden)));
        // The cart keeps the basket's line order (a touchpoint's share is its first lines).
        for (i, case) in a.iter().enumerate() {
            let in_line_order: Vec<&str> = h
                .basket_in_line_order(split + i)
                .iter()
                .map(|&item| h.items[item as usize].id.as_str())
                .filter(|&id| id != case.hidden)
                .collect();
            assert_eq!(case.cart, in_line_order);
        }
        let (c, _) = test_cases(&h, split..h.len(), &model, 8);
        assert_ne!(a, c);
    }
}
