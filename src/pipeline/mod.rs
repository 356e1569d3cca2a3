//! The scoring pipeline: from a cart to a short list of complementary items with reasons.
//!
//! Pure: no I/O, no async, no framework types. [`recommend`] is the one entry point the server,
//! the evaluator and the benchmarks all call. Its inputs and output each have a file
//! (`request`, `config`, `caps`, `recommendation`), the orchestrator is `recommend`, and each
//! stage has its own: candidates, signals (blend), guard rails, DPP diversity, explain.

mod candidates;
mod caps;
mod config;
pub mod dpp;
mod explain;
#[cfg(test)]
pub(crate) mod fixtures;
mod guard;
mod recommend;
mod recommendation;
mod request;
mod signals;
pub mod vector;

pub use caps::{CapView, CappedItems, NoCaps};
pub use config::{PipelineConfig, TouchpointConfig};
pub use explain::{reason_text, ReasonText};
pub use recommend::recommend;
pub use recommendation::{Contributions, Reason, ReasonKind, Recommendation, Recommendations};
pub use request::{Request, MAX_K, MAX_PURCHASED_ITEMS, MAX_PURCHASED_SENT};
