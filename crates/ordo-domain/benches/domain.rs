//! Micro-benchmarks of the order domain's hot paths, with no I/O: deciding
//! (`Order::handle`) and folding (`Order::apply`), encoding and decoding events (v2, and
//! v1 through the upcaster), parsing a create body, and folding a projection batch.
//!
//! `cargo bench -p ordo-domain --bench domain`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use ordo_domain::{CreateOrder, Order, OrderCommand, OrderEvent, ReadModelBatch, Status};
use ordo_es::{Aggregate, DomainEvent, Metadata, Payload, Position, RecordedEvent, StreamId};

/// A realistic create body: three lines and a structured address.
fn create_body() -> Value {
    json!({
        "customerName": "Ada Lovelace",
        "customerEmail": "Ada.Lovelace@Example.com",
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

fn create_command() -> CreateOrder {
    CreateOrder::parse(&create_body()).expect("a valid create body")
}

/// The one event a create decides.
fn created_event() -> OrderEvent {
    let mut events = Order::default()
        .handle(OrderCommand::Create(create_command()))
        .expect("create is accepted");
    events.pop().expect("one event")
}

/// An order folded from `events`.
fn order_of(events: &[OrderEvent]) -> Order {
    let mut order = Order::default();
    for e in events {
        order.apply(e);
    }
    order
}

fn decide_one(order: &Order, command: OrderCommand) -> OrderEvent {
    let mut events = order.handle(command).expect("command accepted");
    events.pop().expect("one event")
}

fn fixture(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture file");
    serde_json::from_str(&text).expect("fixture json")
}

/// The stored payload of the first OrderCreated of a fixture, with its schema version.
fn fixture_created(name: &str) -> (u32, Payload) {
    let events = fixture(name);
    let first = events
        .iter()
        .find(|e| e["eventType"] == "OrderCreated")
        .expect("an OrderCreated in the fixture");
    (
        first["schemaVersion"].as_u64().expect("schemaVersion") as u32,
        first["data"].clone().into(),
    )
}

fn bench_handle(c: &mut Criterion) {
    let mut g = c.benchmark_group("order/handle");
    let created = created_event();
    let fresh = Order::default();
    let pending = order_of(std::slice::from_ref(&created));
    let command = OrderCommand::Create(create_command());
    // The command is moved into `handle`: each iteration gets a clone, made untimed.
    g.bench_function("create", |b| {
        b.iter_batched(
            || command.clone(),
            |cmd| fresh.handle(black_box(cmd)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("update_status", |b| {
        b.iter(|| {
            pending.handle(black_box(OrderCommand::UpdateStatus {
                status: Status::Confirmed,
            }))
        })
    });
    g.bench_function("cancel", |b| {
        b.iter_batched(
            || OrderCommand::Cancel {
                reason: Some("changed my mind".into()),
            },
            |cmd| pending.handle(black_box(cmd)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("delete", |b| {
        b.iter(|| pending.handle(black_box(OrderCommand::Delete)))
    });
    g.bench_function("rejected_invalid_transition", |b| {
        b.iter(|| {
            pending.handle(black_box(OrderCommand::UpdateStatus {
                status: Status::Shipped,
            }))
        })
    });
    g.finish();
}

fn bench_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("order/apply");
    let created = created_event();
    let pending = order_of(std::slice::from_ref(&created));
    let confirmed_event = decide_one(
        &pending,
        OrderCommand::UpdateStatus {
            status: Status::Confirmed,
        },
    );
    let cancelled_event = decide_one(&pending, OrderCommand::Cancel { reason: None });
    let deleted_event = decide_one(&pending, OrderCommand::Delete);
    for (name, start, event) in [
        ("created", Order::default(), &created),
        ("status_changed", pending.clone(), &confirmed_event),
        ("cancelled", pending.clone(), &cancelled_event),
        ("deleted", pending.clone(), &deleted_event),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut order = start.clone();
                order.apply(black_box(event));
                order
            })
        });
    }
    // A whole life: created, four steps forward, deleted.
    let mut life = vec![created.clone()];
    let mut order = pending.clone();
    for status in [
        Status::Confirmed,
        Status::Processing,
        Status::Shipped,
        Status::Delivered,
    ] {
        let e = decide_one(&order, OrderCommand::UpdateStatus { status });
        order.apply(&e);
        life.push(e);
    }
    life.push(decide_one(&order, OrderCommand::Delete));
    g.throughput(Throughput::Elements(life.len() as u64));
    g.bench_function("fold_6_events", |b| b.iter(|| order_of(black_box(&life))));
    g.finish();
}

fn bench_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("event/codec");
    let created = created_event();
    let changed = OrderEvent::decode(
        OrderEvent::STATUS_CHANGED,
        1,
        &json!({"from": "pending", "to": "confirmed"}).into(),
    )
    .expect("status change decodes");
    g.bench_function("encode/OrderCreated_v2", |b| {
        b.iter(|| black_box(&created).encode())
    });
    g.bench_function("encode/OrderStatusChanged_v1", |b| {
        b.iter(|| black_box(&changed).encode())
    });

    let created_data = created.encode();
    g.bench_function("decode/OrderCreated_v2", |b| {
        b.iter(|| {
            OrderEvent::decode(OrderEvent::CREATED, 2, black_box(&created_data)).expect("decodes")
        })
    });
    let changed_data = changed.encode();
    g.bench_function("decode/OrderStatusChanged_v1", |b| {
        b.iter(|| {
            OrderEvent::decode(OrderEvent::STATUS_CHANGED, 1, black_box(&changed_data))
                .expect("decodes")
        })
    });

    // The same order stored in both shapes (tests/fixtures): v1 goes through the upcaster.
    let (v1, v1_data) = fixture_created("orders-v1.json");
    let (v2, v2_data) = fixture_created("orders-v2.json");
    assert_eq!((v1, v2), (1, 2));
    assert_eq!(
        OrderEvent::decode(OrderEvent::CREATED, v1, &v1_data).expect("v1 decodes"),
        OrderEvent::decode(OrderEvent::CREATED, v2, &v2_data).expect("v2 decodes"),
        "the fixtures hold the same order"
    );
    g.bench_function("decode/fixture_OrderCreated_v2", |b| {
        b.iter(|| OrderEvent::decode(OrderEvent::CREATED, v2, black_box(&v2_data)).expect("v2"))
    });
    g.bench_function("decode/fixture_OrderCreated_v1_upcast", |b| {
        b.iter(|| OrderEvent::decode(OrderEvent::CREATED, v1, black_box(&v1_data)).expect("v1"))
    });
    g.finish();
}

fn bench_parse(c: &mut Criterion) {
    let body = create_body();
    c.bench_function("command/CreateOrder::parse", |b| {
        b.iter(|| CreateOrder::parse(black_box(&body)).expect("valid"))
    });
}

/// `orders` orders, interleaved as a global log would hold them (every order's first
/// event, then every order's second, ...): created, then a mix of status steps,
/// cancellations and deletions; five events per order, four for every fourth.
fn mixed_batch(orders: u128) -> Vec<RecordedEvent> {
    let at = OffsetDateTime::parse("2026-01-01T00:00:00Z", &Rfc3339).expect("time");
    let created = created_event();
    let lives: Vec<Vec<OrderEvent>> = (0..orders)
        .map(|i| {
            let mut order = Order::default();
            let mut life = Vec::new();
            let mut push = |order: &mut Order, e: OrderEvent| {
                order.apply(&e);
                life.push(e);
            };
            push(&mut order, created.clone());
            let step = |s| OrderCommand::UpdateStatus { status: s };
            let commands = match i % 4 {
                0 => vec![
                    step(Status::Confirmed),
                    step(Status::Processing),
                    step(Status::Shipped),
                    step(Status::Delivered),
                ],
                1 => vec![
                    step(Status::Confirmed),
                    step(Status::Processing),
                    OrderCommand::Cancel {
                        reason: Some("out of stock".into()),
                    },
                    OrderCommand::Delete,
                ],
                2 => vec![
                    step(Status::Confirmed),
                    step(Status::Processing),
                    step(Status::Shipped),
                    OrderCommand::Delete,
                ],
                _ => vec![
                    step(Status::Confirmed),
                    OrderCommand::Cancel { reason: None },
                    OrderCommand::Delete,
                ],
            };
            for command in commands {
                let e = decide_one(&order, command);
                push(&mut order, e);
            }
            life
        })
        .collect();
    let mut log = Vec::new();
    let longest = lives.iter().map(Vec::len).max().unwrap_or(0);
    for version in 0..longest {
        for (i, life) in lives.iter().enumerate() {
            let Some(event) = life.get(version) else {
                continue;
            };
            let position = log.len() as u64 + 1;
            log.push(RecordedEvent {
                event_id: Uuid::from_u128(position as u128),
                stream_id: StreamId::new(
                    Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 + i as u128)
                        .to_string(),
                ),
                aggregate_type: Order::TYPE.to_string(),
                version: version as u64 + 1,
                position: Position::new(0, position, 0),
                event_type: event.event_type().to_string(),
                schema_version: event.schema_version(),
                occurred_at: at + time::Duration::seconds(position as i64),
                data: event.encode(),
                metadata: Metadata::default(),
            });
        }
    }
    log
}

fn bench_fold_batch(c: &mut Criterion) {
    // 112 orders: 84 of five events and 28 of four = 532; cut to the first 500.
    let mut events = mixed_batch(112);
    events.truncate(500);
    assert_eq!(events.len(), 500);
    let batch = ReadModelBatch::fold(&events, HashMap::new()).expect("folds");
    assert_eq!(batch.views.len(), 112);
    let mut g = c.benchmark_group("projection");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("fold_batch_500_mixed", |b| {
        b.iter(|| ReadModelBatch::fold(black_box(&events), HashMap::new()).expect("folds"))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_handle,
    bench_apply,
    bench_codec,
    bench_parse,
    bench_fold_batch
);
criterion_main!(benches);
