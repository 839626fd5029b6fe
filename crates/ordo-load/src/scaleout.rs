//! The scale-out benchmark: how fast 1, 2, 3... projector processes project one event log
//! from nothing, and how the work divides between them.
//!
//! The events are seeded once per event store, in this process, with ordo's own
//! `EventStore::append` (as `replay` seeds them: the aggregate decides, 64 appends in
//! flight), into a PostgreSQL schema or Redis key prefix of their own with the
//! partition count asked for. Then, for each repeat and each projector count P in turn,
//! P `ordo serve --role projector` processes start at once on a fresh PostgreSQL read
//! store (a schema of its own, leases included, so nothing was projected before), with
//! the bulk start off (`--bulk-load-from` above the log's size): they catch up batch by
//! batch, each through the shards it holds.
//!
//! The clock starts just before the first process is started and stops at the first
//! poll of the processes' `/metrics` whose `ordo_projection_events_applied_total` plus
//! `ordo_projection_parked_events`, summed over the processes, reaches the events seeded
//! (each process counts only the batches it committed). `ordo status --json` then reads
//! every shard's backlog from the stores, which must be 0. Per process: the events it
//! committed and their share, the shards it owned at the end (its metric) and held (the
//! leases), the CPU time it used, its peak RSS and the warnings in its log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;
use ordo_es::{Checkpoint, Cursor, EventStore};
use serde_json::Value;

use crate::env::Backends;
use crate::server::{self, Server};

/// Where the events of a scale-out run are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventsKind {
    /// A schema of its own on the PostgreSQL server (`--pg-partitions`).
    Postgres,
    /// A key prefix of its own on the shared Redis (`--redis-partitions`).
    Redis,
}

impl EventsKind {
    pub fn name(self) -> &'static str {
        match self {
            EventsKind::Postgres => "postgres",
            EventsKind::Redis => "redis",
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct ScaleSpec {
    pub ordo_bin: PathBuf,
    pub events: u64,
    pub projectors: Vec<usize>,
    pub repeats: u32,
    pub stores: Vec<EventsKind>,
    pub pg_partitions: u32,
    pub redis_partitions: u32,
    /// `pool_size` of the projectors' PostgreSQL URLs (the product's default when None).
    pub pg_pool_size: Option<u32>,
    pub poll: Duration,
    pub timeout: Duration,
    /// Keep every run's projector logs (else only those of a run that did not end caught
    /// up).
    pub keep_logs: bool,
    pub backends: Backends,
}

/// One projector process of a run, at its end.
#[derive(Debug, Default)]
pub struct ProcessResult {
    pub pid: u32,
    /// Events whose batches this process committed (its metric).
    pub applied: u64,
    pub parked: u64,
    /// `ordo_projection_shards_owned` at the end.
    pub shards_owned: Option<u64>,
    /// Shards whose lease it held at the end (`ordo status`).
    pub shards_held: Vec<u32>,
    /// Its shards' events (the partitions' sizes), from the leases it held at the end.
    pub held_events: u64,
    /// How its `ordo_projection_shards_owned` moved, each value with when it was first
    /// seen.
    pub owned_changes: Vec<(Duration, u64)>,
    pub cpu: Option<Duration>,
    pub peak_rss: Option<u64>,
    /// WARN and ERROR lines of its log: how many, and the first few.
    pub log_problems: usize,
    pub log_samples: Vec<String>,
}

/// One run: P processes from nothing to caught up.
#[derive(Debug)]
pub struct RunResult {
    pub store: &'static str,
    pub partitions: u32,
    pub projectors: usize,
    pub run: u32,
    pub events: u64,
    /// From the first start to the poll that saw every event committed; `None`: the
    /// time limit passed first (`committed` then says how far they got).
    pub took: Option<Duration>,
    pub elapsed: Duration,
    pub committed: u64,
    /// When the first commit was seen.
    pub first_commit: Option<Duration>,
    /// When any process's shard count last changed.
    pub spread_settled: Option<Duration>,
    /// What `ordo status --json` said of the shards after: `Ok` when every shard was 0
    /// behind (with the seconds of re-checks it needed), the backlog otherwise.
    pub status: Result<f64, String>,
    pub processes: Vec<ProcessResult>,
    pub load_before: String,
    pub load_after: String,
}

impl RunResult {
    pub fn events_per_sec(&self) -> f64 {
        let secs = self.took.unwrap_or(self.elapsed).as_secs_f64().max(1e-9);
        self.committed as f64 / secs
    }
}

/// What one poll of a process's `/metrics` gives.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scrape {
    pub applied: u64,
    pub parked: u64,
    pub shards_owned: Option<u64>,
}

/// The value of a sample of the Prometheus text `text`: `name{labels} value`, or `name
/// value` when `labels` is empty.
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let rest = l.strip_prefix(&series)?;
            rest.starts_with(' ')
                .then(|| rest.split_whitespace().next())
                .flatten()
        })
        .and_then(|v| v.parse().ok())
}

/// The projection's figures in a projector's `/metrics`.
pub fn parse_scrape(text: &str) -> Option<Scrape> {
    let labels = "projection=\"orders\"";
    let applied = metric(text, "ordo_projection_events_applied_total", labels)?;
    Some(Scrape {
        applied: applied as u64,
        parked: metric(text, "ordo_projection_parked_events", labels).unwrap_or(0.0) as u64,
        shards_owned: metric(text, "ordo_projection_shards_owned", labels).map(|v| v as u64),
    })
}

/// One shard as `ordo status --json` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardRow {
    pub shard: u32,
    pub owner: Option<String>,
    pub events_behind: Option<u64>,
}

/// The `shards` of `ordo status --json`; `None` when it has none (no leases there).
pub fn parse_status_shards(status: &Value) -> Option<Vec<ShardRow>> {
    let shards = status.get("shards")?.as_array()?;
    Some(
        shards
            .iter()
            .map(|s| ShardRow {
                shard: s["shard"].as_u64().unwrap_or(u64::MAX) as u32,
                owner: s["owner"].as_str().map(str::to_string),
                events_behind: s["eventsBehind"].as_u64(),
            })
            .collect(),
    )
}

/// Whether a projector id (`host-pid-random`) names process `pid`.
pub fn owner_is(owner: &str, pid: u32) -> bool {
    let mut parts = owner.rsplitn(3, '-');
    let _random = parts.next();
    parts.next() == Some(pid.to_string().as_str())
}

/// A log line at WARN or ERROR level (the colour codes of a terminal log left out).
fn is_problem(line: &str) -> bool {
    // `<time> <LEVEL> <target>: <message>`
    let plain = strip_ansi(line);
    matches!(plain.split_whitespace().nth(1), Some("WARN" | "ERROR"))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unique_suffix() -> String {
    // The last hex digits of a v7 UUID are random.
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 10..].to_string()
}

fn with_param(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// The seeded event log of one store.
struct EventLog {
    kind: EventsKind,
    url: String,
    /// The schema or key prefix, dropped afterwards.
    unique: String,
    partitions: u32,
    /// Events per partition.
    per_partition: Vec<u64>,
    events: u64,
    seed_time: Duration,
}

impl EventLog {
    async fn seed(kind: EventsKind, spec: &ScaleSpec) -> anyhow::Result<EventLog> {
        let b = &spec.backends;
        let (unique, url, partitions) = match kind {
            EventsKind::Postgres => {
                let schema = format!("ordo_load_{}", unique_suffix());
                let url = with_param(&b.pg_url, "schema", &schema);
                let n = spec.pg_partitions;
                (schema, with_param(&url, "partitions", &n.to_string()), n)
            }
            EventsKind::Redis => {
                let prefix = format!("ordo-load-{}", unique_suffix());
                let url = with_param(&format!("redis://{}", b.redis_addr), "prefix", &prefix);
                let n = spec.redis_partitions;
                (prefix, with_param(&url, "partitions", &n.to_string()), n)
            }
        };
        let mut log = EventLog {
            kind,
            url,
            unique,
            partitions,
            per_partition: Vec::new(),
            events: 0,
            seed_time: Duration::ZERO,
        };
        let store: Arc<dyn EventStore> = match kind {
            EventsKind::Postgres => Arc::new(ordo_postgres::PgEventStore::connect(&log.url).await?),
            EventsKind::Redis => Arc::new(ordo_redis::RedisEventStore::connect(&log.url).await?),
        };
        anyhow::ensure!(
            store.partitions() == partitions,
            "the {} event store has {} partitions, not {partitions}",
            kind.name(),
            store.partitions()
        );
        eprintln!(
            "ordo-load: scale-out: seeding {} events into {} ({partitions} partitions)",
            spec.events,
            kind.name()
        );
        let t = Instant::now();
        log.events = crate::replay::seed(Arc::clone(&store), spec.events, 7).await?;
        log.seed_time = t.elapsed();
        for p in 0..partitions {
            log.per_partition.push(
                store
                    .count_after(&Checkpoint::only(p, Cursor::ORIGIN, partitions))
                    .await?,
            );
        }
        let counted: u64 = log.per_partition.iter().sum();
        anyhow::ensure!(
            counted == log.events,
            "the partitions hold {counted} events, {} were appended",
            log.events
        );
        eprintln!(
            "ordo-load: scale-out: seeded {} events in {:.1} s ({:.0}/s); per partition {:?}",
            log.events,
            log.seed_time.as_secs_f64(),
            log.events as f64 / log.seed_time.as_secs_f64().max(1e-9),
            log.per_partition
        );
        Ok(log)
    }

    async fn cleanup(&self, b: &Backends) {
        let dropped = match self.kind {
            EventsKind::Postgres => crate::floors::pg_cleanup(&b.pg_url, &self.unique)
                .await
                .map(|_| ()),
            EventsKind::Redis => {
                crate::floors::redis_cleanup(std::slice::from_ref(&b.redis_addr), &self.unique)
                    .await
                    .map(|_| ())
            }
        };
        if let Err(e) = dropped {
            eprintln!(
                "ordo-load: could not drop the event log {}: {e:#}",
                self.unique
            );
        }
    }
}

/// The seeded logs' figures, for the report.
#[derive(Debug)]
pub struct Seeded {
    pub store: &'static str,
    pub partitions: u32,
    pub events: u64,
    pub seed_time: Duration,
    pub per_partition: Vec<u64>,
}

/// Every store of `spec`, every repeat, every projector count.
pub async fn run(spec: &ScaleSpec) -> anyhow::Result<(Vec<Seeded>, Vec<RunResult>)> {
    let mut seeded = Vec::new();
    let mut runs = Vec::new();
    for &kind in &spec.stores {
        let log = EventLog::seed(kind, spec).await;
        let log = match log {
            Ok(log) => log,
            Err(e) => return Err(e.context(format!("seed the {} event log", kind.name()))),
        };
        let result = runs_on(&log, spec, &mut runs).await;
        log.cleanup(&spec.backends).await;
        result?;
        seeded.push(Seeded {
            store: kind.name(),
            partitions: log.partitions,
            events: log.events,
            seed_time: log.seed_time,
            per_partition: log.per_partition,
        });
    }
    Ok((seeded, runs))
}

async fn runs_on(
    log: &EventLog,
    spec: &ScaleSpec,
    runs: &mut Vec<RunResult>,
) -> anyhow::Result<()> {
    // Repeats outermost: drift on the machine over the session touches every count alike.
    for run in 1..=spec.repeats {
        for &p in &spec.projectors {
            let schema = format!("ordo_load_{}", unique_suffix());
            let result = run_one(log, spec, p, run, &schema).await;
            if let Err(e) = crate::floors::pg_cleanup(&spec.backends.pg_url, &schema).await {
                eprintln!("ordo-load: could not drop the read store {schema}*: {e:#}");
            }
            let result = result?;
            eprintln!(
                "ordo-load: scale-out: {} x{p} run {run}: {} events/s ({:.1} s); committed per process {:?}; shards owned {:?}; status: {:?}",
                log.kind.name(),
                crate::stats::fmt_rate(result.events_per_sec()),
                result.took.unwrap_or(result.elapsed).as_secs_f64(),
                result
                    .processes
                    .iter()
                    .map(|p| p.applied)
                    .collect::<Vec<_>>(),
                result
                    .processes
                    .iter()
                    .map(|p| p.shards_owned)
                    .collect::<Vec<_>>(),
                result.status
            );
            runs.push(result);
        }
    }
    Ok(())
}

async fn scrape(client: &reqwest::Client, base: &str) -> Option<Scrape> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    parse_scrape(&text)
}

/// `ordo status --json` on the run's stores (asking no server: its `--listen` is a free
/// port nobody answers on).
async fn status_json(
    spec: &ScaleSpec,
    event_url: &str,
    read_url: &str,
    dir: &Path,
) -> anyhow::Result<Value> {
    let port = server::free_port()?;
    let out = tokio::process::Command::new(&spec.ordo_bin)
        .arg("status")
        .arg("--json")
        .args(["--event-store", event_url, "--read-store", read_url])
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "error")
        .output()
        .await
        .context("run ordo status --json")?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "ordo status --json printed no JSON ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Re-reads `ordo status` for up to 10 s until every shard is 0 behind; the seconds it
/// took, or the shards still behind.
async fn check_caught_up(
    spec: &ScaleSpec,
    event_url: &str,
    read_url: &str,
    dir: &Path,
) -> (Result<f64, String>, Option<Vec<ShardRow>>) {
    let started = Instant::now();
    loop {
        let outcome = match status_json(spec, event_url, read_url, dir).await {
            Ok(json) => match parse_status_shards(&json) {
                Some(shards) => {
                    let behind: Vec<String> = shards
                        .iter()
                        .filter(|s| s.events_behind != Some(0))
                        .map(|s| match s.events_behind {
                            Some(n) => format!("shard {} {n} behind", s.shard),
                            None => format!("shard {} backlog unknown", s.shard),
                        })
                        .collect();
                    if behind.is_empty() {
                        return (Ok(started.elapsed().as_secs_f64()), Some(shards));
                    }
                    (behind.join(", "), Some(shards))
                }
                None => (format!("no shards in ordo status: {json}"), None),
            },
            Err(e) => (format!("{e:#}"), None),
        };
        if started.elapsed() >= Duration::from_secs(10) {
            return (Err(outcome.0), outcome.1);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The WARN and ERROR lines of a log: how many, and the first five.
fn log_problems(path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let problems: Vec<String> = text
        .lines()
        .filter(|l| is_problem(l))
        .map(strip_ansi)
        .collect();
    let count = problems.len();
    (count, problems.into_iter().take(5).collect())
}

async fn run_one(
    log: &EventLog,
    spec: &ScaleSpec,
    p: usize,
    run: u32,
    read_schema: &str,
) -> anyhow::Result<RunResult> {
    let mut read_url = with_param(&spec.backends.pg_url, "schema", read_schema);
    let mut event_url = log.url.clone();
    if let Some(n) = spec.pg_pool_size {
        read_url = with_param(&read_url, "pool_size", &n.to_string());
        if log.kind == EventsKind::Postgres {
            event_url = with_param(&event_url, "pool_size", &n.to_string());
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("ordo-load-scale-")
        .tempdir_in(&spec.backends.work_dir)?;
    let load_before = crate::loadavg();
    eprintln!(
        "ordo-load: scale-out: {} x{p} run {run}: {p} projector(s) from nothing (load average {load_before})",
        log.kind.name()
    );
    // Bulk start off: no store holds this many events.
    let no_bulk = (log.events.saturating_mul(1000))
        .max(1_000_000_000)
        .to_string();
    let started = Instant::now();
    let mut servers = Vec::with_capacity(p);
    for i in 0..p {
        let data = dir.path().join(format!("p{i}"));
        std::fs::create_dir_all(&data)?;
        let args: Vec<String> = [
            "serve",
            "--role",
            "projector",
            "--event-store",
            &event_url,
            "--read-store",
            &read_url,
            "--bulk-load-from",
            &no_bulk,
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([data.display().to_string()])
        .collect();
        servers.push(Server::spawn(
            &spec.ordo_bin,
            &args,
            dir.path().join(format!("projector-{i}.log")),
        )?);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let mut last: Vec<Scrape> = vec![Scrape::default(); p];
    let mut changes: Vec<Vec<(Duration, u64)>> = vec![Vec::new(); p];
    let mut first_commit = None;
    let deadline = started + spec.timeout;
    let took = loop {
        for (i, s) in servers.iter_mut().enumerate() {
            if let Some(status) = s.exited()? {
                anyhow::bail!(
                    "projector {i} (pid {}) exited ({status}) during the run; its log:\n{}",
                    s.pid(),
                    s.log_tail()
                );
            }
        }
        let scrapes =
            futures_util::future::join_all(servers.iter().map(|s| scrape(&client, &s.base))).await;
        let now = started.elapsed();
        for (i, scraped) in scrapes.into_iter().enumerate() {
            let Some(scraped) = scraped else { continue };
            if let Some(owned) = scraped.shards_owned
                && changes[i].last().is_none_or(|&(_, o)| o != owned)
            {
                changes[i].push((now, owned));
            }
            last[i] = scraped;
        }
        let committed: u64 = last.iter().map(|s| s.applied + s.parked).sum();
        if committed > 0 && first_commit.is_none() {
            first_commit = Some(now);
        }
        if committed >= log.events {
            break Some(now);
        }
        if Instant::now() >= deadline {
            eprintln!(
                "ordo-load: scale-out: {} x{p} run {run}: {committed} of {} events committed after {:?}: stopping the run",
                log.kind.name(),
                log.events,
                spec.timeout
            );
            break None;
        }
        tokio::time::sleep(spec.poll).await;
    };
    let elapsed = started.elapsed();
    // The figures at the end: one more scrape (nothing moves any more once every event
    // is committed), CPU time and peak RSS before the processes stop.
    let finals =
        futures_util::future::join_all(servers.iter().map(|s| scrape(&client, &s.base))).await;
    for (i, f) in finals.into_iter().enumerate() {
        if let Some(f) = f {
            last[i] = f;
        }
    }
    let (status, shards) = check_caught_up(spec, &log.url, &read_url, dir.path()).await;
    let mut processes = Vec::with_capacity(p);
    for (i, s) in servers.iter().enumerate() {
        let held: Vec<u32> = shards
            .iter()
            .flatten()
            .filter(|r| r.owner.as_deref().is_some_and(|o| owner_is(o, s.pid())))
            .map(|r| r.shard)
            .collect();
        let held_events = held
            .iter()
            .map(|&sh| log.per_partition.get(sh as usize).copied().unwrap_or(0))
            .sum();
        processes.push(ProcessResult {
            pid: s.pid(),
            applied: last[i].applied,
            parked: last[i].parked,
            shards_owned: last[i].shards_owned,
            shards_held: held,
            held_events,
            owned_changes: std::mem::take(&mut changes[i]),
            cpu: server::cpu_time_of(s.pid()),
            peak_rss: s.peak_rss(),
            ..ProcessResult::default()
        });
    }
    let logs: Vec<PathBuf> = servers.iter().map(|s| s.log_path().to_path_buf()).collect();
    let stops = futures_util::future::join_all(servers.into_iter().map(Server::stop)).await;
    for (i, stopped) in stops.into_iter().enumerate() {
        if let Err(e) = stopped {
            eprintln!("ordo-load: scale-out: projector {i}: {e:#}");
        }
    }
    for (proc_, path) in processes.iter_mut().zip(&logs) {
        (proc_.log_problems, proc_.log_samples) = log_problems(path);
        for line in &proc_.log_samples {
            eprintln!("ordo-load: scale-out: pid {}: {line}", proc_.pid);
        }
    }
    if status.is_err() || spec.keep_logs {
        let kept = dir.keep();
        eprintln!(
            "ordo-load: scale-out: the projectors' logs are kept in {}",
            kept.display()
        );
    }
    let leased: usize = processes.iter().map(|p| p.shards_held.len()).sum();
    if leased == 0 {
        eprintln!(
            "ordo-load: scale-out: {} x{p} run {run}: no shard lease is held by any of the projectors at the end: the projection was not divided into shards (each process projected the whole log)",
            log.kind.name()
        );
    }
    let spread_settled = processes
        .iter()
        .filter_map(|p| p.owned_changes.last().map(|&(t, _)| t))
        .max();
    Ok(RunResult {
        store: log.kind.name(),
        partitions: log.partitions,
        projectors: p,
        run,
        events: log.events,
        took,
        elapsed,
        committed: processes.iter().map(|p| p.applied + p.parked).sum(),
        first_commit,
        spread_settled,
        status,
        processes,
        load_before,
        load_after: crate::loadavg(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const METRICS: &str = "\
# HELP ordo_projection_position Events the projection has applied.
# TYPE ordo_projection_position gauge
ordo_projection_position{projection=\"orders\"} 812345
# TYPE ordo_projection_events_applied_total counter
ordo_projection_events_applied_total{projection=\"orders\"} 66712
ordo_projection_events_applied_total_x{projection=\"orders\"} 1
ordo_projection_shards_owned{projection=\"orders\"} 3
ordo_projection_parked_events{projection=\"orders\"} 0
ordo_http_requests_total 17
";

    #[test]
    fn reads_the_projection_figures_from_the_metrics_text() {
        assert_eq!(
            parse_scrape(METRICS),
            Some(Scrape {
                applied: 66712,
                parked: 0,
                shards_owned: Some(3),
            })
        );
        assert_eq!(metric(METRICS, "ordo_http_requests_total", ""), Some(17.0));
        assert_eq!(
            metric(METRICS, "ordo_projection_position", "projection=\"other\""),
            None
        );
        // A process that runs no projection (role api) has no applied counter.
        assert_eq!(
            parse_scrape("ordo_projection_position{projection=\"orders\"} 5\n"),
            None
        );
    }

    #[test]
    fn reads_the_shards_of_ordo_status() {
        let status = json!({
            "ok": true,
            "shards": [
                {"shard": 0, "owner": "box-4242-1a2b3c4d", "token": 3, "eventsBehind": 0},
                {"shard": 1, "owner": null, "token": null, "eventsBehind": 17},
                {"shard": 2, "owner": "box-77-00aa00aa", "eventsBehind": null}
            ]
        });
        let shards = parse_status_shards(&status).expect("shards");
        assert_eq!(shards.len(), 3);
        assert_eq!(
            shards[0],
            ShardRow {
                shard: 0,
                owner: Some("box-4242-1a2b3c4d".into()),
                events_behind: Some(0)
            }
        );
        assert_eq!(shards[1].owner, None);
        assert_eq!(shards[1].events_behind, Some(17));
        assert_eq!(shards[2].events_behind, None);
        assert_eq!(parse_status_shards(&json!({"shards": null})), None);
    }

    #[test]
    fn an_owner_id_names_its_process() {
        assert!(owner_is("box-4242-1a2b3c4d", 4242));
        assert!(owner_is("my-host-name-4242-1a2b3c4d", 4242));
        assert!(!owner_is("box-42420-1a2b3c4d", 4242));
        assert!(!owner_is("box-4242", 4242));
    }

    #[test]
    fn warnings_are_found_in_coloured_logs() {
        assert!(is_problem(
            "2026-12-04T10:00:00.1Z \u{1b}[33m WARN\u{1b}[0m \u{1b}[2mordo_app\u{1b}[0m: lease lost"
        ));
        assert!(is_problem("2026-12-04T10:00:00.1Z ERROR ordo: failed"));
        assert!(!is_problem(
            "2026-12-04T10:00:00.1Z  INFO ordo: WARN in a message"
        ));
    }
}
