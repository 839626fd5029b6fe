//! Connection limits: header and idle timeouts, the request deadline, the connection cap,
//! and graceful shutdown with idle connections open. Raw TCP where the test needs to
//! hold a connection in a given state.

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use ordo::{Limits, Settings, Stores};

use crate::helpers::{ADMIN_TOKEN, TestApp, ada, expect_problem, store_args};
use crate::supervision::PanickingCommits;

/// Far longer than any limit set below: a wait that reaches it is a failure.
const BOUND: Duration = Duration::from_secs(30);

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: ordo.test\r\n\r\n";

async fn app_with(limits: Limits) -> TestApp {
    TestApp::spawn_configured(Settings {
        admin_token: Some(ADMIN_TOKEN.into()),
        limits,
        ..Settings::default()
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    TcpStream::connect(address).await.expect("connect")
}

/// Reads until the peer closes the connection (or resets it); fails past [`BOUND`].
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    received
}

/// Reads one whole response (head and a Content-Length body); its head as text.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before a whole response");
        received.extend_from_slice(&buf[..n]);
        let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&received[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("content-length"));
        if received.len() >= end + 4 + length {
            return head;
        }
    }
}

#[tokio::test]
async fn a_client_that_sends_half_a_header_is_disconnected_after_the_header_timeout() {
    let app = app_with(Limits {
        header_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: ordo.test\r\n")
        .await
        .expect("write");
    let received = read_until_closed(&mut stream).await;
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
    // A client that sends nothing at all is closed too.
    let mut silent = connect(&app).await;
    read_until_closed(&mut silent).await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // The header timeout is far longer than the bound: only the idle timeout can close it.
    let app = app_with(Limits {
        header_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut stream = connect(&app).await;
    stream.write_all(HEALTH).await.expect("write");
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let after = read_until_closed(&mut stream).await;
    assert!(after.is_empty(), "{}", String::from_utf8_lossy(&after));
    app.shutdown().await;
}

#[tokio::test]
async fn a_keep_alive_connection_serves_the_next_request_within_the_idle_timeout() {
    // The header timeout is shorter than the pause between the requests: the keep-alive
    // wait is governed by the idle timeout, not by it.
    let app = app_with(Limits {
        header_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(600),
        ..Limits::default()
    })
    .await;
    let mut stream = connect(&app).await;
    stream.write_all(HEALTH).await.expect("write");
    assert!(read_response(&mut stream).await.starts_with("http/1.1 200"));
    // The header timeout surely passes meanwhile: a fresh silent connection is closed.
    let mut silent = connect(&app).await;
    read_until_closed(&mut silent).await;
    stream.write_all(HEALTH).await.expect("write");
    let second = tokio::time::timeout(BOUND, read_response(&mut stream))
        .await
        .expect("answered");
    assert!(second.starts_with("http/1.1 200"), "{second}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_request_past_the_deadline_is_answered_503_before_a_longer_consistency_wait() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = store_args(dir.path());
    let mut stores = Stores::open(&args).await.expect("open stores");
    let stuck = PanickingCommits::install(&mut stores);
    let settings = Settings {
        admin_token: Some(ADMIN_TOKEN.into()),
        limits: Limits {
            request_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        ..Settings::default()
    };
    let app = TestApp::spawn_on(args, stores, settings).await;
    // A stored write the read models cannot reach (their commits fail), with a wait far
    // past the deadline: the wait ends inside the deadline, long before the 30 s asked for.
    stuck.store(true, Ordering::SeqCst);
    let created = app.create_order(&ada()).await;
    let response = app
        .request(Method::GET, "/api/v1/orders/summary")
        .header("X-Consistency-Token", &created.token)
        .header("X-Consistency-Timeout-Ms", "30000")
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("answered inside the deadline");
    assert!(response.headers().contains_key("retry-after"));
    expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    stuck.store(false, Ordering::SeqCst);
    app.shutdown().await;
}

#[tokio::test]
async fn a_connection_beyond_the_cap_is_served_when_another_closes() {
    let app = app_with(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let mut first = connect(&app).await;
    let mut second = connect(&app).await;
    for stream in [&mut first, &mut second] {
        stream.write_all(HEALTH).await.expect("write");
        assert!(read_response(stream).await.starts_with("http/1.1 200"));
    }
    let mut third = connect(&app).await;
    third.write_all(HEALTH).await.expect("write");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "the third connection was answered while two were open: {early:?}"
    );
    drop(first);
    let head = tokio::time::timeout(BOUND, read_response(&mut third))
        .await
        .expect("served once a connection closed");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    app.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_ends_with_idle_keep_alive_connections_open() {
    let app = app_with(Limits::default()).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&app).await;
        stream.write_all(HEALTH).await.expect("write");
        assert!(read_response(&mut stream).await.starts_with("http/1.1 200"));
        idle.push(stream);
    }
    // And one that has not sent a byte yet.
    idle.push(connect(&app).await);
    tokio::time::timeout(BOUND, app.shutdown())
        .await
        .expect("the server stopped with idle connections open");
    for mut stream in idle {
        read_until_closed(&mut stream).await;
    }
}
