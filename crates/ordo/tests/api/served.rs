//! Real `ordo serve` processes for the tests that need several of them on shared stores:
//! each the built binary on a loopback port, its log in a file, stopped, killed, paused
//! and resumed by signals.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use rustix::process::Signal;
use serde_json::Value;

use ordo::StoreArgs;
use ordo_testkit::{eventually, free_port};

use crate::helpers::{ADMIN_TOKEN, CommandAnswer, ada, json_of};

/// One `ordo serve` process, killed if the test ends without stopping it.
pub struct Served {
    child: tokio::process::Child,
    pub address: String,
    pub client: Client,
    log: PathBuf,
}

impl Served {
    /// Starts `ordo serve` on `stores` with `ORDO_ROLE=role` (the flag's environment
    /// twin), and waits until `/health` answers.
    pub async fn start(stores: &StoreArgs, role: &str, dir: &Path) -> Served {
        Self::start_with(stores, role, dir, &[]).await
    }

    /// [`start`](Self::start) with more environment variables, such as `ORDO_LEASE_TTL`.
    pub async fn start_with(
        stores: &StoreArgs,
        role: &str,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Served {
        let port = free_port();
        let log = dir.join(format!("{role}-{port}.log"));
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordo"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&stores.data_dir)
            .env("ORDO_ROLE", role)
            .env("ORDO_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true);
        for (var, url) in [
            ("ORDO_EVENT_STORE", &stores.event_store),
            ("ORDO_READ_STORE", &stores.read_store),
        ] {
            if let Some(url) = url {
                command.env(var, url);
            }
        }
        let served = Served {
            child: command.spawn().expect("start ordo serve"),
            address: format!("http://127.0.0.1:{port}"),
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            log,
        };
        let health = eventually(Duration::from_secs(60), || async {
            match status_of(served.get("/health")).await {
                Some(StatusCode::OK) => Ok(()),
                other => Err(other),
            }
        })
        .await;
        if let Err(last) = health {
            panic!(
                "ordo serve --role {role} did not answer /health ({last:?}); its log:\n{}",
                served.log_text()
            );
        }
        served
    }

    /// The process id (also part of its projector id in the shard leases).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("a pid");
        rustix::process::kill_process(pid, signal).expect("send a signal");
    }

    /// SIGSTOP: the process stops running (its leases lapse) until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal(Signal::STOP);
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal(Signal::CONT);
    }

    /// SIGKILL: the process ends at once, releasing nothing.
    pub async fn kill(mut self) {
        self.signal(Signal::KILL);
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("killed within a minute")
            .expect("exit status");
        assert!(!status.success(), "{status}");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.address))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(ADMIN_TOKEN)
    }

    pub async fn send(request: RequestBuilder) -> Response {
        request.send().await.expect("request")
    }

    /// GET that first waits for the read models to reach `token`.
    pub async fn get_after(&self, path: &str, token: &str) -> Response {
        Self::send(
            self.get(path)
                .header("X-Consistency-Token", token)
                .header("X-Consistency-Timeout-Ms", "30000"),
        )
        .await
    }

    pub async fn create_order(&self) -> CommandAnswer {
        let response = Self::send(
            self.request(Method::POST, "/api/v1/orders/order")
                .json(&ada()),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        CommandAnswer::from(response).await
    }

    pub async fn metrics(&self) -> String {
        let response = Self::send(self.get("/metrics")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("metrics")
    }

    /// The value of the `orders` projection's metric `name` now, if the process has it.
    pub async fn metric(&self, name: &str) -> Option<u64> {
        metric_value(&self.metrics().await, name)
    }

    /// The admin report of the `orders` projection.
    pub async fn projections(&self) -> Value {
        let response = Self::send(self.admin(Method::GET, "/api/v1/admin/projections")).await;
        json_of(response, StatusCode::OK).await["projections"][0].clone()
    }

    pub async fn wait_until_ready(&self) {
        let ready = eventually(Duration::from_secs(60), || async {
            match status_of(self.get("/ready")).await {
                Some(StatusCode::OK) => Ok(()),
                other => Err(other),
            }
        })
        .await;
        if let Err(last) = ready {
            panic!(
                "/ready never answered 200 ({last:?}); log:\n{}",
                self.log_text()
            );
        }
    }

    /// SIGTERM, and the graceful stop's exit status 0.
    pub async fn stop(mut self) {
        self.signal(Signal::TERM);
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("stopped within a minute")
            .expect("exit status");
        assert!(status.success(), "{status}; log:\n{}", self.log_text());
    }
}

/// The status `request` is answered with, `None` when nothing answered.
pub async fn status_of(request: RequestBuilder) -> Option<StatusCode> {
    request
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

/// `ordo status --json` on `stores`, asking `server` with the admin token.
pub async fn ordo_status(stores: &StoreArgs, server: String) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordo"));
    command
        .args([
            "status",
            "--json",
            "--admin-token",
            ADMIN_TOKEN,
            "--server",
            &server,
        ])
        .arg("--data-dir")
        .arg(&stores.data_dir)
        .env("NO_COLOR", "1");
    for (flag, url) in [
        ("--event-store", &stores.event_store),
        ("--read-store", &stores.read_store),
    ] {
        if let Some(url) = url {
            command.arg(flag).arg(url);
        }
    }
    command.output().await.expect("run ordo status")
}

/// The value of `name{projection="orders"}` in `metrics`, if present.
pub fn metric_value(metrics: &str, name: &str) -> Option<u64> {
    let prefix = format!("{name}{{projection=\"orders\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.parse().expect("a count"))
}

/// `ordo_projection_events_applied_total{projection="orders"}` in `metrics`, if present.
pub fn events_applied(metrics: &str) -> Option<u64> {
    metric_value(metrics, "ordo_projection_events_applied_total")
}
