//! The replay benchmark: seed N realistic events through a store's public API, then
//! rebuild every read model from them with `ReadSide` and report events per second.
//!
//! Seeding builds the events exactly as the command side does (the `Order` aggregate
//! decides, `OrderEvent` encodes) and appends them one command at a time, interleaved
//! across orders as live traffic would: orders are taken in chunks of 2,000, and within a
//! chunk all first events are appended, then all second events, and so on; 64 appends
//! are in flight at once. Each order gets OrderCreated, then 0 to 4 status changes, and
//! one in ten of those still cancellable is cancelled (about 3 events per order).
//!
//! Two figures are reported:
//! - catch-up: `ReadSide::start` on empty read models, until the projection has applied
//!   every event and the read models serve queries (what a new deployment or a reset
//!   projection does; from `BULK_START_MIN_EVENTS` events on, a bulk load into a new
//!   generation, unless `--no-bulk-start`);
//! - rebuild: `ReadSide::rebuild`, the blue-green full replay into a new generation,
//!   timed to its last progress report before the switch-over pause.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use ordo_app::read_side::BULK_START_MIN_EVENTS;
use ordo_app::{ReadSide, ReadSideOptions};
use ordo_domain::{Order, OrderCommand, OrderEvent, ReadStoreProvider, Status};
use ordo_es::{
    Aggregate, DomainEvent, EventStore, ExpectedVersion, Metadata, NewEvent, ProjectionState,
    RunnerConfig, StreamId,
};
use uuid::Uuid;

use crate::mix::Rng;

/// The events of one order, decided by the aggregate.
pub fn order_history(rng: &mut Rng) -> Vec<OrderEvent> {
    let (body, _) = crate::driver::create_body(rng);
    let mut order = Order::default();
    let mut events = Vec::new();
    let mut decide = |order: &mut Order, command| {
        if let Ok(new) = order.handle(command) {
            for e in &new {
                order.apply(e);
            }
            events.extend(new);
        }
    };
    if let Ok(create) = ordo_domain::CreateOrder::parse(&body) {
        decide(&mut order, OrderCommand::Create(create));
    }
    let steps = rng.below(5);
    let path = [
        Status::Confirmed,
        Status::Processing,
        Status::Shipped,
        Status::Delivered,
    ];
    for status in path.into_iter().take(steps as usize) {
        decide(&mut order, OrderCommand::UpdateStatus { status });
    }
    if order.status().is_some_and(Status::is_cancellable) && rng.below(10) == 0 {
        decide(
            &mut order,
            OrderCommand::Cancel {
                reason: Some("changed my mind".into()),
            },
        );
    }
    events
}

pub fn new_event(e: &OrderEvent) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: Order::TYPE.to_string(),
        event_type: e.event_type().to_string(),
        schema_version: e.schema_version(),
        occurred_at: ordo_es::now_micros(),
        data: e.encode(),
        metadata: Metadata {
            correlation_id: Some(Uuid::now_v7().to_string()),
            user_agent: Some("ordo-load".into()),
            ..Metadata::default()
        },
    }
}

/// Appends about `target` events; returns how many were appended.
pub async fn seed(store: Arc<dyn EventStore>, target: u64, seed: u64) -> anyhow::Result<u64> {
    let mut rng = Rng::new(seed);
    let mut appended: u64 = 0;
    let started = Instant::now();
    let mut last_report = Instant::now();
    while appended < target {
        // One chunk of orders.
        let mut chunk: Vec<(StreamId, Vec<OrderEvent>)> = Vec::with_capacity(2000);
        let mut planned = 0u64;
        while chunk.len() < 2000 && appended + planned < target {
            let history = order_history(&mut rng);
            planned += history.len() as u64;
            chunk.push((StreamId::new(Uuid::now_v7().to_string()), history));
        }
        let rounds = chunk.iter().map(|(_, h)| h.len()).max().unwrap_or(0);
        for round in 0..rounds {
            let appends: Vec<(StreamId, u64, NewEvent)> = chunk
                .iter()
                .filter_map(|(id, h)| {
                    h.get(round)
                        .map(|e| (id.clone(), round as u64, new_event(e)))
                })
                .collect();
            let mut results = futures_util::stream::iter(appends.into_iter().map(|(id, v, e)| {
                let store = Arc::clone(&store);
                async move {
                    store
                        .append(&id, ExpectedVersion::Exact(v), vec![e])
                        .await
                        .with_context(|| format!("append {id} at version {v}"))
                }
            }))
            .buffer_unordered(64);
            while let Some(r) = results.next().await {
                r?;
                appended += 1;
            }
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "ordo-load: seeded {appended} events ({:.0}/s)",
                appended as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(appended)
}

/// Replay figures.
#[derive(Debug)]
pub struct ReplayResult {
    pub events: u64,
    /// Events applied by catch-up, and in what time (fewer than `events` when it hit the
    /// time limit).
    pub catch_up: (u64, Duration),
    /// The rebuild's time; None when catch-up hit the limit (the rebuild is then skipped).
    pub rebuild: Option<Duration>,
}

/// Catch-up from empty read models, then a full rebuild. `events` is what the store holds.
pub async fn measure(
    events_store: Arc<dyn EventStore>,
    provider: Arc<dyn ReadStoreProvider>,
    events: u64,
    timeout: Duration,
    bulk_start: bool,
) -> anyhow::Result<ReplayResult> {
    let options = ReadSideOptions {
        bulk_start_min_events: if bulk_start {
            BULK_START_MIN_EVENTS
        } else {
            u64::MAX
        },
        ..ReadSideOptions::default()
    };
    let start = Instant::now();
    let side = ReadSide::start_with(
        Arc::clone(&events_store),
        provider,
        RunnerConfig::default(),
        options,
    )
    .await
    .context("start the read side")?;
    let deadline = start + timeout;
    loop {
        let status = side.status();
        // Running: the read models serve queries (a bulk load has finished its indexes).
        if status.state == ProjectionState::Running
            && status.events_applied + status.events_parked >= events
        {
            if status.events_parked > 0 {
                eprintln!(
                    "ordo-load: {} events were parked during catch-up",
                    status.events_parked
                );
            }
            break;
        }
        if Instant::now() >= deadline {
            let applied = status.events_applied + status.events_parked;
            eprintln!(
                "ordo-load: catch-up hit the {timeout:?} limit with {applied} of {events} events applied; skipping the rebuild"
            );
            side.shutdown().await;
            return Ok(ReplayResult {
                events,
                catch_up: (applied, start.elapsed()),
                rebuild: None,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let catch_up = start.elapsed();
    eprintln!(
        "ordo-load: catch-up of {events} events in {:.1} s; rebuilding",
        catch_up.as_secs_f64()
    );

    let last = Arc::new(Mutex::new(None::<Instant>));
    let last_in = Arc::clone(&last);
    let progress = move |done: u64, total: u64| {
        if done >= total {
            *last_in.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    };
    // The catch-up's clean-up (dropping the generation it replaced) is not the rebuild's.
    side.settled().await;
    let start = Instant::now();
    tokio::time::timeout(timeout, side.rebuild(&progress))
        .await
        .context("the rebuild timed out")?
        .context("the rebuild failed")?;
    let finished = last
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_else(Instant::now);
    let rebuild = finished.saturating_duration_since(start);
    side.shutdown().await;
    // The rebuild drops the generation it replaced, and only then lets go of the rebuild
    // lock, some seconds after the switch: a server started on these stores next must
    // not find either still held.
    side.settled().await;
    Ok(ReplayResult {
        events,
        catch_up: (events, catch_up),
        rebuild: Some(rebuild),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_are_valid_and_about_three_events_long() {
        let mut rng = Rng::new(5);
        let mut total = 0;
        for _ in 0..1000 {
            let h = order_history(&mut rng);
            assert!(matches!(h[0], OrderEvent::Created(_)));
            assert!(h.len() <= 6);
            // Replaying the history into a fresh order accepts every event.
            let mut order = Order::default();
            for e in &h {
                order.apply(e);
            }
            assert!(order.exists());
            total += h.len();
        }
        let mean = total as f64 / 1000.0;
        assert!((2.5..3.5).contains(&mean), "mean {mean}");
    }
}
