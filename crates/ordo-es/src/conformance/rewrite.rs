//! The conformance suite every [`EventRewriter`] must pass, on a store that is also an
//! [`EventStore`]: legacy events are found page by page, rewritten in place with
//! everything but their schema version and payload unchanged, and are legacy no more.
//!
//! ```text
//! ordo_es::event_rewriter_conformance!(async { make_a_fresh_isolated_store().await });
//! ordo_es::event_rewriter_conformance!(guarded async { (store, temp_dir) });
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::read_everything_covering;
use crate::event::{Metadata, NewEvent, Payload, RecordedEvent, StreamId};
use crate::position::{Checkpoint, Position};
use crate::rewrite::{EventRewriter, Rewrite, RewriteCursor};
use crate::store::{EventStore, ExpectedVersion, StoreError};

/// Expands to one `#[tokio::test]` per rewriter case.
#[macro_export]
macro_rules! event_rewriter_conformance {
    (guarded $make:expr) => {
        $crate::event_rewriter_conformance!(@all guarded $make);
    };
    ($make:expr) => {
        $crate::event_rewriter_conformance!(@all plain $make);
    };
    (@all $kind:ident $make:expr) => {
        $crate::event_store_conformance!(@cases $kind $make;
            legacy_events_are_rewritten_in_place_and_nothing_else_changes,
            only_an_event_still_as_it_was_read_is_rewritten,
        );
    };
}

/// The schema version the cases rewrite to; legacy is below it.
const CURRENT: u32 = 3;
/// More pages than any case needs: a pass that never ends fails instead of hanging.
const MAX_PAGES: usize = 10_000;

fn thing(event_type: &str, schema_version: u32, data: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: "ConformanceThing".into(),
        event_type: event_type.into(),
        schema_version,
        occurred_at: OffsetDateTime::now_utc()
            .replace_nanosecond(654_321_000)
            .expect("valid nanos"),
        data: data.into(),
        metadata: Metadata {
            correlation_id: Some(format!("corr-{schema_version}")),
            ..Metadata::default()
        },
    }
}

/// A legacy payload: the personal data in plain text.
fn plain(n: u64) -> serde_json::Value {
    json!({ "n": n, "customerName": format!("Plain Name {n}"), "price": 19.90 })
}

/// What the migration would store instead.
fn sealed(event: &RecordedEvent) -> Payload {
    json!({ "n": event.data.to_value().expect("JSON")["n"], "personalData": { "sealed": format!("sealed-{}", event.event_id) } }).into()
}

/// Every page of a pass of `legacy_events`, at most `limit` events each.
async fn pass<S: EventRewriter + ?Sized>(
    store: &S,
    event_type: &str,
    below: u32,
    limit: usize,
) -> Vec<Vec<RecordedEvent>> {
    let mut pages = Vec::new();
    let mut after: Option<RewriteCursor> = None;
    for _ in 0..MAX_PAGES {
        let (events, next) = store
            .legacy_events(event_type, below, after.take(), limit)
            .await
            .expect("legacy_events");
        assert!(
            events.len() <= limit,
            "a page of {} events, limit {limit}",
            events.len()
        );
        pages.push(events);
        match next {
            Some(cursor) => after = Some(cursor),
            None => return pages,
        }
    }
    panic!("a pass of legacy_events did not end within {MAX_PAGES} pages");
}

/// The stored events of `streams`, by stream.
async fn read_streams<S: EventStore + ?Sized>(
    store: &S,
    streams: &[StreamId],
) -> HashMap<StreamId, Vec<RecordedEvent>> {
    let mut out = HashMap::new();
    for stream in streams {
        let events = store.read_stream(stream, 1, 1_000).await.expect("read");
        out.insert(stream.clone(), events);
    }
    out
}

pub async fn legacy_events_are_rewritten_in_place_and_nothing_else_changes<S>(store: Arc<S>)
where
    S: EventStore + EventRewriter,
{
    let legacy_type = format!("Legacy{}", Uuid::now_v7().simple());
    let other_type = "OtherThing";
    // Streams in several partitions (very likely), each holding legacy events of schema
    // versions 1 and 2 among current ones and events of another type, in appends of one
    // and of several events.
    let mut streams = Vec::new();
    let mut positions = Vec::new();
    let mut legacy_ids = HashSet::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    for s in 0..12u64 {
        let stream = StreamId::new(format!("rewrite-{s}-{}", Uuid::now_v7()));
        let appends = vec![
            vec![thing(&legacy_type, 1, plain(next()))],
            vec![
                thing(other_type, 1, plain(next())),
                thing(&legacy_type, 2, plain(next())),
                thing(&legacy_type, CURRENT, json!({ "n": next() })),
            ],
            vec![
                thing(&legacy_type, 1 + (s % 2) as u32, plain(next())),
                thing(other_type, 2, plain(next())),
            ],
        ];
        let mut version = 0;
        for events in appends.into_iter().take(1 + (s % 3) as usize) {
            for event in &events {
                if event.event_type == legacy_type && event.schema_version < CURRENT {
                    legacy_ids.insert(event.event_id);
                }
            }
            let appended = store
                .append(&stream, ExpectedVersion::Exact(version), events)
                .await
                .expect("append");
            version = appended.last_version;
            positions.extend(appended.positions);
        }
        streams.push(stream);
    }
    let before_streams = read_streams(store.as_ref(), &streams).await;
    let before_log = read_everything_covering(store.as_ref(), positions.iter().copied()).await;
    let head = store.head().await.expect("head");

    // A pass in small pages, each page rewritten as it comes, as a migration does.
    let mut found: Vec<RecordedEvent> = Vec::new();
    let mut after: Option<RewriteCursor> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < MAX_PAGES, "the pass did not end");
        let (page, next) = store
            .legacy_events(&legacy_type, CURRENT, after.take(), 3)
            .await
            .expect("legacy_events");
        assert!(page.len() <= 3, "a page of {} events, limit 3", page.len());
        let changes: Vec<Rewrite> = page
            .iter()
            .map(|e| Rewrite::of(e, CURRENT, sealed(e)))
            .collect();
        let rewritten = store.rewrite(&changes).await.expect("rewrite");
        assert_eq!(
            rewritten,
            page.len() as u64,
            "every event of the page was rewritten"
        );
        found.extend(page);
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert!(pages > 1, "a limit of 3 needs more than one page");
    let found_ids: Vec<Uuid> = found.iter().map(|e| e.event_id).collect();
    assert_eq!(
        found_ids.iter().copied().collect::<HashSet<_>>(),
        legacy_ids,
        "the pass found exactly the legacy events"
    );
    assert_eq!(
        found_ids.len(),
        legacy_ids.len(),
        "an event was found twice"
    );
    for event in &found {
        assert_eq!(event.event_type, legacy_type);
        assert!(event.schema_version < CURRENT);
        let stored = before_log
            .iter()
            .find(|e| e.event_id == event.event_id)
            .expect("in the log");
        assert_eq!(event, stored, "legacy_events gave the event as stored");
    }
    // In the global log's order within each partition.
    let mut reached = Checkpoint::origin(store.partitions());
    for event in &found {
        assert!(
            !reached.covers(&event.position),
            "{} came after a later event of its partition",
            event.position
        );
        reached.advance(&event.position);
    }

    // Read back: the new version and payload, everything else as it was.
    let expected = |event: &RecordedEvent| {
        let mut event = event.clone();
        if legacy_ids.contains(&event.event_id) {
            event.schema_version = CURRENT;
            event.data = sealed(&event);
        }
        event
    };
    let check = |when: &str,
                 streams_now: HashMap<StreamId, Vec<RecordedEvent>>,
                 log_now: Vec<RecordedEvent>| {
        for (stream, events) in &before_streams {
            let want: Vec<RecordedEvent> = events.iter().map(expected).collect();
            assert_eq!(streams_now[stream], want, "stream {stream} {when}");
        }
        let want: Vec<RecordedEvent> = before_log.iter().map(expected).collect();
        assert_eq!(log_now, want, "the global log {when}");
    };
    check(
        "after the rewrite",
        read_streams(store.as_ref(), &streams).await,
        read_everything_covering(store.as_ref(), positions.iter().copied()).await,
    );
    assert_eq!(store.head().await.expect("head"), head, "the head moved");
    for event in before_log.iter().take(5) {
        assert_eq!(
            store.event_id_at(&event.position).await.expect("event at"),
            Some(event.event_id)
        );
    }
    for page in pass(store.as_ref(), &legacy_type, CURRENT, 3).await {
        assert!(
            page.is_empty(),
            "legacy events left after the rewrite: {page:?}"
        );
    }
    // Below a lower bound, the events of version 1 would have been the legacy ones; none
    // is left either. The other type's old events were never legacy of this type.
    for page in pass(store.as_ref(), &legacy_type, 2, 100).await {
        assert!(page.is_empty(), "{page:?}");
    }
    let others: usize = pass(store.as_ref(), other_type, CURRENT, 100)
        .await
        .iter()
        .map(Vec::len)
        .sum();
    assert!(others > 0, "events of another type are not rewritten");

    store.purge_old_versions().await.expect("purge");
    check(
        "after the purge",
        read_streams(store.as_ref(), &streams).await,
        read_everything_covering(store.as_ref(), positions.iter().copied()).await,
    );

    // Appends go on where the streams were.
    let stream = &streams[2];
    let version = before_streams[stream].len() as u64;
    let appended = store
        .append(
            stream,
            ExpectedVersion::Exact(version),
            vec![thing(other_type, 1, json!({ "n": 0 }))],
        )
        .await
        .expect("append after the rewrite");
    assert_eq!(appended.first_version, version + 1);
    let conflict = store
        .append(
            stream,
            ExpectedVersion::Exact(version),
            vec![thing(other_type, 1, json!({ "n": 0 }))],
        )
        .await
        .expect_err("a stale append");
    assert!(conflict.is_conflict(), "{conflict:?}");
    let read = store.read_stream(stream, 1, 1_000).await.expect("read");
    assert_eq!(read.len() as u64, version + 1);
    let logged = read_everything_covering(store.as_ref(), appended.positions.clone()).await;
    assert!(logged.iter().any(|e| e.position == appended.positions[0]));
}

pub async fn only_an_event_still_as_it_was_read_is_rewritten<S>(store: Arc<S>)
where
    S: EventStore + EventRewriter,
{
    let legacy_type = format!("Legacy{}", Uuid::now_v7().simple());
    // A store without legacy events: a pass ends, finding nothing.
    for page in pass(store.as_ref(), &legacy_type, CURRENT, 2).await {
        assert!(page.is_empty());
    }
    assert_eq!(store.rewrite(&[]).await.expect("an empty rewrite"), 0);

    let stream = StreamId::new(format!("rewrite-guard-{}", Uuid::now_v7()));
    let appended = store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![
                thing(&legacy_type, 1, plain(1)),
                thing(&legacy_type, 2, plain(2)),
            ],
        )
        .await
        .expect("append");
    read_everything_covering(store.as_ref(), appended.positions.clone()).await;
    let before = store.read_stream(&stream, 1, 10).await.expect("read");
    let (a, b) = (&before[0], &before[1]);
    let good = Rewrite::of(a, CURRENT, sealed(a));
    let unchanged = || async { store.read_stream(&stream, 1, 10).await.expect("read") };

    let elsewhere = [
        Rewrite {
            event_id: Uuid::now_v7(),
            ..good.clone()
        },
        Rewrite {
            stream_id: StreamId::new(format!("{stream}-other")),
            ..good.clone()
        },
        Rewrite {
            version: a.version + 5,
            ..good.clone()
        },
        Rewrite {
            position: Position {
                cursor: crate::position::Cursor::new(
                    a.position.cursor.major + 1_000,
                    a.position.cursor.minor,
                ),
                ..a.position
            },
            ..good.clone()
        },
        Rewrite {
            position: Position {
                partition: store.partitions() + 2,
                ..a.position
            },
            ..good.clone()
        },
        Rewrite {
            expected_schema_version: 2,
            ..good.clone()
        },
    ];
    for change in elsewhere {
        assert_eq!(
            store
                .rewrite(std::slice::from_ref(&change))
                .await
                .expect("rewrite"),
            0,
            "rewrote an event not held as {change:?}"
        );
        assert_eq!(unchanged().await, before);
    }

    // The same event twice in one call: refused, and nothing of it done.
    let err = store
        .rewrite(&[
            Rewrite::of(b, CURRENT, sealed(b)),
            good.clone(),
            Rewrite::of(b, CURRENT, json!({ "other": true }).into()),
        ])
        .await
        .expect_err("two rewrites of one event");
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(unchanged().await, before);

    assert_eq!(
        store
            .rewrite(std::slice::from_ref(&good))
            .await
            .expect("rewrite"),
        1
    );
    // Again: the event is no longer as it was read.
    assert_eq!(
        store
            .rewrite(std::slice::from_ref(&good))
            .await
            .expect("rewrite"),
        0
    );
    // A call with a stale rewrite and a good one does the good one.
    assert_eq!(
        store
            .rewrite(&[good.clone(), Rewrite::of(b, CURRENT, sealed(b))])
            .await
            .expect("rewrite"),
        1
    );
    let after = store.read_stream(&stream, 1, 10).await.expect("read");
    for (now, was) in after.iter().zip(&before) {
        assert_eq!(now.schema_version, CURRENT);
        assert_eq!(now.data, sealed(was));
        assert_eq!(
            (
                now.event_id,
                &now.stream_id,
                now.version,
                now.position,
                &now.metadata,
                now.occurred_at,
                &now.event_type,
                &now.aggregate_type
            ),
            (
                was.event_id,
                &was.stream_id,
                was.version,
                was.position,
                &was.metadata,
                was.occurred_at,
                &was.event_type,
                &was.aggregate_type
            )
        );
    }
    for page in pass(store.as_ref(), &legacy_type, CURRENT, 2).await {
        assert!(page.is_empty());
    }
}
