//! Supervision: each runner's work runs in a task of its own, watched for panics and for
//! calls into the projection that take longer than [`RunnerConfig::stuck_after`], and
//! started again from the stored checkpoint after a backoff.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::store::EventStore;

use super::worker::{Worker, unless_stopped};
use super::{
    Projection, ProjectionHandle, ProjectionRunner, ProjectionState, ProjectionStatus, RunnerConfig,
};

/// When the call into the projection in progress started. Each task has its own, so
/// that a task aborted late cannot clear the mark of the one that replaced it.
#[derive(Debug, Default)]
pub(super) struct Busy(std::sync::Mutex<Option<Instant>>);

impl Busy {
    pub(super) fn since(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set(&self, since: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = since;
    }
}

/// Clears the [`Busy`] mark when the call ends, also when it is cancelled.
pub(super) struct BusyGuard<'a>(pub(super) &'a Busy);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// How a runner's task ended.
pub(super) enum Ended {
    /// It stopped when asked to.
    Stopped,
    /// The runtime is shutting down.
    Cancelled,
    Panicked(String),
    /// A call into the projection took longer than the limit; the task was aborted.
    Stuck,
}

impl ProjectionRunner {
    pub fn new(
        store: Arc<dyn EventStore>,
        projection: Arc<dyn Projection>,
        config: RunnerConfig,
    ) -> Self {
        let status = ProjectionStatus::starting(projection.name());
        Self {
            worker: Worker {
                store,
                projection,
                config,
                status: watch::channel(status).0,
                caught_up: Arc::default(),
                busy: Arc::default(),
            },
        }
    }

    /// A runner of one partition of `store`'s log (a projection shard): it reads, waits
    /// for and counts the events of `partition` only, and its checkpoint moves in that
    /// partition only. With `permits`, each of its reads of the log first takes one (the
    /// runners of one process's shards share them, to bound their store connections).
    pub fn for_partition(
        store: Arc<dyn EventStore>,
        partition: u32,
        permits: Option<Arc<tokio::sync::Semaphore>>,
        projection: Arc<dyn Projection>,
        config: RunnerConfig,
    ) -> Self {
        let view = super::partition::PartitionView {
            inner: store,
            partition,
            permits,
        };
        Self::new(Arc::new(view), projection, config)
    }

    pub fn handle(&self) -> ProjectionHandle {
        ProjectionHandle {
            status: self.worker.status.subscribe(),
        }
    }

    /// Runs until `shutdown` completes. Every batch is committed with its checkpoint
    /// before the next is read, so stopping at any point loses nothing. A stop waits for
    /// the write in progress, if any, instead of abandoning it: when `run` returns,
    /// nothing more is written, and the stored checkpoint is where the projection
    /// stopped (a switch to another read-store generation relies on that). The one
    /// exception is a write stuck for longer than [`RunnerConfig::stuck_after`]: its task
    /// is aborted, and a commit the store finishes later is refused by the checkpoint's
    /// compare-and-set once anything else has moved the checkpoint.
    ///
    /// The work runs in a task of its own (spawned on the caller's runtime), which this
    /// supervises: see the module docs.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let (stop, stopping) = watch::channel(false);
        let asked = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        tokio::join!(asked, self.supervise(stopping));
        self.worker
            .status
            .send_modify(|s| s.state = ProjectionState::Stopped);
    }

    /// Runs the work in a task, and a new one each time a task panics or gets stuck,
    /// until a task stops because it was asked to.
    async fn supervise(&self, mut stop: watch::Receiver<bool>) {
        let config = &self.worker.config;
        let name = self.worker.projection.name();
        let mut backoff = config.min_restart_backoff;
        loop {
            let worker = Worker {
                busy: Arc::default(),
                ..self.worker.clone()
            };
            let started = Instant::now();
            let busy = Arc::clone(&worker.busy);
            let task = tokio::spawn(worker.work(stop.clone()));
            let message = match watch_task(task, &busy, config.stuck_after).await {
                Ended::Stopped | Ended::Cancelled => return,
                Ended::Panicked(panic) => format!("the projection runner panicked: {panic}"),
                Ended::Stuck => {
                    format!("projection batch stuck for {}", seconds(config.stuck_after))
                }
            };
            let stopping = *stop.borrow();
            if started.elapsed() >= config.healthy_after {
                backoff = config.min_restart_backoff;
            }
            if stopping {
                tracing::error!(projection = name, error = %message, "projection runner failed while stopping");
            } else {
                tracing::error!(projection = name, error = %message, ?backoff, "projection runner failed; restarting it");
            }
            self.worker.status.send_modify(|s| {
                s.state = ProjectionState::Failing;
                s.last_error = Some(message);
                if !stopping {
                    s.restarts += 1;
                }
            });
            if stopping
                || unless_stopped(&mut stop, tokio::time::sleep(backoff))
                    .await
                    .is_err()
            {
                return;
            }
            backoff = (backoff * 2).min(config.max_restart_backoff);
        }
    }
}

/// Waits for `task` to end; aborts it when a call into the projection has been running
/// for `limit` (`busy` says since when).
pub(super) async fn watch_task(mut task: JoinHandle<()>, busy: &Busy, limit: Duration) -> Ended {
    // Idle, the mark is looked at this often: a call that starts meanwhile is then
    // watched until its own deadline.
    let idle_check = (limit / 4).max(Duration::from_millis(1));
    loop {
        let check_at = match busy.since() {
            Some(since) if since.elapsed() >= limit => {
                task.abort();
                return Ended::Stuck;
            }
            Some(since) => since + limit,
            None => Instant::now() + idle_check,
        };
        tokio::select! {
            joined = &mut task => {
                return match joined {
                    Ok(()) => Ended::Stopped,
                    Err(e) if e.is_panic() => Ended::Panicked(panic_message(e.into_panic().as_ref())),
                    Err(_) => Ended::Cancelled,
                };
            }
            () = tokio::time::sleep_until(check_at) => {}
        }
    }
}

/// What a panic said, when it said it with a string.
pub(super) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// `60 s`, or `250 ms` below a second.
pub(super) fn seconds(duration: Duration) -> String {
    if duration >= Duration::from_secs(1) {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}
