//! The HTTP load: N client tasks, each sending one request at a time over its own
//! keep-alive connection, for a fixed duration.
//!
//! Each task owns the orders it created, so its status changes and cancels (sent with
//! `If-Match`) never race another task: a 409 or 412 would mean a bug, and is counted
//! apart from errors all the same. Reads of one order pick one created at least a few
//! commands earlier; without a consistency token, a 404 there only means the projection
//! has not reached it yet, and is counted as "stale", not as an error.
//!
//! Projection lag: after every `lag_every`-th command, the task sends
//! `GET /api/v1/orders/order/{id}` with the command's `X-Consistency-Token` and
//! `X-Consistency-Timeout-Ms: 30000`; the server answers once its read models show that
//! write. The time from the command's answer to that read's answer is the lag sample. It
//! includes one query round trip (see the query p50 beside it), so it is an upper bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::mix::{Mix, Op, Rng};
use crate::stats::Samples;

/// What to drive.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub base: String,
    pub concurrency: usize,
    pub duration: Duration,
    /// Requests sent but not measured at the start (connections, caches).
    pub warmup: Duration,
    pub mix: Mix,
    /// Probe the projection lag after every n-th command of a task (0: never).
    pub lag_every: u64,
    /// Pace all operations to this many per second in total (None: as fast as possible).
    pub rate: Option<f64>,
    pub seed: u64,
}

/// What one load produced.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub elapsed: Duration,
    pub commands: u64,
    pub queries: u64,
    pub command_latency: Samples,
    pub query_latency: Samples,
    pub lag: Samples,
    /// Answers a correct run never gives: transport failures, 5xx, unexpected 4xx.
    pub errors: u64,
    /// 409 and 412 (business-rule and If-Match conflicts).
    pub conflicts: u64,
    /// 404 on a read without a consistency token (not projected yet).
    pub stale: u64,
    /// The first few errors, for the report.
    pub error_samples: Vec<String>,
}

impl LoadResult {
    pub fn commands_per_sec(&self) -> f64 {
        self.commands as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn queries_per_sec(&self) -> f64 {
        self.queries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, other: LoadResult) {
        self.commands += other.commands;
        self.queries += other.queries;
        self.command_latency.merge(other.command_latency);
        self.query_latency.merge(other.query_latency);
        self.lag.merge(other.lag);
        self.errors += other.errors;
        self.conflicts += other.conflicts;
        self.stale += other.stale;
        for e in other.error_samples {
            if self.error_samples.len() < 10 {
                self.error_samples.push(e);
            }
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.error_samples.len() < 10 {
            self.error_samples.push(what);
        }
    }
}

/// One order a task created.
#[derive(Clone, Debug)]
struct Owned {
    id: String,
    version: u64,
    status: &'static str,
    email: String,
}

fn next_status(status: &str) -> Option<&'static str> {
    match status {
        "pending" => Some("confirmed"),
        "confirmed" => Some("processing"),
        "processing" => Some("shipped"),
        "shipped" => Some("delivered"),
        _ => None,
    }
}

fn cancellable(status: &str) -> bool {
    matches!(status, "pending" | "confirmed" | "processing")
}

/// A price in cents as an exact JSON decimal (19.99, never a binary float).
fn price(cents: u64) -> Value {
    serde_json::from_str(&format!("{}.{:02}", cents / 100, cents % 100)).unwrap_or(Value::Null)
}

/// A realistic CreateOrder body: one of 1,000 customers, 1 to 3 of 200 products.
pub fn create_body(rng: &mut Rng) -> (Value, String) {
    let customer = rng.below(1000);
    let email = format!("customer{customer}@example.com");
    let lines = 1 + rng.below(3);
    let items: Vec<Value> = (0..lines)
        .map(|_| {
            let product = rng.below(200);
            let cents = 100 + rng.below(20_000);
            serde_json::json!({
                "productId": format!("p-{product}"),
                "productName": format!("Product {product}"),
                "quantity": 1 + rng.below(5),
                "unitPrice": price(cents),
            })
        })
        .collect();
    let body = serde_json::json!({
        "customerName": format!("Customer {customer}"),
        "customerEmail": email,
        "currency": "EUR",
        "items": items,
    });
    (body, email)
}

/// Paces all tasks together: operation n starts no earlier than start + n / rate.
#[derive(Debug)]
struct Pacer {
    start: Instant,
    rate: f64,
    issued: AtomicU64,
}

impl Pacer {
    async fn wait(&self) {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let at = self.start + Duration::from_secs_f64(n as f64 / self.rate);
        tokio::time::sleep_until(at.into()).await;
    }
}

/// A command's answer: the new version and the consistency token.
struct Answer {
    id: String,
    version: u64,
    token: String,
}

enum Outcome {
    Ok(Option<Answer>),
    Conflict,
    Stale,
    Error(String),
}

async fn send(req: reqwest::RequestBuilder, op: Op, command: bool) -> Outcome {
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Error(format!("{}: transport: {e}", op.name())),
    };
    let status = resp.status();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Error(format!("{}: reading the body: {e}", op.name())),
    };
    if status.is_success() {
        if !command {
            return Outcome::Ok(None);
        }
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return Outcome::Error(format!("{}: answer is not JSON: {e}", op.name())),
        };
        let id = v["orderId"].as_str().map(str::to_string);
        let version = v["version"].as_u64();
        let token = v["consistencyToken"].as_str().map(str::to_string);
        return match (id, version, token) {
            (Some(id), Some(version), Some(token)) => {
                Outcome::Ok(Some(Answer { id, version, token }))
            }
            _ => Outcome::Error(format!(
                "{}: answer lacks orderId/version/consistencyToken: {}",
                op.name(),
                String::from_utf8_lossy(&body)
            )),
        };
    }
    match status {
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => Outcome::Conflict,
        StatusCode::NOT_FOUND if op == Op::Get => Outcome::Stale,
        _ => Outcome::Error(format!(
            "{}: HTTP {status}: {}",
            op.name(),
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )),
    }
}

struct Task {
    client: Client,
    base: String,
    rng: Rng,
    orders: Vec<Owned>,
    commands_done: u64,
}

/// Orders a task keeps to pick from (the oldest are forgotten).
const KEEP: usize = 2000;
/// Reads of one order skip the newest this many, to mostly read projected ones.
const FRESH: usize = 8;

impl Task {
    fn request(
        &self,
        op: Op,
        mix_rng: &mut Rng,
    ) -> Option<(reqwest::RequestBuilder, Option<usize>)> {
        let url = |p: &str| format!("{}{p}", self.base);
        match op {
            Op::Create => None,
            Op::Status => {
                let candidates: Vec<usize> = (0..self.orders.len())
                    .filter(|&i| next_status(self.orders[i].status).is_some())
                    .collect();
                let i = *candidates.get(mix_rng.below(candidates.len() as u64) as usize)?;
                let o = &self.orders[i];
                let to = next_status(o.status)?;
                Some((
                    self.client
                        .put(url(&format!("/api/v1/orders/order/{}/status", o.id)))
                        .header("if-match", format!("\"{}\"", o.version))
                        .json(&serde_json::json!({ "status": to })),
                    Some(i),
                ))
            }
            Op::Cancel => {
                let candidates: Vec<usize> = (0..self.orders.len())
                    .filter(|&i| cancellable(self.orders[i].status))
                    .collect();
                let i = *candidates.get(mix_rng.below(candidates.len() as u64) as usize)?;
                let o = &self.orders[i];
                Some((
                    self.client
                        .put(url(&format!("/api/v1/orders/order/{}/cancel", o.id)))
                        .header("if-match", format!("\"{}\"", o.version))
                        .json(&serde_json::json!({ "reason": "changed my mind" })),
                    Some(i),
                ))
            }
            Op::Get => {
                if self.orders.len() <= FRESH {
                    return None;
                }
                let i = mix_rng.below((self.orders.len() - FRESH) as u64) as usize;
                Some((
                    self.client
                        .get(url(&format!("/api/v1/orders/order/{}", self.orders[i].id))),
                    None,
                ))
            }
            Op::List => {
                let statuses = ["pending", "confirmed", "processing", "shipped"];
                let s = statuses[mix_rng.below(4) as usize];
                Some((
                    self.client
                        .get(url(&format!("/api/v1/orders?status={s}&limit=20"))),
                    None,
                ))
            }
            Op::Summary => Some((self.client.get(url("/api/v1/orders/summary")), None)),
            Op::Customer => {
                let email = match self
                    .orders
                    .get(mix_rng.below(self.orders.len() as u64) as usize)
                {
                    Some(o) => o.email.clone(),
                    None => format!("customer{}@example.com", mix_rng.below(1000)),
                };
                Some((
                    self.client
                        .get(url(&format!("/api/v1/orders/customer/{email}?limit=20"))),
                    None,
                ))
            }
            Op::Search => {
                let q = format!("Product%20{}", mix_rng.below(200));
                Some((
                    self.client
                        .get(url(&format!("/api/v1/orders/search?q={q}&limit=20"))),
                    None,
                ))
            }
        }
    }

    async fn run(
        mut self,
        spec: Arc<LoadSpec>,
        pacer: Option<Arc<Pacer>>,
        measure_from: Instant,
        end: Instant,
    ) -> LoadResult {
        let mut out = LoadResult::default();
        let mut pick_rng = Rng::new(self.rng.next_u64());
        loop {
            if let Some(p) = &pacer {
                p.wait().await;
            }
            let started = Instant::now();
            if started >= end {
                break;
            }
            let measured = started >= measure_from;
            let mut op = spec.mix.pick(pick_rng.next_u64());
            // An operation that needs an order the task does not have becomes a create.
            let (req, target, email) = match self.request(op, &mut pick_rng) {
                Some((req, target)) => (req, target, None),
                None => {
                    op = Op::Create;
                    let (body, email) = create_body(&mut self.rng);
                    let req = self
                        .client
                        .post(format!("{}/api/v1/orders/order", self.base))
                        .json(&body);
                    (req, None, Some(email))
                }
            };
            let outcome = send(req, op, op.is_command()).await;
            let answered = Instant::now();
            let mut probe = None;
            match outcome {
                Outcome::Ok(answer) => {
                    if measured {
                        if op.is_command() {
                            out.commands += 1;
                            out.command_latency.record(answered - started);
                        } else {
                            out.queries += 1;
                            out.query_latency.record(answered - started);
                        }
                    }
                    if let Some(a) = answer {
                        self.record_answer(op, target, email, &a);
                        self.commands_done += 1;
                        if spec.lag_every > 0 && self.commands_done.is_multiple_of(spec.lag_every) {
                            probe = Some(a);
                        }
                    }
                }
                Outcome::Conflict => {
                    if measured {
                        out.conflicts += 1;
                    }
                    // Forget the order: its state is not what the task believed.
                    if let Some(i) = target {
                        self.orders.swap_remove(i);
                    }
                }
                Outcome::Stale => {
                    if measured {
                        out.stale += 1;
                    }
                }
                Outcome::Error(e) => {
                    out.error(e);
                }
            }
            if let Some(a) = probe {
                let req = self
                    .client
                    .get(format!("{}/api/v1/orders/order/{}", self.base, a.id))
                    .header("x-consistency-token", &a.token)
                    .header("x-consistency-timeout-ms", "30000");
                match send(req, Op::Get, false).await {
                    Outcome::Ok(_) => {
                        if measured {
                            out.lag.record(answered.elapsed());
                        }
                    }
                    Outcome::Error(e) => out.error(format!("lag probe: {e}")),
                    Outcome::Conflict | Outcome::Stale => {
                        out.error("lag probe: 404/409/412 after waiting for the token".into())
                    }
                }
            }
        }
        out
    }

    fn record_answer(&mut self, op: Op, target: Option<usize>, email: Option<String>, a: &Answer) {
        match (op, target) {
            (Op::Create, _) => {
                if self.orders.len() >= KEEP {
                    self.orders.remove(0);
                }
                self.orders.push(Owned {
                    id: a.id.clone(),
                    version: a.version,
                    status: "pending",
                    email: email.unwrap_or_default(),
                });
            }
            (Op::Status, Some(i)) => {
                let o = &mut self.orders[i];
                o.version = a.version;
                o.status = next_status(o.status).unwrap_or("delivered");
            }
            (Op::Cancel, Some(i)) => {
                let o = &mut self.orders[i];
                o.version = a.version;
                o.status = "cancelled";
            }
            _ => {}
        }
    }
}

/// Drives `spec` and merges what every task saw.
pub async fn drive(spec: LoadSpec) -> anyhow::Result<LoadResult> {
    let spec = Arc::new(spec);
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let pacer = spec.rate.map(|rate| {
        Arc::new(Pacer {
            start,
            rate,
            issued: AtomicU64::new(0),
        })
    });
    let mut handles = Vec::with_capacity(spec.concurrency);
    for i in 0..spec.concurrency {
        // One client (one keep-alive connection) per task, like N independent users.
        let client = Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(60))
            .build()?;
        let task = Task {
            client,
            base: spec.base.clone(),
            rng: Rng::new(spec.seed.wrapping_add(i as u64 * 7919)),
            orders: Vec::new(),
            commands_done: 0,
        };
        handles.push(tokio::spawn(task.run(
            Arc::clone(&spec),
            pacer.clone(),
            measure_from,
            end,
        )));
    }
    let mut result = LoadResult::default();
    for h in handles {
        result.merge(h.await?);
    }
    result.elapsed = Instant::now().saturating_duration_since(measure_from);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies_parse_as_the_domain_parses_them() {
        let mut rng = Rng::new(7);
        for _ in 0..200 {
            let (body, email) = create_body(&mut rng);
            let parsed = ordo_domain::CreateOrder::parse(&body).expect("a valid CreateOrder");
            assert_eq!(parsed.customer_email.as_str(), email);
            assert!(!parsed.items.is_empty() && parsed.items.len() <= 3);
        }
    }

    #[test]
    fn status_walk_and_cancellable() {
        assert_eq!(next_status("pending"), Some("confirmed"));
        assert_eq!(next_status("shipped"), Some("delivered"));
        assert_eq!(next_status("delivered"), None);
        assert_eq!(next_status("cancelled"), None);
        assert!(cancellable("processing"));
        assert!(!cancellable("shipped"));
    }
}
