//! Applying live catalogue changes to a snapshot (pure): a new snapshot that shares the
//! version's parts and every unchanged chunk of the catalogue's, so requests see either the
//! whole batch or none of it.
//!
//! An item the version does not know is added: it gets the next index, its title embedding
//! (the function `train` uses, with the idf of the version's titles) and content neighbours
//! among every item, and it joins the content rows of the items it is most similar to, so it
//! is recommended beside them and a cart holding it gets content recommendations.

use std::sync::Arc;

use super::columns::Interner;
use super::snapshot::{flags, ItemAttributes, ItemState, Rows, Snapshot};
use super::text::{words, TitleCorpus};
use super::{NO_CATEGORY, NO_GROUP};
use crate::domain::ItemIndex;

/// Catalogues up to this many items are searched exhaustively for an added item's
/// neighbours; larger ones only among the items that share a title word with it (as `train`
/// does above the same size).
const EXACT_LIMIT: usize = 20_000;

/// Most items of the version an added item is compared with in a larger catalogue.
const CANDIDATES: usize = 2_000;

/// What adding items to a loaded version needs of its titles, built the first time one is
/// added and shared by every snapshot of that load.
#[derive(Debug, Default)]
pub(super) struct TitleSearch {
    /// The idf statistics of the version's titles.
    corpus: TitleCorpus,
    /// The version's items holding each title word (empty up to [`EXACT_LIMIT`] items).
    holders: foldhash::HashMap<u64, Vec<ItemIndex>>,
}

impl TitleSearch {
    fn of(titles: &super::columns::StrColumn) -> Self {
        let all = || (0..titles.len() as u32).map(|i| titles.get(i));
        let corpus = TitleCorpus::of(all());
        let mut holders: foldhash::HashMap<u64, Vec<ItemIndex>> = foldhash::HashMap::default();
        if titles.len() > EXACT_LIMIT {
            let mut hashes = Vec::with_capacity(16);
            for (item, title) in all().enumerate() {
                words(title, &mut hashes);
                for &word in &hashes {
                    holders.entry(word).or_default().push(item as ItemIndex);
                }
            }
        }
        Self { corpus, holders }
    }

    /// The version's items an added item titled `title` is compared with: all of them in a
    /// small catalogue, else the holders of its words, rarest word first, at most
    /// [`CANDIDATES`].
    fn candidates(&self, title: &str, version_items: usize) -> Vec<ItemIndex> {
        if version_items <= EXACT_LIMIT {
            return (0..version_items as ItemIndex).collect();
        }
        let mut hashes = Vec::with_capacity(16);
        words(title, &mut hashes);
        let mut lists: Vec<&[ItemIndex]> = hashes
            .iter()
            .filter_map(|w| self.holders.get(w).map(Vec::as_slice))
            .collect();
        lists.sort_unstable_by_key(|l| l.len());
        let mut out = Vec::with_capacity(CANDIDATES);
        for list in lists {
            let room = CANDIDATES - out.len();
            out.extend_from_slice(&list[..list.len().min(room)]);
            if out.len() == CANDIDATES {
                break;
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// One item's catalogue row as the store holds it now.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueItem {
    /// Item id.
    pub id: String,
    /// Display title.
    pub title: String,
    /// Category name.
    pub category: Option<String>,
    /// Product group shared by the variants of one product.
    pub product_group: Option<String>,
    /// Unit price.
    pub price: Option<f32>,
    /// Whether it can be sold now.
    pub in_stock: bool,
    /// Whether merchandising promotes it.
    pub promoted: bool,
    /// Margin as a fraction of the price, in [0, 1].
    pub margin: Option<f32>,
    /// Withdrawn from recommendations (kept for history).
    pub withdrawn: bool,
    /// The `image_link` attribute, when it is one a page may show (see
    /// `model::build::is_image_link`).
    pub image_link: Option<String>,
    /// The change's position in the catalogue's sequence.
    pub seq: i64,
}

/// How items unknown to the version are added.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddPolicy {
    /// Most items added to one loaded version (the next `train` takes them in).
    pub max_added_items: usize,
    /// Content neighbours per added item.
    pub content_neighbours: usize,
    /// Smallest cosine for a content neighbour.
    pub min_similarity: f32,
}

impl Default for AddPolicy {
    fn default() -> Self {
        Self {
            max_added_items: 10_000,
            content_neighbours: 20,
            min_similarity: 0.3,
        }
    }
}

/// What applying a batch of changes did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogueApplied {
    /// Items of the snapshot whose state changed.
    pub changed: usize,
    /// Items added to the snapshot.
    pub added: usize,
    /// New items left out because the snapshot holds `max_added_items` already.
    pub refused: usize,
}

impl Snapshot {
    /// A snapshot holding `changes` (each the current row of one item) on top of this one's
    /// catalogue state; the model parts are shared.
    pub fn with_catalogue_changes(
        &self,
        changes: &[CatalogueItem],
        policy: &AddPolicy,
    ) -> (Snapshot, CatalogueApplied) {
        let mut next = self.clone();
        let mut applied = CatalogueApplied::default();
        let mut new_items = Vec::new();
        for change in changes {
            next.catalogue_seq = next.catalogue_seq.max(change.seq);
            match next.index_of(&change.id) {
                Some(item) => {
                    set_item(&mut next.attributes, item, change);
                    applied.changed += 1;
                }
                // Nothing to add: a withdrawn item is never recommended.
                None if change.withdrawn => {}
                None if next.added.ids.len() + new_items.len() < policy.max_added_items => {
                    new_items.push(change)
                }
                None => applied.refused += 1,
            }
        }
        if !new_items.is_empty() {
            applied.added = next.add_items(&new_items, policy);
        }
        (next, applied)
    }

    /// Adds items the version does not know, with their embeddings and content neighbours;
    /// returns how many were added.
    fn add_items(&mut self, changes: &[&CatalogueItem], policy: &AddPolicy) -> usize {
        let base = self.items.len();
        let dim = self.embedding_dim();
        let diversity_dim = self.diversity_dim();
        let titles = &self.attributes.titles;
        let search = self.corpus.get_or_init(|| TitleSearch::of(titles));
        let corpus = &search.corpus;
        let added = Arc::make_mut(&mut self.added);
        let mut buffer = Vec::with_capacity(64);
        let mut fresh = Vec::with_capacity(changes.len());
        for change in changes {
            let Ok(k) = added.ids.insert(&change.id) else {
                continue;
            };
            let item = (base + k as usize) as ItemIndex;
            self.attributes.state.push(ItemState::UNKNOWN);
            set_item(&mut self.attributes, item, change);
            let start = added.embeddings.len();
            added.embeddings.resize(start + dim, 0.0);
            corpus.embed_into(
                &change.title,
                self.embedding_seed,
                &mut added.embeddings[start..],
                &mut buffer,
            );
            added
                .diversity
                .resize(added.diversity.len() + diversity_dim, 0.0);
            fresh.push((item, change.title.as_str()));
        }
        if dim > 0 && policy.content_neighbours > 0 {
            let rows = Rows::of(&self.embeddings, &added.embeddings);
            let total = base + added.ids.len();
            for &(item, title) in &fresh {
                // The version's items that may be alike, and every added item.
                let mut others = search.candidates(title, base);
                others.extend(base as ItemIndex..total as ItemIndex);
                let own = nearest(&self.attributes, rows, &others, item, policy);
                for &(other, score) in &own {
                    let (items, scores) = added
                        .content
                        .get(&other)
                        .map(|(i, s)| (i.clone(), s.clone()))
                        .unwrap_or_else(|| {
                            let (i, s) = self.content.row(other);
                            (i.to_vec(), s.to_vec())
                        });
                    if let Some(row) = with_neighbour(items, scores, item, score, policy) {
                        added.content.insert(other, row);
                    }
                }
                let row = own.into_iter().unzip();
                added.content.insert(item, row);
            }
        }
        fresh.len()
    }
}

/// The best content neighbours of `item` among `others` (variants of its own product left
/// out), best first.
fn nearest(
    attributes: &ItemAttributes,
    rows: Rows<'_>,
    others: &[ItemIndex],
    item: ItemIndex,
    policy: &AddPolicy,
) -> Vec<(ItemIndex, f32)> {
    let query = rows.row(item);
    let mut found: Vec<(ItemIndex, f32)> = others
        .iter()
        .copied()
        .filter(|&other| other != item)
        .filter_map(|other| {
            let score: f32 = query.iter().zip(rows.row(other)).map(|(a, b)| a * b).sum();
            (score >= policy.min_similarity).then_some((other, score))
        })
        .filter(|&(other, _)| !attributes.same_product(item, other))
        .collect();
    let by_score =
        |a: &(ItemIndex, f32), b: &(ItemIndex, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if found.len() > policy.content_neighbours {
        found.select_nth_unstable_by(policy.content_neighbours, by_score);
        found.truncate(policy.content_neighbours);
    }
    found.sort_unstable_by(by_score);
    found
}

/// A content row with `item` inserted at its place by `score`, kept at most as long as it
/// was or `content_neighbours`; `None` when `item` would fall off the end.
fn with_neighbour(
    mut items: Vec<ItemIndex>,
    mut scores: Vec<f32>,
    item: ItemIndex,
    score: f32,
    policy: &AddPolicy,
) -> Option<(Vec<ItemIndex>, Vec<f32>)> {
    let limit = items.len().max(policy.content_neighbours);
    if let Some(at) = items.iter().position(|&i| i == item) {
        items.remove(at);
        scores.remove(at);
    }
    let at = scores.partition_point(|&s| s >= score);
    if at >= limit {
        return None;
    }
    items.insert(at, item);
    scores.insert(at, score);
    items.truncate(limit);
    scores.truncate(limit);
    Some((items, scores))
}

/// The index of `name` in an interner shared between snapshots, interning it (on a copy, when
/// shared) when new.
fn intern(names: &mut Arc<Interner>, name: &str) -> u32 {
    match names.get(name) {
        Some(index) => index,
        None => Arc::make_mut(names).intern(name),
    }
}

/// Sets the state of `item` from its catalogue row.
fn set_item(attributes: &mut ItemAttributes, item: ItemIndex, change: &CatalogueItem) {
    let old = attributes.state(item);
    let category = change
        .category
        .as_deref()
        .map_or(NO_CATEGORY, |c| intern(&mut attributes.categories, c));
    let group = change
        .product_group
        .as_deref()
        .map_or(NO_GROUP, |g| intern(&mut attributes.product_groups, g));
    if group != old.product_group {
        let variants = Arc::clone(&attributes.variants);
        let regrouped = Arc::make_mut(&mut attributes.regrouped);
        if old.product_group != NO_GROUP {
            regrouped
                .entry(old.product_group)
                .or_insert_with(|| variants.row(old.product_group).0.to_vec())
                .retain(|&i| i != item);
        }
        if group != NO_GROUP {
            regrouped
                .entry(group)
                .or_insert_with(|| variants.row(group).0.to_vec())
                .push(item);
        }
    }
    let link = change
        .image_link
        .as_deref()
        .filter(|link| super::build::is_image_link(link));
    if attributes.image_link(item) != link {
        Arc::make_mut(&mut attributes.relinked).insert(item, link.map(Into::into));
    }
    let mut state_flags = old.flags & flags::RETITLED;
    if attributes.title(item) != change.title {
        Arc::make_mut(&mut attributes.retitled).insert(item, change.title.as_str().into());
        state_flags |= flags::RETITLED;
    }
    for (on, flag) in [
        (change.in_stock, flags::IN_STOCK),
        (change.promoted, flags::PROMOTED),
        (change.withdrawn, flags::WITHDRAWN),
    ] {
        if on {
            state_flags |= flag;
        }
    }
    let state = ItemState {
        price: change.price.filter(|p| p.is_finite()).unwrap_or(f32::NAN),
        margin: change
            .margin
            .filter(|m| m.is_finite())
            .map_or(0.0, |m| m.clamp(0.0, 1.0)),
        category,
        product_group: group,
        flags: state_flags,
    };
    if let Some(slot) = attributes.state.get_mut(item as usize) {
        *slot = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModelVersion;
    use crate::model::{text, ItemRecord, SnapshotBuilder};

    const TITLES: [(&str, &str); 4] = [
        ("cup", "ROSES REGENCY TEACUP AND SAUCER"),
        ("cup2", "GREEN REGENCY TEACUP AND SAUCER"),
        ("bag", "JUMBO BAG RED RETROSPOT"),
        ("stand", "REGENCY CAKESTAND 3 TIER"),
    ];

    fn snapshot() -> Snapshot {
        let dim = 16;
        let titles: Vec<&str> = TITLES.iter().map(|t| t.1).collect();
        let embeddings = text::embed(&titles, dim, 42);
        let mut b = SnapshotBuilder::new(ModelVersion(1), dim, TITLES.len());
        for (id, title) in TITLES {
            b.add_item(ItemRecord {
                id,
                title: Some(title),
                in_stock: true,
                price: Some(2.0),
                popularity: 1.0,
                ..Default::default()
            })
            .unwrap();
        }
        for (i, (id, _)) in TITLES.iter().enumerate() {
            b.add_embedding(id, &embeddings[i * dim..(i + 1) * dim])
                .unwrap();
        }
        b.finish().unwrap()
    }

    fn change(id: &str, title: &str, in_stock: bool, seq: i64) -> CatalogueItem {
        CatalogueItem {
            id: id.into(),
            title: title.into(),
            category: Some("cups".into()),
            product_group: None,
            price: Some(3.0),
            in_stock,
            promoted: true,
            margin: Some(0.4),
            withdrawn: false,
            image_link: None,
            seq,
        }
    }

    #[test]
    fn a_change_makes_a_new_snapshot_and_leaves_the_old_one_as_it_was() {
        let old = snapshot();
        let cup = old.index_of("cup").unwrap();
        let (new, applied) = old.with_catalogue_changes(
            &[change("cup", "ROSES REGENCY TEACUP AND SAUCER", false, 7)],
            &AddPolicy::default(),
        );
        assert_eq!(applied.changed, 1);
        assert_eq!(new.catalogue_seq(), 7);
        assert!(old.attributes().in_stock(cup) && !new.attributes().in_stock(cup));
        assert!(new.attributes().promoted(cup) && !old.attributes().promoted(cup));
        assert_eq!(new.attributes().price(cup), 3.0);
        assert_eq!(
            new.attributes()
                .category_name(new.attributes().category(cup)),
            Some("cups")
        );
        assert!(new.same_model(&old));
    }

    #[test]
    fn a_new_item_gets_the_trained_embedding_and_joins_its_neighbours_rows() {
        let old = snapshot();
        let title = "BLUE REGENCY TEACUP AND SAUCER";
        let (new, applied) =
            old.with_catalogue_changes(&[change("new", title, true, 3)], &AddPolicy::default());
        assert_eq!(applied.added, 1);
        let item = new.index_of("new").unwrap();
        assert!(!new.in_version(item) && new.attributes().in_stock(item));
        assert_eq!(new.attributes().title(item), title);
        assert_eq!(new.item_id(item), "new");
        // The function train uses, with the version's corpus.
        let titles: Vec<&str> = TITLES.iter().map(|t| t.1).collect();
        let corpus = text::TitleCorpus::of(titles.iter().copied());
        let mut expected = vec![0.0; 16];
        corpus.embed_into(title, 42, &mut expected, &mut Vec::new());
        assert_eq!(new.embedding_slice(item), expected.as_slice());
        let (neighbours, _) = new.content_neighbours(item);
        let cup = new.index_of("cup").unwrap();
        let cups = [cup, new.index_of("cup2").unwrap()];
        assert!(neighbours.len() >= 2, "{neighbours:?}");
        assert!(
            neighbours[..2].iter().all(|n| cups.contains(n)),
            "teacups first: {neighbours:?}"
        );
        assert!(new.content_neighbours(cup).0.contains(&item));
        assert!(old.index_of("new").is_none());
        // Withdrawn items the version does not know are not added.
        let mut gone = change("gone", "GONE", true, 4);
        gone.withdrawn = true;
        let (newer, applied) = new.with_catalogue_changes(&[gone], &AddPolicy::default());
        assert_eq!(applied.added, 0);
        assert!(newer.index_of("gone").is_none());
    }
}
