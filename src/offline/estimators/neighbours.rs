//! The table every estimator fills: top-N neighbours per item as compressed rows.

/// Top-N neighbours per item as CSR rows, best first (ties by item number).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Neighbours {
    pub(super) offsets: Vec<usize>,
    pub(super) others: Vec<u32>,
    pub(super) scores: Vec<f32>,
    pub(super) support: Vec<u32>,
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

    /// The compressed rows: offsets, neighbours, scores and supports.
    pub(super) fn into_parts(self) -> (Vec<usize>, Vec<u32>, Vec<f32>, Vec<u32>) {
        (self.offsets, self.others, self.scores, self.support)
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

pub(super) fn sort_best_first(row: &mut [(u32, f32, u32)]) {
    row.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// Keeps the `n` best entries of `row`, sorted best first.
pub(super) fn keep_best(row: &mut Vec<(u32, f32, u32)>, n: usize) {
    let cmp = |a: &(u32, f32, u32), b: &(u32, f32, u32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if row.len() > n && n > 0 {
        row.select_nth_unstable_by(n - 1, cmp);
    }
    row.truncate(n);
    row.sort_unstable_by(cmp);
}

/// Keeps the `n` entries of largest magnitude (strong negative weights included), then orders
/// them best first.
pub(super) fn keep_strongest(row: &mut Vec<(u32, f32, u32)>, n: usize) {
    let by_magnitude = |a: &(u32, f32, u32), b: &(u32, f32, u32)| {
        b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0))
    };
    if row.len() > n && n > 0 {
        row.select_nth_unstable_by(n - 1, by_magnitude);
    }
    row.truncate(n);
    row.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}
