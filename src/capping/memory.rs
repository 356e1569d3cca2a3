//! The in-memory cap store: one process's view, bounded in memory, entries expiring with
//! their windows. Sharded so concurrent requests rarely contend for a lock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use futures_util::future::BoxFuture;

use super::{CapPolicy, CapState, CapStore, Feedback, ShopperKey};

const SHARDS: usize = 16;

#[derive(Debug, Default)]
struct ShopperState {
    last_seen: Option<Instant>,
    /// Per item, the times it was shown (the newest `max_impressions_per_item` kept).
    items: Vec<(Box<str>, Vec<Instant>)>,
    /// Times a non-empty list was served.
    responses: Vec<Instant>,
    /// Items dismissed ("not interested") and when.
    dismissed: Vec<(Box<str>, Instant)>,
}

/// Frequency-capping state of this process.
#[derive(Debug)]
pub struct MemoryCapStore {
    policy: CapPolicy,
    shards: Vec<Mutex<HashMap<ShopperKey, ShopperState>>>,
}

impl MemoryCapStore {
    /// An empty store enforcing `policy`.
    pub fn new(policy: CapPolicy) -> Self {
        Self {
            policy,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &ShopperKey) -> &Mutex<HashMap<ShopperKey, ShopperState>> {
        &self.shards[key.0[0] as usize % SHARDS]
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
        let item_window = self.policy.impression_window();
        let limit = self.policy.max_impressions_per_item as usize;
        let capped_items = state
            .items
            .iter()
            .filter(|(_, times)| {
                times
                    .iter()
                    .filter(|&&t| now.saturating_duration_since(t) < item_window)
                    .count()
                    >= limit
            })
            .map(|(id, _)| id.to_string())
            .collect();
        let response_window = self.policy.response_window();
        let fatigued = state
            .responses
            .iter()
            .filter(|&&t| now.saturating_duration_since(t) < response_window)
            .count()
            >= self.policy.max_responses_per_window as usize;
        let dismiss_window = self.policy.dismiss_window();
        let dismissed_items = state
            .dismissed
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(*t) < dismiss_window)
            .map(|(id, _)| id.to_string())
            .collect();
        CapState {
            capped_items,
            fatigued,
            dismissed_items,
        }
    }

    /// The shopper's state, made room for and created when new.
    fn entry<'s>(
        &self,
        shard: &'s mut HashMap<ShopperKey, ShopperState>,
        key: ShopperKey,
        now: Instant,
    ) -> &'s mut ShopperState {
        let per_shard_limit = self.policy.max_shoppers.div_ceil(SHARDS).max(1);
        if !shard.contains_key(&key) && shard.len() >= per_shard_limit {
            self.evict(shard, now, per_shard_limit);
        }
        let state = shard.entry(key).or_default();
        state.last_seen = Some(now);
        state
    }

    fn feedback_at(&self, key: ShopperKey, item: &str, feedback: Feedback, now: Instant) {
        let Ok(mut shard) = self.shard(&key).lock() else {
            return;
        };
        match feedback {
            Feedback::Impression if !self.policy.count_served_as_impressions => {
                let state = self.entry(&mut shard, key, now);
                self.count_impression(state, item, now);
            }
            Feedback::Impression => {}
            Feedback::Engaged if self.policy.reset_fatigue_on_engagement => {
                if let Some(state) = shard.get_mut(&key) {
                    state.responses.clear();
                }
            }
            Feedback::Engaged => {}
            Feedback::Dismissed => {
                let window = self.policy.dismiss_window();
                let limit = self.policy.max_items_per_shopper;
                let state = self.entry(&mut shard, key, now);
                state
                    .dismissed
                    .retain(|(id, t)| &**id != item && now.saturating_duration_since(*t) < window);
                if state.dismissed.len() >= limit {
                    state.dismissed.remove(0);
                }
                state.dismissed.push((item.into(), now));
            }
        }
    }

    fn record_at(&self, key: ShopperKey, items: &[&str], now: Instant) {
        let Ok(mut shard) = self.shard(&key).lock() else {
            return;
        };
        let state = self.entry(&mut shard, key, now);
        let response_window = self.policy.response_window();
        state
            .responses
            .retain(|&t| now.saturating_duration_since(t) < response_window);
        state.responses.push(now);
        if !self.policy.count_served_as_impressions {
            return;
        }
        for &id in items {
            self.count_impression(state, id, now);
        }
    }

    /// One impression of `id` for the shopper `state`.
    fn count_impression(&self, state: &mut ShopperState, id: &str, now: Instant) {
        let policy = &self.policy;
        let item_window = policy.impression_window();
        let keep = policy.max_impressions_per_item as usize;
        let times = match state.items.iter().position(|(known, _)| &**known == id) {
            Some(at) => &mut state.items[at].1,
            None => {
                if state.items.len() >= policy.max_items_per_shopper {
                    // Forget the item seen longest ago.
                    if let Some(oldest) = state
                        .items
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, (_, times))| times.last().copied())
                        .map(|(i, _)| i)
                    {
                        state.items.swap_remove(oldest);
                    }
                }
                state.items.push((id.into(), Vec::with_capacity(keep)));
                match state.items.last_mut() {
                    Some(entry) => &mut entry.1,
                    None => return,
                }
            }
        };
        times.retain(|&t| now.saturating_duration_since(t) < item_window);
        if times.len() >= keep {
            times.remove(0);
        }
        times.push(now);
    }

    /// Drops expired shoppers; if the shard is still full, the least recently seen one.
    fn evict(&self, shard: &mut HashMap<ShopperKey, ShopperState>, now: Instant, limit: usize) {
        let horizon = self
            .policy
            .impression_window()
            .max(self.policy.response_window())
            .max(self.policy.dismiss_window());
        shard.retain(|_, s| {
            s.last_seen
                .is_some_and(|t| now.saturating_duration_since(t) < horizon)
        });
        if shard.len() >= limit {
            if let Some(oldest) = shard
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
            {
                shard.remove(&oldest);
            }
        }
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
                shard.remove(&shopper);
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
}
