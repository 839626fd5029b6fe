//! Process roles (`ordo serve --role`): an `api` and a `projector` process apart on
//! shared stores, each the real binary on a loopback port, and the refusal of any role
//! but `all` on the embedded stores.
//!
//! The shared stores are PostgreSQL for events and read models, and Redis for events with
//! PostgreSQL for read models, whatever the run's store combination is: the roles are
//! the point, and they need stores several processes share.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use ordo::StoreArgs;
use ordo_testkit::eventually;

use crate::helpers::{CommandAnswer, expect_problem, json_of, store_args_of};
use crate::served::{Served, events_applied, ordo_status};

/// Waits until the projector reports `expected` events committed.
async fn wait_for_applied(projector: &Served, expected: u64) {
    eventually(Duration::from_secs(30), || async {
        match events_applied(&projector.metrics().await) {
            Some(n) if n == expected => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap_or_else(|seen| panic!("the projector reports {seen:?} events applied, not {expected}"));
}

/// What both store combinations check, with an api process and then a projector process
/// started on `stores`: the api process takes a command but projects nothing (its token
/// is not reached); once the projector runs, the query with the token answers from what
/// it committed; the projector serves the operations endpoints only and counts what it
/// applied; the api process applies nothing.
async fn api_and_projector_apart(
    stores: &StoreArgs,
    dir: &Path,
) -> (Served, Served, CommandAnswer) {
    let api = Served::start(stores, "api", dir).await;
    api.wait_until_ready().await;
    let ready = json_of(Served::send(api.get("/ready")).await, StatusCode::OK).await;
    assert_eq!(ready["projections"], "elsewhere", "{ready}");
    let answer = api.create_order().await;
    let alone = Served::send(
        api.get("/api/v1/orders/summary")
            .header("X-Consistency-Token", &answer.token)
            .header("X-Consistency-Timeout-Ms", "100"),
    )
    .await;
    let problem = expect_problem(alone, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not caught up")),
        "no process projects yet: {problem}"
    );

    let projector = Served::start(stores, "projector", dir).await;
    projector.wait_until_ready().await;
    let ready = json_of(Served::send(projector.get("/ready")).await, StatusCode::OK).await;
    assert_eq!(ready["projections"], "here", "{ready}");
    let order = json_of(
        api.get_after(
            &format!("/api/v1/orders/order/{}", answer.order_id),
            &answer.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(order["customerName"], "Ada Lovelace", "{order}");
    assert_eq!(order["version"], 1);
    let summary = json_of(
        api.get_after("/api/v1/orders/summary", &answer.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(summary["totalOrders"], 1, "{summary}");

    // The projector: the operations endpoints, and nothing else.
    let order_path = format!("/api/v1/orders/order/{}", answer.order_id);
    for (method, path) in [
        (Method::GET, "/api/v1/orders"),
        (Method::GET, order_path.as_str()),
        (Method::POST, "/api/v1/orders/order"),
        (Method::GET, "/api/v1/admin/projections"),
        (Method::GET, "/"),
        (Method::GET, "/api-docs/openapi.json"),
    ] {
        let response = Served::send(projector.admin(method.clone(), path)).await;
        let problem = expect_problem(response, StatusCode::NOT_FOUND).await;
        assert_eq!(problem["detail"], "no such route", "{method} {path}");
    }
    json_of(Served::send(projector.get("/health")).await, StatusCode::OK).await;
    wait_for_applied(&projector, 1).await;

    // The api process runs no projection.
    let metrics = api.metrics().await;
    assert_eq!(events_applied(&metrics), None, "{metrics}");
    assert!(
        metrics.contains("ordo_projection_position{projection=\"orders\"}"),
        "{metrics}"
    );
    let report = api.projections().await;
    assert_eq!(report["state"], "following", "{report}");
    assert_eq!(report["eventsApplied"], 0, "{report}");
    assert!(report["checkpoint"].is_string(), "{report}");
    (api, projector, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_and_a_projector_process_share_postgres_and_follow_a_rebuild() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stores = store_args_of(dir.path(), "postgres", "postgres");
    let (api, projector, first) = api_and_projector_apart(&stores, dir.path()).await;

    // `ordo status` asks each for its live state: the api process reports following,
    // the projector has no admin endpoint to ask.
    let status = |server: &Served| ordo_status(&stores, server.address.clone());
    let output = status(&api).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(
        report["projections"][0]["live"]["state"], "following",
        "{report:#}"
    );
    let output = status(&projector).await;
    assert!(!output.status.success());
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report["server"]["ready"], true, "{report:#}");
    assert!(
        report["server"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no admin endpoints")),
        "{report:#}"
    );

    // A full rebuild runs where a projection runs: the api process says where.
    let refused = Served::send(api.admin(Method::POST, "/api/v1/admin/replay")).await;
    let problem = expect_problem(refused, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("--role api") && d.contains("ordo replay")),
        "{problem}"
    );
    // A repair in place does not need one.
    let started = Served::send(
        api.admin(Method::POST, "/api/v1/admin/replay")
            .json(&json!({"aggregateId": first.order_id})),
    )
    .await;
    let job = json_of(started, StatusCode::ACCEPTED).await["jobId"]
        .as_str()
        .expect("jobId")
        .to_string();
    let done = eventually(Duration::from_secs(30), || async {
        let status = json_of(
            Served::send(api.admin(Method::GET, &format!("/api/v1/admin/replay/{job}"))).await,
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
    .expect("the repair finished");
    assert_eq!(done["state"], "done", "{done}");

    // `ordo replay` beside them switches to a rebuilt generation; both follow it.
    let mut replay = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordo"));
    replay
        .arg("replay")
        .arg("--data-dir")
        .arg(&stores.data_dir)
        .arg("--event-store")
        .arg(stores.event_store.as_deref().expect("a PostgreSQL URL"))
        .arg("--read-store")
        .arg(stores.read_store.as_deref().expect("a PostgreSQL URL"))
        .env("NO_COLOR", "1");
    let output = replay.output().await.expect("run ordo replay");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let rebuilt = stderr
        .lines()
        .find_map(|l| {
            l.split_once("read models: ")
                .map(|(_, g)| g.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no generation named in {stderr}"));
    eventually(Duration::from_secs(30), || async {
        let seen = api.projections().await["generation"].clone();
        if seen == rebuilt.as_str() {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .await
    .unwrap_or_else(|seen| panic!("the api process stays on {seen}, not {rebuilt}"));
    // The projector's runner moves to the rebuilt generation (once it has, what it
    // applies next it applies there only).
    eventually(Duration::from_secs(30), || async {
        projector
            .log_text()
            .contains("followed a switch to rebuilt read models")
            .then_some(())
            .ok_or(())
    })
    .await
    .unwrap_or_else(|()| panic!("the projector did not follow:\n{}", projector.log_text()));
    // Only the projector projects now: a token is reached once it projects into the
    // rebuilt generation.
    let second = api.create_order().await;
    let summary = json_of(
        api.get_after("/api/v1/orders/summary", &second.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(summary["totalOrders"], 2, "{summary}");
    wait_for_applied(&projector, 2).await;
    assert_eq!(events_applied(&api.metrics().await), None);

    api.stop().await;
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_and_a_projector_process_share_redis_events_and_postgres_read_models() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stores = store_args_of(dir.path(), "redis", "postgres");
    let (api, projector, _) = api_and_projector_apart(&stores, dir.path()).await;
    api.stop().await;
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_other_than_all_are_refused_on_the_embedded_stores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let shared = store_args_of(dir.path(), "postgres", "postgres");
    let postgres = shared.event_store.as_deref().expect("a PostgreSQL URL");
    for (role, stores, embedded) in [
        ("api", vec![], "the event store sqlite://"),
        (
            "projector",
            vec!["--event-store", postgres],
            "the read store sqlite://",
        ),
        (
            "api",
            vec!["--read-store", postgres],
            "the event store sqlite://",
        ),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
            .args(["serve", "--role", role, "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .args(&stores)
            .env("NO_COLOR", "1")
            .output()
            .await
            .expect("run ordo serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{role} {stores:?}: {stderr}");
        for expected in [
            &format!("--role {role} needs stores that several processes share"),
            embedded,
            "only one process may use",
            "--role all",
            "PostgreSQL",
        ] {
            assert!(stderr.contains(expected), "{expected:?} in {stderr}");
        }
    }
    assert!(!data.exists(), "refused before any store was opened");

    let help = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["serve", "--help"])
        .output()
        .await
        .expect("ordo serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for expected in ["--role <ROLE>", "ORDO_ROLE", "projector", "[default: all]"] {
        assert!(help.contains(expected), "{expected:?} in {help}");
    }
}
