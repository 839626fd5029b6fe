//! # ordo-redis: the event store on Redis Streams
//!
//! [`RedisEventStore`] keeps ordo's events in Redis Streams, on one server
//! (`redis://HOST:PORT`) or a Redis Cluster (`redis+cluster://HOST:PORT,...`), and passes
//! the same conformance suite as every other [`ordo_es::EventStore`].
//!
//! ## Layout
//!
//! - `store.rs`: [`RedisEventStore`]: connect, the [`EventStore`](ordo_es::EventStore)
//!   methods, and the mapping of Redis errors onto [`ordo_es::StoreError`].
//! - `keys.rs`: the key layout ([`stream_key`], [`log_key`]) and the cluster slot
//!   function ([`key_slot`]).
//! - `append.rs`: the Lua script that is the append: every check, then every write, in
//!   one atomic step.
//! - `codec.rs`: events to stream fields and back (JSON text kept byte for byte).
//! - `wait.rs`: `wait_for_events` as blocking XREADs on dedicated connections.
//! - `data_keys.rs`: [`RedisKeys`], the [`KeyStore`](ordo_domain::privacy::KeyStore) of
//!   crypto-shredding (customers' wrapped data keys and the record of erasures): every
//!   key under the one hash tag `{<prefix>:keys}`, every operation one Lua script.
//! - `durability.rs`: the start-up check of `appendonly`/`appendfsync`.
//! - `rewrite.rs`: the [`ordo_es::EventRewriter`] of one-time migrations: a partition's
//!   keys copied with the payloads rewritten, then swapped in by one guarded script, and
//!   the server's AOF and RDB files written afresh.
//! - `link.rs`, `url.rs`: the multiplexed command connection and the connection string.
//!
//! ## How data flows
//!
//! The global log is split into P partitions (fixed per store, default 16). A stream
//! lives in partition `partition_of(stream id, P)`, and its keys share that partition's
//! hash tag, so on a cluster they are in one slot:
//!
//! ```text
//! append(stream, expected, events)
//!   └─▶ EVALSHA append.lua  KEYS: {p}:stream:<id>  {p}:log  {p}:seq     (one slot, atomic)
//!         checks: top id = version, lengths agree, version = expected → else conflict
//!         writes: XADD {p}:stream:<id> <version>-0 …   XADD {p}:log <seq>-0 …
//! read_stream ─▶ XRANGE {p}:stream:<id> <from>-0 + COUNT n
//! read_all    ─▶ for each partition: XRANGE {p}:log <cursor+1>-0 + COUNT n
//! wait        ─▶ XREAD BLOCK on the partition logs (dedicated connections)
//! ```
//!
//! A position is `Position::new(partition, seq, 0)`: the log entry's id. The
//! crate's README shows how to inspect the keys with `redis-cli`, and what each
//! persistence setting risks.

#![forbid(unsafe_code)]

mod append;
pub use append::APPEND_SCRIPT;
mod codec;
mod data_keys;
mod durability;
mod keys;
mod link;
mod rewrite;
mod snapshots;
mod store;
mod url;
mod wait;

pub use data_keys::RedisKeys;
pub use keys::{key_slot, log_key, stream_key};
pub use snapshots::snapshots_key;
pub use store::RedisEventStore;
