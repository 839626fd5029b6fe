use super::*;

use ordo_es::{ExpectedVersion, InMemoryStore, Metadata, NewEvent, Payload, StreamId};
use ordo_testkit::eventually;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

fn recorded(position: Position, event_type: &str) -> RecordedEvent {
    RecordedEvent {
        event_id: Uuid::nil(),
        stream_id: StreamId::new("0190a0b1-0000-7000-8000-000000000001"),
        aggregate_type: "Order".into(),
        version: 3,
        position,
        event_type: event_type.into(),
        schema_version: 1,
        occurred_at: OffsetDateTime::UNIX_EPOCH,
        data: Payload::from(json!({"amount": 19.99})),
        metadata: Metadata::default(),
    }
}

async fn rendered(events: Vec<Event>) -> String {
    let stream = futures_util::stream::iter(events.into_iter().map(Ok::<_, Infallible>));
    let body = Sse::new(stream).into_response().into_body();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

#[tokio::test]
async fn a_message_is_id_event_and_one_data_line_of_the_event_with_its_order_id() {
    let event = recorded(Position::new(0, 42, 0), "OrderStatusChanged");
    let item = Published::of(&event);
    let mut checkpoint = Checkpoint::origin(1);
    checkpoint.advance(&event.position);
    let token = resume_token(&event.position, &checkpoint);
    let text = rendered(vec![frame(&token, &item)]).await;
    let expected_data = json!({
        "data": {"amount": 19.99},
        "eventId": Uuid::nil(),
        "eventType": "OrderStatusChanged",
        "metadata": {},
        "occurredAt": "1970-01-01T00:00:00Z",
        "position": "0.42.0",
        "schemaVersion": 1,
        "streamId": "0190a0b1-0000-7000-8000-000000000001",
        "version": 3,
        "orderId": "0190a0b1-0000-7000-8000-000000000001",
    });
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.len(), 5, "{text:?}");
    assert_eq!(lines[0], "id: 0.42.0");
    assert_eq!(lines[1], "event: OrderStatusChanged");
    let data = lines[2].strip_prefix("data: ").expect("a data line");
    let data: serde_json::Value = serde_json::from_str(data).expect("json");
    assert_eq!(data, expected_data);
    // The payload's number is written as stored, not through a float.
    assert!(lines[2].contains("\"amount\":19.99"), "{}", lines[2]);
    assert_eq!(&lines[3..], ["", ""], "a blank line ends the message");
}

#[tokio::test(start_paused = true)]
async fn an_idle_stream_sends_a_comment_line_within_15_seconds() {
    use futures_util::StreamExt;
    let response = sse(futures_util::stream::pending());
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body().into_data_stream();
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        let frame = body.next().await.expect("a frame").expect("bytes");
        assert_eq!(&frame[..], b":\n\n", "a comment line, then the blank line");
        assert!(started.elapsed() <= Duration::from_secs(15));
    }
}

#[tokio::test]
async fn a_type_with_a_line_break_cannot_end_the_field_early() {
    let item = Published::of(&recorded(Position::new(0, 1, 0), "Bad\r\nevent: Forged"));
    let text = rendered(vec![frame("0.1.0", &item)]).await;
    assert!(
        text.starts_with("id: 0.1.0\nevent: Bad  event: Forged\ndata: {"),
        "{text:?}"
    );
    assert_eq!(text.matches('\n').count(), 4, "{text:?}");
}

#[test]
fn a_stream_that_is_not_an_order_has_a_null_order_id() {
    let mut event = recorded(Position::new(0, 1, 0), "Erased");
    event.aggregate_type = "Customer".into();
    let data: serde_json::Value = serde_json::from_str(&Published::of(&event).data).expect("json");
    assert_eq!(data["orderId"], serde_json::Value::Null);
    assert_eq!(
        data["streamId"],
        json!("0190a0b1-0000-7000-8000-000000000001")
    );
}

#[test]
fn on_one_partition_the_token_is_the_position() {
    let position = Position::new(0, 7, 2);
    let mut checkpoint = Checkpoint::origin(1);
    checkpoint.advance(&position);
    assert_eq!(resume_token(&position, &checkpoint), "0.7.2");
    assert_eq!(parse_resume_token("0.7.2", 1), Ok(checkpoint));
}

#[test]
fn on_several_partitions_the_token_carries_the_whole_checkpoint() {
    let mut checkpoint = Checkpoint::origin(3);
    checkpoint.advance(&Position::new(0, 4, 0));
    checkpoint.advance(&Position::new(2, 9, 0));
    let token = resume_token(&Position::new(2, 9, 0), &checkpoint);
    assert_eq!(token, "2.9.0/4.0,0.0,9.0");
    assert_eq!(parse_resume_token(&token, 3), Ok(checkpoint));
}

#[test]
fn bad_tokens_are_refused_with_the_reason() {
    use TokenError::*;
    for (token, partitions, expected) in [
        ("", 1, Malformed),
        ("abc", 1, Malformed),
        ("0.1", 1, Malformed),
        ("0.1.0/", 1, Malformed),
        ("0.1.0/1.0,x", 2, Malformed),
        // The checkpoint must be the one after the position.
        ("1.5.0/0.0,4.0", 2, Malformed),
        ("1.5.0", 1, Foreign),
        ("0.5.0/5.0", 2, Foreign),
        ("0.5.0", 16, Ambiguous),
    ] {
        assert_eq!(
            parse_resume_token(token, partitions),
            Err(expected),
            "{token:?} on {partitions} partitions"
        );
    }
    assert_eq!(
        parse_resume_token(&"9".repeat(MAX_TOKEN_LEN + 1), 1),
        Err(Malformed)
    );
}

fn new_event(n: usize) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: "Order".into(),
        event_type: format!("Test{n}"),
        schema_version: 1,
        occurred_at: OffsetDateTime::UNIX_EPOCH,
        data: Payload::from(json!({ "n": n })),
        metadata: Metadata::default(),
    }
}

async fn append(store: &InMemoryStore, stream: &str, events: std::ops::Range<usize>) {
    store
        .append(
            &StreamId::new(stream),
            ExpectedVersion::Any,
            events.map(new_event).collect(),
        )
        .await
        .expect("append");
}

async fn take(client: &mut Client, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let (token, item) = tokio::time::timeout(Duration::from_secs(30), client.next_event())
            .await
            .expect("the events arrive")
            .expect("the stream goes on");
        out.push((token, item.event_type.to_string()));
    }
    out
}

fn types(events: &[(String, String)]) -> Vec<String> {
    events.iter().map(|(_, t)| t.clone()).collect()
}

fn feed_on(store: &Arc<InMemoryStore>, limits: StreamLimits) -> Arc<EventFeed> {
    let feed = EventFeed::new(
        Arc::clone(store) as Arc<dyn EventStore>,
        limits,
        Arc::new(Metrics::default()),
        None,
    );
    tokio::spawn(Arc::clone(&feed).follow_log());
    feed
}

#[tokio::test]
async fn a_client_that_falls_behind_reads_the_rest_from_the_store_in_order() {
    for partitions in [1, 4] {
        let store = Arc::new(InMemoryStore::with_partitions(partitions));
        let feed = feed_on(
            &store,
            StreamLimits {
                live_buffer: 2,
                read_chunk: 3,
                ..StreamLimits::default()
            },
        );
        let slot = feed.join().expect("a slot");
        let mut client = feed.client(None, slot);
        // One append of 20 is one batch of the tail: ten times the broadcast's room.
        append(&store, "s", 0..20).await;
        let got = take(&mut client, 20).await;
        let expected: Vec<String> = (0..20).map(|n| format!("Test{n}")).collect();
        assert_eq!(types(&got), expected, "{partitions} partitions");
        assert!(
            feed.metrics
                .render(&[], 0)
                .contains("ordo_event_stream_resyncs_total 1")
        );
        // Then it follows the broadcast again.
        append(&store, "s", 20..21).await;
        assert_eq!(types(&take(&mut client, 1).await), ["Test20"]);
        feed.shut_down();
        assert!(
            client.next_event().await.is_none(),
            "the stream ends at shutdown"
        );
    }
}

#[tokio::test]
async fn resuming_after_a_token_gives_exactly_the_events_after_it() {
    for partitions in [1, 4] {
        let store = Arc::new(InMemoryStore::with_partitions(partitions));
        let feed = feed_on(&store, StreamLimits::default());
        let mut first = feed.client(None, feed.join().expect("slot"));
        for (i, stream) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            append(&store, stream, i * 2..i * 2 + 2).await;
        }
        let seen = take(&mut first, 10).await;
        let token = parse_resume_token(&seen[3].0, partitions).expect("its own token");
        let mut resumed = feed.client(Some(token), feed.join().expect("slot"));
        let rest = take(&mut resumed, 6).await;
        assert_eq!(types(&rest), types(&seen[4..]), "{partitions} partitions");
        // Then live events, once.
        append(&store, "f", 10..11).await;
        assert_eq!(types(&take(&mut resumed, 1).await), ["Test10"]);
        assert_eq!(types(&take(&mut first, 1).await), ["Test10"]);
        assert_eq!(feed.clients(), 2);
        drop(resumed);
        assert_eq!(feed.clients(), 1);
        feed.shut_down();
    }
}

#[tokio::test]
async fn a_new_client_gets_only_what_is_stored_after_it_connected() {
    let store = Arc::new(InMemoryStore::with_partitions(1));
    let feed = feed_on(&store, StreamLimits::default());
    append(&store, "old", 0..3).await;
    eventually(Duration::from_secs(10), || async {
        let read = feed.head().cursor(0).major;
        if read >= 3 { Ok(()) } else { Err(read) }
    })
    .await
    .unwrap_or_else(|read| panic!("the tail reads the old events: at {read} of 3"));
    let mut late = feed.client(None, feed.join().expect("slot"));
    append(&store, "new", 3..4).await;
    assert_eq!(types(&take(&mut late, 1).await), ["Test3"]);
    feed.shut_down();
}

/// Concurrent appenders to several partitions, clients that keep up, resume and lag:
/// each gets every event once, each partition in its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_concurrent_appends_every_client_gets_every_event_once_in_partition_order() {
    let store = Arc::new(InMemoryStore::with_partitions(4));
    let feed = feed_on(
        &store,
        StreamLimits {
            live_buffer: 4,
            read_chunk: 5,
            ..StreamLimits::default()
        },
    );
    let live = feed.client(None, feed.join().expect("slot"));
    let resumed = feed.client(Some(Checkpoint::origin(4)), feed.join().expect("slot"));
    let slow = feed.client(None, feed.join().expect("slot"));
    let size = |i: usize| 1 + i % 3;
    let total: usize = 4 * (0..100).map(size).sum::<usize>();
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            for i in 0..100 {
                append(&store, &format!("w{w}-{}", i % 7), n..n + size(i)).await;
                n += size(i);
                tokio::task::yield_now().await;
            }
            n
        }));
    }
    let readers: Vec<_> = [(live, false), (resumed, false), (slow, true)]
        .into_iter()
        .map(|(mut client, slow)| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < total {
                    if slow && got.len() % 50 == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let (_, item) =
                        tokio::time::timeout(Duration::from_secs(30), client.next_event())
                            .await
                            .expect("events arrive")
                            .expect("the stream goes on");
                    got.push(item.position);
                }
                got
            })
        })
        .collect();
    let mut written = 0;
    for writer in writers {
        written += writer.await.expect("writer");
    }
    assert_eq!(written, total);
    let all = store
        .read_all(&Checkpoint::origin(4), 10_000)
        .await
        .expect("read");
    let mut expected: Vec<Position> = all.iter().map(|e| e.position).collect();
    expected.sort_by_key(|p| (p.partition, p.cursor));
    for reader in readers {
        let got = reader.await.expect("reader");
        for partition in 0..4 {
            let cursors: Vec<_> = got
                .iter()
                .filter(|p| p.partition == partition)
                .map(|p| p.cursor)
                .collect();
            assert!(
                cursors.windows(2).all(|w| w[0] < w[1]),
                "partition {partition} in order, each once"
            );
        }
        let mut sorted = got.clone();
        sorted.sort_by_key(|p| (p.partition, p.cursor));
        assert_eq!(sorted, expected, "every event");
    }
    feed.shut_down();
}

#[test]
fn the_client_bound_holds() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryStore::new());
    let feed = EventFeed::new(
        store,
        StreamLimits {
            max_clients: 2,
            ..StreamLimits::default()
        },
        Arc::new(Metrics::default()),
        None,
    );
    let a = feed.join().expect("first");
    let _b = feed.join().expect("second");
    assert!(feed.join().is_none(), "a third is refused");
    drop(a);
    assert!(feed.join().is_some(), "a place freed is taken again");
}
