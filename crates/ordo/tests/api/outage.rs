//! A store that goes away while the service runs: commands answer 503 with Retry-After,
//! `/ready` says which store is missing, what the read models can answer is still
//! answered, and everything recovers once the store is back, without a restart.
//!
//! The event store is a private `redis-server` the test starts, kills and restarts
//! (whatever `ORDO_TEST_EVENT_STORE` says: the outage is the point, not the combination).

use std::time::Duration;

use reqwest::{Method, StatusCode};

use ordo::StoreArgs;

use ordo_testkit::{eventually, free_port, start_redis, wait_for_port};

use crate::helpers::{CommandAnswer, TestApp, ada, expect_problem, json_of, wait_until_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_store_that_goes_away_answers_503_and_the_service_recovers_when_it_is_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir_all(&redis_dir).expect("redis dir");
    let port = free_port();
    let mut redis = start_redis(&redis_dir, port);
    let mut args = StoreArgs::embedded(dir.path());
    args.event_store = Some(format!("redis://127.0.0.1:{port}?prefix=outage"));
    wait_for_port(port).await;
    let app = TestApp::spawn_with(args).await;
    assert!(wait_until_ready(&app, Duration::from_secs(30)).await);
    let first = CommandAnswer::from(app.post_order(&ada()).await).await;
    let order = format!("/api/v1/orders/order/{}", first.order_id);
    json_of(app.get_after(&order, &first.token).await, StatusCode::OK).await;

    redis.kill().expect("SIGKILL redis-server");
    let _ = redis.wait();

    // A command cannot be stored: 503, with when to retry, and nothing half-done.
    let response = app.post_order(&ada()).await;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let problem = expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(retry_after.is_some_and(|s| s > 0), "Retry-After in seconds");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("event store")),
        "{problem}"
    );
    // Readiness names the missing store; liveness does not restart a healthy process.
    let ready = expect_problem(app.get("/ready").await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        ready["detail"]
            .as_str()
            .is_some_and(|d| d.contains("event store")),
        "{ready}"
    );
    json_of(app.get("/health").await, StatusCode::OK).await;
    // The projection cannot read the log: /ready names it, and only the admin endpoint
    // tells why (the cause is internal text: store addresses, driver messages).
    let failing = "projection orders is failing; see the log and GET /api/v1/admin/projections";
    let detail = eventually(Duration::from_secs(30), || async {
        let ready = expect_problem(app.get("/ready").await, StatusCode::SERVICE_UNAVAILABLE).await;
        let detail = ready["detail"].as_str().unwrap_or_default().to_string();
        if detail.contains(failing) {
            Ok(detail)
        } else {
            Err(detail)
        }
    })
    .await
    .unwrap_or_else(|detail| panic!("/ready never said {failing:?}; last: {detail}"));
    let projections = json_of(
        app.admin(Method::GET, "/api/v1/admin/projections")
            .send()
            .await
            .expect("request"),
        StatusCode::OK,
    )
    .await;
    let last_error = projections["projections"][0]["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!last_error.is_empty(), "{projections}");
    assert!(
        !detail.contains(&last_error),
        "/ready shows the internal error {last_error:?}: {detail}"
    );
    assert!(!detail.to_lowercase().contains("redis"), "{detail}");
    // The read models do not need the event store.
    let view = json_of(app.get(&order).await, StatusCode::OK).await;
    assert_eq!(view["orderId"], first.order_id.as_str());

    let mut redis = start_redis(&redis_dir, port);
    assert!(
        wait_until_ready(&app, Duration::from_secs(60)).await,
        "ready again once the event store is back"
    );
    let second = CommandAnswer::from(app.post_order(&ada()).await).await;
    assert_ne!(second.order_id, first.order_id);
    let after = format!("/api/v1/orders/order/{}", second.order_id);
    json_of(app.get_after(&after, &second.token).await, StatusCode::OK).await;
    // The events before the outage were kept (the restarted server read its AOF).
    let history = json_of(app.get(&format!("{order}/events")).await, StatusCode::OK).await;
    assert!(history.to_string().contains("OrderCreated"), "{history}");

    app.shutdown().await;
    let _ = redis.kill();
    let _ = redis.wait();
}
