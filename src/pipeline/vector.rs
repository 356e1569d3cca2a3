//! Vector kernels of the request path: dot products of one vector with many embedding rows.
//!
//! A portable x86-64 build only has SSE2, and the 64-dimensional dot products against every
//! candidate are most of a request's arithmetic. [`dispatch`] runs a kernel compiled for the
//! widest instruction set the CPU has (AVX-512 where there is one, else AVX2 and FMA on x86-64
//! since 2013, NEON on ARM), chosen once at run time by `pulp`, so one binary runs everywhere at
//! full width.

use pulp::{Arch, Simd, WithSimd};

/// Runs `op` with the best SIMD instruction set of this CPU.
#[inline]
pub fn dispatch<Op: WithSimd>(op: Op) -> Op::Output {
    Arch::new().dispatch(op)
}

/// `<a, b>` inside a [`dispatch`]ed kernel (four independent accumulators, so the adds do not
/// wait on each other). Slices of different lengths are cut to the shorter.
#[inline(always)]
pub fn dot_with<S: Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let (a_head, a_tail) = S::as_simd_f32s(&a[..len]);
    let (b_head, b_tail) = S::as_simd_f32s(&b[..len]);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [zero; 4];
    let (a_blocks, b_blocks) = (a_head.chunks_exact(4), b_head.chunks_exact(4));
    let (a_rest, b_rest) = (a_blocks.remainder(), b_blocks.remainder());
    for (x, y) in a_blocks.zip(b_blocks) {
        for lane in 0..4 {
            acc[lane] = simd.mul_add_e_f32s(x[lane], y[lane], acc[lane]);
        }
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        acc[0] = simd.mul_add_e_f32s(*x, *y, acc[0]);
    }
    let sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    simd.reduce_sum_f32s(sum) + tail
}

/// `<query, row>` for four rows at once inside a [`dispatch`]ed kernel: one accumulator per
/// row and a single pass over `query`, so the four chains run side by side. Rows shorter than
/// `query` are read as zero-padded.
#[inline(always)]
pub fn dot4_with<S: Simd>(simd: S, query: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    let len = rows.iter().fold(query.len(), |len, r| len.min(r.len()));
    let (q_head, q_tail) = S::as_simd_f32s(&query[..len]);
    let (r0, t0) = S::as_simd_f32s(&rows[0][..len]);
    let (r1, t1) = S::as_simd_f32s(&rows[1][..len]);
    let (r2, t2) = S::as_simd_f32s(&rows[2][..len]);
    let (r3, t3) = S::as_simd_f32s(&rows[3][..len]);
    // Every head is as long as the query's; saying so lets the loop run without bounds checks.
    let n = q_head.len();
    let (r0, r1, r2, r3) = (&r0[..n], &r1[..n], &r2[..n], &r3[..n]);
    let zero = simd.splat_f32s(0.0);
    let mut acc = [zero; 4];
    for c in 0..n {
        let q = q_head[c];
        acc[0] = simd.mul_add_e_f32s(q, r0[c], acc[0]);
        acc[1] = simd.mul_add_e_f32s(q, r1[c], acc[1]);
        acc[2] = simd.mul_add_e_f32s(q, r2[c], acc[2]);
        acc[3] = simd.mul_add_e_f32s(q, r3[c], acc[3]);
    }
    let tail = |t: &[f32]| -> f32 { q_tail.iter().zip(t).map(|(x, y)| x * y).sum() };
    [
        simd.reduce_sum_f32s(acc[0]) + tail(t0),
        simd.reduce_sum_f32s(acc[1]) + tail(t1),
        simd.reduce_sum_f32s(acc[2]) + tail(t2),
        simd.reduce_sum_f32s(acc[3]) + tail(t3),
    ]
}

/// `<a, b>`, for the odd dot product outside a kernel.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    struct Dot<'a>(&'a [f32], &'a [f32]);
    impl WithSimd for Dot<'_> {
        type Output = f32;
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) -> f32 {
            dot_with(simd, self.0, self.1)
        }
    }
    dispatch(Dot(a, b))
}

/// Calls `found(i, <query, row(i)>)` for every `i` in `0..n` for which `wanted(i)` holds, all
/// in one kernel.
pub fn each_dot<'r>(
    query: &[f32],
    n: usize,
    row: impl Fn(usize) -> &'r [f32],
    wanted: impl Fn(usize) -> bool,
    found: impl FnMut(usize, f32),
) {
    struct EachDot<'q, R, W, F> {
        query: &'q [f32],
        n: usize,
        row: R,
        wanted: W,
        found: F,
    }
    impl<'q, 'r, R, W, F> WithSimd for EachDot<'q, R, W, F>
    where
        R: Fn(usize) -> &'r [f32],
        W: Fn(usize) -> bool,
        F: FnMut(usize, f32),
    {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(mut self, simd: S) {
            // Wanted rows are gathered four at a time for `dot4_with`.
            let mut block = [0usize; 4];
            let mut filled = 0;
            for i in 0..self.n {
                if !(self.wanted)(i) {
                    continue;
                }
                block[filled] = i;
                filled += 1;
                if filled == 4 {
                    let rows = block.map(|b| (self.row)(b));
                    let values = dot4_with(simd, self.query, rows);
                    for (b, value) in block.into_iter().zip(values) {
                        (self.found)(b, value);
                    }
                    filled = 0;
                }
            }
            if filled > 0 {
                // The last rows go through the same four-row kernel (padded with a repeat of
                // the first), so a row's value never depends on its position in the batch.
                let rows = [0, 1, 2, 3].map(|slot| (self.row)(block[slot.min(filled - 1)]));
                let values = dot4_with(simd, self.query, rows);
                for (&b, value) in block[..filled].iter().zip(values) {
                    (self.found)(b, value);
                }
            }
        }
    }
    dispatch(EachDot {
        query,
        n,
        row,
        wanted,
        found,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn dot_matches_the_plain_sum_at_every_length() {
        for len in 0..140 {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let (fast, slow) = (dot(&a, &b), plain(&a, &b));
            assert!(
                (fast - slow).abs() <= 1e-4 * (1.0 + slow.abs()),
                "{len}: {fast} {slow}"
            );
        }
    }

    #[test]
    fn dot_of_different_lengths_uses_the_shorter() {
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[1.0, 1.0]), 3.0);
        assert_eq!(dot(&[], &[1.0]), 0.0);
    }

    #[test]
    fn four_rows_at_once_match_one_at_a_time() {
        struct Four<'a>(&'a [f32], [&'a [f32]; 4]);
        impl WithSimd for Four<'_> {
            type Output = [f32; 4];
            fn with_simd<S: Simd>(self, simd: S) -> [f32; 4] {
                dot4_with(simd, self.0, self.1)
            }
        }
        for len in [0, 3, 8, 17, 64, 100] {
            let row = |k: f32| -> Vec<f32> { (0..len).map(|i| (i as f32 * k).sin()).collect() };
            let (q, a, b, c, d) = (row(0.3), row(0.5), row(0.7), row(1.1), row(1.3));
            let got = dispatch(Four(&q, [&a, &b, &c, &d]));
            for (g, r) in got.iter().zip([&a, &b, &c, &d]) {
                let want = plain(&q, r);
                assert!(
                    (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{len}: {g} {want}"
                );
            }
        }
    }

    #[test]
    fn each_dot_visits_only_the_wanted_rows() {
        let rows: Vec<Vec<f32>> = (0..11).map(|i| vec![i as f32, 1.0]).collect();
        let mut seen = Vec::new();
        each_dot(
            &[1.0, 2.0],
            rows.len(),
            |i| &rows[i],
            |i| i != 1,
            |i, d| seen.push((i, d)),
        );
        seen.sort_by_key(|&(i, _)| i);
        let want: Vec<(usize, f32)> = (0..11)
            .filter(|&i| i != 1)
            .map(|i| (i, i as f32 + 2.0))
            .collect();
        assert_eq!(seen, want);
    }
}
