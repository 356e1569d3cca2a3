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
//!
//! `G` may also weigh line order: `G = C + αA`, with `C` the shared baskets and `A` the
//! baskets in which the two items are on adjacent lines, `A`'s diagonal each item's adjacent
//! pairs (the row's sum). That is the Gram matrix of the baskets plus α times that of their
//! adjacent line pairs (each pair a two-item pseudo-basket), so it stays positive
//! semi-definite and EASE applies unchanged. (Each item's baskets on the diagonal instead
//! would not be: an ordered set bought whole gives `A` a negative direction, and the solves
//! would fail.)

use pulp::{Simd, WithSimd};

use super::counts::Counts;
use super::neighbours::keep_strongest;
use super::parallel::{join_all, rows_in_parallel, worker_threads};
use super::{MeasureError, MeasureParams, MeasureStats, Neighbours, Ridge};
use crate::pipeline::vector::dispatch;

/// Most items whose shared counts [`PopularCounts`] holds densely (64 MiB at this size, twice
/// that with the adjacent-line counts).
const POPULAR_ITEMS: usize = 4096;

/// The shared counts among the eligible items in most baskets, as a dense table: items'
/// neighbourhoods are mostly popular items, so most lookups of a neighbourhood's Gram matrix
/// take one load instead of a search through a long row.
struct PopularCounts {
    position: Vec<u32>,
    size: usize,
    cells: Cells,
}

/// The dense table's cells: shared baskets alone, or with the adjacent-line count beside each
/// (one load fetches both, where two tables would cost two cache misses per pair).
enum Cells {
    Shared(Vec<u32>),
    WithAdjacent(Vec<[u32; 2]>),
}

impl PopularCounts {
    fn new(counts: &Counts, with_adjacency: bool) -> Self {
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
        let mut cells = if with_adjacency {
            Cells::WithAdjacent(vec![[0; 2]; size * size])
        } else {
            Cells::Shared(vec![0; size * size])
        };
        for (p, &i) in popular.iter().enumerate() {
            let (others, row_shared) = counts.row(i);
            let row_adjacent = counts.adjacent_row(i);
            for (k, (&o, &c)) in others.iter().zip(row_shared).enumerate() {
                let q = position[o as usize];
                if q != u32::MAX {
                    let at = p * size + q as usize;
                    match &mut cells {
                        Cells::Shared(shared) => shared[at] = c,
                        Cells::WithAdjacent(both) => both[at] = [c, row_adjacent[k]],
                    }
                }
            }
        }
        Self {
            position,
            size,
            cells,
        }
    }

    /// Whether `a` is in the table.
    #[inline]
    fn holds(&self, a: u32) -> bool {
        self.position[a as usize] != u32::MAX
    }

    /// The baskets `a` and `b` share and, of them, those with the two on adjacent lines (0
    /// when the table holds no adjacency), when both are in the table.
    #[inline]
    fn get(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        let (p, q) = (self.position[a as usize], self.position[b as usize]);
        (p != u32::MAX && q != u32::MAX).then(|| {
            let at = p as usize * self.size + q as usize;
            match &self.cells {
                Cells::Shared(shared) => (shared[at], 0),
                Cells::WithAdjacent(both) => (both[at][0], both[at][1]),
            }
        })
    }
}

/// The pair an off-diagonal estimate of `P` belongs to; its values, one per λ, are kept apart
/// (see [`SolvedPart`]).
#[derive(Debug, Clone, Copy)]
struct Pair {
    low: u32,
    high: u32,
    shared: u32,
}

/// One thread's solves: each solved item with its diagonal entries of `P` (one per λ, in
/// `diagonals`), and the pairs it estimated with their values (one per λ, in `inverses`).
#[derive(Default)]
struct SolvedPart {
    items: Vec<u32>,
    diagonals: Vec<f64>,
    pairs: Vec<Pair>,
    inverses: Vec<f64>,
}

/// Buffers one thread reuses for every item's solve.
#[derive(Default)]
struct Solver {
    /// The neighbourhood: (item, shared baskets, of them on adjacent lines).
    selected: Vec<(u32, u32, u32)>,
    /// Position of each item in `selected`, `u32::MAX` for the others (reset after each
    /// solve, so it costs one pass over the catalogue per thread, not per item).
    position: Vec<u32>,
    gram: Vec<f64>,
    /// `A` over the neighbourhood, like `gram` (filled only when a fit weighs it).
    gram_adjacent: Vec<f64>,
    matrix: Vec<f64>,
    rhs: Vec<f64>,
}

impl Solver {
    /// Solves item `j` over its neighbourhood once per ridge setting and appends its diagonal
    /// entries and off-diagonal estimates of `P` to `out`. The neighbourhood and its Gram
    /// matrices are built once for all settings.
    #[allow(clippy::too_many_arguments)]
    fn solve(
        &mut self,
        counts: &Counts,
        popular: &PopularCounts,
        degrees: &[u32],
        j: u32,
        ridges: &[Ridge],
        size: usize,
        out: &mut SolvedPart,
    ) {
        let baskets = f64::from(counts.item_baskets[j as usize]);
        let degree = f64::from(degrees.get(j as usize).copied().unwrap_or(0));
        let own = |r: &Ridge| baskets + r.adjacency * degree;
        let (others, shared) = counts.row(j);
        let adjacent = counts.adjacent_row(j);
        self.selected.clear();
        self.selected.extend(
            others
                .iter()
                .zip(shared)
                .zip(adjacent)
                .map(|((&o, &c), &a)| (o, c, a)),
        );
        out.items.push(j);
        if self.selected.is_empty() {
            out.diagonals
                .extend(ridges.iter().map(|r| 1.0 / (own(r) + r.lambda)));
            return;
        }
        if self.selected.len() > size {
            self.selected
                .select_nth_unstable_by(size - 1, |a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            self.selected.truncate(size);
            self.selected.sort_unstable_by_key(|&(item, _, _)| item);
        }
        let m = self.selected.len();
        let with_adjacency = ridges.iter().any(|r| r.adjacency > 0.0);
        self.fill_gram(counts, popular, with_adjacency.then_some(degrees));
        let first = out.inverses.len();
        out.pairs
            .extend(self.selected.iter().map(|&(c, shared, _)| Pair {
                low: j.min(c),
                high: j.max(c),
                shared,
            }));
        out.inverses.resize(first + m * ridges.len(), 0.0);
        for (l, ridge) in ridges.iter().enumerate() {
            let (lambda, alpha) = (ridge.lambda, ridge.adjacency);
            self.matrix.clear();
            if alpha > 0.0 {
                self.matrix.extend(
                    self.gram
                        .iter()
                        .zip(&self.gram_adjacent)
                        .map(|(c, a)| c + alpha * a),
                );
            } else {
                self.matrix.extend_from_slice(&self.gram);
            }
            for p in 0..m {
                self.matrix[p * m + p] += lambda;
            }
            let target = |&(_, c, a): &(u32, u32, u32)| f64::from(c) + alpha * f64::from(a);
            self.rhs.clear();
            self.rhs.extend(self.selected.iter().map(target));
            let own = own(ridge);
            if !factor_and_solve(&mut self.matrix, m, &mut self.rhs) {
                // G_SS is a Gram matrix and λ > 0, so this only happens through rounding: the
                // item is then treated as unrelated to its neighbourhood.
                out.diagonals.push(1.0 / (own + lambda));
                continue;
            }
            let explained: f64 = self
                .selected
                .iter()
                .zip(&self.rhs)
                .map(|(s, &beta)| target(s) * beta)
                .sum();
            let diagonal = 1.0 / (own + lambda - explained).max(lambda);
            out.diagonals.push(diagonal);
            // Values are stored pair-major: pair k of this solve, setting l at k × ridges + l.
            for (k, &beta) in self.rhs.iter().enumerate() {
                out.inverses[first + k * ridges.len() + l] = -beta * diagonal;
            }
        }
    }

    /// The lower triangle of `C_SS` over the selected items into `gram` (row-major `m × m`),
    /// and of `A_SS` into `gram_adjacent` when given the items' adjacent-pair `degrees`.
    fn fill_gram(&mut self, counts: &Counts, popular: &PopularCounts, degrees: Option<&[u32]>) {
        let with_adjacency = degrees.is_some();
        let m = self.selected.len();
        self.gram.clear();
        self.gram.resize(m * m, 0.0);
        self.gram_adjacent.clear();
        if with_adjacency {
            self.gram_adjacent.resize(m * m, 0.0);
        }
        if self.position.len() != counts.items() {
            self.position = vec![u32::MAX; counts.items()];
        }
        for (p, &(a, _, _)) in self.selected.iter().enumerate() {
            self.position[a as usize] = p as u32;
            self.gram[p * m + p] = f64::from(counts.item_baskets[a as usize]);
            if let Some(degrees) = degrees {
                self.gram_adjacent[p * m + p] = f64::from(degrees[a as usize]);
            }
        }
        // Pairs of two popular items come from the dense table; every other pair holds an item
        // outside it, whose row is short enough to scan whole (one pass over a row beats a
        // binary search per pair, which mispredicts every step).
        for (p, &(a, _, _)) in self.selected.iter().enumerate() {
            if popular.holds(a) {
                for (q, &(b, _, _)) in self.selected[..p].iter().enumerate() {
                    if let Some((shared, adjacent)) = popular.get(a, b) {
                        self.gram[p * m + q] = f64::from(shared);
                        if with_adjacency {
                            self.gram_adjacent[p * m + q] = f64::from(adjacent);
                        }
                    }
                }
            } else {
                let (row, row_shared) = counts.row(a);
                let row_adjacent = counts.adjacent_row(a);
                for (k, (&b, &shared)) in row.iter().zip(row_shared).enumerate() {
                    let q = self.position[b as usize] as usize;
                    if q != u32::MAX as usize {
                        let (high, low) = if q < p { (p, q) } else { (q, p) };
                        self.gram[high * m + low] = f64::from(shared);
                        if with_adjacency {
                            self.gram_adjacent[high * m + low] = f64::from(row_adjacent[k]);
                        }
                    }
                }
            }
        }
        for &(a, _, _) in &self.selected {
            self.position[a as usize] = u32::MAX;
        }
    }
}

/// Factors `a` (row-major `m × m`, lower triangle read) by [`cholesky_with`] and solves
/// `a x = b` in place of `b`, in one kernel compiled for the CPU's widest SIMD (see
/// [`crate::pipeline::vector::dispatch`]): these solves are most of the estimator's
/// arithmetic, and a portable build would otherwise run them two lanes wide. False when `a`
/// is not positive definite.
fn factor_and_solve(a: &mut [f64], m: usize, b: &mut [f64]) -> bool {
    struct Kernel<'a>(&'a mut [f64], usize, &'a mut [f64]);
    impl WithSimd for Kernel<'_> {
        type Output = bool;
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) -> bool {
            let Kernel(a, m, b) = self;
            if !cholesky_with(simd, a, m) {
                return false;
            }
            solve_with(simd, a, m, b);
            true
        }
    }
    dispatch(Kernel(a, m, b))
}

/// Cholesky factor `L` (`A = L Lᵀ`) in the lower triangle of the row-major `m × m` matrix
/// `a`; false when `a` is not positive definite.
#[inline(always)]
fn cholesky_with<S: Simd>(simd: S, a: &mut [f64], m: usize) -> bool {
    for j in 0..m {
        let (row_j, below) = a[j * m..].split_at_mut(m);
        let d = row_j[j] - dot_with(simd, &row_j[..j], &row_j[..j]);
        if d.is_nan() || d <= 0.0 {
            return false;
        }
        let d = d.sqrt();
        row_j[j] = d;
        let row_j = &row_j[..j];
        for row_i in below.chunks_exact_mut(m) {
            row_i[j] = (row_i[j] - dot_with(simd, &row_i[..j], row_j)) / d;
        }
    }
    true
}

/// `<a, b>` with four independent accumulators of the kernel's width.
#[inline(always)]
fn dot_with<S: Simd>(simd: S, a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a_head, a_tail) = S::as_simd_f64s(&a[..n]);
    let (b_head, b_tail) = S::as_simd_f64s(&b[..n]);
    let zero = simd.splat_f64s(0.0);
    let mut acc = [zero; 4];
    let (a_blocks, b_blocks) = (a_head.chunks_exact(4), b_head.chunks_exact(4));
    let (a_rest, b_rest) = (a_blocks.remainder(), b_blocks.remainder());
    for (x, y) in a_blocks.zip(b_blocks) {
        for lane in 0..4 {
            acc[lane] = simd.mul_add_e_f64s(x[lane], y[lane], acc[lane]);
        }
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        acc[0] = simd.mul_add_e_f64s(*x, *y, acc[0]);
    }
    let sum = simd.add_f64s(simd.add_f64s(acc[0], acc[1]), simd.add_f64s(acc[2], acc[3]));
    let tail: f64 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    simd.reduce_sum_f64s(sum) + tail
}

/// Solves `L Lᵀ x = b` in place of `b`, with `L` from [`cholesky_with`].
#[inline(always)]
fn solve_with<S: Simd>(simd: S, l: &[f64], m: usize, b: &mut [f64]) {
    for i in 0..m {
        let s = b[i] - dot_with(simd, &l[i * m..i * m + i], &b[..i]);
        b[i] = s / l[i * m + i];
    }
    // Lᵀ x = y by columns of Lᵀ, that is rows of L, so every pass reads memory in order.
    for i in (0..m).rev() {
        b[i] /= l[i * m + i];
        let x = b[i];
        for (bk, lk) in b[..i].iter_mut().zip(&l[i * m..i * m + i]) {
            *bk -= lk * x;
        }
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
    let mut tables = sparse_ease_ridges(counts, groups, params, &[params.ridge()])?;
    tables
        .pop()
        .ok_or_else(|| MeasureError::InvalidParameter("no table was fitted".into()))
}

/// [`sparse_ease`] for each of `ridges` (in their order) in one pass: each item's
/// neighbourhood and Gram matrices are built once and factored once per setting, and the
/// estimates are merged once, so a search over λ and the adjacency weight pays the shared
/// work once.
pub(super) fn sparse_ease_ridges(
    counts: &Counts,
    groups: &[u32],
    params: &MeasureParams,
    ridges: &[Ridge],
) -> Result<Vec<(Neighbours, MeasureStats)>, MeasureError> {
    for ridge in ridges {
        MeasureParams {
            lambda: ridge.lambda,
            adjacency: ridge.adjacency,
            ..params.clone()
        }
        .check_lambda()?;
    }
    if params.neighbourhood == 0 {
        return Err(MeasureError::InvalidParameter(
            "the ease neighbourhood must hold at least 1 item".into(),
        ));
    }
    let width = ridges.len();
    let items = counts.items();
    let threads = worker_threads(params.threads).clamp(1, items.max(1));
    let with_adjacency = ridges.iter().any(|r| r.adjacency > 0.0);
    let popular = PopularCounts::new(counts, with_adjacency);
    // `A`'s diagonal: each item's adjacent pairs (see the module doc).
    let degrees: Vec<u32> = if with_adjacency {
        (0..items as u32)
            .map(|i| counts.adjacent_row(i).iter().sum())
            .collect()
    } else {
        Vec::new()
    };
    let degrees = &degrees;
    let popular = &popular;
    let parts: Vec<SolvedPart> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mine = || (t..items).step_by(threads).map(|j| j as u32);
                    // Exactly what this thread's solves push, so the buffers never move.
                    let pairs: usize = mine()
                        .filter(|&j| counts.eligible(j))
                        .map(|j| counts.row(j).0.len().min(params.neighbourhood))
                        .sum();
                    let mut part = SolvedPart {
                        pairs: Vec::with_capacity(pairs),
                        inverses: Vec::with_capacity(pairs * width),
                        ..SolvedPart::default()
                    };
                    let mut solver = Solver::default();
                    for j in mine().filter(|&j| counts.eligible(j)) {
                        solver.solve(
                            counts,
                            popular,
                            degrees,
                            j,
                            ridges,
                            params.neighbourhood,
                            &mut part,
                        );
                    }
                    part
                })
            })
            .collect();
        join_all(handles)
    });
    let mut diagonals = vec![0.0f64; items * width];
    // Every estimate by (pair, part, position in part): both items of a pair may have
    // estimated it, and their mean is taken.
    let mut order: Vec<(u32, u32, u32, u32)> =
        Vec::with_capacity(parts.iter().map(|p| p.pairs.len()).sum());
    for (t, part) in parts.iter().enumerate() {
        for (k, &j) in part.items.iter().enumerate() {
            diagonals[j as usize * width..(j as usize + 1) * width]
                .copy_from_slice(&part.diagonals[k * width..(k + 1) * width]);
        }
        order.extend(
            part.pairs
                .iter()
                .enumerate()
                .map(|(k, e)| (e.low, e.high, t as u32, k as u32)),
        );
    }
    order.sort_unstable();
    // Merged pairs and their values (pair-major, as in a part).
    let mut merged: Vec<Pair> = Vec::with_capacity(order.len() / 2 + 1);
    let mut values: Vec<f64> = Vec::with_capacity((order.len() / 2 + 1) * width);
    let mut at = 0;
    while at < order.len() {
        let (low, high, _, _) = order[at];
        let mut end = at + 1;
        while end < order.len() && (order[end].0, order[end].1) == (low, high) {
            end += 1;
        }
        let first = &parts[order[at].2 as usize];
        let shared = first.pairs[order[at].3 as usize].shared;
        merged.push(Pair { low, high, shared });
        let base = values.len();
        values.resize(base + width, 0.0);
        for &(_, _, t, k) in &order[at..end] {
            let part = &parts[t as usize];
            let from = k as usize * width;
            for (sum, v) in values[base..]
                .iter_mut()
                .zip(&part.inverses[from..from + width])
            {
                *sum += v;
            }
        }
        let estimates = (end - at) as f64;
        values[base..].iter_mut().for_each(|v| *v /= estimates);
        at = end;
    }
    drop(order);
    drop(parts);
    // Both directions of every pair as rows: (other, merged pair).
    let mut offsets = vec![0usize; items + 1];
    for e in &merged {
        offsets[e.low as usize + 1] += 1;
        offsets[e.high as usize + 1] += 1;
    }
    for i in 0..items {
        offsets[i + 1] += offsets[i];
    }
    let mut fill = offsets.clone();
    let mut row_entries = vec![(0u32, 0u32); offsets[items]];
    for (k, e) in merged.iter().enumerate() {
        for (from, to) in [(e.low, e.high), (e.high, e.low)] {
            row_entries[fill[from as usize]] = (to, k as u32);
            fill[from as usize] += 1;
        }
    }
    let eligible = counts.eligible_items();
    let tables = (0..width)
        .map(|l| {
            let (neighbours, co_occurring, variants) = rows_in_parallel(
                items,
                threads,
                Vec::<(u32, f32, u32)>::new,
                |j, row, part| {
                    let ju = j as usize;
                    row.clear();
                    for &(c, k) in &row_entries[offsets[ju]..offsets[ju + 1]] {
                        part.co_occurring += 1;
                        let shared = merged[k as usize].shared;
                        if shared < params.min_support {
                            continue;
                        }
                        if groups[ju] != u32::MAX && groups[ju] == groups[c as usize] {
                            part.variants_dropped += 1;
                            continue;
                        }
                        let inverse = values[k as usize * width + l];
                        let weight = (-inverse / diagonals[c as usize * width + l]) as f32;
                        if weight != 0.0 && weight.is_finite() {
                            row.push((c, weight, shared));
                        }
                    }
                    keep_strongest(row, params.neighbours);
                    part.push_row(row);
                },
            );
            (
                neighbours,
                MeasureStats {
                    co_occurring_pairs: co_occurring,
                    variant_pairs_dropped: variants,
                    eligible_items: eligible,
                    items_below_min_baskets: items - eligible,
                    ..MeasureStats::default()
                },
            )
        })
        .collect();
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        // A = [[4, 2], [2, 3]], b = [2, 1] -> x = [0.5, 0].
        let mut a = vec![4.0, 0.0, 2.0, 3.0];
        let mut b = vec![2.0, 1.0];
        assert!(factor_and_solve(&mut a, 2, &mut b));
        assert!((b[0] - 0.5).abs() < 1e-12 && b[1].abs() < 1e-12, "{b:?}");
        let mut singular = vec![1.0, 0.0, 1.0, 1.0];
        assert!(!factor_and_solve(&mut singular, 2, &mut [1.0, 1.0]));
    }
}
