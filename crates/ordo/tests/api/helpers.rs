//! The test app: the real service on port 0, with typed helpers.

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use ordo::{Settings, StoreArgs, Stores};

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
    match kind.as_str() {
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
        other => panic!("{var}={other}: expected sqlite, postgres, redis or redis-cluster"),
    }
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

/// A port that was free a moment ago (for a private server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something accepts connections on `port`.
pub async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on port {port}: the private server did not start");
}

/// Polls `/ready` until it answers 200 or `within` has passed; true when it did.
pub async fn wait_until_ready(app: &TestApp, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if app.get("/ready").await.status() == StatusCode::OK {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A server process the test started: killed when dropped, so that a failing test
/// leaves no server behind.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private redis-server on `port` keeping its data in `dir` (AOF, fsync before each
/// reply), so that a restart finds what was acknowledged.
pub fn start_redis(dir: &std::path::Path, port: u16) -> KillOnDrop {
    KillOnDrop(std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install redis-server); scripts/test.sh installs it"))
}

/// A private PostgreSQL server for one test, which the test may stop (as a crash) and
/// start again on the same port and data: a new cluster (`initdb`) in a temporary
/// directory, run as the `postgres` user when the tests run as root (the server refuses
/// root), like scripts/services.sh does. Stopped and removed when dropped.
pub struct PrivatePostgres {
    pub port: u16,
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// Creates the cluster and starts the server. Fails, naming what to install, when
    /// the PostgreSQL server binaries are missing.
    pub async fn start() -> PrivatePostgres {
        let bin = postgres_bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        if running_as_root() {
            run_checked(
                std::process::Command::new("chown")
                    .arg("-R")
                    .arg("postgres:")
                    .arg(dir.path()),
                "chown the private PostgreSQL directory to the postgres user",
            );
        }
        let server = PrivatePostgres {
            port: free_port(),
            bin,
            dir,
        };
        run_checked(
            server
                .command("initdb")
                .arg("-D")
                .arg(server.data_dir())
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                    "--no-instructions",
                ]),
            "initdb of the private PostgreSQL",
        );
        server.start_again().await;
        server
    }

    /// The URL of the server's `postgres` database, for a plain client (no ordo
    /// parameters).
    pub fn client_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL of the server's `postgres` database, with ordo's `schema` and any further
    /// `params` (`key=value&...`, or empty).
    pub fn url(&self, schema: &str, params: &str) -> String {
        let extra = if params.is_empty() {
            String::new()
        } else {
            format!("&{params}")
        };
        format!("{}?schema={schema}{extra}", self.client_url())
    }

    /// [`url`](Self::url), but reaching the server through `port` (a proxy's).
    pub fn url_through(&self, port: u16, schema: &str, params: &str) -> String {
        self.url(schema, params).replacen(
            &format!("127.0.0.1:{}/", self.port),
            &format!("127.0.0.1:{port}/"),
            1,
        )
    }

    /// Stops the server the hard way (`pg_ctl stop -m immediate`: every backend is
    /// killed, no checkpoint; the next start runs crash recovery), as a crash would.
    pub async fn stop(&self) {
        let status = self
            .tokio_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .status()
            .await
            .expect("run pg_ctl stop");
        assert!(status.success(), "pg_ctl stop failed: {}", self.log_tail());
    }

    /// Starts the server (again) on the same port and data, and waits until it accepts
    /// connections.
    pub async fn start_again(&self) {
        let settings = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c shared_buffers=16MB",
            self.port,
            self.dir.path().display()
        );
        let status = self
            .tokio_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "120", "-o", &settings, "start"])
            .status()
            .await
            .expect("run pg_ctl start");
        assert!(
            status.success(),
            "the private PostgreSQL did not start: {}",
            self.log_tail()
        );
        wait_for_port(self.port).await;
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> std::path::PathBuf {
        self.dir.path().join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `program` of the server binaries, as the postgres user when we are root.
    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        if running_as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            std::process::Command::new(path)
        }
    }

    fn tokio_command(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::from(self.command(program));
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The directory of PostgreSQL's server binaries: `ORDO_TEST_PG_BIN`, else the newest
/// /usr/lib/postgresql/<version>/bin that has initdb.
fn postgres_bin_dir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("ORDO_TEST_PG_BIN") {
        return dir.into();
    }
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop().expect(
        "the PostgreSQL server binaries (initdb, pg_ctl) must be installed: apt-get install \
         postgresql postgresql-contrib (or set ORDO_TEST_PG_BIN to their directory)",
    )
}

/// The effective user of this process is root (the owner of /proc/self).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn run_checked(command: &mut std::process::Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
