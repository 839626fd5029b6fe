//! The projection divided into shards over real processes: two `api` and two `projector`
//! processes on shared stores, with a writer sending commands all along. One projector is
//! killed, a third one joins, one is paused past its leases and resumed; the shards move
//! each time, every consistency token is answered, and the read models come out equal to
//! a full replay into a fresh read store.
//!
//! The read models are in PostgreSQL (where the leases live); the events in PostgreSQL
//! or in the Redis Cluster, whatever the run's store combination is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use ordo_testkit::eventually;

use crate::helpers::{CommandAnswer, json_of, order_body, store_args_of};
use crate::served::{Served, events_applied, ordo_status};

/// The projectors' lease time, in seconds: short, so that a lapse is quick to wait for.
const LEASE_TTL: u64 = 2;
/// How long a move of the shards may take before the test gives up (generous: no
/// assertion on how fast they move).
const MOVE_WITHIN: Duration = Duration::from_secs(60);
const OWNED: &str = "ordo_projection_shards_owned";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_move_between_projector_processes_on_postgres_events() {
    shards_move_between_processes("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_move_between_projector_processes_on_redis_cluster_events() {
    shards_move_between_processes("redis-cluster").await;
}

/// The whole scenario, with events in `events` and read models in PostgreSQL.
async fn shards_move_between_processes(events: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let stores = store_args_of(dir.path(), events, "postgres");
    let ttl = LEASE_TTL.to_string();
    let env = [("ORDO_LEASE_TTL", ttl.as_str())];
    let projector = || Served::start_with(&stores, "projector", dir.path(), &env);
    let first = projector().await;
    let second = projector().await;
    let apis = [
        Served::start(&stores, "api", dir.path()).await,
        Served::start(&stores, "api", dir.path()).await,
    ];
    for api in &apis {
        api.wait_until_ready().await;
    }
    let partitions = apis[0].projections().await["shards"]
        .as_array()
        .map(|shards| shards.len() as u64)
        .expect("the admin report lists the shards");
    let output = ordo_status(&stores, apis[0].address.clone()).await;
    let status: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(
        status["shards"].as_array().map(Vec::len),
        Some(partitions as usize),
        "{status:#}"
    );
    let half = partitions / 2;
    wait_for_spread(
        &apis[0],
        &[(&first, half), (&second, half)],
        "two projectors",
    )
    .await;

    let writer = Writer::start(&apis);

    // A projector killed: the other takes its shards once their leases lapse.
    first.kill().await;
    wait_for_spread(&apis[0], &[(&second, partitions)], "the other was killed").await;

    // A third one joins: the shards are spread evenly again.
    let third = projector().await;
    wait_for_spread(
        &apis[0],
        &[(&second, half), (&third, half)],
        "a third joined",
    )
    .await;

    // A projector paused past its leases while writes go on, twice. The first time it
    // is paused with nothing left to apply, so that its count of events applied can be
    // compared: read before the pause, and again once it resumed and the shards were
    // spread again, it is the same. The events of the shards it lost were applied by
    // the other; nothing it tried to commit for them after the pause was taken (or
    // counted); the shards it took back had nothing left to apply either.
    let quiet = writer.pause().await;
    wait_until_caught_up(&apis[0]).await;
    let applied_before = settled_count(&third).await;
    let held = pause_past_leases(&apis[0], &writer, Some(quiet), &third, &second, partitions).await;
    assert_eq!(
        events_applied(&third.metrics().await),
        Some(applied_before),
        "the resumed projector applied events it did not hold the lease of; its log:\n{}",
        third.log_text()
    );
    drop(held);
    // The second time in the middle of the writes, perhaps in the middle of a commit.
    // Its open transaction then holds rows the other's commits and takeovers wait for
    // (and, with events in PostgreSQL, the server's xmin, below which alone the log is
    // read) until the server ends the paused session (idle in transaction, 30 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(pause_past_leases(&apis[0], &writer, None, &third, &second, partitions).await);

    // Every token handed out is answered by both api processes.
    let written = writer.stop().await;
    assert!(
        written.len() as u64 > partitions,
        "the writer wrote {}",
        written.len()
    );
    for api in &apis {
        answers_every_token(api, &written).await;
    }

    // A full replay into a fresh read store comes out the same.
    let mut replayed = stores.clone();
    replayed.read_store = store_args_of(dir.path(), "postgres", "postgres").read_store;
    let replay = Served::start_with(&replayed, "all", dir.path(), &env).await;
    replay.wait_until_ready().await;
    answers_every_token(&replay, &written).await;
    for api in &apis {
        assert_same_read_models(api, &replay).await;
    }

    // Both live projectors applied events, and hold half the shards each.
    wait_for_spread(&apis[0], &[(&second, half), (&third, half)], "at the end").await;
    for projector in [&second, &third] {
        let metrics = projector.metrics().await;
        assert!(events_applied(&metrics).is_some_and(|n| n > 0), "{metrics}");
    }

    replay.stop().await;
    for api in apis {
        api.stop().await;
    }
    second.stop().await;
    third.stop().await;
}

/// SIGSTOP to `paused`, then lets the writer go on (`quiet`, when given, is dropped
/// once the signal is sent); `other` must take every shard. After three lease times the
/// writer is held and the shards caught up; SIGCONT to `paused`, which must drop every
/// shard it held, and the shards must be spread evenly again. The writer is held until
/// the guard returned is dropped.
async fn pause_past_leases<'a>(
    api: &Served,
    writer: &'a Writer,
    quiet: Option<tokio::sync::MutexGuard<'a, ()>>,
    paused: &Served,
    other: &Served,
    partitions: u64,
) -> tokio::sync::MutexGuard<'a, ()> {
    let held = shards_of(api, paused).await;
    assert!(!held.is_empty());
    let log_before = paused.log_text().len();
    paused.pause();
    let started = tokio::time::Instant::now();
    drop(quiet);
    wait_for_spread(api, &[(other, partitions)], "one was paused").await;
    tokio::time::sleep_until(started + Duration::from_secs(3 * LEASE_TTL)).await;
    let writer_held = writer.pause().await;
    wait_until_caught_up(api).await;
    paused.resume();
    // Each shard it held is dropped with "shard lost" (its lease found taken at a
    // renewal, or a commit refused) or "giving up a shard" (a first round that
    // planned without it: its heartbeat was read after its membership lapsed).
    eventually(MOVE_WITHIN, || async {
        let log = paused.log_text();
        let kept: Vec<u64> = held
            .iter()
            .filter(|&&shard| !dropped(&log[log_before..], shard))
            .copied()
            .collect();
        if kept.is_empty() { Ok(()) } else { Err(kept) }
    })
    .await
    .unwrap_or_else(|kept| {
        panic!(
            "the resumed projector did not drop shards {kept:?} it lost while paused:\n{}",
            paused.log_text()
        )
    });
    let half = partitions / 2;
    wait_for_spread(
        api,
        &[(other, half), (paused, half)],
        "the paused one resumed",
    )
    .await;
    writer_held
}

/// The shards the admin report of `api` has leased to `projector`.
async fn shards_of(api: &Served, projector: &Served) -> Vec<u64> {
    let pid = format!("-{}-", projector.pid());
    api.projections().await["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .filter(|s| s["owner"].as_str().is_some_and(|o| o.contains(&pid)))
        .filter_map(|s| s["shard"].as_u64())
        .collect()
}

/// Whether `log` has a line dropping `shard`.
fn dropped(log: &str, shard: u64) -> bool {
    let field = format!("shard={shard}");
    log.lines().any(|line| {
        (line.contains("shard lost") || line.contains("giving up a shard"))
            && line.split_whitespace().any(|t| t == field)
    })
}

/// Waits until each projector holds the number of shards given with it, by its metric
/// and by the leases in the admin report of `api` (the holder's projector id names its
/// process id).
async fn wait_for_spread(api: &Served, expected: &[(&Served, u64)], when: &str) {
    let seen = eventually(MOVE_WITHIN, || async {
        let mut seen = Vec::new();
        let report = api.projections().await;
        let shards = report["shards"].as_array().cloned().unwrap_or_default();
        for (projector, count) in expected {
            let owned = projector.metric(OWNED).await;
            let pid = format!("-{}-", projector.pid());
            let leased = shards
                .iter()
                .filter(|s| s["owner"].as_str().is_some_and(|o| o.contains(&pid)))
                .count() as u64;
            if owned != Some(*count) || leased != *count {
                seen.push(format!(
                    "projector {}: {owned:?} owned by its metric, {leased} by the leases, not {count}",
                    projector.pid()
                ));
            }
        }
        if seen.is_empty() {
            Ok(())
        } else {
            Err((seen, report))
        }
    })
    .await;
    if let Err((seen, report)) = seen {
        let logs: Vec<String> = expected
            .iter()
            .map(|(p, _)| format!("projector {}:\n{}", p.pid(), p.log_text()))
            .collect();
        panic!(
            "the shards were not spread as expected ({when}): {seen:?}\nreport: {report:#}\n{}",
            logs.join("\n")
        );
    }
}

/// Waits until the report of `api` shows no shard behind the log.
async fn wait_until_caught_up(api: &Served) {
    eventually(MOVE_WITHIN, || async {
        let report = api.projections().await;
        let behind = report["shards"]
            .as_array()
            .is_some_and(|shards| shards.iter().all(|s| s["eventsBehind"] == 0));
        if behind { Ok(()) } else { Err(report) }
    })
    .await
    .unwrap_or_else(|report| panic!("the shards did not catch up: {report:#}"));
}

/// The projector's count of events applied, once two reads a moment apart agree (a
/// commit the api process already sees is counted just after it ends).
async fn settled_count(projector: &Served) -> u64 {
    eventually(MOVE_WITHIN, || async {
        let first = events_applied(&projector.metrics().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = events_applied(&projector.metrics().await);
        match (first, second) {
            (Some(a), Some(b)) if a == b => Ok(a),
            other => Err(other),
        }
    })
    .await
    .unwrap_or_else(|seen| panic!("the count of events applied does not settle: {seen:?}"))
}

/// Asserts that `api` answers the token of every write with the order it wrote.
async fn answers_every_token(api: &Served, written: &[CommandAnswer]) {
    for answer in written {
        let response = api
            .get_after(
                &format!("/api/v1/orders/order/{}", answer.order_id),
                &answer.token,
            )
            .await;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status,
            StatusCode::OK,
            "token {} of order {}: {body}",
            answer.token,
            answer.order_id
        );
        assert!(
            body["version"]
                .as_u64()
                .is_some_and(|v| v >= answer.version),
            "token {} of order {}: {body}",
            answer.token,
            answer.order_id
        );
    }
}

/// Asserts that `a` and `b` answer the same summary, top customers, daily figures and
/// orders.
async fn assert_same_read_models(a: &Served, b: &Served) {
    let read = |served: &Served, path: String| {
        let request = served.get(&path);
        async move { json_of(Served::send(request).await, StatusCode::OK).await }
    };
    for path in [
        "/api/v1/orders/summary",
        "/api/v1/orders/top-customers?limit=100",
    ] {
        let (left, right) = (read(a, path.into()).await, read(b, path.into()).await);
        assert_eq!(left, right, "{path}");
    }
    // The same days in both, whatever the date is when each is asked.
    let daily = read(a, "/api/v1/orders/daily?days=7".into()).await;
    let to = daily["to"].as_str().expect("to").to_owned();
    let path = format!("/api/v1/orders/daily?days=7&to={to}");
    let (left, right) = (read(a, path.clone()).await, read(b, path.clone()).await);
    assert!(
        left["days"]
            .as_array()
            .is_some_and(|days| days.iter().any(|d| d["orders"] != 0)),
        "{left}"
    );
    assert_eq!(left, right, "{path}");
    let (left, right) = (all_orders(a).await, all_orders(b).await);
    assert!(!left.is_empty());
    assert_eq!(left.len(), right.len());
    for (l, r) in left.iter().zip(&right) {
        assert_eq!(l, r);
    }
}

/// Every order `served` lists, page by page, by order id.
async fn all_orders(served: &Served) -> Vec<Value> {
    let mut orders = Vec::new();
    for page in 1.. {
        let path = format!("/api/v1/orders?limit=100&sort=createdAt&page={page}");
        let list = json_of(Served::send(served.get(&path)).await, StatusCode::OK).await;
        let total = list["total"].as_u64().expect("total") as usize;
        let got = list["orders"].as_array().cloned().unwrap_or_default();
        let last = got.is_empty();
        orders.extend(got);
        if last || orders.len() >= total {
            assert_eq!(orders.len(), total, "{path}");
            break;
        }
    }
    orders.sort_by(|a, b| a["orderId"].as_str().cmp(&b["orderId"].as_str()));
    orders
}

/// Sends commands to the api processes in turn, one at a time, until stopped: creates
/// orders, moves them along the status flow and cancels some; keeps every answer.
struct Writer {
    /// Held by the writer for each command; held here to pause it between two.
    turn: Arc<tokio::sync::Mutex<()>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<CommandAnswer>>,
}

/// The status flow a writer moves orders along.
const FLOW: [&str; 5] = ["pending", "confirmed", "processing", "shipped", "delivered"];

const CUSTOMERS: [(&str, &str); 7] = [
    ("Ada Lovelace", "ada@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("Alan Turing", "alan@example.com"),
    ("Edsger Dijkstra", "edsger@example.com"),
    ("Barbara Liskov", "barbara@example.com"),
    ("Donald Knuth", "donald@example.com"),
    ("Frances Allen", "frances@example.com"),
];

impl Writer {
    fn start(apis: &[Served]) -> Writer {
        let addresses: Vec<String> = apis.iter().map(|a| a.address.clone()).collect();
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(write(addresses, Arc::clone(&turn), Arc::clone(&stop)));
        Writer { turn, stop, task }
    }

    /// Pauses the writer once the command it sends, if any, is answered; it goes on when
    /// the guard is dropped.
    async fn pause(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// Stops the writer; every answer it had, in order.
    async fn stop(self) -> Vec<CommandAnswer> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the writer ran without a failure")
    }
}

async fn write(
    addresses: Vec<String>,
    turn: Arc<tokio::sync::Mutex<()>>,
    stop: Arc<AtomicBool>,
) -> Vec<CommandAnswer> {
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let mut written = Vec::new();
    // Orders not yet delivered or cancelled, with their step in FLOW.
    let mut open: Vec<(String, usize)> = Vec::new();
    for i in 0usize.. {
        let held = turn.lock().await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let base = &addresses[i % addresses.len()];
        let (request, expected) = if open.is_empty() || i % 3 == 0 {
            let (name, email) = CUSTOMERS[i % CUSTOMERS.len()];
            let price = format!("{}.{:02}", 3 + i % 17, (i * 13) % 100);
            let body = order_body(name, email, &[("Widget", 1 + (i % 4) as u32, &price)]);
            let request = client
                .request(Method::POST, format!("{base}/api/v1/orders/order"))
                .json(&body);
            (request, StatusCode::CREATED)
        } else {
            let k = (i * 7) % open.len();
            let (id, step) = open[k].clone();
            let request = if step < 3 && i % 5 == 0 {
                open.swap_remove(k);
                client
                    .request(
                        Method::PUT,
                        format!("{base}/api/v1/orders/order/{id}/cancel"),
                    )
                    .json(&json!({"reason": "changed my mind"}))
            } else {
                if step + 1 == FLOW.len() - 1 {
                    open.swap_remove(k);
                } else {
                    open[k].1 += 1;
                }
                client
                    .request(
                        Method::PUT,
                        format!("{base}/api/v1/orders/order/{id}/status"),
                    )
                    .json(&json!({"status": FLOW[step + 1]}))
            };
            (request, StatusCode::OK)
        };
        let response = request.send().await.expect("a command answered");
        if response.status() != expected {
            let status = response.status();
            panic!(
                "command {i} to {base}: {status}, {}",
                response.text().await.unwrap_or_default()
            );
        }
        let answer = CommandAnswer::from(response).await;
        if expected == StatusCode::CREATED {
            open.push((answer.order_id.clone(), 0));
        }
        written.push(answer);
        drop(held);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    written
}
