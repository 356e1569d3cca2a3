//! The live model: one `ArcSwap` slot every request reads once and a reload replaces whole.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::Snapshot;

/// Holds the snapshot being served; empty until the first successful load.
#[derive(Debug, Default)]
pub struct ModelHandle {
    current: ArcSwapOption<Snapshot>,
}

impl ModelHandle {
    /// A handle serving `snapshot` from the start.
    pub fn with_snapshot(snapshot: Arc<Snapshot>) -> Self {
        Self {
            current: ArcSwapOption::from(Some(snapshot)),
        }
    }

    /// The snapshot a request should use for its whole life, if one is loaded.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Atomically serves `snapshot` from now on and returns the one it replaced.
    pub fn replace(&self, snapshot: Arc<Snapshot>) -> Option<Arc<Snapshot>> {
        self.current.swap(Some(snapshot))
    }
}
