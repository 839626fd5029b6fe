//! The HTTP load: N client tasks, each sending one request at a time over its own
//! keep-alive connection, for a fixed duration.
//!
//! Each task owns the orders it created, so its status changes and cancels (sent with
//! `If-Match`) never race another task: a 409 or 412 would mean a bug, and is counted
//! apart from errors all the same. Reads of one order pick one created at least a few
//! commands earlier; without a consistency token, a 404 there only means the projection
//! has not reached it yet, and is counted as "stale", not as an error.
//!
//! Projection lag is measured by one observer task beside the clients, so that no
//! client ever waits for a lag probe (a client that did would send fewer commands the
//! slower the projection, and the row would understate the command rate the store
//! takes). Every `lag_interval` the observer raises a flag; the next client to get a
//! command's answer takes the flag down and hands the command's consistency token over
//! through a one-place channel (a swap and a `try_send`: it does not wait). The observer
//! then sends `GET /api/v1/orders/order/{id}` with that `X-Consistency-Token` and
//! `X-Consistency-Timeout-Ms: 30000` on its own connection; the server answers once its
//! read models show that write. The time from the command's answer to that read's answer
//! is the lag sample. It includes one query round trip (see the query p50 beside it), so
//! it is an upper bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

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
    /// How often the lag observer takes a command's token to probe the projection lag
    /// (None: no observer, no lag samples).
    pub lag_interval: Option<Duration>,
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

/// Paces all tasks together: operation n starts no earlier than start + n / rate. The
/// schedule is open-loop: a slow answer does not move the later slots, so a task that
/// fell behind sends at once until it is back on time (bounded by the task count, one
/// request in flight per task).
#[derive(Debug)]
struct Pacer {
    start: Instant,
    rate: f64,
    issued: AtomicU64,
}

/// When operation `n` of a schedule at `rate` operations per second is due, counted from
/// the schedule's start.
fn slot_offset(n: u64, rate: f64) -> Duration {
    if rate > 0.0 && rate.is_finite() {
        Duration::try_from_secs_f64(n as f64 / rate).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

impl Pacer {
    async fn wait(&self) {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let at = self
            .start
            .checked_add(slot_offset(n, self.rate))
            .unwrap_or_else(|| self.start + Duration::from_secs(86_400));
        tokio::time::sleep_until(at.into()).await;
    }
}

/// A command's answer handed to the lag observer.
#[derive(Debug)]
struct LagSample {
    id: String,
    token: String,
    answered: Instant,
}

/// The hand-off from the clients to the lag observer. The observer raises `wanted`; the
/// next client with a command's answer takes it down and passes the answer through a
/// one-place channel. A client never waits here: a swap, and a `try_send` that cannot
/// find the place taken, since only the one client that took the flag down sends.
#[derive(Debug)]
struct LagSlot {
    wanted: AtomicBool,
    tx: mpsc::Sender<LagSample>,
}

impl LagSlot {
    fn new() -> (LagSlot, mpsc::Receiver<LagSample>) {
        let (tx, rx) = mpsc::channel(1);
        let slot = LagSlot {
            wanted: AtomicBool::new(false),
            tx,
        };
        (slot, rx)
    }

    /// The observer asks for the next command's answer.
    fn want(&self) {
        self.wanted.store(true, Ordering::Release);
    }

    /// A client offers its answer: handed over (true) only when the observer asked for
    /// one and no other client took this request. `sample` is built only then.
    fn offer(&self, sample: impl FnOnce() -> LagSample) -> bool {
        self.wanted.swap(false, Ordering::AcqRel) && self.tx.try_send(sample()).is_ok()
    }
}

/// The lag observer: every `interval` it asks the clients for one command's answer and
/// waits, on its own connection, until the read models cover that command's token.
/// Samples of commands answered outside the measured window are not recorded; failed
/// probes are errors either way.
async fn observe(
    slot: Arc<LagSlot>,
    mut rx: mpsc::Receiver<LagSample>,
    client: Client,
    base: String,
    interval: Duration,
    measure_from: Instant,
    end: Instant,
) -> LoadResult {
    let mut out = LoadResult::default();
    let mut next = Instant::now();
    loop {
        tokio::time::sleep_until(next.into()).await;
        if Instant::now() >= end {
            break;
        }
        slot.want();
        let sample = tokio::select! {
            s = rx.recv() => match s {
                Some(s) => s,
                None => break,
            },
            () = tokio::time::sleep_until(end.into()) => break,
        };
        next = sample.answered + interval;
        let req = client
            .get(format!("{base}/api/v1/orders/order/{}", sample.id))
            .header("x-consistency-token", &sample.token)
            .header("x-consistency-timeout-ms", "30000");
        match send(req, Op::Get, false).await {
            Outcome::Ok(_) => {
                if sample.answered >= measure_from && sample.answered < end {
                    out.lag.record(sample.answered.elapsed());
                }
            }
            Outcome::Error(e) => out.error(format!("lag probe: {e}")),
            Outcome::Conflict | Outcome::Stale => {
                out.error("lag probe: 404/409/412 after waiting for the token".into())
            }
        }
    }
    out
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
        lag: Option<Arc<LagSlot>>,
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
                        if let Some(slot) = &lag {
                            slot.offer(|| LagSample {
                                id: a.id,
                                token: a.token,
                                answered,
                            });
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

/// Waits until the read models cover every command sent so far: one create, then reads
/// of it with its consistency token until one is answered (each read waits up to 30 s in
/// the server; `limit` bounds the whole). A paced run that starts behind a backlog left
/// by the run before would measure that backlog's lag, not its own rate's.
pub async fn settle(base: &str, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = Client::builder().timeout(Duration::from_secs(60)).build()?;
    let (body, _) = create_body(&mut Rng::new(17));
    let req = client
        .post(format!("{base}/api/v1/orders/order"))
        .json(&body);
    let answer = match send(req, Op::Create, true).await {
        Outcome::Ok(Some(a)) => a,
        Outcome::Error(e) => anyhow::bail!("settling: {e}"),
        _ => anyhow::bail!("settling: the create was not answered with a token"),
    };
    loop {
        let req = client
            .get(format!("{base}/api/v1/orders/order/{}", answer.id))
            .header("x-consistency-token", &answer.token)
            .header("x-consistency-timeout-ms", "30000");
        match send(req, Op::Get, false).await {
            Outcome::Ok(_) => return Ok(started.elapsed()),
            _ if started.elapsed() < limit => {}
            Outcome::Error(e) => anyhow::bail!("settling: the read models did not catch up: {e}"),
            _ => anyhow::bail!("settling: the read models did not catch up"),
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
    let observer = match spec.lag_interval {
        Some(interval) => {
            let (slot, rx) = LagSlot::new();
            let slot = Arc::new(slot);
            let client = Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(60))
                .build()?;
            let task = tokio::spawn(observe(
                Arc::clone(&slot),
                rx,
                client,
                spec.base.clone(),
                interval,
                measure_from,
                end,
            ));
            Some((slot, task))
        }
        None => None,
    };
    let lag = observer.as_ref().map(|(slot, _)| Arc::clone(slot));
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
        };
        handles.push(tokio::spawn(task.run(
            Arc::clone(&spec),
            pacer.clone(),
            lag.clone(),
            measure_from,
            end,
        )));
    }
    let mut result = LoadResult::default();
    for h in handles {
        result.merge(h.await?);
    }
    if let Some((_, task)) = observer {
        result.merge(task.await?);
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

    #[test]
    fn the_schedule_spaces_operations_by_one_over_the_rate() {
        assert_eq!(slot_offset(0, 1000.0), Duration::ZERO);
        assert_eq!(slot_offset(1000, 1000.0), Duration::from_secs(1));
        assert_eq!(slot_offset(1500, 1000.0), Duration::from_millis(1500));
        assert_eq!(slot_offset(1, 0.5), Duration::from_secs(2));
        // Not a rate: no pacing rather than a panic or an endless wait.
        assert_eq!(slot_offset(5, 0.0), Duration::ZERO);
        assert_eq!(slot_offset(5, f64::NAN), Duration::ZERO);
    }

    fn sample(id: &str) -> LagSample {
        LagSample {
            id: id.into(),
            token: format!("token-{id}"),
            answered: Instant::now(),
        }
    }

    #[test]
    fn a_client_hands_over_an_answer_only_when_the_observer_asked() {
        let (slot, mut rx) = LagSlot::new();
        let mut built = 0;
        assert!(!slot.offer(|| {
            built += 1;
            sample("unasked")
        }));
        assert_eq!(built, 0, "nothing is built when nobody asked");
        assert!(rx.try_recv().is_err());

        slot.want();
        assert!(slot.offer(|| sample("first")));
        // One request, one answer: the next client's offer is declined without waiting.
        assert!(!slot.offer(|| sample("second")));
        let got = rx.try_recv().expect("the first answer");
        assert_eq!(got.id, "first");
        assert_eq!(got.token, "token-first");
        assert!(rx.try_recv().is_err());

        slot.want();
        assert!(slot.offer(|| sample("third")));
        assert_eq!(rx.try_recv().expect("the next answer").id, "third");
    }
}
