//! # ordo-load: the benchmark load tool
//!
//! Drives the real `ordo` binary over HTTP, per store, and compares each result with
//! the physical floor measured in the same run on the same machine. `ordo-load all`
//! runs everything and prints markdown tables for BENCHMARKS.md.
//!
//! ## Layout
//!
//! - [`env`](mod@env): per-store environments (data dir, PostgreSQL schema, Redis prefix, the
//!   private durable Redis, the Redis Cluster) and the `ordo serve` flags for them.
//! - [`server`]: the server under test as a child process (ready check, VmHWM, SIGTERM).
//! - [`driver`]: the HTTP load: N keep-alive clients, the operation mix, the pacing, and
//!   the lag observer beside the clients.
//! - [`mix`]: the weighted operation mix and a small RNG.
//! - [`floors`]: the parse-only HTTP server, the fsync loop, the Redis and PostgreSQL
//!   append loops.
//! - [`replay`]: seeding N events and timing a full rebuild of the read models.
//! - [`rebuild`]: a rebuild inside the running server (admin API), timed while the tool
//!   drives load.
//! - [`sustain`]: the search for the highest paced create rate the projection keeps up
//!   with.
//! - [`scaleout`]: projection throughput with 1, 2, 3... projector processes dividing
//!   the shards of one event log.
//! - [`stats`] and [`report`]: percentiles and the markdown tables.

mod driver;
mod env;
mod floors;
mod mix;
mod rebuild;
mod replay;
mod report;
mod scaleout;
mod server;
mod stats;
mod sustain;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::driver::{LoadResult, LoadSpec};
use crate::env::{Backends, StoreEnv, StoreKind};
use crate::floors::FloorResult;
use crate::mix::{CREATE_ONLY, DEFAULT_MIX, Mix};
use crate::rebuild::Rebuild;
use crate::report::{
    AppendRow, BackendFloor, DuringRow, FloorRow, ReplayRow, Row, SustainRow, SustainStep,
};
use crate::server::Server;

/// ordo-load: benchmark ordo over its HTTP API against the physical floors.
#[derive(Debug, Parser)]
#[command(name = "ordo-load", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every floor and every store, one table (the command BENCHMARKS.md names).
    All(AllArgs),
    /// One store: create-only, mixed, and mixed at half rate, with the HTTP and backend
    /// floors, then the sustainable create rate (paced runs).
    Run(RunArgs),
    /// The parse-only HTTP floor alone.
    FloorHttp(LoadArgs),
    /// Seed N events through a store's API, then time a full rebuild of the read models.
    Replay(ReplayArgs),
    /// Seed N events once per event store, then time P projector processes (P = 1, 2,
    /// 3 by default) catching up from nothing on a fresh read store, batch by batch
    /// through the shards; per process, the events it committed and the shards it owned.
    ScaleOut(ScaleArgs),
    /// Internal: the parse-only HTTP server (`floor-http` starts it as a child process).
    #[command(hide = true)]
    ServeFloor {
        #[arg(long)]
        listen: String,
    },
}

#[derive(Debug, Clone, Args)]
struct LoadArgs {
    /// Concurrent clients (each one request at a time, own keep-alive connection).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured seconds per load row.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unmeasured seconds before each row.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Milliseconds between two projection-lag probes of the observer beside the clients
    /// (0: no observer, no lag figures). The clients never wait for a probe. (Replaces
    /// `--lag-every`, with which each client waited for its own probes.)
    #[arg(long, default_value_t = 10)]
    lag_interval_ms: u64,
    /// Paced create runs, after a store's rows, searching for the highest create rate at
    /// which the projection lag p99 stays under 100 ms: the peak first, then bisecting
    /// below it (0: skip the search).
    #[arg(long, default_value_t = 4)]
    sustain_steps: u32,
    /// Only the create-only row of each store, not the mixed ones (to compare changes to
    /// the write path in less time).
    #[arg(long)]
    create_only: bool,
    /// The server binary (build it first: cargo build --release -p ordo).
    #[arg(long, default_value = "target/release/ordo")]
    ordo_bin: PathBuf,
    #[command(flatten)]
    backends: Backends,
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    #[arg(long, value_enum)]
    store: StoreKind,
    /// The mix of the "mixed" rows: NAME=WEIGHT,... of create, status, cancel, get, list,
    /// summary, customer, search.
    #[arg(long, default_value = DEFAULT_MIX)]
    mix: String,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Clone, Args)]
struct AllArgs {
    /// The stores to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = StoreKind::ALL)]
    stores: Vec<StoreKind>,
    #[arg(long, default_value = DEFAULT_MIX)]
    mix: String,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Clone, Args)]
struct ReplayArgs {
    #[arg(long, value_enum)]
    store: StoreKind,
    /// Events to seed.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Then start the server on the seeded stores and run the mixed load for this many
    /// seconds, reporting its peak RSS (0: skip).
    #[arg(long, default_value_t = 0)]
    then_load: u64,
    /// Time limit of catch-up (past it, the rate so far is reported and the rebuild is
    /// skipped) and of the rebuild, seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// Then start the server on the seeded stores and drive the mixed load twice for this
    /// many seconds: alone, then while the server rebuilds its read models (`POST
    /// /api/v1/admin/replay`, started as the load's warm-up begins), reporting both and
    /// the rebuild's time (0: skip). Seed enough events for the rebuild to outlast the
    /// second load: the table says whether it did.
    #[arg(long, default_value_t = 0)]
    during_rebuild: u64,
    /// Catch up batch by batch even on a long log (as before read models that were never
    /// projected into were loaded in bulk at start), to compare the two.
    #[arg(long)]
    no_bulk_start: bool,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Clone, Args)]
struct ScaleArgs {
    /// Events to seed, once per event store (in this process, with ordo's own append).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Projector counts, comma-separated: each run starts this many processes at once.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    projectors: Vec<usize>,
    /// Runs of each projector count (all counts once, then all again, and so on).
    #[arg(long, default_value_t = 2)]
    repeats: u32,
    /// Where the events are, comma-separated: postgres (a schema of its own), redis (a
    /// key prefix of its own on --redis-addr). The read models are in PostgreSQL.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "postgres")]
    event_stores: Vec<scaleout::EventsKind>,
    /// Partitions of the PostgreSQL event log.
    #[arg(long, default_value_t = 8)]
    pg_partitions: u32,
    /// Partitions of the Redis event log.
    #[arg(long, default_value_t = 16)]
    redis_partitions: u32,
    /// Milliseconds between two polls of the projectors' /metrics.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// Connections per pool of each projector (`pool_size=N` on both store URLs; the
    /// product's default, 16, when not given). On a PostgreSQL shared with other work,
    /// a lower one keeps P processes within its max_connections.
    #[arg(long)]
    pg_pool_size: Option<u32>,
    /// Time limit of one run, seconds (past it, how far the projectors got is reported).
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// Keep the projectors' logs of every run (the path is printed); without it only
    /// those of a run that did not end caught up are kept.
    #[arg(long)]
    keep_logs: bool,
    /// The server binary (build it first: cargo build --release -p ordo).
    #[arg(long, default_value = "target/release/ordo")]
    ordo_bin: PathBuf,
    #[command(flatten)]
    backends: Backends,
}

impl ScaleArgs {
    fn spec(&self) -> anyhow::Result<scaleout::ScaleSpec> {
        anyhow::ensure!(
            !self.projectors.is_empty() && self.projectors.iter().all(|p| (1..=64).contains(p)),
            "--projectors takes counts from 1 to 64"
        );
        anyhow::ensure!(self.repeats >= 1, "--repeats must be at least 1");
        anyhow::ensure!(self.events >= 1, "--events must be at least 1");
        anyhow::ensure!(
            !self.event_stores.is_empty(),
            "--event-stores names no store"
        );
        Ok(scaleout::ScaleSpec {
            ordo_bin: self.ordo_bin.clone(),
            events: self.events,
            projectors: self.projectors.clone(),
            repeats: self.repeats,
            stores: self.event_stores.clone(),
            pg_partitions: self.pg_partitions,
            redis_partitions: self.redis_partitions,
            pg_pool_size: self.pg_pool_size,
            poll: Duration::from_millis(self.poll_ms.max(1)),
            timeout: Duration::from_secs(self.timeout),
            keep_logs: self.keep_logs,
            backends: self.backends.clone(),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The store crates' own logs (warnings; set RUST_LOG=info for the rebuild's steps).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ordo-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Cmd::ServeFloor { listen } => floors::serve_floor(&listen).await.map(|()| true),
            Cmd::All(args) => all(args).await,
            Cmd::Run(args) => {
                let mix = Mix::parse(&args.mix).map_err(anyhow::Error::msg)?;
                all(AllArgs {
                    stores: vec![args.store],
                    mix: mix.to_string(),
                    load: args.load,
                })
                .await
            }
            Cmd::FloorHttp(args) => {
                let mut rows = vec![http_floor(&args).await?];
                println!("{}", report::floor_table(&mut rows));
                Ok(rows[0].result.errors == 0)
            }
            Cmd::Replay(args) => replay_cmd(args).await,
            Cmd::ScaleOut(args) => scale_out(args).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("ordo-load: errors occurred (see the errors column)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ordo-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn spec(args: &LoadArgs, base: &str, mix: &str, rate: Option<f64>) -> anyhow::Result<LoadSpec> {
    Ok(LoadSpec {
        base: base.to_string(),
        concurrency: args.concurrency,
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup),
        mix: Mix::parse(mix).map_err(anyhow::Error::msg)?,
        lag_interval: (args.lag_interval_ms > 0)
            .then(|| Duration::from_millis(args.lag_interval_ms)),
        rate,
        seed: 1,
    })
}

fn load_to_floor(r: LoadResult) -> FloorResult {
    FloorResult {
        ops: r.commands,
        elapsed: r.elapsed,
        latency: r.command_latency,
        errors: r.errors,
        first_error: r.error_samples.into_iter().next(),
    }
}

/// The parse-only HTTP floor: this binary's `serve-floor` as a child process, driven
/// with creates only, by the same client code.
async fn http_floor(args: &LoadArgs) -> anyhow::Result<FloorRow> {
    let exe = std::env::current_exe().context("find this binary")?;
    let log = std::env::temp_dir().join(format!("ordo-load-floor-{}.log", std::process::id()));
    let server = Server::start(
        &exe,
        &["serve-floor".to_string()],
        log.clone(),
        Duration::from_secs(10),
    )
    .await?;
    eprintln!(
        "ordo-load: floor http (parse-only), {} clients",
        args.concurrency
    );
    let mut spec = spec(args, &server.base, CREATE_ONLY, None)?;
    spec.lag_interval = None;
    let result = driver::drive(spec).await?;
    server.stop().await?;
    let _ = std::fs::remove_file(log);
    for e in &result.error_samples {
        eprintln!("ordo-load: floor http error: {e}");
    }
    Ok(FloorRow {
        name: "HTTP parse-only (POST create)".into(),
        concurrency: args.concurrency,
        result: load_to_floor(result),
    })
}

/// ordo's append through the store crate in this process, beside the backend floor.
async fn store_append(
    env: &StoreEnv,
    args: &LoadArgs,
    floor: BackendFloor,
) -> anyhow::Result<AppendRow> {
    let (events, prefix) = env.open_scratch_events().await?;
    let result =
        floors::store_append(events, args.concurrency, Duration::from_secs(args.duration)).await;
    if matches!(env.kind, StoreKind::Redis | StoreKind::RedisCluster)
        && let Err(e) = floors::redis_cleanup(env.redis_nodes(), &prefix).await
    {
        eprintln!("ordo-load: could not delete the store append's keys: {e:#}");
    }
    let result = result?;
    if let Some(e) = &result.first_error {
        eprintln!(
            "ordo-load: {} store append: {} errors, first: {e}",
            env.kind.name(),
            result.errors
        );
    }
    Ok(AppendRow {
        store: env.kind.name().to_string(),
        concurrency: args.concurrency,
        result,
        floor,
    })
}

/// The backend floor of a store's environment.
async fn backend_floor(
    env: &StoreEnv,
    args: &LoadArgs,
) -> anyhow::Result<(FloorRow, BackendFloor)> {
    let duration = Duration::from_secs(args.duration);
    let c = args.concurrency;
    let (name, result, conc) = match env.kind {
        StoreKind::Sqlite => {
            let dir = env.data_dir().to_path_buf();
            let r =
                tokio::task::spawn_blocking(move || floors::fsync_floor(&dir, duration)).await??;
            (
                "fsync: write 256 B + fdatasync, 1 writer, data dir".to_string(),
                r,
                1,
            )
        }
        StoreKind::Postgres => {
            let schema = format!("{}_floor", env.pg_prefix());
            let r = floors::pg_floor(env.pg_base(), &schema, c, duration).await?;
            (
                "PostgreSQL: ordo's append statement, 1 event, new stream".to_string(),
                r,
                c,
            )
        }
        StoreKind::Redis | StoreKind::RedisAof | StoreKind::RedisCluster => {
            let prefix = format!("{}-floor", env.unique);
            let r = floors::redis_floor(
                &env.redis_floor_url(),
                env.is_cluster(),
                &prefix,
                c,
                duration,
            )
            .await?;
            if env.kind != StoreKind::RedisAof
                && let Err(e) = floors::redis_cleanup(env.redis_nodes(), &prefix).await
            {
                eprintln!("ordo-load: could not delete the floor's keys: {e:#}");
            }
            (
                format!(
                    "{}: EVALSHA ordo's append script, 1 event, new stream",
                    env.kind.name()
                ),
                r,
                c,
            )
        }
    };
    if let Some(e) = &result.first_error {
        eprintln!(
            "ordo-load: floor {name}: {} errors, first: {e}",
            result.errors
        );
    }
    let floor = match env.kind {
        StoreKind::Sqlite => BackendFloor::Fsync(result.per_sec()),
        _ => BackendFloor::Append(result.per_sec()),
    };
    Ok((
        FloorRow {
            name,
            concurrency: conc,
            result,
        },
        floor,
    ))
}

fn print_errors(store: &str, load: &str, r: &LoadResult) {
    if r.errors > 0 {
        eprintln!(
            "ordo-load: {store} {load}: {} errors; the first ones:",
            r.errors
        );
        for e in &r.error_samples {
            eprintln!("  {e}");
        }
    }
}

/// The tables every store adds a row or more to.
#[derive(Debug, Default)]
struct Tables {
    floors: Vec<FloorRow>,
    appends: Vec<AppendRow>,
    loads: Vec<Row>,
    sustain: Vec<SustainRow>,
}

/// The rows of one store, on one server process.
async fn run_store(
    kind: StoreKind,
    mix: &str,
    args: &LoadArgs,
    http: Option<f64>,
    tables: &mut Tables,
) -> anyhow::Result<()> {
    let env = StoreEnv::create(kind, &args.backends).await?;
    let result = run_store_in(&env, mix, args, http, tables).await;
    env.cleanup().await;
    result
}

/// The paced create runs of the sustainable-rate search, on the running server, starting
/// from the closed-loop `peak`.
async fn search_sustainable(
    store: &str,
    args: &LoadArgs,
    base: &str,
    peak: &mut LoadResult,
) -> anyhow::Result<SustainRow> {
    let mut search = sustain::RateSearch::new(peak.commands_per_sec(), args.sustain_steps);
    let mut steps = Vec::new();
    while let Some(target) = search.next_rate() {
        let waited = driver::settle(base, Duration::from_secs(300)).await?;
        eprintln!(
            "ordo-load: {store}: the read models caught up in {:.1} s",
            waited.as_secs_f64()
        );
        let load_average = loadavg();
        eprintln!(
            "ordo-load: {store}: paced creates at {}/s (load average {load_average})",
            stats::fmt_rate(target)
        );
        let mut result = driver::drive(spec(args, base, CREATE_ONLY, Some(target))?).await?;
        print_errors(store, "paced creates", &result);
        let achieved = result.commands_per_sec();
        let lag_p99 = result.lag.percentile(99.0);
        let kept_up =
            result.errors == 0 && sustain::keeps_up(target, achieved, lag_p99, result.lag.len());
        eprintln!(
            "ordo-load: {store}: paced at {}/s: {} creates/s, lag p99 {} ms over {} samples: {}",
            stats::fmt_rate(target),
            stats::fmt_rate(achieved),
            stats::fmt_ms(lag_p99),
            result.lag.len(),
            if kept_up {
                "keeps up"
            } else {
                "does not keep up"
            }
        );
        search.record(target, kept_up);
        steps.push(SustainStep {
            target,
            achieved,
            lag_p50: result.lag.percentile(50.0),
            lag_p99,
            lag_samples: result.lag.len(),
            errors: result.errors,
            load_average,
            kept_up,
        });
    }
    Ok(SustainRow {
        store: store.to_string(),
        concurrency: args.concurrency,
        peak: peak.commands_per_sec(),
        peak_lag_p99: peak.lag.percentile(99.0),
        sustainable: search.sustainable(),
        lowest_failed: search.lowest_failed(),
        steps,
    })
}

async fn run_store_in(
    env: &StoreEnv,
    mix: &str,
    args: &LoadArgs,
    http: Option<f64>,
    tables: &mut Tables,
) -> anyhow::Result<()> {
    let kind = env.kind;
    let store = format!("{} (reads: {})", kind.name(), env.read_store_name());
    eprintln!("ordo-load: {store}: backend floor");
    let (floor_row, floor) = backend_floor(env, args).await?;
    tables.floors.push(floor_row);
    eprintln!("ordo-load: {store}: store append");
    tables
        .appends
        .push(store_append(env, args, floor.clone()).await?);

    let server = Server::start(
        &args.ordo_bin,
        &env.server_args(),
        env.data_dir().join("ordo.log"),
        Duration::from_secs(60),
    )
    .await
    .with_context(|| format!("start {} on {}", args.ordo_bin.display(), kind.name()))?;
    let mut rows = Vec::new();
    let run = async |load: &str, mix: &str, rate: Option<f64>| -> anyhow::Result<Row> {
        eprintln!("ordo-load: {store}: {load}");
        let result = driver::drive(spec(args, &server.base, mix, rate)?).await?;
        print_errors(&store, load, &result);
        eprintln!(
            "ordo-load: {store}: {load}: {:.0} commands/s, {:.0} queries/s, {} lag samples, {} errors",
            result.commands_per_sec(),
            result.queries_per_sec(),
            result.lag.len(),
            result.errors
        );
        let create_only = Mix::parse(mix)
            .map_err(anyhow::Error::msg)?
            .is_create_only();
        Ok(Row {
            store: store.clone(),
            load: load.to_string(),
            concurrency: args.concurrency,
            peak_rss: server.peak_rss(),
            http_floor: if create_only { http } else { None },
            backend_floor: create_only.then(|| floor.clone()),
            result,
        })
    };
    let mut sustain = None;
    let outcome = async {
        rows.push(run("create", CREATE_ONLY, None).await?);
        if !args.create_only {
            let mixed = run("mixed", mix, None).await?;
            let half = 0.5 * (mixed.result.commands + mixed.result.queries) as f64
                / mixed.result.elapsed.as_secs_f64().max(1e-9);
            rows.push(mixed);
            // The half-rate row's lag is its own, not the full-rate row's backlog.
            driver::settle(&server.base, Duration::from_secs(300)).await?;
            rows.push(run("mixed @ 50% rate", mix, Some(half)).await?);
        }
        if args.sustain_steps > 0 {
            sustain =
                Some(search_sustainable(&store, args, &server.base, &mut rows[0].result).await?);
        }
        anyhow::Ok(())
    }
    .await;
    let stopped = server.stop().await;
    outcome?;
    stopped?;
    tables.loads.extend(rows);
    tables.sustain.extend(sustain);
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let source = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    format!(
        "{cores} cores, {cpu}, Linux {}; git describe at run time: {source}",
        kernel.trim()
    )
}

/// The 1-minute load average: other work on the machine shows here.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

async fn all(args: AllArgs) -> anyhow::Result<bool> {
    Mix::parse(&args.mix).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        args.load.ordo_bin.exists(),
        "{} not found: build it first (cargo build --release -p ordo) or pass --ordo-bin",
        args.load.ordo_bin.display()
    );
    let started = Instant::now();
    let load_before = loadavg();
    let mut tables = Tables {
        floors: vec![http_floor(&args.load).await?],
        ..Tables::default()
    };
    let http = Some(tables.floors[0].result.per_sec());
    for kind in &args.stores {
        run_store(*kind, &args.mix, &args.load, http, &mut tables).await?;
    }
    let ok = tables.loads.iter().all(|r| r.result.errors == 0)
        && tables.floors.iter().all(|f| f.result.errors == 0)
        && tables.appends.iter().all(|a| a.result.errors == 0)
        && tables
            .sustain
            .iter()
            .all(|s| s.steps.iter().all(|step| step.errors == 0));
    let lag = match args.load.lag_interval_ms {
        0 => "no lag observer".to_string(),
        ms => format!("lag observed every {ms} ms beside the clients"),
    };
    println!(
        "\nordo-load: {}; {} clients, {} s measured per row after {} s warm-up; mixed = {}; {lag}; {:.0} s in all; load average (1 min) {} before, {} after\n",
        machine(),
        args.load.concurrency,
        args.load.duration,
        args.load.warmup,
        args.mix,
        started.elapsed().as_secs_f64(),
        load_before,
        loadavg()
    );
    println!("{}", report::floor_table(&mut tables.floors));
    println!("{}", report::append_table(&mut tables.appends));
    println!("{}", report::load_table(&mut tables.loads));
    if !tables.sustain.is_empty() {
        println!("{}", report::sustain_table(&tables.sustain));
        println!("{}", report::sustain_steps_table(&tables.sustain));
    }
    Ok(ok)
}

async fn scale_out(args: ScaleArgs) -> anyhow::Result<bool> {
    let spec = args.spec()?;
    anyhow::ensure!(
        spec.ordo_bin.exists(),
        "{} not found: build it first (cargo build --release -p ordo) or pass --ordo-bin",
        spec.ordo_bin.display()
    );
    let started = Instant::now();
    let load_before = loadavg();
    let (seeded, runs) = scaleout::run(&spec).await?;
    let ok = runs.iter().all(|r| r.took.is_some() && r.status.is_ok());
    println!(
        "\nordo-load: {}; scale-out: {} events seeded per store, projectors {:?}, {} runs each, /metrics polled every {} ms; {:.0} s in all; load average (1 min) {} before, {} after\n",
        machine(),
        spec.events,
        spec.projectors,
        spec.repeats,
        spec.poll.as_millis(),
        started.elapsed().as_secs_f64(),
        load_before,
        loadavg()
    );
    println!("{}", report::scale_seed_table(&seeded));
    println!("{}", report::scale_summary_table(&runs));
    println!("{}", report::scale_run_table(&runs));
    println!("{}", report::scale_process_table(&runs));
    Ok(ok)
}

async fn replay_cmd(args: ReplayArgs) -> anyhow::Result<bool> {
    let env = StoreEnv::create(args.store, &args.load.backends).await?;
    let result = replay_in(&env, &args).await;
    env.cleanup().await;
    let (row, mut during) = result?;
    let ok = row.loaded_rss.is_none_or(|(_, _, errors)| errors == 0)
        && during.iter().all(|r| r.result.errors == 0);
    println!("\nordo-load: {}\n", machine());
    println!("{}", report::replay_table(&[row]));
    if !during.is_empty() {
        println!("{}", report::during_rebuild_table(&mut during));
    }
    Ok(ok)
}

/// Starts the server on stores a replay measurement has just used. The read side that
/// measurement ran has been shut down, but its clean-up task keeps the embedded read
/// models locked for a few seconds more: the start is retried a few times.
async fn start_on_seeded(
    env: &StoreEnv,
    args: &ReplayArgs,
    extra_args: &[String],
) -> anyhow::Result<Server> {
    let mut server_args = env.server_args();
    server_args.extend_from_slice(extra_args);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match Server::start(
            &args.load.ordo_bin,
            &server_args,
            env.data_dir().join("ordo.log"),
            Duration::from_secs(300),
        )
        .await
        {
            Ok(server) => return Ok(server),
            Err(e) if attempt < 10 => {
                eprintln!("ordo-load: the server did not start yet ({e:#}); retrying in 3 s");
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The mixed load for `--during-rebuild` seconds on a server over the seeded stores,
/// then again while that server rebuilds its read models.
async fn load_during_rebuild(
    env: &StoreEnv,
    args: &ReplayArgs,
    events: u64,
) -> anyhow::Result<Vec<DuringRow>> {
    let token = [
        "--admin-token".to_string(),
        rebuild::ADMIN_TOKEN.to_string(),
    ];
    let server = start_on_seeded(env, args, &token).await?;
    let mut load = args.load.clone();
    load.duration = args.during_rebuild;
    let row = |name: &str, result, rebuild| DuringRow {
        store: env.kind.name().to_string(),
        read_store: env.read_store_name().to_string(),
        events,
        load: name.to_string(),
        result,
        rebuild,
    };
    eprintln!("ordo-load: mixed load, no rebuild");
    let alone = driver::drive(spec(&load, &server.base, DEFAULT_MIX, None)?).await?;
    print_errors(env.kind.name(), "mixed before the rebuild", &alone);
    eprintln!("ordo-load: mixed load during a rebuild of the read models");
    let rebuild = Rebuild::start(&server.base).await?;
    let started = rebuild.started();
    let watching = tokio::spawn(rebuild.wait(Duration::from_secs(args.timeout)));
    let during = driver::drive(spec(&load, &server.base, DEFAULT_MIX, None)?).await;
    let window_end = started.elapsed();
    let outcome = watching.await;
    server.stop().await?;
    let during = during?;
    print_errors(env.kind.name(), "mixed during a rebuild", &during);
    let outcome = outcome.context("the task watching the rebuild")??;
    if outcome.took < window_end {
        eprintln!(
            "ordo-load: the rebuild ended {:.1} s before the load did: seed more events to load through all of it",
            (window_end - outcome.took).as_secs_f64()
        );
    }
    Ok(vec![
        row("mixed", alone, None),
        row(
            "mixed during a rebuild",
            during,
            Some((outcome, window_end)),
        ),
    ])
}

async fn replay_in(
    env: &StoreEnv,
    args: &ReplayArgs,
) -> anyhow::Result<(ReplayRow, Vec<DuringRow>)> {
    let (events, reads) = env.open().await?;
    eprintln!(
        "ordo-load: seeding {} events into {}",
        args.events,
        env.kind.name()
    );
    let t = Instant::now();
    let seeded = replay::seed(std::sync::Arc::clone(&events), args.events, 7).await?;
    let seed_time = t.elapsed();
    eprintln!(
        "ordo-load: seeded {seeded} events in {:.1} s",
        seed_time.as_secs_f64()
    );
    let measured = replay::measure(
        events,
        reads,
        seeded,
        Duration::from_secs(args.timeout),
        !args.no_bulk_start,
    )
    .await?;
    let mut loaded_rss = None;
    if args.then_load > 0 {
        eprintln!(
            "ordo-load: catch-up {:.0} events/s, rebuild {:?}",
            measured.catch_up.0 as f64 / measured.catch_up.1.as_secs_f64().max(1e-9),
            measured.rebuild
        );
        let server = start_on_seeded(env, args, &[]).await?;
        let mut load = args.load.clone();
        load.duration = args.then_load;
        eprintln!("ordo-load: mixed load on {} stored events", seeded);
        let r = driver::drive(spec(&load, &server.base, DEFAULT_MIX, None)?).await?;
        print_errors(env.kind.name(), "mixed after replay", &r);
        let rss = server.peak_rss().unwrap_or(0);
        server.stop().await?;
        loaded_rss = Some((rss, r.commands_per_sec(), r.errors));
    }
    let during = if args.during_rebuild > 0 {
        load_during_rebuild(env, args, seeded).await?
    } else {
        Vec::new()
    };
    let row = ReplayRow {
        store: env.kind.name().to_string(),
        read_store: env.read_store_name().to_string(),
        events: measured.events,
        seed_time,
        catch_up: measured.catch_up,
        rebuild: measured.rebuild,
        loaded_rss,
    };
    Ok((row, during))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale(args: &[&str]) -> anyhow::Result<scaleout::ScaleSpec> {
        let cli = Cli::try_parse_from(["ordo-load", "scale-out"].iter().chain(args))?;
        match cli.command {
            Cmd::ScaleOut(a) => a.spec(),
            other => panic!("not scale-out: {other:?}"),
        }
    }

    #[test]
    fn scale_out_flags_are_read() {
        let spec = scale(&[]).expect("defaults");
        assert_eq!(spec.events, 200_000);
        assert_eq!(spec.projectors, vec![1, 2, 3]);
        assert_eq!(spec.repeats, 2);
        assert_eq!(spec.stores, vec![scaleout::EventsKind::Postgres]);
        assert_eq!((spec.pg_partitions, spec.redis_partitions), (8, 16));
        let spec = scale(&[
            "--projectors",
            "3,1",
            "--event-stores",
            "postgres,redis",
            "--events",
            "5000",
            "--poll-ms",
            "250",
        ])
        .expect("flags");
        assert_eq!(spec.projectors, vec![3, 1]);
        assert_eq!(
            spec.stores,
            vec![scaleout::EventsKind::Postgres, scaleout::EventsKind::Redis]
        );
        assert_eq!(spec.events, 5000);
        assert_eq!(spec.poll, Duration::from_millis(250));
        assert!(scale(&["--projectors", "0,2"]).is_err());
        assert!(scale(&["--projectors", "two"]).is_err());
        assert!(scale(&["--event-stores", "sqlite"]).is_err());
    }
}
