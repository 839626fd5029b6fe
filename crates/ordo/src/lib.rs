//! # ordo: wiring and the command line
//!
//! The thin top of ordo: it opens the stores named by the configuration, starts the
//! projection runner, and serves the HTTP API until told to stop. `main.rs` only parses
//! the command line and calls into here, so tests start the service exactly as `main`
//! does: [`Stores::open`], then [`run`] with their own listener and shutdown signal.

pub mod config;
pub mod events;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;

use ordo_domain::{OrderProjection, OrderReadStore, OrderService};
use ordo_es::{EventStore, ProjectionRunner, RunnerConfig};
use ordo_http::{AppState, Metrics};

pub use config::StoreArgs;

/// The two stores the service runs on.
#[derive(Clone, Debug)]
pub struct Stores {
    pub events: Arc<dyn EventStore>,
    pub reads: Arc<dyn OrderReadStore>,
}

impl Stores {
    /// Opens the event store and read store named by `args` (embedded by default).
    pub async fn open(args: &StoreArgs) -> anyhow::Result<Stores> {
        let events = open_event_store(args).await?;
        let reads = open_read_store(args).await?;
        Ok(Stores { events, reads })
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
}

async fn open_event_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn EventStore>> {
    let url = args.event_store_url();
    if let Some(path) = sqlite_path(&url) {
        let store = ordo_sqlite::SqliteEventStore::open(Path::new(path))
            .with_context(|| format!("cannot open the embedded event store at {path}"))?;
        return Ok(Arc::new(store));
    }
    bail!(
        "unsupported --event-store {}: use sqlite://PATH (redis:// and postgres:// stores are built by separate crates)",
        config::redact(&url)
    )
}

async fn open_read_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn OrderReadStore>> {
    let url = args.read_store_url();
    if let Some(path) = sqlite_path(&url) {
        let store = ordo_sqlite::SqliteReadStore::open(Path::new(path))
            .with_context(|| format!("cannot open the embedded read store at {path}"))?;
        return Ok(Arc::new(store));
    }
    bail!(
        "unsupported --read-store {}: use sqlite://PATH",
        config::redact(&url)
    )
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, lets
/// requests in flight finish, and stops the projection runner between two batches (each
/// batch is committed with its checkpoint, so nothing is lost).
pub async fn run(
    listener: TcpListener,
    stores: Stores,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let projection = Arc::new(OrderProjection::new(Arc::clone(&stores.reads)));
    let runner = ProjectionRunner::new(
        Arc::clone(&stores.events),
        projection,
        RunnerConfig::default(),
    );
    let handle = runner.handle();
    let (stop_runner, runner_stopped) = watch::channel(false);
    let runner_task = tokio::spawn(runner.run(async move {
        let mut rx = runner_stopped;
        let _ = rx.wait_for(|stop| *stop).await;
    }));

    let state = AppState {
        service: OrderService::new(Arc::clone(&stores.events)),
        reads: Arc::clone(&stores.reads),
        projection: handle,
        metrics: Arc::new(Metrics::default()),
        partitions: stores.events.partitions(),
    };
    let app = ordo_http::router(state);
    tracing::info!(address = %listener.local_addr()?, "ordo is listening");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_runner.send(true);
    runner_task
        .await
        .context("the projection runner panicked")?;
    tracing::info!("ordo stopped");
    served.context("the HTTP server failed")
}

/// Binds `addr` and runs until SIGINT or SIGTERM.
pub async fn serve(addr: &str, stores: Stores) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    run(listener, stores, shutdown_signal()).await
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
