//! What crypto-shredding costs per event, with no I/O: [`SealedEventStore`] over
//! ordo-es's [`InMemoryStore`] against the bare in-memory store, so the figure is the
//! sealing layer alone (JSON reshaping, XChaCha20-Poly1305, base64, the key ring's
//! cache), not a database's.
//!
//! - `privacy/append/{bare,sealed}`: one `append` of one `OrderCreated` to a new stream,
//!   the create path's store call. The key ring is warm (eight customers, keys cached, as
//!   for returning customers); `sealed_new_customer` gives each order a customer of its
//!   own (a data key made, wrapped and stored in `InMemoryKeys` per order).
//! - `privacy/read_all_1000/{bare,sealed}`: `read_all` of a 1,000-event log (250 orders:
//!   created, confirmed, processing, shipped, interleaved as a global log holds them),
//!   alone and followed by `ReadModelBatch::fold` of the whole batch (which decodes every
//!   event with `OrderEvent::decode`): what a replay does per batch, so the overhead
//!   shows against the projection's own in-memory work. The cache holds every key, as
//!   the embedded store's ring does (one process owns it, keys are trusted for an hour).
//!
//! `cargo bench -p ordo-domain --bench privacy` (about 30 s: samples trimmed).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use uuid::Uuid;

use ordo_domain::privacy::ring::CacheBounds;
use ordo_domain::privacy::{
    InMemoryKeys, KeyRing, KeyStore, MasterKey, SealedEventStore, SecretKey,
};
use ordo_domain::{CreateOrder, Order, OrderCommand, OrderEvent, ReadModelBatch, Status};
use ordo_es::{
    Aggregate, Checkpoint, DomainEvent, EventStore, ExpectedVersion, InMemoryStore, Metadata,
    NewEvent, StreamId, now_micros,
};

/// Appends prepared per chunk: ids and events are made untimed, and the in-memory
/// store, which keeps every event, is replaced between chunks.
const CHUNK: u64 = 5_000;

/// Criterion's defaults trimmed so the whole file runs in well under a minute.
fn configured() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A realistic create body (three lines, a structured address) for customer `n`.
fn create_body(n: u64) -> Value {
    json!({
        "customerName": format!("Customer {n}"),
        "customerEmail": format!("customer.{n}@example.com"),
        "currency": "EUR",
        "items": [
            {"productId": "de-1", "productName": "Difference Engine", "quantity": 2, "unitPrice": 19.99},
            {"productId": "pc-1", "productName": "Punched Cards (box of 100)", "quantity": 12, "unitPrice": 0.05},
            {"productId": "ae-1", "productName": "Analytical Engine", "quantity": 1, "unitPrice": 1000}
        ],
        "shippingAddress": {
            "line1": "12 Analytical Row", "line2": "Flat 2", "city": "London",
            "region": null, "postalCode": "NW1 6XE", "country": "GB"
        }
    })
}

/// The life of one order of customer `n`: created, confirmed, processing, shipped.
fn order_life(n: u64) -> Vec<OrderEvent> {
    let create = CreateOrder::parse(&create_body(n)).expect("a valid create body");
    let mut order = Order::default();
    let mut life = Vec::new();
    let commands = [
        OrderCommand::Create(create),
        OrderCommand::UpdateStatus {
            status: Status::Confirmed,
        },
        OrderCommand::UpdateStatus {
            status: Status::Processing,
        },
        OrderCommand::UpdateStatus {
            status: Status::Shipped,
        },
    ];
    for command in commands {
        for e in order.handle(command).expect("command accepted") {
            order.apply(&e);
            life.push(e);
        }
    }
    life
}

/// The stored form of `e` as the command side hands it to the store.
fn new_event(e: &OrderEvent) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: Order::TYPE.to_string(),
        event_type: e.event_type().to_string(),
        schema_version: e.schema_version(),
        occurred_at: now_micros(),
        data: e.encode(),
        metadata: Metadata {
            correlation_id: Some(Uuid::now_v7().to_string()),
            ..Metadata::default()
        },
    }
}

/// A key ring over keys in memory, trusted for an hour as the embedded store's ring is.
async fn ring() -> Arc<KeyRing> {
    let keys: Arc<dyn KeyStore> = Arc::new(InMemoryKeys::new());
    let master = MasterKey::new(SecretKey::generate().expect("a master key"));
    let bounds = CacheBounds {
        capacity: 10_000,
        ttl: Duration::from_secs(3600),
    };
    Arc::new(
        KeyRing::open(keys, master, vec![], bounds)
            .await
            .expect("a key ring"),
    )
}

/// The store under test, made fresh per chunk of appends.
type MakeStore<'a> = &'a dyn Fn() -> Arc<dyn EventStore>;

/// Times `iters` appends of one `OrderCreated` each to a new stream; `customer(i)` is
/// the customer of the i-th order.
fn time_appends(
    rt: &Runtime,
    iters: u64,
    store: MakeStore<'_>,
    customer: &dyn Fn(u64) -> u64,
) -> Duration {
    rt.block_on(async {
        let mut timed = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let chunk = CHUNK.min(iters - done);
            let store = store();
            let work: Vec<(StreamId, NewEvent)> = (done..done + chunk)
                .map(|i| {
                    let created = order_life(customer(i)).swap_remove(0);
                    (
                        StreamId::new(Uuid::now_v7().to_string()),
                        new_event(&created),
                    )
                })
                .collect();
            let start = Instant::now();
            for (stream, event) in work {
                let appended = store
                    .append(&stream, ExpectedVersion::NoStream, vec![event])
                    .await
                    .expect("append");
                black_box(appended);
            }
            timed += start.elapsed();
            done += chunk;
        }
        timed
    })
}

fn bench_append(c: &mut Criterion) {
    let rt = runtime();
    let warm = rt.block_on(ring());
    // Warm the cache: each of the eight customers has a key already.
    rt.block_on(async {
        let sealed = SealedEventStore::new(Arc::new(InMemoryStore::new()), Arc::clone(&warm));
        for n in 0..8 {
            let created = order_life(n).swap_remove(0);
            let stream = StreamId::new(Uuid::now_v7().to_string());
            sealed
                .append(
                    &stream,
                    ExpectedVersion::NoStream,
                    vec![new_event(&created)],
                )
                .await
                .expect("append");
        }
    });
    let cold = rt.block_on(ring());
    let bare = || -> Arc<dyn EventStore> { Arc::new(InMemoryStore::new()) };
    let sealed_warm = || -> Arc<dyn EventStore> {
        Arc::new(SealedEventStore::new(
            Arc::new(InMemoryStore::new()),
            Arc::clone(&warm),
        ))
    };
    let sealed_cold = || -> Arc<dyn EventStore> {
        Arc::new(SealedEventStore::new(
            Arc::new(InMemoryStore::new()),
            Arc::clone(&cold),
        ))
    };
    let few = |i: u64| i % 8;
    // A customer never seen: far past any earlier iteration's (criterion calls again).
    let next_new = std::sync::atomic::AtomicU64::new(1_000);
    let new_each = |_: u64| next_new.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    let mut g = c.benchmark_group("privacy/append");
    g.throughput(Throughput::Elements(1));
    g.bench_function("bare", |b| {
        b.iter_custom(|iters| time_appends(&rt, iters, &bare, &few))
    });
    g.bench_function("sealed", |b| {
        b.iter_custom(|iters| time_appends(&rt, iters, &sealed_warm, &few))
    });
    g.bench_function("sealed_new_customer", |b| {
        b.iter_custom(|iters| time_appends(&rt, iters, &sealed_cold, &new_each))
    });
    g.finish();
}

/// 250 orders of four events, interleaved as a global log holds them (every order's
/// first event, then every order's second, ...), appended through `store`.
async fn fill_log(store: &dyn EventStore) {
    let orders: Vec<(StreamId, Vec<OrderEvent>)> = (0..250)
        .map(|n| {
            (
                StreamId::new(Uuid::now_v7().to_string()),
                order_life(n % 100),
            )
        })
        .collect();
    for version in 0..4 {
        for (stream, life) in &orders {
            store
                .append(
                    stream,
                    ExpectedVersion::Exact(version as u64),
                    vec![new_event(&life[version])],
                )
                .await
                .expect("append");
        }
    }
}

fn bench_read(c: &mut Criterion) {
    let rt = runtime();
    let bare: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    rt.block_on(fill_log(bare.as_ref()));
    // The sealed log: sealed on the way in, so the inner store holds ciphertext.
    let keys = rt.block_on(ring());
    let sealing = SealedEventStore::new(Arc::new(InMemoryStore::new()), keys);
    rt.block_on(fill_log(&sealing));
    let inner = Arc::clone(sealing.inner());
    let sealed: Arc<dyn EventStore> = Arc::new(sealing);

    let origin = Checkpoint::origin(1);
    let read = |store: &Arc<dyn EventStore>| {
        rt.block_on(store.read_all(&origin, 1_000))
            .expect("read_all")
    };
    let stored = read(&inner);
    assert!(
        stored
            .iter()
            .all(|e| !e.data.as_str().contains("@example.com")),
        "the inner store holds no e-mail address in clear"
    );
    let (plain_log, opened_log) = (read(&bare), read(&sealed));
    assert_eq!((plain_log.len(), opened_log.len()), (1_000, 1_000));
    let plain = ReadModelBatch::fold(&plain_log, HashMap::new()).expect("folds");
    let opened = ReadModelBatch::fold(&opened_log, HashMap::new()).expect("folds");
    assert_eq!((plain.views.len(), opened.views.len()), (250, 250));
    assert_eq!(plain.customers.len(), 100);
    assert_eq!(
        opened.customers, plain.customers,
        "the sealed log opens to the customers the bare one holds"
    );

    let mut g = c.benchmark_group("privacy/read_all_1000");
    g.throughput(Throughput::Elements(1_000));
    for (name, store) in [("bare", &bare), ("sealed", &sealed)] {
        g.bench_function(name, |b| b.iter(|| read(black_box(store))));
        g.bench_function(format!("{name}+fold"), |b| {
            b.iter(|| {
                let events = read(black_box(store));
                ReadModelBatch::fold(&events, HashMap::new()).expect("folds")
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = configured();
    targets = bench_append, bench_read
}
criterion_main!(benches);
