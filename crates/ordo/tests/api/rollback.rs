//! A Redis event log that goes backwards (a failover to a replica that had not received
//! the newest acknowledged writes) is noticed: the projection halts, `/ready`, the admin
//! projections endpoint and `/metrics` say so and name the repair, and a replay repairs it.
//!
//! The failover is emulated faithfully on the shared Redis (a key prefix of its own per
//! test): every key of one partition (its log, its sequence counter, its aggregate
//! streams) is copied with DUMP at one moment, and later put back in one MULTI/EXEC in
//! place of what the partition holds by then, as a replica's copy taken at that moment
//! would be served by a promoted replica. For the case where writes after the failover
//! reuse the lost positions, those writes are made on the copy (under a scratch prefix,
//! through the real store) before it is put back, so the service never sees the moment
//! in between.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use ordo::StoreArgs;
use ordo_es::{Checkpoint, EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use ordo_redis::RedisEventStore;

use ordo_testkit::eventually;

use crate::helpers::{TestApp, ada, json_of, store_args, wait_for_ready};

const PARTITIONS: u32 = 2;

fn redis_base() -> String {
    std::env::var("ORDO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn store_url(prefix: &str) -> String {
    format!("{}?prefix={prefix}&partitions={PARTITIONS}", redis_base())
}

/// A key prefix of this test's own (removed by scripts/test.sh with the run's others).
fn unique_prefix() -> String {
    let run = std::env::var("ORDO_TEST_RUN")
        .ok()
        .filter(|r| !r.is_empty() && r.len() <= 12 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "x".into());
    format!("t-{run}-{}", uuid::Uuid::now_v7().simple())
}

async fn redis() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_base()).expect("Redis URL");
    match client.get_multiplexed_async_connection().await {
        Ok(connection) => connection,
        Err(e) => panic!(
            "this test needs Redis at {} (ORDO_TEST_REDIS_URL): {e}; start it with \
             scripts/services.sh or apt-get install redis-server",
            redis_base()
        ),
    }
}

/// Every key of `partition` under `prefix` (they share the partition's hash tag).
async fn partition_keys(
    redis: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    partition: u32,
) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{prefix}:{{{prefix}:p{partition}}}:*"))
        .query_async(redis)
        .await
        .expect("KEYS")
}

/// What a replica of one partition holds at one moment: each key and its DUMP.
struct Copy {
    prefix: String,
    partition: u32,
    keys: Vec<(String, Vec<u8>)>,
}

impl Copy {
    async fn take(prefix: &str, partition: u32) -> Copy {
        let mut redis = redis().await;
        let mut keys = Vec::new();
        for key in partition_keys(&mut redis, prefix, partition).await {
            let dump: Vec<u8> = redis::cmd("DUMP")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .expect("DUMP");
            keys.push((key, dump));
        }
        assert!(!keys.is_empty(), "nothing stored in partition {partition}");
        Copy {
            prefix: prefix.to_string(),
            partition,
            keys,
        }
    }

    /// The key names of this copy under another prefix.
    fn renamed(&self, key: &str, prefix: &str) -> String {
        let from = format!("{}:{{{}:p{}}}:", self.prefix, self.prefix, self.partition);
        let to = format!("{prefix}:{{{prefix}:p{}}}:", self.partition);
        key.replacen(&from, &to, 1)
    }

    /// Restores the copy under `prefix` (a scratch store to write on), with the
    /// partition count recorded like the real store's.
    async fn restore_as(&self, prefix: &str) {
        let mut redis = redis().await;
        for (key, dump) in &self.keys {
            let _: () = redis::cmd("RESTORE")
                .arg(self.renamed(key, prefix))
                .arg(0)
                .arg(dump.as_slice())
                .query_async(&mut redis)
                .await
                .expect("RESTORE");
        }
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}:partitions"))
            .arg(PARTITIONS)
            .query_async(&mut redis)
            .await
            .expect("SET");
    }
}

/// The failover: in one transaction, the partition's keys under `prefix` are replaced by
/// the keys of the same partition under `from` (a copy taken earlier, perhaps written to
/// since).
async fn fail_over(prefix: &str, from: &str, partition: u32) {
    let mut redis = redis().await;
    let current = partition_keys(&mut redis, prefix, partition).await;
    let promoted = partition_keys(&mut redis, from, partition).await;
    let mut transaction = redis::pipe();
    transaction.atomic();
    for key in &current {
        transaction.cmd("DEL").arg(key).ignore();
    }
    let old = format!("{from}:{{{from}:p{partition}}}:");
    let new = format!("{prefix}:{{{prefix}:p{partition}}}:");
    for key in &promoted {
        transaction
            .cmd("RENAME")
            .arg(key)
            .arg(key.replacen(&old, &new, 1))
            .ignore();
    }
    let _: () = transaction
        .query_async(&mut redis)
        .await
        .expect("MULTI/EXEC");
}

async fn projection(app: &TestApp) -> Value {
    let answer = json_of(
        app.admin(Method::GET, "/api/v1/admin/projections")
            .send()
            .await
            .expect("request"),
        StatusCode::OK,
    )
    .await;
    answer["projections"][0].clone()
}

/// Waits (up to 30 s) until the projection has applied `token` and a check of the log
/// has confirmed it.
async fn wait_until_checked(app: &TestApp, token: &str) {
    let position: Position = token.parse().expect("a position token");
    eventually(Duration::from_secs(30), || async {
        let report = projection(app).await;
        match report["logChecked"].as_str() {
            Some(checked)
                if Checkpoint::decode(checked)
                    .expect("a checkpoint")
                    .covers(&position) =>
            {
                Ok(())
            }
            _ => Err(report),
        }
    })
    .await
    .unwrap_or_else(|report| panic!("the projection never confirmed {token}: {report}"));
}

/// Waits (up to a minute) until /ready answers 503 with a detail holding `text`; returns
/// its body.
async fn wait_for_unready_with(app: &TestApp, text: &str) -> Value {
    eventually(Duration::from_secs(60), || async {
        let response = app.get("/ready").await;
        let got = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        if got == StatusCode::SERVICE_UNAVAILABLE
            && body["detail"].as_str().is_some_and(|d| d.contains(text))
        {
            Ok(body)
        } else {
            Err(body)
        }
    })
    .await
    .unwrap_or_else(|last| panic!("/ready never said {text:?}; last: {last}"))
}

async fn metrics(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.expect("metrics")
}

/// Runs `ordo <args>` on the stores of `app_args`, as an operator would.
async fn ordo(app_args: &StoreArgs, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordo"));
    command
        .args(args)
        .arg("--data-dir")
        .arg(&app_args.data_dir)
        .env("NO_COLOR", "1");
    if let Some(url) = &app_args.event_store {
        command.arg("--event-store").arg(url);
    }
    if let Some(url) = &app_args.read_store {
        command.arg("--read-store").arg(url);
    }
    command.output().await.expect("run ordo")
}

/// An app whose events are in Redis under a prefix of their own, two partitions.
async fn spawn_on_redis(dir: &std::path::Path) -> (TestApp, String) {
    let prefix = unique_prefix();
    let mut args: StoreArgs = store_args(dir);
    args.event_store = Some(store_url(&prefix));
    let app = TestApp::spawn_with(args).await;
    wait_for_ready(&app, StatusCode::OK).await;
    (app, prefix)
}

fn partition_of_token(token: &str) -> u32 {
    token
        .parse::<Position>()
        .expect("a position token")
        .partition
}

/// Asserts that every outside view shows the projection halted by partition `partition`
/// going backwards, `how` being the kind of evidence; returns the admin report.
async fn assert_halted(app: &TestApp, partition: u32, how: &str) -> Value {
    // (A service just started is first unready for starting.)
    let ready = wait_for_unready_with(app, "has halted").await;
    let detail = ready["detail"].as_str().expect("detail");
    assert!(
        detail.contains(&format!(
            "projection orders has halted: the event log of partition {partition} went backwards"
        )) && detail.contains(how)
            && detail.contains("run `ordo replay`"),
        "{ready}"
    );
    let report = projection(app).await;
    assert_eq!(report["state"], "halted", "{report}");
    assert!(
        report["repair"]
            .as_str()
            .is_some_and(|r| r.contains("ordo replay") && r.contains("/api/v1/admin/replay")),
        "{report}"
    );
    assert!(
        report["lastError"]
            .as_str()
            .is_some_and(|e| e.contains(how)),
        "{report}"
    );
    let metrics = metrics(app).await;
    assert!(
        metrics.contains("ordo_projection_halted{projection=\"orders\"} 1\n"),
        "{metrics}"
    );
    report
}

/// A replay rebuilds the read models from the log as it is now, and clears the halt.
async fn replay_and_expect_ready(app: &TestApp) {
    let response = app
        .admin(Method::POST, "/api/v1/admin/replay")
        .send()
        .await
        .expect("request");
    let job = json_of(response, StatusCode::ACCEPTED).await["jobId"]
        .as_str()
        .expect("jobId")
        .to_string();
    let status = eventually(Duration::from_secs(60), || async {
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
    .unwrap_or_else(|status| panic!("replay job {job} did not finish: {status}"));
    assert_eq!(status["state"], "done", "{status}");
    wait_for_ready(app, StatusCode::OK).await;
    let report = projection(app).await;
    assert_eq!(report["state"], "running", "{report}");
    assert_eq!(report["repair"], Value::Null, "{report}");
    assert!(
        metrics(app)
            .await
            .contains("ordo_projection_halted{projection=\"orders\"} 0\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_log_that_lost_acknowledged_events_halts_the_projection_until_a_replay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (app, prefix) = spawn_on_redis(dir.path()).await;
    let created = app.create_order(&ada()).await;
    let partition = partition_of_token(&created.token);
    wait_until_checked(&app, &created.token).await;
    // The replica's copy: the order as created.
    let replica = Copy::take(&prefix, partition).await;
    app.set_status(&created.order_id, "confirmed").await;
    let last = app.set_status(&created.order_id, "processing").await;
    wait_until_checked(&app, &last.token).await;

    // The failover: the two status changes, acknowledged and projected, are gone.
    let scratch = format!("{prefix}-replica");
    replica.restore_as(&scratch).await;
    fail_over(&prefix, &scratch, partition).await;

    assert_halted(&app, partition, "ends at").await;
    replay_and_expect_ready(&app).await;
    // The rebuilt read models are the log as it is now: the order as created.
    let view = json_of(
        app.get(&format!("/api/v1/orders/order/{}", created.order_id))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["status"], "pending", "{view}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_reissued_after_a_failover_halt_the_projection_even_past_the_old_head() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (app, prefix) = spawn_on_redis(dir.path()).await;
    let created = app.create_order(&ada()).await;
    let partition = partition_of_token(&created.token);
    wait_until_checked(&app, &created.token).await;
    let replica = Copy::take(&prefix, partition).await;
    app.set_status(&created.order_id, "confirmed").await;
    let last = app.set_status(&created.order_id, "processing").await;
    wait_until_checked(&app, &last.token).await;
    let old_head: Position = last.token.parse().expect("token");

    // After the failover, writes go on from the replica's copy: the same changes again
    // (as clients retrying would make them, with new event ids) and a new order, three
    // events where two were lost, so the head ends past the projection's checkpoint.
    let scratch = format!("{prefix}-replica");
    replica.restore_as(&scratch).await;
    let promoted = RedisEventStore::connect(&store_url(&scratch))
        .await
        .expect("the promoted copy");
    let stream = StreamId::new(created.order_id.clone());
    let lost = app
        .stores
        .events
        .read_stream(&stream, 2, 2)
        .await
        .expect("read the order");
    let again = |event: &ordo_es::RecordedEvent| NewEvent {
        event_id: uuid::Uuid::now_v7(),
        aggregate_type: event.aggregate_type.clone(),
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        occurred_at: event.occurred_at,
        data: event.data.clone(),
        metadata: event.metadata.clone(),
    };
    promoted
        .append(
            &stream,
            ExpectedVersion::Exact(1),
            lost.iter().map(again).collect(),
        )
        .await
        .expect("append on the promoted copy");
    let first = app
        .stores
        .events
        .read_stream(&stream, 1, 1)
        .await
        .expect("read the order");
    let other = (0..)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .find(|id| ordo_es::partition_of(id, PARTITIONS) == partition)
        .expect("an order id in the partition");
    let appended = promoted
        .append(
            &StreamId::new(other.clone()),
            ExpectedVersion::NoStream,
            vec![again(&first[0])],
        )
        .await
        .expect("append on the promoted copy");
    assert!(
        appended.last_position().cursor > old_head.cursor,
        "the new head {} is past the old one {old_head}",
        appended.last_position()
    );
    drop(promoted);
    fail_over(&prefix, &scratch, partition).await;

    assert_halted(&app, partition, "now holds event").await;
    replay_and_expect_ready(&app).await;
    let summary = json_of(app.get("/api/v1/orders/summary").await, StatusCode::OK).await;
    assert_eq!(summary["totalOrders"], 2, "{summary}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordo_replay_repairs_read_models_the_log_went_backwards_under() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (app, prefix) = spawn_on_redis(dir.path()).await;
    let created = app.create_order(&ada()).await;
    let partition = partition_of_token(&created.token);
    wait_until_checked(&app, &created.token).await;
    let replica = Copy::take(&prefix, partition).await;
    let last = app.set_status(&created.order_id, "confirmed").await;
    wait_until_checked(&app, &last.token).await;
    let scratch = format!("{prefix}-replica");
    replica.restore_as(&scratch).await;
    fail_over(&prefix, &scratch, partition).await;
    assert_halted(&app, partition, "ends at").await;

    // A restart alone does not clear it: the log is still below the checkpoint.
    let args = app.args.clone();
    app.shutdown().await;
    let app = TestApp::spawn_with(args.clone()).await;
    assert_halted(&app, partition, "ends at").await;
    app.shutdown().await;

    // `ordo status` sees it from the stores too (with no server on the default address).
    let nobody = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .to_string();
    let output = ordo(&args, &["status", "--json", "--listen", &nobody]).await;
    assert!(
        !output.status.success(),
        "a log that went backwards is a problem"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("status --json");
    let active = &report["projections"][0];
    assert_eq!(active["state"], "logWentBackwards", "{report:#}");
    assert!(
        active["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!(
                "the event log of partition {partition} went backwards"
            )) && e.contains("ordo replay")),
        "{report:#}"
    );

    // The operator's repair, as a user runs it, on the stopped service's stores.
    let output = ordo(&args, &["replay"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("replayed 1 events"), "{stderr}");

    let app = TestApp::spawn_with(args).await;
    wait_for_ready(&app, StatusCode::OK).await;
    let report = projection(&app).await;
    assert_eq!(report["state"], "running", "{report}");
    assert!(
        metrics(&app)
            .await
            .contains("ordo_projection_halted{projection=\"orders\"} 0\n")
    );
    app.shutdown().await;
}
