//! Pairwise co-occurrence measures: count, cosine, Jaccard, lift, LLR and BM25, each a
//! function of the pair's shared baskets and the items' basket counts.

use super::neighbours::keep_best;
use super::parallel::{rows_in_parallel, worker_threads};
use super::{Baskets, Estimator, MeasureError, MeasureParams, MeasureStats, Neighbours};

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

/// Buffers one thread reuses for every row.
struct Accumulator {
    count: Vec<u32>,
    weight: Vec<f64>,
    touched: Vec<u32>,
    row: Vec<(u32, f32, u32)>,
}

pub(super) fn sparse(
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
            Estimator::Ease | Estimator::SparseEase => 0.0,
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
