#![doc = include_str!("../README.md")]
//!
//! ## Layout of the code
//!
//! (What the sections above describe, file by file: the README is the one place for
//! the URL, the schema, generations, the global log and durability.)
//!
//! - [`PgEventStore`] (`events.rs`): the event log, one `events` table, and the
//!   [`SnapshotStore`](ordo_es::SnapshotStore) beside it (`snapshots`). An append is one
//!   statement (one round trip once the pooled connection has prepared it): it reads the
//!   stream's version, inserts every event from `unnest(...)` arrays only when that
//!   version is the expected one, and returns the new rows. UNIQUE (stream_id, version)
//!   turns a lost race into SQLSTATE 23505, reported like a failed guard as
//!   [`StoreError::Conflict`](ordo_es::StoreError::Conflict). The append binds the
//!   stream's partition, computed in Rust; reads of the log name their partitions (a
//!   `LATERAL` index range scan per partition, all in one statement). `partition_log` fixes the
//!   partition count and partitions a log written before partitions, at connect.
//! - [`PgReadStore`] (`read/`): the order read models (order views with indexed
//!   columns, summary counters, top customers, a pg_trgm index for search) and projection
//!   checkpoints; each projection batch commits in one transaction that first moves the
//!   checkpoint by compare-and-set; events a projection cannot apply are parked
//!   (`parked_events`) with the same compare-and-set.
//! - [`PgReadStores`] (`generations.rs`): the
//!   [`ReadStoreProvider`](ordo_domain::ReadStoreProvider): read-store generations in
//!   schemas of their own, for blue-green rebuilds, with a durable pointer to the active
//!   one.
//! - [`PgLeases`] (`leases.rs`): the [`LeaseStore`](ordo_es::LeaseStore) of projection
//!   shards, in the read store's configured schema, with the database's clock.
//! - [`PgKeys`] (`keys.rs`): the [`KeyStore`](ordo_domain::privacy::KeyStore) of
//!   crypto-shredding (customers' wrapped data keys and the record of erasures), in the
//!   event store's schema; an erasure is one transaction, followed by a `VACUUM`.
//! - `db.rs`: what the stores share: the URL's ordo parameters, the pool, error classification
//!   (connection failures are `Unavailable`), and the migration runner.

mod db;
mod durability;
mod events;
mod generations;
mod keys;
mod leases;
mod read;
#[cfg(test)]
mod testdb;

pub use db::DEFAULT_SCHEMA;
pub use events::{PgEventStore, append_sql};
pub use generations::PgReadStores;
pub use keys::PgKeys;
pub use leases::PgLeases;
pub use read::PgReadStore;
