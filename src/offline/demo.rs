//! The embedded demo: a model trained at start-up on a bundled sample of the real Online
//! Retail history (`data/demo/`, compiled into the binary), so `tandem serve` answers real
//! carts with no database.

use std::time::{Duration, Instant};

use super::estimators::{Estimator, MeasureParams};
use super::history::History;
use super::orders::{ReadError, ReadOptions};
use super::progress::Progress;
use super::train::{self, TrainError, TrainParams};
use crate::domain::ModelVersion;
use crate::model::{ModelError, Snapshot};

/// The bundled sample: two months of the UCI Online Retail data (CC BY 4.0, see
/// `data/demo/README.md`).
pub const DEMO_ORDERS: &[u8] = include_bytes!("../../data/demo/online_retail_sample.csv.gz");

/// The version number the demo model reports (no database version has number 0).
pub const DEMO_VERSION: ModelVersion = ModelVersion(0);

/// Why the demo model could not be built (a bug or a corrupt binary: the input is fixed).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The bundled file did not parse.
    #[error("cannot read the bundled orders: {0}")]
    Read(#[from] ReadError),
    /// Training failed.
    #[error("cannot train the demo model: {0}")]
    Train(#[from] TrainError),
    /// The trained model did not make a valid snapshot.
    #[error("invalid demo snapshot: {0}")]
    Model(#[from] ModelError),
}

/// What building the demo took.
#[derive(Debug, Clone, Copy)]
pub struct DemoStats {
    /// Cleaned baskets trained on.
    pub baskets: usize,
    /// Items in the model.
    pub items: usize,
    /// Co-purchase pairs kept.
    pub pairs: usize,
    /// Wall time of reading and training.
    pub elapsed: Duration,
}

/// The training parameters the demo uses by default: the best estimator of `tandem evaluate`.
pub fn demo_params() -> TrainParams {
    TrainParams {
        measure: MeasureParams {
            estimator: Estimator::Ease,
            ..MeasureParams::default()
        },
        ..TrainParams::default()
    }
}

/// Reads the bundled sample and trains the demo model with `params`.
pub fn build_demo_snapshot_with(params: &TrainParams) -> Result<(Snapshot, DemoStats), DemoError> {
    let started = Instant::now();
    let (history, _report) = History::read(DEMO_ORDERS, &ReadOptions::default())?;
    let model = train::train(&history, 0..history.len(), params, &Progress::hidden())?;
    let snapshot = model.to_snapshot(DEMO_VERSION)?;
    let stats = DemoStats {
        baskets: model.stats.baskets,
        items: model.stats.items,
        pairs: model.stats.co_purchase.pairs_kept,
        elapsed: started.elapsed(),
    };
    Ok((snapshot, stats))
}

/// [`build_demo_snapshot_with`] the default [`demo_params`].
pub fn build_demo_snapshot() -> Result<(Snapshot, DemoStats), DemoError> {
    build_demo_snapshot_with(&demo_params())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_model_is_trained_on_the_bundled_sample() {
        // BM25 keeps this fast in debug builds; the estimator does not change what is checked.
        let params = TrainParams {
            measure: MeasureParams {
                estimator: Estimator::Bm25,
                ..MeasureParams::default()
            },
            ..TrainParams::default()
        };
        let (snapshot, stats) = build_demo_snapshot_with(&params).unwrap();
        assert!(stats.baskets > 3500, "{stats:?}");
        assert!(stats.items > 2500, "{stats:?}");
        assert_eq!(snapshot.len(), stats.items);
        let tea = snapshot
            .index_of("22697")
            .expect("a green regency teacup is in the sample");
        assert!(!snapshot.co_purchase(tea).0.is_empty());
        assert!(snapshot.attributes().title(tea).contains("TEACUP"));
        assert!(
            snapshot.index_of("POST").is_none(),
            "postage is not a product"
        );
    }
}
