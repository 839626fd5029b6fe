//! The operator commands, run as a user runs them: the real binary on the same stores.

use std::process::Output;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

/// Runs `ordo <args>` with the store flags of `app`.
pub(crate) async fn ordo(app_args: &ordo::StoreArgs, args: &[&str]) -> Output {
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

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordo_events_prints_every_event_as_a_json_line_oldest_first() {
    let app = TestApp::spawn().await;
    let first = app.create_order(&ada()).await.order_id;
    app.set_status(&first, "confirmed").await;
    let second = app.create_order(&ada()).await.order_id;
    let output = ordo(&app.args, &["events"]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    let ours: Vec<(String, u64)> = lines
        .iter()
        .filter(|e| e["streamId"] == first.as_str())
        .map(|e| {
            (
                e["eventType"].as_str().expect("type").to_string(),
                e["version"].as_u64().expect("version"),
            )
        })
        .collect();
    assert_eq!(
        ours,
        [
            ("OrderCreated".to_string(), 1),
            ("OrderStatusChanged".to_string(), 2)
        ]
    );
    let one = ordo(&app.args, &["events", "--aggregate", &second]).await;
    let lines: Vec<Value> = stdout(&one)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["streamId"], second.as_str());
    for key in [
        "eventId",
        "eventType",
        "schemaVersion",
        "version",
        "position",
        "occurredAt",
        "data",
        "metadata",
    ] {
        assert!(lines[0].get(key).is_some(), "missing {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordo_snapshot_takes_a_snapshot_and_names_unknown_orders() {
    let app = TestApp::spawn().await;
    let id = app.create_order(&ada()).await.order_id;
    app.set_status(&id, "confirmed").await;
    let output = ordo(&app.args, &["snapshot", &id]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_str(stdout(&output).trim()).expect("json");
    assert_eq!(answer["orderId"], id.as_str());
    assert_eq!(answer["version"], 2);
    let unknown = ordo(&app.args, &["snapshot", &uuid::Uuid::now_v7().to_string()]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no order"));
    let malformed = ordo(&app.args, &["snapshot", "not-an-id"]).await;
    assert!(!malformed.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordo_replay_rebuilds_the_read_models_of_a_stopped_service() {
    let app = TestApp::spawn().await;
    let mut tokens = Vec::new();
    for i in 0..8 {
        let answer = app
            .create_order(&order_body(
                &format!("C{i}"),
                "cli@example.com",
                &[("Gear", 1, "1.25")],
            ))
            .await;
        tokens.push(answer.token);
    }
    for token in &tokens {
        app.get_after("/api/v1/orders/summary", token).await;
    }
    let before = json_of(app.get("/api/v1/orders?limit=100").await, StatusCode::OK).await;
    let args = app.args.clone();
    let dir = app.shutdown().await;

    let output = ordo(&args, &["replay"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("replayed 8 events"), "{stderr}");
    for flags in [
        vec!["replay", "--from", "2000-01-01T00:00:00Z"],
        vec![
            "replay",
            "--aggregate",
            before["orders"][0]["orderId"].as_str().expect("id"),
        ],
    ] {
        let output = ordo(&args, &flags).await;
        assert!(
            output.status.success(),
            "{flags:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let bad = ordo(&args, &["replay", "--from", "yesterday"]).await;
    assert!(!bad.status.success());

    let restarted = TestApp::spawn_with(args).await;
    let after = json_of(
        restarted.get("/api/v1/orders?limit=100").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(before, after, "the rebuilt read models answer as before");
    restarted.shutdown().await;
    drop(dir);
}

/// An address nothing listens on: a port the system handed out, then let go.
async fn closed_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let address = listener.local_addr().expect("addr").to_string();
    drop(listener);
    address
}

/// The `kind` status reports for a store URL (`None`: embedded).
fn kind_of(url: Option<&str>) -> &'static str {
    match url {
        None => "sqlite",
        Some(u) if u.starts_with("postgres") => "postgres",
        Some(u) if u.starts_with("redis+cluster") => "redis-cluster",
        Some(u) if u.starts_with("redis") => "redis",
        Some(u) => panic!("unexpected store URL {u}"),
    }
}

fn report_of(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).unwrap_or_else(|e| {
        panic!(
            "status --json printed no JSON ({e}): {}\n{}",
            stdout(output),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordo_status_reports_the_stores_the_projection_and_its_parked_events() {
    let app = TestApp::spawn().await;
    let poisoned = uuid::Uuid::now_v7().to_string();
    let poison = app
        .stores
        .events
        .append(
            &ordo_es::StreamId::new(poisoned.clone()),
            ordo_es::ExpectedVersion::NoStream,
            vec![crate::admin::raw_event(
                "OrderCreated",
                99,
                serde_json::json!({"from": "the future"}),
            )],
        )
        .await
        .expect("append poison")
        .last_position()
        .to_string();
    let mut tokens = vec![poison];
    for _ in 0..2 {
        tokens.push(app.create_order(&ada()).await.token);
    }
    for token in &tokens {
        app.get_after("/api/v1/orders/summary", token).await;
    }
    let args = app.args.clone();
    let dir = app.shutdown().await;
    let nobody = closed_address().await;

    let output = ordo(&args, &["status", "--json", "--listen", &nobody]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = report_of(&output);
    assert_eq!(report["ok"], true, "{report:#}");
    let events = &report["eventStore"];
    assert_eq!(events["kind"], kind_of(args.event_store.as_deref()));
    assert_eq!(events["reachable"], true);
    assert_eq!(events["events"], 3);
    let reads = &report["readStore"];
    assert_eq!(reads["kind"], kind_of(args.read_store.as_deref()));
    assert_eq!(reads["reachable"], true);
    assert_eq!(reads["rebuildRunning"], false);
    assert_eq!(reads["otherGenerations"], serde_json::json!([]));
    let projections = report["projections"].as_array().expect("projections");
    assert_eq!(projections.len(), 1, "{report:#}");
    let orders = &projections[0];
    assert_eq!(orders["name"], "orders");
    assert_eq!(orders["generation"], reads["activeGeneration"]);
    assert_eq!(orders["active"], true);
    assert_eq!(orders["eventsBehind"], 0);
    assert_eq!(orders["estimatedLagSeconds"], 0.0);
    assert_eq!(orders["state"], "caughtUp");
    assert_eq!(orders["live"], Value::Null, "no server, no live state");
    assert_eq!(orders["parkedCount"], 1);
    assert_eq!(orders["parked"][0]["streamId"], poisoned.as_str());
    assert!(
        orders["parked"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("99")),
        "{report:#}"
    );
    let server = &report["server"];
    assert_eq!(server["url"], format!("http://{nobody}"));
    assert_eq!(server["answered"], false);
    assert_eq!(server["explicit"], false);

    let output = ordo(&args, &["status", "--listen", &nobody]).await;
    assert!(output.status.success());
    let table = stdout(&output);
    for expected in [
        "event store",
        "3 events",
        "rebuild      none running",
        "caught up (stores)",
        "no server answered",
    ] {
        assert!(table.contains(expected), "{expected:?} in\n{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("orders "))
        .unwrap_or_else(|| panic!("a row for the projection in\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // orders, <generation>, (active), position, behind, lag, "s", parked, state...
    assert_eq!(cells[4], "0", "behind: {row}");
    assert_eq!(cells[7], "1", "parked: {row}");
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordo_status_merges_the_live_state_of_a_running_server() {
    let app = TestApp::spawn().await;
    let answer = app.create_order(&ada()).await;
    app.get_after("/api/v1/orders/summary", &answer.token).await;
    wait_for_ready(&app, StatusCode::OK).await;

    let output = ordo(
        &app.args,
        &[
            "status",
            "--json",
            "--server",
            &app.address,
            "--admin-token",
            ADMIN_TOKEN,
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !stdout(&output).contains(ADMIN_TOKEN),
        "the token is never printed"
    );
    let report = report_of(&output);
    assert_eq!(report["server"]["answered"], true, "{report:#}");
    assert_eq!(report["server"]["explicit"], true);
    assert_eq!(report["server"]["ready"], true);
    assert_eq!(
        report["readStore"]["rebuildRunning"], false,
        "a serving process is not a rebuild"
    );
    let orders = &report["projections"][0];
    assert_eq!(orders["live"]["state"], "running", "{report:#}");
    assert_eq!(orders["live"]["lastError"], Value::Null);
    assert_eq!(orders["eventsBehind"], 0);

    let table = stdout(
        &ordo(
            &app.args,
            &[
                "status",
                "--server",
                &app.address,
                "--admin-token",
                ADMIN_TOKEN,
            ],
        )
        .await,
    );
    assert!(table.contains("running (server)"), "{table}");
    assert!(table.contains("answered: ready"), "{table}");

    let without = ordo(&app.args, &["status", "--json", "--server", &app.address]).await;
    assert!(without.status.success(), "no token: the stores' state only");
    let report = report_of(&without);
    assert_eq!(report["projections"][0]["live"], Value::Null);
    assert_eq!(report["projections"][0]["state"], "caughtUp");

    let refused = ordo(
        &app.args,
        &[
            "status",
            "--json",
            "--server",
            &app.address,
            "--admin-token",
            "not-the-token",
        ],
    )
    .await;
    assert!(!refused.status.success(), "a refused token fails");
    assert!(!stdout(&refused).contains("not-the-token"));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refused the admin token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let nobody = format!("http://{}", closed_address().await);
    let named = ordo(&app.args, &["status", "--json", "--server", &nobody]).await;
    assert!(
        !named.status.success(),
        "a named server that does not answer fails"
    );
    assert_eq!(report_of(&named)["server"]["answered"], false);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordo_status_on_a_missing_data_dir_says_there_is_no_store_and_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nothing-here");
    // Remote stores get a schema / key prefix nothing ever used.
    let args = store_args(&missing);
    let nobody = closed_address().await;
    // Twice: a first look that created anything would let the second find it.
    for _ in 0..2 {
        let output = ordo(&args, &["status", "--json", "--listen", &nobody]).await;
        assert!(!output.status.success());
        let report = report_of(&output);
        assert_eq!(report["ok"], false);
        assert_eq!(report["eventStore"]["reachable"], false);
        assert!(
            report["eventStore"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("no event store")),
            "{report:#}"
        );
        assert_eq!(report["readStore"]["reachable"], false);
        assert!(
            report["readStore"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("no read store")),
            "{report:#}"
        );
        assert_eq!(report["projections"], serde_json::json!([]));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("no event store"), "{stderr}");
    }
    assert!(!missing.exists(), "status created the data dir");
}
