//! Tandem: a cross-sell recommendation service. "What else belongs in this basket?"
//!
//! The library holds everything; `main.rs` only parses the command line and calls in here.

pub mod app;
pub mod capping;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod domain;
pub mod events;
pub mod experiments;
pub mod http;
pub mod huge_pages;
pub mod metrics;
pub mod model;
pub mod offline;
pub mod pipeline;
pub mod reload;
pub mod serving;
pub mod store;
pub mod telemetry;
