//! Restarts, crashes and replays: acknowledged writes survive, read models converge to
//! exactly what a full replay gives.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use ordo_testkit::eventually;

use crate::helpers::*;

/// Every query answer that must not change under replay.
async fn snapshot_of_queries(app: &TestApp, token: &str) -> Vec<Value> {
    let mut answers = Vec::new();
    for path in [
        "/api/v1/orders?limit=100",
        "/api/v1/orders?limit=100&sort=totalAmount",
        "/api/v1/orders?limit=100&status=cancelled",
        "/api/v1/orders/status/confirmed?limit=100",
        "/api/v1/orders/customer/shared@example.com?limit=100",
        "/api/v1/orders/top-customers?limit=100",
        "/api/v1/orders/search?q=gear&limit=100",
        "/api/v1/orders/summary",
    ] {
        answers.push(json_of(app.get_after(path, token).await, StatusCode::OK).await);
    }
    answers
}

/// A varied history; returns every command token.
async fn write_history(app: &TestApp, orders: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for i in 0..orders {
        let email = if i % 3 == 0 {
            "shared@example.com".to_string()
        } else {
            format!("c{i}@example.com")
        };
        let body = order_body(
            &format!("Customer {i}"),
            &email,
            &[("Gear", (i % 5 + 1) as u32, "12.34"), ("Widget", 1, "0.99")],
        );
        let created = app.create_order(&body).await;
        tokens.push(created.token.clone());
        let id = created.order_id;
        match i % 5 {
            0 => tokens.push(app.set_status(&id, "confirmed").await.token),
            1 => tokens.push(
                CommandAnswer::from(app.cancel(&id, Some(&json!({"reason": "test"}))).await)
                    .await
                    .token,
            ),
            2 => tokens.push(CommandAnswer::from(app.delete(&id).await).await.token),
            3 => {
                app.set_status(&id, "confirmed").await;
                tokens.push(app.set_status(&id, "processing").await.token);
            }
            _ => {}
        }
    }
    tokens
}

/// The list and the summary `app` answers without a consistency token (what its stored
/// read models hold now) equal those of `expected` (from [`snapshot_of_queries`]).
async fn assert_answers_without_a_token(app: &TestApp, expected: &[Value], when: &str) {
    for (path, i) in [
        ("/api/v1/orders?limit=100", 0),
        ("/api/v1/orders/summary", 7),
    ] {
        let answer = json_of(app.get(path).await, StatusCode::OK).await;
        let orders = |v: &Value| v["total"].as_u64().or(v["totalOrders"].as_u64());
        assert!(
            answer == expected[i],
            "{path} {when}: {:?} orders where {:?} were expected",
            orders(&answer),
            orders(&expected[i])
        );
    }
}

/// Writes the history of `orders` orders, waits until they are projected, and returns
/// the commands' tokens with the query answers then.
async fn history_and_answers(app: &TestApp, orders: usize) -> (Vec<String>, Vec<Value>) {
    let tokens = write_history(app, orders).await;
    wait_for_all(app, &tokens).await;
    let answers = snapshot_of_queries(app, tokens.last().expect("token")).await;
    (tokens, answers)
}

async fn wait_for_all(app: &TestApp, tokens: &[String]) {
    for token in tokens {
        let response = app.get_after("/api/v1/orders/summary", token).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_read_models_survive_a_restart() {
    let app = TestApp::spawn().await;
    let (_, before) = history_and_answers(&app, 12).await;
    let args = app.args.clone();
    let dir = app.shutdown().await;

    let restarted = TestApp::spawn_with(args).await;
    assert_answers_without_a_token(&restarted, &before, "right after the restart").await;
    // And it goes on where it stopped.
    let more = restarted.create_order(&ada()).await;
    let summary = json_of(
        restarted
            .get_after("/api/v1/orders/summary", &more.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        summary["totalOrders"].as_u64(),
        before[7]["totalOrders"].as_u64().map(|n| n + 1)
    );
    restarted.shutdown().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_equal_a_full_replay_of_the_events() {
    let app = TestApp::spawn().await;
    let (tokens, live) = history_and_answers(&app, 25).await;
    let last = tokens.last().expect("token").clone();

    // A second service on the same events and an empty read store rebuilds from zero.
    let replayed = TestApp::spawn_with(with_fresh_read_store(&app.args)).await;
    wait_for_all(&replayed, &tokens).await;
    let rebuilt = snapshot_of_queries(&replayed, &last).await;
    assert_eq!(
        live, rebuilt,
        "a full replay answers differently from the live read models"
    );
    replayed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_on_stored_events_is_ready_once_its_read_models_hold_them() {
    let app = TestApp::spawn().await;
    let (_, live) = history_and_answers(&app, 20).await;

    // A new service on the same events and an empty read store: until its projection
    // has applied what was stored, /ready says so, and nothing else is wrong.
    let fresh = TestApp::spawn_with(with_fresh_read_store(&app.args)).await;
    eventually(Duration::from_secs(60), || async {
        let ready = fresh.get("/ready").await;
        if ready.status() == StatusCode::OK {
            return Ok(());
        }
        let problem = expect_problem(ready, StatusCode::SERVICE_UNAVAILABLE).await;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail == "projection orders is starting"
                || detail
                    == "projection orders is catching up with the events stored before it started",
            "{problem}"
        );
        Err(problem)
    })
    .await
    .unwrap_or_else(|problem| panic!("not ready within a minute: {problem}"));
    // Ready: it answers as the live service does, without waiting for a token.
    assert_answers_without_a_token(&fresh, &live, "right after /ready").await;
    fresh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_read_models_on_stored_events_are_loaded_in_bulk_and_answer_as_the_live_ones() {
    let app = TestApp::spawn().await;
    let (tokens, live) = history_and_answers(&app, 20).await;

    // A new service on the same events with an empty read store, loading in bulk from
    // the first event (the default is 10,000).
    let mut args = with_fresh_read_store(&app.args);
    args.bulk_load_from = 1;
    // A read store never used starts on its base generation: its file, or its schema.
    let read_store = args.read_store.clone().expect("a read store URL");
    let empty = match read_store.split_once("schema=") {
        Some((_, schema)) => schema.split('&').next().unwrap_or_default(),
        None => read_store.rsplit('/').next().unwrap_or_default(),
    }
    .to_string();
    let fresh = TestApp::spawn_with(args).await;
    let generation = |app: &TestApp| {
        let request = app.admin(Method::GET, "/api/v1/admin/projections");
        async move {
            let body = json_of(request.send().await.expect("projections"), StatusCode::OK).await;
            let projection = &body["projections"][0];
            assert!(
                projection["loadingGeneration"].is_null(),
                "nothing is loaded once ready: {body}"
            );
            projection["generation"]
                .as_str()
                .expect("a generation")
                .to_string()
        }
    };
    assert!(
        wait_until_ready(&fresh, Duration::from_secs(60)).await,
        "not ready within a minute"
    );
    assert_ne!(
        generation(&fresh).await,
        empty,
        "the read models loaded in bulk replaced the empty ones"
    );
    assert_answers_without_a_token(&fresh, &live, "right after /ready").await;
    // Tokens handed out by the other service are honoured, and new writes are projected
    // into the loaded read models.
    wait_for_all(&fresh, &tokens).await;
    assert_projects_a_new_order(&fresh, &live).await;
    fresh.shutdown().await;
}

/// A new order written through `app` is in its summary after `live`'s last answers.
async fn assert_projects_a_new_order(app: &TestApp, live: &[Value]) {
    let more = app.create_order(&ada()).await;
    let summary = json_of(
        app.get_after("/api/v1/orders/summary", &more.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        summary["totalOrders"].as_u64(),
        live.last()
            .and_then(|before| before["totalOrders"].as_u64())
            .map(|n| n + 1),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_projected_at_a_lower_cpu_priority_answer_as_the_others() {
    let app = TestApp::spawn().await;
    let (tokens, live) = history_and_answers(&app, 12).await;
    // The same events into new read models, projected on threads of their own.
    let mut args = with_fresh_read_store(&app.args);
    args.projection_nice = 7;
    let niced = TestApp::spawn_with(args).await;
    wait_for_all(&niced, &tokens).await;
    assert_answers_without_a_token(&niced, &live, "caught up at nice 7").await;
    assert_projects_a_new_order(&niced, &live).await;
    niced.shutdown().await;
}

/// Starts the real binary on an ephemeral port and returns it with its address.
async fn start_binary(args: &ordo::StoreArgs) -> (tokio::process::Child, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordo"));
    command
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(&args.data_dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(url) = &args.event_store {
        command.arg("--event-store").arg(url);
    }
    if let Some(url) = &args.read_store {
        command.arg("--read-store").arg(url);
    }
    let mut child = command.spawn().expect("start ordo");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let address = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split("address=").nth(1) {
                return rest.split_whitespace().next().map(str::to_string);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("ordo printed its listening address");
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{address}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_under_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = store_args(dir.path());
    let (mut child, address) = start_binary(&args).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // Writers create and confirm orders until the process dies under them.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6 {
        let client = client.clone();
        let address = address.clone();
        let stop = Arc::clone(&stop);
        writers.push(tokio::spawn(async move {
            let mut acked: Vec<(String, u64, String)> = Vec::new();
            for i in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = order_body(
                    &format!("W{w} {i}"),
                    &format!("w{w}@example.com"),
                    &[("Gear", 1, "1")],
                );
                let Ok(response) = client
                    .post(format!("{address}/api/v1/orders/order"))
                    .json(&body)
                    .send()
                    .await
                else {
                    break;
                };
                if response.status() != StatusCode::CREATED {
                    break;
                }
                let Ok(answer) = response.json::<Value>().await else {
                    break;
                };
                let id = answer["orderId"].as_str().expect("id").to_string();
                acked.push((
                    id.clone(),
                    1,
                    answer["consistencyToken"]
                        .as_str()
                        .expect("token")
                        .to_string(),
                ));
                let Ok(response) = client
                    .put(format!("{address}/api/v1/orders/order/{id}/status"))
                    .json(&json!({"status": "confirmed"}))
                    .send()
                    .await
                else {
                    break;
                };
                if response.status() == StatusCode::OK {
                    let Ok(answer) = response.json::<Value>().await else {
                        break;
                    };
                    acked.push((
                        id,
                        2,
                        answer["consistencyToken"]
                            .as_str()
                            .expect("token")
                            .to_string(),
                    ));
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.start_kill().expect("kill -9");
    let _ = child.wait().await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    assert!(
        acknowledged.len() > 10,
        "the load did not get going: {} writes",
        acknowledged.len()
    );

    // Restart on the same data: every acknowledged write is there.
    let app = TestApp::spawn_with(args.clone()).await;
    for (id, version, _) in &acknowledged {
        let events = json_of(
            app.get(&format!("/api/v1/orders/order/{id}/events")).await,
            StatusCode::OK,
        )
        .await;
        let stored = events["events"].as_array().map_or(0, Vec::len) as u64;
        assert!(
            stored >= *version,
            "order {id}: acknowledged version {version}, stored {stored}"
        );
    }
    // The read models converge to exactly what a full replay gives.
    // Every partition must be caught up: wait for each acknowledged write's own token.
    let probe = app.create_order(&ada()).await;
    let mut tokens: Vec<String> = acknowledged.iter().map(|(_, _, t)| t.clone()).collect();
    tokens.push(probe.token.clone());
    wait_for_all(&app, &tokens).await;
    let live = snapshot_of_queries(&app, &probe.token).await;
    let replayed = TestApp::spawn_with(with_fresh_read_store(&args)).await;
    wait_for_all(&replayed, &tokens).await;
    let rebuilt = snapshot_of_queries(&replayed, &probe.token).await;
    assert_eq!(
        live, rebuilt,
        "after a crash the read models differ from a replay"
    );
    replayed.shutdown().await;
    app.shutdown().await;
}
