//! Finding items by title, for the explorer: every word of the query in the title (ASCII
//! letters match in either case), most popular first. A scan of the titles in popularity order
//! that stops at the limit: no index to build or keep, and at a million items a search that
//! matches little costs one pass over the title bytes.

use crate::domain::ItemIndex;

use super::Snapshot;

/// Up to `limit` items whose id is `query`, then whose title holds every word of `query`,
/// most popular first.
pub fn find_by_title(snapshot: &Snapshot, query: &str, limit: usize) -> Vec<ItemIndex> {
    let words: Vec<&[u8]> = query.split_whitespace().map(str::as_bytes).collect();
    let mut found = Vec::with_capacity(limit.min(64));
    if limit == 0 || words.is_empty() {
        return found;
    }
    let exact = snapshot.index_of(query.trim());
    found.extend(exact);
    let titles = snapshot.attributes();
    for &item in snapshot.by_popularity() {
        if found.len() >= limit {
            break;
        }
        if Some(item) == exact {
            continue;
        }
        let title = titles.title(item).as_bytes();
        if words
            .iter()
            .all(|word| contains_ignoring_ascii_case(title, word))
        {
            found.push(item);
        }
    }
    found
}

fn contains_ignoring_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len()
        && haystack
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModelVersion;
    use crate::model::{ItemRecord, SnapshotBuilder};

    #[test]
    fn every_word_matches_in_any_case_most_popular_first() {
        let mut builder = SnapshotBuilder::new(ModelVersion(1), 0, 4);
        for (id, title, popularity) in [
            ("a", "Regency cake stand", 1.0),
            ("b", "GREEN REGENCY TEACUP", 5.0),
            ("c", "Jam making set", 9.0),
            ("d", "Regency teapot", 3.0),
        ] {
            builder
                .add_item(ItemRecord {
                    id,
                    title: Some(title),
                    popularity,
                    in_stock: true,
                    ..Default::default()
                })
                .unwrap();
        }
        let snapshot = builder.finish().unwrap();
        let ids = |query: &str, limit| -> Vec<&str> {
            find_by_title(&snapshot, query, limit)
                .into_iter()
                .map(|i| snapshot.item_id(i))
                .collect()
        };
        assert_eq!(ids("regency", 10), ["b", "d", "a"]);
        assert_eq!(ids("REGENCY tea", 10), ["b", "d"]);
        assert_eq!(ids("regency", 1), ["b"]);
        assert_eq!(ids("c", 2), ["c", "b"], "an exact id first");
        assert!(ids("   ", 10).is_empty());
        assert!(ids("saucer", 10).is_empty());
    }
}
