//! The title embedding: the same deterministic function for training (every title of a
//! version at once) and for serving (one new catalogue item against the version's corpus).
//!
//! Each title is split into lower-case words; its features are the words and the character
//! trigrams of each word padded with `#` (`#bag#` -> `#ba`, `bag`, `ag#`), so `BAG` and
//! `BAGS`, or `T-LIGHT` and `TLIGHT`, still share features. A feature's weight is its count
//! in the title times its idf over all titles of the corpus (`ln((1 + N) / (1 + df)) + 1`);
//! word features count double. The sparse TF-IDF vector is projected to `dim` dimensions by a
//! seeded random ±1 projection (each feature's signs come from a hash of the feature and the
//! seed, so nothing is stored per feature), then L2-normalised. Same titles and seed, same
//! vectors.

use foldhash::{HashMap, HashMapExt};

/// Weight of whole-word features relative to trigrams.
const WORD_WEIGHT: f32 = 2.0;

/// The SplitMix64 finaliser.
pub fn mix(mut x: u64) -> u64 {
    // A good 64-bit mixer, stable across platforms and releases.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A stable hash of `bytes` (std's and foldhash's are seeded per process).
pub fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    // FNV-1a, then mixed.
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

/// The distinct word hashes of a title (the word features of [`features`]).
pub fn words(title: &str, out: &mut Vec<u64>) {
    out.clear();
    out.extend(
        title
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| hash_bytes(w.as_bytes(), 1)),
    );
    out.sort_unstable();
    out.dedup();
}

/// The corpus statistics the idf weights come from: how many titles hold each feature, and
/// how many titles there are.
#[derive(Debug, Clone, Default)]
pub struct TitleCorpus {
    document_frequency: HashMap<u64, u32>,
    titles: usize,
}

impl TitleCorpus {
    /// The statistics of `titles`.
    pub fn of<'a>(titles: impl IntoIterator<Item = &'a str>) -> Self {
        let titles = titles.into_iter();
        let mut document_frequency: HashMap<u64, u32> =
            HashMap::with_capacity(titles.size_hint().0 * 8);
        let mut buffer = Vec::with_capacity(64);
        let mut count = 0;
        for title in titles {
            features(title, &mut buffer);
            for &(f, _) in &buffer {
                *document_frequency.entry(f).or_insert(0) += 1;
            }
            count += 1;
        }
        Self {
            document_frequency,
            titles: count,
        }
    }

    /// Heap bytes held (approximate).
    pub fn heap_bytes(&self) -> usize {
        self.document_frequency.capacity() * 16
    }

    /// Writes the L2-normalised `row.len()`-dimensional embedding of `title` into `row`;
    /// `buffer` is scratch space.
    pub fn embed_into(
        &self,
        title: &str,
        seed: u64,
        row: &mut [f32],
        buffer: &mut Vec<(u64, f32)>,
    ) {
        row.iter_mut().for_each(|v| *v = 0.0);
        if row.is_empty() {
            return;
        }
        let n = self.titles as f32;
        features(title, buffer);
        for &(f, tf) in buffer.iter() {
            let df = self.document_frequency.get(&f).copied().unwrap_or(1) as f32;
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
}

/// L2-normalised `dim`-dimensional embeddings of `titles`, row-major (`titles.len() × dim`),
/// with the idf of `titles` themselves.
pub fn embed(titles: &[&str], dim: usize, seed: u64) -> Vec<f32> {
    let corpus = TitleCorpus::of(titles.iter().copied());
    let mut out = vec![0f32; titles.len() * dim];
    if dim == 0 {
        return out;
    }
    let mut buffer = Vec::with_capacity(64);
    for (row, title) in out.chunks_exact_mut(dim).zip(titles) {
        corpus.embed_into(title, seed, row, &mut buffer);
    }
    out
}
