//! The event-store benchmarks (see `support/store_kit.rs`) against [`InMemoryStore`]:
//! the floor every durable backend is compared with, and the cost of the kernel itself
//! (`CommandExecutor::load` folding 1,000 events, with and without a snapshot).
//!
//! `cargo bench -p ordo-es --bench memory_store`

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};

use ordo_es::InMemoryStore;

#[path = "support/store_kit.rs"]
mod store_kit;

use store_kit::{Profile, bench_appends, bench_loads, runtime};

fn in_memory(c: &mut Criterion) {
    let rt = runtime();
    // A fresh store per chunk of appends: it keeps every event in memory.
    bench_appends(c, "memory", &rt, Profile::IN_MEMORY, || {
        Arc::new(InMemoryStore::new())
    });
    let store = Arc::new(InMemoryStore::new());
    bench_loads(c, "memory", &rt, Profile::IN_MEMORY, &store);
}

criterion_group!(benches, in_memory);
criterion_main!(benches);
