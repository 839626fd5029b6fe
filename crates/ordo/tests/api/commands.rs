use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn creating_an_order_answers_201_with_location_etag_and_token() {
    let app = TestApp::spawn().await;
    let response = app.post_order(&ada()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(response.headers()["etag"], "\"1\"");
    let answer = CommandAnswer::from(response).await;
    assert_eq!(
        location,
        format!("/api/v1/orders/order/{}", answer.order_id)
    );
    assert_eq!(answer.version, 1);

    let view = json_of(
        app.get_after(&location, &answer.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["orderId"], json!(answer.order_id));
    assert_eq!(view["customerName"], "Ada Lovelace");
    assert_eq!(view["status"], "pending");
    assert_eq!(view["currency"], "EUR");
    assert_eq!(view["items"][0]["lineTotal"].to_string(), "39.98");
    assert_eq!(view["totalAmount"].to_string(), "39.98");
    assert_eq!(view["cancellationReason"], json!(null));
    assert_eq!(view["shippingAddress"], json!(null));
    assert_eq!(view["version"], 1);
}

#[tokio::test]
async fn the_walk_through_create_confirm_query_summary_works() {
    let app = TestApp::spawn().await;
    let created = app.create_order(&ada()).await;
    let confirmed = app.set_status(&created.order_id, "confirmed").await;
    assert_eq!(confirmed.version, 2);
    let view = json_of(
        app.get_after(
            &format!("/api/v1/orders/order/{}", created.order_id),
            &confirmed.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["status"], "confirmed");
    let summary = json_of(
        app.get_after("/api/v1/orders/summary", &confirmed.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(summary["totalOrders"], 1);
    assert_eq!(
        summary["ordersByStatus"],
        json!({"pending": 0, "confirmed": 1, "processing": 0, "shipped": 0, "delivered": 0, "cancelled": 0})
    );
    assert_eq!(summary["totalRevenue"].to_string(), "39.98");
    assert_eq!(summary["averageOrderValue"].to_string(), "39.98");
    assert!(summary["lastUpdated"].is_string());
}

#[tokio::test]
async fn an_order_walks_the_whole_status_flow_one_step_at_a_time() {
    let app = TestApp::spawn().await;
    let id = app.create_order(&ada()).await.order_id;
    for (i, status) in ["confirmed", "processing", "shipped", "delivered"]
        .iter()
        .enumerate()
    {
        let answer = app.set_status(&id, status).await;
        assert_eq!(answer.version, i as u64 + 2);
    }
    let problem = expect_problem(app.cancel(&id, None).await, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("delivered")
    );
}

#[tokio::test]
async fn invalid_transitions_are_conflicts() {
    let app = TestApp::spawn().await;
    let id = app.create_order(&ada()).await.order_id;
    expect_problem(app.put_status(&id, "shipped").await, StatusCode::CONFLICT).await;
    expect_problem(app.put_status(&id, "pending").await, StatusCode::CONFLICT).await;
    expect_problem(app.put_status(&id, "cancelled").await, StatusCode::CONFLICT).await;
    let problem = expect_problem(
        app.put_status(&id, "nonsense").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "status");
}

#[tokio::test]
async fn cancelling_records_the_reason_or_null() {
    let app = TestApp::spawn().await;
    let with_reason = app.create_order(&ada()).await.order_id;
    let response = app
        .cancel(&with_reason, Some(&json!({"reason": "changed my mind"})))
        .await;
    let answer = CommandAnswer::from(response).await;
    let view = json_of(
        app.get_after(
            &format!("/api/v1/orders/order/{with_reason}"),
            &answer.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["status"], "cancelled");
    assert_eq!(view["cancellationReason"], "changed my mind");

    let without = app.create_order(&ada()).await.order_id;
    let answer = CommandAnswer::from(app.cancel(&without, None).await).await;
    let view = json_of(
        app.get_after(&format!("/api/v1/orders/order/{without}"), &answer.token)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["cancellationReason"], json!(null));
    expect_problem(app.cancel(&without, None).await, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn a_deleted_order_is_gone_from_queries_and_refuses_commands_but_keeps_history() {
    let app = TestApp::spawn().await;
    let created = app.create_order(&ada()).await;
    let id = created.order_id;
    let deleted = CommandAnswer::from(app.delete(&id).await).await;
    assert_eq!(deleted.version, 2);
    expect_problem(
        app.get_after(&format!("/api/v1/orders/order/{id}"), &deleted.token)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_problem(app.put_status(&id, "confirmed").await, StatusCode::GONE).await;
    expect_problem(app.cancel(&id, None).await, StatusCode::GONE).await;
    expect_problem(app.delete(&id).await, StatusCode::GONE).await;
    let list = json_of(
        app.get_after("/api/v1/orders", &deleted.token).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["total"], 0);
    let summary = json_of(app.get("/api/v1/orders/summary").await, StatusCode::OK).await;
    assert_eq!(summary["totalOrders"], 0);
    assert_eq!(summary["totalRevenue"].to_string(), "0.00");

    let events = json_of(
        app.get(&format!("/api/v1/orders/order/{id}/events")).await,
        StatusCode::OK,
    )
    .await;
    let types: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["eventType"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["OrderCreated", "OrderDeleted"]);
    let past = json_of(
        app.get(&format!("/api/v1/orders/order/{id}?asOfVersion=1"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(past["status"], "pending");
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404_for_commands_and_queries() {
    let app = TestApp::spawn().await;
    let unknown = uuid::Uuid::now_v7().to_string();
    for id in [unknown.as_str(), "not-a-uuid", "%20", "1"] {
        expect_problem(app.put_status(id, "confirmed").await, StatusCode::NOT_FOUND).await;
        expect_problem(app.cancel(id, None).await, StatusCode::NOT_FOUND).await;
        expect_problem(app.delete(id).await, StatusCode::NOT_FOUND).await;
        expect_problem(
            app.get(&format!("/api/v1/orders/order/{id}")).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        expect_problem(
            app.get(&format!("/api/v1/orders/order/{id}/events")).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
}

#[tokio::test]
async fn if_match_guards_against_lost_updates() {
    let app = TestApp::spawn().await;
    let id = app.create_order(&ada()).await.order_id;
    let stale = app
        .request(Method::PUT, &format!("/api/v1/orders/order/{id}/status"))
        .header("If-Match", "\"2\"")
        .json(&json!({"status": "confirmed"}))
        .send()
        .await
        .expect("request");
    expect_problem(stale, StatusCode::PRECONDITION_FAILED).await;
    let fresh = app
        .request(Method::PUT, &format!("/api/v1/orders/order/{id}/status"))
        .header("If-Match", "\"1\"")
        .json(&json!({"status": "confirmed"}))
        .send()
        .await
        .expect("request");
    assert_eq!(fresh.status(), StatusCode::OK);
    assert_eq!(fresh.headers()["etag"], "\"2\"");
    let malformed = app
        .request(Method::DELETE, &format!("/api/v1/orders/order/{id}"))
        .header("If-Match", "two")
        .send()
        .await
        .expect("request");
    expect_problem(malformed, StatusCode::BAD_REQUEST).await;
    let events = json_of(
        app.get(&format!("/api/v1/orders/order/{id}/events")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        events["events"].as_array().expect("events").len(),
        2,
        "a 412 stored something"
    );
}

#[tokio::test]
async fn errors_follow_the_contract_precedence() {
    let app = TestApp::spawn().await;
    let id = app.create_order(&ada()).await.order_id;
    app.set_status(&id, "confirmed").await;
    // Stale If-Match and a forbidden transition: 412 wins over 409.
    let response = app
        .request(Method::PUT, &format!("/api/v1/orders/order/{id}/status"))
        .header("If-Match", "\"1\"")
        .json(&json!({"status": "delivered"}))
        .send()
        .await
        .expect("request");
    expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
    // Deleted and a stale If-Match: 410 wins over 412.
    app.delete(&id).await;
    let response = app
        .request(Method::PUT, &format!("/api/v1/orders/order/{id}/cancel"))
        .header("If-Match", "\"1\"")
        .send()
        .await
        .expect("request");
    expect_problem(response, StatusCode::GONE).await;
    // Unknown and a stale If-Match: 404 wins.
    let response = app
        .request(
            Method::DELETE,
            &format!("/api/v1/orders/order/{}", uuid::Uuid::now_v7()),
        )
        .header("If-Match", "\"1\"")
        .send()
        .await
        .expect("request");
    expect_problem(response, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let app = TestApp::spawn().await;
    let send = |body: serde_json::Value, key: &str| {
        app.request(Method::POST, "/api/v1/orders/order")
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = send(ada(), "order-42").await.expect("request");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first = CommandAnswer::from(first).await;
    // Same JSON, other formatting and key order: the same answer, nothing new stored.
    let reordered: serde_json::Value = serde_json::from_str(
        r#"{"items": [{"unitPrice": 19.99, "quantity": 2, "productName": "Difference Engine", "productId": "p-0"}],
            "currency": "EUR", "customerEmail": "ada@example.com", "customerName": "Ada Lovelace"}"#,
    )
    .expect("json");
    let again = send(reordered, "order-42").await.expect("request");
    assert_eq!(again.status(), StatusCode::CREATED);
    let again = CommandAnswer::from(again).await;
    assert_eq!(
        (again.order_id.as_str(), again.version, again.token.as_str()),
        (first.order_id.as_str(), 1, first.token.as_str())
    );
    let events = json_of(
        app.get(&format!("/api/v1/orders/order/{}/events", first.order_id))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(events["events"].as_array().expect("events").len(), 1);
    assert_eq!(
        events["events"][0]["metadata"]["idempotencyKey"],
        "order-42"
    );
    // Same key, different body: 422.
    let mut other = ada();
    other["customerName"] = json!("Charles Babbage");
    expect_problem(
        send(other, "order-42").await.expect("request"),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // Keys outside 1..=200 characters: 400.
    expect_problem(
        send(ada(), &"k".repeat(201)).await.expect("request"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_problem(
        send(ada(), "").await.expect("request"),
        StatusCode::BAD_REQUEST,
    )
    .await;
    // Other keys create other orders.
    let third = CommandAnswer::from(send(ada(), "order-43").await.expect("request")).await;
    assert_ne!(third.order_id, first.order_id);
}

#[tokio::test]
async fn commands_carry_metadata_into_the_events() {
    let app = TestApp::spawn().await;
    let response = app
        .request(Method::POST, "/api/v1/orders/order")
        .header("X-Request-Id", "req-123")
        .header("X-Correlation-Id", "flow-9")
        .header("User-Agent", "ordo-tests/1")
        .json(&ada())
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let id = CommandAnswer::from(response).await.order_id;
    let events = json_of(
        app.get(&format!("/api/v1/orders/order/{id}/events")).await,
        StatusCode::OK,
    )
    .await;
    let event = &events["events"][0];
    assert_eq!(event["metadata"]["correlationId"], "flow-9");
    assert_eq!(event["metadata"]["causationId"], "req-123");
    assert_eq!(event["metadata"]["userAgent"], "ordo-tests/1");
    assert_eq!(event["eventType"], "OrderCreated");
    assert_eq!(
        event["schemaVersion"], 3,
        "OrderCreated is written in its current schema version"
    );
    assert_eq!(event["version"], 1);
    assert!(
        event["position"].is_string()
            && event["eventId"].is_string()
            && event["occurredAt"].is_string()
    );
    assert_eq!(event["data"]["totalAmount"].to_string(), "39.98");
}
