//! The runtime the projections run on when `--projection-nice` is set: threads of their
//! own, at a lower CPU priority than the threads that serve requests.
//!
//! Projections are asynchronous by design: a command is answered once its events are
//! stored, and the read models follow. When the CPU is the limit, the scheduler gives
//! the projection's batch commits the same share as the requests, and a command can wait
//! behind a commit nobody is waiting for yet. With a higher `nice`, the kernel runs the
//! request threads first and the projection in what they leave; the same holds for a
//! rebuild or a start-up bulk load, which then yields to the service it runs in. The
//! priority is a weight, not a ban: against one busy request thread a projection thread
//! still gets about a third of a core at nice 3, a quarter at 5, a tenth at 10, so the
//! read models keep moving.
//!
//! It is off by default: measured on 2 cores (docs/benchmarks-history.md), nice 3 gave
//! about 9% more creates per second on the embedded store but pushed the tail of the
//! projection lag at half load past the 50 ms the service aims for on most stores.

use anyhow::Context;
use tokio::runtime::{Handle, Runtime};

/// The projection runtime, shut down (without waiting: the read side has stopped its
/// runners by then) when dropped.
#[derive(Debug)]
pub struct ProjectionRuntime {
    runtime: Option<Runtime>,
}

impl ProjectionRuntime {
    /// Starts the runtime with its threads at `nice` (1 to 19, added to the process's own
    /// priority); 0 starts none, and projections run on the request threads' runtime.
    pub fn start(nice: u8) -> anyhow::Result<Self> {
        if nice == 0 {
            return Ok(Self { runtime: None });
        }
        // Threads inherit their creator's priority: every thread of the runtime is set to
        // the starting thread's plus `nice`, not lowered again from where it began.
        let priority = projection_priority(nice);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("ordo-projection")
            .on_thread_start(move || set_priority(priority))
            .enable_all()
            .build()
            .context("cannot start the projection runtime")?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Where the projection runners are spawned; `None`: the caller's runtime.
    pub fn handle(&self) -> Option<Handle> {
        self.runtime.as_ref().map(|rt| rt.handle().clone())
    }
}

impl Drop for ProjectionRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another one.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The calling thread's priority lowered by `nice` (nice values run from -20 to 19).
#[cfg(target_os = "linux")]
fn projection_priority(nice: u8) -> i32 {
    let current = rustix::process::getpriority_process(None).unwrap_or(0);
    (current + i32::from(nice)).min(19)
}

/// Sets the calling thread's priority. On Linux the nice value belongs to the thread
/// (setpriority(2)), so only the projection's threads are affected.
#[cfg(target_os = "linux")]
fn set_priority(priority: i32) {
    if let Err(e) = rustix::process::setpriority_process(None, priority) {
        tracing::warn!(error = %e, nice = priority, "cannot lower a projection thread's priority; it runs at the service's");
    }
}

#[cfg(not(target_os = "linux"))]
fn projection_priority(_nice: u8) -> i32 {
    0
}

/// Elsewhere the nice value belongs to the whole process: leave it.
#[cfg(not(target_os = "linux"))]
fn set_priority(_priority: i32) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "projection threads run at the service's priority: per-thread priorities need Linux"
        );
    });
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn projection_threads_run_at_a_lower_priority_than_the_caller() {
        let own = rustix::process::getpriority_process(None).expect("own priority");
        let runtime = ProjectionRuntime::start(5).expect("runtime");
        let handle = runtime.handle().expect("a runtime of its own");
        let worker = handle
            .block_on(handle.spawn(async { rustix::process::getpriority_process(None) }))
            .expect("task ran")
            .expect("a worker's priority");
        // A store call from a projection task: its blocking job.
        let blocking = handle
            .block_on(handle.spawn(async {
                tokio::task::spawn_blocking(|| rustix::process::getpriority_process(None)).await
            }))
            .expect("task ran")
            .expect("blocking job ran")
            .expect("a blocking thread's priority");
        let expected = (own + 5).min(19);
        assert_eq!(worker, expected, "async work of a projection");
        assert_eq!(blocking, expected, "its blocking store calls");
        assert_eq!(
            rustix::process::getpriority_process(None).expect("own priority"),
            own,
            "the calling thread keeps its priority"
        );
    }

    #[test]
    fn zero_runs_projections_on_the_callers_runtime() {
        assert!(
            ProjectionRuntime::start(0)
                .expect("no runtime")
                .handle()
                .is_none()
        );
    }
}
