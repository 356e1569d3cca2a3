//! The live model: one `ArcSwap` slot every request reads once, which a reload replaces whole
//! and a catalogue change replaces with a snapshot sharing the model's parts.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use super::Snapshot;

/// Holds the snapshot being served; empty until the first successful load.
#[derive(Debug, Default)]
pub struct ModelHandle {
    current: ArcSwapOption<Snapshot>,
    /// Serialises the writers (reloads and catalogue changes), so neither overwrites a
    /// snapshot the other published without having seen it. Readers never take it.
    publishing: Mutex<()>,
}

impl ModelHandle {
    /// A handle serving `snapshot` from the start.
    pub fn with_snapshot(snapshot: Arc<Snapshot>) -> Self {
        Self {
            current: ArcSwapOption::from(Some(snapshot)),
            publishing: Mutex::new(()),
        }
    }

    /// The snapshot a request should use for its whole life, if one is loaded.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Atomically serves `snapshot` from now on and returns the one it replaced.
    pub fn replace(&self, snapshot: Arc<Snapshot>) -> Option<Arc<Snapshot>> {
        let _publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        self.current.swap(Some(snapshot))
    }

    /// Serves `next` only if `expected` is still the one served (no reload nor other change
    /// came in between); returns whether it did.
    pub fn replace_if_current(&self, expected: &Arc<Snapshot>, next: Arc<Snapshot>) -> bool {
        let _publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load();
        if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, expected)) {
            return false;
        }
        self.current.store(Some(next));
        true
    }
}
