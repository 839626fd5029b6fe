//! Malformed and hostile input: a clear 4xx naming the problem, never a 5xx, nothing stored.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

async fn assert_nothing_stored(app: &TestApp) {
    let list = json_of(app.get("/api/v1/orders").await, StatusCode::OK).await;
    assert_eq!(list["total"], 0, "a rejected request stored an order");
    let events = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        !events.contains("outcome=\"ok\""),
        "a rejected request appended events:\n{events}"
    );
}

async fn post_raw(
    app: &TestApp,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app.request(Method::POST, "/api/v1/orders/order").body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    request.send().await.expect("request")
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn().await;
    for body in [
        "{",
        "{\"customerName\": }",
        "nul",
        "[1,]",
        "{\"a\":1}{",
        "\u{feff}{}",
        "'single'",
    ] {
        expect_problem(
            post_raw(&app, Some("application/json"), body).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let invalid_utf8: Vec<u8> = vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'];
    expect_problem(
        post_raw(&app, Some("application/json"), invalid_utf8).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        post_raw(&app, Some("application/json"), "").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = TestApp::spawn().await;
    let body = serde_json::to_string(&ada()).expect("json");
    for ct in [
        None,
        Some("text/plain"),
        Some("application/xml"),
        Some("application/jsonx"),
        Some("multipart/form-data"),
    ] {
        expect_problem(
            post_raw(&app, ct, body.clone()).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
    }
    let ok = post_raw(&app, Some("Application/JSON; charset=utf-8"), body).await;
    assert_eq!(ok.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn bodies_over_256_kib_are_413() {
    let app = TestApp::spawn().await;
    let mut big = ada();
    big["customerName"] = json!("x".repeat(300 * 1024));
    let body = serde_json::to_vec(&big).expect("json");
    expect_problem(
        post_raw(&app, Some("application/json"), body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    // Without a Content-Length (chunked transfer), the limit still holds.
    let status = chunked_post(&app, 300).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert_nothing_stored(&app).await;
}

/// Sends a chunked POST of `kib` KiB of spaces by hand and returns the status line.
async fn chunked_post(app: &TestApp, kib: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/orders/order HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.expect("write head");
    let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
    for _ in 0..kib {
        if socket.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server may answer and close before the whole body is sent
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn wrong_types_and_values_are_422_naming_each_field() {
    let app = TestApp::spawn().await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"customerName": 5, "customerEmail": true, "items": {}}), vec!["customerName", "customerEmail", "items"]),
        (json!({"customerName": "A", "customerEmail": "a@b.co", "items": [{"productId": 1, "productName": [], "quantity": "2", "unitPrice": "1.00"}]}),
         vec!["items[0].productId", "items[0].productName", "items[0].quantity", "items[0].unitPrice"]),
        (serde_json::from_str(r#"{"customerName": "A", "customerEmail": "a@b.co", "items": [{"productId": "p", "productName": "n", "quantity": 1.5, "unitPrice": 1e400}]}"#).expect("json"),
         vec!["items[0].quantity", "items[0].unitPrice"]),
        (json!({"customerName": "A", "customerEmail": "a@b.co", "currency": "euro", "items": [{"productId": "p", "productName": "n", "quantity": 1, "unitPrice": 1}], "extra": null}),
         vec!["currency", "extra"]),
        (json!([]), vec!["body"]),
        (json!("order"), vec!["body"]),
        (json!(null), vec!["body"]),
    ];
    for (body, fields) in cases {
        let problem = expect_problem(
            app.post_order(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        let mut got: Vec<String> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| {
                assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
                e["field"].as_str().expect("field").to_string()
            })
            .collect();
        got.sort();
        let mut want: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "body {body}");
    }
    let too_many: Vec<Value> = (0..101).map(|i| json!({"productId": format!("p{i}"), "productName": "n", "quantity": 1, "unitPrice": 1})).collect();
    let problem = expect_problem(
        app.post_order(&json!({"customerName": "A", "customerEmail": "a@b.co", "items": too_many}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "items");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn odd_unicode_is_stored_faithfully_or_rejected_clearly() {
    let app = TestApp::spawn().await;
    let name = "Zoë 🚀 \u{202e}evil\u{202c} 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 e\u{301}";
    let body = order_body(name, "zoë@exämple.com", &[("Ünïcødé ☃ 商品", 1, "1")]);
    let answer = app.create_order(&body).await;
    let view = json_of(
        app.get_after(
            &format!("/api/v1/orders/order/{}", answer.order_id),
            &answer.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["customerName"], name);
    assert_eq!(view["items"][0]["productName"], "Ünïcødé ☃ 商品");
    let found = json_of(
        app.get_after("/api/v1/orders/search?q=%E5%95%86%E5%93%81", &answer.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(found["total"], 1, "search by CJK product name");

    for bad in ["nul\u{0}byte", "bell\u{7}", "\u{1b}[31mred"] {
        let body = order_body(bad, "a@b.co", &[("n", 1, "1")]);
        let problem = expect_problem(
            app.post_order(&body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], "customerName");
    }
    let escaped = r#"{"customerName": "\ud800", "customerEmail": "a@b.co", "items": [{"productId": "p", "productName": "n", "quantity": 1, "unitPrice": 1}]}"#;
    let response = post_raw(&app, Some("application/json"), escaped).await;
    assert!(
        response.status().is_client_error(),
        "a lone surrogate must be a 4xx, got {}",
        response.status()
    );
}

#[tokio::test]
async fn deeply_nested_json_is_rejected_without_crashing() {
    let app = TestApp::spawn().await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let response = post_raw(&app, Some("application/json"), deep).await;
    assert!(
        response.status().is_client_error(),
        "got {}",
        response.status()
    );
    assert_eq!(
        app.get("/health").await.status(),
        StatusCode::OK,
        "the server survived"
    );
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let app = TestApp::spawn().await;
    for path in [
        "/nope",
        "/orders",
        "/api",
        "/api/v1/orders/nope",
        "/api/v2/orders",
        "/api/v1/orders/order/x/y/z",
    ] {
        expect_problem(app.get(path).await, StatusCode::NOT_FOUND).await;
    }
    let response = app
        .request(Method::PATCH, "/api/v1/orders/order")
        .send()
        .await
        .expect("request");
    let allow = response
        .headers()
        .get("allow")
        .expect("Allow header")
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(allow.contains("POST"), "{allow}");
    expect_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    let response = app
        .request(Method::POST, "/api/v1/orders/summary")
        .send()
        .await
        .expect("request");
    assert!(response.headers().contains_key("allow"));
    expect_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn hostile_headers_and_query_strings_are_4xx() {
    let app = TestApp::spawn().await;
    let id = app.create_order(&ada()).await.order_id;
    for if_match in [
        "",
        "\"\"",
        "\"-1\"",
        "\"99999999999999999999999\"",
        "W/\"1\"",
        "\"1\", \"2\"",
    ] {
        let response = app
            .request(Method::PUT, &format!("/api/v1/orders/order/{id}/status"))
            .header("If-Match", if_match)
            .json(&json!({"status": "confirmed"}))
            .send()
            .await
            .expect("request");
        assert!(
            response.status().is_client_error(),
            "If-Match {if_match:?} gave {}",
            response.status()
        );
    }
    for query in ["%ff%fe", "page=%00", "q=%", "limit=1e2"] {
        let response = app.get(&format!("/api/v1/orders?{query}")).await;
        assert!(
            response.status().is_client_error(),
            "query {query} gave {}",
            response.status()
        );
    }
    // The customer filter as documented: 1 to 254 characters.
    for query in [
        "customerEmail=".to_string(),
        format!("customerEmail={}%40example.com", "a".repeat(250)),
    ] {
        let problem = expect_problem(
            app.get(&format!("/api/v1/orders?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(
            problem["detail"], "customerEmail must be 1 to 254 characters",
            "{query}"
        );
    }
    // Control characters in text that reaches the store (a NUL used to end the SQLite
    // search query early and answer 503).
    for path in [
        "/api/v1/orders/search?q=%00abc",
        "/api/v1/orders/search?q=ab%00cd",
        "/api/v1/orders/search?q=abc%0A",
        "/api/v1/orders?customerEmail=ada%00%40example.com",
        "/api/v1/orders/customer/ada%00%40example.com",
    ] {
        let problem = expect_problem(app.get(path).await, StatusCode::BAD_REQUEST).await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("control characters")),
            "{path}: {problem}"
        );
    }
    let response = app
        .request(Method::GET, "/health")
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .await
        .expect("request");
    let echoed = response.headers()["x-request-id"].to_str().expect("ascii");
    assert_ne!(
        echoed, "bad id with spaces",
        "an unsafe request id is replaced"
    );
}

fn http_series(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|l| l.starts_with("ordo_http_requests_total{"))
        .map(|l| l.rsplit_once(' ').map_or(l, |(series, _)| series))
        .collect()
}

#[tokio::test]
async fn made_up_methods_and_paths_add_a_bounded_number_of_metric_series() {
    let app = TestApp::spawn().await;
    let before = app.get("/metrics").await.text().await.expect("metrics");
    let mut sent = Vec::new();
    for i in 0..100 {
        let random = uuid::Uuid::now_v7().simple().to_string();
        let method =
            Method::from_bytes(format!("X{}", random.to_uppercase()).as_bytes()).expect("token");
        // Unmatched paths, and paths that match a route template with a random parameter.
        let path = if i % 2 == 0 {
            format!("/{random}/{i}")
        } else {
            format!("/api/v1/orders/order/{random}")
        };
        let status = app
            .request(method.clone(), &path)
            .send()
            .await
            .expect("request")
            .status();
        assert!(status.is_client_error(), "{method} {path}: {status}");
        sent.push(random);
    }
    let after = app.get("/metrics").await.text().await.expect("metrics");
    let old = http_series(&before);
    let new: Vec<_> = http_series(&after)
        .into_iter()
        .filter(|s| !old.contains(s))
        .collect();
    // At most: method other × route {unmatched, the order route} × status {404, 405},
    // and the GET /metrics that read `before`.
    assert!(new.len() <= 5, "{} new series: {new:#?}", new.len());
    for random in &sent {
        assert!(
            !after.to_lowercase().contains(random),
            "a request's method or path became a label:\n{after}"
        );
    }
    assert!(
        new.iter().any(|s| s.contains("method=\"other\"")),
        "{new:#?}"
    );
    assert!(
        new.iter().any(|s| s.contains("route=\"unmatched\"")),
        "{new:#?}"
    );
}
