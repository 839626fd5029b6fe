//! Many clients on the same orders: no lost update, every 2xx stored exactly once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const FLOW: [&str; 4] = ["confirmed", "processing", "shipped", "delivered"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_lose_no_update_and_store_each_success_once() {
    let app = Arc::new(TestApp::spawn().await);
    let mut orders = Vec::new();
    for i in 0..4 {
        orders.push(
            app.create_order(&order_body(
                &format!("Customer {i}"),
                &format!("c{i}@example.com"),
                &[("Gear", 1, "10")],
            ))
            .await
            .order_id,
        );
    }
    // 24 clients; each walks every order through the flow, with and without If-Match.
    let mut tasks = Vec::new();
    for client in 0..24usize {
        let app = Arc::clone(&app);
        let orders = orders.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut statuses = HashMap::new();
            for round in 0..FLOW.len() {
                for (o, id) in orders.iter().enumerate() {
                    let target = FLOW[(round + client + o) % FLOW.len()];
                    let mut request = app
                        .request(Method::PUT, &format!("/api/v1/orders/order/{id}/status"))
                        .json(&json!({ "status": target }));
                    if client % 2 == 0 {
                        // Read the version first, then send it: a classic lost-update set-up.
                        let events = json_of(
                            app.get(&format!("/api/v1/orders/order/{id}/events")).await,
                            StatusCode::OK,
                        )
                        .await;
                        let version = events["events"].as_array().map_or(0, Vec::len);
                        request = request.header("If-Match", format!("\"{version}\""));
                    }
                    let response = request.send().await.expect("request");
                    let status = response.status();
                    *statuses.entry(status.as_u16()).or_insert(0u32) += 1;
                    if status == StatusCode::OK {
                        let body: Value = response.json().await.expect("json");
                        acknowledged.push((
                            id.clone(),
                            body["version"].as_u64().expect("version"),
                            target.to_string(),
                        ));
                    } else {
                        assert!(
                            status == StatusCode::CONFLICT
                                || status == StatusCode::PRECONDITION_FAILED,
                            "unexpected {status}: {}",
                            response.text().await.unwrap_or_default()
                        );
                    }
                }
            }
            (acknowledged, statuses)
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for task in tasks {
        let (acks, _) = task.await.expect("client");
        for ack in acks {
            assert!(
                acknowledged.insert(ack.clone()),
                "one version acknowledged twice: {ack:?}"
            );
        }
    }
    for id in &orders {
        let events = json_of(
            app.get(&format!("/api/v1/orders/order/{id}/events")).await,
            StatusCode::OK,
        )
        .await;
        let stored: Vec<(String, u64, String)> = events["events"]
            .as_array()
            .expect("events")
            .iter()
            .skip(1)
            .map(|e| {
                (
                    id.clone(),
                    e["version"].as_u64().expect("version"),
                    e["data"]["to"].as_str().expect("to").to_string(),
                )
            })
            .collect();
        let acked: Vec<(String, u64, String)> = acknowledged
            .iter()
            .filter(|a| &a.0 == id)
            .cloned()
            .collect();
        assert_eq!(
            stored, acked,
            "every 2xx is in the store exactly once, and nothing else is"
        );
        let flow: Vec<&str> = stored.iter().map(|s| s.2.as_str()).collect();
        assert_eq!(flow, FLOW, "the status flow holds under contention");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_are_all_stored_and_projected() {
    let app = Arc::new(TestApp::spawn().await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            app.create_order(&order_body(
                "Bulk",
                &format!("bulk{}@example.com", i % 7),
                &[("Item", 1, "1.01")],
            ))
            .await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    let ids: BTreeSet<String> = answers.iter().map(|a| a.order_id.clone()).collect();
    assert_eq!(ids.len(), 40);
    // Wait for every write, then count.
    for answer in &answers {
        assert_eq!(
            app.get_after("/api/v1/orders/summary", &answer.token)
                .await
                .status(),
            StatusCode::OK
        );
    }
    let mut listed = BTreeSet::new();
    for page in 1..=2 {
        let list = json_of(
            app.get(&format!("/api/v1/orders?limit=100&page={page}"))
                .await,
            StatusCode::OK,
        )
        .await;
        for o in list["orders"].as_array().expect("orders") {
            listed.insert(o["orderId"].as_str().expect("id").to_string());
        }
    }
    let summary = json_of(app.get("/api/v1/orders/summary").await, StatusCode::OK).await;
    assert_eq!(summary["totalOrders"], 40);
    assert_eq!(summary["totalRevenue"].to_string(), "40.40");
    assert_eq!(listed, ids);
}
