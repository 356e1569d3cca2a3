//! Compact column types the snapshot is made of: string columns, an id interner and CSR rows.

use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry, HashTable};
use std::hash::BuildHasher;

/// Many strings in one buffer, addressed by position: one allocation instead of one per string.
#[derive(Debug, Clone)]
pub struct StrColumn {
    bytes: String,
    ends: Vec<u32>,
    /// Bit `i` set: string `i` has a byte JSON must escape. Known once here, so a response
    /// copies ids and titles without scanning them each time.
    json_escaped: Vec<u64>,
}

/// Whether `s` can stand inside a JSON string as it is: no control character, quote or
/// backslash (what serde_json escapes). No early exit, so the check vectorises.
pub fn json_plain(s: &str) -> bool {
    s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    })
}

impl Default for StrColumn {
    fn default() -> Self {
        Self::with_capacity(0, 0)
    }
}

impl StrColumn {
    /// An empty column with room for `strings` strings of `bytes` bytes in total.
    pub fn with_capacity(strings: usize, bytes: usize) -> Self {
        Self {
            bytes: String::with_capacity(bytes),
            ends: Vec::with_capacity(strings),
            json_escaped: Vec::with_capacity(strings.div_ceil(64)),
        }
    }

    /// Appends `s` and returns its position.
    pub fn push(&mut self, s: &str) -> u32 {
        self.bytes.push_str(s);
        let position = self.ends.len();
        self.ends.push(self.bytes.len() as u32);
        if position.is_multiple_of(64) {
            self.json_escaped.push(0);
        }
        if !json_plain(s) {
            self.json_escaped[position / 64] |= 1 << (position % 64);
        }
        position as u32
    }

    /// Whether the string at `position` can stand inside a JSON string unescaped.
    #[inline]
    pub fn is_json_plain(&self, position: u32) -> bool {
        let i = position as usize;
        // A position this column never held reads as needing escapes: the safe answer.
        self.json_escaped
            .get(i / 64)
            .is_some_and(|word| word & (1 << (i % 64)) == 0)
    }

    /// The string at `position`; panics when out of range (positions come from this column).
    pub fn get(&self, position: u32) -> &str {
        let i = position as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    /// How many strings the column holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the column holds no strings.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.ends.capacity() * 4 + self.json_escaped.capacity() * 8
    }

    fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.json_escaped.shrink_to_fit();
    }
}

/// Maps strings to dense `u32` positions and back; the strings are stored once.
#[derive(Debug, Clone, Default)]
pub struct Interner {
    names: StrColumn,
    table: HashTable<u32>,
    hasher: RandomState,
}

impl Interner {
    /// An empty interner with room for `n` names.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            names: StrColumn::with_capacity(n, n * 8),
            table: HashTable::with_capacity(n),
            hasher: RandomState::default(),
        }
    }

    /// The position of `name`, if interned.
    #[inline]
    pub fn get(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.table
            .find(hash, |&i| self.names.get(i) == name)
            .copied()
    }

    /// Interns `name`: `Ok(new position)`, or `Err(existing position)` when already present.
    pub fn insert(&mut self, name: &str) -> Result<u32, u32> {
        let hash = self.hasher.hash_one(name);
        let (names, hasher) = (&self.names, &self.hasher);
        match self.table.entry(
            hash,
            |&i| names.get(i) == name,
            |&i| hasher.hash_one(names.get(i)),
        ) {
            Entry::Occupied(existing) => Err(*existing.get()),
            Entry::Vacant(slot) => {
                let position = self.names.push(name);
                slot.insert(position);
                Ok(position)
            }
        }
    }

    /// Interns `name`, returning its position whether new or not.
    pub fn intern(&mut self, name: &str) -> u32 {
        self.insert(name).unwrap_or_else(|existing| existing)
    }

    /// The name at `position`.
    #[inline]
    pub fn name(&self, position: u32) -> &str {
        self.names.get(position)
    }

    /// Whether the name at `position` can stand inside a JSON string unescaped.
    #[inline]
    pub fn is_json_plain(&self, position: u32) -> bool {
        self.names.is_json_plain(position)
    }

    /// How many names are interned.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Heap bytes held (approximate for the hash table).
    pub fn heap_bytes(&self) -> usize {
        self.names.heap_bytes() + self.table.capacity() * 5
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.names.shrink_to_fit();
        let hasher = &self.hasher;
        let names = &self.names;
        self.table.shrink_to_fit(|&i| hasher.hash_one(names.get(i)));
    }
}

/// Compressed sparse rows: for item `i`, `neighbours[start..end]` with `(start, end) = ranges[i]`
/// (rows need not be stored in item order) and their
/// `scores`, sorted by score, highest first.
#[derive(Debug, Clone, Default)]
pub struct Csr {
    ranges: Vec<(u32, u32)>,
    neighbours: Vec<u32>,
    scores: Vec<f32>,
}

impl Csr {
    /// Builds rows for `rows` items from `(row, neighbour, score)` triples in any order.
    pub fn from_triples(rows: usize, mut triples: Vec<(u32, u32, f32)>) -> Self {
        // Counting sort by row keeps this linear; each short row is then sorted by score.
        let mut offsets = vec![0u32; rows + 1];
        for &(row, _, _) in &triples {
            offsets[row as usize + 1] += 1;
        }
        for i in 0..rows {
            offsets[i + 1] += offsets[i];
        }
        let mut cursor: Vec<u32> = offsets[..rows].to_vec();
        let mut neighbours = vec![0u32; triples.len()];
        let mut scores = vec![0f32; triples.len()];
        for (row, neighbour, score) in triples.drain(..) {
            let slot = cursor[row as usize] as usize;
            neighbours[slot] = neighbour;
            scores[slot] = score;
            cursor[row as usize] += 1;
        }
        drop(triples);
        Self::sorted_rows(ranges_of(&offsets), neighbours, scores)
    }

    /// The rows given by `ranges`, each sorted by score (highest first, ties by neighbour).
    fn sorted_rows(
        ranges: Vec<(u32, u32)>,
        mut neighbours: Vec<u32>,
        mut scores: Vec<f32>,
    ) -> Self {
        let mut row_buffer: Vec<(u32, f32)> = Vec::new();
        for &(start, end) in &ranges {
            let (start, end) = (start as usize, end as usize);
            row_buffer.clear();
            row_buffer.extend(
                neighbours[start..end]
                    .iter()
                    .copied()
                    .zip(scores[start..end].iter().copied()),
            );
            row_buffer.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for (k, (n, s)) in row_buffer.iter().enumerate() {
                neighbours[start + k] = *n;
                scores[start + k] = *s;
            }
        }
        Self {
            ranges,
            neighbours,
            scores,
        }
    }

    /// The neighbours of `row` and their scores, best first.
    #[inline]
    pub fn row(&self, row: u32) -> (&[u32], &[f32]) {
        match self.ranges.get(row as usize) {
            Some(&(start, end)) => (
                &self.neighbours[start as usize..end as usize],
                &self.scores[start as usize..end as usize],
            ),
            None => (&[], &[]),
        }
    }

    /// Number of stored (item, neighbour) entries.
    pub fn len(&self) -> usize {
        self.neighbours.len()
    }

    /// Whether no entries are stored.
    pub fn is_empty(&self) -> bool {
        self.neighbours.is_empty()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.ranges.capacity() * 8 + (self.neighbours.capacity() + self.scores.capacity()) * 4
    }
}

/// The `(start, end)` of each row from prefix-sum offsets.
fn ranges_of(offsets: &[u32]) -> Vec<(u32, u32)> {
    offsets.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Builds a [`Csr`] from `(row, neighbour, score)` entries that arrive grouped by row, as the
/// model tables are written, keeping 8 bytes per entry instead of a 12-byte triple (for a
/// million items with fifty neighbours each, 200 MB less while loading), and when each row's
/// entries come together, in any row order, they stay where they are (no second copy: 400 MB
/// less at the end). Entries not grouped by row give the same rows through one reordering copy
/// (and a run record per entry: correct, but no memory saved). At most
/// `u32::MAX` entries: the caller checks before [`CsrBuilder::finish`].
#[derive(Debug, Default)]
pub struct CsrBuilder {
    neighbours: Vec<u32>,
    scores: Vec<f32>,
    /// `(row, first entry)` of each run of consecutive entries of one row.
    runs: Vec<(u32, u32)>,
}

impl CsrBuilder {
    /// Makes room for `entries` more entries.
    pub fn reserve(&mut self, entries: usize) {
        self.neighbours.reserve(entries);
        self.scores.reserve(entries);
    }

    /// Entries so far.
    pub fn entries(&self) -> usize {
        self.neighbours.len()
    }

    /// Adds `neighbour` to `row` with `score`.
    pub fn push(&mut self, row: u32, neighbour: u32, score: f32) {
        if self.runs.last().map(|&(last, _)| last) != Some(row) {
            self.runs.push((row, self.neighbours.len() as u32));
        }
        self.neighbours.push(neighbour);
        self.scores.push(score);
    }

    /// The rows for `rows` items; entries of rows at or beyond `rows` are dropped.
    pub fn finish(self, rows: usize) -> Csr {
        let Self {
            neighbours,
            scores,
            runs,
        } = self;
        let total = neighbours.len() as u32;
        let run_end = |r: usize| runs.get(r + 1).map_or(total, |&(_, start)| start);
        let mut offsets = vec![0u32; rows + 1];
        for (r, &(row, start)) in runs.iter().enumerate() {
            if let Some(count) = offsets.get_mut(row as usize + 1) {
                *count += run_end(r) - start;
            }
        }
        for i in 0..rows {
            offsets[i + 1] += offsets[i];
        }
        // One run per row (rows grouped, in any order), every entry kept: the runs are the
        // rows, where they already are.
        let mut ranges = vec![(0u32, 0u32); rows];
        let mut in_place = offsets[rows] == total;
        for (r, &(row, start)) in runs.iter().enumerate() {
            match ranges.get_mut(row as usize) {
                Some(range) if in_place && range.1 == range.0 => *range = (start, run_end(r)),
                _ => {
                    in_place = false;
                    break;
                }
            }
        }
        tracing::debug!(
            entries = total,
            runs = runs.len(),
            in_place,
            "neighbour rows placed"
        );
        if in_place {
            // A table whose size was not known ahead keeps the slack of its last doubling.
            let (mut neighbours, mut scores) = (neighbours, scores);
            neighbours.shrink_to_fit();
            scores.shrink_to_fit();
            return Csr::sorted_rows(ranges, neighbours, scores);
        }
        drop(ranges);
        let mut cursor: Vec<u32> = offsets[..rows].to_vec();
        let mut placed_neighbours = vec![0u32; offsets[rows] as usize];
        let mut placed_scores = vec![0f32; offsets[rows] as usize];
        for (r, &(row, start)) in runs.iter().enumerate() {
            let Some(at) = cursor.get_mut(row as usize) else {
                continue;
            };
            let (from, to) = (start as usize, run_end(r) as usize);
            let slot = *at as usize;
            placed_neighbours[slot..slot + to - from].copy_from_slice(&neighbours[from..to]);
            placed_scores[slot..slot + to - from].copy_from_slice(&scores[from..to]);
            *at += (to - from) as u32;
        }
        drop((neighbours, scores));
        Csr::sorted_rows(ranges_of(&offsets), placed_neighbours, placed_scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_flags_hold_across_many_words_and_a_shrink() {
        let mut column = StrColumn::with_capacity(0, 0);
        let strings: Vec<String> = (0..200)
            .map(|i| match i % 7 {
                0 => format!("quote\"{i}"),
                3 => format!("tab\t{i}"),
                5 => format!("back\\slash{i}"),
                _ => format!("plain {i} é"),
            })
            .collect();
        for s in &strings {
            column.push(s);
        }
        column.shrink_to_fit();
        for (i, s) in strings.iter().enumerate() {
            assert_eq!(column.is_json_plain(i as u32), json_plain(s), "{i}: {s:?}");
            assert_eq!(column.get(i as u32), s);
        }
    }

    #[test]
    fn interner_returns_the_same_position_for_the_same_name() {
        let mut interner = Interner::with_capacity(2);
        assert_eq!(interner.insert("a"), Ok(0));
        assert_eq!(interner.insert("bb"), Ok(1));
        assert_eq!(interner.insert("a"), Err(0));
        assert_eq!(interner.get("bb"), Some(1));
        assert_eq!(interner.get("c"), None);
        assert_eq!(interner.name(1), "bb");
        for i in 0..1000 {
            interner.intern(&format!("item-{i}"));
        }
        interner.shrink_to_fit();
        assert_eq!(interner.get("item-999"), Some(1001));
    }

    #[test]
    fn str_column_keeps_empty_strings_apart() {
        let mut column = StrColumn::default();
        column.push("");
        column.push("x");
        column.push("");
        assert_eq!((column.get(0), column.get(1), column.get(2)), ("", "x", ""));
    }

    #[test]
    fn csr_rows_are_sorted_by_score_descending() {
        let csr = Csr::from_triples(3, vec![(0, 1, 0.2), (2, 0, 1.0), (0, 2, 0.9)]);
        assert_eq!(csr.row(0), (&[2, 1][..], &[0.9, 0.2][..]));
        assert_eq!(csr.row(1), (&[][..], &[][..]));
        assert_eq!(csr.row(2), (&[0][..], &[1.0][..]));
        assert_eq!(csr.row(7), (&[][..], &[][..]));
        assert_eq!(csr.len(), 3);
    }

    fn rows_of(csr: &Csr, rows: usize) -> Vec<(Vec<u32>, Vec<f32>)> {
        (0..rows as u32)
            .map(|r| {
                let (n, s) = csr.row(r);
                (n.to_vec(), s.to_vec())
            })
            .collect()
    }

    #[test]
    fn csr_builder_gives_the_rows_from_triples_gives_in_any_order() {
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for case in 0..200 {
            let rows = rng.random_range(1..12usize);
            let mut triples: Vec<(u32, u32, f32)> = (0..rng.random_range(0..60))
                .map(|_| {
                    (
                        rng.random_range(0..rows as u32),
                        rng.random_range(0..rows as u32 + 5),
                        f32::from(rng.random_range(0u8..4)),
                    )
                })
                .collect();
            // Grouped in row order, grouped in another order, or not grouped at all.
            match case % 3 {
                0 => triples.sort_by_key(|t| t.0),
                1 => triples.sort_by_key(|t| std::cmp::Reverse(t.0)),
                _ => triples.shuffle(&mut rng),
            }
            let mut builder = CsrBuilder::default();
            for &(row, neighbour, score) in &triples {
                builder.push(row, neighbour, score);
            }
            let entries = triples.len();
            let want = Csr::from_triples(rows, triples);
            let got = builder.finish(rows);
            assert_eq!(rows_of(&got, rows), rows_of(&want, rows), "case {case}");
            assert_eq!((got.len(), want.len()), (entries, entries));
        }
    }
}

/// Items per chunk of a [`Chunked`] column: a change copies one chunk, a new state copies
/// one pointer per chunk (4,096 of them at a million items).
const CHUNK_BITS: u32 = 8;
const CHUNK: usize = 1 << CHUNK_BITS;

/// A column split into shared chunks: cloning it shares every chunk, and changing a value
/// copies only its chunk (copy on write), so a catalogue change to a few items of a million
/// makes a new state in microseconds, while requests keep reading the old one.
#[derive(Debug, Clone, Default)]
pub struct Chunked<T: Clone> {
    chunks: Vec<std::sync::Arc<Vec<T>>>,
    len: usize,
}

impl<T: Clone> Chunked<T> {
    /// A column holding `values` in order.
    pub fn from_values(values: impl IntoIterator<Item = T>) -> Self {
        let mut column = Self {
            chunks: Vec::new(),
            len: 0,
        };
        for value in values {
            column.push(value);
        }
        column
    }

    /// Number of values.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the column is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value at `index`, if the column has it.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        self.chunks
            .get(index >> CHUNK_BITS)
            .and_then(|chunk| chunk.get(index & (CHUNK - 1)))
    }

    /// A mutable reference to the value at `index`, copying its chunk when it is shared.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        let chunk = self.chunks.get_mut(index >> CHUNK_BITS)?;
        std::sync::Arc::make_mut(chunk).get_mut(index & (CHUNK - 1))
    }

    /// Appends `value`.
    pub fn push(&mut self, value: T) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks
                .push(std::sync::Arc::new(Vec::with_capacity(CHUNK)));
        }
        if let Some(last) = self.chunks.last_mut() {
            std::sync::Arc::make_mut(last).push(value);
        }
        self.len += 1;
    }

    /// Heap bytes held (shared chunks counted in full).
    pub fn heap_bytes(&self) -> usize {
        self.chunks.len() * (CHUNK * std::mem::size_of::<T>() + 8)
    }
}

#[cfg(test)]
mod chunked_tests {
    use super::Chunked;

    #[test]
    fn a_change_leaves_the_clone_it_came_from_as_it_was() {
        let old = Chunked::from_values(0..1000u32);
        let mut new = old.clone();
        *new.get_mut(700).unwrap() = 7;
        new.push(1000);
        assert_eq!(old.get(700), Some(&700));
        assert_eq!(new.get(700), Some(&7));
        assert_eq!(old.len(), 1000);
        assert_eq!(new.get(1000), Some(&1000));
        assert_eq!(old.get(1000), None);
        assert!((0..1000)
            .filter(|&i| i != 700)
            .all(|i| old.get(i) == new.get(i)));
    }
}
