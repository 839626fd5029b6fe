//! The embedded read store's commit of one live projection batch, what the projection
//! does behind every group of commands (the create row of `ordo-load` spends about 40% of
//! the server's time there, see BENCHMARKS.md):
//!
//! - `sqlite_read/commit/creates_20`: 20 new orders of customers who already have
//!   orders, in one transaction with the checkpoint: their rows and four list indexes,
//!   the search index, the customers' top-customer rows, the summary. The read models
//!   hold 20,000 orders of 1,000 customers before the first measured batch
//!   (`ORDO_BENCH_ORDERS=200000` for more), and every batch adds 20 more.
//!
//! `cargo bench -p ordo-sqlite --bench read_store`

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use uuid::Uuid;

use ordo_domain::{OrderView, ReadModelBatch, ReadModelWriter, ViewState};
use ordo_es::{Checkpoint, Position};
use ordo_sqlite::SqliteReadStore;

/// Orders stored before the first measured batch (a multiple of 500).
const SEEDED: u64 = 20_000;
const BATCH: u64 = 20;
const CUSTOMERS: u64 = 1_000;

/// Order `n`: a customer among [`CUSTOMERS`], two items, a total that varies.
fn view(n: u64) -> OrderView {
    let customer = n % CUSTOMERS;
    let cents = 1_000 + (n * 7_919) % 90_000;
    serde_json::from_value(serde_json::json!({
        "orderId": Uuid::now_v7(),
        "customerName": format!("Customer {customer}"),
        "customerEmail": format!("customer{customer}@example.com"),
        "items": [
            {
                "productId": format!("sku-{}", n % 97),
                "productName": format!("Widget model {}", n % 97),
                "quantity": 1,
                "unitPrice": cents as f64 / 100.0,
                "lineTotal": cents as f64 / 100.0,
            },
            {
                "productId": "sku-gift",
                "productName": "Gift wrapping",
                "quantity": 1,
                "unitPrice": 0.0,
                "lineTotal": 0.0,
            }
        ],
        "totalAmount": cents as f64 / 100.0,
        "currency": "EUR",
        "status": "pending",
        "cancellationReason": null,
        "shippingAddress": {"line1": "1 Main St", "city": "Springfield", "postalCode": "12345", "country": "US"},
        "createdAt": "2026-11-26T10:00:00Z",
        "updatedAt": "2026-11-26T10:00:00Z",
        "version": 1,
    }))
    .expect("a valid view")
}

/// Orders `first..first + count` created, as the projection folds them into one batch.
fn creates(first: u64, count: u64) -> Arc<ReadModelBatch> {
    let mut batch = ReadModelBatch::default();
    for n in first..first + count {
        let v = view(n);
        let after = ViewState::Live(Box::new(v.clone()));
        batch.record_change(&ViewState::Absent, &after);
        batch.views.push((v.order_id, after));
    }
    Arc::new(batch)
}

fn checkpoint(events: u64) -> Checkpoint {
    let mut c = Checkpoint::origin(1);
    if events > 0 {
        c.advance(&Position::new(0, events, 0));
    }
    c
}

fn commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = SqliteReadStore::open(dir.path().join("read.db")).expect("open");
    let seeded = std::env::var("ORDO_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(SEEDED, |n| n.div_ceil(500) * 500);
    rt.block_on(async {
        for first in (0..seeded).step_by(500) {
            store
                .commit(
                    "orders",
                    creates(first, 500),
                    &checkpoint(first),
                    &checkpoint(first + 500),
                )
                .await
                .expect("seed");
        }
    });

    let mut g = c.benchmark_group("sqlite_read/commit");
    g.throughput(Throughput::Elements(BATCH));
    let mut next = seeded;
    g.bench_function("creates_20", |b| {
        b.iter_batched(
            || {
                let batch = creates(next, BATCH);
                let (from, to) = (checkpoint(next), checkpoint(next + BATCH));
                next += BATCH;
                (batch, from, to)
            },
            |(batch, from, to)| {
                rt.block_on(store.commit("orders", batch, &from, &to))
                    .expect("commit")
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, commit);
criterion_main!(benches);
