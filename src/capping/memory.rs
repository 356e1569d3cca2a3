//! The in-memory cap store: one process's view, bounded in memory, entries expiring with
//! their windows. Sharded so concurrent requests rarely contend for a lock.
//!
//! Two bounds hold whatever the input: `max_shoppers` (and `max_items_per_shopper` per
//! shopper), and `max_memory_bytes` on what the entries and their buffers hold, counted as
//! each one changes; a shard over its share forgets its least recently seen shoppers.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::Instant;

use foldhash::{HashMap, HashMapExt};
use futures_util::future::BoxFuture;

use super::{CapPolicy, CapState, CapStore, Feedback, ItemIds, ShopperKey};
use crate::metrics::Metrics;

const SHARDS: usize = 16;

/// A full shard forgets this share of its shoppers at once (the least recently seen), so
/// making room costs one pass over the shard per that many new shoppers, not one per shopper.
const EVICT_SHARE: usize = 16;

/// An empty impression slot.
const NO_TIME: u32 = u32::MAX;

/// Whole seconds since the store was created: times are kept as `u32` (a tenth of an
/// `Instant`'s size, good for 136 years); windows are whole seconds too.
type Secs = u32;

/// Whether `t` lies within `window` seconds before `now`.
fn within(now: Secs, t: Secs, window: u64) -> bool {
    t != NO_TIME && u64::from(now.saturating_sub(t)) < window
}

#[derive(Debug, Default)]
struct ShopperState {
    last_seen: Secs,
    /// Items shown, in the order first shown.
    items: ItemIds,
    /// `max_impressions_per_item` slots per entry of `items` (the same position), holding
    /// the times it was shown, oldest first, then [`NO_TIME`].
    times: Vec<Secs>,
    /// Times a non-empty list was served.
    responses: Vec<Secs>,
    /// Items dismissed ("not interested") and when.
    dismissed: Vec<(Box<str>, Secs)>,
}

/// What a shopper's entry costs in the map beyond its buffers: key and state, with the hash
/// table's control byte and its room to spare (it grows at 7/8 full).
const ENTRY_BYTES: usize =
    (std::mem::size_of::<ShopperKey>() + std::mem::size_of::<ShopperState>() + 1) * 8 / 7;

impl ShopperState {
    /// The bytes this shopper holds: the entry and every buffer's capacity.
    fn bytes(&self) -> usize {
        ENTRY_BYTES
            + self.items.heap_bytes()
            + self.times.capacity() * std::mem::size_of::<Secs>()
            + self.responses.capacity() * std::mem::size_of::<Secs>()
            + self.dismissed.capacity() * std::mem::size_of::<(Box<str>, Secs)>()
            + self.dismissed.iter().map(|(id, _)| id.len()).sum::<usize>()
    }

    /// The impression slots of the item at `at`.
    fn slots(&mut self, at: usize, keep: usize) -> &mut [Secs] {
        &mut self.times[at * keep..(at + 1) * keep]
    }

    /// Forgets the item at `at`.
    fn remove_item(&mut self, at: usize, keep: usize) {
        self.items.remove(at);
        self.times.drain(at * keep..(at + 1) * keep);
    }
}

/// One shard: its shoppers and the bytes they hold.
#[derive(Debug, Default)]
struct Shard {
    /// Keys are already keyed hashes that clients cannot choose, so foldhash's fast hasher
    /// serves where std's SipHash cost more per lookup.
    shoppers: HashMap<ShopperKey, ShopperState>,
    bytes: usize,
}

impl Deref for Shard {
    type Target = HashMap<ShopperKey, ShopperState>;

    fn deref(&self) -> &Self::Target {
        &self.shoppers
    }
}

impl DerefMut for Shard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.shoppers
    }
}

/// Frequency-capping state of this process.
pub struct MemoryCapStore {
    policy: CapPolicy,
    epoch: Instant,
    shards: Vec<Mutex<Shard>>,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for MemoryCapStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCapStore")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl MemoryCapStore {
    /// An empty store enforcing `policy`.
    pub fn new(policy: CapPolicy) -> Self {
        Self {
            policy,
            epoch: Instant::now(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        shoppers: HashMap::new(),
                        bytes: 0,
                    })
                })
                .collect(),
            metrics: None,
        }
    }

    /// An empty store enforcing `policy` that reports the bytes it holds in `metrics`.
    pub fn with_metrics(policy: CapPolicy, metrics: Metrics) -> Self {
        Self {
            metrics: Some(metrics),
            ..Self::new(policy)
        }
    }

    fn shard(&self, key: &ShopperKey) -> &Mutex<Shard> {
        &self.shards[key.0[0] as usize % SHARDS]
    }

    /// Bytes the store holds (the sum [`ShopperState::bytes`] of every shopper).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.bytes))
            .sum()
    }

    /// Moves a shard's count of bytes by `delta` (and the metric with it).
    fn count(&self, shard: &mut Shard, delta: isize) {
        shard.bytes = shard.bytes.saturating_add_signed(delta);
        if let Some(metrics) = &self.metrics {
            metrics.capping_memory_bytes(delta as i64);
        }
    }

    /// Removes the shoppers `forget` picks, and their bytes from the count.
    fn remove_where(
        &self,
        shard: &mut Shard,
        mut forget: impl FnMut(&ShopperKey, &ShopperState) -> bool,
    ) {
        let mut freed = 0usize;
        shard.shoppers.retain(|key, state| {
            if forget(key, state) {
                freed += state.bytes();
                false
            } else {
                true
            }
        });
        self.count(shard, -(freed as isize));
    }

    /// Changes the shopper `key`'s state (created when new) with `change`, counts the bytes
    /// it gained or lost, and makes room when the shard is over its share of the bytes.
    fn update(
        &self,
        shard: &mut Shard,
        key: ShopperKey,
        now: Secs,
        change: impl FnOnce(&Self, &mut ShopperState),
    ) {
        let before = shard.get(&key).map_or(0, ShopperState::bytes);
        let state = self.entry(shard, key, now);
        change(self, state);
        let after = state.bytes();
        self.count(shard, after as isize - before as isize);
        let budget = (self.policy.max_memory_bytes / SHARDS).max(1);
        if shard.bytes > budget {
            self.evict_bytes(shard, now, key, budget);
        }
    }

    /// Brings a shard over its `budget` of bytes down to 15/16 of it: expired shoppers first,
    /// then the least recently seen, never `keep` (the shopper just written) unless it alone
    /// is over the budget.
    fn evict_bytes(&self, shard: &mut Shard, now: Secs, keep: ShopperKey, budget: usize) {
        let horizon = self.horizon();
        self.remove_where(shard, |_, s| !within(now, s.last_seen, horizon));
        let target = budget - budget / EVICT_SHARE;
        if shard.bytes <= target {
            return;
        }
        let mut by_age: Vec<(Secs, ShopperKey, usize)> = shard
            .iter()
            .filter(|(k, _)| **k != keep)
            .map(|(k, s)| (s.last_seen, *k, s.bytes()))
            .collect();
        by_age.sort_unstable_by_key(|&(seen, _, _)| seen);
        let mut over = shard.bytes - target;
        let mut forget = foldhash::HashSet::default();
        for (_, key, bytes) in by_age {
            if over == 0 {
                break;
            }
            over = over.saturating_sub(bytes);
            forget.insert(key);
        }
        if over > 0 {
            forget.insert(keep);
        }
        self.remove_where(shard, |k, _| forget.contains(k));
    }

    /// How long a shopper's state can matter: the longest window.
    fn horizon(&self) -> u64 {
        let policy = &self.policy;
        policy
            .impression_window_secs
            .max(policy.response_window_secs)
            .max(policy.dismiss_secs)
    }

    /// `now` in the store's seconds.
    fn secs(&self, now: Instant) -> Secs {
        let secs = now.saturating_duration_since(self.epoch).as_secs();
        secs.min(u64::from(NO_TIME - 1)) as Secs
    }

    /// Impression slots per item (the policy's cap; at least one, so a policy that skipped
    /// validation cannot make the slots empty).
    fn keep(&self) -> usize {
        (self.policy.max_impressions_per_item as usize).max(1)
    }

    /// Number of shoppers tracked (for metrics and tests).
    pub fn shoppers(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    fn state_at(&self, key: ShopperKey, now: Instant) -> CapState {
        // A poisoned lock only means another request panicked mid-update; capping is advisory,
        // so fail open rather than fail the request.
        let Ok(shard) = self.shard(&key).lock() else {
            return CapState::default();
        };
        let Some(state) = shard.get(&key) else {
            return CapState::default();
        };
        let now = self.secs(now);
        let policy = &self.policy;
        let keep = self.keep();
        // At the cap: every one of the item's slots holds an impression within the window.
        let capped_items = state.items.select(|at| {
            state
                .times
                .get(at * keep..(at + 1) * keep)
                .is_some_and(|slots| {
                    slots
                        .iter()
                        .all(|&t| within(now, t, policy.impression_window_secs))
                })
        });
        let fatigued = state
            .responses
            .iter()
            .filter(|&&t| within(now, t, policy.response_window_secs))
            .count()
            >= policy.max_responses_per_window as usize;
        let dismissed_items = state
            .dismissed
            .iter()
            .filter(|(_, t)| within(now, *t, policy.dismiss_secs))
            .map(|(id, _)| &**id)
            .collect();
        CapState {
            capped_items,
            fatigued,
            dismissed_items,
        }
    }

    /// The shopper's state, made room for and created when new.
    fn entry<'s>(&self, shard: &'s mut Shard, key: ShopperKey, now: Secs) -> &'s mut ShopperState {
        let per_shard_limit = self.policy.max_shoppers.div_ceil(SHARDS).max(1);
        if !shard.contains_key(&key) && shard.len() >= per_shard_limit {
            self.evict(shard, now, per_shard_limit);
        }
        let state = shard.shoppers.entry(key).or_default();
        state.last_seen = now;
        state
    }

    fn feedback_at(&self, key: ShopperKey, item: &str, feedback: Feedback, now: Instant) {
        let Ok(mut shard) = self.shard(&key).lock() else {
            return;
        };
        let now = self.secs(now);
        match feedback {
            Feedback::Impression if !self.policy.count_served_as_impressions => {
                self.update(&mut shard, key, now, |store, state| {
                    store.count_impression(state, item, now);
                });
            }
            Feedback::Impression => {}
            Feedback::Engaged if self.policy.reset_fatigue_on_engagement => {
                if let Some(state) = shard.get_mut(&key) {
                    state.responses.clear();
                }
            }
            Feedback::Engaged => {}
            Feedback::Dismissed => {
                let window = self.policy.dismiss_secs;
                let limit = self.policy.max_items_per_shopper;
                self.update(&mut shard, key, now, |_, state| {
                    state
                        .dismissed
                        .retain(|(id, t)| &**id != item && within(now, *t, window));
                    if state.dismissed.len() >= limit {
                        state.dismissed.remove(0);
                    }
                    state.dismissed.push((item.into(), now));
                });
            }
        }
    }

    fn record_at(&self, key: ShopperKey, items: &[&str], now: Instant) {
        let Ok(mut shard) = self.shard(&key).lock() else {
            return;
        };
        let now = self.secs(now);
        self.update(&mut shard, key, now, |store, state| {
            store.record_list(state, items, now);
        });
    }

    /// One list of `items` shown to the shopper `state` at `now`.
    fn record_list(&self, state: &mut ShopperState, items: &[&str], now: Secs) {
        let response_window = self.policy.response_window_secs;
        state.responses.retain(|&t| within(now, t, response_window));
        state.responses.push(now);
        // Only the newest `max_responses_per_window` can decide fatigue; older ones would
        // only grow the list when lists are recorded past the cap (concurrent requests of one
        // shopper, or a caller that does not stop at fatigue).
        let most = (self.policy.max_responses_per_window as usize).max(1);
        while state.responses.len() > most {
            // The oldest, wherever it is: two requests of one shopper can record their
            // seconds out of order (each takes its time before the lock), and only the count
            // within the window matters, not the order.
            let oldest = (0..state.responses.len())
                .min_by_key(|&i| state.responses[i])
                .unwrap_or(0);
            state.responses.swap_remove(oldest);
        }
        if !self.policy.count_served_as_impressions {
            return;
        }
        if state.items.is_empty() {
            // A new shopper's buffers sized for the list at once: grown item by item they
            // were copied several times per list. (Only then: a returning shopper's list is
            // mostly items already held, and reserving for all of it would waste memory.)
            let id_bytes: usize = items.iter().map(|id| id.len()).sum();
            state.items.reserve_exact(items.len(), id_bytes);
            state.times.reserve_exact(items.len() * self.keep());
        }
        for &id in items {
            self.count_impression(state, id, now);
        }
    }

    /// One impression of `id` for the shopper `state`.
    fn count_impression(&self, state: &mut ShopperState, id: &str, now: Secs) {
        let keep = self.keep();
        let at = match state.items.position(id) {
            Some(at) => at,
            None => {
                if state.items.len() >= self.policy.max_items_per_shopper {
                    // Forget the item seen longest ago (its newest time is the oldest).
                    let newest =
                        |slots: &[Secs]| slots.iter().filter(|&&t| t != NO_TIME).max().copied();
                    if let Some(oldest) = state
                        .times
                        .chunks_exact(keep)
                        .enumerate()
                        .min_by_key(|(_, slots)| newest(slots))
                        .map(|(i, _)| i)
                    {
                        state.remove_item(oldest, keep);
                    }
                }
                state.items.push(id);
                state.times.resize(state.items.len() * keep, NO_TIME);
                state.items.len() - 1
            }
        };
        let window = self.policy.impression_window_secs;
        let slots = state.slots(at, keep);
        // Keep the times still within the window, in order, then add this one (dropping the
        // oldest when every slot is taken).
        let mut live = 0;
        for i in 0..slots.len() {
            if within(now, slots[i], window) {
                slots[live] = slots[i];
                live += 1;
            }
        }
        slots[live..].fill(NO_TIME);
        if live == slots.len() {
            // Drop the oldest: concurrent requests can record times slightly out of order.
            let oldest = (0..live).min_by_key(|&i| slots[i]).unwrap_or(0);
            slots[oldest..].rotate_left(1);
            live -= 1;
        }
        slots[live] = now;
    }

    /// Drops expired shoppers; if the shard is still full, the least recently seen
    /// 1/[`EVICT_SHARE`] of it.
    fn evict(&self, shard: &mut Shard, now: Secs, limit: usize) {
        let horizon = self.horizon();
        self.remove_where(shard, |_, s| !within(now, s.last_seen, horizon));
        if shard.len() < limit {
            return;
        }
        let forget = (limit / EVICT_SHARE).max(1);
        let mut seen: Vec<Secs> = shard.values().map(|s| s.last_seen).collect();
        let (older, &mut threshold, _) = seen.select_nth_unstable(forget - 1);
        // Everyone seen before the threshold second goes, and as many of those seen in it as
        // make `forget` in all.
        let mut in_threshold_second = forget - older.iter().filter(|&&t| t < threshold).count();
        self.remove_where(shard, |_, s| {
            if s.last_seen < threshold {
                true
            } else if s.last_seen == threshold && in_threshold_second > 0 {
                in_threshold_second -= 1;
                true
            } else {
                false
            }
        });
    }
}

impl CapStore for MemoryCapStore {
    fn check(&self, shopper: ShopperKey, now: Instant) -> BoxFuture<'_, CapState> {
        let state = self.state_at(shopper, now);
        Box::pin(std::future::ready(state))
    }

    fn record_served<'a>(
        &'a self,
        shopper: ShopperKey,
        items: &'a [&'a str],
        now: Instant,
    ) -> BoxFuture<'a, ()> {
        self.record_at(shopper, items, now);
        Box::pin(std::future::ready(()))
    }

    fn record_feedback<'a>(
        &'a self,
        events: &'a [(ShopperKey, &'a str, Feedback)],
        now: Instant,
    ) -> BoxFuture<'a, ()> {
        for &(shopper, item, feedback) in events {
            self.feedback_at(shopper, item, feedback, now);
        }
        Box::pin(std::future::ready(()))
    }

    fn forget(&self, shopper: ShopperKey) -> BoxFuture<'_, bool> {
        let forgotten = match self.shard(&shopper).lock() {
            Ok(mut shard) => {
                if let Some(state) = shard.shoppers.remove(&shopper) {
                    self.count(&mut shard, -(state.bytes() as isize));
                }
                true
            }
            Err(_) => false,
        };
        Box::pin(std::future::ready(forgotten))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> CapPolicy {
        CapPolicy {
            max_impressions_per_item: 2,
            impression_window_secs: 60,
            max_responses_per_window: 3,
            response_window_secs: 10,
            max_shoppers: 32,
            max_items_per_shopper: 4,
            ..CapPolicy::default()
        }
    }

    #[test]
    fn an_item_is_capped_after_n_impressions_until_the_window_passes() {
        let store = MemoryCapStore::new(policy());
        let key = ShopperKey([1; 16]);
        let t0 = Instant::now();
        store.record_at(key, &["a", "b"], t0);
        assert!(store.state_at(key, t0).capped_items.is_empty());
        store.record_at(key, &["a"], t0 + Duration::from_secs(1));
        assert_eq!(
            store
                .state_at(key, t0 + Duration::from_secs(2))
                .capped_items,
            ["a"]
        );
        assert!(store
            .state_at(key, t0 + Duration::from_secs(61))
            .capped_items
            .is_empty());
        assert!(store
            .state_at(ShopperKey([2; 16]), t0)
            .capped_items
            .is_empty());
    }

    #[test]
    fn an_item_with_one_impression_out_of_the_window_is_not_capped() {
        let store = MemoryCapStore::new(policy());
        let key = ShopperKey([10; 16]);
        let t0 = Instant::now();
        store.record_at(key, &["a"], t0);
        store.record_at(key, &["a"], t0 + Duration::from_secs(50));
        assert_eq!(
            store
                .state_at(key, t0 + Duration::from_secs(55))
                .capped_items,
            ["a"]
        );
        // The first impression has left the 60 s window; the second has not.
        assert!(store
            .state_at(key, t0 + Duration::from_secs(61))
            .capped_items
            .is_empty());
        store.record_at(key, &["a"], t0 + Duration::from_secs(62));
        assert_eq!(
            store
                .state_at(key, t0 + Duration::from_secs(63))
                .capped_items,
            ["a"]
        );
    }

    #[test]
    fn a_session_is_fatigued_after_m_lists_within_the_window() {
        let store = MemoryCapStore::new(policy());
        let key = ShopperKey([3; 16]);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(!store.state_at(key, t0 + Duration::from_secs(i)).fatigued);
            store.record_at(key, &["x"], t0 + Duration::from_secs(i));
        }
        assert!(store.state_at(key, t0 + Duration::from_secs(3)).fatigued);
        assert!(!store.state_at(key, t0 + Duration::from_secs(12)).fatigued);
    }

    #[test]
    fn lists_recorded_past_the_fatigue_cap_do_not_grow_the_state() {
        let store = MemoryCapStore::new(policy());
        let key = ShopperKey([8; 16]);
        let t0 = Instant::now();
        for _ in 0..50 {
            store.record_at(key, &["x"], t0);
        }
        assert!(store.state_at(key, t0).fatigued);
        let shard = store.shard(&key).lock().unwrap();
        assert_eq!(shard[&key].responses.len(), 3);
    }

    #[test]
    fn the_bound_on_responses_drops_the_oldest_even_when_recorded_out_of_order() {
        let store = MemoryCapStore::new(policy());
        let key = ShopperKey([9; 16]);
        let t0 = Instant::now() + Duration::from_secs(100);
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // Fatigue is 3 lists within 10 s. The list at 1 s is recorded last, after the ones at
        // 7, 8 and 9 s: the bound must drop it, not the one at 7 s.
        for secs in [7, 8, 9, 1] {
            store.record_at(key, &["x"], at(secs));
        }
        assert!(
            store.state_at(key, at(16)).fatigued,
            "7, 8 and 9 s are all within 10 s of 16 s"
        );
        assert!(
            !store.state_at(key, at(17)).fatigued,
            "7 s has left the window"
        );
    }

    #[test]
    fn a_dismissed_item_is_kept_from_the_shopper_for_the_dismiss_window() {
        let store = MemoryCapStore::new(CapPolicy {
            dismiss_secs: 100,
            ..policy()
        });
        let key = ShopperKey([4; 16]);
        let t0 = Instant::now();
        store.feedback_at(key, "mug", Feedback::Dismissed, t0);
        store.feedback_at(key, "mug", Feedback::Dismissed, t0 + Duration::from_secs(5));
        let state = store.state_at(key, t0 + Duration::from_secs(50));
        assert_eq!(
            state.dismissed_items,
            ["mug"],
            "once, however often dismissed"
        );
        assert!(store
            .state_at(key, t0 + Duration::from_secs(106))
            .dismissed_items
            .is_empty());
    }

    #[test]
    fn engagement_resets_fatigue_and_reported_impressions_count_when_served_ones_do_not() {
        let store = MemoryCapStore::new(CapPolicy {
            count_served_as_impressions: false,
            ..policy()
        });
        let key = ShopperKey([5; 16]);
        let t0 = Instant::now();
        for i in 0..3 {
            store.record_at(key, &["x"], t0 + Duration::from_secs(i));
        }
        assert!(store.state_at(key, t0 + Duration::from_secs(3)).fatigued);
        assert!(
            store.state_at(key, t0).capped_items.is_empty(),
            "served ones do not count"
        );
        store.feedback_at(key, "x", Feedback::Engaged, t0 + Duration::from_secs(3));
        assert!(!store.state_at(key, t0 + Duration::from_secs(3)).fatigued);
        store.feedback_at(key, "x", Feedback::Impression, t0);
        store.feedback_at(key, "x", Feedback::Impression, t0);
        assert_eq!(store.state_at(key, t0).capped_items, ["x"]);
    }

    #[test]
    fn forgetting_an_item_keeps_the_others_counts_with_them() {
        let store = MemoryCapStore::new(policy());
        let key = ShopperKey([6; 16]);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for (s, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            store.record_at(key, &[id], at(s as u64));
        }
        store.record_at(key, &["b"], at(4));
        // A fifth item: "a", seen longest ago, is forgotten.
        store.record_at(key, &["e"], at(5));
        store.record_at(key, &["c"], at(6));
        let state = store.state_at(key, at(7));
        assert_eq!(state.capped_items, ["b", "c"]);
        let shard = store.shard(&key).lock().unwrap();
        let ids: Vec<&str> = shard[&key].items.iter().collect();
        assert_eq!(ids, ["b", "c", "d", "e"]);
    }

    /// Shopper `i` of the first shard (the first key byte picks the shard).
    fn key(i: u32) -> ShopperKey {
        let mut key = [0u8; 16];
        key[4..8].copy_from_slice(&i.to_le_bytes());
        ShopperKey(key)
    }

    #[test]
    fn a_full_store_forgets_the_shoppers_seen_longest_ago() {
        let store = MemoryCapStore::new(CapPolicy {
            max_shoppers: SHARDS * 32,
            ..policy()
        });
        let t0 = Instant::now();
        // Four shoppers a second.
        for i in 0..100u32 {
            store.record_at(key(i), &["a"], t0 + Duration::from_secs(u64::from(i) / 4));
        }
        assert!(store.shoppers() <= 32, "{}", store.shoppers());
        let known = |i| store.shard(&key(i)).lock().unwrap().contains_key(&key(i));
        assert!(known(99), "the newest shopper stays");
        assert!(!known(0), "the oldest is forgotten");
    }

    #[test]
    fn a_full_shard_forgets_exactly_a_sixteenth_when_many_share_the_oldest_second() {
        let limit = 64;
        let store = MemoryCapStore::new(CapPolicy {
            max_shoppers: SHARDS * limit,
            ..policy()
        });
        let t0 = Instant::now();
        // One shard filled by two shoppers seen in second 0, forty in second 1 (the sixteenth
        // to forget ends among these) and the rest in second 2.
        for i in 0..limit as u32 {
            let second = match i {
                0..2 => 0,
                2..42 => 1,
                _ => 2,
            };
            store.record_at(key(i), &["a"], t0 + Duration::from_secs(second));
        }
        assert_eq!(store.shoppers(), limit);
        store.record_at(key(1000), &["a"], t0 + Duration::from_secs(3));
        assert_eq!(store.shoppers(), limit - limit / EVICT_SHARE + 1);
    }

    #[test]
    fn memory_stays_bounded_in_shoppers_and_items() {
        let store = MemoryCapStore::new(policy());
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&i.to_le_bytes());
            store.record_at(ShopperKey(key), &["a", "b", "c", "d", "e", "f"], t0);
        }
        assert!(store.shoppers() <= 32, "{}", store.shoppers());
        let key = ShopperKey([9; 16]);
        for i in 0..100 {
            store.record_at(key, &[&format!("item{i}")], t0 + Duration::from_millis(i));
        }
        let shard = store.shard(&key).lock().unwrap();
        assert_eq!(shard[&key].items.len(), 4);
    }

    #[test]
    fn the_bytes_held_stay_within_the_budget_whatever_the_input() {
        let budget = 1 << 20;
        let store = MemoryCapStore::new(CapPolicy {
            max_memory_bytes: budget,
            max_shoppers: 10_000_000,
            max_items_per_shopper: 100_000,
            ..CapPolicy::default()
        });
        let t0 = Instant::now();
        let long = "x".repeat(120);
        // One shopper with ever more dismissed ids, then many shoppers with a list each.
        let one = ShopperKey([7; 16]);
        for i in 0..20_000u32 {
            let id = format!("{long}{i}");
            store.feedback_at(one, &id, Feedback::Dismissed, t0);
            assert!(store.bytes() <= budget, "{} after {i}", store.bytes());
        }
        for i in 0..50_000u32 {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&i.to_le_bytes());
            let ids: Vec<String> = (0..10).map(|j| format!("{long}{i}-{j}")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let at = t0 + Duration::from_secs(u64::from(i / 1000));
            store.record_at(ShopperKey(key), &ids, at);
        }
        assert!(store.bytes() <= budget, "{}", store.bytes());
        assert!(store.bytes() > budget / 2, "the budget is used, not wasted");
        let newest = {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&49_999u32.to_le_bytes());
            ShopperKey(key)
        };
        assert!(store.shard(&newest).lock().unwrap().contains_key(&newest));
        let counted: usize = store
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap()
                    .values()
                    .map(ShopperState::bytes)
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(counted, store.bytes(), "the running count is the sum");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(runtime.block_on(store.forget(newest)));
        let counted: usize = store
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap()
                    .values()
                    .map(ShopperState::bytes)
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(counted, store.bytes());
    }
}
