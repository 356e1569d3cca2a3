//! Co-occurrence counts: baskets per item, shared baskets per pair and, of those, the baskets
//! in which the pair's items are on adjacent lines. They are all that the count-based
//! estimators read, so counting is a step of its own (and the step that outgrows one machine
//! first).
//!
//! Adjacent lines matter because shoppers add related items one after another (a product
//! family's colours from one page, the pieces of a set): items that share many baskets
//! *next to each other* are more closely tied than items that merely share baskets.

use super::parallel::{rows_in_parallel, worker_threads};
use super::Baskets;

/// Baskets per item and, for every item with at least `min_baskets` of them, the baskets it
/// shares with each other such item (and in how many of them the two are on adjacent lines),
/// as rows sorted by item number.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Baskets counted.
    pub baskets: usize,
    /// Baskets holding each item (every item, eligible or not).
    pub item_baskets: Vec<u32>,
    /// Fewest baskets an item needs to have a row and to be in other items' rows.
    pub min_baskets: u32,
    offsets: Vec<usize>,
    others: Vec<u32>,
    shared: Vec<u32>,
    adjacent: Vec<u32>,
}

impl Counts {
    /// Counts `baskets` (each in the order of its lines) over `threads` worker threads (0 =
    /// the available cores); the result does not depend on their number.
    pub fn from_baskets(baskets: &Baskets, min_baskets: u32, threads: usize) -> Self {
        let items = baskets.items();
        let item_baskets = baskets.item_counts();
        let eligible = |i: usize| item_baskets[i] >= min_baskets.max(1);
        let (index_offsets, index) = baskets.inverted(&item_baskets);
        let (rows, _, _) = rows_in_parallel(
            items,
            worker_threads(threads),
            || {
                (
                    vec![0u32; items],
                    vec![0u32; items],
                    Vec::<u32>::with_capacity(1024),
                )
            },
            |i, (count, adjacent, touched), part| {
                let iu = i as usize;
                if !eligible(iu) {
                    return;
                }
                for &b in &index[index_offsets[iu]..index_offsets[iu + 1]] {
                    let basket = baskets.basket(b as usize);
                    for (k, &j) in basket.iter().enumerate() {
                        let ju = j as usize;
                        if ju == iu || !eligible(ju) {
                            continue;
                        }
                        if count[ju] == 0 {
                            touched.push(j);
                        }
                        count[ju] += 1;
                        let next_to_i =
                            (k > 0 && basket[k - 1] == i) || basket.get(k + 1) == Some(&i);
                        adjacent[ju] += u32::from(next_to_i);
                    }
                }
                touched.sort_unstable();
                for &j in touched.iter() {
                    let c = std::mem::take(&mut count[j as usize]);
                    // The row's score slot carries the adjacent count (exact below 2^24).
                    let a = std::mem::take(&mut adjacent[j as usize]).min(c);
                    part.push_row(&[(j, a as f32, c)]);
                }
                touched.clear();
            },
        );
        let (offsets, others, adjacent, shared) = rows.into_parts();
        Self {
            baskets: baskets.len(),
            item_baskets,
            min_baskets,
            offsets,
            others,
            shared,
            adjacent: adjacent.into_iter().map(|a| a as u32).collect(),
        }
    }

    /// Counts from tables: baskets per item, and `(a, b, shared baskets, of them on adjacent
    /// lines)` for each unordered pair once; pairs with an item below `min_baskets` are left
    /// out.
    pub fn from_pairs(
        item_baskets: Vec<u32>,
        pairs: impl IntoIterator<Item = (u32, u32, u32, u32)>,
        baskets: usize,
        min_baskets: u32,
    ) -> Self {
        let items = item_baskets.len();
        let eligible = |i: u32| item_baskets[i as usize] >= min_baskets.max(1);
        let kept: Vec<(u32, u32, u32, u32)> = pairs
            .into_iter()
            .filter(|&(a, b, c, _)| c > 0 && a != b && eligible(a) && eligible(b))
            .collect();
        let mut offsets = vec![0usize; items + 1];
        for &(a, b, _, _) in &kept {
            offsets[a as usize + 1] += 1;
            offsets[b as usize + 1] += 1;
        }
        for i in 0..items {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut rows = vec![(0u32, 0u32, 0u32); offsets[items]];
        for (a, b, c, adjacent) in kept {
            for (from, to) in [(a, b), (b, a)] {
                rows[fill[from as usize]] = (to, c, adjacent.min(c));
                fill[from as usize] += 1;
            }
        }
        for i in 0..items {
            rows[offsets[i]..offsets[i + 1]].sort_unstable();
        }
        let mut others = Vec::with_capacity(rows.len());
        let mut shared = Vec::with_capacity(rows.len());
        let mut adjacent = Vec::with_capacity(rows.len());
        for (o, c, a) in rows {
            others.push(o);
            shared.push(c);
            adjacent.push(a);
        }
        Self {
            baskets,
            item_baskets,
            min_baskets,
            offsets,
            others,
            shared,
            adjacent,
        }
    }

    /// Number of items.
    pub fn items(&self) -> usize {
        self.item_baskets.len()
    }

    /// Whether `item` has enough baskets to be counted in pairs.
    pub fn eligible(&self, item: u32) -> bool {
        self.item_baskets[item as usize] >= self.min_baskets.max(1)
    }

    /// Items with enough baskets to be counted in pairs.
    pub fn eligible_items(&self) -> usize {
        (0..self.items() as u32)
            .filter(|&i| self.eligible(i))
            .count()
    }

    /// Distinct ordered pairs that share a basket.
    pub fn pairs(&self) -> usize {
        self.others.len()
    }

    /// The items sharing a basket with `item`, in item order, and how many baskets each shares.
    #[inline]
    pub fn row(&self, item: u32) -> (&[u32], &[u32]) {
        let range = self.offsets[item as usize]..self.offsets[item as usize + 1];
        (&self.others[range.clone()], &self.shared[range])
    }

    /// For each item of [`Counts::row`]`(item)`, the shared baskets in which the two are on
    /// adjacent lines.
    #[inline]
    pub fn adjacent_row(&self, item: u32) -> &[u32] {
        &self.adjacent[self.offsets[item as usize]..self.offsets[item as usize + 1]]
    }

    /// Whether any pair was counted on adjacent lines: counts without line order (a table
    /// that lacks the column, baskets with one line each) have none.
    pub fn has_adjacency(&self) -> bool {
        self.adjacent.iter().any(|&a| a > 0)
    }

    /// Baskets shared by `a` and `b` (0 when either is not eligible).
    pub fn shared(&self, a: u32, b: u32) -> u32 {
        let (others, shared) = self.row(a);
        others.binary_search(&b).map_or(0, |p| shared[p])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hold_eligible_pairs_in_item_order_whatever_the_threads() {
        let mut b = Baskets::new(5);
        for basket in [
            &[0u32, 1, 3][..],
            &[0, 1, 3],
            &[0, 1, 2, 3],
            &[2, 3],
            &[3, 4],
        ] {
            b.push(basket);
        }
        let one = Counts::from_baskets(&b, 2, 1);
        assert_eq!(one, Counts::from_baskets(&b, 2, 3));
        assert_eq!(one.item_baskets, [3, 3, 2, 5, 1]);
        assert_eq!(one.row(0), (&[1, 2, 3][..], &[3, 1, 3][..]));
        assert_eq!(
            one.adjacent_row(0),
            [3, 0, 0],
            "0 is next to 1 in all three baskets, never to 2 or 3"
        );
        assert_eq!(one.adjacent_row(3), [0, 2, 2]);
        assert_eq!(
            one.row(4),
            (&[][..], &[][..]),
            "one basket is below min_baskets"
        );
        assert_eq!(one.shared(3, 4), 0, "nor is it in other rows");
        assert_eq!(one.shared(3, 2), 2);
        assert_eq!(one.eligible_items(), 4);
        assert_eq!(one.pairs(), 12);
        let pairs = (0..5u32).flat_map(|a| {
            let (others, shared) = one.row(a);
            others
                .iter()
                .zip(shared)
                .zip(one.adjacent_row(a))
                .filter(move |((&b, _), _)| a < b)
                .map(move |((&b, &c), &n)| (a, b, c, n))
                .collect::<Vec<_>>()
        });
        let mut with_rare = pairs.collect::<Vec<_>>();
        with_rare.push((3, 4, 1, 1));
        assert_eq!(
            Counts::from_pairs(one.item_baskets.clone(), with_rare, 5, 2),
            one,
            "from tables, the same counts; the rare item's pair is left out"
        );
    }
}
