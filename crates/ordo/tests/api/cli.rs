//! The operator commands, run as a user runs them: the real binary on the same stores.

use std::process::Output;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

/// Runs `ordo <args>` with the store flags of `app`.
async fn ordo(app_args: &ordo::StoreArgs, args: &[&str]) -> Output {
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
