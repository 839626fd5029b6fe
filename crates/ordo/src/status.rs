//! `ordo status`: the stores, the projections and any rebuild, read from the stores
//! directly, so it answers whether or not a server runs; with the live state of the
//! projections merged in from a server that does.
//!
//! It changes nothing: no store is created (not even the data dir, schema or key
//! prefix) or migrated, nothing is written to one, and the only lock it touches is the
//! embedded read models' process lock, tried and let go at once to see whether a
//! process holds it.
//!
//! The JSON form (`--json`) is documented in docs/cli.md; its keys are stable.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use ordo_app::OrderProjection;
use ordo_domain::{ParkedEvent, ReadStoreError, ReadStoreInspector};
use ordo_es::{Checkpoint, EventStore, Position, StoreError};

use crate::config::{Secret, StatusArgs, redact};
use crate::{is_postgres, sqlite_path};

/// How long one store call may take before the store counts as unreachable.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to answer one request.
const SERVER_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything `ordo status` reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// True when every store answered, and the server too when it was named
    /// (`--server`) or given a token.
    pub ok: bool,
    /// What kept `ok` false, one sentence each.
    pub problems: Vec<String>,
    pub event_store: EventStoreReport,
    pub read_store: ReadStoreReport,
    /// One entry per projection and read-store generation, the active generation first.
    pub projections: Vec<ProjectionReport>,
    /// Where the read models are in PostgreSQL and projectors divided the projection into
    /// shards: each shard of the active generation, with its holder, position and
    /// backlog; `null` otherwise.
    pub shards: Option<Vec<ShardStatus>>,
    pub server: ServerReport,
}

/// One shard of the projection, as the stores say.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    pub shard: u32,
    /// The projector holding the lease; `null` when nobody does (released, never taken).
    pub owner: Option<String>,
    pub token: Option<u64>,
    /// When the lease lapses unless renewed (the database's clock).
    #[serde(with = "time::serde::rfc3339::option")]
    pub lease_expires_at: Option<OffsetDateTime>,
    /// The position of the last event applied in the shard's partition.
    pub position: Option<String>,
    /// Events of the partition not applied yet; `null` when the event store did not
    /// answer.
    pub events_behind: Option<u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventStoreReport {
    /// `sqlite`, `postgres`, `redis` or `redis-cluster`; `null` for a URL ordo does not
    /// support.
    pub kind: Option<&'static str>,
    /// The URL with any password replaced by `***`.
    pub url: String,
    pub reachable: bool,
    pub error: Option<String>,
    /// Partitions of the global log.
    pub partitions: Option<u32>,
    /// Events stored (the log's size; an estimate on stores where counting is costly).
    pub events: Option<u64>,
    /// Settings that risk acknowledged writes (Redis persistence).
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadStoreReport {
    /// `sqlite` or `postgres`; `null` for a URL ordo does not support.
    pub kind: Option<&'static str>,
    pub url: String,
    pub reachable: bool,
    pub error: Option<String>,
    /// The generation queries are answered from.
    pub active_generation: Option<String>,
    /// Generations that are not active: while a rebuild runs, the one being loaded (or,
    /// for a few seconds after the switch, the one it replaced); otherwise one left by an
    /// interrupted rebuild (dropped at the next start).
    pub other_generations: Vec<String>,
    /// True while a rebuild (or the bulk load a service starts with) runs, in any process.
    pub rebuild_running: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionReport {
    pub name: String,
    pub generation: String,
    /// True for the active generation's projection.
    pub active: bool,
    /// The stored checkpoint (opaque), `null` when it never committed one.
    pub checkpoint: Option<String>,
    /// The checkpoint as one number (the sum of its partitions' cursors): it grows as the
    /// projection moves; on PostgreSQL it is a transaction id, not a count.
    pub position: Option<u64>,
    /// Events stored after the checkpoint.
    pub events_behind: Option<u64>,
    /// How old the first event after the checkpoint is; 0 when caught up.
    pub estimated_lag_seconds: Option<f64>,
    /// From the stores: `caughtUp`, `behind`, `notStarted` (never committed, events
    /// waiting), `logWentBackwards` (the event log's head is below the checkpoint: it
    /// lost events the read models hold) or `unknown` (a store did not answer).
    pub state: &'static str,
    /// Why the projection's stored state could not be read.
    pub error: Option<String>,
    pub parked_count: Option<usize>,
    /// The events it parked, oldest first.
    pub parked: Vec<ParkedEvent>,
    /// The live state from the server, for the generation it serves; `null` without one.
    pub live: Option<LiveState>,
}

/// What a running server says about its projection.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveState {
    /// `starting`, `catching-up`, `running`, `failing`, `halted` or `stopped`;
    /// `following` from a server of role `api`, which runs no projection.
    pub state: String,
    pub last_error: Option<String>,
    pub events_applied: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub position: Option<u64>,
    /// The generation the server loads in bulk at start, if it does.
    pub loading_generation: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerReport {
    pub url: String,
    /// True when the URL was given (`--server`), false when it was derived from
    /// `--listen`: only a named server that does not answer is a problem.
    pub explicit: bool,
    pub answered: bool,
    /// From GET /ready.
    pub ready: Option<bool>,
    /// Why it is not ready, as it says.
    pub not_ready_reason: Option<String>,
    /// What went wrong asking it.
    pub error: Option<String>,
}

/// Runs `ordo status`: prints the report (a table, or JSON with `--json`) and fails,
/// after printing, when something did not answer.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let report = gather(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    if report.ok {
        Ok(())
    } else {
        bail!("{}", report.problems.join("; "))
    }
}

/// Reads the stores and asks the server.
pub async fn gather(args: &StatusArgs) -> anyhow::Result<Report> {
    let server_url = server_url(args)?;
    let mut problems = Vec::new();

    let events_url = args.stores.event_store_url();
    let mut event_store = EventStoreReport {
        kind: event_store_kind(&events_url),
        url: redact(&events_url),
        reachable: false,
        error: None,
        partitions: None,
        events: None,
        warnings: Vec::new(),
    };
    let events = match within(open_events(&events_url)).await {
        Ok((store, warnings)) => {
            event_store.warnings = warnings;
            let origin = Checkpoint::origin(store.partitions());
            match within(async { store.count_after(&origin).await.map_err(describe) }).await {
                Ok(n) => {
                    event_store.reachable = true;
                    event_store.partitions = Some(store.partitions());
                    event_store.events = Some(n);
                    Some(store)
                }
                Err(e) => {
                    event_store.error = Some(e);
                    None
                }
            }
        }
        Err(e) => {
            event_store.error = Some(e);
            None
        }
    };
    if let Some(e) = &event_store.error {
        problems.push(format!("event store: {e}"));
    }

    let reads_url = args.stores.read_store_url();
    let mut read_store = ReadStoreReport {
        kind: read_store_kind(&reads_url),
        url: redact(&reads_url),
        reachable: false,
        error: None,
        active_generation: None,
        other_generations: Vec::new(),
        rebuild_running: None,
    };
    let mut projections = Vec::new();
    match within(open_reads(&reads_url)).await {
        Ok(reads) => match within(generations(reads.as_ref())).await {
            Ok((active, others, rebuilding)) => {
                read_store.reachable = true;
                read_store.active_generation = Some(active.clone());
                read_store.other_generations = others.clone();
                read_store.rebuild_running = Some(rebuilding);
                for (generation, is_active) in
                    std::iter::once((active, true)).chain(others.into_iter().map(|g| (g, false)))
                {
                    let projection =
                        projection(reads.as_ref(), events.as_deref(), generation, is_active).await;
                    if let Some(e) = &projection.error {
                        problems.push(format!(
                            "projection {} in generation {}: {e}",
                            projection.name, projection.generation
                        ));
                    }
                    projections.push(projection);
                }
            }
            Err(e) => read_store.error = Some(e),
        },
        Err(e) => read_store.error = Some(e),
    }
    if let Some(e) = &read_store.error {
        problems.push(format!("read store: {e}"));
    }

    let shards = match (&read_store.active_generation, is_postgres(&reads_url)) {
        (Some(active), true) => match within(shards(&reads_url, active, events.as_deref())).await {
            Ok(shards) => shards,
            Err(e) => {
                problems.push(format!("shard leases: {e}"));
                None
            }
        },
        _ => None,
    };

    let token = args.admin_token.as_ref();
    let (server, live) = ask_server(&server_url, args.server.is_some(), token).await;
    if server.explicit && !server.answered {
        problems.push(format!("no server answered at {}", server.url));
    }
    // Another service on the default address is only reported; a server asked for by
    // name, or with a token, must answer as an ordo server.
    if let (true, Some(e)) = (server.answered, &server.error)
        && (server.explicit || token.is_some())
    {
        problems.push(format!("server: {e}"));
    }
    if let Some(live) = live {
        merge_live(&mut projections, live);
    }
    Ok(Report {
        ok: problems.is_empty(),
        problems,
        event_store,
        read_store,
        projections,
        shards,
        server,
    })
}

/// Each shard's lease and progress in the active generation `active` of the PostgreSQL
/// read store at `url`; `None` when no projector ever made the lease tables there.
async fn shards(
    url: &str,
    active: &str,
    events: Option<&dyn EventStore>,
) -> Result<Option<Vec<ShardStatus>>, String> {
    let Some(leases) = ordo_postgres::PgLeases::connect_existing(url)
        .await
        .map_err(|e| describe_chain(&e))?
    else {
        return Ok(None);
    };
    let leases = ordo_es::LeaseStore::leases(&leases, OrderProjection::NAME)
        .await
        .map_err(|e| describe_chain(&e))?;
    let reads = open_reads(url).await?;
    let stored = reads
        .checkpoint(active, OrderProjection::NAME)
        .await
        .map_err(describe_read)?;
    let partitions = events
        .map(EventStore::partitions)
        .or_else(|| stored.as_ref().map(Checkpoint::partitions))
        .unwrap_or(1);
    let out =
        ordo_app::read_side::shard_reports(events, &leases, stored.as_ref(), partitions, None)
            .await
            .into_iter()
            .map(|s| ShardStatus {
                shard: s.shard,
                owner: s.owner,
                token: s.token,
                lease_expires_at: s.lease_expires_at,
                position: s.position,
                events_behind: s.events_behind,
            })
            .collect();
    Ok(Some(out))
}

/// An error and its causes, as one line.
fn describe_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs `call` with the store time limit, turning a timeout into an error.
async fn within<T>(call: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    match tokio::time::timeout(STORE_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "did not answer within {} s",
            STORE_TIMEOUT.as_secs()
        )),
    }
}

fn describe(e: StoreError) -> String {
    match e {
        StoreError::Invalid(message) => message,
        other => format!("{:#}", anyhow::Error::new(other)),
    }
}

fn describe_read(e: ReadStoreError) -> String {
    match e {
        ReadStoreError::Other(source) => source.to_string(),
        other => format!("{:#}", anyhow::Error::new(other)),
    }
}

fn event_store_kind(url: &str) -> Option<&'static str> {
    if sqlite_path(url).is_some() {
        Some("sqlite")
    } else if is_postgres(url) {
        Some("postgres")
    } else if url.starts_with("redis+cluster://") {
        Some("redis-cluster")
    } else if url.starts_with("redis://") {
        Some("redis")
    } else {
        None
    }
}

fn read_store_kind(url: &str) -> Option<&'static str> {
    if sqlite_path(url).is_some() {
        Some("sqlite")
    } else if is_postgres(url) {
        Some("postgres")
    } else {
        None
    }
}

/// The directory an embedded store's file would be in, when it does not exist.
fn missing_dir(path: &Path) -> Option<&Path> {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty() && !dir.is_dir())
}

/// The event store, opened without creating or migrating anything, and its warnings.
async fn open_events(url: &str) -> Result<(Arc<dyn EventStore>, Vec<String>), String> {
    if let Some(path) = sqlite_path(url) {
        let path = Path::new(path).to_path_buf();
        if let Some(dir) = missing_dir(&path) {
            return Err(format!(
                "no event store at {}: {} does not exist",
                path.display(),
                dir.display()
            ));
        }
        let store = tokio::task::spawn_blocking(move || {
            ordo_sqlite::SqliteEventStore::open_existing(&path)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(describe)?;
        return Ok((Arc::new(store), Vec::new()));
    }
    if is_postgres(url) {
        let store = ordo_postgres::PgEventStore::connect_existing(url)
            .await
            .map_err(describe)?;
        return Ok((Arc::new(store), Vec::new()));
    }
    if url.starts_with("redis://") || url.starts_with("redis+cluster://") {
        let store = ordo_redis::RedisEventStore::connect_existing(url)
            .await
            .map_err(describe)?;
        let warnings = store.durability_warnings().await;
        return Ok((Arc::new(store), warnings));
    }
    Err(format!(
        "unsupported event store URL {}: use sqlite://PATH, redis://HOST:PORT, redis+cluster://HOST:PORT[,HOST:PORT...] or postgres://...",
        redact(url)
    ))
}

/// The read store's generations, looked at without creating or migrating anything.
async fn open_reads(url: &str) -> Result<Arc<dyn ReadStoreInspector>, String> {
    if let Some(path) = sqlite_path(url) {
        let path = Path::new(path);
        if let Some(dir) = missing_dir(path) {
            return Err(format!(
                "no read store at {}: {} does not exist",
                path.display(),
                dir.display()
            ));
        }
        return Ok(Arc::new(ordo_sqlite::SqliteReadStores::new(path)));
    }
    if is_postgres(url) {
        let stores = ordo_postgres::PgReadStores::connect_existing(url)
            .await
            .map_err(describe_read)?;
        return Ok(Arc::new(stores));
    }
    if url.starts_with("redis://") || url.starts_with("redis+cluster://") {
        return Err(
            "Redis holds events only: put the read models in sqlite://PATH or postgres://..."
                .into(),
        );
    }
    Err(format!(
        "unsupported read store URL {}: use sqlite://PATH or postgres://...",
        redact(url)
    ))
}

/// The active generation, the others, and whether a rebuild runs.
async fn generations(
    reads: &dyn ReadStoreInspector,
) -> Result<(String, Vec<String>, bool), String> {
    let active = reads.active_generation().await.map_err(describe_read)?;
    let others = reads
        .generation_ids()
        .await
        .map_err(describe_read)?
        .into_iter()
        .filter(|id| *id != active)
        .collect();
    let rebuilding = reads.rebuild_running().await.map_err(describe_read)?;
    Ok((active, others, rebuilding))
}

/// What the stores say about the projection in one generation.
async fn projection(
    reads: &dyn ReadStoreInspector,
    events: Option<&dyn EventStore>,
    generation: String,
    active: bool,
) -> ProjectionReport {
    let name = OrderProjection::NAME;
    let mut report = ProjectionReport {
        name: name.to_string(),
        generation,
        active,
        checkpoint: None,
        position: None,
        events_behind: None,
        estimated_lag_seconds: None,
        state: "unknown",
        error: None,
        parked_count: None,
        parked: Vec::new(),
        live: None,
    };
    let stored = within(async {
        let checkpoint = reads
            .checkpoint(&report.generation, name)
            .await
            .map_err(describe_read)?;
        let parked = reads
            .parked(&report.generation, name)
            .await
            .map_err(describe_read)?;
        Ok((checkpoint, parked))
    })
    .await;
    let checkpoint = match stored {
        Ok((checkpoint, parked)) => {
            report.checkpoint = checkpoint.as_ref().map(Checkpoint::encode);
            report.position = checkpoint
                .as_ref()
                .map(|c| c.cursors().iter().map(|c| c.major).sum());
            report.parked_count = Some(parked.len());
            report.parked = parked;
            checkpoint
        }
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    let Some(events) = events else {
        return report;
    };
    let never = checkpoint.is_none();
    let from = checkpoint.unwrap_or_else(|| Checkpoint::origin(events.partitions()));
    if !never {
        match within(async { events.head().await.map_err(describe) }).await {
            Ok(head) => {
                if let Some(problem) = log_went_backwards(&head, &from) {
                    report.state = "logWentBackwards";
                    report.error = Some(problem);
                    return report;
                }
            }
            // The event store's own failure is reported once, as the event store's.
            Err(e) => tracing::debug!(error = %e, "cannot read the head of the event log"),
        }
    }
    let behind = within(async {
        let behind = events.count_after(&from).await.map_err(describe)?;
        if behind == 0 {
            return Ok((0, 0.0));
        }
        let first = events.read_all(&from, 1).await.map_err(describe)?;
        let lag = first.first().map_or(0.0, |e| {
            (OffsetDateTime::now_utc() - e.occurred_at)
                .as_seconds_f64()
                .max(0.0)
        });
        Ok((behind, lag))
    })
    .await;
    match behind {
        Ok((behind, lag)) => {
            report.events_behind = Some(behind);
            report.estimated_lag_seconds = Some(lag);
            report.state = match (behind, never) {
                (0, _) => "caughtUp",
                (_, true) => "notStarted",
                (_, false) => "behind",
            };
        }
        // The event store's own failure is reported once, as the event store's.
        Err(e) => tracing::debug!(error = %e, "cannot count the events after the checkpoint"),
    }
    report
}

/// When the event log's head is below the read models' checkpoint in a partition (a
/// failover that lost writes, a restore to an older copy), what to tell the operator.
/// From the stores alone only this is seen; a running server also notices positions
/// handed out again (its live state says so).
fn log_went_backwards(head: &Checkpoint, checkpoint: &Checkpoint) -> Option<String> {
    (0..checkpoint.partitions()).find_map(|partition| {
        let (end, reached) = (head.cursor(partition), checkpoint.cursor(partition));
        (end < reached).then(|| {
            format!(
                "the event log of partition {partition} went backwards: it ends at {}, but the \
                 read models hold events up to {}; run `ordo replay` to rebuild them from the log",
                Position {
                    partition,
                    cursor: end
                },
                Position {
                    partition,
                    cursor: reached
                },
            )
        })
    })
}

/// The server to ask: `--server`, else `http://<--listen>` (an unspecified address asked
/// on the loopback interface).
fn server_url(args: &StatusArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.server {
        let url = url.trim_end_matches('/');
        if !url.starts_with("http://") {
            bail!("--server {url:?}: give an http:// URL, such as http://127.0.0.1:3000");
        }
        return Ok(url.to_string());
    }
    let host = match args.listen.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        Ok(SocketAddr::V6(a)) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        Ok(a) => a.to_string(),
        Err(_) => args.listen.clone(),
    };
    Ok(format!("http://{host}"))
}

/// Asks the server for readiness and, with the admin token, its projections.
async fn ask_server(
    url: &str,
    explicit: bool,
    token: Option<&Secret>,
) -> (ServerReport, Option<Value>) {
    let mut report = ServerReport {
        url: url.to_string(),
        explicit,
        answered: false,
        ready: None,
        not_ready_reason: None,
        error: None,
    };
    let client = match reqwest::Client::builder()
        .timeout(SERVER_TIMEOUT)
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            report.error = Some(format!("cannot make an HTTP client: {e}"));
            return (report, None);
        }
    };
    let ready = match client.get(format!("{url}/ready")).send().await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(error = %e, "no server answered");
            report.error = Some(format!("no server answered at {url}"));
            return (report, None);
        }
    };
    report.answered = true;
    let status = ready.status();
    let body: Value = ready.json().await.unwrap_or(Value::Null);
    match status.as_u16() {
        200 => report.ready = Some(true),
        503 => {
            report.ready = Some(false);
            report.not_ready_reason = body["detail"].as_str().map(str::to_string);
        }
        other => {
            report.error = Some(format!(
                "{url}/ready answered {other}: is this an ordo server?"
            ));
            return (report, None);
        }
    }
    let Some(token) = token else {
        return (report, None);
    };
    let answer = client
        .get(format!("{url}/api/v1/admin/projections"))
        .bearer_auth(token.expose())
        .send()
        .await;
    let response = match answer {
        Ok(response) => response,
        Err(e) => {
            report.error = Some(format!("the projections request failed: {e}"));
            return (report, None);
        }
    };
    match response.status().as_u16() {
        200 => match response.json::<Value>().await {
            Ok(body) => (report, Some(body)),
            Err(e) => {
                report.error = Some(format!("unreadable projections answer: {e}"));
                (report, None)
            }
        },
        401 => {
            report.error = Some("the server refused the admin token".into());
            (report, None)
        }
        403 => {
            report.error =
                Some("the server has no admin token configured (ORDO_ADMIN_TOKEN)".into());
            (report, None)
        }
        404 => {
            report.error = Some(
                "the server serves no admin endpoints (a projector: ordo serve --role projector); its /ready and /metrics report its projection".into(),
            );
            (report, None)
        }
        other => {
            report.error = Some(format!("the projections request answered {other}"));
            (report, None)
        }
    }
}

/// Attaches the server's live state to the projection of the generation it serves.
fn merge_live(projections: &mut [ProjectionReport], body: Value) {
    let Some(list) = body["projections"].as_array() else {
        return;
    };
    for live in list {
        let (Some(name), Some(generation)) = (live["name"].as_str(), live["generation"].as_str())
        else {
            continue;
        };
        let Some(target) = projections
            .iter_mut()
            .find(|p| p.name == name && p.generation == generation)
        else {
            tracing::warn!(
                generation,
                "the server serves a read-store generation these stores do not have: it may run on other stores"
            );
            continue;
        };
        target.live = Some(LiveState {
            state: live["state"].as_str().unwrap_or("unknown").to_string(),
            last_error: live["lastError"].as_str().map(str::to_string),
            events_applied: live["eventsApplied"].as_u64(),
            lag_seconds: live["lagSeconds"].as_f64(),
            position: live["position"].as_u64(),
            loading_generation: live["loadingGeneration"].as_str().map(str::to_string),
        });
    }
}

/// The report as text for people.
pub fn table(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let events = &report.event_store;
    let events_state = match (&events.error, events.events) {
        (Some(e), _) => format!("NOT REACHABLE: {e}"),
        (None, Some(n)) => format!(
            "reachable: {n} events in {} partition(s)",
            events.partitions.unwrap_or(1)
        ),
        (None, None) => "reachable".into(),
    };
    let reads = &report.read_store;
    let reads_state = match (&reads.error, &reads.active_generation) {
        (Some(e), _) => format!("NOT REACHABLE: {e}"),
        (None, Some(active)) => format!("reachable: active generation {active}"),
        (None, None) => "reachable".into(),
    };
    let none = Vec::new();
    for (label, kind, url, state, warnings) in [
        (
            "event store",
            events.kind,
            &events.url,
            events_state,
            &events.warnings,
        ),
        ("read store ", reads.kind, &reads.url, reads_state, &none),
    ] {
        let _ = writeln!(out, "{label}  {} {url}", kind.unwrap_or("unsupported"));
        let _ = writeln!(out, "             {state}");
        for warning in warnings {
            let _ = writeln!(out, "             warning: {warning}");
        }
    }
    let rebuild = match (reads.rebuild_running, reads.other_generations.is_empty()) {
        (Some(true), true) => "running (the rebuild lock is held: a rebuild, a start-up bulk load, or the clean-up in the seconds after a switch)".into(),
        (Some(true), false) => format!(
            "running; beside the active generation: {} (being loaded, or the one a switch just replaced)",
            reads.other_generations.join(", ")
        ),
        (Some(false), true) => "none running".into(),
        (Some(false), false) => format!(
            "none running; {} left by an interrupted rebuild (dropped at the next start)",
            reads.other_generations.join(", ")
        ),
        (None, _) => "unknown".into(),
    };
    let _ = writeln!(out, "rebuild      {rebuild}");

    let dash = || "-".to_string();
    let rows: Vec<[String; 7]> = report
        .projections
        .iter()
        .map(|p| {
            let role = match (p.active, reads.rebuild_running) {
                (true, _) => "active",
                (false, Some(true)) => "other",
                (false, _) => "leftover",
            };
            let generation = format!("{} ({role})", p.generation);
            [
                p.name.clone(),
                generation,
                p.position.map_or_else(dash, |n| n.to_string()),
                p.events_behind.map_or_else(dash, |n| n.to_string()),
                p.estimated_lag_seconds
                    .map_or_else(dash, |s| format!("{s:.1} s")),
                p.parked_count.map_or_else(dash, |n| n.to_string()),
                projection_state(p),
            ]
        })
        .collect();
    if !rows.is_empty() {
        let header = [
            "PROJECTION",
            "GENERATION",
            "POSITION",
            "BEHIND",
            "LAG",
            "PARKED",
            "STATE",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let _ = writeln!(out);
        let mut line = |cells: [&str; 7]| {
            let mut text = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                match i {
                    0 | 1 => {
                        let _ = write!(text, "{cell:<w$}  ");
                    }
                    6 => text.push_str(cell),
                    _ => {
                        let _ = write!(text, "{cell:>w$}  ");
                    }
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(header);
        for row in &rows {
            line(row.each_ref().map(String::as_str));
        }
    }

    if let Some(shards) = &report.shards {
        let dash = || "-".to_string();
        let rows: Vec<[String; 5]> = shards
            .iter()
            .map(|s| {
                [
                    s.shard.to_string(),
                    s.owner.clone().unwrap_or_else(|| "(none)".into()),
                    s.position.clone().unwrap_or_else(dash),
                    s.events_behind.map_or_else(dash, |n| n.to_string()),
                    s.lease_expires_at
                        .and_then(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .unwrap_or_else(dash),
                ]
            })
            .collect();
        let header = ["SHARD", "OWNER", "POSITION", "BEHIND", "LEASE EXPIRES"];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let _ = writeln!(out);
        let mut line = |cells: [&str; 5]| {
            let mut text = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                match i {
                    0 | 3 => {
                        let _ = write!(text, "{cell:>w$}  ");
                    }
                    _ => {
                        let _ = write!(text, "{cell:<w$}  ");
                    }
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(header);
        for row in &rows {
            line(row.each_ref().map(String::as_str));
        }
    }

    let server = &report.server;
    let server_state = if !server.answered {
        server
            .error
            .clone()
            .unwrap_or_else(|| "no server answered".into())
    } else {
        let mut text = match (server.ready, &server.not_ready_reason) {
            (Some(true), _) => "answered: ready".to_string(),
            (Some(false), Some(why)) => format!("answered: not ready ({why})"),
            _ => "answered".to_string(),
        };
        match &server.error {
            Some(e) => {
                let _ = write!(text, "; {e}");
            }
            None if report.projections.iter().all(|p| p.live.is_none()) => text.push_str(
                "; its projections' live state needs the admin token (--admin-token or ORDO_ADMIN_TOKEN)",
            ),
            None => {}
        }
        text
    };
    let _ = writeln!(
        out,
        "
server       {}",
        server.url
    );
    let _ = writeln!(out, "             {server_state}");
    out
}

/// The state column: the server's live state when it gave one, else the stores'.
fn projection_state(p: &ProjectionReport) -> String {
    match (&p.error, &p.live) {
        (Some(e), _) if p.state == "logWentBackwards" => format!("halted: {e} (stores)"),
        (Some(e), _) => format!("unreadable: {e}"),
        (None, Some(live)) => match &live.last_error {
            Some(e) if live.state != "running" => format!("{} (server): {e}", live.state),
            _ => format!("{} (server)", live.state),
        },
        (None, None) => match (p.state, p.events_behind) {
            ("caughtUp", _) => "caught up (stores)".into(),
            ("behind", Some(n)) => format!("behind by {n} events (stores)"),
            ("notStarted", Some(n)) => format!("never projected, {n} events to go (stores)"),
            (other, _) => format!("{other} (stores)"),
        },
    }
}
