//! The live catalogue: validating item writes (`PUT`, `PATCH`, `POST /items`, feeds), storing
//! them through `store` (Postgres first, then `NOTIFY`), and following the changes every
//! replica announces, so each serves them within a second without a model reload.
//!
//! A replica applies changes by reading every item changed after the last change its
//! snapshot holds (one query), and publishing one new snapshot for all of them: a burst of
//! changes costs a few swaps, a missed notification costs nothing once the next one (or a
//! reconnection) comes, and a request sees a batch whole or not at all.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;

use crate::domain::validate_id;
use crate::model::{AddPolicy, CatalogueApplied, ModelHandle, Snapshot};
use crate::store::{self, StoredItem, StoredItemRow};

/// Most items in one `POST /items` body.
pub const MAX_BATCH_ITEMS: usize = 10_000;

/// Longest title, in bytes.
pub const MAX_TITLE_BYTES: usize = 1_000;

/// Longest category, brand or product group, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Largest `attributes` object, in bytes of JSON.
pub const MAX_ATTRIBUTES_BYTES: usize = 8 * 1024;

/// Most problems one error message lists.
const MAX_LISTED_PROBLEMS: usize = 20;

/// Most changed items a replica reads at once when catching up.
const CHANGES_PER_READ: i64 = 100_000;

/// A field that may be absent (keep), `null` (clear) or a value.
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// One item as a request body gives it. In a `PUT` or a batch, an absent field takes its
/// default; in a `PATCH` it keeps its stored value, and `null` clears an optional one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    /// Item id: required in a batch; in a `PUT` or `PATCH`, the path's when given.
    #[serde(default)]
    pub id: Option<String>,
    /// Display title.
    #[serde(default)]
    pub title: Option<String>,
    /// Category name.
    #[serde(default, deserialize_with = "present")]
    pub category: Option<Option<String>>,
    /// Brand.
    #[serde(default, deserialize_with = "present")]
    pub brand: Option<Option<String>>,
    /// Product group shared by the variants of one product.
    #[serde(default, deserialize_with = "present")]
    pub product_group: Option<Option<String>>,
    /// Unit price, non-negative.
    #[serde(default, deserialize_with = "present")]
    pub price: Option<Option<f64>>,
    /// Whether it can be sold now.
    #[serde(default)]
    pub in_stock: Option<bool>,
    /// Merchant Center availability, instead of `in_stock`.
    #[serde(default)]
    pub availability: Option<String>,
    /// Whether merchandising promotes it.
    #[serde(default)]
    pub promoted: Option<bool>,
    /// Margin as a fraction of the price, 0 to 1.
    #[serde(default, deserialize_with = "present")]
    pub margin: Option<Option<f64>>,
    /// The shop's own attributes: a JSON object.
    #[serde(default)]
    pub attributes: Option<Map<String, Value>>,
}

/// Whether a Merchant Center `availability` means the item can be sold now: only `in stock`
/// does. `preorder` and `backorder` items are orderable but would delay the basket they are
/// recommended into, so they are treated as out of stock. `None` for an unknown value.
pub fn availability_in_stock(availability: &str) -> Option<bool> {
    match availability
        .trim()
        .to_ascii_lowercase()
        .replace('_', " ")
        .as_str()
    {
        "in stock" => Some(true),
        "out of stock" | "preorder" | "backorder" => Some(false),
        _ => None,
    }
}

fn check_name(field: &str, value: &Option<String>) -> Result<(), String> {
    match value {
        Some(v) if v.is_empty() || v.len() > MAX_NAME_BYTES || v.chars().any(char::is_control) => {
            Err(format!(
                "{field} must be 1 to {MAX_NAME_BYTES} bytes without control characters"
            ))
        }
        _ => Ok(()),
    }
}

/// Checks an item id (1 to 128 bytes, no control characters).
pub fn check_item_id(id: &str) -> Result<(), String> {
    validate_id(id).map_err(|e| format!("id {:?} is invalid: {e}", shown(id)))
}

fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

impl ItemInput {
    /// `stored` with this input's fields applied (`stored` is the default item for a `PUT`).
    fn apply(self, mut stored: StoredItem) -> Result<StoredItem, String> {
        if let Some(title) = self.title {
            if title.len() > MAX_TITLE_BYTES || title.chars().any(char::is_control) {
                return Err(format!(
                    "title must be at most {MAX_TITLE_BYTES} bytes without control characters"
                ));
            }
            stored.title = title;
        }
        for (field, value, slot) in [
            ("category", self.category, &mut stored.category),
            ("brand", self.brand, &mut stored.brand),
            (
                "product_group",
                self.product_group,
                &mut stored.product_group,
            ),
        ] {
            if let Some(value) = value {
                check_name(field, &value)?;
                *slot = value;
            }
        }
        if let Some(price) = self.price {
            if price.is_some_and(|p| !p.is_finite() || p < 0.0 || p > f64::from(f32::MAX)) {
                return Err("price must be a finite number, 0 or more".into());
            }
            stored.price = price.map(|p| p as f32);
        }
        match (self.in_stock, self.availability) {
            (Some(_), Some(_)) => {
                return Err("give in_stock or availability, not both".into());
            }
            (Some(in_stock), None) => stored.in_stock = in_stock,
            (None, Some(availability)) => {
                stored.in_stock = availability_in_stock(&availability).ok_or_else(|| {
                    format!(
                        "availability must be \"in stock\", \"out of stock\", \"preorder\" or \
                         \"backorder\", not {:?}",
                        shown(&availability)
                    )
                })?;
            }
            (None, None) => {}
        }
        if let Some(promoted) = self.promoted {
            stored.promoted = promoted;
        }
        if let Some(margin) = self.margin {
            if margin.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
                return Err("margin must be a number from 0 to 1".into());
            }
            stored.margin = margin.map(|m| m as f32);
        }
        if let Some(attributes) = self.attributes {
            let attributes = Value::Object(attributes);
            if attributes.to_string().len() > MAX_ATTRIBUTES_BYTES {
                return Err(format!(
                    "attributes must be at most {MAX_ATTRIBUTES_BYTES} bytes of JSON"
                ));
            }
            stored.attributes = attributes;
        }
        Ok(stored)
    }

    /// The item a `PUT` or a batch entry makes: every field given or defaulted (in stock, not
    /// promoted, not withdrawn).
    pub fn into_item(mut self, id: &str) -> Result<StoredItem, String> {
        check_item_id(id)?;
        if self.id.as_deref().is_some_and(|given| given != id) {
            return Err("id in the body differs from the id in the path".into());
        }
        if self.title.is_none() {
            return Err("title is required".into());
        }
        self.id = None;
        self.apply(StoredItem {
            id: id.to_owned(),
            title: String::new(),
            category: None,
            brand: None,
            product_group: None,
            price: None,
            in_stock: true,
            promoted: false,
            margin: None,
            attributes: Value::Object(Map::new()),
            withdrawn: false,
        })
    }
}

/// Why a body of items is refused; the message names each bad entry.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct InvalidItems {
    /// What is wrong, entry by entry.
    pub message: String,
}

/// Parses one item body (`PUT` or `PATCH`).
pub fn parse_item(body: &[u8]) -> Result<ItemInput, InvalidItems> {
    serde_json::from_slice(body).map_err(|e| InvalidItems {
        message: format!("the body must be a JSON object of item fields: {e}"),
    })
}

/// Parses and validates a batch: a JSON array of up to [`MAX_BATCH_ITEMS`] items, each with
/// its `id`, ids distinct; all or nothing.
pub fn parse_batch(body: &[u8]) -> Result<Vec<StoredItem>, InvalidItems> {
    let invalid = |message: String| InvalidItems { message };
    let values: Vec<Value> = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body must be a JSON array of items: {e}")))?;
    if values.is_empty() {
        return Err(invalid("the array holds no item".into()));
    }
    if values.len() > MAX_BATCH_ITEMS {
        return Err(invalid(format!(
            "at most {MAX_BATCH_ITEMS} items per request, not {}",
            values.len()
        )));
    }
    let mut problems = Vec::new();
    let mut items = Vec::with_capacity(values.len());
    let mut seen = foldhash::HashMap::default();
    for (index, value) in values.into_iter().enumerate() {
        let item = serde_json::from_value::<ItemInput>(value)
            .map_err(|e| e.to_string())
            .and_then(|input| {
                let id = input.id.clone().ok_or("id is required")?;
                input.into_item(&id)
            })
            .and_then(|item| match seen.insert(item.id.clone(), index) {
                Some(first) => Err(format!("id {:?} is also item {first}", shown(&item.id))),
                None => Ok(item),
            });
        match item {
            Ok(item) => items.push(item),
            Err(problem) => problems.push(format!("item {index}: {problem}")),
        }
    }
    if problems.is_empty() {
        return Ok(items);
    }
    let more = problems.len().saturating_sub(MAX_LISTED_PROBLEMS);
    problems.truncate(MAX_LISTED_PROBLEMS);
    let mut message = problems.join("; ");
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    Err(invalid(message))
}

/// Why a catalogue call failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The server runs without a database.
    #[error("the catalogue needs a database and none is configured")]
    NoDatabase,
    /// The input is invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidItems),
    /// The catalogue has no such item.
    #[error("the catalogue has no item {0:?}")]
    NotFound(String),
    /// Postgres failed or could not be reached.
    #[error("the database failed or could not be reached; retry (a write is idempotent)")]
    Database(#[from] sqlx::Error),
}

/// What this replica serves for an item.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServedState {
    /// The model version served.
    pub model_version: crate::domain::ModelVersion,
    /// Whether that version was trained with the item (else the live catalogue added it).
    pub in_model: bool,
    /// Whether it may be recommended now (in stock, not withdrawn).
    pub recommendable: bool,
    /// The stock flag served.
    pub in_stock: bool,
    /// The price served (none when unknown).
    pub price: Option<f32>,
    /// The last catalogue change this replica applied.
    pub catalogue_change: i64,
}

/// `GET /items/{id}`: the stored item, and what this replica serves for it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ItemView {
    /// Item id.
    pub id: String,
    /// Display title.
    pub title: String,
    /// Category.
    pub category: Option<String>,
    /// Brand.
    pub brand: Option<String>,
    /// Product group.
    pub product_group: Option<String>,
    /// Unit price.
    pub price: Option<f32>,
    /// Whether it can be sold now.
    pub in_stock: bool,
    /// Whether merchandising promotes it.
    pub promoted: bool,
    /// Margin, 0 to 1.
    pub margin: Option<f32>,
    /// The shop's own attributes.
    pub attributes: Value,
    /// Withdrawn from recommendations.
    pub withdrawn: bool,
    /// Number of its last catalogue change (none when it never changed through the catalogue).
    pub change: Option<i64>,
    /// What this replica serves for it (none when the served model does not hold it).
    pub served: Option<ServedState>,
}

/// The catalogue service: writes through `store`, applies changes to the live model.
pub struct Catalogue {
    pool: Option<PgPool>,
    model: Arc<ModelHandle>,
    policy: AddPolicy,
    /// One catch-up at a time: the writers and the follower that wait for it find their
    /// changes applied by the one before them, instead of each reading and publishing.
    applying: tokio::sync::Mutex<()>,
}

impl Catalogue {
    /// A catalogue writing to `pool` (none: every write fails with `NoDatabase`) and applying
    /// changes to `model`.
    pub fn new(pool: Option<PgPool>, model: Arc<ModelHandle>, policy: AddPolicy) -> Self {
        Self {
            pool,
            model,
            policy,
            applying: tokio::sync::Mutex::new(()),
        }
    }

    fn pool(&self) -> Result<&PgPool, CatalogueError> {
        self.pool.as_ref().ok_or(CatalogueError::NoDatabase)
    }

    /// `PUT /items/{id}`: creates or replaces an item (its withdrawal too), then serves it
    /// here before answering.
    pub async fn put(&self, id: &str, input: ItemInput) -> Result<ItemView, CatalogueError> {
        let item = input
            .into_item(id)
            .map_err(|message| InvalidItems { message })?;
        let change = store::upsert_items(self.pool()?, std::slice::from_ref(&item), true).await?;
        self.apply(Some(change)).await;
        self.view(id).await
    }

    /// `PATCH /items/{id}`: changes the given fields of a stored item.
    pub async fn patch(&self, id: &str, input: ItemInput) -> Result<ItemView, CatalogueError> {
        check_item_id(id).map_err(|message| InvalidItems { message })?;
        if input.id.as_deref().is_some_and(|given| given != id) {
            return Err(InvalidItems {
                message: "id in the body differs from the id in the path".into(),
            }
            .into());
        }
        let outcome = store::update_item(self.pool()?, id, |current| match current {
            None => Err(CatalogueError::NotFound(id.to_owned())),
            Some(current) => input
                .apply(current)
                .map(Some)
                .map_err(|message| InvalidItems { message }.into()),
        })
        .await?;
        self.apply(outcome?).await;
        self.view(id).await
    }

    /// `DELETE /items/{id}`: withdraws an item from recommendations (the row stays).
    pub async fn withdraw(&self, id: &str) -> Result<ItemView, CatalogueError> {
        check_item_id(id).map_err(|message| InvalidItems { message })?;
        let outcome = store::update_item(self.pool()?, id, |current| match current {
            None => Err(CatalogueError::NotFound(id.to_owned())),
            Some(current) => Ok(Some(StoredItem {
                withdrawn: true,
                ..current
            })),
        })
        .await?;
        self.apply(outcome?).await;
        self.view(id).await
    }

    /// `POST /items`: creates or replaces a validated batch in one transaction; returns the
    /// number of its last change.
    pub async fn upsert(&self, items: &[StoredItem]) -> Result<i64, CatalogueError> {
        let last = store::upsert_items(self.pool()?, items, true).await?;
        self.apply(Some(last)).await;
        Ok(last)
    }

    /// `GET /items/{id}`.
    pub async fn view(&self, id: &str) -> Result<ItemView, CatalogueError> {
        check_item_id(id).map_err(|message| InvalidItems { message })?;
        let StoredItemRow { item, seq } = store::stored_item(self.pool()?, id)
            .await?
            .ok_or_else(|| CatalogueError::NotFound(id.to_owned()))?;
        let snapshot = self.model.current();
        let served = snapshot.as_deref().and_then(|s| served_state(s, id));
        Ok(ItemView {
            id: item.id,
            title: item.title,
            category: item.category,
            brand: item.brand,
            product_group: item.product_group,
            price: item.price,
            in_stock: item.in_stock,
            promoted: item.promoted,
            margin: item.margin,
            attributes: item.attributes,
            withdrawn: item.withdrawn,
            change: seq,
            served,
        })
    }

    /// Applies the changes up to `through` (every change there is, when `None`), unless the
    /// served snapshot holds them already. A writer calls it with its own change, so this
    /// replica serves its writes before answering (the others follow the announcement).
    async fn apply(&self, through: Option<i64>) {
        let Some(pool) = &self.pool else {
            return;
        };
        let _applying = self.applying.lock().await;
        let served = self.model.current().map(|s| s.catalogue_seq());
        if through.is_some_and(|change| served.is_some_and(|served| served >= change)) {
            return;
        }
        if let Err(error) = catch_up(pool, &self.model, self.policy).await {
            tracing::warn!(%error, "cannot apply catalogue changes; the follower retries");
        }
    }

    /// Applies every change announced by any replica (or a feed import), for as long as the
    /// process runs: LISTENs for announcements and catches up after each, and after every
    /// (re)connection, so a replica that missed announcements is never left stale.
    pub async fn follow(self: Arc<Self>, retry: Duration) {
        let Some(pool) = self.pool.clone() else {
            return;
        };
        loop {
            let mut listener = match store::CatalogueListener::connect(&pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?retry, "cannot listen for catalogue changes");
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            loop {
                self.apply(None).await;
                // A notification, or a reconnection (announcements may have been lost
                // meanwhile): either way, read what changed.
                if let Err(error) = listener.next().await {
                    tracing::warn!(%error, retry_in = ?retry, "catalogue listener failed");
                    tokio::time::sleep(retry).await;
                    break;
                }
            }
        }
    }
}

/// What this replica serves for `id` in `snapshot`.
fn served_state(snapshot: &Snapshot, id: &str) -> Option<ServedState> {
    let item = snapshot.index_of(id)?;
    let attributes = snapshot.attributes();
    let price = attributes.price(item);
    Some(ServedState {
        model_version: snapshot.version(),
        in_model: snapshot.in_version(item),
        recommendable: attributes.in_stock(item),
        in_stock: attributes.stocked(item),
        price: (!price.is_nan()).then_some(price),
        catalogue_change: snapshot.catalogue_seq(),
    })
}

/// Applies to the served snapshot every catalogue change after the last one it holds, and
/// publishes the result, unless another snapshot (a reload) was published meanwhile, in
/// which case it starts over on that one. Nothing to do before the first load (the load
/// reads the catalogue).
pub async fn catch_up(
    pool: &PgPool,
    model: &ModelHandle,
    policy: AddPolicy,
) -> Result<CatalogueApplied, CatchUpError> {
    let mut total = CatalogueApplied::default();
    loop {
        let Some(current) = model.current() else {
            return Ok(total);
        };
        let changes =
            store::catalogue_changes_after(pool, current.catalogue_seq(), CHANGES_PER_READ).await?;
        if changes.is_empty() {
            return Ok(total);
        }
        let full = changes.len() as i64 == CHANGES_PER_READ;
        let base = Arc::clone(&current);
        let (next, applied) = tokio::task::spawn_blocking(move || {
            let (next, applied) = base.with_catalogue_changes(&changes, &policy);
            (Arc::new(next), applied)
        })
        .await
        .map_err(|e| CatchUpError::Task(e.to_string()))?;
        if !model.replace_if_current(&current, next) {
            continue;
        }
        total.changed += applied.changed;
        total.added += applied.added;
        total.refused += applied.refused;
        if applied.refused > 0 {
            tracing::warn!(
                refused = applied.refused,
                max = policy.max_added_items,
                "new catalogue items not served until the next model version"
            );
        }
        if !full {
            return Ok(total);
        }
    }
}

/// A snapshot freshly loaded, with every catalogue change applied (items the version does
/// not know added): what a reload publishes.
pub async fn with_catalogue(
    pool: &PgPool,
    snapshot: Snapshot,
    policy: AddPolicy,
) -> Result<Snapshot, CatchUpError> {
    let mut snapshot = snapshot;
    loop {
        let changes =
            store::catalogue_changes_after(pool, snapshot.catalogue_seq(), CHANGES_PER_READ)
                .await?;
        if changes.is_empty() {
            return Ok(snapshot);
        }
        let full = changes.len() as i64 == CHANGES_PER_READ;
        snapshot = tokio::task::spawn_blocking(move || {
            snapshot.with_catalogue_changes(&changes, &policy).0
        })
        .await
        .map_err(|e| CatchUpError::Task(e.to_string()))?;
        if !full {
            return Ok(snapshot);
        }
    }
}

/// Why catalogue changes could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// Postgres failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The CPU-bound apply task died.
    #[error("catalogue apply task failed: {0}")]
    Task(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_names_every_bad_entry_by_index() {
        let body = br#"[
            {"id": "a", "title": "A", "price": 1.5, "availability": "in stock"},
            {"id": "b", "title": "B", "price": -1},
            {"id": "c", "title": "C", "colour": "red"},
            {"title": "D"},
            {"id": "a", "title": "A again"},
            {"id": "e", "title": "E", "margin": 1.5, "availability": "sold"}
        ]"#;
        let message = parse_batch(body).unwrap_err().message;
        assert!(message.contains("item 1: price"), "{message}");
        assert!(
            message.contains("item 2: unknown field `colour`"),
            "{message}"
        );
        assert!(message.contains("item 3: id is required"), "{message}");
        assert!(
            message.contains("item 4: id \"a\" is also item 0"),
            "{message}"
        );
        assert!(message.contains("item 5:"), "{message}");
        assert!(!message.contains("item 0:"), "{message}");
    }

    #[test]
    fn availability_maps_to_stock() {
        assert_eq!(availability_in_stock("in stock"), Some(true));
        assert_eq!(availability_in_stock("in_stock"), Some(true));
        assert_eq!(availability_in_stock("Out of Stock"), Some(false));
        assert_eq!(availability_in_stock("preorder"), Some(false));
        assert_eq!(availability_in_stock("backorder"), Some(false));
        assert_eq!(availability_in_stock("soon"), None);
    }

    #[test]
    fn a_put_defaults_what_it_does_not_give_and_a_patch_keeps_it() {
        let item = parse_item(br#"{"title": "Mug", "category": "kitchen", "margin": 0.25}"#)
            .unwrap()
            .into_item("mug")
            .unwrap();
        assert!(item.in_stock && !item.promoted && !item.withdrawn);
        assert_eq!(item.margin, Some(0.25));
        let patched = parse_item(br#"{"in_stock": false, "category": null}"#)
            .unwrap()
            .apply(item.clone())
            .unwrap();
        assert!(!patched.in_stock);
        assert_eq!(patched.category, None);
        assert_eq!(patched.title, "Mug");
        assert_eq!(patched.margin, Some(0.25));
        assert!(parse_item(br#"{"price": 1}"#)
            .unwrap()
            .into_item("x")
            .is_err());
        assert!(parse_item(br#"{"title": "x", "attributes": []}"#).is_err());
    }
}
