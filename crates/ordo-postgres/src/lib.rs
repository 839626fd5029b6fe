//! # ordo-postgres: the PostgreSQL backend
//!
//! ordo's server backend: events and read models in PostgreSQL (13 or later; `xid8`),
//! reached through a deadpool-postgres connection pool, so that several `ordo serve`
//! processes can share one database.
//!
//! ## Layout
//!
//! - [`PgEventStore`] (`events.rs`): the event log, one `events` table, and the
//!   [`SnapshotStore`](ordo_es::SnapshotStore) beside it (`snapshots`). An append is one
//!   statement (one round trip once the pooled connection has prepared it): it reads the
//!   stream's version, inserts every event from `unnest(...)` arrays only when that
//!   version is the expected one, and returns the new rows. UNIQUE (stream_id, version)
//!   turns a lost race into SQLSTATE 23505, reported like a failed guard as
//!   [`StoreError::Conflict`](ordo_es::StoreError::Conflict).
//! - [`PgReadStore`] (`read/`): the order read models (order views with indexed
//!   columns, summary counters, top customers, a pg_trgm index for search) and projection
//!   checkpoints; each projection batch commits in one transaction that first moves the
//!   checkpoint by compare-and-set; events a projection cannot apply are parked
//!   (`parked_events`) with the same compare-and-set.
//! - [`PgReadStores`] (`generations.rs`): the
//!   [`ReadStoreProvider`](ordo_domain::ReadStoreProvider): read-store generations in
//!   schemas of their own, for blue-green rebuilds, with a durable pointer to the active
//!   one.
//! - `db.rs`: what the stores share: the URL's ordo parameters, the pool, error classification
//!   (connection failures are `Unavailable`), and the migration runner.
//!
//! ## Connection URL
//!
//! A normal `postgres://user:password@host:port/dbname?...` URL (or a `key=value`
//! connection string), plus ordo's own parameters, which are taken off before the rest
//! goes to tokio-postgres:
//!
//! - `schema=NAME`: the schema that holds every table (default `ordo`), created if
//!   missing. A plain identifier (letters, digits, `_`).
//! - `pool_size=N`: the most connections each store keeps (default 16).
//! - `statement_timeout_ms=N`, `idle_in_transaction_timeout_ms=N`: the server's
//!   `statement_timeout` and `idle_in_transaction_session_timeout` for every connection
//!   (default 10000 and 30000; `0` leaves the server's setting), sent as `-c` settings
//!   in the startup `options`, before the URL's own. A canceled statement (SQLSTATE
//!   57014) is [`StoreError::Unavailable`](ordo_es::StoreError::Unavailable).
//!   Migrations and deferred index builds run without the statement timeout.
//!
//! Anything else is the driver's, e.g. `connect_timeout=5` (the default here),
//! `keepalives_idle` and `tcp_user_timeout` (30 s here unless given) or
//! `options=-c%20synchronous_commit%3Don`.
//!
//! ## Schema and migrations
//!
//! Both stores create and migrate their tables themselves at `connect`: versioned
//! migrations, recorded per component (`event_store`, `read_models`,
//! `read_generations`) in
//! `<schema>.schema_migrations`, applied in one transaction under a transaction-scoped
//! advisory lock, so that processes starting together are safe. Never by hand.
//!
//! - `events`: `position bigint identity`, `tx_id xid8 DEFAULT pg_current_xact_id()`,
//!   `stream_id`, `version` (UNIQUE with stream_id), `event_id uuid UNIQUE`,
//!   `aggregate_type`, `event_type`, `schema_version`, `occurred_at timestamptz`
//!   (microseconds), `data json`, `metadata json`; index on `(tx_id, position)`. `json`,
//!   not `jsonb`, because jsonb rejects `\u0000` and rewrites number text (`19.90`).
//! - `snapshots` (event store, migration 2): `stream_id` primary key, `aggregate_type`,
//!   `version`, `schema_version`, `state json` (byte-exact, like the events),
//!   `taken_at`. Only the newest per stream is kept: the save is an upsert whose update
//!   applies only `WHERE excluded.version > snapshots.version`.
//! - `orders` (view document plus indexed columns and a tombstone flag),
//!   `order_summary`, `top_customers`, `checkpoints`, `parked_events` (migration 2:
//!   key `(projection, event_id)`, listed by `parked_at` then insertion order, emptied by
//!   `reset` like everything else); the read store needs the pg_trgm
//!   extension and creates it if missing (it is a trusted extension: a role with CREATE
//!   on the database may create it; otherwise an administrator creates it once).
//!
//! ## Read-store generations
//!
//! [`PgReadStores`] takes the same URL. The configured schema `S` is the first
//! generation; `create_generation` makes `S_g<12 hex digits of a UUID v7's random end>`
//! (so `S` may have at most 49 bytes) with migrated read models; `activate` records `S`
//! or an existing `S_g...` schema in the one-row table `S.read_generation` (committed
//! before it returns), which `open_active` follows (no row: `S`); `drop_inactive` drops
//! every other `S_g...` schema and, when `S` is not active, empties its read models (it
//! keeps the pointer and perhaps the events). `activate` and `drop_inactive` take a
//! transaction-scoped advisory lock. Generations are not coordinated across processes:
//! see the README.
//!
//! ## The gap problem, and reading the log
//!
//! Identity values are taken before commit, so position 102 can commit before 101; a
//! reader that went past 101 would never see it. The global log is therefore ordered by
//! `(tx_id, position)`, and a [`Position`](ordo_es::Position) is `0.<tx_id>.<position>`
//! (one partition). `read_all` hands out only events of transactions below
//! `pg_snapshot_xmin(pg_current_snapshot())`: every transaction still running, which may
//! yet commit an event, has a larger id, so it sorts after everything handed out. Per
//! stream order holds because a later append to a stream has a larger transaction id.
//!
//! The price: a transaction left open anywhere in the cluster (any database, any table)
//! that has written something holds xmin back and pauses every reader until it ends.
//! Appends themselves are single short statements. `read_all` waits up to half a second
//! for in-flight appends to finish before answering with fewer events.
//!
//! `wait_for_events` uses no LISTEN/NOTIFY (a committing NOTIFY takes a global lock and
//! serialises busy writers): appends in this process wake waiters through a
//! [`tokio::sync::Notify`], and waiters poll every 25 ms for other processes' appends.
//!
//! ## Durability
//!
//! An append is acknowledged when its transaction commits. With the server's default
//! `synchronous_commit = on` it is then in the WAL on disk and survives a crash of the
//! server or the machine; with `off` (server-wide, or per connection through the URL's
//! `options`) a crash may lose the last acknowledged appends (never partly: each is one
//! transaction). Synchronous replication (`synchronous_standby_names`, with
//! `synchronous_commit = remote_write`/`on`/`remote_apply`) extends the promise to a
//! standby. Read models are derived data and follow the same setting.
//!
//! ## Several `ordo serve` against one database
//!
//! Safe: appends are serialised by the database (the unique constraint decides races),
//! migrations by the advisory lock, and each projection batch by the checkpoint's
//! compare-and-set (a process that loses gets `CheckpointMoved`, reloads and goes on).
//! Each process wakes its own waiters at once and sees the others' appends within one
//! poll interval. Every process opens up to `pool_size` connections per store: keep the
//! sum under the server's `max_connections`. Processes that use different `schema=`
//! values share nothing.

mod db;
mod durability;
mod events;
mod generations;
mod read;
#[cfg(test)]
mod testdb;

pub use db::DEFAULT_SCHEMA;
pub use events::{PgEventStore, append_sql};
pub use generations::PgReadStores;
pub use read::PgReadStore;
