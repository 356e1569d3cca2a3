//! Co-occurrence counts as tables: the interchange between counting (in process, in Postgres,
//! or in a warehouse or cluster job) and training.
//!
//! A counts directory holds two Parquet tables, each a file or a directory of part files (as
//! Spark and most engines write them):
//! - `items.parquet`: `item_id` (string), `baskets` (integer): the baskets holding the item,
//!   one row per item;
//! - `pairs.parquet`: `item_id`, `other_item_id` (strings), `baskets` (integer): the baskets
//!   holding both, one row per unordered pair that shares a basket, in either order; and,
//!   optionally, `adjacent_baskets` (integer): how many of those baskets hold the two on
//!   adjacent lines. A file without that column reads as 0 for each of its pairs, so counts
//!   made without line order still read (and train as if line order were unknown).
//!
//! A basket is the distinct items of one order, cleaned as `tandem import` cleans (no
//! cancelled orders, no lines with a quantity or price at or below zero). For adjacency, an
//! order's lines are taken in line-number order, each item at its first line only (later
//! repeats dropped), and two items are adjacent when no other item's first line comes between
//! theirs. Integer columns may be 32- or 64-bit; nulls, negative counts, adjacent counts above
//! the shared ones, repeated items or pairs, and pairs naming an item missing from
//! `items.parquet` are refused.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashMapExt};
use parquet::column::reader::ColumnReader;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::estimators::Counts;
use super::history::History;
use super::train::TrainingSet;

/// Item and pair counts keyed by item id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CountTables {
    /// Item ids, in the order the counts name them.
    pub items: Vec<String>,
    /// Baskets holding each item.
    pub item_baskets: Vec<u64>,
    /// `(item, other, shared baskets, of them on adjacent lines)` by position in `items`, each
    /// unordered pair once with `item < other`.
    pub pairs: Vec<(u32, u32, u64, u64)>,
}

/// Pair counts `(shared baskets, of them on adjacent lines)` by (smaller id, larger id).
pub type PairsById = BTreeMap<(String, String), (u64, u64)>;

/// Why counts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CountsFileError {
    /// A file could not be opened or listed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not valid Parquet.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the Parquet reader said.
        source: parquet::errors::ParquetError,
    },
    /// A table's content breaks the interchange's rules.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl CountTables {
    /// Counts the baskets of `history` in `range` in process.
    pub fn from_history(history: &History, range: Range<usize>) -> Self {
        let set = TrainingSet::new(history, range);
        let items: Vec<String> = set
            .history_items
            .iter()
            .map(|&h| history.items[h as usize].id.clone())
            .collect();
        let baskets = set.baskets;
        let counts = Counts::from_baskets(&baskets, 1, 0);
        let mut pairs = Vec::with_capacity(counts.pairs() / 2);
        for a in 0..items.len() as u32 {
            let (others, shared) = counts.row(a);
            for ((&b, &c), &n) in others.iter().zip(shared).zip(counts.adjacent_row(a)) {
                if a < b {
                    pairs.push((a, b, u64::from(c), u64::from(n)));
                }
            }
        }
        Self {
            items,
            item_baskets: counts.item_baskets.iter().map(|&n| u64::from(n)).collect(),
            pairs,
        }
    }

    /// Item counts by id, and pair counts (shared, adjacent) by (smaller id, larger id): a form
    /// two countings can be compared in whatever order they name items.
    pub fn by_id(&self) -> (BTreeMap<String, u64>, PairsById) {
        let items = self
            .items
            .iter()
            .cloned()
            .zip(self.item_baskets.iter().copied())
            .collect();
        let pairs = self
            .pairs
            .iter()
            .map(|&(a, b, c, n)| {
                let (a, b) = (&self.items[a as usize], &self.items[b as usize]);
                let key = if a < b {
                    (a.clone(), b.clone())
                } else {
                    (b.clone(), a.clone())
                };
                (key, (c, n))
            })
            .collect();
        (items, pairs)
    }

    /// The counts as the estimators read them, over `self.items` in order; items with fewer
    /// than `min_baskets` baskets are left out of the pairs.
    pub fn to_counts(&self, baskets: usize, min_baskets: u32) -> Counts {
        let clamp = |c: u64| u32::try_from(c).unwrap_or(u32::MAX);
        Counts::from_pairs(
            self.item_baskets.iter().map(|&c| clamp(c)).collect(),
            self.pairs
                .iter()
                .map(|&(a, b, c, n)| (a, b, clamp(c), clamp(n))),
            baskets,
            min_baskets,
        )
    }
}

/// The Parquet files of a table: the file itself, or the `.parquet` files of a directory in
/// name order (hidden files and Spark's `_SUCCESS` markers left out).
fn table_files(path: &Path) -> Result<Vec<PathBuf>, CountsFileError> {
    let io = |source| CountsFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(['.', '_']) && name.ends_with(".parquet") {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// One column of a table, read whole.
enum Column {
    Text(Vec<String>),
    Count(Vec<u64>),
}

/// A column a table is read for.
struct Wanted<'a> {
    name: &'a str,
    text: bool,
    /// When the column is absent from a file, its rows read as 0 (count columns only).
    optional: bool,
}

impl<'a> Wanted<'a> {
    fn text(name: &'a str) -> Self {
        Self {
            name,
            text: true,
            optional: false,
        }
    }

    fn count(name: &'a str) -> Self {
        Self {
            name,
            text: false,
            optional: false,
        }
    }

    fn optional_count(name: &'a str) -> Self {
        Self {
            name,
            text: false,
            optional: true,
        }
    }
}

/// Reads the wanted columns of every file of a table.
fn read_columns(path: &Path, wanted: &[Wanted]) -> Result<Vec<Column>, CountsFileError> {
    let mut out: Vec<Column> = wanted
        .iter()
        .map(|w| {
            if w.text {
                Column::Text(Vec::new())
            } else {
                Column::Count(Vec::new())
            }
        })
        .collect();
    for file in table_files(path)? {
        let parquet = |source| CountsFileError::Parquet {
            path: file.clone(),
            source,
        };
        let invalid = |message: String| CountsFileError::Invalid {
            path: file.clone(),
            message,
        };
        let handle = File::open(&file).map_err(|source| CountsFileError::Io {
            path: file.clone(),
            source,
        })?;
        let reader = SerializedFileReader::new(handle).map_err(parquet)?;
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        let mut indices = Vec::with_capacity(wanted.len());
        for w in wanted {
            let index = (0..schema.num_columns()).find(|&i| schema.column(i).name() == w.name);
            if index.is_none() && !w.optional {
                return Err(invalid(format!("no column {}", w.name)));
            }
            indices.push(index);
        }
        for g in 0..reader.num_row_groups() {
            let group = reader.get_row_group(g).map_err(parquet)?;
            let rows = group.metadata().num_rows() as usize;
            for ((&index, w), column) in indices.iter().zip(wanted).zip(out.iter_mut()) {
                let name = w.name;
                let Some(index) = index else {
                    if let Column::Count(v) = column {
                        v.resize(v.len() + rows, 0);
                    }
                    continue;
                };
                let reader = group.get_column_reader(index).map_err(parquet)?;
                let before = match column {
                    Column::Text(v) => v.len(),
                    Column::Count(v) => v.len(),
                };
                read_column(reader, rows, column)
                    .map_err(|message| invalid(format!("column {name}: {message}")))?
                    .map_err(parquet)?;
                let after = match column {
                    Column::Text(v) => v.len(),
                    Column::Count(v) => v.len(),
                };
                if after - before != rows {
                    return Err(invalid(format!("column {name} holds nulls")));
                }
            }
        }
    }
    Ok(out)
}

/// Appends `rows` values of one column chunk to `column`; the outer error is a content
/// problem, the inner one a Parquet one.
fn read_column(
    reader: ColumnReader,
    rows: usize,
    column: &mut Column,
) -> Result<Result<(), parquet::errors::ParquetError>, String> {
    const BATCH: usize = 8192;
    let mut levels: Vec<i16> = Vec::with_capacity(BATCH);
    macro_rules! drain {
        ($reader:expr, $values:ident, $push:expr) => {{
            let mut reader = $reader;
            let mut $values = Vec::with_capacity(BATCH);
            let mut read = 0;
            while read < rows {
                $values.clear();
                levels.clear();
                match reader.read_records(BATCH, Some(&mut levels), None, &mut $values) {
                    Ok((0, _, _)) => break,
                    Ok((records, _, _)) => read += records,
                    Err(e) => return Ok(Err(e)),
                }
                $push
            }
        }};
    }
    match (reader, column) {
        (ColumnReader::ByteArrayColumnReader(r), Column::Text(out)) => drain!(r, values, {
            for v in &values {
                let text = std::str::from_utf8(v.data()).map_err(|_| "not UTF-8".to_string())?;
                out.push(text.to_string());
            }
        }),
        (ColumnReader::Int64ColumnReader(r), Column::Count(out)) => drain!(r, values, {
            for &v in &values {
                out.push(u64::try_from(v).map_err(|_| format!("negative count {v}"))?);
            }
        }),
        (ColumnReader::Int32ColumnReader(r), Column::Count(out)) => drain!(r, values, {
            for &v in &values {
                out.push(u64::try_from(v).map_err(|_| format!("negative count {v}"))?);
            }
        }),
        (_, Column::Text(_)) => return Err("must be a string column".into()),
        (_, Column::Count(_)) => return Err("must be an integer column".into()),
    }
    Ok(Ok(()))
}

/// `read_columns` returns the kinds of column it is asked for; this error says otherwise.
fn kinds_mismatch(path: &Path) -> CountsFileError {
    CountsFileError::Invalid {
        path: path.to_path_buf(),
        message: "columns read as the wrong kind".into(),
    }
}

/// Reads a counts directory (see the module doc).
pub fn read_counts(dir: &Path) -> Result<CountTables, CountsFileError> {
    let items_path = dir.join("items.parquet");
    let pairs_path = dir.join("pairs.parquet");
    let mut columns = read_columns(
        &items_path,
        &[Wanted::text("item_id"), Wanted::count("baskets")],
    )?;
    let (Column::Count(item_baskets), Column::Text(items)) = (columns.remove(1), columns.remove(0))
    else {
        return Err(kinds_mismatch(&items_path));
    };
    let invalid = |path: &Path, message: String| CountsFileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mut position: HashMap<&str, u32> = HashMap::with_capacity(items.len());
    for (p, id) in items.iter().enumerate() {
        if position.insert(id.as_str(), p as u32).is_some() {
            return Err(invalid(&items_path, format!("item {id:?} is listed twice")));
        }
    }
    let mut columns = read_columns(
        &pairs_path,
        &[
            Wanted::text("item_id"),
            Wanted::text("other_item_id"),
            Wanted::count("baskets"),
            Wanted::optional_count("adjacent_baskets"),
        ],
    )?;
    let (
        Column::Count(adjacent),
        Column::Count(shared),
        Column::Text(others),
        Column::Text(firsts),
    ) = (
        columns.remove(3),
        columns.remove(2),
        columns.remove(1),
        columns.remove(0),
    )
    else {
        return Err(kinds_mismatch(&pairs_path));
    };
    let mut pairs = Vec::with_capacity(shared.len());
    for (((a, b), &c), &n) in firsts.iter().zip(&others).zip(&shared).zip(&adjacent) {
        let find = |id: &String| {
            position
                .get(id.as_str())
                .copied()
                .ok_or_else(|| invalid(&pairs_path, format!("item {id:?} is not in items.parquet")))
        };
        let (a, b) = (find(a)?, find(b)?);
        if a == b {
            return Err(invalid(
                &pairs_path,
                format!("item {:?} paired with itself", items[a as usize]),
            ));
        }
        if n > c {
            return Err(invalid(
                &pairs_path,
                format!(
                    "pair {:?}, {:?}: adjacent_baskets {n} exceeds its {c} shared baskets \
                     (the adjacent baskets are some of the shared ones)",
                    items[a as usize], items[b as usize]
                ),
            ));
        }
        pairs.push((a.min(b), a.max(b), c, n));
    }
    pairs.sort_unstable();
    if let Some(w) = pairs
        .windows(2)
        .find(|w| (w[0].0, w[0].1) == (w[1].0, w[1].1))
    {
        return Err(invalid(
            &pairs_path,
            format!(
                "pair {:?}, {:?} is listed twice",
                items[w[0].0 as usize], items[w[0].1 as usize]
            ),
        ));
    }
    Ok(CountTables {
        items,
        item_baskets,
        pairs,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    use super::*;
    use crate::offline::history::tests::fixture;

    /// Writes one row group: string columns (`item_id`, `other_item_id`), then count columns
    /// (`baskets`, `adjacent_baskets`), nullable (as Spark writes) when `optional`.
    fn write(path: &Path, text: &[Vec<String>], counts: &[Vec<i64>], optional: bool, wide: bool) {
        let repetition = if optional { "optional" } else { "required" };
        let text_names = ["item_id", "other_item_id"];
        let count_names = ["baskets", "adjacent_baskets"];
        let width = if wide { "int64" } else { "int32" };
        let fields: Vec<String> = (0..text.len())
            .map(|i| format!("{repetition} binary {} (UTF8);", text_names[i]))
            .chain((0..counts.len()).map(|i| format!("{repetition} {width} {};", count_names[i])))
            .collect();
        let schema = parse_message_type(&format!("message t {{ {} }}", fields.join(" "))).unwrap();
        let file = File::create(path).unwrap();
        let mut writer = SerializedFileWriter::new(
            file,
            Arc::new(schema),
            Arc::new(WriterProperties::builder().build()),
        )
        .unwrap();
        let mut group = writer.next_row_group().unwrap();
        let levels = vec![1i16; counts[0].len()];
        let levels = optional.then_some(&levels[..]);
        let mut column = 0;
        while let Some(mut w) = group.next_column().unwrap() {
            if column < text.len() {
                let values: Vec<ByteArray> = text[column]
                    .iter()
                    .map(|s| ByteArray::from(s.as_str()))
                    .collect();
                w.typed::<ByteArrayType>()
                    .write_batch(&values, levels, None)
                    .unwrap();
            } else if wide {
                w.typed::<Int64Type>()
                    .write_batch(&counts[column - text.len()], levels, None)
                    .unwrap();
            } else {
                let narrow: Vec<i32> = counts[column - text.len()]
                    .iter()
                    .map(|&c| c as i32)
                    .collect();
                w.typed::<Int32Type>()
                    .write_batch(&narrow, levels, None)
                    .unwrap();
            }
            w.close().unwrap();
            column += 1;
        }
        group.close().unwrap();
        writer.close().unwrap();
    }

    /// Writes `items.parquet` holding items `a` and `b`.
    fn write_two_items(dir: &Path) {
        write(
            &dir.join("items.parquet"),
            &[vec!["a".into(), "b".into()]],
            &[vec![3, 2]],
            false,
            true,
        );
    }

    #[test]
    fn counts_written_by_another_engine_read_back_as_the_in_process_counts() {
        let h = fixture();
        let expected = CountTables::from_history(&h, 0..h.len());
        let (items, pairs) = expected.by_id();
        assert!(!pairs.is_empty());
        assert!(
            pairs.values().any(|&(_, n)| n > 0) && pairs.values().any(|&(c, n)| n < c),
            "some pairs on adjacent lines, some not: {pairs:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = items.keys().cloned().collect();
        let counts: Vec<i64> = items.values().map(|&c| c as i64).collect();
        write(
            &dir.path().join("items.parquet"),
            &[ids],
            &[counts],
            false,
            true,
        );
        // Pairs as Spark writes them: a directory of nullable part files, pairs in either order.
        let parts = dir.path().join("pairs.parquet");
        std::fs::create_dir(&parts).unwrap();
        std::fs::write(parts.join("_SUCCESS"), "").unwrap();
        let all: Vec<_> = pairs.iter().collect();
        for (n, chunk) in all.chunks(all.len().div_ceil(2)).enumerate() {
            let first: Vec<String> = chunk
                .iter()
                .map(|((a, b), _)| if n == 0 { a } else { b }.clone())
                .collect();
            let second: Vec<String> = chunk
                .iter()
                .map(|((a, b), _)| if n == 0 { b } else { a }.clone())
                .collect();
            let shared: Vec<i64> = chunk.iter().map(|(_, &(c, _))| c as i64).collect();
            let adjacent: Vec<i64> = chunk.iter().map(|(_, &(_, a))| a as i64).collect();
            write(
                &parts.join(format!("part-{n:05}.parquet")),
                &[first, second],
                &[shared, adjacent],
                true,
                n == 0,
            );
        }
        let read = read_counts(dir.path()).unwrap();
        assert_eq!(read.by_id(), expected.by_id());
        let table = read.to_counts(h.len(), 1);
        assert_eq!(table.pairs(), 2 * pairs.len());
        assert_eq!(
            expected.to_counts(h.len(), 1),
            Counts::from_baskets(&TrainingSet::new(&h, 0..h.len()).baskets, 1, 1),
            "adjacent counts included, the tables give the counts the estimators count"
        );
    }

    #[test]
    fn pairs_without_the_adjacent_column_read_as_never_adjacent() {
        let dir = tempfile::tempdir().unwrap();
        write_two_items(dir.path());
        write(
            &dir.path().join("pairs.parquet"),
            &[vec!["b".into()], vec!["a".into()]],
            &[vec![2]],
            false,
            false,
        );
        let read = read_counts(dir.path()).unwrap();
        assert_eq!(read.pairs, [(0, 1, 2, 0)]);
        let counts = read.to_counts(3, 1);
        assert_eq!(counts.shared(0, 1), 2);
        assert!(!counts.has_adjacency());
    }

    #[test]
    fn more_adjacent_than_shared_baskets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_two_items(dir.path());
        let pairs = dir.path().join("pairs.parquet");
        write(
            &pairs,
            &[vec!["a".into()], vec!["b".into()]],
            &[vec![2], vec![2]],
            false,
            true,
        );
        assert_eq!(read_counts(dir.path()).unwrap().pairs, [(0, 1, 2, 2)]);
        write(
            &pairs,
            &[vec!["a".into()], vec!["b".into()]],
            &[vec![2], vec![3]],
            false,
            true,
        );
        let error = read_counts(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("adjacent_baskets 3 exceeds its 2 shared baskets"),
            "{error}"
        );
        write(
            &pairs,
            &[vec!["a".into()], vec!["b".into()]],
            &[vec![2], vec![-1]],
            false,
            true,
        );
        let error = read_counts(dir.path()).unwrap_err().to_string();
        assert!(error.contains("negative"), "{error}");
    }

    #[test]
    fn a_pair_naming_an_unknown_item_or_listed_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_two_items(dir.path());
        let pairs = dir.path().join("pairs.parquet");
        write(
            &pairs,
            &[vec!["a".into()], vec!["z".into()]],
            &[vec![1]],
            false,
            true,
        );
        let error = read_counts(dir.path()).unwrap_err().to_string();
        assert!(error.contains("\"z\" is not in items.parquet"), "{error}");
        write(
            &pairs,
            &[vec!["a".into(), "b".into()], vec!["b".into(), "a".into()]],
            &[vec![1, 1]],
            false,
            true,
        );
        let error = read_counts(dir.path()).unwrap_err().to_string();
        assert!(error.contains("listed twice"), "{error}");
        write(
            &pairs,
            &[vec!["a".into()], vec!["b".into()]],
            &[vec![-1]],
            false,
            true,
        );
        let error = read_counts(dir.path()).unwrap_err().to_string();
        assert!(error.contains("negative"), "{error}");
    }
}
