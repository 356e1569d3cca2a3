//! Behavioural item embeddings: a spectral embedding of the co-purchase graph, so items bought
//! in the same kinds of basket lie close together even when their titles share no word.
//!
//! The matrix is the co-occurrence cosine `C_ij = n_ij / sqrt(n_i n_j)` over the items in most
//! baskets (dense, like EASE); its leading eigenvectors come from randomised subspace
//! iteration (Halko, Martinsson and Tropp 2011), and an item's vector is its row of `U sqrt(S)`,
//! L2-normalised. Items outside the dense set get a zero vector: the DPP then finds them
//! neither like nor unlike any other item (kernel 1/2).

use faer::{Mat, Side};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::estimators::{self, Baskets, DenseGram};

/// Power iterations of the subspace iteration; the spectrum of co-purchase matrices decays
/// fast enough that a few give the leading directions to plotting accuracy.
const POWER_ITERATIONS: usize = 6;
/// Extra directions iterated beside the `dim` kept, for accuracy of the last ones.
const OVERSAMPLING: usize = 8;

/// `dim`-dimensional behavioural embeddings of every item of `baskets` (row-major, rows
/// L2-normalised or zero), over the `max_items` items in most baskets.
pub fn embed(baskets: &Baskets, dim: usize, max_items: usize, seed: u64) -> Vec<f32> {
    if dim == 0 || baskets.items() == 0 {
        return vec![0f32; baskets.items() * dim];
    }
    embed_gram(
        estimators::dense_gram(baskets, max_items, true),
        baskets.items(),
        dim,
        seed,
    )
}

/// The same from a Gram matrix already counted (see [`estimators::Counts::dense_gram`]).
pub fn embed_gram(gram: DenseGram, items: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut out = vec![0f32; items * dim];
    if dim == 0 || items == 0 {
        return out;
    }
    let DenseGram {
        items: dense,
        gram: mut cosine,
        ..
    } = gram;
    let m = dense.len();
    let rank = (dim + OVERSAMPLING).min(m);
    if rank == 0 {
        return out;
    }
    let scale: Vec<f64> = (0..m)
        .map(|a| 1.0 / cosine.col_as_slice(a)[a].max(1.0).sqrt())
        .collect();
    for a in 0..m {
        let column = cosine.col_as_slice_mut(a);
        for (p, value) in column.iter_mut().enumerate() {
            *value *= scale[a] * scale[p];
        }
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut basis = Mat::<f64>::from_fn(m, rank, |_, _| rng.random_range(-1.0..1.0));
    for _ in 0..POWER_ITERATIONS {
        let product = &cosine * &basis;
        basis = product.qr().compute_thin_Q();
    }
    let projected = basis.transpose() * (&cosine * &basis);
    let Ok(eigen) = projected.self_adjoint_eigen(Side::Lower) else {
        return out;
    };
    // Eigenvalues come in nondecreasing order: the leading ones are at the end.
    let vectors = &basis * eigen.U();
    let values = eigen.S().column_vector();
    for (p, &item) in dense.iter().enumerate() {
        let row = &mut out[item as usize * dim..(item as usize + 1) * dim];
        // With fewer dense items than dimensions, the dimensions past the rank stay zero.
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

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// Two groups of items always bought within their group, never across.
    fn two_groups() -> Baskets {
        let mut baskets = Baskets::new(6);
        for round in 0..30u32 {
            baskets.push(&[0, 1, 2][..(2 + round as usize % 2)]);
            baskets.push(&[3, 4, 5][(round as usize % 2)..]);
        }
        baskets
    }

    #[test]
    fn items_bought_together_lie_close_and_the_groups_apart() {
        // Two dimensions: the two leading directions are the two groups.
        let dim = 2;
        let e = embed(&two_groups(), dim, 100, 7);
        let row = |i: usize| &e[i * dim..(i + 1) * dim];
        for i in 0..6 {
            assert!((dot(row(i), row(i)) - 1.0).abs() < 1e-4, "row {i} is unit");
        }
        assert!(dot(row(0), row(1)) > 0.9, "{}", dot(row(0), row(1)));
        assert!(dot(row(3), row(5)) > 0.9);
        assert!(dot(row(0), row(4)).abs() < 0.1, "{}", dot(row(0), row(4)));
    }

    #[test]
    fn items_beyond_the_dense_limit_get_zero_vectors() {
        let e = embed(&two_groups(), 2, 3, 7);
        let zero_rows = (0..6).filter(|i| e[i * 2..i * 2 + 2] == [0.0, 0.0]).count();
        assert_eq!(zero_rows, 3);
    }

    #[test]
    fn more_dimensions_than_items_leave_the_extra_dimensions_zero() {
        let dim = 32;
        let e = embed(&two_groups(), dim, 100, 7);
        assert_eq!(e.len(), 6 * dim);
        assert!(e.iter().all(|v| v.is_finite()));
        // Six items span at most six directions.
        assert!((0..6).all(|i| e[i * dim + 6..(i + 1) * dim].iter().all(|&v| v == 0.0)));
        assert!(dot(&e[..dim], &e[dim..2 * dim]) > 0.9);
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
