//! The event-store benchmarks (see ordo-es's `benches/support/store_kit.rs`) against the
//! embedded SQLite store, in a temporary directory, with its real durability
//! (`synchronous=FULL`: every commit is fsynced).
//!
//! - `sqlite/append/{1,10}`: appends one after the other. Each waits for its own commit,
//!   so these are bounded by the disk's fsync latency, not by SQLite.
//! - `sqlite/append_concurrent/64`: 64 appends in flight at once; the writer thread
//!   commits the waiting ones together (group commit), so one fsync covers many appends.
//!   Compare its throughput with `sqlite/append/1`'s.
//! - `sqlite/load_1000/*`: `CommandExecutor::load` of a 1,000-event stream, without a
//!   snapshot and with one (at version 1,000, and at 900 with 100 events after it).
//!
//! `cargo bench -p ordo-sqlite --bench sqlite_store`

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};

use ordo_sqlite::SqliteEventStore;

#[path = "../../ordo-es/benches/support/store_kit.rs"]
mod store_kit;

use store_kit::{Profile, bench_appends, bench_loads, runtime};

fn sqlite(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = runtime();
    // The store spawns its writer thread; it needs no runtime to open.
    let store = Arc::new(SqliteEventStore::open(dir.path().join("events.db")).expect("open"));
    bench_appends(c, "sqlite", &rt, Profile::DURABLE, || Arc::clone(&store));
    bench_loads(c, "sqlite", &rt, Profile::DURABLE, &store);
    drop(store);
    drop(dir);
}

criterion_group!(benches, sqlite);
criterion_main!(benches);
