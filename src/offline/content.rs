//! Content embeddings from item text, and content neighbours.
//!
//! The embedding itself is [`crate::model::text`]: the server embeds a new catalogue item
//! with the same function against the served version's titles.
//!
//! Content neighbours are the top-N items by cosine. Up to `EXACT_LIMIT` items the search is
//! exact (brute force, split over threads); above it, an item is compared only with the items
//! that share a title word with it, rarest words first, up to `CANDIDATES` of them: two titles
//! without a common word are rarely alike, and a rare shared word says more than a common one.
//! (Random-hyperplane hashing found only a fifth of the exact neighbours at 62,000 items and
//! grew with the square of the catalogue; docs/performance.md.)

use foldhash::{HashMap, HashMapExt};

pub use crate::model::text::{embed, features};
use crate::model::text::{mix, words};

use super::estimators::{self, Neighbours};

/// Most items searched exhaustively; larger catalogues compare items that share title words.
pub const EXACT_LIMIT: usize = 20_000;

/// Most items an item is compared with in a catalogue above `EXACT_LIMIT`.
const CANDIDATES: usize = 2_000;

/// One item's neighbour list as computed by a worker thread.
type NeighbourRow = (u32, Vec<(u32, f32, u32)>);

use crate::pipeline::vector::{dot, each_dot};

/// Top-`n` content neighbours of every item by cosine of `embeddings` (row-major, `dim`
/// wide, rows normalised); pairs below `min_similarity` and same-`group` pairs (variants,
/// see [`super::estimators::variant_groups`]) are left out. Support is 0 (no baskets involved).
pub fn neighbours(
    titles: &[&str],
    embeddings: &[f32],
    dim: usize,
    groups: &[u32],
    n: usize,
    min_similarity: f32,
    threads: usize,
) -> Neighbours {
    // One row per item whatever the dimension: with no embeddings (dim 0) every row is empty.
    let items = groups.len();
    if dim == 0 || items == 0 || n == 0 || embeddings.len() != items * dim {
        return Neighbours::empty(items);
    }
    let candidates = if items <= EXACT_LIMIT || titles.len() != items {
        None
    } else {
        Some(WordIndex::new(titles, embeddings, dim))
    };
    let row = |i: usize, out: &mut Vec<(u32, f32, u32)>| {
        out.clear();
        let a = &embeddings[i * dim..(i + 1) * dim];
        let unrelated = |j: usize| j != i && (groups[i] == u32::MAX || groups[i] != groups[j]);
        let mut keep = |j: usize, s: f32| {
            if s >= min_similarity && s > 0.0 {
                out.push((j as u32, s, 0));
            }
        };
        match &candidates {
            None => each_dot(
                a,
                items,
                |j| &embeddings[j * dim..(j + 1) * dim],
                unrelated,
                &mut keep,
            ),
            Some(index) => {
                let others = index.candidates(i);
                let at = |k: usize| others[k] as usize;
                each_dot(
                    a,
                    others.len(),
                    |k| &embeddings[at(k) * dim..(at(k) + 1) * dim],
                    |k| unrelated(at(k)),
                    |k, s| keep(at(k), s),
                );
            }
        }
        let cmp =
            |a: &(u32, f32, u32), b: &(u32, f32, u32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if out.len() > n {
            out.select_nth_unstable_by(n - 1, cmp);
            out.truncate(n);
        }
    };
    let threads = threads.clamp(1, items);
    let parts: Vec<Vec<NeighbourRow>> = std::thread::scope(|scope| {
        let row = &row;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut buffer = Vec::with_capacity(items.min(4096));
                    (t..items)
                        .step_by(threads)
                        .map(|i| {
                            row(i, &mut buffer);
                            (i as u32, buffer.clone())
                        })
                        .collect()
                })
            })
            .collect();
        estimators::join_all(handles)
    });
    let mut rows: Vec<NeighbourRow> = parts.into_iter().flatten().collect();
    rows.sort_unstable_by_key(|r| r.0);
    Neighbours::from_rows(items, rows)
}

/// Which items hold each title word, for large catalogues.
struct WordIndex {
    /// Each item's word numbers, rarest first (`item_offsets` delimits the items).
    item_words: Vec<u32>,
    item_offsets: Vec<usize>,
    /// The items holding each word, by signature then item (`word_offsets` delimits the
    /// words).
    word_items: Vec<u32>,
    word_offsets: Vec<usize>,
    /// Each item's random-hyperplane signature: items close in it point the same way.
    signatures: Vec<u32>,
}

/// Hyperplanes of an item's signature (the bits of a `u32`).
const SIGNATURE_BITS: usize = 32;

/// The random-hyperplane signature of a `dim`-wide vector: bit `b` says on which side of
/// plane `b` it lies, the first planes in the highest bits, so sorting by signature groups
/// vectors that agree on the first planes.
fn signature(v: &[f32], planes: &[f32], dim: usize) -> u32 {
    let mut signature = 0u32;
    for (bit, plane) in planes.chunks_exact(dim).enumerate() {
        if dot(v, plane) >= 0.0 {
            signature |= 1 << (SIGNATURE_BITS - 1 - bit);
        }
    }
    signature
}

impl WordIndex {
    fn new(titles: &[&str], embeddings: &[f32], dim: usize) -> Self {
        let mut numbers: HashMap<u64, u32> = HashMap::with_capacity(titles.len());
        let mut item_words = Vec::with_capacity(titles.len() * 4);
        let mut item_offsets = Vec::with_capacity(titles.len() + 1);
        item_offsets.push(0);
        let mut hashes = Vec::with_capacity(16);
        for title in titles {
            words(title, &mut hashes);
            for &h in &hashes {
                let next = numbers.len() as u32;
                item_words.push(*numbers.entry(h).or_insert(next));
            }
            item_offsets.push(item_words.len());
        }
        let mut word_offsets = vec![0usize; numbers.len() + 1];
        for &w in &item_words {
            word_offsets[w as usize + 1] += 1;
        }
        for w in 0..numbers.len() {
            word_offsets[w + 1] += word_offsets[w];
        }
        let mut fill = word_offsets.clone();
        let mut word_items = vec![0u32; item_words.len()];
        for (item, range) in item_offsets.windows(2).enumerate() {
            for &w in &item_words[range[0]..range[1]] {
                word_items[fill[w as usize]] = item as u32;
                fill[w as usize] += 1;
            }
        }
        let frequency = |w: u32| word_offsets[w as usize + 1] - word_offsets[w as usize];
        for range in item_offsets.windows(2) {
            item_words[range[0]..range[1]].sort_unstable_by_key(|&w| (frequency(w), w));
        }
        let planes: Vec<f32> = (0..SIGNATURE_BITS * dim)
            .map(|p| (mix(p as u64 ^ 0x5EED) >> 11) as f32 / (1u64 << 53) as f32 - 0.5)
            .collect();
        let signatures: Vec<u32> = embeddings
            .chunks_exact(dim)
            .map(|v| signature(v, &planes, dim))
            .collect();
        for w in 0..numbers.len() {
            word_items[word_offsets[w]..word_offsets[w + 1]]
                .sort_unstable_by_key(|&i| (signatures[i as usize], i));
        }
        Self {
            item_words,
            item_offsets,
            word_items,
            word_offsets,
            signatures,
        }
    }

    /// The items sharing a word with `item`, sorted, at most `CANDIDATES`: the holders of
    /// its words, rarest word first, while they fit; then, of the first word with too many
    /// holders, those nearest `item` by signature.
    fn candidates(&self, item: usize) -> Vec<u32> {
        let mut out = Vec::new();
        for &w in &self.item_words[self.item_offsets[item]..self.item_offsets[item + 1]] {
            let holders =
                &self.word_items[self.word_offsets[w as usize]..self.word_offsets[w as usize + 1]];
            let room = CANDIDATES - out.len();
            if holders.len() <= room {
                out.extend_from_slice(holders);
                continue;
            }
            let own = (self.signatures[item], item as u32);
            let at = holders.partition_point(|&i| (self.signatures[i as usize], i) < own);
            let first = at.saturating_sub(room / 2).min(holders.len() - room);
            out.extend_from_slice(&holders[first..first + room]);
            break;
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(e: &[f32], dim: usize, a: usize, b: usize) -> f32 {
        dot(&e[a * dim..(a + 1) * dim], &e[b * dim..(b + 1) * dim])
    }

    #[test]
    fn embeddings_are_deterministic_normalised_and_close_for_similar_titles() {
        let titles = [
            "JUMBO BAG RED RETROSPOT",
            "JUMBO BAG PINK POLKADOT",
            "WHITE HANGING HEART T-LIGHT HOLDER",
            "RED HANGING HEART T-LIGHT HOLDER",
            "",
        ];
        let e = embed(&titles, 64, 7);
        assert_eq!(e, embed(&titles, 64, 7));
        assert_ne!(e, embed(&titles, 64, 8));
        for i in 0..4 {
            assert!((cosine(&e, 64, i, i) - 1.0).abs() < 1e-5);
        }
        assert!(
            e[4 * 64..].iter().all(|&v| v == 0.0),
            "an empty title has no direction"
        );
        assert!(cosine(&e, 64, 0, 1) > cosine(&e, 64, 0, 2) + 0.2);
        assert!(cosine(&e, 64, 2, 3) > 0.6);
    }

    #[test]
    fn a_large_catalogue_compares_items_that_share_title_words() {
        // More items than the exact search takes: "lamp" is held by too many items to compare
        // whole, "brass" by few.
        let mut titles: Vec<String> = (0..EXACT_LIMIT + 10)
            .map(|i| format!("lamp model{i}"))
            .collect();
        titles[5] = "brass lamp model5".into();
        titles[77] = "brass lamp model77".into();
        titles[EXACT_LIMIT + 3] = "brass candle".into();
        let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
        let e = embed(&titles, 64, 3);
        let index = WordIndex::new(&titles, &e, 64);
        // Its own model number and "brass" first, then the holders of "lamp" nearest to it.
        // (The window of "lamp" holds 5 and 77 again, so a few fewer than the budget.)
        let rare = index.candidates(5);
        assert!(rare.len() <= CANDIDATES && rare.len() >= CANDIDATES - 3);
        for shares_brass in [5, 77, EXACT_LIMIT as u32 + 3] {
            assert!(rare.contains(&shares_brass), "{shares_brass}");
        }
        assert_eq!(
            index.candidates(EXACT_LIMIT + 3),
            vec![5, 77, EXACT_LIMIT as u32 + 3],
            "no common word to fill up with"
        );
        let common = index.candidates(1234);
        assert!(common.len() <= CANDIDATES && common.len() >= CANDIDATES - 1);
        assert!(common.contains(&1234));
        let groups = vec![u32::MAX; titles.len()];
        let n = neighbours(&titles, &e, 64, &groups, 5, 0.0, 2);
        assert!(n.row(5).0.contains(&77), "{:?}", n.row(5));
        assert!(n
            .row(EXACT_LIMIT as u32 + 3)
            .0
            .iter()
            .all(|&j| j == 5 || j == 77));
    }

    #[test]
    fn neighbours_are_the_most_similar_items_without_variants() {
        let titles = [
            "JUMBO BAG RED RETROSPOT",
            "JUMBO BAG PINK POLKADOT",
            "JUMBO BAG BLUE POLKADOT",
            "WHITE HANGING HEART T-LIGHT HOLDER",
        ];
        let e = embed(&titles, 32, 1);
        let groups = [u32::MAX, 5, 5, u32::MAX];
        let n = neighbours(&titles, &e, 32, &groups, 2, 0.0, 2);
        assert_eq!(n.row(1).0[0], 0, "2 is a variant of 1");
        assert!(!n.row(1).0.contains(&2));
        assert_eq!(n.row(0).0.len(), 2);
        assert!(n.row(0).0.iter().all(|&j| j == 1 || j == 2));
    }
}
