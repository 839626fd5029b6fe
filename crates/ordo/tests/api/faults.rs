//! Backend faults, each against a real server the test starts itself (whatever
//! `ORDO_TEST_EVENT_STORE` says: the fault is the point, not the combination):
//!
//! - PostgreSQL stopped (as a crash) and restarted under load: commands answer 503 while
//!   it is down and nothing acknowledged is lost; the service and its projections
//!   recover without a restart of ordo.
//! - A backend that stops answering without closing the connection (a proxy that stops
//!   forwarding), in front of PostgreSQL and of Redis: requests end with a 503 instead of
//!   hanging, and the service is back once the bytes flow again.
//! - A statement stuck on a lock: PostgreSQL's statement timeout ends it, a 503.
//! - The read store failing while the event store works: commands still succeed,
//!   queries answer 503, and the projection catches up afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use ordo::{Limits, Settings, StoreArgs};

use ordo_testkit::{PrivatePostgres, eventually, free_port, start_redis, wait_for_port};

use crate::helpers::{
    ADMIN_TOKEN, CommandAnswer, TestApp, ada, expect_problem, json_of, order_body, wait_until_ready,
};

/// Settings of the apps here: the admin token and a request deadline of `deadline`.
fn settings_with_deadline(deadline: Duration) -> Settings {
    Settings {
        admin_token: Some(ADMIN_TOKEN.into()),
        limits: Limits {
            request_timeout: deadline,
            ..Limits::default()
        },
        ..Settings::default()
    }
}

/// Asserts a 503 problem with a positive Retry-After, and returns its detail.
async fn expect_unavailable(response: Response) -> String {
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let problem = expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        retry_after.is_some_and(|s| s > 0),
        "Retry-After in seconds: {problem}"
    );
    problem["detail"].as_str().unwrap_or_default().to_string()
}

/// Polls `POST /api/v1/orders/order` until it succeeds (503s meanwhile; anything else
/// fails the test), for at most `within`.
async fn create_order_once_back(app: &TestApp, within: Duration) -> CommandAnswer {
    eventually(within, || async {
        let response = app.post_order(&ada()).await;
        match response.status() {
            StatusCode::CREATED => Ok(CommandAnswer::from(response).await),
            StatusCode::SERVICE_UNAVAILABLE => Err(expect_unavailable(response).await),
            other => panic!(
                "while the backend comes back: {other} {}",
                response.text().await.unwrap_or_default()
            ),
        }
    })
    .await
    .unwrap_or_else(|detail| {
        panic!("commands still fail {within:?} after the backend came back: {detail}")
    })
}

/// Asserts that the read models have the order `answer` created (after its consistency
/// token), and that its history holds its creation.
async fn assert_readable(app: &TestApp, answer: &CommandAnswer) {
    let path = format!("/api/v1/orders/order/{}", answer.order_id);
    let view = json_of(app.get_after(&path, &answer.token).await, StatusCode::OK).await;
    assert_eq!(view["orderId"], answer.order_id.as_str());
    let history = json_of(app.get(&format!("{path}/events")).await, StatusCode::OK).await;
    assert!(history.to_string().contains("OrderCreated"), "{history}");
}

/// What the clients of the load test saw.
#[derive(Default)]
struct LoadOutcome {
    acknowledged: Vec<CommandAnswer>,
    unavailable: usize,
    /// Anything but 201 or a 503 problem with Retry-After: the test fails on it.
    wrong: Vec<String>,
}

/// Creates orders from `clients` concurrent clients until `stop` is set.
fn start_load(
    app: &TestApp,
    clients: usize,
    stop: Arc<AtomicBool>,
    outcome: Arc<Mutex<LoadOutcome>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|client| {
            let http = app.client.clone();
            let url = app.url("/api/v1/orders/order");
            let stop = Arc::clone(&stop);
            let outcome = Arc::clone(&outcome);
            tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = order_body(
                        &format!("Client {client} order {n}"),
                        &format!("client{client}@example.com"),
                        &[("Widget", n % 5 + 1, "9.99")],
                    );
                    let response = match http.post(&url).json(&body).send().await {
                        Ok(response) => response,
                        Err(e) => {
                            outcome.lock().expect("outcome").wrong.push(format!("{e}"));
                            continue;
                        }
                    };
                    let status = response.status();
                    let has_retry_after = response.headers().contains_key("retry-after");
                    if status == StatusCode::CREATED {
                        let answer = CommandAnswer::from(response).await;
                        outcome.lock().expect("outcome").acknowledged.push(answer);
                    } else {
                        let text = response.text().await.unwrap_or_default();
                        {
                            let mut outcome = outcome.lock().expect("outcome");
                            if status == StatusCode::SERVICE_UNAVAILABLE && has_retry_after {
                                outcome.unavailable += 1;
                            } else {
                                outcome.wrong.push(format!("{status} {text}"));
                            }
                        }
                        // A client that honours a 503 waits before it retries.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect()
}

/// Waits, for at most `within`, until `condition` holds for what the clients saw.
async fn wait_for_load(
    outcome: &Mutex<LoadOutcome>,
    within: Duration,
    what: &str,
    condition: impl Fn(&LoadOutcome) -> bool,
) {
    eventually(within, || async {
        let outcome = outcome.lock().expect("outcome");
        assert!(outcome.wrong.is_empty(), "{:?}", outcome.wrong);
        if condition(&outcome) { Ok(()) } else { Err(()) }
    })
    .await
    .unwrap_or_else(|()| panic!("not within {within:?}: {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_under_load_loses_nothing_acknowledged() {
    let pg = PrivatePostgres::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = StoreArgs::embedded(dir.path());
    args.event_store = Some(pg.url("faults", ""));
    args.read_store = Some(pg.url("faults", ""));
    let app =
        TestApp::spawn_with_settings(args, settings_with_deadline(Duration::from_secs(10))).await;
    assert!(wait_until_ready(&app, Duration::from_secs(30)).await);

    let stop = Arc::new(AtomicBool::new(false));
    let outcome = Arc::new(Mutex::new(LoadOutcome::default()));
    let clients = start_load(&app, 4, Arc::clone(&stop), Arc::clone(&outcome));
    wait_for_load(&outcome, Duration::from_secs(60), "20 orders", |o| {
        o.acknowledged.len() >= 20
    })
    .await;

    pg.stop().await;
    wait_for_load(&outcome, Duration::from_secs(60), "503s while down", |o| {
        o.unavailable >= 10
    })
    .await;
    let detail = expect_unavailable(app.post_order(&ada()).await).await;
    assert!(detail.contains("event store"), "{detail}");
    let ready = expect_problem(app.get("/ready").await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        ready["detail"].to_string().contains("event store"),
        "{ready}"
    );

    pg.start_again().await;
    let before_restart = outcome.lock().expect("outcome").acknowledged.len();
    wait_for_load(
        &outcome,
        Duration::from_secs(120),
        "20 more orders after the restart",
        |o| o.acknowledged.len() >= before_restart + 20,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("load client");
    }
    let outcome = std::mem::take(&mut *outcome.lock().expect("outcome"));
    assert!(outcome.wrong.is_empty(), "{:?}", outcome.wrong);
    println!(
        "{} orders acknowledged, {} answers 503 while PostgreSQL was down",
        outcome.acknowledged.len(),
        outcome.unavailable
    );

    assert!(
        wait_until_ready(&app, Duration::from_secs(60)).await,
        "ready again, without a restart of ordo"
    );
    // Every acknowledged order survived the crash, in its events and in the read
    // models the projection caught up.
    for answer in &outcome.acknowledged {
        assert_readable(&app, answer).await;
    }
    let created = app.post_order(&ada()).await;
    assert_readable(&app, &CommandAnswer::from(created).await).await;
    app.shutdown().await;
}

/// A TCP proxy in front of `upstream` that can stop forwarding without closing anything:
/// a backend that stops answering (a hung server, a network that drops packets while
/// the sockets stay open). Stalled, it accepts and reads but holds every byte until it
/// is resumed.
struct StallingProxy {
    port: u16,
    stalled: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    async fn start(upstream: u16) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (stalled, _) = watch::channel(false);
        let switch = stalled.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, switch.subscribe()));
                tokio::spawn(forward(server_read, client_write, switch.subscribe()));
            }
        });
        StallingProxy {
            port,
            stalled,
            accept,
        }
    }

    fn stall(&self) {
        self.stalled.send_replace(true);
    }

    fn resume(&self) {
        self.stalled.send_replace(false);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to`, holding what it read while `stalled` says so.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if stalled.wait_for(|stalled| !*stalled).await.is_err() {
            break;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_that_stops_answering_ends_requests_with_503_instead_of_hanging() {
    let pg = PrivatePostgres::start().await;
    let proxy = StallingProxy::start(pg.port).await;
    let url = pg.url_through(proxy.port, "faults", "statement_timeout_ms=1000");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = StoreArgs::embedded(dir.path());
    args.event_store = Some(url.clone());
    args.read_store = Some(url);
    let app =
        TestApp::spawn_with_settings(args, settings_with_deadline(Duration::from_secs(3))).await;
    assert!(wait_until_ready(&app, Duration::from_secs(30)).await);
    let first = app.create_order(&ada()).await;
    assert_readable(&app, &first).await;

    proxy.stall();
    // The client waits 60 s (TestApp's client timeout): a hang fails the test.
    expect_unavailable(app.post_order(&ada()).await).await;
    let path = format!("/api/v1/orders/order/{}", first.order_id);
    expect_unavailable(app.get(&path).await).await;
    expect_unavailable(app.get(&format!("{path}/events")).await).await;
    // Readiness does not hang either, and names both stores: their pings run at once,
    // each with a timeout inside the request deadline.
    let ready = expect_problem(app.get("/ready").await, StatusCode::SERVICE_UNAVAILABLE).await;
    let detail = ready["detail"].to_string();
    assert!(
        detail.contains("the event store did not answer in time")
            && detail.contains("the read store did not answer in time"),
        "{ready}"
    );

    proxy.resume();
    let second = create_order_once_back(&app, Duration::from_secs(60)).await;
    assert_readable(&app, &second).await;
    assert_readable(&app, &first).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_ends_commands_with_503_from_its_response_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir_all(&redis_dir).expect("redis dir");
    let port = free_port();
    let redis = start_redis(&redis_dir, port);
    wait_for_port(port).await;
    let proxy = StallingProxy::start(port).await;
    let mut args = StoreArgs::embedded(dir.path());
    args.event_store = Some(format!("redis://127.0.0.1:{}?prefix=faults", proxy.port));
    // A deadline longer than the Redis store's response timeout (10 s): the 503 must
    // come from the store, which gives up on a command that gets no answer.
    let app =
        TestApp::spawn_with_settings(args, settings_with_deadline(Duration::from_secs(25))).await;
    assert!(wait_until_ready(&app, Duration::from_secs(30)).await);
    let first = app.create_order(&ada()).await;
    assert_readable(&app, &first).await;

    proxy.stall();
    let detail = expect_unavailable(app.post_order(&ada()).await).await;
    assert!(detail.contains("event store"), "{detail}");
    // What the read models answer does not need the event store.
    let path = format!("/api/v1/orders/order/{}", first.order_id);
    json_of(app.get(&path).await, StatusCode::OK).await;
    let ready = expect_problem(app.get("/ready").await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        ready["detail"].to_string().contains("event store"),
        "{ready}"
    );

    proxy.resume();
    let second = create_order_once_back(&app, Duration::from_secs(60)).await;
    assert_readable(&app, &second).await;
    app.shutdown().await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_stuck_on_a_lock_ends_with_503_from_the_statement_timeout() {
    let pg = PrivatePostgres::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = StoreArgs::embedded(dir.path());
    args.event_store = Some(pg.url("faults", "statement_timeout_ms=500"));
    // A deadline far above the statement timeout: the 503 must come from the store.
    let app =
        TestApp::spawn_with_settings(args, settings_with_deadline(Duration::from_secs(25))).await;
    assert!(wait_until_ready(&app, Duration::from_secs(30)).await);
    let first = app.create_order(&ada()).await;

    // Another session holds the event table locked, as a long migration or a stuck
    // maintenance job would.
    let (mut locker, connection) = tokio_postgres::connect(&pg.client_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the private PostgreSQL");
    let connection = tokio::spawn(connection);
    let lock = locker.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE faults.events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock the events");
    let detail = expect_unavailable(app.post_order(&ada()).await).await;
    assert!(detail.contains("event store"), "{detail}");
    let detail = expect_unavailable(app.put_status(&first.order_id, "confirmed").await).await;
    assert!(detail.contains("event store"), "{detail}");
    lock.rollback().await.expect("unlock");
    drop(locker);
    let _ = connection.await;

    let second = create_order_once_back(&app, Duration::from_secs(30)).await;
    assert_readable(&app, &second).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_store_that_goes_away_leaves_commands_working_and_the_projection_catches_up() {
    let pg = PrivatePostgres::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = StoreArgs::embedded(dir.path());
    args.read_store = Some(pg.url("faults", ""));
    let app =
        TestApp::spawn_with_settings(args, settings_with_deadline(Duration::from_secs(10))).await;
    assert!(wait_until_ready(&app, Duration::from_secs(30)).await);
    let before = app.create_order(&ada()).await;
    assert_readable(&app, &before).await;

    pg.stop().await;
    let mut during = Vec::new();
    for _ in 0..3 {
        during.push(app.create_order(&ada()).await);
    }
    let path = format!("/api/v1/orders/order/{}", before.order_id);
    let detail = expect_unavailable(app.get(&path).await).await;
    assert!(detail.contains("read store"), "{detail}");
    let detail = expect_unavailable(app.get("/api/v1/orders").await).await;
    assert!(detail.contains("read store"), "{detail}");
    // The history comes from the event store, which works.
    let history: Value = json_of(app.get(&format!("{path}/events")).await, StatusCode::OK).await;
    assert!(history.to_string().contains("OrderCreated"), "{history}");
    let ready = expect_problem(app.get("/ready").await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        ready["detail"].to_string().contains("read store"),
        "{ready}"
    );

    pg.start_again().await;
    assert!(
        wait_until_ready(&app, Duration::from_secs(60)).await,
        "ready again once the read store is back"
    );
    for answer in during.iter().chain([&before]) {
        assert_readable(&app, answer).await;
    }
    app.shutdown().await;
}
