//! The physical floors each result is compared with, measured on the same machine in the
//! same run:
//!
//! - HTTP: a server (this binary, `serve-floor`, a separate process like ordo) whose
//!   POST /api/v1/orders/order parses the body with `CreateOrder::parse` and answers 201
//!   without storing anything, driven by the same client code at the same concurrency.
//! - fsync: one writer appending 256 bytes to a file in the data dir and calling
//!   fdatasync, in a loop: what one fsync per command would allow.
//! - Redis: EVALSHA of ordo's append script (`ordo_redis::APPEND_SCRIPT`, the very text)
//!   with the arguments ordo sends (8 field pairs per event, a new stream each time), from
//!   N tasks sharing one multiplexed connection (as ordo does), at full speed.
//! - PostgreSQL: ordo's single-statement append (`ordo_postgres::append_sql`, the very
//!   statement) in a tight loop on N connections, each with a
//!   new stream, in a scratch schema.
//!
//! Beside each backend floor, [`store_append`] measures ordo's own append through the
//! store crate (in this process, no HTTP, no projection) at the same concurrency: what
//! the store itself adds to the backend's append.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ordo_es::{Aggregate, DomainEvent, Payload, partition_of};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_postgres::types::Json;
use uuid::Uuid;

use crate::mix::Rng;
use crate::stats::Samples;

/// Throughput and latency of a floor loop.
#[derive(Debug, Default)]
pub struct FloorResult {
    pub ops: u64,
    pub elapsed: Duration,
    pub latency: Samples,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl FloorResult {
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, other: FloorResult) {
        self.ops += other.ops;
        self.latency.merge(other.latency);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP floor server.

async fn parse_only(headers: HeaderMap, body: Bytes) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    if ordo_domain::CreateOrder::parse(&value).is_err() {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    let id = Uuid::now_v7().to_string();
    let answer = serde_json::json!({"orderId": id, "version": 1, "consistencyToken": "0.0.0"});
    let mut resp = (StatusCode::CREATED, axum::Json(answer)).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/orders/order/{id}")) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::ETAG, HeaderValue::from_static("\"1\""));
    h.insert("x-consistency-token", HeaderValue::from_static("0.0.0"));
    resp
}

/// Serves the parse-only endpoint until SIGTERM or SIGINT.
pub async fn serve_floor(listen: &str) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/api/v1/orders/order", post(parse_only))
        .route("/ready", get(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// fsync floor.

/// One writer: append 256 bytes and fdatasync, for `duration` or 1,000,000 rounds.
pub fn fsync_floor(dir: &Path, duration: Duration) -> anyhow::Result<FloorResult> {
    let path = dir.join("fsync-floor.bin");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    let block = [0x5au8; 256];
    let mut out = FloorResult::default();
    let start = Instant::now();
    while start.elapsed() < duration && out.ops < 1_000_000 {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        out.latency.record(t.elapsed());
        out.ops += 1;
    }
    out.elapsed = start.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Realistic events, as ordo's command side builds them.

/// An OrderCreated event for a fresh order, encoded as ordo encodes it: (event type,
/// schema version, data).
pub fn created_event(rng: &mut Rng) -> (String, u32, Payload) {
    let (body, _) = crate::driver::create_body(rng);
    let command = ordo_domain::CreateOrder::parse(&body)
        .unwrap_or_else(|_| unreachable!("create_body makes valid bodies (tested)"));
    let events = ordo_domain::Order::default()
        .handle(ordo_domain::OrderCommand::Create(command))
        .unwrap_or_default();
    let e = &events[0];
    (e.event_type().to_string(), e.schema_version(), e.encode())
}

/// Pre-encoded event payloads, so the floor loops spend no client CPU on JSON.
fn payloads(n: usize) -> Vec<(String, u32, Vec<u8>)> {
    let mut rng = Rng::new(99);
    (0..n)
        .map(|_| {
            let (t, v, data) = created_event(&mut rng);
            (t, v, data.as_str().as_bytes().to_vec())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Redis floor.

/// ordo's append script, from the store itself, so the floor runs exactly the
/// server-side work of an ordo append.
pub const REDIS_APPEND_SCRIPT: &str = ordo_redis::APPEND_SCRIPT;

fn seq_key(prefix: &str, partition: u32) -> String {
    format!("{prefix}:{{{prefix}:p{partition}}}:seq")
}

/// Runs `concurrency` tasks for `duration`, each calling `op(task, n)` for its n-th
/// operation, one at a time: `Ok` carries the operation's latency (timed by `op`, around
/// the backend call only), `Err` a failure.
async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<FloorResult>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Duration, String>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let end = start + duration;
    let mut handles = Vec::new();
    for task in 0..concurrency {
        let op = Arc::clone(&op);
        handles.push(tokio::spawn(async move {
            let mut out = FloorResult::default();
            let mut n = 0;
            while Instant::now() < end && out.ops < 10_000_000 {
                match op(task, n).await {
                    Ok(latency) => {
                        out.latency.record(latency);
                        out.ops += 1;
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(e);
                    }
                }
                n += 1;
            }
            out
        }));
    }
    let mut result = FloorResult::default();
    for h in handles {
        result.merge(h.await?);
    }
    result.elapsed = start.elapsed();
    Ok(result)
}

/// ordo's own append through the store crate, in this process, without HTTP: N tasks
/// each appending one OrderCreated (as the command side decides it) to a new stream with
/// `NoStream`, as `OrderService` creates an order. The figure the backend floors are for:
/// what the store adds to the backend's own append.
pub async fn store_append(
    store: Arc<dyn ordo_es::EventStore>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<FloorResult> {
    let mut rng = Rng::new(11);
    let created: Arc<Vec<ordo_domain::OrderEvent>> = Arc::new(
        (0..1000)
            .filter_map(|_| crate::replay::order_history(&mut rng).into_iter().next())
            .collect(),
    );
    closed_loop(concurrency, duration, move |task, n| {
        let store = Arc::clone(&store);
        let event = crate::replay::new_event(&created[(task + n * concurrency) % created.len()]);
        async move {
            let stream = ordo_es::StreamId::new(Uuid::now_v7().to_string());
            let t0 = Instant::now();
            store
                .append(&stream, ordo_es::ExpectedVersion::NoStream, vec![event])
                .await
                .map(|_| t0.elapsed())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// EVALSHA of the append script at full speed from `concurrency` tasks over one
/// multiplexed connection (a cluster connection for `redis+cluster://` seeds).
pub async fn redis_floor(
    url: &str,
    cluster: bool,
    prefix: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<FloorResult> {
    let conn: RedisConn = if cluster {
        let seeds: Vec<String> = url
            .trim_start_matches("redis+cluster://")
            .split(',')
            .map(|n| format!("redis://{n}"))
            .collect();
        let client = redis::cluster::ClusterClient::builder(seeds).build()?;
        RedisConn::Cluster(client.get_async_connection().await?)
    } else {
        let client = redis::Client::open(url)?;
        RedisConn::Single(client.get_multiplexed_async_connection().await?)
    };
    let payloads = Arc::new(payloads(1000));
    let prefix = Arc::new(prefix.to_string());
    let script = Arc::new(redis::Script::new(REDIS_APPEND_SCRIPT));
    closed_loop(concurrency, duration, move |task, n| {
        let mut conn = conn.clone();
        let prefix = Arc::clone(&prefix);
        let script = Arc::clone(&script);
        let payloads = Arc::clone(&payloads);
        async move {
            let (event_type, schema, data) = &payloads[(task + n * concurrency) % payloads.len()];
            let stream = Uuid::now_v7().to_string();
            let partition = partition_of(&stream, 16);
            let occurred = OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default();
            let mut inv = script.prepare_invoke();
            inv.key(ordo_redis::stream_key(&prefix, 16, &stream))
                .key(ordo_redis::log_key(&prefix, partition))
                .key(seq_key(&prefix, partition))
                .arg("0")
                .arg(16)
                .arg("event_id")
                .arg(Uuid::now_v7().hyphenated().to_string())
                .arg("stream_id")
                .arg(&stream)
                .arg("aggregate_type")
                .arg("Order")
                .arg("event_type")
                .arg(event_type.as_str())
                .arg("schema_version")
                .arg(schema.to_string())
                .arg("occurred_at")
                .arg(occurred)
                .arg("data")
                .arg(&data[..])
                .arg("metadata")
                .arg("{}");
            let t0 = Instant::now();
            let r: redis::RedisResult<Vec<i64>> = inv.invoke_async(&mut conn).await;
            match r {
                Ok(v) if v.first() == Some(&1) => Ok(t0.elapsed()),
                Ok(v) => Err(format!("script answered {v:?}")),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

#[derive(Clone)]
enum RedisConn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Deletes every key starting with `prefix:` on each node (SCAN + UNLINK, one key per
/// command so that no command spans slots on a cluster).
pub async fn redis_cleanup(nodes: &[String], prefix: &str) -> anyhow::Result<u64> {
    let mut deleted = 0;
    for node in nodes {
        let client = redis::Client::open(format!("redis://{node}"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cursor: u64 = 0;
        // Bounded: at most 100,000 SCAN rounds per node.
        for _ in 0..100_000 {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("UNLINK").arg(k).ignore();
                }
                pipe.query_async::<()>(&mut conn).await?;
                deleted += keys.len() as u64;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok(deleted)
}

// ---------------------------------------------------------------------------------------
// PostgreSQL floor.

/// ordo's append statement, from the store itself.
fn pg_append_sql(s: &str) -> String {
    ordo_postgres::append_sql(s)
}

/// The append statement on `concurrency` connections at full speed, into the events
/// table of `schema` (created beforehand by `PgEventStore::connect`, i.e. by ordo's own
/// migration, so the table and its indexes are the real ones).
pub async fn pg_floor(
    base_url: &str,
    schema: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<FloorResult> {
    let sep = if base_url.contains('?') { '&' } else { '?' };
    let store = ordo_postgres::PgEventStore::connect(&format!("{base_url}{sep}schema={schema}"))
        .await
        .context("create the floor's scratch schema with ordo's migration")?;
    let partitions = ordo_es::EventStore::partitions(&store);
    drop(store);
    let mut rng = Rng::new(99);
    let payloads = Arc::new(
        (0..1000)
            .map(|_| created_event(&mut rng))
            .collect::<Vec<_>>(),
    );
    let sql = pg_append_sql(&format!("\"{schema}\""));
    // One connection per task, each with the statement prepared, before the clock starts.
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, connection) = tokio_postgres::connect(base_url, tokio_postgres::NoTls)
            .await
            .context("connect to PostgreSQL")?;
        tokio::spawn(connection);
        let statement = client.prepare(&sql).await.context("prepare the append")?;
        clients.push((client, statement));
    }
    let clients = Arc::new(clients);
    closed_loop(concurrency, duration, move |task, n| {
        let clients = Arc::clone(&clients);
        let payloads = Arc::clone(&payloads);
        async move {
            let (client, statement) = &clients[task];
            let (event_type, schema_version, data) =
                &payloads[(task + n * concurrency) % payloads.len()];
            let stream = Uuid::now_v7().to_string();
            let expected: Option<i64> = Some(0);
            let ids = vec![Uuid::now_v7()];
            let agg = vec!["Order".to_string()];
            let types = vec![event_type.clone()];
            let versions = vec![*schema_version as i32];
            let at = vec![OffsetDateTime::now_utc()];
            let datas = vec![Json(data.clone())];
            let metas = vec![Json(ordo_es::Metadata::default())];
            let partition = ordo_es::partition_of(&stream, partitions) as i32;
            let t0 = Instant::now();
            let r = client
                .query(
                    statement,
                    &[
                        &stream, &expected, &ids, &agg, &types, &versions, &at, &datas, &metas,
                        &partition,
                    ],
                )
                .await;
            match r {
                Ok(rows) if rows.len() == 1 => Ok(t0.elapsed()),
                Ok(rows) => Err(format!("append returned {} rows", rows.len())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

/// Drops every schema whose name starts with `prefix` (the run's event store, read
/// stores and their generations, the floor's scratch schema).
pub async fn pg_cleanup(base_url: &str, prefix: &str) -> anyhow::Result<usize> {
    let (client, connection) = tokio_postgres::connect(base_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
            &[&prefix],
        )
        .await?;
    for row in &rows {
        let name: String = row.get(0);
        client
            .batch_execute(&format!("DROP SCHEMA \"{name}\" CASCADE"))
            .await?;
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_events_are_order_created_of_the_current_version() {
        let mut rng = Rng::new(1);
        let (t, v, data) = created_event(&mut rng);
        assert_eq!(t, "OrderCreated");
        assert_eq!(v, ordo_domain::OrderEvent::CREATED_VERSION);
        assert!(data.to_value().expect("JSON")["totalAmount"].is_number());
    }

    #[test]
    fn seq_key_matches_the_layout_in_the_readme() {
        assert_eq!(seq_key("ordo", 5), "ordo:{ordo:p5}:seq");
        assert_eq!(ordo_redis::log_key("ordo", 5), "ordo:{ordo:p5}:log");
    }
}
