//! `GET /api/v1/events/stream`: live updates as Server-Sent Events, read with a plain
//! HTTP client that parses the frames itself.
//!
//! On a log of several partitions (Redis) there is no order across partitions, so the
//! tests compare each partition's sequence; on one partition that is the whole sequence.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use ordo::Settings;
use ordo_es::{ExpectedVersion, Metadata, NewEvent, StreamId};
use ordo_http::StreamLimits;

use crate::helpers::*;

const STREAM: &str = "/api/v1/events/stream";
/// The longest wait for one frame; a hang fails the test instead of blocking it.
const FRAME_WAIT: Duration = Duration::from_secs(60);

/// One SSE message.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    id: String,
    event: String,
    data: Value,
}

impl Message {
    fn position(&self) -> &str {
        self.data["position"].as_str().expect("a position")
    }

    fn partition(&self) -> String {
        self.position()
            .split('.')
            .next()
            .expect("a partition")
            .to_string()
    }
}

/// An open stream, read frame by frame.
struct SseClient {
    response: Response,
    buffer: Vec<u8>,
}

impl SseClient {
    async fn open(app: &TestApp, last_event_id: Option<&str>, after: Option<&str>) -> SseClient {
        let response = request(app, last_event_id, after).await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        SseClient {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next message (comments skipped); `None` when the server ended the stream.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("utf-8 frames");
                if let Some(message) = parse_block(&block) {
                    return Some(message);
                }
                continue;
            }
            let chunk = tokio::time::timeout(FRAME_WAIT, self.response.chunk())
                .await
                .expect("a frame arrives")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => {
                    assert!(self.buffer.is_empty(), "a partial frame at the end");
                    return None;
                }
            }
        }
    }

    async fn take(&mut self, n: usize) -> Vec<Message> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.next().await.expect("the stream goes on"));
        }
        out
    }
}

async fn request(app: &TestApp, last_event_id: Option<&str>, after: Option<&str>) -> Response {
    let path = match after {
        // Percent-encoded as a browser's URLSearchParams would.
        Some(after) => format!(
            "{STREAM}?after={}",
            after.replace('/', "%2F").replace(',', "%2C")
        ),
        None => STREAM.to_string(),
    };
    let mut request = app.request(Method::GET, &path);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.expect("request")
}

/// One block of lines up to a blank line: a message, or `None` for comments only.
fn parse_block(block: &str) -> Option<Message> {
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_string()),
            "event" => event = Some(value.to_string()),
            "data" => data.push(value.to_string()),
            other => panic!("unexpected field {other:?} in {block:?}"),
        }
    }
    if id.is_none() && event.is_none() && data.is_empty() {
        return None;
    }
    Some(Message {
        id: id.expect("every message has an id"),
        event: event.expect("every message has an event type"),
        data: serde_json::from_str(&data.join("\n")).expect("data is JSON"),
    })
}

/// Each partition's messages, in the order they came.
fn per_partition(messages: &[Message]) -> BTreeMap<String, Vec<Message>> {
    let mut out: BTreeMap<String, Vec<Message>> = BTreeMap::new();
    for m in messages {
        out.entry(m.partition()).or_default().push(m.clone());
    }
    out
}

/// Each partition's event ids, in order.
fn event_ids(messages: &[Message]) -> BTreeMap<String, Vec<String>> {
    per_partition(messages)
        .into_iter()
        .map(|(p, ms)| {
            let ids = ms.iter().map(|m| m.data["eventId"].to_string()).collect();
            (p, ids)
        })
        .collect()
}

fn partitions(app: &TestApp) -> u32 {
    app.stores.events.partitions()
}

fn customer(n: usize) -> Value {
    order_body(
        &format!("Customer {n}"),
        &format!("c{n}@example.com"),
        &[("Widget", 1, "2.50")],
    )
}

async fn app_with(limits: StreamLimits) -> TestApp {
    TestApp::spawn_configured(Settings {
        admin_token: Some(ADMIN_TOKEN.into()),
        event_stream: limits,
        ..Settings::default()
    })
    .await
}

#[tokio::test]
async fn the_stream_shows_the_events_stored_after_it_connected_as_the_events_endpoint_does() {
    let app = TestApp::spawn().await;
    // An event the feed has certainly read before the client below connects.
    let mut earlier = SseClient::open(&app, None, None).await;
    let old = app.create_order(&customer(0)).await;
    assert_eq!(
        earlier.take(1).await[0].data["orderId"],
        json!(old.order_id)
    );

    let mut client = SseClient::open(&app, None, None).await;
    let a = app.create_order(&customer(1)).await;
    app.set_status(&a.order_id, "confirmed").await;
    let b = app.create_order(&customer(2)).await;
    let got = client.take(3).await;

    let mut expected = Vec::new();
    for id in [&a.order_id, &b.order_id] {
        let events = json_of(
            app.get(&format!("/api/v1/orders/order/{id}/events")).await,
            StatusCode::OK,
        )
        .await;
        for event in events["events"].as_array().expect("events") {
            expected.push((id.clone(), event.clone()));
        }
    }
    assert_eq!(expected.len(), 3);
    for message in &got {
        let order_id = message.data["orderId"]
            .as_str()
            .expect("orderId")
            .to_string();
        let mut shown = message.data.clone();
        shown.as_object_mut().expect("an object").remove("orderId");
        assert!(
            expected.contains(&(order_id, shown.clone())),
            "{shown} is not an event of the events endpoint"
        );
        assert_eq!(
            message.event,
            message.data["eventType"].as_str().expect("type")
        );
        if partitions(&app) == 1 {
            assert_eq!(message.id, message.position());
        } else {
            let prefix = format!("{}/", message.position());
            assert!(message.id.starts_with(&prefix), "{}", message.id);
        }
    }
    // Each order's events in version order, and on one partition all in global order.
    let versions = |id: &str| -> Vec<u64> {
        got.iter()
            .filter(|m| m.data["orderId"] == json!(id))
            .map(|m| m.data["version"].as_u64().expect("version"))
            .collect()
    };
    assert_eq!(versions(&a.order_id), [1, 2]);
    assert_eq!(versions(&b.order_id), [1]);
    if partitions(&app) == 1 {
        let order: Vec<(Value, Value)> = got
            .iter()
            .map(|m| (m.data["orderId"].clone(), m.data["version"].clone()))
            .collect();
        assert_eq!(
            order,
            [
                (json!(a.order_id), json!(1)),
                (json!(a.order_id), json!(2)),
                (json!(b.order_id), json!(1))
            ]
        );
    }
}

#[tokio::test]
async fn resuming_with_last_event_id_or_after_gives_exactly_the_events_after_it() {
    let app = TestApp::spawn().await;
    let mut first = SseClient::open(&app, None, None).await;
    for n in 0..4 {
        app.create_order(&customer(n)).await;
    }
    let seen = first.take(4).await;
    let mut by_header = SseClient::open(&app, Some(&seen[1].id), None).await;
    let mut by_query = SseClient::open(&app, None, Some(&seen[1].id)).await;
    // The header wins over the query (a browser reconnects to the URL it started with).
    let mut both = SseClient::open(&app, Some(&seen[2].id), Some(&seen[0].id)).await;
    // A marker stored after them: each partition's sequence must be the events after
    // the token, then (in its partition) the marker; nothing before the token.
    app.create_order(&customer(99)).await;
    let marker = first.take(1).await.remove(0);
    for (client, from) in [(&mut by_header, 2), (&mut by_query, 2), (&mut both, 3)] {
        let mut expected = seen[from..].to_vec();
        expected.push(marker.clone());
        let got = client.take(expected.len()).await;
        assert_eq!(
            event_ids(&got),
            event_ids(&expected),
            "resumed after message {}",
            from - 1
        );
    }

    // The position of an event, as the events endpoint shows it, resumes too on a log of
    // one partition; on several it cannot say where, and is refused.
    let position = seen[1].position().to_string();
    let response = request(&app, None, Some(&position)).await;
    if partitions(&app) == 1 {
        assert_eq!(response.status(), StatusCode::OK);
        drop(response);
        let mut by_position = SseClient::open(&app, None, Some(&position)).await;
        let got = by_position.take(3).await;
        assert_eq!(&got[..2], &seen[2..]);
        assert_eq!(got[2], marker);
    } else {
        let problem = expect_problem(response, StatusCode::BAD_REQUEST).await;
        assert!(
            problem["detail"].as_str().unwrap_or("").contains("after"),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn two_clients_see_the_same_sequence() {
    let app = TestApp::spawn().await;
    let mut one = SseClient::open(&app, None, None).await;
    let mut two = SseClient::open(&app, None, None).await;
    let mut stored = 0;
    for n in 0..5 {
        let order = app.create_order(&customer(n)).await;
        app.set_status(&order.order_id, "confirmed").await;
        stored += 2;
    }
    let a = one.take(stored).await;
    let b = two.take(stored).await;
    assert_eq!(a, b, "ids, types and data alike, in the same order");
    let orders: std::collections::BTreeSet<String> =
        a.iter().map(|m| m.data["orderId"].to_string()).collect();
    assert_eq!(orders.len(), 5);
}

#[tokio::test]
async fn a_full_stream_answers_503_with_retry_after_and_frees_a_place_when_a_client_leaves() {
    let app = app_with(StreamLimits {
        max_clients: 2,
        ..StreamLimits::default()
    })
    .await;
    let one = SseClient::open(&app, None, None).await;
    let mut two = SseClient::open(&app, None, None).await;
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("\nordo_event_stream_clients 2\n"),
        "{metrics}"
    );

    let full = request(&app, None, None).await;
    assert!(
        full.headers().contains_key("retry-after"),
        "{:?}",
        full.headers()
    );
    expect_problem(full, StatusCode::SERVICE_UNAVAILABLE).await;

    // A client that hangs up frees its place once the server notices: when a write to
    // it fails.
    drop(one);
    let mut freed = false;
    for n in 0..300 {
        app.create_order(&customer(n)).await;
        assert_eq!(two.take(1).await.len(), 1);
        let metrics = app.get("/metrics").await.text().await.expect("metrics");
        if metrics.contains("\nordo_event_stream_clients 1\n") {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the place of the client that left is freed");
    let mut three = SseClient::open(&app, None, None).await;
    app.create_order(&customer(2)).await;
    assert_eq!(three.take(1).await[0].event, "OrderCreated");
}

#[tokio::test]
async fn a_malformed_resume_token_is_a_400_naming_it() {
    let app = TestApp::spawn().await;
    for bad in [
        "garbage",
        "1.2",
        "0.1.2/x",
        "-1.0.0",
        "0.1.0/1.0,2.0,3.0,4.0,5.0",
    ] {
        let problem = expect_problem(
            request(&app, Some(bad), None).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or("")
                .contains("Last-Event-ID"),
            "{bad}: {problem}"
        );
        let problem = expect_problem(
            request(&app, None, Some(bad)).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        let detail = problem["detail"].as_str().unwrap_or("");
        assert!(detail.starts_with("after "), "{bad}: {problem}");
    }
    // An empty id is no id (an SSE `id:` field with no value clears it).
    let empty = request(&app, Some(""), None).await;
    assert_eq!(empty.status(), StatusCode::OK);
    drop(empty);
    let unknown = app
        .request(Method::GET, &format!("{STREAM}?from=1"))
        .send()
        .await
        .expect("request");
    expect_problem(unknown, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_token_ahead_of_the_log_waits_for_the_events_after_it() {
    let app = TestApp::spawn().await;
    let mut live = SseClient::open(&app, None, None).await;
    app.create_order(&customer(0)).await;
    let seen = live.take(1).await;
    // Far ahead in the partition of the event just seen.
    let position = seen[0].position();
    let partition = seen[0].partition();
    let ahead_position = format!("{partition}.{}.0", u64::MAX / 2);
    let ahead = match seen[0].id.split_once('/') {
        None => ahead_position,
        Some((_, checkpoint)) => {
            let mut cursors: Vec<String> = checkpoint.split(',').map(str::to_string).collect();
            let index: usize = partition.parse().expect("partition");
            cursors[index] = format!("{}.0", u64::MAX / 2);
            format!("{ahead_position}/{}", cursors.join(","))
        }
    };
    assert_ne!(ahead, position);
    let mut waiting = SseClient::open(&app, Some(&ahead), None).await;
    // Events in that partition are covered by the token; one in another partition (when
    // there is one) is not. On one partition, nothing arrives until the log passes it:
    // the stream ends at shutdown with nothing delivered.
    if partitions(&app) == 1 {
        app.create_order(&customer(1)).await;
        assert_eq!(live.take(1).await.len(), 1, "the live client sees it");
        app.shutdown().await;
        assert_eq!(
            waiting.next().await,
            None,
            "nothing delivered before the end"
        );
    } else {
        let mut other = None;
        for n in 1..100 {
            let order = app.create_order(&customer(n)).await;
            let message = live.take(1).await.remove(0);
            assert_eq!(message.data["orderId"], json!(order.order_id));
            if message.partition() != partition {
                other = Some(message);
                break;
            }
        }
        let other = other.expect("an order in another partition");
        let got = waiting.take(1).await;
        assert_eq!(got[0].data["eventId"], other.data["eventId"]);
    }
}

fn fixture_event(n: usize) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        // Not an order: the projection passes it by.
        aggregate_type: "StreamFixture".into(),
        event_type: "FixtureRecorded".into(),
        schema_version: 1,
        occurred_at: ordo_es::now_micros(),
        data: json!({ "n": n }).into(),
        metadata: Metadata::default(),
    }
}

/// The tail reads one append as one batch and publishes it at once, on this test's
/// single thread: 50 events into a broadcast that keeps 2, so every client falls behind.
#[tokio::test]
async fn a_slow_client_that_read_nothing_gets_every_event_afterwards_in_order() {
    let app = app_with(StreamLimits {
        live_buffer: 2,
        read_chunk: 7,
        ..StreamLimits::default()
    })
    .await;
    let mut slow = SseClient::open(&app, None, None).await;
    let before = app.create_order(&customer(0)).await;
    let fixture = StreamId::new(format!("fixture-{}", uuid::Uuid::now_v7()));
    app.stores
        .events
        .append(
            &fixture,
            ExpectedVersion::NoStream,
            (0..50).map(fixture_event).collect(),
        )
        .await
        .expect("append");
    let after = app.create_order(&customer(1)).await;

    let got = slow.take(52).await;
    let fixtures: Vec<Value> = got
        .iter()
        .filter(|m| m.data["streamId"] == json!(fixture.as_str()))
        .map(|m| m.data["data"]["n"].clone())
        .collect();
    assert_eq!(fixtures, (0..50).map(|n| json!(n)).collect::<Vec<_>>());
    assert!(
        got.iter()
            .all(|m| m.event != "FixtureRecorded" || m.data["orderId"].is_null())
    );
    let orders: Vec<&Value> = got
        .iter()
        .filter(|m| m.event == "OrderCreated")
        .map(|m| &m.data["orderId"])
        .collect();
    assert_eq!(orders.len(), 2);
    if partitions(&app) == 1 {
        assert_eq!(got[0].data["orderId"], json!(before.order_id));
        assert_eq!(got[51].data["orderId"], json!(after.order_id));
    }
    // Each message once: a partition's positions strictly rise.
    for (partition, messages) in per_partition(&got) {
        let cursors: Vec<(u64, u64)> = messages
            .iter()
            .map(|m| {
                let mut parts = m
                    .position()
                    .split('.')
                    .skip(1)
                    .map(|p| p.parse::<u64>().expect("number"));
                (parts.next().expect("major"), parts.next().expect("minor"))
            })
            .collect();
        assert!(
            cursors.windows(2).all(|w| w[0] < w[1]),
            "partition {partition}: {cursors:?}"
        );
    }
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    let resyncs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ordo_event_stream_resyncs_total "))
        .expect("the resync counter")
        .parse()
        .expect("a number");
    assert!(resyncs >= 1, "the client read from the store: {metrics}");
    // And then it follows the live feed again.
    let later = app.create_order(&customer(2)).await;
    assert_eq!(slow.take(1).await[0].data["orderId"], json!(later.order_id));
}

#[tokio::test]
async fn shutting_down_ends_open_streams() {
    let app = TestApp::spawn().await;
    let mut client = SseClient::open(&app, None, None).await;
    app.create_order(&customer(0)).await;
    assert_eq!(client.take(1).await.len(), 1);
    tokio::time::timeout(FRAME_WAIT, app.shutdown())
        .await
        .expect("the shutdown does not wait for the stream");
    assert_eq!(client.next().await, None);
}

#[tokio::test]
async fn a_stream_resumed_after_an_erasure_shows_the_customers_events_erased() {
    let app = TestApp::spawn().await;
    let mut live = SseClient::open(&app, None, None).await;
    app.create_order(&customer(1)).await;
    let first = live.take(1).await.remove(0);
    app.create_order(&ada()).await;
    let ada_event = live.take(1).await.remove(0);
    assert_eq!(ada_event.data["data"]["customerName"], "Ada Lovelace");
    assert_eq!(ada_event.data["personalDataErased"], json!(false));
    let erased = app
        .admin(
            Method::DELETE,
            "/api/v1/admin/customers/ada@example.com/personal-data",
        )
        .send()
        .await
        .expect("request");
    assert_eq!(erased.status(), StatusCode::OK);
    // Resumed after the event before Ada's, the stream reads hers from the store again:
    // erased.
    let mut resumed = SseClient::open(&app, Some(&first.id), None).await;
    let again = resumed.take(1).await.remove(0);
    assert_eq!(again.data["eventId"], ada_event.data["eventId"]);
    assert_eq!(again.data["data"]["customerName"], Value::Null, "{again:?}");
    assert_eq!(again.data["data"]["customerEmail"], Value::Null);
    assert_eq!(again.data["personalDataErased"], json!(true));
    // A new order of hers gets a new key: in clear.
    app.create_order(&ada()).await;
    let next = resumed.take(1).await.remove(0);
    assert_eq!(next.data["data"]["customerName"], "Ada Lovelace");
    assert_eq!(next.data["personalDataErased"], json!(false));
}
