//! Operator endpoints: auth, snapshots, replay (blue-green and repairs), poison events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use ordo::Settings;
use ordo_es::{ExpectedVersion, Metadata, NewEvent, StreamId};

use ordo_testkit::eventually;

use crate::helpers::*;

#[tokio::test]
async fn admin_endpoints_need_the_configured_bearer_token() {
    let app = TestApp::spawn().await;
    let paths = [
        (Method::POST, "/api/v1/admin/replay".to_string()),
        (
            Method::GET,
            format!("/api/v1/admin/replay/{}", uuid::Uuid::now_v7()),
        ),
        (
            Method::POST,
            format!("/api/v1/admin/snapshots/{}", uuid::Uuid::now_v7()),
        ),
        (Method::GET, "/api/v1/admin/projections".to_string()),
    ];
    for (method, path) in &paths {
        let response = app
            .request(method.clone(), path)
            .send()
            .await
            .expect("request");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .expect("ascii")
                .starts_with("Bearer")
        );
        expect_problem(response, StatusCode::UNAUTHORIZED).await;
        let wrong = app
            .request(method.clone(), path)
            .bearer_auth("not-the-token")
            .send()
            .await
            .expect("request");
        expect_problem(wrong, StatusCode::UNAUTHORIZED).await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let closed = TestApp::spawn_with_settings(store_args(dir.path()), Settings::default()).await;
    for (method, path) in &paths {
        let response = closed
            .request(method.clone(), path)
            .bearer_auth("anything")
            .send()
            .await
            .expect("request");
        let problem = expect_problem(response, StatusCode::FORBIDDEN).await;
        assert!(
            problem["detail"]
                .as_str()
                .expect("detail")
                .contains("ORDO_ADMIN_TOKEN")
        );
    }
}

#[tokio::test]
async fn a_snapshot_can_be_taken_on_demand_and_changes_no_answer() {
    let app = TestApp::spawn().await;
    let id = app.create_order(&ada()).await.order_id;
    app.set_status(&id, "confirmed").await;
    let response = app
        .admin(Method::POST, &format!("/api/v1/admin/snapshots/{id}"))
        .send()
        .await
        .expect("request");
    let body = json_of(response, StatusCode::CREATED).await;
    assert_eq!(body, json!({"orderId": id, "version": 2}));
    // Loading from the snapshot decides exactly as before.
    expect_problem(app.put_status(&id, "confirmed").await, StatusCode::CONFLICT).await;
    let answer = app.set_status(&id, "processing").await;
    assert_eq!(answer.version, 3);
    let unknown = app
        .admin(
            Method::POST,
            &format!("/api/v1/admin/snapshots/{}", uuid::Uuid::now_v7()),
        )
        .send()
        .await
        .expect("request");
    expect_problem(unknown, StatusCode::NOT_FOUND).await;
    let malformed = app
        .admin(Method::POST, "/api/v1/admin/snapshots/nope")
        .send()
        .await
        .expect("request");
    expect_problem(malformed, StatusCode::NOT_FOUND).await;
}

pub(crate) async fn wait_for_job(app: &TestApp, job: &str) -> Value {
    eventually(Duration::from_secs(60), || async {
        let status = json_of(
            app.admin(Method::GET, &format!("/api/v1/admin/replay/{job}"))
                .send()
                .await
                .expect("request"),
            StatusCode::OK,
        )
        .await;
        if status["state"] == "running" {
            Err(status)
        } else {
            Ok(status)
        }
    })
    .await
    .unwrap_or_else(|status| panic!("replay job {job} did not finish: {status}"))
}

pub(crate) async fn start_job(app: &TestApp, body: Option<Value>) -> String {
    let mut request = app.admin(Method::POST, "/api/v1/admin/replay");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    assert!(response.headers().contains_key("location"));
    let body = json_of(response, StatusCode::ACCEPTED).await;
    body["jobId"].as_str().expect("jobId").to_string()
}

const QUERIES: [&str; 6] = [
    "/api/v1/orders?limit=100&sort=totalAmount",
    "/api/v1/orders/summary",
    "/api/v1/orders/top-customers?limit=100",
    "/api/v1/orders/search?q=gear&limit=100",
    "/api/v1/orders/status/cancelled?limit=100",
    // The days of the fixtures' orders.
    "/api/v1/orders/daily?to=2025-03-04&days=5",
];

async fn answers(app: &TestApp) -> Vec<Value> {
    let mut out = Vec::new();
    for q in QUERIES {
        out.push(json_of(app.get(q).await, StatusCode::OK).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_rebuild_switches_over_while_clients_keep_writing_and_querying() {
    let app = Arc::new(TestApp::spawn().await);
    let mut created = Vec::new();
    for i in 0..60 {
        let answer = app
            .create_order(&order_body(
                &format!("C{i}"),
                &format!("c{}@example.com", i % 9),
                &[("Gear", 1 + i % 4, "2.50")],
            ))
            .await;
        if i % 4 == 0 {
            app.cancel(&answer.order_id, None).await;
        }
        created.push(answer.token);
    }
    // Every token: on a partitioned log the last one says nothing of the other partitions.
    for token in &created {
        app.get_after("/api/v1/orders/summary", token).await;
    }
    let before = answers(&app).await;

    // Clients keep writing and querying through the rebuild; nothing may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let writer = {
        let (app, stop, failures) = (Arc::clone(&app), Arc::clone(&stop), Arc::clone(&failures));
        tokio::spawn(async move {
            let mut tokens = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let response = app
                    .post_order(&order_body(
                        "During",
                        "during@example.com",
                        &[("Gear", 1, "1")],
                    ))
                    .await;
                if response.status() != StatusCode::CREATED {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                tokens.push(CommandAnswer::from(response).await.token);
                // Read-your-writes holds across the switch.
                let seen = app
                    .get_after("/api/v1/orders/summary", tokens.last().expect("token"))
                    .await;
                if seen.status() != StatusCode::OK {
                    eprintln!(
                        "read-your-writes failed: {} {}",
                        seen.status(),
                        seen.text().await.unwrap_or_default()
                    );
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokens
        })
    };
    let reader = {
        let (app, stop, failures) = (Arc::clone(&app), Arc::clone(&stop), Arc::clone(&failures));
        tokio::spawn(async move {
            let mut last_total = 0;
            while !stop.load(Ordering::Relaxed) {
                let summary = app.get("/api/v1/orders/summary").await;
                if summary.status() != StatusCode::OK {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let total = summary.json::<Value>().await.expect("json")["totalOrders"]
                    .as_u64()
                    .unwrap_or(0);
                // Never a half-built model: the count never drops below what was there.
                if total < last_total.max(60) {
                    eprintln!("summary went from {last_total} to {total} orders");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                last_total = total;
            }
        })
    };
    let job = start_job(&app, None).await;
    let second = app
        .admin(Method::POST, "/api/v1/admin/replay")
        .send()
        .await
        .expect("request");
    let status = second.status();
    if status != StatusCode::ACCEPTED {
        expect_problem(second, StatusCode::CONFLICT).await;
    }
    let done = wait_for_job(&app, &job).await;
    stop.store(true, Ordering::Relaxed);
    let tokens = writer.await.expect("writer");
    reader.await.expect("reader");
    assert_eq!(done["state"], "done", "{done}");
    assert!(done["eventsDone"].as_u64().expect("done") >= 75, "{done}");
    assert!(
        done["eventsTotal"].as_u64().expect("total") >= done["eventsDone"].as_u64().expect("done")
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "a query or command failed during the rebuild"
    );

    // After the rebuild, the answers are what a fresh replay gives.
    for token in &tokens {
        app.get_after("/api/v1/orders/summary", token).await;
    }
    let after = answers(&app).await;
    let fresh = TestApp::spawn_with(with_fresh_read_store(&app.args)).await;
    for token in tokens.iter().chain(&created) {
        fresh.get_after("/api/v1/orders/summary", token).await;
    }
    assert_eq!(
        after,
        answers(&fresh).await,
        "rebuilt read models differ from a fresh replay"
    );
    if tokens.is_empty() {
        assert_eq!(after, before);
    }
    let projections = json_of(
        app.admin(Method::GET, "/api/v1/admin/projections")
            .send()
            .await
            .expect("request"),
        StatusCode::OK,
    )
    .await;
    assert_ne!(
        projections["projections"][0]["generation"],
        json!("read.db"),
        "{projections}"
    );
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        !metrics.contains("ordo_replay_events_total 0\n"),
        "replay progress is counted"
    );
}

#[tokio::test]
async fn repairs_of_one_order_and_from_a_timestamp_change_no_correct_answer() {
    let app = TestApp::spawn().await;
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for i in 0..10 {
        let answer = app
            .create_order(&order_body(
                &format!("R{i}"),
                "repair@example.com",
                &[("Gear", 1, "3")],
            ))
            .await;
        ids.push(answer.order_id.clone());
        tokens.push(app.set_status(&answer.order_id, "confirmed").await.token);
    }
    // Every write's token: on a partitioned log one token covers its own partition only.
    for token in &tokens {
        app.get_after("/api/v1/orders/summary", token).await;
    }
    let before = answers(&app).await;
    let job = start_job(&app, Some(json!({"aggregateId": ids[3]}))).await;
    let done = wait_for_job(&app, &job).await;
    assert_eq!(
        (done["state"].clone(), done["eventsDone"].clone()),
        (json!("done"), json!(2)),
        "{done}"
    );
    let from = (OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&Rfc3339)
        .expect("time");
    let job = start_job(&app, Some(json!({"fromTimestamp": from}))).await;
    let done = wait_for_job(&app, &job).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(answers(&app).await, before);
    // A repair of an unknown order fails, and says why.
    let job = start_job(
        &app,
        Some(json!({"aggregateId": uuid::Uuid::now_v7().to_string()})),
    )
    .await;
    let failed = wait_for_job(&app, &job).await;
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("no order"))
    );
    // Bad requests.
    let bad = app
        .admin(Method::POST, "/api/v1/admin/replay")
        .json(&json!({"fromTimestamp": "soon"}))
        .send()
        .await
        .expect("request");
    expect_problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
    let unknown = app
        .admin(
            Method::GET,
            &format!("/api/v1/admin/replay/{}", uuid::Uuid::now_v7()),
        )
        .send()
        .await
        .expect("request");
    expect_problem(unknown, StatusCode::NOT_FOUND).await;
}

pub(crate) fn raw_event(event_type: &str, schema_version: u32, data: Value) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        aggregate_type: "Order".into(),
        event_type: event_type.into(),
        schema_version,
        occurred_at: ordo_es::now_micros(),
        data: data.into(),
        metadata: Metadata::default(),
    }
}

#[tokio::test]
async fn a_stored_payload_nested_deeper_than_a_request_may_be_is_shown_as_stored() {
    let app = TestApp::spawn().await;
    let stream = uuid::Uuid::now_v7().to_string();
    let mut data = json!(1);
    for _ in 0..200 {
        data = json!([data]);
    }
    app.stores
        .events
        .append(
            &StreamId::new(stream.clone()),
            ExpectedVersion::NoStream,
            vec![raw_event("OrderCreated", 2, data)],
        )
        .await
        .expect("append");
    let response = app
        .get(&format!("/api/v1/orders/order/{stream}/events"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // Deeper than serde_json parses by default, so compared as text.
    let text = response.text().await.expect("body");
    let stored = format!("\"data\":{}1{}", "[".repeat(200), "]".repeat(200));
    assert!(text.contains(&stored), "{text}");
}

#[tokio::test]
async fn a_poison_event_is_parked_reported_and_does_not_stall_the_rest() {
    let app = TestApp::spawn().await;
    let poisoned = uuid::Uuid::now_v7().to_string();
    let poison_position = app
        .stores
        .events
        .append(
            &StreamId::new(poisoned.clone()),
            ExpectedVersion::NoStream,
            vec![raw_event("OrderCreated", 99, json!({"from": "the future"}))],
        )
        .await
        .expect("append poison")
        .last_position()
        .to_string();
    // Parking moves the checkpoint past the poison, so its position is reached too (on a
    // partitioned log it may sit in another partition than the order below).
    assert_eq!(
        app.get_after("/api/v1/orders/summary", &poison_position)
            .await
            .status(),
        StatusCode::OK
    );
    let after = app.create_order(&ada()).await;
    let view = app
        .get_after(
            &format!("/api/v1/orders/order/{}", after.order_id),
            &after.token,
        )
        .await;
    assert_eq!(
        view.status(),
        StatusCode::OK,
        "events behind the poison keep flowing"
    );
    let projections = json_of(
        app.admin(Method::GET, "/api/v1/admin/projections")
            .send()
            .await
            .expect("request"),
        StatusCode::OK,
    )
    .await;
    let projection = &projections["projections"][0];
    assert_eq!(projection["name"], "orders");
    assert_eq!(projection["state"], "running");
    let parked = projection["parked"].as_array().expect("parked");
    assert_eq!(parked.len(), 1, "{projections}");
    assert_eq!(parked[0]["streamId"], json!(poisoned));
    assert!(
        parked[0]["error"].as_str().expect("error").contains("99"),
        "{}",
        parked[0]
    );
    assert!(
        projection["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("parked"))
    );
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("ordo_projection_parked_events{projection=\"orders\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        app.get("/ready").await.status(),
        StatusCode::OK,
        "a parked event is reported, not an outage"
    );
}

fn fixture(name: &str) -> Vec<Value> {
    let path = format!(
        "{}/../ordo-domain/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

async fn load_fixture(app: &TestApp, name: &str) -> Vec<String> {
    let mut positions = Vec::new();
    for e in fixture(name) {
        let mut event = raw_event(
            e["eventType"].as_str().expect("type"),
            e["schemaVersion"].as_u64().expect("v") as u32,
            e["data"].clone(),
        );
        event.occurred_at =
            OffsetDateTime::parse(e["occurredAt"].as_str().expect("t"), &Rfc3339).expect("time");
        let version = e["version"].as_u64().expect("version");
        let appended = app
            .stores
            .events
            .append(
                &StreamId::new(e["streamId"].as_str().expect("id")),
                ExpectedVersion::Exact(version - 1),
                vec![event],
            )
            .await
            .expect("append fixture");
        positions.push(appended.last_position().to_string());
    }
    positions
}

#[tokio::test]
async fn the_old_format_fixture_projects_into_the_same_read_models_as_its_modern_equivalent() {
    let old = TestApp::spawn().await;
    let new = TestApp::spawn().await;
    for (app, name) in [(&old, "orders-v1.json"), (&new, "orders-v2.json")] {
        for token in load_fixture(app, name).await {
            app.get_after("/api/v1/orders/summary", &token).await;
        }
    }
    let old_answers = answers(&old).await;
    assert_eq!(old_answers, answers(&new).await);
    assert_eq!(old_answers[1]["totalRevenue"].to_string(), "44.98");
    // 03-01: live; 03-02: cancelled (an order, no revenue); 03-03: deleted.
    let daily: Value = serde_json::from_str(
        r#"{"from": "2025-02-28", "to": "2025-03-04", "days": [
            {"date": "2025-02-28", "orders": 0, "revenue": 0.00},
            {"date": "2025-03-01", "orders": 1, "revenue": 44.98},
            {"date": "2025-03-02", "orders": 1, "revenue": 0.00},
            {"date": "2025-03-03", "orders": 0, "revenue": 0.00},
            {"date": "2025-03-04", "orders": 0, "revenue": 0.00}]}"#,
    )
    .expect("json");
    assert_eq!(old_answers[5], daily);
    let ada = json_of(
        old.get("/api/v1/orders/order/0193a0c0-0000-7000-8000-000000000001")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ada["shippingAddress"]["city"], "London");
    let history = json_of(
        old.get("/api/v1/orders/order/0193a0c0-0000-7000-8000-000000000001/events")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        history["events"][0]["schemaVersion"], 1,
        "stored events are never rewritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_rebuild_gives_the_same_daily_figures() {
    let app = TestApp::spawn().await;
    for token in load_fixture(&app, "orders-v2.json").await {
        app.get_after("/api/v1/orders/summary", &token).await;
    }
    let before = answers(&app).await;
    assert_eq!(before[5]["days"][1]["orders"], 1, "{}", before[5]);
    let job = start_job(&app, None).await;
    let done = wait_for_job(&app, &job).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(answers(&app).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_process_on_the_same_read_models_follows_a_rebuild_or_is_refused() {
    let first = TestApp::spawn().await;
    let answer = first.create_order(&ada()).await;
    // The first process has its read side running once it has answered a read.
    assert_eq!(
        first
            .get_after("/api/v1/orders/summary", &answer.token)
            .await
            .status(),
        StatusCode::OK
    );
    let shared_reads = std::env::var("ORDO_TEST_READ_STORE").is_ok_and(|k| k == "postgres");
    if !shared_reads {
        // The embedded read models belong to one process: a second one is refused.
        let stores = ordo::Stores::open(&first.args).await.expect("open stores");
        let err = ordo::start_read_side(&stores)
            .await
            .expect_err("the read models are locked");
        assert!(
            format!("{err:#}").contains("another ordo process"),
            "{err:#}"
        );
        return;
    }
    let second = TestApp::spawn_with(first.args.clone()).await;
    let generation = |app: &TestApp| {
        let request = app.admin(Method::GET, "/api/v1/admin/projections");
        async move {
            json_of(request.send().await.expect("request"), StatusCode::OK).await["projections"][0]
                ["generation"]
                .clone()
        }
    };
    assert_eq!(generation(&first).await, generation(&second).await);
    let job = start_job(&first, None).await;
    assert_eq!(wait_for_job(&first, &job).await["state"], "done");
    let rebuilt = generation(&first).await;
    eventually(Duration::from_secs(10), || async {
        let seen = generation(&second).await;
        if seen == rebuilt { Ok(()) } else { Err(seen) }
    })
    .await
    .unwrap_or_else(|seen| {
        panic!("the second process did not follow the switch to {rebuilt}: still on {seen}")
    });
    // Both answer from the rebuilt read models, and both keep projecting.
    let later = second.create_order(&ada()).await;
    for app in [&first, &second] {
        for token in [&answer.token, &later.token] {
            let view = app.get_after("/api/v1/orders/summary", token).await;
            assert_eq!(view.status(), StatusCode::OK);
        }
        let summary = json_of(app.get("/api/v1/orders/summary").await, StatusCode::OK).await;
        assert_eq!(summary["totalOrders"], 2);
    }
}

/// A realistic data set: many customers (names change between their orders), every
/// status, cancellations with and without reasons, deletions, multi-item orders,
/// addresses, odd unicode. Returns every command token.
async fn realistic_data(app: &Arc<TestApp>, orders: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let app = Arc::clone(app);
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            for i in (worker..orders).step_by(8) {
                let customer = i % 60;
                let name = if i % 7 == 0 { format!("Zoë Ünïcode {customer}") } else { format!("Customer {customer} v{}", i / 60) };
                let mut body = order_body(
                    &name,
                    &format!("customer{customer}@example.com"),
                    &[("Gear", (i % 9 + 1) as u32, "12.34"), ("Widget ☃", 1, "0.99"), ("Analytical Engine", (i % 2) as u32 + 1, "1000")][..(i % 3 + 1)],
                );
                if i % 4 == 0 {
                    body["shippingAddress"] = json!({"line1": format!("{i} Main St"), "city": "Berlin", "postalCode": "10115", "country": "DE"});
                }
                let created = app.create_order(&body).await;
                tokens.push(created.token.clone());
                let id = created.order_id;
                let steps = i % 11;
                for status in ["confirmed", "processing", "shipped", "delivered"].iter().take(steps.min(4)) {
                    tokens.push(app.set_status(&id, status).await.token);
                }
                if steps == 5 || steps == 6 {
                    let body = (steps == 5).then(|| json!({"reason": "customer changed their mind"}));
                    let response = app.cancel(&id, body.as_ref()).await;
                    if response.status() == StatusCode::OK {
                        tokens.push(CommandAnswer::from(response).await.token);
                    }
                }
                if steps == 7 {
                    tokens.push(CommandAnswer::from(app.delete(&id).await).await.token);
                }
            }
            tokens
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.extend(task.await.expect("writer"));
    }
    tokens
}

/// Every kind of query, over the whole data set.
async fn every_answer(app: &TestApp) -> Vec<Value> {
    let mut paths: Vec<String> = vec![
        "/api/v1/orders/summary".into(),
        "/api/v1/orders/top-customers?limit=100".into(),
        "/api/v1/orders?limit=100&minTotal=50&maxTotal=1500".into(),
        "/api/v1/orders?limit=100&customerEmail=customer7%40example.com".into(),
    ];
    for sort in ["createdAt", "-createdAt", "totalAmount", "-totalAmount"] {
        for page in 1..=5 {
            paths.push(format!("/api/v1/orders?limit=100&page={page}&sort={sort}"));
        }
    }
    for status in [
        "pending",
        "confirmed",
        "processing",
        "shipped",
        "delivered",
        "cancelled",
    ] {
        paths.push(format!("/api/v1/orders/status/{status}?limit=100"));
    }
    for customer in [0, 13, 59] {
        paths.push(format!(
            "/api/v1/orders/customer/customer{customer}@example.com?limit=100"
        ));
    }
    for term in ["engine", "zo", "%E2%98%83", "customer 4", "example.com"] {
        paths.push(format!("/api/v1/orders/search?q={term}&limit=100"));
    }
    let mut answers = Vec::new();
    for path in paths {
        answers.push(json_of(app.get(&path).await, StatusCode::OK).await);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_full_rebuild_every_query_on_a_realistic_data_set_answers_exactly_as_before() {
    let app = Arc::new(TestApp::spawn().await);
    let tokens = realistic_data(&app, 400).await;
    for token in &tokens {
        app.get_after("/api/v1/orders/summary", token).await;
    }
    let before = every_answer(&app).await;
    assert!(
        before[0]["totalOrders"].as_u64().expect("total") > 300,
        "{}",
        before[0]
    );
    let job = start_job(&app, None).await;
    let done = wait_for_job(&app, &job).await;
    assert_eq!(done["state"], "done", "{done}");
    assert!(done["eventsDone"].as_u64().expect("done") as usize >= tokens.len());
    let after = every_answer(&app).await;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(b, a, "answer {i} changed across the rebuild");
    }
}
