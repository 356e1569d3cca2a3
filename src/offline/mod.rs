//! The offline side: importing order history and product feeds, training model versions,
//! evaluating them, and the embedded demo model.

pub mod behaviour;
pub mod cli;
pub mod content;
pub mod counts_file;
pub mod demo;
pub mod derived_items;
pub mod estimators;
pub mod evaluate;
pub mod feed;
pub mod history;
pub mod import;
pub mod order_generator;
pub mod orders;
pub mod privacy;
pub mod progress;
pub mod report;
pub mod synthetic;
pub mod train;
pub mod tune;
