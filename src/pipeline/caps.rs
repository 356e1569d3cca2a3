//! What the pipeline may know of a shopper's frequency caps and "not interested" items: the
//! [`CapView`] it reads, with no caps at all for evaluation and benchmarks ([`NoCaps`]) and a
//! shopper's current ones for serving ([`CappedItems`]).

use crate::domain::ItemIndex;

/// What the pipeline may know of a shopper's frequency caps and "not interested" items.
pub trait CapView {
    /// Every item that must not be shown to this shopper now.
    fn blocked(&self) -> &[ItemIndex];
    /// Whether `item` must not be shown to this shopper now.
    fn is_capped(&self, item: ItemIndex) -> bool {
        self.blocked().contains(&item)
    }
    /// Items the shopper said "not interested" in (their close neighbours are demoted).
    fn dismissed(&self) -> &[ItemIndex] {
        &[]
    }
}

/// No caps: anonymous or opted-out shoppers, evaluation, benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCaps;

impl CapView for NoCaps {
    fn blocked(&self) -> &[ItemIndex] {
        &[]
    }
}

/// A shopper's capped and dismissed items (both kept off the list), sorted for binary search.
#[derive(Debug, Clone, Default)]
pub struct CappedItems {
    blocked: Vec<ItemIndex>,
    dismissed: Vec<ItemIndex>,
}

impl CappedItems {
    /// The capped set from any list of items.
    pub fn new(items: Vec<ItemIndex>) -> Self {
        Self::with_dismissed(items, Vec::new())
    }

    /// Capped items and dismissed ones.
    pub fn with_dismissed(capped: Vec<ItemIndex>, mut dismissed: Vec<ItemIndex>) -> Self {
        dismissed.sort_unstable();
        dismissed.dedup();
        let mut blocked = capped;
        blocked.extend_from_slice(&dismissed);
        blocked.sort_unstable();
        blocked.dedup();
        Self { blocked, dismissed }
    }
}

impl CapView for CappedItems {
    fn blocked(&self) -> &[ItemIndex] {
        &self.blocked
    }

    fn is_capped(&self, item: ItemIndex) -> bool {
        self.blocked.binary_search(&item).is_ok()
    }

    fn dismissed(&self) -> &[ItemIndex] {
        &self.dismissed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dismissed_items_are_blocked_too_and_both_are_searchable() {
        let caps = CappedItems::with_dismissed(vec![9, 2, 9], vec![5, 2]);
        assert_eq!(caps.blocked(), [2, 5, 9]);
        assert_eq!(caps.dismissed(), [2, 5]);
        assert!(caps.is_capped(5) && caps.is_capped(9) && !caps.is_capped(3));
        assert!(!NoCaps.is_capped(0) && NoCaps.dismissed().is_empty());
    }
}
