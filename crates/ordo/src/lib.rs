//! # ordo: wiring and the command line
//!
//! The thin top of ordo: it opens the stores named by the configuration, starts the
//! projection runner, and serves the HTTP API until told to stop; a process's [`Role`]
//! says which of the two it does. `main.rs` only parses the command line and calls into
//! here, so tests start the service exactly as `main` does: [`Stores::open`], then
//! [`run`] with their own listener and shutdown signal.

pub mod access;
pub mod config;
pub mod events;
pub mod keys;
mod role;
mod runtime;
mod server;
pub mod status;
pub mod tools;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;

use ordo_app::read_side::ShardOptions;
use ordo_app::{OrderService, ReadSide, ReadSideOptions, ReplayJobs, gate_queries};
use ordo_domain::ReadStoreProvider;
use ordo_domain::privacy::{KeyRing, SealedEventStore};
use ordo_es::{
    Admission, EventRewriter, EventStore, GatedEventStore, GatedSnapshotStore, LeaseStore,
    RunnerConfig, SnapshotStore,
};
use ordo_http::{ApiTokens, AppState, EventFeed, Metrics, SecretToken, StreamLimits};

pub use config::StoreArgs;
pub use role::Role;
pub use runtime::ProjectionRuntime;
pub use server::Limits;

/// The stores the service runs on.
#[derive(Clone, Debug)]
pub struct Stores {
    /// The events, as everything above the store sees them: personal data sealed on
    /// the way in and opened on the way out ([`SealedEventStore`]).
    pub events: Arc<dyn EventStore>,
    /// The customers' data keys and the master key.
    pub keys: Arc<KeyRing>,
    /// How the keys are cached, and how long an erasure waits for other processes.
    pub key_caching: keys::KeyCaching,
    /// Snapshots of aggregates (beside the events).
    pub snapshots: Arc<dyn SnapshotStore>,
    /// The read models, in generations for blue-green rebuilds.
    pub reads: Arc<dyn ReadStoreProvider>,
    /// Take a snapshot of an order every this many events (0: only on demand).
    pub snapshot_every: u64,
    /// Load never-projected read models in bulk from this many stored events on.
    pub bulk_load_from: u64,
    /// Where the projections run (threads at a lower priority than the requests').
    pub projections: Arc<ProjectionRuntime>,
    /// Where the read models are in PostgreSQL: the leases that divide the projection
    /// into shards between the processes projecting into them.
    pub shards: Option<ShardOptions>,
}

impl Stores {
    /// Opens the event store and read store named by `args` (embedded by default).
    pub async fn open(args: &StoreArgs) -> anyhow::Result<Stores> {
        let (stored, snapshots, rewriter) = open_event_store(args).await?;
        let (keys, key_caching) = keys::open_ring(args).await?;
        let sealed = SealedEventStore::new(stored, Arc::clone(&keys));
        // Events stored before encryption are sealed once, before anything reads them.
        ordo_app::privacy::seal_stored_events(rewriter.as_ref(), &sealed)
            .await
            .context("cannot seal the personal data of the events stored before encryption")?;
        let events: Arc<dyn EventStore> = Arc::new(sealed);
        let reads = open_read_store(args).await?;
        let shards = open_leases(args).await?.map(|leases| ShardOptions {
            leases,
            owner: ShardOptions::owner_id(),
            ttl: Duration::from_secs(args.lease_ttl),
        });
        Ok(Stores {
            events,
            keys,
            key_caching,
            snapshots,
            reads,
            snapshot_every: args.snapshot_every,
            bulk_load_from: args.bulk_load_from,
            projections: Arc::new(ProjectionRuntime::start(args.projection_nice)?),
            shards,
        })
    }

    /// The command side on these stores.
    pub fn service(&self) -> OrderService {
        OrderService::new(Arc::clone(&self.events))
            .with_snapshots(Arc::clone(&self.snapshots), self.snapshot_every)
    }
}

pub(crate) fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

pub(crate) fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
}

/// The event store as stored, without sealing or opening: for tests and tools that must
/// see (or write) the stored bytes, such as events of an older version. Everything else
/// goes through [`Stores::open`].
pub async fn open_stored_events(args: &StoreArgs) -> anyhow::Result<Arc<dyn EventStore>> {
    Ok(open_event_store(args).await?.0)
}

/// The event store, its snapshots, and its rewriter (for the one-time migration).
type OpenedEvents = (
    Arc<dyn EventStore>,
    Arc<dyn SnapshotStore>,
    Arc<dyn EventRewriter>,
);

async fn open_event_store(args: &StoreArgs) -> anyhow::Result<OpenedEvents> {
    let url = args.event_store_url();
    if let Some(path) = sqlite_path(&url) {
        let store = Arc::new(
            ordo_sqlite::SqliteEventStore::open(Path::new(path))
                .with_context(|| format!("cannot open the embedded event store at {path}"))?,
        );
        return Ok((store.clone(), store.clone(), store));
    }
    if is_postgres(&url) {
        let store = Arc::new(
            ordo_postgres::PgEventStore::connect(&url)
                .await
                .with_context(|| {
                    format!(
                        "cannot open the PostgreSQL event store at {}",
                        config::redact(&url)
                    )
                })?,
        );
        return Ok((store.clone(), store.clone(), store));
    }
    if url.starts_with("redis://") || url.starts_with("redis+cluster://") {
        let store = Arc::new(
            ordo_redis::RedisEventStore::connect(&url)
                .await
                .with_context(|| {
                    format!(
                        "cannot open the Redis event store at {}",
                        config::redact(&url)
                    )
                })?,
        );
        // `connect` has already warned about persistence settings that can lose writes.
        return Ok((store.clone(), store.clone(), store));
    }
    bail!(
        "unsupported --event-store {}: use sqlite://PATH, redis://HOST:PORT, redis+cluster://HOST:PORT[,HOST:PORT...] or postgres://...",
        config::redact(&url)
    )
}

async fn open_read_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn ReadStoreProvider>> {
    let url = args.read_store_url();
    if let Some(path) = sqlite_path(&url) {
        return Ok(Arc::new(ordo_sqlite::SqliteReadStores::new(path)));
    }
    if is_postgres(&url) {
        let stores = ordo_postgres::PgReadStores::connect(&url)
            .await
            .with_context(|| {
                format!(
                    "cannot open the PostgreSQL read store at {}",
                    config::redact(&url)
                )
            })?;
        return Ok(Arc::new(stores));
    }
    if url.starts_with("redis://") || url.starts_with("redis+cluster://") {
        bail!("Redis holds events only: put the read models in sqlite://PATH or postgres://...");
    }
    bail!(
        "unsupported --read-store {}: use sqlite://PATH or postgres://...",
        config::redact(&url)
    )
}

/// The shard leases, beside read models in PostgreSQL; `None` for the embedded read
/// store, which one process owns.
async fn open_leases(args: &StoreArgs) -> anyhow::Result<Option<Arc<dyn LeaseStore>>> {
    let url = args.read_store_url();
    if !is_postgres(&url) {
        return Ok(None);
    }
    let leases = ordo_postgres::PgLeases::connect(&url)
        .await
        .with_context(|| {
            format!(
                "cannot open the projection leases in the PostgreSQL read store at {}",
                config::redact(&url)
            )
        })?;
    Ok(Some(Arc::new(leases)))
}

/// Service settings beyond the stores.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Enables the admin endpoints.
    pub admin_token: Option<SecretToken>,
    /// Access control of the API (none: open).
    pub api_tokens: Option<Arc<ApiTokens>>,
    /// The bounds of `GET /api/v1/events/stream`.
    pub event_stream: StreamLimits,
    /// Timeouts and the connection cap.
    pub limits: Limits,
    /// What this process does: the API, the projections, or both.
    pub role: Role,
}

/// Starts the read side (the active read models and their projection).
pub async fn start_read_side(stores: &Stores) -> anyhow::Result<Arc<ReadSide>> {
    ReadSide::start_with(
        Arc::clone(&stores.events),
        Arc::clone(&stores.reads),
        RunnerConfig::default(),
        ReadSideOptions {
            bulk_start_min_events: stores.bulk_load_from,
            projection_runtime: stores.projections.handle(),
            shards: stores.shards.clone(),
            ..ReadSideOptions::default()
        },
    )
    .await
    .context("cannot open the read models")
}

/// The read side of a process that runs no projection (`--role api`): the active read
/// models, their stored checkpoint and the switches other processes make.
pub async fn follow_read_side(stores: &Stores) -> anyhow::Result<Arc<ReadSide>> {
    ReadSide::start_following(
        Arc::clone(&stores.events),
        Arc::clone(&stores.reads),
        ReadSideOptions {
            shards: stores.shards.clone(),
            ..ReadSideOptions::default()
        },
    )
    .await
    .context("cannot open the read models")
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, ends the
/// event streams, lets requests in flight finish, and stops the projection runner between
/// two batches (each batch is committed with its checkpoint, so nothing is lost). What
/// is served and run follows `settings.role`.
pub async fn run(
    listener: TcpListener,
    stores: Stores,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The requests' way to the stores goes through bounded queues; the projection and
    // the event stream's tail (a few fixed callers) use the stores directly.
    let queues = Queues::new(settings.limits.max_pending);
    let gated = Stores {
        reads: Arc::new(gate_queries(
            Arc::clone(&stores.reads),
            Arc::clone(&queues.reads),
        )),
        ..stores.clone()
    };
    let role = settings.role;
    let read_side = if role.runs_projections() {
        start_read_side(&gated).await?
    } else {
        follow_read_side(&gated).await?
    };
    let service = OrderService::new(Arc::new(GatedEventStore::new(
        Arc::clone(&stores.events),
        Arc::clone(&queues.events),
    )))
    .with_snapshots(
        Arc::new(GatedSnapshotStore::new(
            Arc::clone(&stores.snapshots),
            Arc::clone(&queues.events),
        )),
        stores.snapshot_every,
    );
    let metrics = Arc::new(Metrics::default());
    let event_feed = EventFeed::new(
        Arc::clone(&stores.events),
        settings.event_stream.clone(),
        Arc::clone(&metrics),
        tail_start(&read_side).await,
    );
    // Only where the event stream is served.
    let tail = role
        .serves_api()
        .then(|| tokio::spawn(Arc::clone(&event_feed).follow_log()));
    let jobs = ReplayJobs::new(Arc::clone(&read_side), service.clone());
    let erasures = Arc::new(ordo_app::Erasures::new(
        Arc::clone(&stores.keys),
        Arc::clone(&read_side),
        Arc::clone(&jobs),
        stores.key_caching.settle,
    ));
    let state = AppState {
        jobs,
        erasures,
        service,
        read_side: Arc::clone(&read_side),
        metrics,
        partitions: stores.events.partitions(),
        admin_token: settings.admin_token,
        api_tokens: settings.api_tokens.clone(),
        event_feed: Arc::clone(&event_feed),
        request_deadline: settings.limits.request_timeout,
        consistency_waits: Arc::clone(&queues.consistency_waits),
        queues: queues.all(),
    };
    let address = listener.local_addr()?;
    let app = if role.serves_api() {
        access::warn_if_open(address, settings.api_tokens.as_deref());
        ordo_http::router(state)
    } else {
        ordo_http::operations_router(state)
    };
    tracing::info!(%address, %role, "ordo is listening");
    let feed = Arc::clone(&event_feed);
    let stopping = async move {
        shutdown.await;
        // An event stream never ends by itself: the graceful shutdown would wait for ever.
        feed.shut_down();
    };
    server::serve(listener, app, &settings.limits, stopping).await;
    event_feed.shut_down();
    if let Some(tail) = tail
        && let Err(e) = tail.await
    {
        tracing::warn!(error = %e, "the event stream's tail ended abnormally");
    }
    read_side.shutdown().await;
    tracing::info!("ordo stopped");
    Ok(())
}

/// The bounded queues in front of the stores (`ordo_es::admission`), each letting in
/// `--max-pending` operations at once.
struct Queues {
    events: Arc<Admission>,
    reads: Arc<Admission>,
    consistency_waits: Arc<Admission>,
}

impl Queues {
    fn new(max_pending: usize) -> Self {
        Self {
            events: Admission::new("events", max_pending),
            reads: Admission::new("reads", max_pending),
            consistency_waits: Admission::new("consistency_waits", max_pending),
        }
    }

    fn all(&self) -> Vec<Arc<Admission>> {
        vec![
            Arc::clone(&self.events),
            Arc::clone(&self.reads),
            Arc::clone(&self.consistency_waits),
        ]
    }
}

/// Where the event stream's tail starts reading: the read models' stored checkpoint, at
/// or before the end of the log and usually close to it, so that the tail need not read
/// the whole log to find its end (the origin when there is none yet).
async fn tail_start(read_side: &ReadSide) -> Option<ordo_es::Checkpoint> {
    match ordo_app::projection::stored_checkpoint(
        read_side.store().as_ref(),
        read_side.events().partitions(),
    )
    .await
    {
        Ok(checkpoint) => checkpoint,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the projection checkpoint; the event stream's tail starts at the origin");
            None
        }
    }
}

/// Binds `addr` and runs until SIGINT or SIGTERM.
pub async fn serve(addr: &str, stores: Stores, settings: Settings) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    run(listener, stores, settings, shutdown_signal()).await
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
