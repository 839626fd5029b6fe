//! The projection runner is supervised: a panic in a read-store commit shows in `/ready`
//! and in the projections endpoint, and the runner restarts and applies the batch once.
//! [`PanickingCommits`] also serves other tests that need read models that cannot move.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use time::Date;
use uuid::Uuid;

use ordo::{Settings, Stores};
use ordo_domain::{
    DailyFigures, ListQuery, OrderPage, OrderReadStore, OrderView, ParkedEvent, ReadGeneration,
    ReadModelBatch, ReadStoreError, ReadStoreProvider, RebuildLock, Summary, TopCustomer,
    ViewState,
};
use ordo_es::Checkpoint;

use crate::helpers::{ADMIN_TOKEN, TestApp, ada, json_of, store_args, wait_for_ready};

/// Read models whose commits panic, before they change anything, while `panicking` is set.
#[derive(Debug)]
pub struct PanickingCommits {
    inner: Arc<dyn ReadStoreProvider>,
    panicking: Arc<AtomicBool>,
}

impl PanickingCommits {
    /// Wraps the read models of `stores`; returns the switch (off to begin with).
    pub fn install(stores: &mut Stores) -> Arc<AtomicBool> {
        let panicking = Arc::new(AtomicBool::new(false));
        stores.reads = Arc::new(PanickingCommits {
            inner: Arc::clone(&stores.reads),
            panicking: Arc::clone(&panicking),
        });
        panicking
    }

    fn wrap(&self, generation: ReadGeneration) -> ReadGeneration {
        ReadGeneration {
            store: Arc::new(PanickingStore {
                inner: generation.store,
                panicking: Arc::clone(&self.panicking),
            }),
            ..generation
        }
    }
}

#[async_trait]
impl ReadStoreProvider for PanickingCommits {
    async fn open_active(&self) -> Result<ReadGeneration, ReadStoreError> {
        Ok(self.wrap(self.inner.open_active().await?))
    }
    async fn create_generation(&self) -> Result<ReadGeneration, ReadStoreError> {
        Ok(self.wrap(self.inner.create_generation().await?))
    }
    async fn activate(&self, id: &str) -> Result<(), ReadStoreError> {
        self.inner.activate(id).await
    }
    async fn drop_inactive(&self) -> Result<u32, ReadStoreError> {
        self.inner.drop_inactive().await
    }
    async fn active_id(&self) -> Result<String, ReadStoreError> {
        self.inner.active_id().await
    }
    async fn try_lock_rebuild(&self) -> Result<Option<RebuildLock>, ReadStoreError> {
        self.inner.try_lock_rebuild().await
    }
}

#[derive(Debug)]
struct PanickingStore {
    inner: Arc<dyn OrderReadStore>,
    panicking: Arc<AtomicBool>,
}

#[async_trait]
impl OrderReadStore for PanickingStore {
    async fn load_checkpoint(&self, p: &str) -> Result<Option<Checkpoint>, ReadStoreError> {
        self.inner.load_checkpoint(p).await
    }
    async fn load_views(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, ViewState>, ReadStoreError> {
        self.inner.load_views(ids).await
    }
    async fn commit(
        &self,
        projection: &str,
        batch: Arc<ReadModelBatch>,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ReadStoreError> {
        if self.panicking.load(Ordering::SeqCst) {
            panic!("read-store commit panicked (injected)");
        }
        self.inner.commit(projection, batch, from, to).await
    }
    async fn get(&self, id: Uuid) -> Result<Option<OrderView>, ReadStoreError> {
        self.inner.get(id).await
    }
    async fn list(&self, query: &ListQuery) -> Result<OrderPage, ReadStoreError> {
        self.inner.list(query).await
    }
    async fn summary(&self) -> Result<Summary, ReadStoreError> {
        self.inner.summary().await
    }
    async fn top_customers(&self, limit: u32) -> Result<Vec<TopCustomer>, ReadStoreError> {
        self.inner.top_customers(limit).await
    }
    async fn daily(&self, from: Date, to: Date) -> Result<Vec<DailyFigures>, ReadStoreError> {
        self.inner.daily(from, to).await
    }
    async fn reset(&self) -> Result<(), ReadStoreError> {
        self.inner.reset().await
    }
    async fn begin_bulk(&self) -> Result<(), ReadStoreError> {
        self.inner.begin_bulk().await
    }
    async fn finish_bulk(&self) -> Result<(), ReadStoreError> {
        self.inner.finish_bulk().await
    }
    async fn close(&self) -> Result<(), ReadStoreError> {
        self.inner.close().await
    }
    async fn park(
        &self,
        projection: &str,
        parked: ParkedEvent,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ReadStoreError> {
        self.inner.park(projection, parked, from, to).await
    }
    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, ReadStoreError> {
        self.inner.parked(projection).await
    }
    async fn ping(&self) -> Result<(), ReadStoreError> {
        self.inner.ping().await
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
