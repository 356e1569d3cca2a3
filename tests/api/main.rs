//! Integration tests against a real Postgres (a fresh database per test) and a real server on
//! a free port. `scripts/test` provides the Postgres when `DATABASE_URL` is not set.

mod browser;
mod capping;
mod catalogue;
mod demo;
mod events;
mod faults;
mod golden;
mod helpers;
mod hostile;
mod offline;
mod operations;
mod recommendations;
mod reload;
mod replicas;
mod spark_counts;
