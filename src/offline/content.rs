//! Content embeddings from item text, and content neighbours.
//!
//! Each title is split into lower-case words; its features are the words and the character
//! trigrams of each word padded with `#` (`#bag#` -> `#ba`, `bag`, `ag#`), so `BAG` and
//! `BAGS`, or `T-LIGHT` and `TLIGHT`, still share features. A feature's weight is its count
//! in the title times its idf over all titles (`ln((1 + N) / (1 + df)) + 1`); word features
//! count double. The sparse TF-IDF vector is projected to `dim` dimensions by a seeded
//! random ±1 projection (each feature's signs come from a hash of the feature and the seed,
//! so nothing is stored per feature), then L2-normalised. Same titles and seed, same vectors.
//!
//! Content neighbours are the top-N items by cosine. Up to `EXACT_LIMIT` items the search is
//! exact (brute force, split over threads); above it, items are bucketed by random-hyperplane
//! signatures (several tables) and only items sharing a bucket are compared.

use foldhash::{HashMap, HashMapExt};

use super::estimators::{self, Neighbours};

/// Most items searched exhaustively; larger catalogues use locality-sensitive hashing.
pub const EXACT_LIMIT: usize = 20_000;

/// Weight of whole-word features relative to trigrams.
/// One item's neighbour list as computed by a worker thread.
type NeighbourRow = (u32, Vec<(u32, f32, u32)>);

const WORD_WEIGHT: f32 = 2.0;

fn mix(mut x: u64) -> u64 {
    // SplitMix64 finaliser: a good 64-bit mixer, stable across platforms and releases.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    // FNV-1a, then mixed: a stable hash (std's and foldhash's are seeded per process).
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// The hashed features of a title, with their weights before idf (repeats add up).
pub fn features(title: &str, out: &mut Vec<(u64, f32)>) {
    out.clear();
    let lower = title.to_lowercase();
    let mut padded = Vec::with_capacity(32);
    for word in lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        out.push((hash_bytes(word.as_bytes(), 1), WORD_WEIGHT));
        padded.clear();
        padded.push(b'#');
        padded.extend_from_slice(word.as_bytes());
        padded.push(b'#');
        for gram in padded.windows(3) {
            out.push((hash_bytes(gram, 2), 1.0));
        }
    }
    out.sort_unstable_by_key(|f| f.0);
    // Merge repeats.
    let mut kept = 0;
    for i in 0..out.len() {
        if kept > 0 && out[kept - 1].0 == out[i].0 {
            out[kept - 1].1 += out[i].1;
        } else {
            out[kept] = out[i];
            kept += 1;
        }
    }
    out.truncate(kept);
}

/// L2-normalised `dim`-dimensional embeddings of `titles`, row-major (`titles.len() × dim`).
pub fn embed(titles: &[&str], dim: usize, seed: u64) -> Vec<f32> {
    let mut document_frequency: HashMap<u64, u32> = HashMap::with_capacity(titles.len() * 8);
    let mut buffer = Vec::with_capacity(64);
    for title in titles {
        features(title, &mut buffer);
        for &(f, _) in &buffer {
            *document_frequency.entry(f).or_insert(0) += 1;
        }
    }
    let n = titles.len() as f32;
    let mut out = vec![0f32; titles.len() * dim];
    for (row, title) in out.chunks_exact_mut(dim.max(1)).zip(titles) {
        if dim == 0 {
            break;
        }
        features(title, &mut buffer);
        for &(f, tf) in &buffer {
            let df = document_frequency.get(&f).copied().unwrap_or(1) as f32;
            let weight = tf * (((1.0 + n) / (1.0 + df)).ln() + 1.0);
            // One random sign per (feature, dimension), 64 dimensions per hash.
            for (block, values) in row.chunks_mut(64).enumerate() {
                let signs = mix(f ^ seed
                    .wrapping_add(block as u64)
                    .wrapping_mul(0xA24B_AED4_963E_E407));
                for (d, v) in values.iter_mut().enumerate() {
                    *v += if signs >> d & 1 == 1 { weight } else { -weight };
                }
            }
        }
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    out
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Top-`n` content neighbours of every item by cosine of `embeddings` (row-major, `dim`
/// wide, rows normalised); pairs below `min_similarity` and same-`group` pairs (variants,
/// see [`super::estimators::variant_groups`]) are left out. Support is 0 (no baskets involved).
pub fn neighbours(
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
    let candidates = if items <= EXACT_LIMIT {
        None
    } else {
        Some(lsh_buckets(embeddings, dim))
    };
    let row = |i: usize, out: &mut Vec<(u32, f32, u32)>| {
        out.clear();
        let a = &embeddings[i * dim..(i + 1) * dim];
        let mut consider = |j: usize| {
            if j == i || (groups[i] != u32::MAX && groups[i] == groups[j]) {
                return;
            }
            let s = dot(a, &embeddings[j * dim..(j + 1) * dim]);
            if s >= min_similarity && s > 0.0 {
                out.push((j as u32, s, 0));
            }
        };
        match &candidates {
            None => (0..items).for_each(&mut consider),
            Some(buckets) => {
                let mut seen: Vec<u32> = buckets.similar(i);
                seen.sort_unstable();
                seen.dedup();
                seen.into_iter().for_each(|j| consider(j as usize));
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

/// Random-hyperplane signatures in several tables, for large catalogues.
struct LshBuckets {
    tables: Vec<HashMap<u32, Vec<u32>>>,
    signatures: Vec<Vec<u32>>,
}

const LSH_TABLES: usize = 8;
const LSH_BITS: usize = 12;

fn lsh_buckets(embeddings: &[f32], dim: usize) -> LshBuckets {
    let items = embeddings.len() / dim;
    let planes: Vec<Vec<f32>> = (0..LSH_TABLES * LSH_BITS)
        .map(|p| {
            (0..dim)
                .map(|d| {
                    let h = mix((p as u64) << 32 | d as u64);
                    (h >> 11) as f32 / (1u64 << 53) as f32 - 0.5
                })
                .collect()
        })
        .collect();
    let mut tables = vec![HashMap::<u32, Vec<u32>>::new(); LSH_TABLES];
    let mut signatures: Vec<Vec<_>> = (0..LSH_TABLES).map(|_| Vec::with_capacity(items)).collect();
    for i in 0..items {
        let v = &embeddings[i * dim..(i + 1) * dim];
        for (t, table) in tables.iter_mut().enumerate() {
            let mut signature = 0u32;
            for bit in 0..LSH_BITS {
                if dot(v, &planes[t * LSH_BITS + bit]) >= 0.0 {
                    signature |= 1 << bit;
                }
            }
            table.entry(signature).or_default().push(i as u32);
            signatures[t].push(signature);
        }
    }
    LshBuckets { tables, signatures }
}

impl LshBuckets {
    fn similar(&self, item: usize) -> Vec<u32> {
        let mut out = Vec::new();
        for (table, signatures) in self.tables.iter().zip(&self.signatures) {
            if let Some(bucket) = table.get(&signatures[item]) {
                out.extend_from_slice(bucket);
            }
        }
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
    fn neighbours_are_the_most_similar_items_without_variants() {
        let titles = [
            "JUMBO BAG RED RETROSPOT",
            "JUMBO BAG PINK POLKADOT",
            "JUMBO BAG BLUE POLKADOT",
            "WHITE HANGING HEART T-LIGHT HOLDER",
        ];
        let e = embed(&titles, 32, 1);
        let groups = [u32::MAX, 5, 5, u32::MAX];
        let n = neighbours(&e, 32, &groups, 2, 0.0, 2);
        assert_eq!(n.row(1).0[0], 0, "2 is a variant of 1");
        assert!(!n.row(1).0.contains(&2));
        assert_eq!(n.row(0).0.len(), 2);
        assert!(n.row(0).0.iter().all(|&j| j == 1 || j == 2));
    }
}
