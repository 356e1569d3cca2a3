//! Self-tuning on the shop's own history: the settings a version is served with are chosen on
//! its most recent baskets, not on some other shop's.
//!
//! The validation split is the last `validation_days` of the training history or its last
//! `validation_share` of baskets, whichever is more (never more than half of it), made into
//! cases exactly as `evaluate` makes test cases: one item of each basket hidden, the others
//! the cart, the customer's strictly earlier purchases as `purchased`. A model fitted on the
//! baskets before the split then answers them:
//! 1. **Estimator** (`sparse-ease` only): λ on a ×4 grid around the configured value refined
//!    by ×2, with, when asked, one weight of adjacent order lines beside the refinement (and
//!    more weights and λ only if it wins), each table ranked by its own signal. The minimum
//!    support is not searched: above 1 it leaves items with enough baskets but only single
//!    shared ones without any neighbour, and every item with enough baskets must have some.
//! 2. **Blend, per touchpoint**, by coordinate ascent from the configured values: the content
//!    and popularity weights, θ and substitute demotion on requests with the cart alone, then
//!    the weight of earlier purchases on requests that carry them. Touchpoints differ in how
//!    much of the basket a request knows: checkout all but the hidden item, cart the first
//!    half of it, a product page one item. θ and substitute demotion guard what a hit rate
//!    cannot see (five lunch bags of one print, a second camera beside a camera), so once the
//!    ascent has found the best blend without them, the most diverse θ and then demotion are
//!    kept as long as together they cost at most `tolerance` of its score (θ also on the
//!    requests with purchases).
//! 3. **The shape of earlier purchases**, which all touchpoints share: the half-life (from
//!    "what they bought lately" to "what they buy most"), whether the cart's restock share
//!    scales the weight, and how much having been bought beside a cart item counts (only if
//!    that beats not counting it by half of `tolerance`), on the checkout cases that carry
//!    purchases; if it changes, each touchpoint's purchases weight is chosen again under it.
//! 4. **The guarantee**: a touchpoint whose tuned blend scores below the collaborative signal
//!    alone, on requests with the cart alone, serves that signal alone.
//!
//! The grids are where one shop's best lay; λ, the blend weights and the half-life grow past
//! the end of theirs while that end scores best, for a shop whose best lies further out.
//!
//! The caller refits on all the history with the chosen estimator settings and stores the
//! [`Tuning`] with the version; the server reads its `pipeline` table beneath any value set in
//! a configuration file or the environment.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::estimators::{self, Counts, Estimator, MeasureParams, Neighbours, Ridge};
use super::evaluate::{self, TestCase, Variant};
use super::history::History;
use super::progress::Progress;
use super::train::{self, TrainError, TrainParams, TrainedModel, TrainingSet};
use crate::domain::{ModelVersion, Touchpoint};
use crate::model::{ModelError, Snapshot};
use crate::pipeline::{PipelineConfig, TouchpointConfig};

/// How the validation split is made and searched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TuneParams {
    /// The validation split covers at least the last this many days of training history...
    pub validation_days: f64,
    /// ...and at least this share of its baskets.
    pub validation_share: f64,
    /// Most validation cases used per touchpoint (evenly spaced over the split).
    pub max_cases: usize,
    /// List length scored.
    pub k: usize,
    /// Seed of the hidden-item choice.
    pub seed: u64,
    /// Relative score a protective setting (lower θ, substitute demotion) may cost.
    pub tolerance: f64,
    /// Whether to try weighing adjacent order lines (`sparse-ease`).
    pub adjacency: bool,
    /// Worker threads (0 = available cores).
    pub threads: usize,
}

impl Default for TuneParams {
    fn default() -> Self {
        Self {
            validation_days: 28.0,
            validation_share: 0.1,
            max_cases: 2000,
            k: 10,
            seed: 1,
            tolerance: 0.01,
            adjacency: false,
            threads: 0,
        }
    }
}

/// The validation split a tuning used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidationSplit {
    /// Baskets fitted on (before the split).
    pub fit_baskets: usize,
    /// Validation baskets.
    pub baskets: usize,
    /// Time of the first and last validation basket (UTC seconds).
    pub from: i64,
    /// See `from`.
    pub to: i64,
    /// Validation cases scored per touchpoint.
    pub cases: usize,
    /// Of those, cases whose customer bought something before.
    pub cases_with_purchased: usize,
}

/// One estimator setting tried, with its validation scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimatorTrial {
    /// EASE λ.
    pub lambda: f64,
    /// Weight of adjacent order lines.
    #[serde(default)]
    pub adjacency: f64,
    /// Fewest shared baskets per pair.
    pub min_support: u32,
    /// HitRate@k of the table ranking by itself, cart alone, at checkout.
    pub hit_rate: f64,
    /// NDCG@k of the same.
    pub ndcg: f64,
}

/// Validation HitRate@k of one touchpoint under three configurations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TouchpointScores {
    /// The configured (untuned) blend.
    pub configured: f64,
    /// The tuned blend (what is served).
    pub tuned: f64,
    /// The collaborative signal alone (requests with the cart alone only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collaborative: Option<f64>,
}

/// What tuning chose for one touchpoint and how it scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TouchpointTuning {
    /// `checkout`, `cart` or `product`.
    pub touchpoint: String,
    /// The chosen weights, θ and substitute demotion.
    pub chosen: TouchpointConfig,
    /// Whether the guarantee replaced the blend by the collaborative signal alone.
    pub single_signal: bool,
    /// Requests with the cart alone.
    pub cart_only: TouchpointScores,
    /// Requests that carry the shopper's earlier purchases (none when no case has any).
    pub with_purchased: Option<TouchpointScores>,
}

/// The settings tuning chose, with the evidence; stored with the version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tuning {
    /// The validation split.
    pub validation: ValidationSplit,
    /// Estimator settings tried, best last among equals (empty when the estimator has none
    /// to tune).
    pub estimator_trials: Vec<EstimatorTrial>,
    /// The chosen λ (when tuned).
    pub lambda: Option<f64>,
    /// The chosen weight of adjacent order lines (when tuned).
    #[serde(default)]
    pub adjacency: Option<f64>,
    /// The minimum support the tables were fitted with (the configured one; not searched).
    pub min_support: Option<u32>,
    /// Per touchpoint: the choice and its scores.
    pub touchpoints: Vec<TouchpointTuning>,
    /// The chosen half-life of earlier purchases, in purchases (when any validation case
    /// carries some).
    #[serde(default)]
    pub purchased_half_life: Option<f32>,
    /// Whether the chosen blend scales the purchases' weight by the cart's restock share (when
    /// any validation case carries purchases).
    #[serde(default)]
    pub restock_scaling: Option<bool>,
    /// The chosen weight of having been bought beside a cart item (when any validation case
    /// carries purchases).
    #[serde(default)]
    pub purchased_beside_cart: Option<f32>,
    /// The tuned values as a partial `[pipeline]` table, which the server layers beneath the
    /// configuration.
    pub pipeline: serde_json::Value,
    /// Seconds spent tuning.
    pub seconds: f64,
}

/// Why tuning could not run.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// The history is too short for a validation split.
    #[error("too little history to tune on: {0}")]
    TooLittleHistory(String),
    /// Fitting on the baskets before the split failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A snapshot of a candidate model was invalid.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Fewest validation cases worth tuning on: below it one case moves the hit rate by more
/// than any setting does.
const MIN_CASES: usize = 200;

/// Content weights searched.
const CONTENT: [f32; 6] = [0.0, 0.1, 0.2, 0.3, 0.5, 0.8];
/// Popularity weights searched.
const POPULARITY: [f32; 4] = [0.0, 0.02, 0.1, 0.3];
/// θ values searched, most diverse first (the preferred order).
const THETA: [f32; 4] = [0.85, 0.9, 0.95, 1.0];
/// Weights of earlier purchases searched.
const PURCHASED: [f32; 8] = [0.0, 0.5, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0];
/// Largest weight of earlier purchases searched beyond [`PURCHASED`].
const MAX_PURCHASED: f32 = 20.0;
/// Largest content or popularity weight searched beyond [`CONTENT`] and [`POPULARITY`]: at 4
/// against the collaborative signal's 1 the co-purchase signal only breaks ties.
const MAX_BLEND_WEIGHT: f32 = 4.0;
/// Half-lives of earlier purchases searched, in purchases: from "what they bought lately" to
/// "what they buy most".
const PURCHASED_HALF_LIFE: [f32; 5] = [10.0, 30.0, 100.0, 300.0, 1000.0];
/// Shortest and longest half-lives searched past [`PURCHASED_HALF_LIFE`].
const MIN_HALF_LIFE: f32 = 1.0;
/// See [`MIN_HALF_LIFE`].
const MAX_HALF_LIFE: f32 = 10_000.0;
/// Weights of having been bought beside a cart item searched against none.
const PURCHASED_BESIDE_CART: [f32; 4] = [1.0, 2.0, 4.0, 8.0];
/// Most ×2 steps of λ past the ends of its grid.
const MAX_LAMBDA_STEPS: usize = 4;
/// Weights of adjacent order lines searched (beside the configured one).
const ADJACENCY: [f64; 3] = [0.5, 1.0, 2.0];
/// Popularity weight of the single-signal configuration: a tie-break only.
const FILL: f32 = 0.001;

/// A blend weight the ascent may grow past its grid.
#[derive(Debug, Clone, Copy)]
enum Weight {
    Content,
    Popularity,
    Purchased,
}

impl Weight {
    fn get(self, c: &TouchpointConfig) -> f32 {
        match self {
            Weight::Content => c.content,
            Weight::Popularity => c.popularity,
            Weight::Purchased => c.purchased,
        }
    }

    fn set(self, c: &mut TouchpointConfig, v: f32) {
        match self {
            Weight::Content => c.content = v,
            Weight::Popularity => c.popularity = v,
            Weight::Purchased => c.purchased = v,
        }
    }

    /// The next weight past `largest`, if any: up to [`MAX_PURCHASED`] for earlier purchases
    /// (×1.6), up to [`MAX_BLEND_WEIGHT`] for content and popularity (×2), both against the
    /// collaborative signal's 1.
    fn grown(self, largest: f32) -> Option<f32> {
        let (factor, max) = match self {
            Weight::Purchased => (1.6, MAX_PURCHASED),
            Weight::Content | Weight::Popularity => (2.0, MAX_BLEND_WEIGHT),
        };
        (largest < max && largest > 0.0).then(|| (largest * factor).min(max))
    }
}

/// The first validation basket: see the module doc.
pub fn validation_start(history: &History, range: &Range<usize>, params: &TuneParams) -> usize {
    if range.is_empty() {
        return range.end;
    }
    let last = history.time(range.end - 1);
    let by_time = history
        .split_at(last - (params.validation_days * 86_400.0) as i64)
        .max(range.start);
    let share = (range.len() as f64 * params.validation_share).ceil() as usize;
    let by_share = range.end - share.min(range.len());
    by_time.min(by_share).max(range.start + range.len() / 2)
}

/// A score to compare configurations by: the hit rate, NDCG breaking its ties.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score {
    hit_rate: f64,
    ndcg: f64,
}

impl Score {
    fn key(self) -> f64 {
        self.hit_rate + 1e-3 * self.ndcg
    }
}

/// Answers validation cases with one snapshot under touchpoint configurations.
struct Bench {
    snapshot: Arc<Snapshot>,
    base: PipelineConfig,
    k: usize,
    threads: usize,
    cache: Vec<(TouchpointConfig, bool, Score)>,
}

impl Bench {
    /// Scores `touchpoint` (evaluated in the checkout slot) on `cases`; `with_purchased`
    /// only tells cached results of the two case sets apart.
    fn score(
        &mut self,
        cases: &[TestCase],
        touchpoint: TouchpointConfig,
        with_purchased: bool,
    ) -> Score {
        if let Some(&(_, _, s)) = self
            .cache
            .iter()
            .find(|(t, w, _)| *t == touchpoint && *w == with_purchased)
        {
            return s;
        }
        let variant = Variant {
            name: String::new(),
            snapshot: self.snapshot.clone(),
            config: PipelineConfig {
                checkout: touchpoint,
                ..self.base.clone()
            },
        };
        let r = evaluate::evaluate_variant(&variant, cases, self.k, self.threads);
        let s = Score {
            hit_rate: r.hit_rate,
            ndcg: r.ndcg,
        };
        self.cache.push((touchpoint, with_purchased, s));
        s
    }

    /// Serves the shape of earlier purchases' signal from `base` from now on.
    fn set_purchase_shape(&mut self, shape: PurchaseShape) {
        if PurchaseShape::of(&self.base) != shape {
            self.base.purchased_half_life = shape.half_life;
            self.base.restock_scaling = shape.restock_scaling;
            self.base.purchased_beside_cart = shape.beside_cart;
            self.cache.clear();
        }
    }

    /// Picks the weight of earlier purchases on `cases` (which carry them), growing past
    /// [`PURCHASED`] up to [`MAX_PURCHASED`] for a shop whose shoppers mostly buy again what
    /// they bought before.
    fn pick_purchased(
        &mut self,
        cases: &[TestCase],
        current: TouchpointConfig,
    ) -> TouchpointConfig {
        self.pick_growing(cases, current, &PURCHASED, Weight::Purchased, true)
    }

    /// Picks one weight among `values` (ascending) and the current one; while the largest
    /// tried wins, tries [`Weight::grown`] steps beyond it, each kept only if it scores
    /// better. A grid fitted to one shop ends where that shop's best lay; another shop's best
    /// may lie past it.
    fn pick_growing(
        &mut self,
        cases: &[TestCase],
        current: TouchpointConfig,
        values: &[f32],
        weight: Weight,
        with_purchased: bool,
    ) -> TouchpointConfig {
        let mut tried = values.to_vec();
        let now = weight.get(&current);
        if !tried.contains(&now) {
            tried.push(now);
            tried.sort_by(f32::total_cmp);
        }
        let chosen = self.pick(
            cases,
            current,
            &tried,
            |c, v| weight.set(c, v),
            0.0,
            with_purchased,
        );
        let largest = tried.last().copied().unwrap_or(now);
        grow_past(chosen, largest, weight, |c| {
            self.score(cases, c, with_purchased).key()
        })
    }

    /// Picks a value of one setting: the best, or with `tolerance` the first value in
    /// `values` (the preferred order) within `tolerance` of the best.
    fn pick<T: Copy>(
        &mut self,
        cases: &[TestCase],
        current: TouchpointConfig,
        values: &[T],
        set: impl Fn(&mut TouchpointConfig, T),
        tolerance: f64,
        with_purchased: bool,
    ) -> TouchpointConfig {
        let candidates: Vec<(TouchpointConfig, f64)> = values
            .iter()
            .map(|&v| {
                let mut c = current;
                set(&mut c, v);
                (c, self.score(cases, c, with_purchased).key())
            })
            .collect();
        let best = candidates
            .iter()
            .map(|&(_, s)| s)
            .fold(f64::NEG_INFINITY, f64::max);
        if tolerance > 0.0 {
            if let Some(&(c, _)) = candidates
                .iter()
                .find(|&&(_, s)| s >= best * (1.0 - tolerance))
            {
                return c;
            }
        }
        // Ties go to the current value, then to the earlier one.
        let current_score = candidates
            .iter()
            .find(|(c, _)| *c == current)
            .map(|&(_, s)| s);
        if current_score == Some(best) {
            return current;
        }
        candidates
            .iter()
            .find(|&&(_, s)| s == best)
            .map_or(current, |&(c, _)| c)
    }
}

/// `chosen` with `weight` grown past `largest` (the largest tried) by [`Weight::grown`] steps
/// while `chosen` holds it and each step scores better by `score`.
fn grow_past(
    mut chosen: TouchpointConfig,
    mut largest: f32,
    weight: Weight,
    mut score: impl FnMut(TouchpointConfig) -> f64,
) -> TouchpointConfig {
    while weight.get(&chosen) >= largest {
        let Some(next) = weight.grown(largest) else {
            break;
        };
        largest = next;
        let mut larger = chosen;
        weight.set(&mut larger, largest);
        if score(larger) > score(chosen) {
            chosen = larger;
        } else {
            break;
        }
    }
    chosen
}

/// The most diverse θ, then substitute demotion when `demotes`, whose blend still scores at
/// least `floor` by `score`; the touchpoint's other weights stay as they are.
fn protect(
    current: TouchpointConfig,
    demotes: bool,
    floor: f64,
    mut score: impl FnMut(TouchpointConfig) -> f64,
) -> TouchpointConfig {
    let mut chosen = THETA
        .iter()
        .map(|&theta| TouchpointConfig { theta, ..current })
        .find(|&c| score(c) >= floor)
        .unwrap_or(current);
    if demotes && !chosen.demote_substitutes {
        let demoting = TouchpointConfig {
            demote_substitutes: true,
            ..chosen
        };
        if score(demoting) >= floor {
            chosen = demoting;
        }
    }
    chosen
}

/// The collaborative signal alone, keeping the touchpoint's other inputs' weights.
fn single_signal(t: &TouchpointConfig) -> TouchpointConfig {
    TouchpointConfig {
        collaborative: 1.0,
        content: 0.0,
        popularity: FILL,
        theta: 1.0,
        demote_substitutes: false,
        ..*t
    }
}

/// Validation cases as the three touchpoints see them, each with the cart alone and with
/// earlier purchases (only the cases that have some).
struct Cases {
    touchpoints: [(&'static str, Vec<TestCase>, Vec<TestCase>); 3],
}

/// At most `max` of `cases`, evenly spaced over them (all when there are no more).
fn evenly_spaced(cases: Vec<TestCase>, max: usize) -> Vec<TestCase> {
    let len = cases.len();
    if len <= max {
        return cases;
    }
    let mut next = 0;
    cases
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| {
            // Case i is the chosen one of its share when the next chosen index reaches it.
            let keep = i == next * len / max;
            next += usize::from(keep);
            keep
        })
        .map(|(_, case)| case)
        .collect()
}

impl Cases {
    fn new(all: Vec<TestCase>, max_cases: usize) -> Self {
        let chosen = evenly_spaced(all, max_cases.max(1));
        let shape = |touchpoint: Touchpoint| {
            let with: Vec<TestCase> = chosen
                .iter()
                .map(|c| TestCase {
                    cart: evaluate::touchpoint_cart(touchpoint, &c.cart).to_vec(),
                    ..c.clone()
                })
                .collect();
            let alone = with
                .iter()
                .map(|c| TestCase {
                    purchased: Vec::new(),
                    ..c.clone()
                })
                .collect();
            let with = with
                .into_iter()
                .filter(|c| !c.purchased.is_empty())
                .collect();
            (alone, with)
        };
        let (checkout, checkout_with) = shape(Touchpoint::Checkout);
        let (cart, cart_with) = shape(Touchpoint::Cart);
        let (product, product_with) = shape(Touchpoint::Product);
        Self {
            touchpoints: [
                ("checkout", checkout, checkout_with),
                ("cart", cart, cart_with),
                ("product", product, product_with),
            ],
        }
    }
}

/// Tunes on the baskets of `history` in `range` (see the module doc). Returns the training
/// parameters to refit with and what was chosen.
pub fn tune(
    history: &History,
    range: Range<usize>,
    base_params: &TrainParams,
    base_config: &PipelineConfig,
    params: &TuneParams,
    content: Option<&train::Content>,
    progress: &Progress,
) -> Result<(TrainParams, Tuning), TuneError> {
    let started = Instant::now();
    let split = validation_start(history, &range, params);
    if split >= range.end || split <= range.start {
        return Err(TuneError::TooLittleHistory(format!(
            "{} baskets",
            range.len()
        )));
    }
    progress.message("fit before the validation split");
    let fit_range = range.start..split;
    let model = train::train_sharing_content(
        history,
        fit_range.clone(),
        base_params,
        content,
        &Progress::hidden(),
    )?;
    let (all_cases, _) = evaluate::test_cases(history, split..range.end, &model, params.seed);
    if all_cases.len() < MIN_CASES {
        return Err(TuneError::TooLittleHistory(format!(
            "{} validation cases, {MIN_CASES} needed",
            all_cases.len()
        )));
    }
    let cases = Cases::new(all_cases, params.max_cases);
    let validation = ValidationSplit {
        fit_baskets: fit_range.len(),
        baskets: range.end - split,
        from: history.time(split),
        to: history.time(range.end - 1),
        cases: cases.touchpoints[0].1.len(),
        cases_with_purchased: cases.touchpoints[0].2.len(),
    };
    let threads = estimators::worker_threads(params.threads);
    progress.message("estimator");
    let (chosen_measure, trials, snapshot) = tune_estimator(
        history,
        fit_range,
        &model,
        base_params,
        base_config,
        &cases.touchpoints[0].1,
        params,
        threads,
    )?;
    let mut bench = Bench {
        snapshot,
        base: base_config.clone(),
        k: params.k,
        threads,
        cache: Vec::new(),
    };
    let mut touchpoints = Vec::with_capacity(3);
    for (name, alone, with) in &cases.touchpoints {
        progress.message(name);
        bench.cache.clear();
        let configured = configured_touchpoint(base_config, name);
        touchpoints.push(tune_touchpoint(
            &mut bench,
            name,
            configured,
            alone,
            with,
            params.tolerance,
        ));
    }
    progress.message("earlier purchases");
    let shape = tune_purchase_shape(&mut bench, &cases, &mut touchpoints, params.tolerance);
    let mut pipeline = serde_json::Map::new();
    for tuning in &touchpoints {
        pipeline.insert(
            tuning.touchpoint.clone(),
            serde_json::json!({
                "collaborative": tuning.chosen.collaborative,
                "content": tuning.chosen.content,
                "popularity": tuning.chosen.popularity,
                "purchased": tuning.chosen.purchased,
                "theta": tuning.chosen.theta,
                "demote_substitutes": tuning.chosen.demote_substitutes,
            }),
        );
    }
    if let Some(shape) = shape {
        pipeline.insert("purchased_half_life".into(), shape.half_life.into());
        pipeline.insert("restock_scaling".into(), shape.restock_scaling.into());
        pipeline.insert("purchased_beside_cart".into(), shape.beside_cart.into());
    }
    let tuned = base_params.measure.estimator == Estimator::SparseEase;
    let refit = TrainParams {
        measure: chosen_measure.clone(),
        ..base_params.clone()
    };
    Ok((
        refit,
        Tuning {
            validation,
            estimator_trials: trials,
            lambda: tuned.then_some(chosen_measure.lambda),
            adjacency: tuned.then_some(chosen_measure.adjacency),
            min_support: tuned.then_some(chosen_measure.min_support),
            touchpoints,
            purchased_half_life: shape.map(|s| s.half_life),
            restock_scaling: shape.map(|s| s.restock_scaling),
            purchased_beside_cart: shape.map(|s| s.beside_cart),
            pipeline: serde_json::Value::Object(pipeline),
            seconds: started.elapsed().as_secs_f64(),
        },
    ))
}

fn configured_touchpoint(config: &PipelineConfig, name: &str) -> TouchpointConfig {
    match name {
        "checkout" => config.checkout,
        "cart" => config.cart,
        _ => config.product,
    }
}

/// The shape of the earlier purchases' signal, which every touchpoint shares.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PurchaseShape {
    half_life: f32,
    restock_scaling: bool,
    beside_cart: f32,
}

impl PurchaseShape {
    fn of(config: &PipelineConfig) -> Self {
        Self {
            half_life: config.purchased_half_life,
            restock_scaling: config.restock_scaling,
            beside_cart: config.purchased_beside_cart,
        }
    }
}

/// Chooses the shape of the earlier purchases' signal, which every touchpoint shares: its
/// half-life, then whether the cart's restock share scales it, then the weight of having been
/// bought beside a cart item (off unless it beats off by half of `tolerance`), each on the
/// checkout cases that carry purchases (ties keep the configured value). When the shape
/// changes, each touchpoint's purchases weight is chosen again under it. Returns the shape, or
/// `None` when no case carries purchases or checkout gives them no weight (the configured
/// shape is then served).
fn tune_purchase_shape(
    bench: &mut Bench,
    cases: &Cases,
    touchpoints: &mut [TouchpointTuning],
    tolerance: f64,
) -> Option<PurchaseShape> {
    let (_, _, with) = &cases.touchpoints[0];
    let checkout = touchpoints.first()?.chosen;
    if with.is_empty() || checkout.purchased <= 0.0 {
        return None;
    }
    // The cache holds the last touchpoint's cases' scores.
    bench.cache.clear();
    let configured = PurchaseShape::of(&bench.base);
    let mut best = (configured, bench.score(with, checkout, true).key());
    let consider = |bench: &mut Bench, best: &mut (PurchaseShape, f64), shape: PurchaseShape| {
        bench.set_purchase_shape(shape);
        let score = bench.score(with, checkout, true).key();
        if score > best.1 {
            *best = (shape, score);
        }
    };
    for half_life in PURCHASED_HALF_LIFE {
        consider(
            bench,
            &mut best,
            PurchaseShape {
                half_life,
                ..configured
            },
        );
    }
    // Past the grid's ends while its end wins: shoppers may restock by their last few
    // purchases, or by everything they ever bought.
    let ends = [
        (PURCHASED_HALF_LIFE[0], 1.0 / 3.0),
        (PURCHASED_HALF_LIFE[PURCHASED_HALF_LIFE.len() - 1], 3.0),
    ];
    for (end, factor) in ends {
        let mut at = end;
        while best.0.half_life == at {
            let next = at * factor;
            if !(MIN_HALF_LIFE..=MAX_HALF_LIFE).contains(&next) {
                break;
            }
            consider(
                bench,
                &mut best,
                PurchaseShape {
                    half_life: next,
                    ..configured
                },
            );
            at = next;
        }
    }
    let other = PurchaseShape {
        restock_scaling: !configured.restock_scaling,
        ..best.0
    };
    consider(bench, &mut best, other);
    // Purchases beside the cart must earn their place: against the best shape without them, a
    // weight above 0 needs a validation hit rate higher by half of `tolerance`. A tie won on
    // NDCG reordered the synthetic history's lists (lines in random order) on validation and
    // cost its test split 6 %.
    let without = PurchaseShape {
        beside_cart: 0.0,
        ..best.0
    };
    bench.set_purchase_shape(without);
    let floor = bench.score(with, checkout, true).hit_rate * (1.0 + tolerance / 2.0);
    let mut chosen = (without, f64::NEG_INFINITY);
    for beside_cart in PURCHASED_BESIDE_CART {
        let shape = PurchaseShape {
            beside_cart,
            ..best.0
        };
        bench.set_purchase_shape(shape);
        let score = bench.score(with, checkout, true);
        if score.hit_rate > floor && score.key() > chosen.1 {
            chosen = (shape, score.key());
        }
    }
    let shape = chosen.0;
    bench.set_purchase_shape(shape);
    if shape != configured {
        for (tuning, (_, _, with)) in touchpoints.iter_mut().zip(&cases.touchpoints) {
            let Some(scores) = tuning.with_purchased.as_mut() else {
                continue;
            };
            bench.cache.clear();
            tuning.chosen = bench.pick_purchased(with, tuning.chosen);
            scores.tuned = bench.score(with, tuning.chosen, true).hit_rate;
        }
    }
    Some(shape)
}

/// Coordinate ascent over one touchpoint's settings, then its protective values, the
/// guarantee, and the weight of earlier purchases (with θ checked on those requests too).
fn tune_touchpoint(
    bench: &mut Bench,
    name: &str,
    configured: TouchpointConfig,
    alone: &[TestCase],
    with: &[TestCase],
    tolerance: f64,
) -> TouchpointTuning {
    let mut current = configured;
    for _round in 0..2 {
        let before = current;
        current = bench.pick_growing(alone, current, &CONTENT, Weight::Content, false);
        current = bench.pick_growing(alone, current, &POPULARITY, Weight::Popularity, false);
        current = bench.pick(alone, current, &THETA, |c, v| c.theta = v, 0.0, false);
        // A product page shows alternatives on purpose; only the basket touchpoints demote.
        if name != "product" {
            current = bench.pick(
                alone,
                current,
                &[true, false],
                |c, v| c.demote_substitutes = v,
                0.0,
                false,
            );
        }
        if current == before {
            break;
        }
    }
    // The protective values are chosen last, against the best blend found without them, so
    // that together they cost at most `tolerance`: chosen inside the ascent, each would cost
    // up to `tolerance` and the other weights would then settle around it (θ 0.95 inside the
    // ascent left a 62,000-item history's checkout 5 % below its best blend).
    let floor = bench.score(alone, current, false).key() * (1.0 - tolerance);
    current = protect(current, name != "product", floor, |c| {
        bench.score(alone, c, false).key()
    });
    let single_score = bench.score(alone, single_signal(&current), false);
    let mut single_signal_served = false;
    let mut serve_single_if_better = |bench: &mut Bench, current: &mut TouchpointConfig| {
        if bench.score(alone, *current, false).key() < single_score.key() {
            *current = single_signal(current);
            single_signal_served = true;
        }
    };
    serve_single_if_better(bench, &mut current);
    let with_purchased = (!with.is_empty()).then(|| {
        current = bench.pick_purchased(with, current);
        // θ guards every request the touchpoint answers: a more diverse list stays only while
        // it also costs at most `tolerance` on requests with earlier purchases, whose
        // restocked items are often alike and which the DPP would spread.
        let theta = bench
            .pick(with, current, &THETA, |c, v| c.theta = v, tolerance, true)
            .theta;
        if theta > current.theta {
            current.theta = theta;
            // Demotion was chosen under the lower θ: it stays only within the same floor.
            if current.demote_substitutes && bench.score(alone, current, false).key() < floor {
                current.demote_substitutes = false;
            }
            serve_single_if_better(bench, &mut current);
            current = bench.pick_purchased(with, current);
        }
        TouchpointScores {
            configured: bench.score(with, configured, true).hit_rate,
            tuned: bench.score(with, current, true).hit_rate,
            collaborative: None,
        }
    });
    let single_signal = single_signal_served;
    let cart_only = TouchpointScores {
        configured: bench.score(alone, configured, false).hit_rate,
        tuned: bench.score(alone, current, false).hit_rate,
        collaborative: Some(single_score.hit_rate),
    };
    TouchpointTuning {
        touchpoint: name.to_string(),
        chosen: current,
        single_signal,
        cart_only,
        with_purchased,
    }
}

/// Searches λ and the weight of adjacent lines of a `sparse-ease` table on the checkout cases
/// with the cart alone, each table ranking by itself; returns the chosen parameters, the
/// trials and the chosen table's snapshot. λ takes a ×4 grid around the configured value
/// (whose table `model` already holds), then ×2 steps around the best with, when asked and the
/// history has line order, one other adjacency weight beside them (1, or 0 when one is
/// configured); only if that weight scores best, the others of [`ADJACENCY`] and ×2 steps of
/// λ at it (the weight scales the Gram matrix, so the best λ can move with it).
#[allow(clippy::too_many_arguments)]
fn tune_estimator(
    history: &History,
    fit_range: Range<usize>,
    model: &TrainedModel,
    base_params: &TrainParams,
    base_config: &PipelineConfig,
    cases: &[TestCase],
    params: &TuneParams,
    threads: usize,
) -> Result<(MeasureParams, Vec<EstimatorTrial>, Arc<Snapshot>), TuneError> {
    let version = ModelVersion(0);
    let base = base_params.measure.clone();
    if base.estimator != Estimator::SparseEase || base.dp.is_some() {
        return Ok((base, Vec::new(), Arc::new(model.to_snapshot(version)?)));
    }
    let set = TrainingSet::new(history, fit_range);
    let counts = Counts::from_baskets(&set.baskets, base.min_baskets, base.threads);
    let groups = base_params.variant_groups(model.items.iter().map(|i| i.id.as_str()));
    let ranking = evaluate::ranking_config(base_config, 1.0, 0.0, FILL);
    let mut trials: Vec<Trial> = Vec::new();
    let score = |measure: MeasureParams, pairs: Neighbours| -> Result<Trial, TuneError> {
        let snapshot = Arc::new(model.snapshot_with_pairs(version, &pairs)?);
        let variant = Variant {
            name: String::new(),
            snapshot: snapshot.clone(),
            config: ranking.clone(),
        };
        let r = evaluate::evaluate_variant(&variant, cases, params.k, threads);
        Ok(Trial {
            result: EstimatorTrial {
                lambda: measure.lambda,
                adjacency: measure.adjacency,
                min_support: measure.min_support,
                hit_rate: r.hit_rate,
                ndcg: r.ndcg,
            },
            measure,
            snapshot,
        })
    };
    // Each step's settings are fitted in one pass, which shares their neighbourhoods.
    let fit = |ridges: Vec<Ridge>, trials: &mut Vec<Trial>| -> Result<(), TuneError> {
        let ridges: Vec<Ridge> = ridges
            .into_iter()
            .filter(|r| trials.iter().all(|t| t.measure.ridge() != *r))
            .collect();
        let tables = estimators::co_purchase_for_ridges(&counts, &groups, &base, &ridges)
            .map_err(TrainError::from)?;
        for (ridge, (pairs, _)) in ridges.iter().zip(tables) {
            let measure = MeasureParams {
                lambda: ridge.lambda,
                adjacency: ridge.adjacency,
                ..base.clone()
            };
            trials.push(score(measure, pairs)?);
        }
        Ok(())
    };
    let lambdas = |factors: [f64; 2], around: Ridge| {
        factors
            .iter()
            .map(|f| Ridge {
                lambda: around.lambda * f,
                ..around
            })
            .collect::<Vec<_>>()
    };
    let best_ridge = |trials: &[Trial]| trials[best_trial(trials)].measure.ridge();
    trials.push(score(base.clone(), model.co_purchase.clone())?);
    fit(lambdas([0.25, 4.0], base.ridge()), &mut trials)?;
    let at = best_ridge(&trials);
    let mut step = lambdas([0.5, 2.0], at);
    // One other adjacency weight rides along with the λ step: a shop whose line order says
    // nothing pays one more solve per item for it, not another pass.
    let probe = Ridge {
        adjacency: if at.adjacency == 0.0 {
            ADJACENCY[1]
        } else {
            0.0
        },
        ..at
    };
    if params.adjacency && counts.has_adjacency() {
        step.push(probe);
    }
    fit(step, &mut trials)?;
    let best = best_ridge(&trials);
    if best.adjacency != at.adjacency {
        let mut step: Vec<Ridge> = ADJACENCY
            .iter()
            .map(|&adjacency| Ridge { adjacency, ..best })
            .collect();
        step.extend(lambdas([0.5, 2.0], best));
        fit(step, &mut trials)?;
    }
    // Past the grid's ends while its end wins: the best λ grows with how many baskets the most
    // bought items have, so a large shop's may lie well above a small one's.
    for _ in 0..MAX_LAMBDA_STEPS {
        let best = best_ridge(&trials);
        let tried = trials
            .iter()
            .map(|t| t.measure.ridge())
            .filter(|r| r.adjacency == best.adjacency)
            .map(|r| r.lambda);
        let (lowest, highest) = tried.fold((f64::INFINITY, 0.0f64), |(lo, hi), l| {
            (lo.min(l), hi.max(l))
        });
        let factor = if best.lambda >= highest {
            2.0
        } else if best.lambda <= lowest {
            0.5
        } else {
            break;
        };
        let next = Ridge {
            lambda: best.lambda * factor,
            ..best
        };
        fit(vec![next], &mut trials)?;
    }
    let best = best_trial(&trials);
    let (measure, snapshot) = (trials[best].measure.clone(), trials[best].snapshot.clone());
    Ok((
        measure,
        trials.into_iter().map(|t| t.result).collect(),
        snapshot,
    ))
}

/// One estimator setting, its table and its validation scores.
struct Trial {
    measure: MeasureParams,
    snapshot: Arc<Snapshot>,
    result: EstimatorTrial,
}

/// The best trial by hit rate, NDCG breaking ties, the earliest among equals.
fn best_trial(trials: &[Trial]) -> usize {
    let key = |t: &Trial| {
        Score {
            hit_rate: t.result.hit_rate,
            ndcg: t.result.ndcg,
        }
        .key()
    };
    let mut best = 0;
    for (i, t) in trials.iter().enumerate() {
        if key(t) > key(&trials[best]) {
            best = i;
        }
    }
    best
}

impl Tuning {
    /// One line: the split and the estimator's choice.
    pub fn headline(&self) -> String {
        let estimator = match (self.lambda, self.min_support) {
            (Some(lambda), Some(support)) => format!(
                "λ {lambda}, adjacent lines {}, min support {support}",
                self.adjacency.unwrap_or(0.0)
            ),
            _ => "estimator as configured".to_string(),
        };
        format!(
            "{} validation cases ({} with earlier purchases) from {} baskets, fitted on {}; {estimator}{}; {:.1} s",
            self.validation.cases,
            self.validation.cases_with_purchased,
            self.validation.baskets,
            self.validation.fit_baskets,
            match (self.purchased_half_life, self.restock_scaling) {
                (Some(h), Some(r)) => format!(
                    ", purchases' half-life {h}, restock scaling {r}, bought beside the cart {}",
                    self.purchased_beside_cart.unwrap_or(0.0)
                ),
                _ => String::new(),
            },
            self.seconds
        )
    }

    /// One line per touchpoint: the chosen settings and the validation HitRate they scored,
    /// against the configured settings and the collaborative signal alone.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for t in &self.touchpoints {
            let c = &t.chosen;
            out.push_str(&format!(
                "  {:<8} content {} popularity {} θ {} demote substitutes {} purchased {}{}; HR cart alone {:.4} (configured {:.4}, collaborative alone {:.4})",
                t.touchpoint,
                c.content,
                c.popularity,
                c.theta,
                c.demote_substitutes,
                c.purchased,
                if t.single_signal { " (collaborative alone)" } else { "" },
                t.cart_only.tuned,
                t.cart_only.configured,
                t.cart_only.collaborative.unwrap_or(f64::NAN),
            ));
            if let Some(w) = &t.with_purchased {
                out.push_str(&format!(
                    ", with purchases {:.4} (configured {:.4})",
                    w.tuned, w.configured
                ));
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::orders::ReadOptions;

    #[test]
    fn validation_cases_are_capped_evenly_and_exactly() {
        let cases = |n: usize| -> Vec<TestCase> {
            (0..n)
                .map(|i| TestCase {
                    cart: Vec::new(),
                    hidden: i.to_string(),
                    purchased: Vec::new(),
                })
                .collect()
        };
        let hidden =
            |kept: Vec<TestCase>| -> Vec<String> { kept.into_iter().map(|c| c.hidden).collect() };
        assert_eq!(hidden(evenly_spaced(cases(10), 4)), ["0", "2", "5", "7"]);
        assert_eq!(evenly_spaced(cases(4001), 4000).len(), 4000);
        assert_eq!(evenly_spaced(cases(3), 4000).len(), 3);
    }

    /// Sixty days of baskets: each holds one of twelve complementary pairs (`1xx` with `2xx`),
    /// a popular filler and, every third basket, half of another pair. Titles mislead: each
    /// item's title names another pair's product, so content similarity points the wrong way.
    fn history() -> History {
        let mut csv = String::from(
            "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n",
        );
        let mut invoice = 0;
        for day in 0..60 {
            for slot in 0..20 {
                invoice += 1;
                let pair = (day * 7 + slot * 5) % 12;
                let other = (pair + 1 + slot % 11) % 12;
                let date = format!(
                    "2011-{:02}-{:02} {:02}:00:00",
                    1 + day / 28,
                    1 + day % 28,
                    8 + slot / 2
                );
                let customer = if slot % 4 == 0 {
                    String::new()
                } else {
                    format!("{}.0", 12_000 + (invoice % 40))
                };
                let mut line = |code: String, title: String| {
                    csv.push_str(&format!(
                        "{invoice},{code},{title},1,{date},1.0,{customer},UK\n"
                    ));
                };
                let misleading = (pair + 6) % 12;
                line(
                    format!("{}", 100 + pair),
                    format!("LAMP MODEL {misleading}"),
                );
                line(
                    format!("{}", 200 + pair),
                    format!("SHADE MODEL {misleading}"),
                );
                line(
                    format!("{}", 900 + slot % 3),
                    format!("GIFT WRAP {}", slot % 3),
                );
                if slot % 3 == 0 {
                    line(
                        format!("{}", 100 + other),
                        format!("LAMP MODEL {}", (other + 6) % 12),
                    );
                }
            }
        }
        History::read(csv.as_bytes(), &ReadOptions::default())
            .unwrap()
            .0
    }

    fn train_params() -> TrainParams {
        TrainParams {
            dim: 16,
            measure: MeasureParams {
                threads: 2,
                ..MeasureParams::default()
            },
            ..TrainParams::default()
        }
    }

    #[test]
    fn the_validation_split_is_the_longer_of_its_days_and_its_share_but_at_most_half() {
        let h = history();
        let all = 0..h.len();
        let params = TuneParams::default();
        let start = validation_start(&h, &all, &params);
        let last = h.time(h.len() - 1);
        assert!(h.time(start) >= last - 28 * 86_400, "28 days");
        assert_eq!(start, h.split_at(last - 28 * 86_400), "28 days beat 10 %");
        let share = TuneParams {
            validation_days: 1.0,
            ..params.clone()
        };
        assert_eq!(validation_start(&h, &all, &share), h.len() - h.len() / 10);
        let long = TuneParams {
            validation_days: 1000.0,
            ..params
        };
        assert_eq!(
            validation_start(&h, &all, &long),
            h.len() / 2,
            "at most half"
        );
    }

    #[test]
    fn the_tuned_blend_never_scores_below_the_collaborative_signal_it_could_serve_alone() {
        let h = history();
        let config = PipelineConfig::default();
        let params = TuneParams {
            threads: 2,
            adjacency: true,
            ..TuneParams::default()
        };
        let content = train::Content::new(&h, 0..h.len(), &train_params());
        let (refit, tuning) = tune(
            &h,
            0..h.len(),
            &train_params(),
            &config,
            &params,
            Some(&content),
            &Progress::hidden(),
        )
        .unwrap();
        assert!(
            tuning.validation.cases >= MIN_CASES,
            "{:?}",
            tuning.validation
        );
        assert!(tuning.validation.cases_with_purchased > 0);
        assert_eq!(Some(refit.measure.lambda), tuning.lambda);
        assert_eq!(Some(refit.measure.adjacency), tuning.adjacency);
        // Each basket lists a pair's two items on adjacent lines: line order is tried, and
        // the other weights only when it scored best.
        let tried = |weight| {
            tuning
                .estimator_trials
                .iter()
                .any(|t| t.adjacency == weight)
        };
        assert!(tried(ADJACENCY[1]), "{:?}", tuning.estimator_trials);
        assert_eq!(
            tried(ADJACENCY[0]),
            tuning.adjacency != Some(0.0),
            "{:?}",
            tuning.estimator_trials
        );
        assert!(tuning
            .estimator_trials
            .iter()
            .any(|t| Some(t.lambda) == tuning.lambda));
        assert_eq!(tuning.touchpoints.len(), 3);
        for t in &tuning.touchpoints {
            let collaborative = t.cart_only.collaborative.unwrap();
            assert!(
                t.single_signal || t.cart_only.tuned >= collaborative,
                "{t:?}"
            );
            assert!(t.cart_only.tuned >= collaborative - 1e-12, "{t:?}");
            // Misleading titles: the content weight the search keeps cannot be large.
            assert!(t.chosen.content <= 0.2, "{t:?}");
        }
        let product = &tuning.touchpoints[2];
        assert!(
            !product.chosen.demote_substitutes,
            "a product page shows alternatives"
        );
        // The stored table layers onto the defaults as a valid configuration.
        let mut layered = serde_json::to_value(&config).unwrap();
        for (name, values) in tuning.pipeline.as_object().unwrap() {
            match values.as_object() {
                Some(values) => {
                    for (key, value) in values {
                        layered[name][key] = value.clone();
                    }
                }
                None => layered[name] = values.clone(),
            }
        }
        let served: PipelineConfig = serde_json::from_value(layered).unwrap();
        assert_eq!(served.checkout, tuning.touchpoints[0].chosen);
        // The purchases' shape is chosen and stored with the blend when checkout reads them.
        if served.checkout.purchased > 0.0 {
            assert_eq!(Some(served.purchased_half_life), tuning.purchased_half_life);
            assert_eq!(Some(served.restock_scaling), tuning.restock_scaling);
        } else {
            assert_eq!(tuning.purchased_half_life, None);
            assert_eq!(served.purchased_half_life, config.purchased_half_life);
        }
        served.validate().unwrap();
    }

    #[test]
    fn protective_settings_together_cost_at_most_the_tolerance() {
        // θ below 1 and substitute demotion each cost 0.8 % of the best blend's score; the
        // more diverse θ cost more.
        let score = |theta_cost: f64| {
            move |c: TouchpointConfig| {
                let theta = match c.theta {
                    t if t >= 1.0 => 0.0,
                    t if t >= 0.95 => theta_cost,
                    _ => 0.05,
                };
                1.0 - theta - if c.demote_substitutes { 0.008 } else { 0.0 }
            }
        };
        let best = TouchpointConfig {
            theta: 1.0,
            demote_substitutes: false,
            ..PipelineConfig::default().checkout
        };
        let floor = 1.0 - 0.01;
        // Each alone is within 1 %, both together are not: θ, chosen first, is kept.
        let chosen = protect(best, true, floor, score(0.008));
        assert_eq!((chosen.theta, chosen.demote_substitutes), (0.95, false));
        // A θ that costs little leaves room for demotion.
        let chosen = protect(best, true, floor, score(0.001));
        assert_eq!((chosen.theta, chosen.demote_substitutes), (0.95, true));
        // A product page never demotes.
        let chosen = protect(best, false, floor, score(0.001));
        assert!(!chosen.demote_substitutes);
        // Nothing within the floor: the best blend stays.
        let chosen = protect(best, true, 1.0, score(0.008));
        assert_eq!((chosen.theta, chosen.demote_substitutes), (1.0, false));
    }

    #[test]
    fn a_weight_grows_past_its_grid_while_the_grids_end_wins() {
        // The score peaks at a popularity weight of 1.
        let score = |c: TouchpointConfig| -(f64::from(c.popularity) - 1.0).abs();
        let at = |popularity| TouchpointConfig {
            popularity,
            ..PipelineConfig::default().checkout
        };
        let largest = POPULARITY[POPULARITY.len() - 1];
        // 0.3 → 0.6 → 1.2 (better than 0.6), → 2.4 is worse: 1.2 is kept.
        let chosen = grow_past(at(largest), largest, Weight::Popularity, score);
        assert_eq!(chosen.popularity, 1.2);
        // Not at the grid's end: nothing is tried.
        let chosen = grow_past(at(0.1), largest, Weight::Popularity, |_| {
            unreachable!("no step is scored")
        });
        assert_eq!(chosen.popularity, 0.1);
        // Never past the largest weight searched.
        let content = TouchpointConfig {
            content: 0.8,
            ..at(0.0)
        };
        let chosen = grow_past(content, 0.8, Weight::Content, |c| f64::from(c.content));
        assert_eq!(chosen.content, MAX_BLEND_WEIGHT);
        let purchased = TouchpointConfig {
            purchased: 5.0,
            ..at(0.0)
        };
        let chosen = grow_past(purchased, 5.0, Weight::Purchased, |c| {
            f64::from(c.purchased)
        });
        assert_eq!(chosen.purchased, MAX_PURCHASED);
    }

    /// How the shoppers of [`shoppers_history`] buy.
    #[derive(Clone, Copy)]
    enum Shoppers {
        /// Each shopper's favourite (from a shared pool) changes every six days and is in
        /// each of their baskets beside two fillers from another: what they bought lately
        /// predicts the hidden favourite, while their older favourites were bought more
        /// often.
        ReBuyLately,
        /// Each shopper restocks two random items of a range of eight from a shared pool,
        /// beside one item bought once ever: how often they bought an item predicts it,
        /// while what they bought lately is mostly one-offs.
        RestockRange,
        /// Each shopper has twelve pairs of their own from a shared pool of thirty items and
        /// restocks two of them per basket, each pair on adjacent lines, beside one item
        /// bought once ever: in the shopper's own history a cart item's partner was bought
        /// beside it, while co-purchase spreads each item over thirty-odd pairs.
        RestockPairs,
    }

    /// Sixty days of baskets from forty shoppers, each shopping every other day, under
    /// `kind`. The items a shopper buys again have too few baskets or too many owners for
    /// co-purchase to find them, so the shape of earlier purchases decides.
    fn shoppers_history(kind: Shoppers) -> History {
        let mut csv = String::from(
            "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n",
        );
        // A fixed linear congruential sequence: the same history on every run.
        let mut state = 12_345u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) % n
        };
        let ranges: Vec<Vec<u64>> = (0..40)
            .map(|_| {
                let mut range = Vec::new();
                while range.len() < 8 {
                    let item = next(100);
                    if !range.contains(&item) {
                        range.push(item);
                    }
                }
                range
            })
            .collect();
        // Drawn from a sequence of their own, so the other kinds' histories stay as they were.
        let mut pair_state = 54_321u64;
        let mut pair_item = || {
            pair_state = pair_state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (pair_state >> 33) % 30
        };
        let pairs: Vec<Vec<(u64, u64)>> = (0..40)
            .map(|_| (0..12).map(|_| (pair_item(), pair_item())).collect())
            .collect();
        let mut invoice = 0u64;
        for day in 0..60u64 {
            for slot in 0..20u64 {
                invoice += 1;
                let customer = slot * 2 + day % 2;
                let date = format!(
                    "2011-{:02}-{:02} {:02}:{:02}:00",
                    1 + day / 28,
                    1 + day % 28,
                    8 + slot / 2,
                    slot % 2 * 30
                );
                let mut codes: Vec<String> = Vec::new();
                match kind {
                    Shoppers::ReBuyLately => {
                        let favourite = (customer * 7 + day / 6 * 13) % 150;
                        codes.push(format!("{}", 10_000 + favourite));
                        while codes.len() < 3 {
                            let filler = format!("{}", 90_000 + next(60));
                            if !codes.contains(&filler) {
                                codes.push(filler);
                            }
                        }
                    }
                    Shoppers::RestockRange => {
                        let range = &ranges[customer as usize];
                        while codes.len() < 2 {
                            let item = format!("{}", 20_000 + range[next(8) as usize]);
                            if !codes.contains(&item) {
                                codes.push(item);
                            }
                        }
                        codes.push(format!("{}", 30_000 + invoice));
                    }
                    Shoppers::RestockPairs => {
                        let own = &pairs[customer as usize];
                        let first = next(12) as usize;
                        let second = (first + 1 + next(11) as usize) % 12;
                        for (a, b) in [own[first], own[second]] {
                            for item in [a, b] {
                                let code = format!("{}", 20_000 + item);
                                if !codes.contains(&code) {
                                    codes.push(code);
                                }
                            }
                        }
                        codes.push(format!("{}", 30_000 + invoice));
                    }
                }
                for code in codes {
                    csv.push_str(&format!(
                        "{invoice},{code},THING {code},1,{date},1.0,{}.0,UK\n",
                        12_000 + customer
                    ));
                }
            }
        }
        History::read(csv.as_bytes(), &ReadOptions::default())
            .unwrap()
            .0
    }

    #[test]
    fn the_purchases_shape_follows_how_the_shops_shoppers_buy_again() {
        // Each search starts from the other end of the range, so only a search that moves
        // passes.
        let shape = |kind, configured_half_life| {
            let h = shoppers_history(kind);
            let config = PipelineConfig {
                purchased_half_life: configured_half_life,
                ..PipelineConfig::default()
            };
            let params = TuneParams {
                threads: 2,
                ..TuneParams::default()
            };
            let (_, tuning) = tune(
                &h,
                0..h.len(),
                &train_params(),
                &config,
                &params,
                None,
                &Progress::hidden(),
            )
            .unwrap();
            (
                tuning.purchased_half_life,
                tuning.restock_scaling,
                tuning.purchased_beside_cart,
            )
        };
        let lately = shape(Shoppers::ReBuyLately, 1000.0);
        let range = shape(Shoppers::RestockRange, 10.0);
        assert!(lately.0.is_some_and(|h| h <= 30.0), "{lately:?}");
        // About ninety purchases per shopper: from a half-life of 100 on, their counts decide.
        assert!(range.0.is_some_and(|h| h >= 100.0), "{range:?}");
        let pairs = shape(Shoppers::RestockPairs, 300.0);
        assert!(pairs.2.is_some_and(|w| w > 0.0), "{pairs:?}");
    }

    #[test]
    fn a_short_history_is_not_tuned() {
        let h = history();
        let short = 0..h.len() / 6;
        let result = tune(
            &h,
            short,
            &train_params(),
            &PipelineConfig::default(),
            &TuneParams::default(),
            None,
            &Progress::hidden(),
        );
        assert!(
            matches!(result, Err(TuneError::TooLittleHistory(_))),
            "{result:?}"
        );
    }
}
