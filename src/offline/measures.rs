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
//!   the `max_dense_items` items in most baskets get a row; the stats say how many.
//!
//! `n_i` is the number of baskets holding item `i`, `c` those holding both, `N` all baskets.
//! Pairs with `c < min_support` are dropped for every estimator, as are pairs of variants of
//! one product (`85099B`/`85099C`: same digit stem, different letters), which are
//! alternatives, not complements. Only positive weights are kept.
//!
//! Co-occurrences are counted row by row with a dense accumulator and an inverted index
//! (item -> baskets), so memory is linear in the history and each thread reuses its buffers;
//! rows are split over threads and the result does not depend on their number.

use std::time::Instant;

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

use super::privacy::{DpParams, DpReport};
use foldhash::{HashMap, HashMapExt};
use serde::{Deserialize, Serialize};

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
    /// EASE linear item-item model.
    Ease,
}

impl Estimator {
    /// Every estimator, for evaluation.
    pub const ALL: [Estimator; 7] = [
        Estimator::Count,
        Estimator::Cosine,
        Estimator::Jaccard,
        Estimator::Lift,
        Estimator::Llr,
        Estimator::Bm25,
        Estimator::Ease,
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
    /// Neighbours kept per item.
    pub neighbours: usize,
    /// EASE L2 regularisation λ.
    pub lambda: f64,
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

impl Default for MeasureParams {
    fn default() -> Self {
        Self {
            estimator: Estimator::Ease,
            min_support: 1,
            neighbours: 100,
            lambda: 50.0,
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

/// Baskets of dense item numbers `0..items`, each with distinct items.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baskets {
    items: usize,
    offsets: Vec<usize>,
    entries: Vec<u32>,
}

impl Baskets {
    /// No baskets over `items` items.
    pub fn new(items: usize) -> Self {
        Self {
            items,
            offsets: vec![0],
            entries: Vec::new(),
        }
    }

    /// Adds a basket of distinct item numbers below `items`.
    pub fn push(&mut self, basket: &[u32]) {
        debug_assert!(basket.iter().all(|&i| (i as usize) < self.items));
        self.entries.extend_from_slice(basket);
        self.offsets.push(self.entries.len());
    }

    /// Number of baskets.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there are no baskets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of items.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Basket `b`.
    #[inline]
    pub fn basket(&self, b: usize) -> &[u32] {
        &self.entries[self.offsets[b]..self.offsets[b + 1]]
    }

    /// Baskets holding each item.
    pub fn item_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.items];
        for &i in &self.entries {
            counts[i as usize] += 1;
        }
        counts
    }

    /// The inverted index: for each item, the baskets holding it (CSR offsets and baskets).
    fn inverted(&self, counts: &[u32]) -> (Vec<usize>, Vec<u32>) {
        let mut offsets = Vec::with_capacity(self.items + 1);
        offsets.push(0);
        for &c in counts {
            offsets.push(offsets.last().copied().unwrap_or(0) + c as usize);
        }
        let mut fill = offsets.clone();
        let mut baskets = vec![0u32; self.entries.len()];
        for b in 0..self.len() {
            for &i in self.basket(b) {
                baskets[fill[i as usize]] = b as u32;
                fill[i as usize] += 1;
            }
        }
        (offsets, baskets)
    }
}

/// Top-N neighbours per item as CSR rows, best first (ties by item number).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Neighbours {
    offsets: Vec<usize>,
    others: Vec<u32>,
    scores: Vec<f32>,
    support: Vec<u32>,
}

impl Neighbours {
    /// No neighbours for `items` items.
    pub fn empty(items: usize) -> Self {
        Self {
            offsets: vec![0; items + 1],
            ..Self::default()
        }
    }

    /// Builds rows from `(item, other, score, support)` entries grouped by item in order.
    pub fn from_rows(
        items: usize,
        rows: impl IntoIterator<Item = (u32, Vec<(u32, f32, u32)>)>,
    ) -> Self {
        let mut n = Self::empty(items);
        n.offsets.clear();
        n.offsets.push(0);
        for (item, mut row) in rows {
            while n.offsets.len() <= item as usize {
                n.offsets.push(n.others.len());
            }
            sort_best_first(&mut row);
            for (other, score, support) in row {
                n.others.push(other);
                n.scores.push(score);
                n.support.push(support);
            }
        }
        while n.offsets.len() <= items {
            n.offsets.push(n.others.len());
        }
        n
    }

    /// Number of items (rows).
    pub fn items(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Number of stored (item, neighbour) entries.
    pub fn len(&self) -> usize {
        self.others.len()
    }

    /// Whether no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.others.is_empty()
    }

    /// Neighbours of `item`, their scores and supports (baskets shared).
    #[inline]
    pub fn row(&self, item: u32) -> (&[u32], &[f32], &[u32]) {
        let range = self.offsets[item as usize]..self.offsets[item as usize + 1];
        (
            &self.others[range.clone()],
            &self.scores[range.clone()],
            &self.support[range],
        )
    }
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
    /// The differentially private release, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dp: Option<DpReport>,
    /// The released (noisy) basket count of every item, under differential privacy.
    #[serde(skip)]
    pub released_item_counts: Option<Vec<f32>>,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Dunning's log-likelihood ratio G² of a 2×2 contingency table, as in Mahout.
pub fn log_likelihood_ratio(k11: u64, k12: u64, k21: u64, k22: u64) -> f64 {
    fn x_log_x(x: u64) -> f64 {
        if x == 0 {
            0.0
        } else {
            let x = x as f64;
            x * x.ln()
        }
    }
    fn entropy(counts: &[u64]) -> f64 {
        x_log_x(counts.iter().sum()) - counts.iter().map(|&c| x_log_x(c)).sum::<f64>()
    }
    let row = entropy(&[k11 + k12, k21 + k22]);
    let column = entropy(&[k11 + k21, k12 + k22]);
    let matrix = entropy(&[k11, k12, k21, k22]);
    // Rounding can make a zero ratio slightly negative.
    (2.0 * (row + column - matrix)).max(0.0)
}

/// The variant group of each item id: ids made of the same digits followed by different
/// letters (`85099B`, `85099C`, `85099`) share a group; `u32::MAX` means none.
pub fn variant_groups<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
    let mut stems: HashMap<&'a str, u32> = HashMap::with_capacity(4096);
    ids.into_iter()
        .map(|id| match variant_stem(id) {
            Some(stem) => {
                let next = stems.len() as u32;
                *stems.entry(stem).or_insert(next)
            }
            None => u32::MAX,
        })
        .collect()
}

/// The digit stem of a stock code with optional trailing letters (`85099B` -> `85099`).
pub fn variant_stem(id: &str) -> Option<&str> {
    let digits = id.bytes().take_while(u8::is_ascii_digit).count();
    (digits >= 3 && id.bytes().skip(digits).all(|b| b.is_ascii_alphabetic())).then(|| &id[..digits])
}

fn sort_best_first(row: &mut [(u32, f32, u32)]) {
    row.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// Keeps the `n` best entries of `row`, sorted best first.
fn keep_best(row: &mut Vec<(u32, f32, u32)>, n: usize) {
    let cmp = |a: &(u32, f32, u32), b: &(u32, f32, u32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if row.len() > n && n > 0 {
        row.select_nth_unstable_by(n - 1, cmp);
    }
    row.truncate(n);
    row.sort_unstable_by(cmp);
}

/// Keeps the `n` entries of largest magnitude (strong negative weights included), then orders
/// them best first.
fn keep_strongest(row: &mut Vec<(u32, f32, u32)>, n: usize) {
    let by_magnitude = |a: &(u32, f32, u32), b: &(u32, f32, u32)| {
        b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0))
    };
    if row.len() > n && n > 0 {
        row.select_nth_unstable_by(n - 1, by_magnitude);
    }
    row.truncate(n);
    row.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// The results of scoped worker threads, in order; a worker's panic resumes in the caller.
pub fn join_all<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, T>>) -> Vec<T> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .collect()
}

/// Worker threads for `requested` (0 = the available cores).
pub fn worker_threads(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// One thread's share of rows (items `t`, `t + T`, `t + 2T`, ...).
#[derive(Default)]
struct RowsPart {
    lengths: Vec<usize>,
    others: Vec<u32>,
    scores: Vec<f32>,
    support: Vec<u32>,
    co_occurring: u64,
    variants_dropped: u64,
}

impl RowsPart {
    /// Appends one item's kept `(neighbour, score, support)` entries.
    fn push_row(&mut self, row: &[(u32, f32, u32)]) {
        for &(j, s, c) in row {
            self.others.push(j);
            self.scores.push(s);
            self.support.push(c);
        }
    }
}

/// Runs `row(item, part)` for every item over `threads` threads and joins the rows.
fn rows_in_parallel<S>(
    items: usize,
    threads: usize,
    make_state: impl Fn() -> S + Sync,
    row: impl Fn(u32, &mut S, &mut RowsPart) + Sync,
) -> (Neighbours, u64, u64) {
    let threads = threads.clamp(1, items.max(1));
    let parts: Vec<RowsPart> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (row, make_state) = (&row, &make_state);
                scope.spawn(move || {
                    let mut state = make_state();
                    let mut part = RowsPart::default();
                    for item in (t..items).step_by(threads) {
                        let before = part.others.len();
                        row(item as u32, &mut state, &mut part);
                        part.lengths.push(part.others.len() - before);
                    }
                    part
                })
            })
            .collect();
        join_all(handles)
    });
    let total: usize = parts.iter().map(|p| p.others.len()).sum();
    let mut n = Neighbours {
        offsets: Vec::with_capacity(items + 1),
        others: Vec::with_capacity(total),
        scores: Vec::with_capacity(total),
        support: Vec::with_capacity(total),
    };
    n.offsets.push(0);
    let mut cursor = vec![(0usize, 0usize); parts.len()];
    for item in 0..items {
        let t = item % parts.len();
        let (row_index, start) = cursor[t];
        let len = parts[t].lengths[row_index];
        let p = &parts[t];
        n.others.extend_from_slice(&p.others[start..start + len]);
        n.scores.extend_from_slice(&p.scores[start..start + len]);
        n.support.extend_from_slice(&p.support[start..start + len]);
        n.offsets.push(n.others.len());
        cursor[t] = (row_index + 1, start + len);
    }
    let co_occurring = parts.iter().map(|p| p.co_occurring).sum();
    let variants = parts.iter().map(|p| p.variants_dropped).sum();
    (n, co_occurring, variants)
}

/// Buffers one thread reuses for every row.
struct Accumulator {
    count: Vec<u32>,
    weight: Vec<f64>,
    touched: Vec<u32>,
    row: Vec<(u32, f32, u32)>,
}

/// Computes the co-purchase table of `baskets` with `params`; `variant_groups` comes from
/// [`variant_groups`] over the item ids.
pub fn co_purchase(
    baskets: &Baskets,
    variant_groups: &[u32],
    params: &MeasureParams,
) -> Result<(Neighbours, MeasureStats), MeasureError> {
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
    let (neighbours, mut stats) = match params.estimator {
        Estimator::Ease => ease(baskets, variant_groups, params)?,
        estimator => sparse(baskets, variant_groups, params, estimator)?,
    };
    stats.estimator = params.estimator.name().to_string();
    stats.baskets = baskets.len();
    stats.pairs_kept = neighbours.len();
    stats.items_with_neighbours = (0..neighbours.items() as u32)
        .filter(|&i| !neighbours.row(i).0.is_empty())
        .count();
    stats.seconds = started.elapsed().as_secs_f64();
    Ok((neighbours, stats))
}

fn sparse(
    baskets: &Baskets,
    groups: &[u32],
    params: &MeasureParams,
    estimator: Estimator,
) -> Result<(Neighbours, MeasureStats), MeasureError> {
    let items = baskets.items();
    let counts = baskets.item_counts();
    let (index_offsets, index) = baskets.inverted(&counts);
    let total = baskets.len() as f64;
    if estimator == Estimator::Bm25
        && !(params.bm25_k1 >= 0.0 && (0.0..=1.0).contains(&params.bm25_b))
    {
        return Err(MeasureError::InvalidParameter(
            "bm25 needs k1 >= 0 and b in [0, 1]".into(),
        ));
    }
    // BM25: squared idf per basket and saturated weight per item.
    let (basket_weight, item_weight): (Vec<f64>, Vec<f64>) = if estimator == Estimator::Bm25 {
        let ln_items = (items.max(1) as f64).ln();
        let w = (0..baskets.len())
            .map(|b| {
                let idf = (ln_items - (1.0 + baskets.basket(b).len() as f64).ln()).max(0.0);
                idf * idf
            })
            .collect();
        let mean = counts.iter().map(|&c| f64::from(c)).sum::<f64>() / items.max(1) as f64;
        let (k1, b) = (params.bm25_k1, params.bm25_b);
        let f = counts
            .iter()
            .map(|&c| {
                let norm = (1.0 - b) + b * f64::from(c) / mean.max(f64::MIN_POSITIVE);
                (k1 + 1.0) / (k1 * norm + 1.0)
            })
            .collect();
        (w, f)
    } else {
        (Vec::new(), Vec::new())
    };
    let score = |i: usize, j: usize, c: u32, weight: f64| -> f64 {
        let (ni, nj, c) = (f64::from(counts[i]), f64::from(counts[j]), f64::from(c));
        match estimator {
            Estimator::Count => c,
            Estimator::Cosine => c / (ni * nj).sqrt(),
            Estimator::Jaccard => c / (ni + nj - c),
            Estimator::Lift => c * total / (ni * nj),
            Estimator::Llr => {
                if c * total <= ni * nj {
                    0.0 // seen no more often than chance: not a complement
                } else {
                    let (k11, ni, nj, n) = (c as u64, ni as u64, nj as u64, total as u64);
                    log_likelihood_ratio(k11, ni - k11, nj - k11, n + k11 - ni - nj)
                }
            }
            Estimator::Bm25 => weight * item_weight[i] * item_weight[j],
            Estimator::Ease => 0.0,
        }
    };
    let bm25 = estimator == Estimator::Bm25;
    let (neighbours, co_occurring, variants) = rows_in_parallel(
        items,
        worker_threads(params.threads),
        || Accumulator {
            count: vec![0; items],
            weight: if bm25 { vec![0.0; items] } else { Vec::new() },
            touched: Vec::with_capacity(1024),
            row: Vec::with_capacity(1024),
        },
        |i, acc, part| {
            let iu = i as usize;
            for &b in &index[index_offsets[iu]..index_offsets[iu + 1]] {
                let w = if bm25 { basket_weight[b as usize] } else { 0.0 };
                for &j in baskets.basket(b as usize) {
                    let ju = j as usize;
                    if acc.count[ju] == 0 {
                        acc.touched.push(j);
                    }
                    acc.count[ju] += 1;
                    if bm25 {
                        acc.weight[ju] += w;
                    }
                }
            }
            acc.row.clear();
            for &j in &acc.touched {
                let ju = j as usize;
                let c = std::mem::take(&mut acc.count[ju]);
                let w = if bm25 {
                    std::mem::take(&mut acc.weight[ju])
                } else {
                    0.0
                };
                if ju == iu {
                    continue;
                }
                part.co_occurring += 1;
                if c < params.min_support {
                    continue;
                }
                if groups[iu] != u32::MAX && groups[iu] == groups[ju] {
                    part.variants_dropped += 1;
                    continue;
                }
                let s = score(iu, ju, c, w) as f32;
                if s > 0.0 && s.is_finite() {
                    acc.row.push((j, s, c));
                }
            }
            acc.touched.clear();
            keep_best(&mut acc.row, params.neighbours);
            part.push_row(&acc.row);
        },
    );
    Ok((
        neighbours,
        MeasureStats {
            co_occurring_pairs: co_occurring,
            variant_pairs_dropped: variants,
            ..MeasureStats::default()
        },
    ))
}

/// The Gram matrix `XᵀX` of the baskets (co-occurrence counts, basket counts on the
/// diagonal) over the items in most baskets, at most `max_items` of them.
pub struct DenseGram {
    /// The items of the matrix, in item order (matrix row `p` is item `items[p]`).
    pub items: Vec<u32>,
    /// Row of each item (`u32::MAX` when left out).
    pub position: Vec<u32>,
    /// The `items.len()` square matrix.
    pub gram: Mat<f64>,
    /// Items that occur in some basket but were left out for `max_items`.
    pub left_out: usize,
}

/// Counts [`DenseGram`] from `baskets`. With `by_data` false (differential privacy) the
/// matrix takes every item of the universe in item order, whatever the baskets hold, so the
/// choice itself reveals nothing about them.
pub fn dense_gram(baskets: &Baskets, max_items: usize, by_data: bool) -> DenseGram {
    let items = baskets.items();
    let counts = baskets.item_counts();
    let mut dense: Vec<u32> = (0..items as u32)
        .filter(|&i| !by_data || counts[i as usize] > 0)
        .collect();
    if by_data {
        dense
            .sort_unstable_by(|&a, &b| counts[b as usize].cmp(&counts[a as usize]).then(a.cmp(&b)));
    }
    let left_out = dense.len().saturating_sub(max_items);
    dense.truncate(max_items);
    dense.sort_unstable();
    let m = dense.len();
    let mut position = vec![u32::MAX; items];
    for (p, &i) in dense.iter().enumerate() {
        position[i as usize] = p as u32;
    }
    let mut gram = Mat::<f64>::zeros(m, m);
    let mut positions: Vec<usize> = Vec::with_capacity(256);
    for b in 0..baskets.len() {
        positions.clear();
        positions.extend(
            baskets
                .basket(b)
                .iter()
                .map(|&i| position[i as usize])
                .filter(|&p| p != u32::MAX)
                .map(|p| p as usize),
        );
        for &a in &positions {
            let column = gram.col_as_slice_mut(a);
            for &p in &positions {
                column[p] += 1.0;
            }
        }
    }
    DenseGram {
        items: dense,
        position,
        gram,
        left_out,
    }
}

fn ease(
    baskets: &Baskets,
    groups: &[u32],
    params: &MeasureParams,
) -> Result<(Neighbours, MeasureStats), MeasureError> {
    if !(params.lambda > 0.0 && params.lambda.is_finite()) {
        return Err(MeasureError::InvalidParameter(
            "lambda must be positive".into(),
        ));
    }
    let items = baskets.items();
    let DenseGram {
        items: dense,
        position,
        mut gram,
        left_out: beyond,
    } = dense_gram(baskets, params.max_dense_items, params.dp.is_none());
    let m = dense.len();
    // Under differential privacy the counts are released once, noisy; all that follows only
    // reads the released matrix.
    let dp = params
        .dp
        .as_ref()
        .map(|p| super::privacy::release_gram(&mut gram, p));
    let released_item_counts = dp.is_some().then(|| {
        let mut counts = vec![0f32; items];
        for (p, &i) in dense.iter().enumerate() {
            counts[i as usize] = gram.col_as_slice(p)[p] as f32;
        }
        counts
    });
    let support = |a: usize, b: usize, gram: &Mat<f64>| gram.col_as_slice(a)[b].round() as u32;
    // Noise can leave the released matrix indefinite: more regularisation until it inverts.
    let mut lambda = params.lambda;
    let inverse = loop {
        let mut regularised = gram.clone();
        for a in 0..m {
            regularised.col_as_slice_mut(a)[a] += lambda;
        }
        match regularised.llt(Side::Lower) {
            Ok(factor) => break factor.inverse(),
            Err(_) if dp.is_some() && lambda < params.lambda * 1e6 => lambda *= 2.0,
            Err(_) => return Err(MeasureError::NotPositiveDefinite),
        }
    };
    let diagonal: Vec<f64> = (0..m).map(|a| inverse.col_as_slice(a)[a]).collect();

    let (neighbours, co_occurring, variants) = rows_in_parallel(
        items,
        worker_threads(params.threads),
        || Vec::<(u32, f32, u32)>::with_capacity(m),
        |i, row, part| {
            let Some(a) = position.get(i as usize).copied().filter(|&p| p != u32::MAX) else {
                return;
            };
            let a = a as usize;
            row.clear();
            // Row a of B is column a of P (P is symmetric), each scaled by -1 / P_bb.
            let column = inverse.col_as_slice(a);
            for (b, &p) in column.iter().enumerate() {
                if b == a {
                    continue;
                }
                let c = support(a, b, &gram);
                if c > 0 {
                    part.co_occurring += 1;
                }
                if c < params.min_support {
                    continue;
                }
                let (ia, ib) = (dense[a] as usize, dense[b] as usize);
                if groups[ia] != u32::MAX && groups[ia] == groups[ib] {
                    part.variants_dropped += 1;
                    continue;
                }
                // Negative weights are kept: EASE scores a cart by summing its rows, and an
                // item that the rest of the cart argues against must lose points (keeping only
                // positive weights gave HitRate@10 0.3012 instead of 0.3149 on the Online Retail
                // evaluation).
                let weight = (-p / diagonal[b]) as f32;
                if weight != 0.0 && weight.is_finite() {
                    row.push((dense[b], weight, c));
                }
            }
            keep_strongest(row, params.neighbours);
            part.push_row(row);
        },
    );
    Ok((
        neighbours,
        MeasureStats {
            co_occurring_pairs: co_occurring,
            variant_pairs_dropped: variants,
            dense_items: m,
            items_beyond_dense_limit: beyond,
            dp,
            released_item_counts,
            ..MeasureStats::default()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baskets(items: usize, list: &[&[u32]]) -> Baskets {
        let mut b = Baskets::new(items);
        for basket in list {
            b.push(basket);
        }
        b
    }

    fn params(estimator: Estimator) -> MeasureParams {
        MeasureParams {
            estimator,
            threads: 2,
            ..MeasureParams::default()
        }
    }

    fn table(b: &Baskets, p: &MeasureParams) -> Neighbours {
        co_purchase(b, &vec![u32::MAX; b.items()], p).unwrap().0
    }

    fn score(n: &Neighbours, i: u32, j: u32) -> Option<f32> {
        let (others, scores, _) = n.row(i);
        others.iter().position(|&o| o == j).map(|p| scores[p])
    }

    #[test]
    fn llr_matches_the_published_test_vectors() {
        for (k, expected) in [
            ((110, 2442, 111, 29114), 270.72),
            ((29, 13, 123, 31612), 263.90),
            ((9, 12, 429, 31327), 48.94),
        ] {
            let got = log_likelihood_ratio(k.0, k.1, k.2, k.3);
            assert!((got - expected).abs() < 0.01, "{k:?}: {got} != {expected}");
        }
        assert!((log_likelihood_ratio(1, 0, 0, 1) - 2.772589).abs() < 1e-5);
        assert_eq!(log_likelihood_ratio(10, 0, 0, 0), 0.0);
    }

    /// Items 0..4; 0 and 1 always together, 2 with 0 once, 3 everywhere.
    fn small() -> Baskets {
        baskets(4, &[&[0, 1, 3], &[0, 1, 3], &[0, 1, 2, 3], &[2, 3], &[3]])
    }

    #[test]
    fn count_cosine_jaccard_and_lift_follow_their_formulas() {
        let b = small();
        // n = [3, 3, 2, 5], N = 5; c01 = 3, c02 = 1, c23 = 2, c03 = 3.
        let count = table(&b, &params(Estimator::Count));
        assert_eq!(score(&count, 0, 1), Some(3.0));
        assert_eq!(score(&count, 0, 2), Some(1.0));
        assert_eq!(count.row(0).0, &[1, 3, 2], "best first, ties by item");
        assert_eq!(count.row(0).2, &[3, 3, 1], "support is the shared baskets");
        let cosine = table(&b, &params(Estimator::Cosine));
        assert!((score(&cosine, 0, 2).unwrap() - 1.0 / 6f32.sqrt()).abs() < 1e-6);
        assert!((score(&cosine, 0, 1).unwrap() - 1.0).abs() < 1e-6);
        let jaccard = table(&b, &params(Estimator::Jaccard));
        assert!((score(&jaccard, 2, 3).unwrap() - 2.0 / 5.0).abs() < 1e-6);
        assert!((score(&jaccard, 0, 2).unwrap() - 1.0 / 4.0).abs() < 1e-6);
        let lift = table(&b, &params(Estimator::Lift));
        assert!((score(&lift, 0, 1).unwrap() - 5.0 / 3.0).abs() < 1e-6);
        assert!((score(&lift, 0, 3).unwrap() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn llr_keeps_only_pairs_seen_more_often_than_chance() {
        let b = small();
        let llr = table(&b, &params(Estimator::Llr));
        let expected = log_likelihood_ratio(3, 0, 0, 2) as f32;
        assert!((score(&llr, 0, 1).unwrap() - expected).abs() < 1e-5);
        assert_eq!(
            score(&llr, 0, 2),
            None,
            "1 shared basket is fewer than the 1.2 expected"
        );
        assert_eq!(score(&llr, 0, 3), None, "3 everywhere: independent");
    }

    #[test]
    fn bm25_weights_shared_baskets_by_idf_and_items_by_saturation() {
        // The baskets of `small` in a catalogue of 20 items (idf needs baskets smaller than it).
        let b = baskets(20, &[&[0, 1, 3], &[0, 1, 3], &[0, 1, 2, 3], &[2, 3], &[3]]);
        let p = MeasureParams {
            bm25_k1: 1.2,
            bm25_b: 0.75,
            ..params(Estimator::Bm25)
        };
        let got = table(&b, &p);
        let idf2 = |size: f64| ((20f64).ln() - (1.0 + size).ln()).powi(2);
        let mean = (3.0 + 3.0 + 2.0 + 5.0) / 20.0;
        let f = |n: f64| 2.2 / (1.2 * (0.25 + 0.75 * n / mean) + 1.0);
        let expected = (2.0 * idf2(3.0) + idf2(4.0)) * f(3.0) * f(3.0);
        assert!((f64::from(score(&got, 0, 1).unwrap()) - expected).abs() < 1e-5 * expected);
        let expected = idf2(4.0) * f(3.0) * f(2.0);
        assert!((f64::from(score(&got, 0, 2).unwrap()) - expected).abs() < 1e-5 * expected);
    }

    #[test]
    fn ease_matches_a_hand_computed_inverse() {
        // X (4 baskets × 3 items): [1,1,0],[1,1,0],[0,1,1],[1,0,1]; λ = 1.
        let b = baskets(3, &[&[0, 1], &[0, 1], &[1, 2], &[0, 2]]);
        // G + λI = [[4,2,1],[2,4,1],[1,1,3]]; its inverse, by cofactors / det 34:
        let det = 32.0;
        let p = [
            [11.0 / det, -5.0 / det, -2.0 / det],
            [-5.0 / det, 11.0 / det, -2.0 / det],
            [-2.0 / det, -2.0 / det, 12.0 / det],
        ];
        let weight = |i: usize, j: usize| -p[i][j] / p[j][j];
        let got = table(
            &b,
            &MeasureParams {
                lambda: 1.0,
                ..params(Estimator::Ease)
            },
        );
        assert!((f64::from(score(&got, 0, 1).unwrap()) - weight(0, 1)).abs() < 1e-6);
        assert!((f64::from(score(&got, 2, 0).unwrap()) - weight(2, 0)).abs() < 1e-6);
        assert!((f64::from(score(&got, 0, 2).unwrap()) - weight(0, 2)).abs() < 1e-6);
        assert!((weight(0, 1) - 5.0 / 11.0).abs() < 1e-12);
        assert!((weight(0, 2) - 2.0 / 12.0).abs() < 1e-12);
    }

    #[test]
    fn ease_rows_keep_strong_negative_weights_after_the_positive_ones() {
        // 0 and 1 each go with 2 but never with each other: alternatives, so B_01 < 0.
        let b = baskets(3, &[&[0, 2], &[1, 2], &[0, 2], &[1, 2], &[0, 2], &[1, 2]]);
        let p = MeasureParams {
            lambda: 1.0,
            min_support: 0,
            ..params(Estimator::Ease)
        };
        let (n, _) = co_purchase(&b, &[u32::MAX; 3], &p).unwrap();
        let (others, scores, _) = n.row(0);
        assert_eq!(others, [2, 1]);
        assert!(scores[0] > 0.0 && scores[1] < 0.0, "{scores:?}");
    }

    #[test]
    fn ease_inverts_only_the_items_in_most_baskets_when_limited() {
        let b = small();
        let p = MeasureParams {
            max_dense_items: 2,
            ..params(Estimator::Ease)
        };
        let (got, stats) = co_purchase(&b, &[u32::MAX; 4], &p).unwrap();
        assert_eq!((stats.dense_items, stats.items_beyond_dense_limit), (2, 2));
        assert!(
            got.row(1).0.is_empty() && got.row(2).0.is_empty(),
            "3 and then 0 are densest"
        );
        assert!(matches!(
            co_purchase(&b, &[u32::MAX; 4], &MeasureParams { lambda: 0.0, ..p }),
            Err(MeasureError::InvalidParameter(_))
        ));
    }

    #[test]
    fn min_support_and_top_n_bound_the_rows() {
        let b = small();
        let p = MeasureParams {
            min_support: 2,
            neighbours: 1,
            ..params(Estimator::Count)
        };
        let got = table(&b, &p);
        assert_eq!(got.row(0).0, &[1]);
        assert_eq!(got.row(2).0, &[3], "2 shares only one basket with 0");
    }

    #[test]
    fn variants_of_one_product_are_never_each_others_neighbours() {
        let ids = ["85099B", "85099C", "22386", "85099", "DCGS01", "DCGS02"];
        let groups = variant_groups(ids);
        assert_eq!(groups[0], groups[1]);
        assert_eq!(groups[0], groups[3]);
        assert_ne!(groups[0], groups[2]);
        assert_eq!((groups[4], groups[5]), (u32::MAX, u32::MAX));
        let b = baskets(6, &[&[0, 1, 2, 3, 4, 5], &[0, 1, 2, 3, 4, 5]]);
        for estimator in Estimator::ALL {
            let (got, stats) = co_purchase(&b, &groups, &params(estimator)).unwrap();
            assert_eq!(
                got.row(0).0.iter().filter(|&&o| o == 1 || o == 3).count(),
                0,
                "{estimator:?}"
            );
            assert!(stats.variant_pairs_dropped >= 6, "{estimator:?}");
        }
        assert_eq!(variant_stem("15056bl"), Some("15056"));
        assert_eq!(variant_stem("POST"), None);
    }

    #[test]
    fn a_private_table_releases_only_pairs_that_clear_the_noise() {
        // 400 baskets of {0, 1}, and one basket of {2, 3}.
        let mut list: Vec<&[u32]> = vec![&[0, 1]; 400];
        list.push(&[2, 3]);
        let b = baskets(4, &list);
        let dp = DpParams {
            epsilon: 5.0,
            delta: 1e-6,
            max_baskets_per_shopper: 1,
            max_items_per_basket: 2,
            threshold_sigmas: 5.0,
            seed: 3,
        };
        let p = MeasureParams {
            dp: Some(dp),
            ..params(Estimator::Ease)
        };
        let (n, stats) = co_purchase(&b, &[u32::MAX; 4], &p).unwrap();
        let report = stats.dp.unwrap();
        assert_eq!(report.pairs_kept, 1, "{report:?}");
        assert!(score(&n, 0, 1).is_some_and(|s| s > 0.0));
        assert!(score(&n, 2, 3).is_none());
        let released = stats.released_item_counts.unwrap();
        assert!((released[0] - 400.0).abs() < 10.0 * report.sigma as f32);
        let bm25 = MeasureParams {
            estimator: Estimator::Bm25,
            ..p
        };
        assert!(co_purchase(&b, &[u32::MAX; 4], &bm25).is_err());
    }

    #[test]
    fn the_table_does_not_depend_on_the_number_of_threads() {
        let b = baskets(
            6,
            &[&[0, 1, 2], &[1, 2, 3], &[3, 4, 5], &[0, 5], &[0, 1, 5]],
        );
        for estimator in Estimator::ALL {
            let one = table(
                &b,
                &MeasureParams {
                    threads: 1,
                    ..params(estimator)
                },
            );
            let three = table(
                &b,
                &MeasureParams {
                    threads: 3,
                    ..params(estimator)
                },
            );
            assert_eq!(one, three, "{estimator:?}");
        }
    }
}
