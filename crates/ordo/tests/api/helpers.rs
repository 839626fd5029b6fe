//! The test app: the real service on port 0, with typed helpers.

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use ordo::{Settings, StoreArgs, Stores};
use ordo_testkit::eventually;

/// Which stores the API tests run on: `ORDO_TEST_EVENT_STORE` and `ORDO_TEST_READ_STORE`
/// (`sqlite` by default; `postgres`, `redis`, `redis-cluster` where built in), each with
/// its own isolated namespace per test.
pub fn store_args(dir: &std::path::Path) -> StoreArgs {
    let mut args = StoreArgs::embedded(dir);
    let isolation = isolation_name();
    args.event_store = backend_url("ORDO_TEST_EVENT_STORE", &isolation);
    args.read_store = backend_url("ORDO_TEST_READ_STORE", &isolation);
    args
}

/// A schema name / key prefix of its own for one test: `t_<run>_<uuid>`, where the run id
/// (`ORDO_TEST_RUN`, set by scripts/test.sh) lets the script remove exactly this run's
/// schemas and keys when it ends.
fn isolation_name() -> String {
    let run = std::env::var("ORDO_TEST_RUN")
        .ok()
        .filter(|r| !r.is_empty() && r.len() <= 12 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "x".into());
    format!("t_{run}_{}", uuid::Uuid::now_v7().simple())
}

pub fn backend_url(var: &str, isolation: &str) -> Option<String> {
    let kind = std::env::var(var).unwrap_or_else(|_| "sqlite".into());
    backend_url_of(&kind, isolation)
}

/// The URL of a store of `kind` (`sqlite`, `postgres`, `redis`, `redis-cluster`) in the
/// namespace `isolation`; `None` for the embedded store.
pub fn backend_url_of(kind: &str, isolation: &str) -> Option<String> {
    match kind {
        "" | "sqlite" => None,
        "postgres" => {
            let base = std::env::var("ORDO_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let sep = if base.contains('?') { '&' } else { '?' };
            Some(format!("{base}{sep}schema={isolation}"))
        }
        "redis" => {
            let base = std::env::var("ORDO_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            Some(format!("{base}?prefix={isolation}"))
        }
        "redis-cluster" => {
            let base = std::env::var("ORDO_TEST_REDIS_CLUSTER_URL").expect(
                "ORDO_TEST_REDIS_CLUSTER_URL must name the test cluster (scripts/test.sh sets it)",
            );
            Some(format!("{base}?prefix={isolation}"))
        }
        other => panic!(
            "store kind {other:?} (ORDO_TEST_EVENT_STORE, ORDO_TEST_READ_STORE): expected sqlite, postgres, redis or redis-cluster"
        ),
    }
}

/// Stores of the given kinds (see [`backend_url_of`]) in a namespace of their own, whatever
/// the test run's combination is: for tests that need stores several processes share.
pub fn store_args_of(dir: &std::path::Path, events: &str, reads: &str) -> StoreArgs {
    let mut args = StoreArgs::embedded(dir);
    let isolation = isolation_name();
    args.event_store = backend_url_of(events, &isolation);
    args.read_store = backend_url_of(reads, &isolation);
    args
}

/// The same event store as `args`, with a new, empty read store.
pub fn with_fresh_read_store(args: &StoreArgs) -> StoreArgs {
    let mut fresh = args.clone();
    let isolation = isolation_name();
    fresh.read_store = backend_url("ORDO_TEST_READ_STORE", &isolation).or_else(|| {
        Some(format!(
            "sqlite://{}",
            args.data_dir.join(format!("{isolation}.db")).display()
        ))
    });
    fresh
}

/// The admin token of test apps.
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub args: StoreArgs,
    /// The stores the app runs on (for tests that write raw events).
    pub stores: Stores,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = store_args(dir.path());
        let mut app = Self::spawn_with(args).await;
        app._dir = Some(dir);
        app
    }

    /// Starts the service on new stores, with these settings.
    pub async fn spawn_configured(settings: Settings) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut app = Self::spawn_with_settings(store_args(dir.path()), settings).await;
        app._dir = Some(dir);
        app
    }

    /// Starts the service on the given stores (to restart on the same data).
    pub async fn spawn_with(args: StoreArgs) -> TestApp {
        Self::spawn_with_settings(
            args,
            Settings {
                admin_token: Some(ADMIN_TOKEN.into()),
                ..Settings::default()
            },
        )
        .await
    }

    pub async fn spawn_with_settings(args: StoreArgs, settings: Settings) -> TestApp {
        let stores = Stores::open(&args).await.expect("open stores");
        Self::spawn_on(args, stores, settings).await
    }

    /// Starts the service on `stores` (opened from `args`, and perhaps wrapped by the
    /// test, to inject failures).
    pub async fn spawn_on(args: StoreArgs, stores: Stores, settings: Settings) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ordo::run(listener, stores.clone(), settings, async {
            let _ = stopped.await;
        }));
        TestApp {
            stores,
            address,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            args,
            stop: Some(stop),
            task: Some(task),
            _dir: None,
        }
    }

    /// Graceful shutdown; returns the temp dir so the data can be reopened.
    pub async fn shutdown(mut self) -> Option<tempfile::TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server exits cleanly");
        }
        self._dir.take()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request with the admin token.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(ADMIN_TOKEN)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path)
            .send()
            .await
            .expect("request")
    }

    /// GET that first waits for the read models to reach `token`.
    pub async fn get_after(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path)
            .header("X-Consistency-Token", token)
            .header("X-Consistency-Timeout-Ms", "30000")
            .send()
            .await
            .expect("request")
    }

    pub async fn post_order(&self, body: &Value) -> Response {
        self.request(Method::POST, "/api/v1/orders/order")
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Creates an order and returns the command answer.
    pub async fn create_order(&self, body: &Value) -> CommandAnswer {
        let response = self.post_order(body).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            response.text().await.unwrap_or_default()
        );
        CommandAnswer::from(response).await
    }

    pub async fn put_status(&self, id: &str, status: &str) -> Response {
        self.request(Method::PUT, &format!("/api/v1/orders/order/{id}/status"))
            .json(&json!({ "status": status }))
            .send()
            .await
            .expect("request")
    }

    pub async fn set_status(&self, id: &str, status: &str) -> CommandAnswer {
        let response = self.put_status(id, status).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{}",
            response.text().await.unwrap_or_default()
        );
        CommandAnswer::from(response).await
    }

    pub async fn cancel(&self, id: &str, body: Option<&Value>) -> Response {
        let mut request = self.request(Method::PUT, &format!("/api/v1/orders/order/{id}/cancel"));
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request")
    }

    pub async fn delete(&self, id: &str) -> Response {
        self.request(Method::DELETE, &format!("/api/v1/orders/order/{id}"))
            .send()
            .await
            .expect("request")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What a successful command answers.
#[derive(Debug, Clone)]
pub struct CommandAnswer {
    pub order_id: String,
    pub version: u64,
    pub token: String,
}

impl CommandAnswer {
    pub async fn from(response: Response) -> CommandAnswer {
        let header_token = response
            .headers()
            .get("x-consistency-token")
            .expect("X-Consistency-Token")
            .to_str()
            .expect("ascii")
            .to_string();
        let body: Value = response.json().await.expect("json answer");
        assert_eq!(body["consistencyToken"], json!(header_token));
        CommandAnswer {
            order_id: body["orderId"].as_str().expect("orderId").to_string(),
            version: body["version"].as_u64().expect("version"),
            token: header_token,
        }
    }
}

pub fn order_body(name: &str, email: &str, items: &[(&str, u32, &str)]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, (product, quantity, price))| {
            let price: Value = serde_json::from_str(price).expect("price literal");
            json!({"productId": format!("p-{i}"), "productName": product, "quantity": quantity, "unitPrice": price})
        })
        .collect();
    json!({"customerName": name, "customerEmail": email, "currency": "EUR", "items": items})
}

pub fn ada() -> Value {
    order_body(
        "Ada Lovelace",
        "ada@example.com",
        &[("Difference Engine", 2, "19.99")],
    )
}

/// Asserts a problem document with `status`, and returns it.
pub async fn expect_problem(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "body: {text}");
    assert!(
        content_type.starts_with("application/problem+json"),
        "content-type {content_type:?}, body {text}"
    );
    let problem: Value = serde_json::from_str(&text).expect("problem json");
    assert_eq!(problem["status"], json!(status.as_u16()));
    assert!(
        problem["title"].is_string() && problem["detail"].is_string(),
        "{problem}"
    );
    problem
}

pub async fn json_of(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "body: {text}");
    serde_json::from_str(&text).expect("json")
}

/// Polls `/ready` until it answers `status`, for at most a minute; returns its body.
pub async fn wait_for_ready(app: &TestApp, status: StatusCode) -> Value {
    eventually(Duration::from_secs(60), || async {
        let response = app.get("/ready").await;
        let got = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        if got == status {
            Ok(body)
        } else {
            Err(format!("{got}: {body}"))
        }
    })
    .await
    .unwrap_or_else(|last| panic!("/ready never answered {status}; last: {last}"))
}

/// Polls `/ready` until it answers 200 or `within` has passed; true when it did.
pub async fn wait_until_ready(app: &TestApp, within: Duration) -> bool {
    eventually(within, || async {
        match app.get("/ready").await.status() {
            StatusCode::OK => Ok(()),
            other => Err(other),
        }
    })
    .await
    .is_ok()
}
