//! Item-to-item weights over baskets: the co-purchase table of a model version.
//!
//! Every estimator fills the same table, top-N neighbours per item, so that the pipeline's
//! `collaborative(c) = sum over cart items j of weight[j][c]` works with any of them:
//! - `count`: baskets holding both items;
//! - `cosine`: `c / sqrt(n_i n_j)`; `jaccard`: `c / (n_i + n_j - c)`; `lift`: `c N / (n_i n_j)`;
//! - `llr`: Dunning's G² as in Mahout, kept only for pairs seen more often than chance;
//! - `bm25`: item-item similarity of BM25-weighted item vectors over baskets (as the
//!   `implicit` library's `BM25Recommender`): basket `b` has idf `ln(items / (1 + |b|))`,
//!   item `i` the saturated weight `(k1 + 1) / (k1 ((1 - b) + b n_i / mean n) + 1)`, and the
//!   similarity is the dot product of the weighted vectors;
//! - `ease`: Steck's EASE (WWW 2019), `P = (XᵀX + λI)⁻¹`, `B_ij = -P_ij / P_jj`, diagonal zero,
//!   with a dense Cholesky inverse (faer). A dense inverse needs `8 n²` bytes twice, so only
//!   the `max_dense_items` items in most baskets get a row; the stats say how many;
//! - `sparse-ease` (the default): EASE over every item with at least `min_baskets` baskets,
//!   from one ridge solve per item over its `neighbourhood` most co-occurring items
//!   (`sparse_ease.rs`); time and memory grow with the co-occurrences, not with items².
//!
//! `n_i` is the number of baskets holding item `i`, `c` those holding both, `N` all baskets.
//! Pairs with `c < min_support` are dropped for every estimator, as are pairs of variants of
//! one product (`85099B`/`85099C`: same digit stem, different letters), which are
//! alternatives, not complements. Only positive weights are kept, except by the EASE
//! estimators, which keep the strongest weights of either sign.
//!
//! Co-occurrences are counted row by row with a dense accumulator and an inverted index
//! (item -> baskets), so memory is linear in the history and each thread reuses its buffers;
//! rows are split over threads and the result does not depend on their number.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::privacy::{DpParams, DpReport};

mod baskets;
mod counts;
mod dense_ease;
mod neighbours;
mod parallel;
mod similarity;
mod sparse_ease;
mod variants;

pub use baskets::Baskets;
pub use counts::Counts;
pub use dense_ease::{dense_gram, DenseGram};
pub use neighbours::Neighbours;
pub use parallel::{join_all, worker_threads};
pub use similarity::log_likelihood_ratio;
pub use variants::{variant_groups, variant_stem};

/// How item-to-item weights are estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// Co-occurrence count.
    Count,
    /// Cosine of the basket vectors.
    Cosine,
    /// Jaccard index.
    Jaccard,
    /// Lift.
    Lift,
    /// Log-likelihood ratio (Dunning's G²).
    Llr,
    /// BM25-weighted item-item similarity.
    Bm25,
    /// EASE linear item-item model, dense inverse over the items in most baskets.
    Ease,
    /// EASE over every item with enough baskets, from one local solve per item.
    SparseEase,
}

impl Estimator {
    /// Every estimator, for evaluation.
    pub const ALL: [Estimator; 8] = [
        Estimator::Count,
        Estimator::Cosine,
        Estimator::Jaccard,
        Estimator::Lift,
        Estimator::Llr,
        Estimator::Bm25,
        Estimator::Ease,
        Estimator::SparseEase,
    ];

    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Count => "count",
            Estimator::Cosine => "cosine",
            Estimator::Jaccard => "jaccard",
            Estimator::Lift => "lift",
            Estimator::Llr => "llr",
            Estimator::Bm25 => "bm25",
            Estimator::Ease => "ease",
            Estimator::SparseEase => "sparse-ease",
        }
    }
}

/// Parameters of the co-purchase table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureParams {
    /// The estimator.
    pub estimator: Estimator,
    /// Fewest baskets a pair must share.
    pub min_support: u32,
    /// Fewest baskets an item needs to get co-purchase neighbours (`sparse-ease`) and, under
    /// every estimator, a behavioural diversity embedding.
    #[serde(default = "default_min_baskets")]
    pub min_baskets: u32,
    /// Items each item's EASE solve covers: those sharing most baskets with it
    /// (`sparse-ease`).
    #[serde(default = "default_neighbourhood")]
    pub neighbourhood: usize,
    /// Neighbours kept per item.
    pub neighbours: usize,
    /// EASE L2 regularisation λ.
    pub lambda: f64,
    /// Weight, in the Gram matrix `sparse-ease` solves, of the baskets in which two items
    /// are on adjacent lines, beside the baskets they share (0: line order ignored).
    #[serde(default)]
    pub adjacency: f64,
    /// BM25 term saturation `k1`.
    pub bm25_k1: f64,
    /// BM25 length normalisation `b`.
    pub bm25_b: f64,
    /// Most items EASE inverts densely (the ones in most baskets).
    pub max_dense_items: usize,
    /// Worker threads (0 = available cores).
    pub threads: usize,
    /// Differential privacy of the released counts (EASE only; see [`super::privacy`]).
    #[serde(default)]
    pub dp: Option<DpParams>,
}

impl MeasureParams {
    /// EASE's λ must be a positive number, the adjacency weight a number from 0.
    fn check_lambda(&self) -> Result<(), MeasureError> {
        if !(self.lambda > 0.0 && self.lambda.is_finite()) {
            return Err(MeasureError::InvalidParameter(
                "lambda must be positive".into(),
            ));
        }
        if !(self.adjacency >= 0.0 && self.adjacency.is_finite()) {
            return Err(MeasureError::InvalidParameter(
                "the adjacency weight must be a number from 0".into(),
            ));
        }
        Ok(())
    }

    /// The ridge settings of these parameters.
    pub fn ridge(&self) -> Ridge {
        Ridge {
            lambda: self.lambda,
            adjacency: self.adjacency,
        }
    }
}

/// The settings of one `sparse-ease` fit that a single pass can vary: its Gram matrix is
/// `C + adjacency × A + λI`, with `C` the shared baskets and `A` those on adjacent lines
/// (the diagonal of `A` is each item's baskets).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ridge {
    /// EASE L2 regularisation λ.
    pub lambda: f64,
    /// Weight of adjacent lines.
    pub adjacency: f64,
}

fn default_min_baskets() -> u32 {
    5
}

fn default_neighbourhood() -> usize {
    128
}

impl Default for MeasureParams {
    fn default() -> Self {
        Self {
            estimator: Estimator::SparseEase,
            min_support: 1,
            min_baskets: default_min_baskets(),
            neighbourhood: default_neighbourhood(),
            neighbours: 100,
            lambda: 50.0,
            adjacency: 0.0,
            bm25_k1: 1.2,
            bm25_b: 0.75,
            max_dense_items: 6000,
            threads: 0,
            dp: None,
        }
    }
}

/// Why a co-purchase table could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// A parameter is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The regularised Gram matrix is not positive definite (λ too small for the data).
    #[error("the ease gram matrix is not positive definite; raise lambda")]
    NotPositiveDefinite,
}

/// What computing a table found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MeasureStats {
    /// The estimator.
    pub estimator: String,
    /// Baskets used.
    pub baskets: usize,
    /// Distinct ordered pairs that share at least one basket.
    pub co_occurring_pairs: u64,
    /// Pairs dropped because they are variants of one product.
    pub variant_pairs_dropped: u64,
    /// Entries kept in the table.
    pub pairs_kept: usize,
    /// Items with at least one neighbour.
    pub items_with_neighbours: usize,
    /// Items EASE inverted densely (0 for other estimators).
    pub dense_items: usize,
    /// Items left out of the dense inverse because the catalogue is too big.
    pub items_beyond_dense_limit: usize,
    /// Items with at least `min_baskets` baskets (`sparse-ease`; 0 for other estimators).
    pub eligible_items: usize,
    /// Items with fewer than `min_baskets` baskets, left without co-purchase neighbours.
    pub items_below_min_baskets: usize,
    /// The differentially private release, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dp: Option<DpReport>,
    /// The released (noisy) basket count of every item, under differential privacy.
    #[serde(skip)]
    pub released_item_counts: Option<Vec<f32>>,
    /// Seconds spent counting co-occurrences (`sparse-ease` from baskets; the rest of
    /// `seconds` is the estimator itself).
    pub counting_seconds: f64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Computes the co-purchase table of `baskets` with `params`; `variant_groups` comes from
/// [`variant_groups`] over the item ids.
pub fn co_purchase(
    baskets: &Baskets,
    variant_groups: &[u32],
    params: &MeasureParams,
) -> Result<(Neighbours, MeasureStats), MeasureError> {
    co_purchase_keeping_counts(baskets, variant_groups, params)
        .map(|(neighbours, stats, _)| (neighbours, stats))
}

/// [`co_purchase`], also handing back the co-occurrence counts when the estimator counted them
/// (`sparse-ease`), so that training reads them again instead of counting twice.
pub fn co_purchase_keeping_counts(
    baskets: &Baskets,
    variant_groups: &[u32],
    params: &MeasureParams,
) -> Result<(Neighbours, MeasureStats, Option<Counts>), MeasureError> {
    let started = Instant::now();
    if params.neighbours == 0 {
        return Err(MeasureError::InvalidParameter(
            "neighbours must be at least 1".into(),
        ));
    }
    if variant_groups.len() != baskets.items() {
        return Err(MeasureError::InvalidParameter(
            "one variant group per item is needed".into(),
        ));
    }
    if params.dp.is_some() && params.estimator != Estimator::Ease {
        return Err(MeasureError::InvalidParameter(
            "differential privacy needs the ease estimator".into(),
        ));
    }
    if let Some(dp) = &params.dp {
        dp.validate().map_err(MeasureError::InvalidParameter)?;
    }
    if params.adjacency != 0.0 && params.estimator != Estimator::SparseEase {
        return Err(MeasureError::InvalidParameter(
            "only sparse-ease weighs adjacent lines (set the adjacency weight to 0)".into(),
        ));
    }
    let (neighbours, stats, counts) = match params.estimator {
        Estimator::Ease => {
            let (neighbours, stats) = dense_ease::ease(baskets, variant_groups, params)?;
            (neighbours, stats, None)
        }
        Estimator::SparseEase => {
            let counting = Instant::now();
            let counts = Counts::from_baskets(baskets, params.min_baskets, params.threads);
            let counting = counting.elapsed().as_secs_f64();
            let (neighbours, stats) = sparse_ease::sparse_ease(&counts, variant_groups, params)?;
            let stats = MeasureStats {
                counting_seconds: counting,
                ..stats
            };
            (neighbours, stats, Some(counts))
        }
        estimator => {
            let (neighbours, stats) =
                similarity::sparse(baskets, variant_groups, params, estimator)?;
            (neighbours, stats, None)
        }
    };
    let (neighbours, stats) = finish_stats(neighbours, stats, params, baskets.len(), started);
    Ok((neighbours, stats, counts))
}

/// Computes the co-purchase table from co-occurrence counts alone, for the estimators that
/// need nothing else (`sparse-ease`); the others read the baskets themselves.
pub fn co_purchase_from_counts(
    counts: &Counts,
    variant_groups: &[u32],
    params: &MeasureParams,
) -> Result<(Neighbours, MeasureStats), MeasureError> {
    let mut tables = co_purchase_for_ridges(counts, variant_groups, params, &[params.ridge()])?;
    tables
        .pop()
        .ok_or_else(|| MeasureError::InvalidParameter("no table was fitted".into()))
}

/// [`co_purchase_from_counts`] for each of `ridges` in place of `params`' own, in their
/// order, from one pass that shares the work every setting needs (see
/// [`sparse_ease::sparse_ease_ridges`]).
pub fn co_purchase_for_ridges(
    counts: &Counts,
    variant_groups: &[u32],
    params: &MeasureParams,
    ridges: &[Ridge],
) -> Result<Vec<(Neighbours, MeasureStats)>, MeasureError> {
    if ridges.is_empty() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    if params.estimator != Estimator::SparseEase || params.dp.is_some() {
        return Err(MeasureError::InvalidParameter(format!(
            "{} needs the baskets, not only their counts",
            params.estimator.name()
        )));
    }
    if params.neighbours == 0 {
        return Err(MeasureError::InvalidParameter(
            "neighbours must be at least 1".into(),
        ));
    }
    if variant_groups.len() != counts.items() {
        return Err(MeasureError::InvalidParameter(
            "one variant group per item is needed".into(),
        ));
    }
    let tables = sparse_ease::sparse_ease_ridges(counts, variant_groups, params, ridges)?;
    Ok(tables
        .into_iter()
        .zip(ridges)
        .map(|((neighbours, stats), ridge)| {
            let params = MeasureParams {
                lambda: ridge.lambda,
                adjacency: ridge.adjacency,
                ..params.clone()
            };
            finish_stats(neighbours, stats, &params, counts.baskets, started)
        })
        .collect())
}

/// Fills the figures every estimator shares.
fn finish_stats(
    neighbours: Neighbours,
    mut stats: MeasureStats,
    params: &MeasureParams,
    baskets: usize,
    started: Instant,
) -> (Neighbours, MeasureStats) {
    stats.estimator = params.estimator.name().to_string();
    stats.baskets = baskets;
    stats.pairs_kept = neighbours.len();
    stats.items_with_neighbours = (0..neighbours.items() as u32)
        .filter(|&i| !neighbours.row(i).0.is_empty())
        .count();
    stats.seconds = started.elapsed().as_secs_f64();
    (neighbours, stats)
}

#[cfg(test)]
mod tests;
