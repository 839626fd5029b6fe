//! # ordo-sqlite: the embedded store
//!
//! ordo's default backend: events and read models in SQLite files under the data dir,
//! no server needed.
//!
//! ## Layout
//!
//! - [`SqliteEventStore`] (`events.rs`): the event log. One writer thread owns the write
//!   connection and commits the appends of all concurrent commands that are waiting in
//!   one transaction (group commit): each append runs in its own SAVEPOINT, so a conflict
//!   rolls back only that append, and the batch costs one fsync (`synchronous=FULL`).
//!   Readers use a small pool of WAL read connections on blocking threads.
//! - [`SqliteReadStore`] (`read/`): the order read models (views, summary counters,
//!   top customers, an FTS5 trigram index for search) and projection checkpoints, each
//!   projection batch in one transaction with its checkpoint.
//! - [`SqliteReadStores`] (`generations.rs`): generations of the read store for
//!   blue-green rebuilds, with a durable pointer to the active one.
//! - [`SqliteKeys`] (`keys.rs`): the key store of crypto-shredding (customers' wrapped
//!   data keys and the record of erasures), in a file of its own (`keys.sqlite`) so that
//!   no copy of the event store holds key material; an erasure zeroes the key's bytes
//!   (`secure_delete`) and empties the log.
//! - `pool.rs`: the read-connection pool of the event and read stores.
//! - The [`EventRewriter`](ordo_es::EventRewriter) of one-time migrations (`events.rs`):
//!   a rewrite is one UPDATE transaction on the writer thread; the events file runs with
//!   `secure_delete` on, so overwritten content is zeroed, and a purge rebuilds the file
//!   (`VACUUM`) and empties the write-ahead log (`wal_checkpoint(TRUNCATE)`).
//!
//! ## Durability
//!
//! Events: WAL with `synchronous=FULL`: an acknowledged append survives a process crash
//! and a power loss. Read models: WAL written without syncs on Linux, guarded by a
//! marker naming the boot they were written under: after a machine crash they are
//! discarded and projected again, a clean close syncs them (see
//! [`SqliteReadStore::open`]); elsewhere `synchronous=NORMAL`: a power loss may roll back
//! the last batches, together with their checkpoint, which the projection then replays. Because one thread writes, rowid order is commit order: the global log has no
//! gaps for readers to skip.

mod events;
mod files;
mod generations;
mod keys;
mod pool;
mod read;

pub use events::SqliteEventStore;
pub use generations::SqliteReadStores;
pub use keys::SqliteKeys;
pub use read::SqliteReadStore;
