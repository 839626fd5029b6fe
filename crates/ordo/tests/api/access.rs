//! Access control: API tokens with a scope, the admin token from a file, what stays open,
//! and that no token is ever printed.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr};

use ordo::Settings;
use ordo_http::ApiTokens;

use ordo_testkit::eventually;

use crate::helpers::*;

const READ_TOKEN: &str = "read-token-5b1d7c0e9a";
const WRITE_TOKEN: &str = "write-token-c4f2a8e61d";

fn token_file() -> String {
    format!("# API tokens of the tests\n\n{READ_TOKEN} read\n  {WRITE_TOKEN}\twrite\n")
}

async fn guarded_app() -> TestApp {
    let tokens = ApiTokens::parse(&token_file()).expect("token file");
    TestApp::spawn_configured(Settings {
        admin_token: Some(ADMIN_TOKEN.into()),
        api_tokens: Some(Arc::new(tokens)),
        ..Settings::default()
    })
    .await
}

/// Asserts a 401 that asks for a bearer token.
async fn expect_challenge(response: reqwest::Response) {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(challenge.starts_with("Bearer"), "{challenge:?}");
    expect_problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_api_tokens_queries_commands_and_the_stream_need_a_token() {
    let app = guarded_app().await;
    let id = uuid::Uuid::now_v7();
    expect_challenge(app.get("/api/v1/orders").await).await;
    expect_challenge(app.get(&format!("/api/v1/orders/order/{id}/events")).await).await;
    expect_challenge(app.post_order(&ada()).await).await;
    expect_challenge(app.put_status(&id.to_string(), "confirmed").await).await;
    expect_challenge(app.get("/api/v1/events/stream").await).await;
    for wrong in [
        "read-token-5b1d7c0e9b",
        "read-token-5b1d7c0e9",
        "read-token-5b1d7c0e9a0",
    ] {
        let response = app
            .request(Method::GET, "/api/v1/orders")
            .bearer_auth(wrong)
            .send()
            .await
            .expect("request");
        expect_challenge(response).await;
    }
    let in_query = app
        .get(&format!("/api/v1/orders?access_token={READ_TOKEN}"))
        .await;
    assert_eq!(
        in_query.status(),
        StatusCode::UNAUTHORIZED,
        "only the event stream takes the token in its query"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_reads_and_only_a_write_token_commands() {
    let app = guarded_app().await;
    let created = app
        .request(Method::POST, "/api/v1/orders/order")
        .bearer_auth(WRITE_TOKEN)
        .json(&ada())
        .send()
        .await
        .expect("request");
    assert_eq!(created.status(), StatusCode::CREATED);
    let answer = CommandAnswer::from(created).await;
    let id = answer.order_id;

    let read = app
        .request(Method::GET, &format!("/api/v1/orders/order/{id}"))
        .bearer_auth(READ_TOKEN)
        .header("X-Consistency-Token", &answer.token)
        .header("X-Consistency-Timeout-Ms", "30000")
        .send()
        .await
        .expect("request");
    let view = json_of(read, StatusCode::OK).await;
    assert_eq!(view["orderId"], id.as_str());
    for path in [
        "/api/v1/orders".to_string(),
        format!("/api/v1/orders/order/{id}/events"),
        "/api/v1/orders/summary".to_string(),
    ] {
        for token in [READ_TOKEN, WRITE_TOKEN] {
            let response = app
                .request(Method::GET, &path)
                .bearer_auth(token)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
    }

    let commands = [
        app.request(Method::POST, "/api/v1/orders/order")
            .json(&ada()),
        app.request(Method::PUT, &format!("/api/v1/orders/order/{id}/status"))
            .json(&json!({"status": "confirmed"})),
        app.request(Method::PUT, &format!("/api/v1/orders/order/{id}/cancel")),
        app.request(Method::DELETE, &format!("/api/v1/orders/order/{id}")),
    ];
    for command in commands {
        let response = command
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("request");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(challenge.contains("insufficient_scope"), "{challenge:?}");
        let problem = expect_problem(response, StatusCode::FORBIDDEN).await;
        assert!(
            problem["detail"].as_str().unwrap_or("").contains("write"),
            "{problem}"
        );
    }

    let confirmed = app
        .request(Method::PUT, &format!("/api/v1/orders/order/{id}/status"))
        .bearer_auth(WRITE_TOKEN)
        .json(&json!({"status": "confirmed"}))
        .send()
        .await
        .expect("request");
    let answer = CommandAnswer::from(confirmed).await;
    assert_eq!(
        answer.version, 2,
        "the read token's commands stored nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_takes_the_token_as_a_header_or_as_access_token() {
    let app = guarded_app().await;
    let by_header = app
        .request(Method::GET, "/api/v1/events/stream")
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(by_header.status(), StatusCode::OK);
    let by_query = app
        .get(&format!("/api/v1/events/stream?access_token={READ_TOKEN}"))
        .await;
    assert_eq!(by_query.status(), StatusCode::OK);
    assert!(
        by_query
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    expect_challenge(
        app.get("/api/v1/events/stream?access_token=not-a-token-at-all-0000")
            .await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_and_pages_stay_open_and_admin_needs_the_admin_token() {
    let app = guarded_app().await;
    for path in [
        "/health",
        "/metrics",
        "/",
        "/docs",
        "/api-docs/openapi.json",
    ] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
    // Starting (503) until ready; never anything else.
    eventually(Duration::from_secs(30), || async {
        match app.get("/ready").await.status() {
            StatusCode::OK => Ok(()),
            other => {
                assert_eq!(other, StatusCode::SERVICE_UNAVAILABLE);
                Err(other)
            }
        }
    })
    .await
    .expect("/ready answers 200 within 30 s");

    for token in [WRITE_TOKEN, READ_TOKEN] {
        let response = app
            .request(Method::GET, "/api/v1/admin/projections")
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "an API token does not open the admin endpoints"
        );
    }
    let admin = app
        .admin(Method::GET, "/api/v1/admin/projections")
        .send()
        .await
        .expect("request");
    assert_eq!(admin.status(), StatusCode::OK);
}

#[test]
fn settings_and_their_debug_forms_print_no_token() {
    let settings = Settings {
        admin_token: Some(ADMIN_TOKEN.into()),
        api_tokens: Some(Arc::new(
            ApiTokens::parse(&token_file()).expect("token file"),
        )),
        ..Settings::default()
    };
    let debug = format!("{settings:?} {settings:#?}");
    for token in [READ_TOKEN, WRITE_TOKEN, ADMIN_TOKEN] {
        assert!(!debug.contains(token), "{debug}");
    }
}

// The binary, as an operator starts it.

/// `ordo serve` on the test stores with `extra` flags, its log on a pipe.
fn start_ordo(dir: &std::path::Path, extra: &[&str]) -> Child {
    let args = store_args(dir);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordo"));
    command
        .arg("serve")
        .args(extra)
        .arg("--data-dir")
        .arg(&args.data_dir)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,ordo=debug,ordo_http=debug")
        .env_remove("ORDO_ADMIN_TOKEN")
        .env_remove("ORDO_API_TOKEN_FILE")
        .env_remove("ORDO_ADMIN_TOKEN_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(url) = &args.event_store {
        command.arg("--event-store").arg(url);
    }
    if let Some(url) = &args.read_store {
        command.arg("--read-store").arg(url);
    }
    command.spawn().expect("start ordo")
}

/// Log text without terminal colours.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads the log until the server says where it listens: (its port, the log so far).
async fn wait_listening(stderr: &mut tokio::io::Lines<BufReader<ChildStderr>>) -> (u16, String) {
    let mut log = String::new();
    let read = async {
        while let Some(line) = stderr.next_line().await.expect("read the log") {
            let line = plain(&line);
            log.push_str(&line);
            log.push('\n');
            if line.contains("ordo is listening")
                && let Some((_, rest)) = line.split_once("address=")
            {
                let address = rest.split_whitespace().next().unwrap_or_default();
                let port = address.rsplit(':').next().unwrap_or_default();
                return port.parse::<u16>().ok();
            }
        }
        None
    };
    let port = tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .ok()
        .flatten();
    let port = port.unwrap_or_else(|| panic!("ordo did not start listening; its log:\n{log}"));
    (port, log)
}

/// SIGTERM to the child, then the rest of its log.
async fn stop(
    mut child: Child,
    mut stderr: tokio::io::Lines<BufReader<ChildStderr>>,
    mut log: String,
) -> String {
    let pid = child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    while let Ok(Some(line)) = stderr.next_line().await {
        log.push_str(&plain(&line));
        log.push('\n');
    }
    let status = child.wait().await.expect("wait");
    assert!(
        status.success(),
        "ordo exits cleanly on SIGTERM; log:\n{log}"
    );
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_both_token_files_and_never_logs_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let api_file = dir.path().join("api-tokens");
    std::fs::write(&api_file, token_file()).expect("write");
    let admin_file = dir.path().join("admin-token");
    let admin_token = "admin-from-a-file-7e3b90";
    std::fs::write(&admin_file, format!("{admin_token}\n")).expect("write");
    let mut child = start_ordo(
        dir.path(),
        &[
            "--listen",
            "0.0.0.0:0",
            "--api-token-file",
            api_file.to_str().expect("utf-8 path"),
            "--admin-token-file",
            admin_file.to_str().expect("utf-8 path"),
        ],
    );
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (port, log) = wait_listening(&mut stderr).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let get = |path: &str, token: &str| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .header("X-Request-Id", "access-test")
            .send()
    };
    assert_eq!(
        get("/api/v1/admin/projections", admin_token)
            .await
            .expect("request")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get("/api/v1/admin/projections", WRITE_TOKEN)
            .await
            .expect("request")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/api/v1/orders", READ_TOKEN)
            .await
            .expect("request")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get("/api/v1/orders", admin_token)
            .await
            .expect("request")
            .status(),
        StatusCode::UNAUTHORIZED,
        "the admin token is not an API token"
    );
    let created = client
        .post(format!("{base}/api/v1/orders/order"))
        .bearer_auth(WRITE_TOKEN)
        .json(&ada())
        .send()
        .await
        .expect("request");
    assert_eq!(created.status(), StatusCode::CREATED);
    let stream = client
        .get(format!(
            "{base}/api/v1/events/stream?access_token={READ_TOKEN}"
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(stream.status(), StatusCode::OK);
    drop(stream);

    let log = stop(child, stderr, log).await;
    assert!(log.contains("access control on"), "{log}");
    assert!(
        !log.contains("non-loopback"),
        "no warning with tokens: {log}"
    );
    for token in [READ_TOKEN, WRITE_TOKEN, admin_token] {
        assert!(!log.contains(token), "a token in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_server_on_a_non_loopback_address_warns_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = start_ordo(dir.path(), &["--listen", "0.0.0.0:0"]);
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (port, log) = wait_listening(&mut stderr).await;
    assert!(
        log.contains("non-loopback address with no API tokens"),
        "{log}"
    );
    let open = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/orders"))
        .await
        .expect("request");
    assert_eq!(
        open.status(),
        StatusCode::OK,
        "without tokens the API is open"
    );
    stop(child, stderr, log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_file_refuses_to_start_naming_the_line_but_not_the_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            format!("# tokens\n{READ_TOKEN} read\n{WRITE_TOKEN} admin\n"),
            "line 3",
        ),
        (format!("{WRITE_TOKEN}\n"), "line 1"),
        ("tooshort-9f3 write\n".to_string(), "line 1"),
        ("# nothing\n\n".to_string(), "no token"),
    ];
    for (text, expected) in cases {
        let file = dir.path().join("api-tokens");
        std::fs::write(&file, &text).expect("write");
        let child = start_ordo(
            dir.path(),
            &[
                "--listen",
                "127.0.0.1:0",
                "--api-token-file",
                file.to_str().expect("utf-8 path"),
            ],
        );
        let output = child.wait_with_output().await.expect("run ordo");
        let stderr = plain(&String::from_utf8_lossy(&output.stderr));
        assert!(!output.status.success(), "{text:?} was accepted: {stderr}");
        assert!(stderr.contains(expected), "{text:?}: {stderr}");
        for secret in [READ_TOKEN, WRITE_TOKEN, "tooshort-9f3"] {
            assert!(!stderr.contains(secret), "{stderr}");
        }
    }
    let empty = dir.path().join("admin-token");
    std::fs::write(&empty, "\n").expect("write");
    let child = start_ordo(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-token-file",
            empty.to_str().expect("utf-8 path"),
        ],
    );
    let output = child.wait_with_output().await.expect("run ordo");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is empty"));
}
