//! Diversity: fast greedy MAP inference for a determinantal point process (Chen, Zhang and
//! Zhou, NeurIPS 2018), with the kernel `S_ij = (1 + <e_i, e_j>) / 2` over L2-normalised
//! embeddings and the quality/diversity trade-off `theta * r_i + (1 - theta) * ln d_i^2`.
//!
//! The incremental Cholesky rows `c_i` and residuals `d_i^2` make each pick cost one pass over
//! the candidates: O(N k^2 + N k D) for N candidates, k picks and D dimensions.
//!
//! Maximising `theta * r_i + (1 - theta) * ln d_i^2` is maximising `d_i^2 * w_i` with
//! `w_i = exp(alpha * (r_i - r_max))`, `alpha = theta / (1 - theta)` (divide by `1 - theta`,
//! subtract a constant, exponentiate): the weights are computed once per request, so a pick
//! costs a multiplication per candidate instead of a logarithm.

use pulp::{Simd, WithSimd};

use super::vector;

/// Below this residual an item adds no new direction: picking it would make the kernel
/// singular, so the greedy search stops.
const MIN_RESIDUAL: f32 = 1e-10;

/// Reusable buffers, so a request allocates nothing once they have grown.
#[derive(Debug, Default)]
pub struct DppScratch {
    /// Step-major Cholesky entries: row `s` holds `c_i[s]` of every candidate `i`.
    cholesky: Vec<f32>,
    residual: Vec<f32>,
    weight: Vec<f32>,
    /// `residual * weight` of every candidate still in the running, -1 for the others.
    value: Vec<f32>,
    picked: Vec<bool>,
    pick_row: Vec<f32>,
}

/// Candidate arrays are padded to a multiple of this (every SIMD width pulp uses divides it),
/// so the vector loops have no scalar tail; padding entries have residual 0 and are never
/// picked.
const PAD: usize = 16;

/// Picks up to `k` of the candidates, in order, trading their `quality` (in [0, 1]) against
/// their similarity through `embedding(i)` (L2-normalised rows, or all zeros).
///
/// `theta = 1` is the plain ranking by quality. When every remaining candidate is spanned by
/// the ones picked (residual below 1e-10) the diversity search ends and the rest of the list
/// is filled by quality, so a request still gets `k` items when it has `k` candidates.
pub fn select<'e>(
    quality: &[f32],
    embedding: impl Fn(usize) -> &'e [f32],
    k: usize,
    theta: f32,
    scratch: &mut DppScratch,
    out: &mut Vec<usize>,
) {
    out.clear();
    let n = quality.len();
    let k = k.min(n);
    if k == 0 {
        return;
    }
    if theta < 1.0 {
        vector::dispatch(Greedy {
            quality,
            embedding,
            k,
            theta: theta.max(0.0),
            scratch: &mut *scratch,
            out: &mut *out,
        });
    }
    scratch.picked.clear();
    scratch.picked.resize(n, false);
    for &i in out.iter() {
        scratch.picked[i] = true;
    }
    if out.len() < k {
        fill_by_quality(quality, k, &mut scratch.picked, out);
    }
}

/// The greedy search of [`select`] as one SIMD kernel (see [`vector::dispatch`]). A pick costs
/// one dot product with every candidate (four rows at a time) and a few vector passes over
/// the step-major Cholesky rows, the last of which also finds the best value for the next
/// pick.
struct Greedy<'a, E> {
    quality: &'a [f32],
    embedding: E,
    k: usize,
    theta: f32,
    scratch: &'a mut DppScratch,
    out: &'a mut Vec<usize>,
}

impl<'a, 'e, E: Fn(usize) -> &'e [f32]> WithSimd for Greedy<'a, E> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Self {
            quality,
            embedding,
            k,
            theta,
            scratch,
            out,
        } = self;
        let n = quality.len();
        let padded = n.next_multiple_of(PAD);
        // Relative to the best quality, so no weight overflows. Above theta ≈ 0.99 the weights
        // of items more than 87 / alpha below the best underflow to 0; such an item could only
        // win once every item left has underflowed too, and those are then ordered by quality
        // alone (the tie-break), which is what such a theta asks for anyway.
        let alpha = theta / (1.0 - theta);
        let top = quality.iter().copied().fold(f32::MIN, f32::max);
        scratch.weight.clear();
        scratch
            .weight
            .extend(quality.iter().map(|&q| (alpha * (q - top)).exp()));
        scratch.weight.resize(padded, 0.0);
        // A plain loop, not an iterator adaptor: a closure that std does not inline would
        // be compiled without the kernel's instruction set.
        scratch.residual.clear();
        scratch.residual.resize(padded, 0.0);
        for i in 0..n {
            let e = embedding(i);
            scratch.residual[i] = (1.0 + vector::dot_with(simd, e, e)) / 2.0;
        }
        scratch.value.clear();
        scratch.value.resize(padded, 0.0);
        // Row `s` is written in full before it is read, so the buffer is only ever grown.
        if scratch.cholesky.len() < padded * k {
            scratch.cholesky.resize(padded * k, 0.0);
        }

        let minimum = simd.splat_f32s(MIN_RESIDUAL);
        let out_of_running = simd.splat_f32s(-1.0);
        let value_of = |d2: S::f32s, w: S::f32s| {
            simd.select_f32s(
                simd.greater_than_or_equal_f32s(d2, minimum),
                simd.mul_f32s(d2, w),
                out_of_running,
            )
        };
        let mut best = out_of_running;
        {
            let (residual_v, _) = S::as_simd_f32s(&scratch.residual);
            let (weight_v, _) = S::as_simd_f32s(&scratch.weight);
            let (value_v, _) = S::as_mut_simd_f32s(&mut scratch.value);
            for ((v, d2), w) in value_v.iter_mut().zip(residual_v).zip(weight_v) {
                *v = value_of(*d2, *w);
                best = simd.max_f32s(best, *v);
            }
        }
        let mut next = winner(simd, &scratch.value, simd.reduce_max_f32s(best), quality);
        while let Some(j) = next {
            let step = out.len();
            out.push(j);
            if out.len() == k {
                break;
            }
            let d_j = scratch.residual[j].sqrt();
            // A picked item's residual stays 0 through every update below: never picked again.
            scratch.residual[j] = 0.0;
            scratch.pick_row.clear();
            scratch
                .pick_row
                .extend((0..step).map(|s| scratch.cholesky[s * padded + j]));
            let (earlier, rest) = scratch.cholesky.split_at_mut(step * padded);
            let current = &mut rest[..padded];

            // current[i] = S_ji = (1 + <e_j, e_i>) / 2, four candidates at a time.
            let e_j = embedding(j);
            for (block, similarity) in current[..n].chunks_exact_mut(4).enumerate() {
                let i = 4 * block;
                let rows = [
                    embedding(i),
                    embedding(i + 1),
                    embedding(i + 2),
                    embedding(i + 3),
                ];
                let dots = vector::dot4_with(simd, e_j, rows);
                for (s, d) in similarity.iter_mut().zip(dots) {
                    *s = (1.0 + d) / 2.0;
                }
            }
            for (i, s) in current[..n].iter_mut().enumerate().skip(n - n % 4) {
                *s = (1.0 + vector::dot_with(simd, e_j, embedding(i))) / 2.0;
            }
            current[n..].fill(0.0);

            // c_i[step] = (S_ji - <c_j, c_i>) / d_j and d_i^2 -= c_i[step]^2, for every i at
            // once: the step-major layout makes both plain vector loops over candidates.
            let (current_v, _) = S::as_mut_simd_f32s(current);
            for (s, &c_js) in scratch.pick_row.iter().enumerate() {
                let (row_v, _) = S::as_simd_f32s(&earlier[s * padded..(s + 1) * padded]);
                let minus_c_js = simd.splat_f32s(-c_js);
                for (c, r) in current_v.iter_mut().zip(row_v) {
                    *c = simd.mul_add_e_f32s(minus_c_js, *r, *c);
                }
            }
            let inverse_d_j = simd.splat_f32s(1.0 / d_j);
            let zero = simd.splat_f32s(0.0);
            let (residual_v, _) = S::as_mut_simd_f32s(&mut scratch.residual);
            let (weight_v, _) = S::as_simd_f32s(&scratch.weight);
            let (value_v, _) = S::as_mut_simd_f32s(&mut scratch.value);
            let mut best = out_of_running;
            for (((c, d2), w), v) in current_v
                .iter_mut()
                .zip(residual_v)
                .zip(weight_v)
                .zip(value_v)
            {
                let e = simd.mul_f32s(*c, inverse_d_j);
                *c = e;
                // Rounding can push a residual a hair below zero; clamp so it is never picked.
                *d2 = simd.max_f32s(simd.sub_f32s(*d2, simd.mul_f32s(e, e)), zero);
                *v = value_of(*d2, *w);
                best = simd.max_f32s(best, *v);
            }
            next = winner(simd, &scratch.value, simd.reduce_max_f32s(best), quality);
        }
    }
}

/// The candidate whose `value` is `best` (the largest, -1 when no candidate is left), ties
/// broken by quality and then by position; `None` when there is none.
#[inline(always)]
fn winner<S: Simd>(simd: S, value: &[f32], best: f32, quality: &[f32]) -> Option<usize> {
    if best < 0.0 || best.is_nan() {
        return None;
    }
    let lanes = std::mem::size_of::<S::f32s>() / std::mem::size_of::<f32>();
    let target = simd.splat_f32s(best);
    let (value_v, _) = S::as_simd_f32s(value);
    let mut item: Option<usize> = None;
    for (chunk, v) in value_v.iter().enumerate() {
        // Whole vectors are skipped: usually one lane in all of them holds the best value.
        if simd.first_true_m32s(simd.equal_f32s(*v, target)) == lanes {
            continue;
        }
        let first = chunk * lanes;
        for (i, &v) in value[first..first + lanes].iter().enumerate() {
            let i = first + i;
            if v == best && item.is_none_or(|b| quality[i] > quality[b]) {
                item = Some(i);
            }
        }
    }
    item
}

/// Appends the best not-yet-picked candidates by quality until `out` has `k`.
fn fill_by_quality(quality: &[f32], k: usize, picked: &mut [bool], out: &mut Vec<usize>) {
    while out.len() < k {
        let mut best: Option<usize> = None;
        for i in 0..quality.len() {
            if !picked[i] && best.is_none_or(|b| quality[i] > quality[b]) {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        picked[b] = true;
        out.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::vector::dot;
    use proptest::prelude::*;

    fn normalised(rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        rows.into_iter()
            .map(|r| {
                let norm = dot(&r, &r).sqrt();
                if norm > 0.0 {
                    r.iter().map(|v| v / norm).collect()
                } else {
                    r
                }
            })
            .collect()
    }

    fn run(quality: &[f32], rows: &[Vec<f32>], k: usize, theta: f32) -> Vec<usize> {
        let mut out = Vec::new();
        select(
            quality,
            |i| &rows[i],
            k,
            theta,
            &mut DppScratch::default(),
            &mut out,
        );
        out
    }

    /// log det of the kernel `L = Diag(q) S Diag(q)` restricted to `set`, by plain Cholesky.
    fn log_det(set: &[usize], rows: &[Vec<f32>], quality: &[f32], alpha: f64) -> Option<f64> {
        let m = set.len();
        let mut a = vec![0f64; m * m];
        for (x, &i) in set.iter().enumerate() {
            for (y, &j) in set.iter().enumerate() {
                let s = (1.0
                    + rows[i]
                        .iter()
                        .zip(&rows[j])
                        .map(|(p, q)| (*p as f64) * (*q as f64))
                        .sum::<f64>())
                    / 2.0;
                a[x * m + y] =
                    (alpha * quality[i] as f64).exp() * s * (alpha * quality[j] as f64).exp();
            }
        }
        let mut total = 0.0;
        for col in 0..m {
            let mut diag = a[col * m + col];
            for p in 0..col {
                diag -= a[col * m + p] * a[col * m + p];
            }
            if diag <= 1e-9 {
                return None;
            }
            let d = diag.sqrt();
            a[col * m + col] = d;
            total += 2.0 * d.ln();
            for row in col + 1..m {
                let mut v = a[row * m + col];
                for p in 0..col {
                    v -= a[row * m + p] * a[col * m + p];
                }
                a[row * m + col] = v / d;
            }
        }
        Some(total)
    }

    /// Greedy MAP by brute force: each step adds the item that maximises the log det.
    fn brute_force(quality: &[f32], rows: &[Vec<f32>], k: usize, theta: f32) -> Vec<usize> {
        let alpha = theta as f64 / (2.0 * (1.0 - theta as f64));
        let mut picked: Vec<usize> = Vec::new();
        while picked.len() < k {
            let mut best: Option<(usize, f64)> = None;
            for i in 0..quality.len() {
                if picked.contains(&i) {
                    continue;
                }
                let mut set = picked.clone();
                set.push(i);
                if let Some(v) = log_det(&set, rows, quality, alpha) {
                    if best.is_none_or(|(_, b)| v > b) {
                        best = Some((i, v));
                    }
                }
            }
            match best {
                Some((i, _)) => picked.push(i),
                None => break,
            }
        }
        picked
    }

    #[test]
    fn theta_one_is_the_plain_ranking() {
        let rows = normalised(vec![vec![1.0, 0.0], vec![1.0, 0.01], vec![0.0, 1.0]]);
        assert_eq!(run(&[0.9, 0.8, 0.1], &rows, 3, 1.0), [0, 1, 2]);
    }

    #[test]
    fn a_near_duplicate_gives_way_to_a_different_item() {
        let rows = normalised(vec![vec![1.0, 0.0], vec![1.0, 0.01], vec![0.0, 1.0]]);
        assert_eq!(run(&[0.9, 0.8, 0.6], &rows, 2, 0.5), [0, 2]);
    }

    #[test]
    fn identical_items_end_the_search_and_the_rest_is_filled_by_quality() {
        let rows = vec![vec![1.0, 0.0]; 4];
        let got = run(&[0.2, 0.9, 0.5, 0.7], &rows, 3, 0.3);
        assert_eq!(got, [1, 3, 2]);
    }

    #[test]
    fn empty_and_oversized_requests_are_safe() {
        assert!(run(&[], &[], 5, 0.5).is_empty());
        let rows = vec![vec![0.0, 0.0]; 2];
        let got = run(&[0.5, 0.4], &rows, 10, 0.5);
        assert_eq!(got.len(), 2);
    }

    proptest! {
        #[test]
        fn fast_greedy_picks_what_brute_force_log_det_greedy_picks(
            n in 2usize..9,
            k in 1usize..5,
            theta in 0.05f32..0.95,
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let rows = normalised((0..n).map(|_| (0..4).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect());
            let quality: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let k = k.min(n);
            let fast = run(&quality, &rows, k, theta);
            let slow = brute_force(&quality, &rows, k, theta);
            // Where brute force stops (a singular set), the fast path fills by quality; compare
            // the part both computed.
            prop_assert_eq!(&fast[..slow.len()], &slow[..]);
        }

        #[test]
        fn a_reused_scratch_picks_what_a_fresh_one_picks(
            calls in proptest::collection::vec((1usize..60, 1usize..12, 0.05f32..0.99), 1..6),
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut shared = DppScratch::default();
            for (n, k, theta) in calls {
                let rows = normalised((0..n).map(|_| (0..8).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect());
                let quality: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..1.0)).collect();
                let mut reused = Vec::new();
                select(&quality, |i| &rows[i], k, theta, &mut shared, &mut reused);
                prop_assert_eq!(reused, run(&quality, &rows, k, theta));
            }
        }

        #[test]
        fn picks_are_distinct_and_never_more_than_k(
            quality in proptest::collection::vec(0.0f32..1.0, 0..40),
            k in 0usize..12,
            theta in 0.0f32..1.0,
        ) {
            let rows: Vec<Vec<f32>> = normalised((0..quality.len()).map(|i| vec![(i % 3) as f32, (i % 5) as f32, 1.0]).collect());
            let got = run(&quality, &rows, k, theta);
            prop_assert_eq!(got.len(), k.min(quality.len()));
            let mut seen = got.clone();
            seen.sort_unstable();
            seen.dedup();
            prop_assert_eq!(seen.len(), got.len());
        }
    }
}
