//! The projection runner is supervised: a panic in a read-store commit shows in `/ready`
//! and in the projections endpoint, and the runner restarts and applies the batch once.
//! [`PanickingCommits`] also serves other tests that need read models that cannot move.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use ordo::{Settings, Stores};
use ordo_app::hooks::{Held, HookedStores, ReadStoreHooks};
use ordo_domain::{ReadModelBatch, ReadStoreError};

use crate::helpers::{ADMIN_TOKEN, TestApp, ada, json_of, store_args, wait_for_ready};

/// Read models whose commits panic, before they change anything, while `panicking` is set.
#[derive(Debug)]
pub struct PanickingCommits {
    panicking: Arc<AtomicBool>,
}

impl PanickingCommits {
    /// Wraps the read models of `stores`; returns the switch (off to begin with).
    pub fn install(stores: &mut Stores) -> Arc<AtomicBool> {
        let panicking = Arc::new(AtomicBool::new(false));
        stores.reads = Arc::new(HookedStores::all(
            Arc::clone(&stores.reads),
            Arc::new(PanickingCommits {
                panicking: Arc::clone(&panicking),
            }),
        ));
        panicking
    }
}

#[async_trait]
impl ReadStoreHooks for PanickingCommits {
    async fn before_commit(&self, _: &ReadModelBatch) -> Result<Held, ReadStoreError> {
        assert!(
            !self.panicking.load(Ordering::SeqCst),
            "read-store commit panicked (injected)"
        );
        Ok(Held::NOTHING)
    }
}

async fn projection(app: &TestApp) -> Value {
    let answer = json_of(
        app.admin(Method::GET, "/api/v1/admin/projections")
            .send()
            .await
            .expect("request"),
        StatusCode::OK,
    )
    .await;
    answer["projections"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_commit_makes_the_service_unready_until_the_restarted_projection_applies_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = store_args(dir.path());
    let mut stores = Stores::open(&args).await.expect("open stores");
    let panicking = PanickingCommits::install(&mut stores);
    let settings = Settings {
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Settings::default()
    };
    let app = TestApp::spawn_on(args, stores, settings).await;
    wait_for_ready(&app, StatusCode::OK).await;
    assert_eq!(projection(&app).await["restarts"], 0);

    panicking.store(true, Ordering::SeqCst);
    let created = app.create_order(&ada()).await;
    let problem = wait_for_ready(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    // /ready names the failing part, never its error text (that is for the log and the
    // admin endpoint).
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("projection orders is failing") && !d.contains("panick")),
        "{problem}"
    );
    let failing = projection(&app).await;
    assert_eq!(failing["state"], "failing", "{failing}");
    assert!(
        failing["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("panicked")),
        "{failing}"
    );
    assert!(failing["restarts"].as_u64() >= Some(1), "{failing}");

    panicking.store(false, Ordering::SeqCst);
    wait_for_ready(&app, StatusCode::OK).await;
    let view = app
        .get_after(
            &format!("/api/v1/orders/order/{}", created.order_id),
            &created.token,
        )
        .await;
    assert_eq!(view.status(), StatusCode::OK);
    let summary = json_of(app.get("/api/v1/orders/summary").await, StatusCode::OK).await;
    assert_eq!(summary["totalOrders"], 1, "applied once: {summary}");
    let recovered = projection(&app).await;
    assert_eq!(recovered["state"], "running", "{recovered}");
    assert_eq!(recovered["lastError"], Value::Null, "{recovered}");
    let restarts = recovered["restarts"].as_u64().expect("restarts");
    assert!(restarts >= 1, "{recovered}");
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains(&format!(
            "ordo_projection_restarts_total{{projection=\"orders\"}} {restarts}"
        )),
        "{metrics}"
    );
    app.shutdown().await;
}
