//! Behavioural item embeddings: a spectral embedding of the co-purchase graph, so items bought
//! in the same kinds of basket lie close together even when their titles share no word.
//!
//! The matrix is the co-occurrence cosine `C_ij = n_ij / sqrt(n_i n_j)` over every item with
//! at least the counts' minimum of baskets, read from the sparse counts, so time and memory
//! grow with the co-occurring pairs rather than with items², as for `sparse-ease`. Its leading
//! eigenvectors come from randomised subspace iteration (Halko, Martinsson and Tropp 2011), and
//! an item's vector is its row of `U sqrt(S)`, L2-normalised. Items with fewer baskets get a
//! zero vector: the DPP then finds them neither like nor unlike any other item (kernel 1/2).

use std::sync::Mutex;

use faer::{Mat, Side};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::estimators::{join_all, worker_threads, Counts};

/// Power iterations of the subspace iteration; the spectrum of co-purchase matrices decays
/// fast enough that a few give the leading directions to plotting accuracy.
const POWER_ITERATIONS: usize = 6;
/// Extra directions iterated beside the `dim` kept, for accuracy of the last ones.
const OVERSAMPLING: usize = 8;
/// Rows of the product a worker takes at a time: small enough that the few items with very
/// long rows do not leave one thread working alone.
const ROWS_PER_TASK: usize = 256;

/// `dim`-dimensional behavioural embeddings of every item of `counts` (row-major, rows
/// L2-normalised, or zero for items without a row), computed on `threads` worker threads (0 =
/// the available cores).
pub fn embed(counts: &Counts, dim: usize, seed: u64, threads: usize) -> Vec<f32> {
    let items = counts.items();
    let mut out = vec![0f32; items * dim];
    let rows: Vec<u32> = (0..items as u32).filter(|&i| counts.eligible(i)).collect();
    let m = rows.len();
    let rank = (dim + OVERSAMPLING).min(m);
    if dim == 0 || rank == 0 {
        return out;
    }
    let cosine = CosineOperator::new(counts, &rows, worker_threads(threads));

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut basis = Mat::<f64>::from_fn(m, rank, |_, _| rng.random_range(-1.0..1.0));
    for _ in 0..POWER_ITERATIONS {
        basis = cosine.times(&basis).qr().compute_thin_Q();
    }
    let projected = basis.transpose() * cosine.times(&basis);
    let Ok(eigen) = projected.self_adjoint_eigen(Side::Lower) else {
        return out;
    };
    // Eigenvalues come in nondecreasing order: the leading ones are at the end.
    let vectors = &basis * eigen.U();
    let values = eigen.S().column_vector();
    for (p, &item) in rows.iter().enumerate() {
        // An item that shares no basket with another one is alike to none: its true row is
        // zero, and normalising what is left of the random start would point it anywhere.
        if counts.row(item).0.is_empty() {
            continue;
        }
        let row = &mut out[item as usize * dim..(item as usize + 1) * dim];
        // With fewer items than dimensions, the dimensions past the rank stay zero.
        for (d, value) in row.iter_mut().enumerate().take(rank) {
            let column = rank - 1 - d;
            *value = (vectors[(p, column)] * values[column].max(0.0).sqrt()) as f32;
        }
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    out
}

/// The co-occurrence cosine matrix over the items with a row, applied without forming it.
struct CosineOperator<'a> {
    counts: &'a Counts,
    /// The items in matrix order.
    rows: &'a [u32],
    /// Each item's place in `rows` (`u32::MAX` for items without a row).
    position: Vec<u32>,
    /// `1 / sqrt(n_i)` per place.
    scale: Vec<f64>,
    threads: usize,
}

impl<'a> CosineOperator<'a> {
    fn new(counts: &'a Counts, rows: &'a [u32], threads: usize) -> Self {
        let mut position = vec![u32::MAX; counts.items()];
        for (p, &item) in rows.iter().enumerate() {
            position[item as usize] = p as u32;
        }
        let scale = rows
            .iter()
            .map(|&i| 1.0 / f64::from(counts.item_baskets[i as usize].max(1)).sqrt())
            .collect();
        Self {
            counts,
            rows,
            position,
            scale,
            threads,
        }
    }

    /// `C x`, with `x` one column per direction.
    fn times(&self, x: &Mat<f64>) -> Mat<f64> {
        let (m, r) = (x.nrows(), x.ncols());
        // Row-major copies, so a neighbour's directions are read from one cache line or two.
        let mut input = vec![0f64; m * r];
        for c in 0..r {
            for (p, &v) in x.col_as_slice(c).iter().enumerate() {
                input[p * r + c] = v;
            }
        }
        let mut output = vec![0f64; m * r];
        let tasks = Mutex::new(output.chunks_mut(ROWS_PER_TASK * r).enumerate());
        std::thread::scope(|scope| {
            let workers = (0..self.threads)
                .map(|_| {
                    scope.spawn(|| loop {
                        let next = tasks.lock().map(|mut t| t.next()).unwrap_or(None);
                        let Some((task, chunk)) = next else { break };
                        let first = task * ROWS_PER_TASK;
                        for (k, out_row) in chunk.chunks_exact_mut(r).enumerate() {
                            self.row_product(first + k, &input, r, out_row);
                        }
                    })
                })
                .collect();
            join_all(workers);
        });
        Mat::from_fn(m, r, |p, c| output[p * r + c])
    }

    /// Row `p` of `C x` into `out` (`x` row-major with `r` columns).
    fn row_product(&self, p: usize, x: &[f64], r: usize, out: &mut [f64]) {
        // The diagonal: n_i / sqrt(n_i n_i) = 1.
        out.copy_from_slice(&x[p * r..(p + 1) * r]);
        let (others, shared) = self.counts.row(self.rows[p]);
        for (&o, &n) in others.iter().zip(shared) {
            let q = self.position[o as usize];
            if q == u32::MAX {
                continue;
            }
            let q = q as usize;
            let weight = f64::from(n) * self.scale[p] * self.scale[q];
            for (value, &xv) in out.iter_mut().zip(&x[q * r..(q + 1) * r]) {
                *value += weight * xv;
            }
        }
    }
}

/// Joins text and behavioural embeddings into one `text_dim + behaviour_dim` row per item,
/// weighted so the cosine of two rows is `(1 - w) cos_text + w cos_behaviour` when both parts
/// are present, then re-normalised.
pub fn join(
    items: usize,
    text: &[f32],
    text_dim: usize,
    behaviour: &[f32],
    behaviour_dim: usize,
    behaviour_weight: f32,
) -> Vec<f32> {
    let dim = text_dim + behaviour_dim;
    let (wt, wb) = ((1.0 - behaviour_weight).sqrt(), behaviour_weight.sqrt());
    let mut out = vec![0f32; items * dim];
    for (i, row) in out.chunks_exact_mut(dim.max(1)).enumerate() {
        for (o, v) in row[..text_dim]
            .iter_mut()
            .zip(&text[i * text_dim..(i + 1) * text_dim])
        {
            *o = wt * v;
        }
        for (o, v) in row[text_dim..]
            .iter_mut()
            .zip(&behaviour[i * behaviour_dim..(i + 1) * behaviour_dim])
        {
            *o = wb * v;
        }
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::estimators::Baskets;

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// Two groups of items always bought within their group, never across, item 6 bought
    /// once and item 7 only ever alone.
    fn two_groups() -> Counts {
        let mut baskets = Baskets::new(8);
        for round in 0..30u32 {
            baskets.push(&[0, 1, 2][..(2 + round as usize % 2)]);
            baskets.push(&[3, 4, 5][(round as usize % 2)..]);
        }
        baskets.push(&[0, 6]);
        for _ in 0..3 {
            baskets.push(&[7]);
        }
        Counts::from_baskets(&baskets, 2, 1)
    }

    #[test]
    fn items_bought_together_lie_close_and_the_groups_apart() {
        // Two dimensions: the two leading directions are the two groups.
        let dim = 2;
        let e = embed(&two_groups(), dim, 7, 2);
        let row = |i: usize| &e[i * dim..(i + 1) * dim];
        for i in 0..6 {
            assert!((dot(row(i), row(i)) - 1.0).abs() < 1e-4, "row {i} is unit");
        }
        assert!(dot(row(0), row(1)) > 0.9, "{}", dot(row(0), row(1)));
        assert!(dot(row(3), row(5)) > 0.9);
        assert!(dot(row(0), row(4)).abs() < 0.1, "{}", dot(row(0), row(4)));
    }

    #[test]
    fn items_below_the_minimum_of_baskets_or_bought_alone_get_zero_vectors() {
        let e = embed(&two_groups(), 2, 7, 1);
        assert_eq!(e[12..14], [0.0, 0.0]);
        assert_eq!(e[14..16], [0.0, 0.0], "alike to no other item");
        assert!((0..6).all(|i| e[i * 2..i * 2 + 2] != [0.0, 0.0]));
    }

    #[test]
    fn more_dimensions_than_items_leave_the_extra_dimensions_zero() {
        let dim = 32;
        let e = embed(&two_groups(), dim, 7, 1);
        assert_eq!(e.len(), 8 * dim);
        assert!(e.iter().all(|v| v.is_finite()));
        // Seven items with rows (item 7 alone) span at most seven directions.
        assert!((0..6).all(|i| e[i * dim + 7..(i + 1) * dim].iter().all(|&v| v == 0.0)));
        assert!(dot(&e[..dim], &e[dim..2 * dim]) > 0.9);
    }

    #[test]
    fn the_embedding_is_the_leading_spectrum_of_the_cosine_matrix() {
        // Random baskets over 40 items; the exact decomposition of the dense cosine matrix
        // gives the same cosines between items as the subspace iteration over the counts,
        // whatever the threads.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let items = 40;
        let mut baskets = Baskets::new(items);
        for _ in 0..600 {
            let group = rng.random_range(0..4u32) * 10;
            let mut basket: Vec<u32> = (0..rng.random_range(2..6))
                .map(|_| {
                    if rng.random_range(0..4) == 0 {
                        rng.random_range(0..items as u32)
                    } else {
                        group + rng.random_range(0..10)
                    }
                })
                .collect();
            basket.sort_unstable();
            basket.dedup();
            baskets.push(&basket);
        }
        let counts = Counts::from_baskets(&baskets, 1, 1);
        // One direction per group: past the fourth the spectrum falls off, so the four
        // leading directions are well defined.
        let dim = 4;
        let e = embed(&counts, dim, 11, 1);
        assert_eq!(e, embed(&counts, dim, 11, 3));

        let n = |i: usize| f64::from(counts.item_baskets[i]);
        let cosine = Mat::<f64>::from_fn(items, items, |i, j| {
            let shared = if i == j {
                n(i)
            } else {
                f64::from(counts.shared(i as u32, j as u32))
            };
            shared / (n(i) * n(j)).sqrt()
        });
        let exact = cosine.self_adjoint_eigen(Side::Lower).unwrap();
        let mut reference = vec![0f32; items * dim];
        for i in 0..items {
            let row = &mut reference[i * dim..(i + 1) * dim];
            for (d, value) in row.iter_mut().enumerate() {
                let column = items - 1 - d;
                *value = (exact.U()[(i, column)] * exact.S()[column].max(0.0).sqrt()) as f32;
            }
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            row.iter_mut().for_each(|v| *v /= norm);
        }
        for i in 0..items {
            for j in 0..items {
                let (got, want) = (
                    dot(&e[i * dim..(i + 1) * dim], &e[j * dim..(j + 1) * dim]),
                    dot(
                        &reference[i * dim..(i + 1) * dim],
                        &reference[j * dim..(j + 1) * dim],
                    ),
                );
                // Six power iterations give the cosines to about 0.02 here, where the fifth
                // eigenvalue is half the fourth: as close as the DPP needs.
                assert!(
                    (got - want).abs() < 0.03,
                    "items {i} and {j}: {got} against {want}"
                );
            }
        }
    }

    #[test]
    fn joined_cosine_weighs_the_two_parts() {
        // Item 0 and 1: same text, orthogonal behaviour; weight 0.25 on behaviour.
        let text = [1.0, 0.0, 1.0, 0.0];
        let behaviour = [1.0, 0.0, 0.0, 1.0];
        let joined = join(2, &text, 2, &behaviour, 2, 0.25);
        let cosine = dot(&joined[..4], &joined[4..]);
        assert!((cosine - 0.75).abs() < 1e-6, "{cosine}");
        let text_only = join(2, &[], 0, &behaviour, 2, 1.0);
        assert_eq!(text_only.len(), 4);
    }
}
