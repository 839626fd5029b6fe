use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// Creates a small, varied data set and returns (ids in creation order, last token).
async fn seed(app: &TestApp) -> (Vec<String>, String) {
    let orders = [
        order_body(
            "Ada Lovelace",
            "ada@example.com",
            &[("Difference Engine", 2, "19.99")],
        ), // 39.98
        order_body(
            "Charles Babbage",
            "charles@example.com",
            &[("Analytical Engine", 1, "100")],
        ), // 100.00
        order_body("Ada L.", "ADA@example.com", &[("Punched Cards", 10, "0.5")]), // 5.00
        order_body(
            "Grace Hopper",
            "grace@navy.mil",
            &[("Compiler", 3, "33.33")],
        ), // 99.99
        order_body(
            "Alan Turing",
            "alan@bletchley.uk",
            &[("Bombe", 1, "250.00")],
        ), // 250.00
    ];
    let mut ids = Vec::new();
    for body in &orders {
        ids.push(app.create_order(body).await.order_id);
    }
    app.set_status(&ids[1], "confirmed").await;
    CommandAnswer::from(
        app.cancel(&ids[3], Some(&json!({"reason": "duplicate"})))
            .await,
    )
    .await;
    // One partition on the embedded store: the last token covers every earlier write.
    // Other stores may have several, so wait for each order's last write.
    let token = CommandAnswer::from(app.delete(&ids[4]).await).await.token;
    for id in &ids[..4] {
        let events = json_of(
            app.get(&format!("/api/v1/orders/order/{id}/events")).await,
            StatusCode::OK,
        )
        .await;
        let last = events["events"]
            .as_array()
            .and_then(|e| e.last())
            .expect("events")["position"]
            .as_str()
            .expect("position")
            .to_string();
        app.get_after("/api/v1/orders/summary", &last).await;
    }
    (ids, token)
}

fn ids_of(list: &Value) -> Vec<String> {
    list["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| o["orderId"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn lists_filter_sort_and_page() {
    let app = TestApp::spawn().await;
    let (ids, token) = seed(&app).await;
    let all = json_of(
        app.get_after("/api/v1/orders", &token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(all["total"], 4, "deleted orders are not listed");
    assert_eq!(
        (all["page"].clone(), all["limit"].clone()),
        (json!(1), json!(20))
    );
    assert_eq!(
        ids_of(&all),
        vec![
            ids[3].clone(),
            ids[2].clone(),
            ids[1].clone(),
            ids[0].clone()
        ],
        "newest first by default"
    );

    let by_total = json_of(
        app.get("/api/v1/orders?sort=totalAmount").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ids_of(&by_total),
        vec![
            ids[2].clone(),
            ids[0].clone(),
            ids[3].clone(),
            ids[1].clone()
        ]
    );
    let by_total_desc = json_of(
        app.get("/api/v1/orders?sort=-totalAmount").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ids_of(&by_total_desc),
        vec![
            ids[1].clone(),
            ids[3].clone(),
            ids[0].clone(),
            ids[2].clone()
        ]
    );
    let oldest = json_of(
        app.get("/api/v1/orders?sort=createdAt&limit=2&page=2")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&oldest), vec![ids[2].clone(), ids[3].clone()]);
    assert_eq!(oldest["total"], 4);

    let range = json_of(
        app.get("/api/v1/orders?minTotal=39.98&maxTotal=99.99")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(range["total"], 2, "bounds are inclusive: {range}");
    let status = json_of(
        app.get("/api/v1/orders?status=cancelled").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&status), vec![ids[3].clone()]);
    let email = json_of(
        app.get("/api/v1/orders?customerEmail=ADA%40EXAMPLE.com")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(email["total"], 2);

    let past_end = json_of(app.get("/api/v1/orders?page=50").await, StatusCode::OK).await;
    assert_eq!(past_end["orders"], json!([]));
    assert_eq!(past_end["total"], 4);

    let created_at = all["orders"][1]["createdAt"]
        .as_str()
        .expect("createdAt")
        .to_string();
    let from = json_of(
        app.get(&format!(
            "/api/v1/orders?createdFrom={}",
            urlencode(&created_at)
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ids_of(&from),
        vec![ids[3].clone(), ids[2].clone()],
        "createdFrom is inclusive"
    );
    let to = json_of(
        app.get(&format!(
            "/api/v1/orders?createdTo={}",
            urlencode(&created_at)
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(to["total"], 3, "createdTo is inclusive");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn bad_list_parameters_are_400() {
    let app = TestApp::spawn().await;
    for query in [
        "page=0",
        "page=-1",
        "page=x",
        "limit=0",
        "limit=101",
        "limit=abc",
        "sort=name",
        "status=lost",
        "minTotal=abc",
        "minTotal=-5",
        "maxTotal=1.999",
        "createdFrom=yesterday",
        "createdTo=2026-13-01T00:00:00Z",
        "colour=red",
        "page=1&page=2",
        "minTotal=10&maxTotal=5",
    ] {
        expect_problem(
            app.get(&format!("/api/v1/orders?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    expect_problem(
        app.get("/api/v1/orders/status/lost").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        app.get("/api/v1/orders/top-customers?limit=0").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        app.get("/api/v1/orders/top-customers?limit=101").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        app.get("/api/v1/orders/search").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        app.get("/api/v1/orders/search?q=").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        app.get(&format!("/api/v1/orders/search?q={}", "a".repeat(201)))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        app.get("/api/v1/orders/summary?x=1").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn status_and_customer_endpoints_list_their_orders() {
    let app = TestApp::spawn().await;
    let (ids, token) = seed(&app).await;
    let pending = json_of(
        app.get_after("/api/v1/orders/status/pending", &token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids_of(&pending), vec![ids[2].clone(), ids[0].clone()]);
    let confirmed = json_of(
        app.get("/api/v1/orders/status/confirmed?limit=1").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (ids_of(&confirmed), confirmed["limit"].clone()),
        (vec![ids[1].clone()], json!(1))
    );
    let ada = json_of(
        app.get("/api/v1/orders/customer/Ada@Example.com").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ids_of(&ada),
        vec![ids[2].clone(), ids[0].clone()],
        "e-mail matched case-insensitively"
    );
    let nobody = json_of(
        app.get("/api/v1/orders/customer/nobody@example.com").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(nobody["total"], 0);
}

#[tokio::test]
async fn the_summary_counts_revenue_of_orders_neither_cancelled_nor_deleted() {
    let app = TestApp::spawn().await;
    let (_, token) = seed(&app).await;
    let summary = json_of(
        app.get_after("/api/v1/orders/summary", &token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(summary["totalOrders"], 4);
    assert_eq!(
        summary["ordersByStatus"],
        json!({"pending": 2, "confirmed": 1, "processing": 0, "shipped": 0, "delivered": 0, "cancelled": 1})
    );
    // 39.98 + 100.00 + 5.00 = 144.98 over 3 orders = 48.3266.. -> 48.33
    assert_eq!(summary["totalRevenue"].to_string(), "144.98");
    assert_eq!(summary["averageOrderValue"].to_string(), "48.33");
}

#[tokio::test]
async fn an_empty_store_has_a_zero_summary() {
    let app = TestApp::spawn().await;
    let summary = json_of(app.get("/api/v1/orders/summary").await, StatusCode::OK).await;
    assert_eq!(summary["totalOrders"], 0);
    assert_eq!(summary["totalRevenue"].to_string(), "0.00");
    assert_eq!(summary["averageOrderValue"].to_string(), "0.00");
    assert_eq!(summary["lastUpdated"], json!(null));
    let top = json_of(
        app.get("/api/v1/orders/top-customers").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(top, json!({"customers": []}));
}

#[tokio::test]
async fn top_customers_rank_by_spend_then_email_with_the_latest_name() {
    let app = TestApp::spawn().await;
    let (_, token) = seed(&app).await;
    let top = json_of(
        app.get_after("/api/v1/orders/top-customers", &token).await,
        StatusCode::OK,
    )
    .await;
    let rows: Vec<(String, String, u64, String)> = top["customers"]
        .as_array()
        .expect("customers")
        .iter()
        .map(|c| {
            (
                c["customerEmail"].as_str().expect("email").to_string(),
                c["customerName"].as_str().expect("name").to_string(),
                c["orderCount"].as_u64().expect("count"),
                c["totalSpent"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "charles@example.com".into(),
                "Charles Babbage".into(),
                1,
                "100.00".into()
            ),
            ("ada@example.com".into(), "Ada L.".into(), 2, "44.98".into()),
        ]
    );
    // Ties on spend are broken by e-mail, ascending.
    let tie = app
        .create_order(&order_body(
            "Zed",
            "aaron@example.com",
            &[("Thing", 1, "100")],
        ))
        .await;
    let top = json_of(
        app.get_after("/api/v1/orders/top-customers?limit=2", &tie.token)
            .await,
        StatusCode::OK,
    )
    .await;
    let emails: Vec<&str> = top["customers"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["customerEmail"].as_str().expect("email"))
        .collect();
    assert_eq!(emails, ["aaron@example.com", "charles@example.com"]);
}

#[tokio::test]
async fn search_matches_substrings_of_id_name_email_and_products_case_insensitively() {
    let app = TestApp::spawn().await;
    let (ids, token) = seed(&app).await;
    let search = |q: &str| {
        let q = q.to_string();
        let app = &app;
        let token = token.clone();
        async move {
            json_of(
                app.get_after(&format!("/api/v1/orders/search?q={q}"), &token)
                    .await,
                StatusCode::OK,
            )
            .await
        }
    };
    assert_eq!(
        ids_of(&search("ENGINE").await),
        vec![ids[1].clone(), ids[0].clone()]
    );
    assert_eq!(ids_of(&search("hopper").await), vec![ids[3].clone()]);
    assert_eq!(ids_of(&search("navy.MIL").await), vec![ids[3].clone()]);
    assert_eq!(
        ids_of(&search("ch").await),
        vec![ids[2].clone(), ids[1].clone()],
        "short terms work too"
    );
    assert_eq!(
        ids_of(&search(&ids[2][24..36]).await),
        vec![ids[2].clone()],
        "part of an id"
    );
    assert_eq!(
        search("bombe").await["total"],
        0,
        "deleted orders are not found"
    );
    assert_eq!(search("%25").await["total"], 0, "no wildcard injection");
    assert_eq!(search("%22").await["total"], 0, "quotes are literal");
    let paged = search("a").await;
    assert_eq!(paged["total"], 4);
}

#[tokio::test]
async fn past_states_are_served_from_history() {
    let app = TestApp::spawn().await;
    let id = app.create_order(&ada()).await.order_id;
    app.set_status(&id, "confirmed").await;
    let events = json_of(
        app.get(&format!("/api/v1/orders/order/{id}/events")).await,
        StatusCode::OK,
    )
    .await;
    let confirmed_at = events["events"][1]["occurredAt"]
        .as_str()
        .expect("time")
        .to_string();
    let created_at = events["events"][0]["occurredAt"]
        .as_str()
        .expect("time")
        .to_string();
    app.set_status(&id, "processing").await;

    let v1 = json_of(
        app.get(&format!("/api/v1/orders/order/{id}?asOfVersion=1"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (v1["status"].clone(), v1["version"].clone()),
        (json!("pending"), json!(1))
    );
    let at = json_of(
        app.get(&format!(
            "/api/v1/orders/order/{id}?asOf={}",
            urlencode(&confirmed_at)
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(at["status"], "confirmed");
    let at_creation = json_of(
        app.get(&format!(
            "/api/v1/orders/order/{id}?asOf={}",
            urlencode(&created_at)
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(at_creation["status"], "pending");
    expect_problem(
        app.get(&format!("/api/v1/orders/order/{id}?asOfVersion=0"))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        app.get(&format!("/api/v1/orders/order/{id}?asOfVersion=x"))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        app.get(&format!("/api/v1/orders/order/{id}?asOfVersion=4"))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_problem(
        app.get(&format!(
            "/api/v1/orders/order/{id}?asOf=2000-01-01T00:00:00Z"
        ))
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_problem(
        app.get(&format!("/api/v1/orders/order/{id}?asOf=yesterday"))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        app.get(&format!(
            "/api/v1/orders/order/{id}?asOfVersion=1&asOf=2000-01-01T00:00:00Z"
        ))
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn read_your_writes_waits_for_the_token_and_rejects_bad_ones() {
    let app = TestApp::spawn().await;
    let answer = app.create_order(&ada()).await;
    let view = json_of(
        app.get_after(
            &format!("/api/v1/orders/order/{}", answer.order_id),
            &answer.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["version"], 1);
    for bad in ["garbage", "1.2", "", "-1.0.0"] {
        let response = app
            .request(Method::GET, "/api/v1/orders")
            .header("X-Consistency-Token", bad)
            .send()
            .await
            .expect("request");
        expect_problem(response, StatusCode::BAD_REQUEST).await;
    }
    let bad_timeout = app
        .request(Method::GET, "/api/v1/orders")
        .header("X-Consistency-Token", &answer.token)
        .header("X-Consistency-Timeout-Ms", "soon")
        .send()
        .await
        .expect("request");
    expect_problem(bad_timeout, StatusCode::BAD_REQUEST).await;
    // Each header is checked on its own, and on history reads too.
    let timeout_alone = app
        .request(Method::GET, "/api/v1/orders/summary")
        .header("X-Consistency-Timeout-Ms", "soon")
        .send()
        .await
        .expect("request");
    expect_problem(timeout_alone, StatusCode::BAD_REQUEST).await;
    let history = app
        .request(
            Method::GET,
            &format!("/api/v1/orders/order/{}?asOfVersion=1", answer.order_id),
        )
        .header("X-Consistency-Token", "garbage")
        .send()
        .await
        .expect("request");
    expect_problem(history, StatusCode::BAD_REQUEST).await;
    // A token ahead of everything stored can never be reached: 400 at once, not a wait
    // of the (default, 5 s) timeout ending in 503.
    for path in ["/api/v1/orders/summary", "/api/v1/orders"] {
        let future = app
            .request(Method::GET, path)
            .header("X-Consistency-Token", "0.999999999.0")
            .send()
            .await
            .expect("request");
        let problem = expect_problem(future, StatusCode::BAD_REQUEST).await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("ahead of every event stored")),
            "{problem}"
        );
    }
    // Every partition of the log judges its own tokens; the last partition's too.
    let partitions = app.stores.events.partitions();
    let last = app
        .request(Method::GET, "/api/v1/orders")
        .header(
            "X-Consistency-Token",
            format!("{}.999999999.0", partitions - 1),
        )
        .send()
        .await
        .expect("request");
    expect_problem(last, StatusCode::BAD_REQUEST).await;
    // The token a command returned is never judged ahead, however fresh.
    for _ in 0..5 {
        let fresh = app.create_order(&ada()).await;
        let view = app
            .get_after(
                &format!("/api/v1/orders/order/{}", fresh.order_id),
                &fresh.token,
            )
            .await;
        assert_eq!(view.status(), StatusCode::OK);
    }
    // A huge timeout is clamped, not rejected (answered at once here: the token is reached).
    let clamped = app
        .request(Method::GET, "/api/v1/orders")
        .header("X-Consistency-Token", &answer.token)
        .header("X-Consistency-Timeout-Ms", "999999999")
        .send()
        .await
        .expect("request");
    assert_eq!(clamped.status(), StatusCode::OK);
}

#[tokio::test]
async fn order_views_carry_an_etag_of_their_version() {
    let app = TestApp::spawn().await;
    let id = app.create_order(&ada()).await.order_id;
    let answer = app.set_status(&id, "confirmed").await;
    let response = app
        .get_after(&format!("/api/v1/orders/order/{id}"), &answer.token)
        .await;
    assert_eq!(response.headers()["etag"], "\"2\"");
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    // Ready once the projection has loaded its checkpoint.
    wait_for_ready(&app, StatusCode::OK).await;
    app.create_order(&ada()).await;
    let metrics = app.get("/metrics").await.text().await.expect("text");
    for name in [
        "ordo_commands_total{command=\"CreateOrder\",outcome=\"ok\"} 1",
        "ordo_event_append_seconds_count",
        "ordo_projection_position{projection=\"orders\"}",
        "ordo_projection_lag_seconds{projection=\"orders\"}",
        "ordo_replay_events_total",
        "ordo_http_requests_total{method=\"POST\",route=\"/api/v1/orders/order\",status=\"201\"}",
        "ordo_http_request_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
}

/// Exact cents of a money value as the API writes it (two fraction digits, always).
fn cents(value: &Value) -> i64 {
    let text = value.to_string();
    let (units, fraction) = text
        .split_once('.')
        .unwrap_or_else(|| panic!("{text}: no fraction digits"));
    assert_eq!(fraction.len(), 2, "{text}: two fraction digits");
    let units: i64 = units.parse().expect("units");
    units * 100 + fraction.parse::<i64>().expect("cents")
}

/// Appends one order event with the given time (its createdAt, for an OrderCreated);
/// returns its position.
async fn append_at(
    app: &TestApp,
    stream: &str,
    version: u64,
    event_type: &str,
    data: Value,
    at: time::OffsetDateTime,
) -> String {
    use ordo_es::{ExpectedVersion, Metadata, NewEvent, StreamId};
    app.stores
        .events
        .append(
            &StreamId::new(stream),
            ExpectedVersion::Exact(version - 1),
            vec![NewEvent {
                event_id: uuid::Uuid::now_v7(),
                aggregate_type: "Order".into(),
                event_type: event_type.into(),
                schema_version: if event_type == "OrderCreated" { 2 } else { 1 },
                occurred_at: at,
                data: data.into(),
                metadata: Metadata::default(),
            }],
        )
        .await
        .expect("append")
        .last_position()
        .to_string()
}

fn created_data(total: &str) -> Value {
    let total: Value = serde_json::from_str(total).expect("amount");
    json!({
        "customerName": "Ada Lovelace", "customerEmail": "ada@example.com", "currency": "EUR",
        "items": [{"productId": "p-1", "productName": "Lamp", "quantity": 1, "unitPrice": total, "lineTotal": total}],
        "totalAmount": total, "shippingAddress": null
    })
}

fn date_text(date: time::Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

#[tokio::test]
async fn daily_figures_fill_every_day_oldest_first_and_add_up_to_the_summary() {
    use time::{Duration, OffsetDateTime, Time};
    let app = TestApp::spawn().await;
    let today = OffsetDateTime::now_utc().date();
    let (_, token) = seed(&app).await;
    // Orders of earlier days, written as the event log holds them.
    let three_days_ago = today - Duration::days(3);
    let ten_days_ago = today - Duration::days(10);
    let late = three_days_ago
        .with_time(Time::from_hms_micro(23, 59, 59, 999_999).expect("time"))
        .assume_utc();
    let early = three_days_ago.midnight().assume_utc();
    let (a, b, c) = [(); 3].map(|_| uuid::Uuid::now_v7().to_string()).into();
    let mut positions = vec![
        append_at(&app, &a, 1, "OrderCreated", created_data("12.34"), late).await,
        append_at(&app, &b, 1, "OrderCreated", created_data("5"), early).await,
        append_at(
            &app,
            &c,
            1,
            "OrderCreated",
            created_data("7.00"),
            ten_days_ago.midnight().assume_utc(),
        )
        .await,
    ];
    let now = OffsetDateTime::now_utc();
    positions.push(
        append_at(
            &app,
            &b,
            2,
            "OrderCancelled",
            json!({"reason": null, "previousStatus": "pending"}),
            now,
        )
        .await,
    );
    positions.push(append_at(&app, &c, 2, "OrderDeleted", json!({}), now).await);
    for position in positions.iter().chain([&token]) {
        app.get_after("/api/v1/orders/summary", position).await;
    }

    // A year up to tomorrow: the seeded orders are in it even if midnight passes.
    let to = today + Duration::days(1);
    let body = json_of(
        app.get(&format!(
            "/api/v1/orders/daily?days=366&to={}",
            date_text(to)
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["days", "from", "to"]);
    assert_eq!(body["to"], json!(date_text(to)));
    assert_eq!(body["from"], json!(date_text(to - Duration::days(365))));
    let days = body["days"].as_array().expect("days");
    assert_eq!(days.len(), 366);
    for (i, day) in days.iter().enumerate() {
        let keys: Vec<&String> = day.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["date", "orders", "revenue"], "{day}");
        assert_eq!(
            day["date"],
            json!(date_text(to - Duration::days(365 - i as i64))),
            "every day, oldest first"
        );
        cents(&day["revenue"]);
    }
    let on = |date: time::Date| {
        days.iter()
            .find(|d| d["date"] == json!(date_text(date)))
            .expect("the day")
    };
    // One order a microsecond before midnight, one at midnight (cancelled: no revenue).
    assert_eq!(on(three_days_ago)["orders"], 2);
    assert_eq!(on(three_days_ago)["revenue"].to_string(), "12.34");
    assert_eq!(on(three_days_ago + Duration::days(1))["orders"], 0);
    // Its only order deleted: a day of zeros.
    assert_eq!(on(ten_days_ago)["orders"], 0);
    assert_eq!(on(ten_days_ago)["revenue"].to_string(), "0.00");

    let summary = json_of(app.get("/api/v1/orders/summary").await, StatusCode::OK).await;
    let orders: u64 = days.iter().map(|d| d["orders"].as_u64().expect("n")).sum();
    let revenue: i64 = days.iter().map(|d| cents(&d["revenue"])).sum();
    assert_eq!(json!(orders), summary["totalOrders"]);
    assert_eq!(revenue, cents(&summary["totalRevenue"]));
    assert_eq!((orders, revenue), (6, 14_498 + 1_234));

    // By default, the 30 days up to today (UTC).
    let body = json_of(app.get("/api/v1/orders/daily").await, StatusCode::OK).await;
    let after = OffsetDateTime::now_utc().date();
    let to = [today, after]
        .into_iter()
        .find(|d| body["to"] == json!(date_text(*d)))
        .unwrap_or_else(|| panic!("to is not today: {body}"));
    assert_eq!(body["from"], json!(date_text(to - Duration::days(29))));
    assert_eq!(body["days"].as_array().expect("days").len(), 30);
    assert_eq!(body["days"][0]["date"], body["from"]);
    assert_eq!(body["days"][29]["date"], body["to"]);

    // One day, as written on the wire.
    let one = app
        .get(&format!(
            "/api/v1/orders/daily?to={}&days=1",
            date_text(three_days_ago)
        ))
        .await;
    assert_eq!(one.status(), StatusCode::OK);
    let d = date_text(three_days_ago);
    assert_eq!(
        one.text().await.expect("body"),
        format!(
            r#"{{"from":"{d}","to":"{d}","days":[{{"date":"{d}","orders":2,"revenue":12.34}}]}}"#
        )
    );
}

#[tokio::test]
async fn bad_daily_parameters_are_400_naming_the_parameter() {
    let app = TestApp::spawn().await;
    for (query, named) in [
        ("days=0", "days"),
        ("days=367", "days"),
        ("days=-1", "days"),
        ("days=1.5", "days"),
        ("days=", "days"),
        ("days=ten", "days"),
        ("days=99999999999999999999", "days"),
        ("to=2026-13-01", "to"),
        ("to=2026-02-29", "to"),
        ("to=20261201", "to"),
        ("to=2026-12-01T00:00:00Z", "to"),
        ("to=yesterday", "to"),
        ("to=", "to"),
        ("to=0001-01-01&days=2", "to"),
        ("from=2026-01-01", "from"),
        ("days=3&days=4", "days"),
        ("to=2026-12-01%00", "to"),
    ] {
        let problem = expect_problem(
            app.get(&format!("/api/v1/orders/daily?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.contains(named), "{query}: {detail}");
    }
    // The edges are accepted.
    for query in [
        "days=1",
        "days=366",
        "to=0001-01-01&days=1",
        "to=9999-12-31",
    ] {
        let response = app.get(&format!("/api/v1/orders/daily?{query}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{query}");
    }
}

#[tokio::test]
async fn the_daily_figures_wait_for_the_consistency_token() {
    let app = TestApp::spawn().await;
    let today = time::OffsetDateTime::now_utc().date();
    let answer = app.create_order(&ada()).await;
    let to = date_text(today + time::Duration::days(1));
    let body = json_of(
        app.get_after(
            &format!("/api/v1/orders/daily?days=2&to={to}"),
            &answer.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let days = body["days"].as_array().expect("days");
    let orders: u64 = days.iter().map(|d| d["orders"].as_u64().expect("n")).sum();
    let revenue: i64 = days.iter().map(|d| cents(&d["revenue"])).sum();
    assert_eq!((orders, revenue), (1, 3_998), "{body}");
    let bad = app
        .request(Method::GET, "/api/v1/orders/daily")
        .header("X-Consistency-Token", "garbage")
        .send()
        .await
        .expect("request");
    expect_problem(bad, StatusCode::BAD_REQUEST).await;
    let future = app
        .request(Method::GET, "/api/v1/orders/daily")
        .header("X-Consistency-Token", "0.999999999.0")
        .send()
        .await
        .expect("request");
    expect_problem(future, StatusCode::BAD_REQUEST).await;
}
