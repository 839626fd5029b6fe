//! Serving connections: hyper's HTTP/1 server, bounded.
//!
//! - At most [`Limits::max_connections`] connections are served at once: a semaphore
//!   permit is taken before `accept`, so a connection beyond the cap waits in the
//!   kernel's listen backlog (bounded by the kernel) until one ends, and a slow client
//!   cannot make the service refuse a quick one that arrives later.
//! - hyper's `header_read_timeout` closes a connection whose request head is not complete
//!   in time. hyper runs that same timer while a keep-alive connection waits for its
//!   next request, so a per-connection [`Timer`] stretches those waits to the idle
//!   timeout: the first head of a connection must arrive within the header timeout,
//!   each later one within the idle timeout of the previous answer.
//! - hyper-util's [`GracefulShutdown`] ends the connections on shutdown: idle ones at
//!   once, busy ones after their answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::rt::{Sleep, Timer};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connection and request limits (docs/cli.md).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time for a new connection to send its first complete request head.
    pub header_timeout: Duration,
    /// Every request but the event stream answers within this (503 past it).
    pub request_timeout: Duration,
    /// Time a keep-alive connection may wait for its next complete request head.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Operations in flight or waiting at once for each store (the event store, the read
    /// models' queries) and for the read models to reach consistency tokens; the next
    /// one is answered 503 with Retry-After at once (`ordo_es::admission`).
    pub max_pending: usize,
}

/// The default of `--max-pending`: at a few thousand appends a second, 256 waiting is
/// tens of milliseconds of queue, well inside any client's patience; a queue longer than
/// that only makes every answer slower.
pub const DEFAULT_MAX_PENDING: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: ordo_http::DEFAULT_REQUEST_DEADLINE,
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits
/// for every connection to end.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        // Answers are small and written whole: no reason to wait for more to send.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let mut builder = http.clone();
        builder.timer(KeepAliveTimer::new(
            limits.header_timeout,
            limits.idle_timeout,
        ));
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts and clients that go away: theirs to see, not ours.
                tracing::debug!(error = %e, %peer, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Connection errors belong to one client; anything else (no file descriptors left)
/// is worth a pause before the next accept, as hyper's own server loop did.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// hyper's timer for one connection. hyper asks it for one sleep per request head it
/// waits for, with the header timeout as the deadline; every wait after the first is
/// one between keep-alive requests, so its deadline moves to the idle timeout.
#[derive(Debug)]
struct KeepAliveTimer {
    inner: TokioTimer,
    header: Duration,
    idle: Duration,
    first_head_read: AtomicBool,
}

impl KeepAliveTimer {
    fn new(header: Duration, idle: Duration) -> Self {
        Self {
            inner: TokioTimer::new(),
            header,
            idle,
            first_head_read: AtomicBool::new(false),
        }
    }
}

impl Timer for KeepAliveTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.inner.sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        if !self.first_head_read.swap(true, Ordering::Relaxed) {
            return self.inner.sleep_until(deadline);
        }
        let keep_alive = deadline
            .checked_sub(self.header)
            .map_or(deadline, |start| start + self.idle);
        self.inner.sleep_until(keep_alive)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }
}
