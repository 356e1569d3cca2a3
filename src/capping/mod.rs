//! Frequency capping: how often one shopper has seen an item, and how many lists one session
//! has been shown, behind a [`CapStore`] trait. Shoppers are known only by a keyed hash of
//! their id ([`ShopperKey`]), never by the id itself.

mod breaker;
mod ids;
mod memory;
mod redis;

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

pub use ids::ItemIds;
pub use memory::MemoryCapStore;
pub use redis::RedisCapStore;

/// A pseudonymous shopper (or anonymous session) key: a truncated HMAC-SHA256 of the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShopperKey(pub [u8; 16]);

impl ShopperKey {
    /// The key written as [`ShopperKey::to_hex`] writes it.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let mut key = [0u8; 16];
        for (byte, pair) in key.iter_mut().zip(bytes.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(key))
    }

    /// Lowercase hex, as stored in Postgres.
    pub fn to_hex(self) -> String {
        use std::fmt::Write;
        self.0
            .iter()
            .fold(String::with_capacity(32), |mut out, byte| {
                let _ = write!(out, "{byte:02x}");
                out
            })
    }
}

/// Turns shopper and session ids into keys with a secret, so stored state cannot be joined
/// back to a shopper without the secret.
#[derive(Clone)]
pub struct Pseudonymizer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer([redacted])")
    }
}

impl Pseudonymizer {
    /// A pseudonymizer keyed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self { mac }
    }

    /// The key of the shopper: the user id when given, else the session id.
    pub fn shopper_key(&self, user: Option<&str>, session: Option<&str>) -> Option<ShopperKey> {
        let (kind, id) = match (user, session) {
            (Some(user), _) => (b"user\0".as_slice(), user),
            (None, Some(session)) => (b"session\0".as_slice(), session),
            (None, None) => return None,
        };
        let mut mac = self.mac.clone();
        mac.update(kind);
        mac.update(id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        Some(ShopperKey(key))
    }
}

/// Where capping state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapStoreKind {
    /// In this process (one replica).
    Memory,
    /// In Redis (`REDIS_URL`), shared by every replica.
    Redis,
}

/// Largest `capping.max_impressions_per_item`.
pub const MAX_IMPRESSIONS_PER_ITEM: u32 = 1000;

/// Limits, from the `[capping]` section of the settings. Windows are whole seconds; the
/// in-memory store also counts time in whole seconds, so an impression may leave its window up
/// to a second early.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapPolicy {
    /// Whether capping is applied at all.
    pub enabled: bool,
    /// Where the state lives.
    pub store: CapStoreKind,
    /// Prefix of every Redis key (several deployments can share one Redis).
    pub redis_prefix: String,
    /// Deadline of one Redis round trip; past it the request is served without capping.
    pub redis_timeout_ms: u64,
    /// Consecutive Redis failures after which the store stops calling Redis for
    /// `breaker_open_ms` (requests are served uncapped meanwhile, at no extra latency).
    pub breaker_failures: u32,
    /// How long the breaker stays open before one call probes Redis again.
    pub breaker_open_ms: u64,
    /// Most impressions of one item per shopper within `impression_window_secs`.
    pub max_impressions_per_item: u32,
    /// Sliding window of the per-item cap.
    pub impression_window_secs: u64,
    /// Most non-empty lists per shopper within `response_window_secs` (fatigue).
    pub max_responses_per_window: u32,
    /// Sliding window of the fatigue cap.
    pub response_window_secs: u64,
    /// Whether served items count as impressions (otherwise only reported impressions do).
    pub count_served_as_impressions: bool,
    /// Most shoppers the in-memory store tracks; the least recently seen are forgotten first.
    pub max_shoppers: usize,
    /// Most distinct items tracked per shopper.
    pub max_items_per_shopper: usize,
    /// Most bytes the in-memory store holds in all (its entries and their buffers); the least
    /// recently seen shoppers are forgotten first.
    pub max_memory_bytes: usize,
    /// How long a "not interested" (dismiss event) keeps the item from that shopper.
    pub dismiss_secs: u64,
    /// Whether a click or add-to-cart starts the shopper's fatigue window afresh: a shopper
    /// who engages with the lists is not tired of them.
    pub reset_fatigue_on_engagement: bool,
}

impl Default for CapPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            store: CapStoreKind::Memory,
            redis_prefix: "tandem".into(),
            redis_timeout_ms: 50,
            breaker_failures: 3,
            breaker_open_ms: 1_000,
            max_impressions_per_item: 3,
            impression_window_secs: 86_400,
            max_responses_per_window: 200,
            response_window_secs: 3_600,
            count_served_as_impressions: true,
            max_shoppers: 1_000_000,
            max_items_per_shopper: 512,
            max_memory_bytes: 512 << 20,
            dismiss_secs: 30 * 86_400,
            reset_fatigue_on_engagement: true,
        }
    }
}

impl CapPolicy {
    /// The per-item window.
    pub fn impression_window(&self) -> Duration {
        Duration::from_secs(self.impression_window_secs)
    }

    /// The fatigue window.
    pub fn response_window(&self) -> Duration {
        Duration::from_secs(self.response_window_secs)
    }

    /// How long a dismissal lasts.
    pub fn dismiss_window(&self) -> Duration {
        Duration::from_secs(self.dismiss_secs)
    }

    /// Checks ranges serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_impressions_per_item == 0 || self.max_responses_per_window == 0 {
            return Err("capping limits must be positive".into());
        }
        // The in-memory store keeps this many time slots per item seen.
        if self.max_impressions_per_item > MAX_IMPRESSIONS_PER_ITEM {
            return Err(format!(
                "capping.max_impressions_per_item must be at most {MAX_IMPRESSIONS_PER_ITEM}"
            ));
        }
        if self.impression_window_secs == 0
            || self.response_window_secs == 0
            || self.dismiss_secs == 0
        {
            return Err("capping windows must be positive".into());
        }
        if self.breaker_failures == 0 || self.breaker_open_ms == 0 {
            return Err("capping.breaker_failures and breaker_open_ms must be positive".into());
        }
        if self.redis_timeout_ms == 0 || self.redis_prefix.is_empty() {
            return Err("capping.redis_timeout_ms and redis_prefix must be set".into());
        }
        if self.max_memory_bytes < 1 << 20 {
            return Err("capping.max_memory_bytes must be at least 1 MiB".into());
        }
        if self.max_shoppers == 0 || self.max_items_per_shopper == 0 {
            return Err("capping.max_shoppers and max_items_per_shopper must be positive".into());
        }
        Ok(())
    }
}

/// What a shopper may not see now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapState {
    /// Items at their impression cap.
    pub capped_items: ItemIds,
    /// Whether the shopper has had as many lists as the fatigue cap allows.
    pub fatigued: bool,
    /// Items the shopper said "not interested" in, within the dismiss window.
    pub dismissed_items: ItemIds,
}

/// What a storefront event tells the cap store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// The item was shown (counts toward its cap when served items do not count already).
    Impression,
    /// The shopper clicked the item or put it in the cart.
    Engaged,
    /// The shopper said "not interested".
    Dismissed,
}

/// Where capping state lives (in memory for one process; a shared store for several replicas).
pub trait CapStore: Send + Sync {
    /// The shopper's caps at `now`.
    fn check(&self, shopper: ShopperKey, now: Instant) -> BoxFuture<'_, CapState>;
    /// Records that `items` were shown to the shopper in one list at `now`.
    fn record_served<'a>(
        &'a self,
        shopper: ShopperKey,
        items: &'a [&'a str],
        now: Instant,
    ) -> BoxFuture<'a, ()>;
    /// Records what storefront events said (shopper, item, what) at `now`, all at once (one
    /// round trip for a shared store, however many events a body holds).
    fn record_feedback<'a>(
        &'a self,
        events: &'a [(ShopperKey, &'a str, Feedback)],
        now: Instant,
    ) -> BoxFuture<'a, ()>;
    /// Erases everything stored about the shopper; false when the store could not be reached.
    fn forget(&self, shopper: ShopperKey) -> BoxFuture<'_, bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impression_caps_are_bounded() {
        let policy = |max| CapPolicy {
            max_impressions_per_item: max,
            ..CapPolicy::default()
        };
        assert!(policy(MAX_IMPRESSIONS_PER_ITEM).validate().is_ok());
        let error = policy(MAX_IMPRESSIONS_PER_ITEM + 1).validate().unwrap_err();
        assert!(error.contains("max_impressions_per_item"), "{error}");
        assert!(policy(0).validate().is_err());
    }

    #[test]
    fn keys_depend_on_the_secret_and_the_kind_of_id() {
        let a = Pseudonymizer::new(b"one");
        let b = Pseudonymizer::new(b"two");
        let user = a.shopper_key(Some("u1"), None).unwrap();
        assert_eq!(Some(user), a.shopper_key(Some("u1"), Some("s9")));
        assert_ne!(Some(user), b.shopper_key(Some("u1"), None));
        assert_ne!(Some(user), a.shopper_key(None, Some("u1")));
        assert_eq!(a.shopper_key(None, None), None);
        assert!(!format!("{a:?}").contains("one"));
        assert_eq!(ShopperKey::from_hex(&user.to_hex()), Some(user));
        assert_eq!(ShopperKey::from_hex("zz"), None);
    }
}
