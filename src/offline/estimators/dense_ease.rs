//! EASE (Steck, WWW 2019) with a dense Cholesky inverse of the Gram matrix over the items in
//! most baskets: exact, but `8 n²` bytes twice, so only for catalogues of a few thousand items.

use super::neighbours::keep_strongest;
use super::parallel::{rows_in_parallel, worker_threads};
use super::{Baskets, MeasureError, MeasureParams, MeasureStats, Neighbours};

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

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

pub(super) fn ease(
    baskets: &Baskets,
    groups: &[u32],
    params: &MeasureParams,
) -> Result<(Neighbours, MeasureStats), MeasureError> {
    params.check_lambda()?;
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
        .map(|p| crate::offline::privacy::release_gram(&mut gram, p));
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
