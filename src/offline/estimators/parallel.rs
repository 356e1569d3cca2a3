//! Rows of a table computed over worker threads, joined in item order so the result does
//! not depend on the number of threads.

use super::neighbours::Neighbours;

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
pub(super) struct RowsPart {
    pub(super) lengths: Vec<usize>,
    pub(super) others: Vec<u32>,
    pub(super) scores: Vec<f32>,
    pub(super) support: Vec<u32>,
    pub(super) co_occurring: u64,
    pub(super) variants_dropped: u64,
}

impl RowsPart {
    /// Appends one item's kept `(neighbour, score, support)` entries.
    pub(super) fn push_row(&mut self, row: &[(u32, f32, u32)]) {
        for &(j, s, c) in row {
            self.others.push(j);
            self.scores.push(s);
            self.support.push(c);
        }
    }
}

/// Runs `row(item, part)` for every item over `threads` threads and joins the rows.
pub(super) fn rows_in_parallel<S>(
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
