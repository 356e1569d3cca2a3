//! EASE over the whole catalogue, from one small ridge solve per item.
//!
//! EASE's weights are `B_jc = −P_jc / P_cc` with `P = (G + λI)⁻¹` and `G` the Gram matrix of
//! the baskets (Steck, WWW 2019). A dense inverse costs `n³` time and `8 n²` bytes, so it
//! cannot cover a large catalogue. Here each item `j` solves only over its neighbourhood
//! `S_j`, the `neighbourhood` items that share most baskets with it: the ridge regression of
//! `j`'s basket column on theirs, `β = (G_SS + λI)⁻¹ G_Sj`, gives `P_jj = 1 / (G_jj + λ −
//! G_jSβ)` and `P_cj = −β_c P_jj` by block inversion (exact when `S_j` holds every item). An
//! entry estimated by the solves of both its items takes their mean, and the weights follow
//! as in EASE. Time grows with items × neighbourhood³ and memory with the co-occurrences,
//! with no `n²` term. Restricting each item's regression to its most related items is the
//! idea of fsSLIM (Ning & Karypis, RecSys 2012), with EASE's closed-form ridge in place of
//! SLIM's elastic net.

use super::counts::Counts;
use super::neighbours::keep_strongest;
use super::parallel::{join_all, rows_in_parallel, worker_threads};
use super::{MeasureError, MeasureParams, MeasureStats, Neighbours};

/// Most items whose shared counts [`PopularCounts`] holds densely (64 MiB at this size).
const POPULAR_ITEMS: usize = 4096;

/// The shared counts among the eligible items in most baskets, as a dense table: items'
/// neighbourhoods are mostly popular items, so most lookups of a neighbourhood's Gram matrix
/// take one load instead of a search through a long row.
struct PopularCounts {
    position: Vec<u32>,
    size: usize,
    shared: Vec<u32>,
}

impl PopularCounts {
    fn new(counts: &Counts) -> Self {
        let mut popular: Vec<u32> = (0..counts.items() as u32)
            .filter(|&i| counts.eligible(i))
            .collect();
        popular.sort_unstable_by(|&a, &b| {
            counts.item_baskets[b as usize]
                .cmp(&counts.item_baskets[a as usize])
                .then(a.cmp(&b))
        });
        popular.truncate(POPULAR_ITEMS);
        let size = popular.len();
        let mut position = vec![u32::MAX; counts.items()];
        for (p, &i) in popular.iter().enumerate() {
            position[i as usize] = p as u32;
        }
        let mut shared = vec![0u32; size * size];
        for (p, &i) in popular.iter().enumerate() {
            let (others, row_shared) = counts.row(i);
            for (&o, &c) in others.iter().zip(row_shared) {
                let q = position[o as usize];
                if q != u32::MAX {
                    shared[p * size + q as usize] = c;
                }
            }
        }
        Self {
            position,
            size,
            shared,
        }
    }

    /// The baskets `a` and `b` share, when both are in the table.
    #[inline]
    fn get(&self, a: u32, b: u32) -> Option<u32> {
        let (p, q) = (self.position[a as usize], self.position[b as usize]);
        (p != u32::MAX && q != u32::MAX).then(|| self.shared[p as usize * self.size + q as usize])
    }
}

/// One estimate of an entry of `P` from the solve of one of its two items.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    low: u32,
    high: u32,
    inverse: f64,
    shared: u32,
}

/// One thread's solves: `(item, diagonal entry of P)` and its off-diagonal estimates.
type SolvedPart = (Vec<(u32, f64)>, Vec<Estimate>);

/// Buffers one thread reuses for every item's solve.
#[derive(Default)]
struct Solver {
    selected: Vec<(u32, u32)>,
    matrix: Vec<f64>,
    rhs: Vec<f64>,
}

impl Solver {
    /// Solves item `j` over its neighbourhood, appends its off-diagonal estimates and returns
    /// its diagonal entry of `P`.
    fn solve(
        &mut self,
        counts: &Counts,
        popular: &PopularCounts,
        j: u32,
        lambda: f64,
        size: usize,
        out: &mut Vec<Estimate>,
    ) -> f64 {
        let own = f64::from(counts.item_baskets[j as usize]) + lambda;
        let (others, shared) = counts.row(j);
        self.selected.clear();
        self.selected
            .extend(others.iter().copied().zip(shared.iter().copied()));
        if self.selected.is_empty() {
            return 1.0 / own;
        }
        if self.selected.len() > size {
            self.selected
                .select_nth_unstable_by(size - 1, |a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            self.selected.truncate(size);
            self.selected.sort_unstable_by_key(|&(item, _)| item);
        }
        let m = self.selected.len();
        self.matrix.clear();
        self.matrix.resize(m * m, 0.0);
        // Lower triangle of G_SS + λI; the rows are sorted, so each search starts where the
        // previous one ended.
        for (p, &(a, _)) in self.selected.iter().enumerate() {
            self.matrix[p * m + p] = f64::from(counts.item_baskets[a as usize]) + lambda;
            let (row, row_shared) = counts.row(a);
            let mut from = 0;
            for (q, &(b, _)) in self.selected[..p].iter().enumerate() {
                if let Some(shared) = popular.get(a, b) {
                    self.matrix[p * m + q] = f64::from(shared);
                    continue;
                }
                let at = from + row[from..].partition_point(|&x| x < b);
                if at < row.len() && row[at] == b {
                    self.matrix[p * m + q] = f64::from(row_shared[at]);
                    from = at + 1;
                } else {
                    from = at;
                }
            }
        }
        self.rhs.clear();
        self.rhs
            .extend(self.selected.iter().map(|&(_, c)| f64::from(c)));
        if !cholesky(&mut self.matrix, m) {
            // G_SS is a Gram matrix and λ > 0, so this only happens through rounding.
            return 1.0 / own;
        }
        solve_in_place(&self.matrix, m, &mut self.rhs);
        let explained: f64 = self
            .selected
            .iter()
            .zip(&self.rhs)
            .map(|(&(_, c), &beta)| f64::from(c) * beta)
            .sum();
        let diagonal = 1.0 / (own - explained).max(lambda);
        for (&(c, shared), &beta) in self.selected.iter().zip(&self.rhs) {
            out.push(Estimate {
                low: j.min(c),
                high: j.max(c),
                inverse: -beta * diagonal,
                shared,
            });
        }
        diagonal
    }
}

/// Cholesky factor `L` (`A = L Lᵀ`) in the lower triangle of the row-major `m × m` matrix
/// `a`; false when `a` is not positive definite.
fn cholesky(a: &mut [f64], m: usize) -> bool {
    for j in 0..m {
        let d = a[j * m + j] - dot(&a[j * m..j * m + j], &a[j * m..j * m + j]);
        if d.is_nan() || d <= 0.0 {
            return false;
        }
        let d = d.sqrt();
        a[j * m + j] = d;
        for i in j + 1..m {
            let s = a[i * m + j] - dot(&a[i * m..i * m + j], &a[j * m..j * m + j]);
            a[i * m + j] = s / d;
        }
    }
    true
}

/// Dot product with four running sums, so the compiler can keep them in one vector register
/// (a single sum fixes the order of additions and stays scalar).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut sums = [0.0f64; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4
        .remainder()
        .iter()
        .zip(b4.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a4.zip(b4) {
        for lane in 0..4 {
            sums[lane] += x[lane] * y[lane];
        }
    }
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + tail
}

/// Solves `L Lᵀ x = b` in place of `b`, with `L` from [`cholesky`].
fn solve_in_place(l: &[f64], m: usize, b: &mut [f64]) {
    for i in 0..m {
        let s = b[i] - dot(&l[i * m..i * m + i], &b[..i]);
        b[i] = s / l[i * m + i];
    }
    for i in (0..m).rev() {
        let mut s = b[i];
        for k in i + 1..m {
            s -= l[k * m + i] * b[k];
        }
        b[i] = s / l[i * m + i];
    }
}

/// EASE weights from `counts` (see the module doc): every eligible item with a co-occurring
/// eligible item gets a row of its strongest `params.neighbours` weights, negative ones
/// included, leaving out pairs below `params.min_support` and variants of one product.
pub(super) fn sparse_ease(
    counts: &Counts,
    groups: &[u32],
    params: &MeasureParams,
) -> Result<(Neighbours, MeasureStats), MeasureError> {
    params.check_lambda()?;
    if params.neighbourhood == 0 {
        return Err(MeasureError::InvalidParameter(
            "the ease neighbourhood must hold at least 1 item".into(),
        ));
    }
    let items = counts.items();
    let threads = worker_threads(params.threads).clamp(1, items.max(1));
    let popular = PopularCounts::new(counts);
    let popular = &popular;
    let parts: Vec<SolvedPart> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut solver = Solver::default();
                    let mut diagonal = Vec::new();
                    let mut estimates = Vec::new();
                    for j in (t..items).step_by(threads) {
                        let j = j as u32;
                        if counts.eligible(j) {
                            let p = solver.solve(
                                counts,
                                popular,
                                j,
                                params.lambda,
                                params.neighbourhood,
                                &mut estimates,
                            );
                            diagonal.push((j, p));
                        }
                    }
                    (diagonal, estimates)
                })
            })
            .collect();
        join_all(handles)
    });
    let mut diagonal = vec![0.0f64; items];
    let mut estimates = Vec::with_capacity(parts.iter().map(|p| p.1.len()).sum());
    for (part_diagonal, part_estimates) in parts {
        for (j, p) in part_diagonal {
            diagonal[j as usize] = p;
        }
        estimates.extend(part_estimates);
    }
    // Both items of a pair may have estimated it: their mean, in a thread-independent order.
    estimates.sort_unstable_by(|a, b| {
        (a.low, a.high)
            .cmp(&(b.low, b.high))
            .then(a.inverse.total_cmp(&b.inverse))
    });
    let mut merged: Vec<Estimate> = Vec::with_capacity(estimates.len());
    let mut seen = 0u32;
    for e in estimates {
        match merged.last_mut() {
            Some(last) if (last.low, last.high) == (e.low, e.high) => {
                last.inverse += e.inverse;
                seen += 1;
            }
            _ => {
                if let Some(last) = merged.last_mut() {
                    last.inverse /= f64::from(seen);
                }
                merged.push(e);
                seen = 1;
            }
        }
    }
    if let Some(last) = merged.last_mut() {
        last.inverse /= f64::from(seen);
    }
    // Both directions of every pair as rows: (other, P entry, shared baskets).
    let mut offsets = vec![0usize; items + 1];
    for e in &merged {
        offsets[e.low as usize + 1] += 1;
        offsets[e.high as usize + 1] += 1;
    }
    for i in 0..items {
        offsets[i + 1] += offsets[i];
    }
    let mut fill = offsets.clone();
    let mut row_entries = vec![(0u32, 0f64, 0u32); offsets[items]];
    for e in merged {
        for (from, to) in [(e.low, e.high), (e.high, e.low)] {
            row_entries[fill[from as usize]] = (to, e.inverse, e.shared);
            fill[from as usize] += 1;
        }
    }
    let (neighbours, co_occurring, variants) = rows_in_parallel(
        items,
        threads,
        Vec::<(u32, f32, u32)>::new,
        |j, row, part| {
            let ju = j as usize;
            row.clear();
            for &(c, inverse, shared) in &row_entries[offsets[ju]..offsets[ju + 1]] {
                part.co_occurring += 1;
                if shared < params.min_support {
                    continue;
                }
                if groups[ju] != u32::MAX && groups[ju] == groups[c as usize] {
                    part.variants_dropped += 1;
                    continue;
                }
                let weight = (-inverse / diagonal[c as usize]) as f32;
                if weight != 0.0 && weight.is_finite() {
                    row.push((c, weight, shared));
                }
            }
            keep_strongest(row, params.neighbours);
            part.push_row(row);
        },
    );
    let eligible = counts.eligible_items();
    Ok((
        neighbours,
        MeasureStats {
            co_occurring_pairs: co_occurring,
            variant_pairs_dropped: variants,
            eligible_items: eligible,
            items_below_min_baskets: items - eligible,
            ..MeasureStats::default()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        // A = [[4, 2], [2, 3]], b = [2, 1] -> x = [0.5, 0].
        let mut a = vec![4.0, 0.0, 2.0, 3.0];
        assert!(cholesky(&mut a, 2));
        let mut b = vec![2.0, 1.0];
        solve_in_place(&a, 2, &mut b);
        assert!((b[0] - 0.5).abs() < 1e-12 && b[1].abs() < 1e-12, "{b:?}");
        let mut singular = vec![1.0, 0.0, 1.0, 1.0];
        assert!(!cholesky(&mut singular, 2));
    }
}
