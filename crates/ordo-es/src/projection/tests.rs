use std::sync::{Arc, Mutex};

use super::*;
use crate::event::{Metadata, NewEvent, StreamId};
use crate::memory::InMemoryStore;
use crate::store::{EventStore, ExpectedVersion};

/// Records what it is given; fails the first `fail_first` batches, and always fails
/// batches holding an event of type `Poison`. With `unavailable_first`, the store
/// behind it is down for that many batches first (the runner restarts after each),
/// and what the runner's status said at each of them is kept in `seen_status`.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, u64)>>,
    checkpoint: Mutex<Option<Checkpoint>>,
    fail_first: Mutex<u32>,
    parked: Mutex<Vec<(String, u64, String)>>,
    unavailable_first: Mutex<u32>,
    /// Loading the checkpoint fails this many times first.
    checkpoint_down: Mutex<u32>,
    runner: std::sync::OnceLock<ProjectionHandle>,
    seen_status: Mutex<Vec<ProjectionStatus>>,
    /// A batch holding this event (stream, version) panics, `panics_left` times.
    panic_on: Option<(String, u64)>,
    panics_left: Mutex<u32>,
    /// A batch holding this event (stream, version) never ends, `stuck_left` times.
    stuck_on: Option<(String, u64)>,
    stuck_left: Mutex<u32>,
}

/// Whether `events` hold the event `target` names.
fn holds(events: &[RecordedEvent], target: &Option<(String, u64)>) -> bool {
    target.as_ref().is_some_and(|(stream, version)| {
        events
            .iter()
            .any(|e| e.stream_id.as_str() == stream && e.version == *version)
    })
}

/// Takes one from `left` when it is not zero yet: whether an injected failure is due.
fn count_down(left: &Mutex<u32>) -> bool {
    let mut left = left.lock().unwrap_or_else(|e| e.into_inner());
    let due = *left > 0;
    if due {
        *left -= 1;
    }
    due
}

#[async_trait]
impl Projection for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn load_checkpoint(&self) -> Result<Option<Checkpoint>, ProjectionError> {
        if count_down(&self.checkpoint_down) {
            return Err(ProjectionError::Unavailable("store down (injected)".into()));
        }
        Ok(self
            .checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }
    async fn apply_batch(
        &self,
        events: &[RecordedEvent],
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ProjectionError> {
        if let Some(runner) = self.runner.get() {
            self.seen_status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(runner.status());
        }
        if count_down(&self.unavailable_first) {
            return Err(ProjectionError::Unavailable("store down (injected)".into()));
        }
        if holds(events, &self.panic_on) && count_down(&self.panics_left) {
            panic!("injected panic");
        }
        if holds(events, &self.stuck_on) && count_down(&self.stuck_left) {
            std::future::pending::<()>().await;
        }
        {
            let mut fail = self.fail_first.lock().unwrap_or_else(|e| e.into_inner());
            if *fail > 0 {
                *fail -= 1;
                return Err(ProjectionError::Failed("injected".into()));
            }
        }
        if events.iter().any(|e| e.event_type == "Poison") {
            return Err(ProjectionError::Failed("cannot apply poison".into()));
        }
        let mut stored = self.checkpoint.lock().unwrap_or_else(|e| e.into_inner());
        if stored.as_ref().is_some_and(|s| s != from) {
            return Err(ProjectionError::CheckpointMoved);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.extend(events.iter().map(|e| (e.stream_id.to_string(), e.version)));
        *stored = Some(to.clone());
        Ok(())
    }
    async fn park(
        &self,
        event: &RecordedEvent,
        error: &str,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ProjectionError> {
        let mut stored = self.checkpoint.lock().unwrap_or_else(|e| e.into_inner());
        if stored.as_ref().is_some_and(|s| s != from) {
            return Err(ProjectionError::CheckpointMoved);
        }
        self.parked.lock().unwrap_or_else(|e| e.into_inner()).push((
            event.stream_id.to_string(),
            event.version,
            error.to_string(),
        ));
        *stored = Some(to.clone());
        Ok(())
    }
}

fn event() -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        aggregate_type: "Test".into(),
        event_type: "Happened".into(),
        schema_version: 1,
        occurred_at: OffsetDateTime::now_utc(),
        data: serde_json::json!({}).into(),
        metadata: Metadata::default(),
    }
}

async fn append_many(store: &InMemoryStore, streams: usize, per_stream: u64) -> Position {
    let mut last = None;
    for v in 0..per_stream {
        for s in 0..streams {
            let appended = store
                .append(
                    &StreamId::new(format!("s-{s}")),
                    ExpectedVersion::Exact(v),
                    vec![event()],
                )
                .await
                .expect("append");
            last = Some(appended.last_position());
        }
    }
    last.expect("appended something")
}

fn config() -> RunnerConfig {
    RunnerConfig {
        batch_size: 7,
        // Catch-up batches (with read-ahead) of another size than live ones.
        catch_up_batch_size: 11,
        idle_wait: Duration::from_millis(20),
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        attempts_before_parking: 3,
        stuck_after: Duration::from_secs(30),
        min_restart_backoff: Duration::from_millis(1),
        max_restart_backoff: Duration::from_millis(5),
        healthy_after: Duration::from_secs(60),
        log_check_every: Duration::from_millis(50),
    }
}

/// A runner on `projection`, spawned; it stops when the returned sender is used.
fn spawn_runner(
    store: Arc<InMemoryStore>,
    projection: Arc<dyn Projection>,
) -> (
    ProjectionHandle,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let runner = ProjectionRunner::new(store, projection, config());
    let handle = runner.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    (handle, stop, task)
}

async fn run_until_caught_up(
    store: Arc<InMemoryStore>,
    projection: Arc<Recorder>,
    until: Position,
) {
    let (handle, stop, task) = spawn_runner(store, projection);
    assert!(
        handle.wait_for(&until, Duration::from_secs(30)).await,
        "the projection should catch up"
    );
    let _ = stop.send(());
    task.await.expect("runner task");
}

#[tokio::test]
async fn every_event_is_applied_once_in_stream_order_across_partitions() {
    let store = Arc::new(InMemoryStore::with_partitions(3));
    let last = append_many(&store, 5, 6).await;
    let projection = Arc::new(Recorder::default());
    run_until_caught_up(Arc::clone(&store), Arc::clone(&projection), last).await;
    let seen = projection.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 30);
    for s in 0..5 {
        let versions: Vec<u64> = seen
            .iter()
            .filter(|(id, _)| *id == format!("s-{s}"))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(versions, (1..=6).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_restarted_runner_resumes_from_the_stored_checkpoint() {
    let store = Arc::new(InMemoryStore::new());
    let first = append_many(&store, 2, 3).await;
    let projection = Arc::new(Recorder::default());
    run_until_caught_up(Arc::clone(&store), Arc::clone(&projection), first).await;
    let second = append_many_more(&store).await;
    run_until_caught_up(Arc::clone(&store), Arc::clone(&projection), second).await;
    let seen = projection.seen.lock().expect("lock").clone();
    assert_eq!(
        seen.len(),
        7,
        "nothing applied twice, nothing skipped: {seen:?}"
    );
}

async fn append_many_more(store: &InMemoryStore) -> Position {
    store
        .append(
            &StreamId::new("s-0"),
            ExpectedVersion::Exact(3),
            vec![event()],
        )
        .await
        .expect("append")
        .last_position()
}

#[tokio::test]
async fn a_poison_event_is_parked_and_the_events_behind_it_keep_flowing() {
    let store = Arc::new(InMemoryStore::new());
    append_many(&store, 2, 3).await;
    let mut poison = event();
    poison.event_type = "Poison".into();
    store
        .append(
            &StreamId::new("bad"),
            ExpectedVersion::NoStream,
            vec![poison],
        )
        .await
        .expect("append poison");
    let last = append_many_more(&store).await;
    let projection = Arc::new(Recorder::default());
    let (handle, stop, task) = spawn_runner(store.clone(), projection.clone());
    assert!(
        handle.wait_for(&last, Duration::from_secs(30)).await,
        "events behind the poison must flow"
    );
    let status = handle.status();
    let _ = stop.send(());
    task.await.expect("runner");
    assert_eq!(
        projection.seen.lock().expect("lock").len(),
        7,
        "every good event applied once"
    );
    let parked = projection.parked.lock().expect("lock").clone();
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].0.as_str(), parked[0].1), ("bad", 1));
    assert!(parked[0].2.contains("cannot apply poison"));
    assert_eq!(status.events_parked, 1);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("parked"))
    );
}

/// Commits on a task of its own (as stores that write on another thread do), each
/// once the test releases it: a runner that stopped awaiting it would leave the
/// commit to land after `run` returned.
struct ReleasedCommits {
    started: tokio::sync::Notify,
    writes: std::sync::atomic::AtomicUsize,
    release: Arc<tokio::sync::Semaphore>,
    committed: Arc<Mutex<Option<Checkpoint>>>,
}

impl Default for ReleasedCommits {
    fn default() -> Self {
        Self {
            started: tokio::sync::Notify::new(),
            writes: Default::default(),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
            committed: Arc::default(),
        }
    }
}

impl ReleasedCommits {
    fn committed(&self) -> Option<Checkpoint> {
        self.committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl Projection for ReleasedCommits {
    fn name(&self) -> &str {
        "released"
    }
    async fn load_checkpoint(&self) -> Result<Option<Checkpoint>, ProjectionError> {
        Ok(self.committed())
    }
    async fn apply_batch(
        &self,
        _events: &[RecordedEvent],
        _from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ProjectionError> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.started.notify_one();
        let (release, committed, to) = (
            Arc::clone(&self.release),
            Arc::clone(&self.committed),
            to.clone(),
        );
        tokio::spawn(async move {
            release.acquire().await.expect("semaphore open").forget();
            *committed.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
        })
        .await
        .map_err(|e| ProjectionError::Failed(Box::new(e)))
    }
    async fn park(
        &self,
        _event: &RecordedEvent,
        error: &str,
        _from: &Checkpoint,
        _to: &Checkpoint,
    ) -> Result<(), ProjectionError> {
        panic!("nothing should be parked: {error}")
    }
}

#[tokio::test]
async fn a_stop_waits_for_the_write_in_progress_and_nothing_is_written_after_it() {
    let store = Arc::new(InMemoryStore::new());
    let last = append_many(&store, 1, 3).await;
    let projection = Arc::new(ReleasedCommits::default());
    let (handle, stop, task) = spawn_runner(store, Arc::clone(&projection) as _);
    projection.started.notified().await;
    let _ = stop.send(());
    // This test runs on one thread: each yield lets the runner act on the stop.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(
        !task.is_finished(),
        "the runner returned while its write was still running"
    );
    assert_eq!(projection.committed(), None);
    projection.release.add_permits(1);
    task.await.expect("runner");
    let committed = projection.committed().expect("the batch was committed");
    assert!(committed.covers(&last), "{committed:?}");
    let status = handle.status();
    assert_eq!(status.state, ProjectionState::Stopped);
    assert_eq!(
        status.checkpoint.as_ref(),
        Some(&committed),
        "the runner stops where its store stopped"
    );
    // Stopped between writes: no further write was started.
    assert_eq!(
        projection.writes.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn a_runner_is_catching_up_until_a_read_of_the_log_comes_back_short() {
    let store = Arc::new(InMemoryStore::new());
    // 30 events: reads of 7, then 11 (catch-up size), 11, and a short one.
    let last = append_many(&store, 3, 10).await;
    let projection = Arc::new(ReleasedCommits::default());
    let (handle, stop, task) = spawn_runner(store, Arc::clone(&projection) as _);
    projection.started.notified().await;
    assert_eq!(handle.status().state, ProjectionState::CatchingUp);
    projection.release.add_permits(1_000);
    assert!(handle.wait_for(&last, Duration::from_secs(30)).await);
    assert_eq!(handle.status().state, ProjectionState::Running);
    let _ = stop.send(());
    task.await.expect("runner");
}

#[tokio::test]
async fn a_runner_restarting_after_failures_reports_failing_until_it_applies_again() {
    let store = Arc::new(InMemoryStore::new());
    let last = append_many(&store, 1, 3).await;
    let projection = Arc::new(Recorder {
        unavailable_first: Mutex::new(4),
        ..Recorder::default()
    });
    let runner = ProjectionRunner::new(
        Arc::clone(&store) as Arc<dyn EventStore>,
        Arc::clone(&projection) as Arc<dyn Projection>,
        config(),
    );
    let handle = runner.handle();
    projection.runner.set(runner.handle()).expect("set once");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    assert!(handle.wait_for(&last, Duration::from_secs(30)).await);
    let seen = projection.seen_status.lock().expect("lock").clone();
    assert_eq!(seen.len(), 5, "four failed attempts, then the one applied");
    // The first attempt: nothing failed yet. Every retry after a restart: still
    // failing, with the error, not healthy again before anything was applied.
    assert_eq!(seen[0].last_error, None);
    for status in &seen[1..] {
        assert_eq!(status.state, ProjectionState::Failing, "{status:?}");
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("store down (injected)")),
            "{status:?}"
        );
    }
    let status = handle.status();
    assert_eq!(
        status.last_error, None,
        "applied again: the failure is over"
    );
    assert_ne!(status.state, ProjectionState::Failing);
    let _ = stop.send(());
    task.await.expect("runner");
}

#[tokio::test]
async fn a_runner_that_failed_is_healthy_again_once_nothing_is_left_to_apply() {
    // Nothing to apply after the failures: no batch clears them, reaching the end of
    // the log does.
    let store = Arc::new(InMemoryStore::new());
    let projection = Arc::new(Recorder {
        checkpoint_down: Mutex::new(2),
        ..Recorder::default()
    });
    let (handle, stop, task) = spawn_runner(store, projection);
    let mut status = handle.status.clone();
    // (The guard `wait_for` returns is dropped at once: it blocks the runner's writes.)
    let healthy = tokio::time::timeout(Duration::from_secs(30), async {
        status
            .wait_for(|s| s.state == ProjectionState::Running)
            .await
            .is_ok()
    })
    .await;
    assert_eq!(healthy, Ok(true), "still {:?}", handle.status());
    assert_eq!(handle.status().last_error, None);
    let _ = stop.send(());
    task.await.expect("runner");
}

#[tokio::test]
async fn a_failing_batch_is_retried_and_then_applied() {
    let store = Arc::new(InMemoryStore::new());
    let last = append_many(&store, 1, 3).await;
    let projection = Arc::new(Recorder {
        fail_first: Mutex::new(2),
        ..Recorder::default()
    });
    run_until_caught_up(Arc::clone(&store), Arc::clone(&projection), last).await;
    assert_eq!(projection.seen.lock().expect("lock").len(), 3);
}

/// A runner on `projection` with `config`, spawned, whose status `projection` records
/// at every batch; it stops when the returned sender is used.
fn spawn_watched(
    store: Arc<InMemoryStore>,
    projection: Arc<Recorder>,
    config: RunnerConfig,
) -> (
    ProjectionHandle,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let runner = ProjectionRunner::new(store, Arc::clone(&projection) as _, config);
    projection.runner.set(runner.handle()).expect("set once");
    let handle = runner.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    (handle, stop, task)
}

/// Each of `streams` streams was applied once, versions 1 to `per_stream` in order.
fn assert_applied_once(projection: &Recorder, streams: usize, per_stream: u64) {
    let seen = projection.seen.lock().expect("lock").clone();
    assert_eq!(
        seen.len(),
        streams * per_stream as usize,
        "nothing applied twice, nothing skipped: {seen:?}"
    );
    for s in 0..streams {
        let versions: Vec<u64> = seen
            .iter()
            .filter(|(id, _)| *id == format!("s-{s}"))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(versions, (1..=per_stream).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_batch_that_panics_restarts_the_runner_which_then_applies_every_event_once() {
    let store = Arc::new(InMemoryStore::with_partitions(3));
    let last = append_many(&store, 5, 6).await;
    let projection = Arc::new(Recorder {
        panic_on: Some(("s-2".into(), 4)),
        panics_left: Mutex::new(3),
        ..Recorder::default()
    });
    let (handle, stop, task) = spawn_watched(store, Arc::clone(&projection), config());
    assert!(handle.wait_for(&last, Duration::from_secs(30)).await);
    assert_applied_once(&projection, 5, 6);
    let status = handle.status();
    assert_eq!(status.restarts, 3, "{status:?}");
    assert_eq!(status.state, ProjectionState::Running);
    assert_eq!(
        status.last_error, None,
        "applied again: the failure is over"
    );
    assert_eq!(status.events_parked, 0, "a panic is not a poison event");
    // What the restarted runner said before it got past the panicking batch.
    let seen = projection.seen_status.lock().expect("lock").clone();
    assert!(
        seen.iter().any(|s| s.state == ProjectionState::Failing
            && s.restarts >= 1
            && s.last_error.as_deref() == Some("the projection runner panicked: injected panic")),
        "{seen:?}"
    );
    let _ = stop.send(());
    task.await.expect("the runner itself does not panic");
    assert_eq!(handle.status().state, ProjectionState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_stuck_batch_is_reported_and_applied_by_the_runner_that_replaces_it() {
    let store = Arc::new(InMemoryStore::new());
    let last = append_many(&store, 2, 3).await;
    let projection = Arc::new(Recorder {
        stuck_on: Some(("s-1".into(), 2)),
        stuck_left: Mutex::new(1),
        ..Recorder::default()
    });
    let config = RunnerConfig {
        stuck_after: Duration::from_secs(5),
        ..config()
    };
    let (handle, stop, task) = spawn_watched(store, Arc::clone(&projection), config);
    assert!(handle.wait_for(&last, Duration::from_secs(600)).await);
    assert_applied_once(&projection, 2, 3);
    let status = handle.status();
    assert_eq!(status.restarts, 1, "{status:?}");
    assert_eq!(status.state, ProjectionState::Running);
    assert_eq!(status.last_error, None);
    let seen = projection.seen_status.lock().expect("lock").clone();
    assert!(
        seen.iter().any(|s| s.state == ProjectionState::Failing
            && s.restarts == 1
            && s.last_error.as_deref() == Some("projection batch stuck for 5 s")),
        "{seen:?}"
    );
    let _ = stop.send(());
    task.await.expect("runner");
}

#[tokio::test(start_paused = true)]
async fn a_runner_asked_to_stop_during_a_stuck_batch_stops_once_it_counts_as_stuck() {
    let store = Arc::new(InMemoryStore::new());
    append_many(&store, 1, 3).await;
    let projection = Arc::new(Recorder {
        stuck_on: Some(("s-0".into(), 1)),
        stuck_left: Mutex::new(u32::MAX),
        ..Recorder::default()
    });
    let config = RunnerConfig {
        stuck_after: Duration::from_secs(5),
        ..config()
    };
    let (handle, stop, task) = spawn_watched(store, Arc::clone(&projection), config);
    // The first batch has started (and will never end).
    for _ in 0..1_000 {
        if !projection.seen_status.lock().expect("lock").is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(!projection.seen_status.lock().expect("lock").is_empty());
    let _ = stop.send(());
    task.await.expect("runner");
    let status = handle.status();
    assert_eq!(status.state, ProjectionState::Stopped);
    assert_eq!(status.restarts, 0, "stopping: not restarted");
    assert_eq!(
        status.last_error.as_deref(),
        Some("projection batch stuck for 5 s")
    );
    assert!(projection.seen.lock().expect("lock").is_empty());
}

/// Waits (bounded) until the runner's status satisfies `condition`.
async fn wait_for_status(
    handle: &ProjectionHandle,
    condition: impl Fn(&ProjectionStatus) -> bool,
) -> ProjectionStatus {
    let mut status = handle.status.clone();
    let reached = tokio::time::timeout(Duration::from_secs(30), async {
        status.wait_for(|s| condition(s)).await.is_ok()
    })
    .await;
    assert_eq!(reached, Ok(true), "still {:?}", handle.status());
    handle.status()
}

/// The runner has applied everything up to `last`, and a check of the log confirmed it.
async fn wait_until_checked(handle: &ProjectionHandle, last: &Position) {
    wait_for_status(handle, |s| {
        s.log_checked.as_ref().is_some_and(|c| c.covers(last))
    })
    .await;
}

#[tokio::test]
async fn a_log_whose_head_fell_below_the_checkpoint_halts_the_runner() {
    let store = Arc::new(InMemoryStore::with_partitions(3));
    let last = append_many(&store, 4, 3).await;
    let projection = Arc::new(Recorder::default());
    let (handle, stop, task) = spawn_runner(Arc::clone(&store), Arc::clone(&projection) as _);
    wait_until_checked(&handle, &last).await;
    let applied = projection.seen.lock().expect("lock").len();
    assert_eq!(applied, 12);
    // A failover to a copy that missed the newest two events of this partition.
    store.lose_newest(last.partition, 2);
    let status = wait_for_status(&handle, |s| s.state == ProjectionState::Halted).await;
    let message = status.last_error.expect("the problem is stated");
    assert!(
        message.contains(&format!(
            "the event log of partition {} went backwards",
            last.partition
        )) && message.contains("ordo replay"),
        "{message}"
    );
    // Halted means halted: a new event elsewhere is not applied, and the runner does
    // not restart itself into applying it.
    let other = (0..3)
        .find(|p| *p != last.partition)
        .expect("another partition");
    let stream = (0..)
        .map(|n| StreamId::new(format!("elsewhere-{n}")))
        .find(|s| crate::partition_of(s.as_str(), 3) == other)
        .expect("a stream in the other partition");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event()])
        .await
        .expect("append");
    for _ in 0..20 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(projection.seen.lock().expect("lock").len(), applied);
    let status = handle.status();
    assert_eq!(status.state, ProjectionState::Halted);
    assert_eq!(status.restarts, 0);
    let _ = stop.send(());
    task.await.expect("runner");
    assert_eq!(handle.status().state, ProjectionState::Stopped);
}

#[tokio::test]
async fn a_runner_that_starts_on_a_log_below_its_checkpoint_halts_at_once() {
    let store = Arc::new(InMemoryStore::new());
    let last = append_many(&store, 2, 3).await;
    let projection = Arc::new(Recorder::default());
    run_until_caught_up(Arc::clone(&store), Arc::clone(&projection), last).await;
    store.lose_newest(0, 1);
    let (handle, stop, task) = spawn_runner(store, Arc::clone(&projection) as _);
    let status = wait_for_status(&handle, |s| s.state == ProjectionState::Halted).await;
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("partition 0 went backwards: it ends at 0.5.0")),
        "{status:?}"
    );
    let _ = stop.send(());
    task.await.expect("runner");
}

#[tokio::test]
async fn positions_handed_out_again_after_a_rollback_halt_the_runner() {
    let store = Arc::new(InMemoryStore::new());
    let last = append_many(&store, 3, 2).await;
    let projection = Arc::new(Recorder::default());
    let (handle, stop, task) = spawn_runner(Arc::clone(&store), Arc::clone(&projection) as _);
    wait_until_checked(&handle, &last).await;
    // Lost the newest three, then new appends get their positions and more: the head
    // is past the checkpoint again, so only the event ids tell.
    store.lose_newest(0, 3);
    for _ in 0..5 {
        store
            .append(&StreamId::new("after"), ExpectedVersion::Any, vec![event()])
            .await
            .expect("append");
    }
    let status = wait_for_status(&handle, |s| s.state == ProjectionState::Halted).await;
    let message = status.last_error.expect("the problem is stated");
    assert!(
        message.contains("the event log of partition 0 went backwards: position 0.")
            && message.contains("now holds event")
            && message.contains("ordo replay"),
        "{message}"
    );
    let _ = stop.send(());
    task.await.expect("runner");
}

#[tokio::test]
async fn a_log_that_only_grows_is_never_taken_for_one_that_went_backwards() {
    let store = Arc::new(InMemoryStore::with_partitions(2));
    let projection = Arc::new(Recorder::default());
    let (handle, stop, task) = spawn_runner(Arc::clone(&store), Arc::clone(&projection) as _);
    for round in 0..5 {
        let mut last = None;
        for s in 0..3 {
            let appended = store
                .append(
                    &StreamId::new(format!("grow-{s}")),
                    ExpectedVersion::Any,
                    vec![event(), event()],
                )
                .await
                .expect("append");
            last = Some(appended.last_position());
        }
        wait_until_checked(&handle, &last.expect("appended")).await;
        let status = handle.status();
        assert_eq!(
            status.state,
            ProjectionState::Running,
            "round {round}: {status:?}"
        );
    }
    assert_eq!(projection.seen.lock().expect("lock").len(), 30);
    let _ = stop.send(());
    task.await.expect("runner");
}

/// Runners of each partition of one log, each with a projection of its own: together
/// they apply every event once, each only its own partition's, and each checkpoint moves
/// in its own partition only.
#[tokio::test]
async fn partition_runners_share_the_log_without_overlap() {
    let store = Arc::new(InMemoryStore::with_partitions(4));
    append_many(&store, 9, 3).await;
    let head = store.head().await.expect("head");
    let permits = Arc::new(tokio::sync::Semaphore::new(1));
    let mut seen = Vec::new();
    for partition in 0..4 {
        let projection = Arc::new(Recorder::default());
        let runner = ProjectionRunner::for_partition(
            Arc::clone(&store) as Arc<dyn EventStore>,
            partition,
            // Runners of one log sharing one permit still get through, one read at a time.
            Some(Arc::clone(&permits)),
            Arc::clone(&projection) as Arc<dyn Projection>,
            config(),
        );
        let handle = runner.handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runner.run(async {
            let _ = stopped.await;
        }));
        let end = Position {
            partition,
            cursor: head.cursor(partition),
        };
        assert!(handle.wait_for(&end, Duration::from_secs(30)).await);
        let _ = stop.send(());
        task.await.expect("runner task");
        let checkpoint = projection
            .checkpoint
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_else(|| Checkpoint::origin(4));
        for other in (0..4).filter(|p| *p != partition) {
            assert_eq!(checkpoint.cursor(other), crate::Cursor::ORIGIN);
        }
        for (stream, version) in projection.seen.lock().expect("lock").iter() {
            assert_eq!(crate::partition_of(stream, 4), partition);
            seen.push((stream.clone(), *version));
        }
    }
    seen.sort();
    let before = seen.len();
    seen.dedup();
    assert_eq!(before, seen.len(), "an event was applied twice");
    assert_eq!(seen.len(), 27, "every event applied once");
}

/// A projection whose lease was lost: the runner reports `fenced`, applies nothing more
/// and does not retry.
#[tokio::test]
async fn a_lost_lease_stops_the_runner_applying() {
    struct Fenced(Mutex<u32>);
    #[async_trait]
    impl Projection for Fenced {
        fn name(&self) -> &str {
            "fenced"
        }
        async fn load_checkpoint(&self) -> Result<Option<Checkpoint>, ProjectionError> {
            Ok(None)
        }
        async fn apply_batch(
            &self,
            _: &[RecordedEvent],
            _: &Checkpoint,
            _: &Checkpoint,
        ) -> Result<(), ProjectionError> {
            *self.0.lock().expect("lock") += 1;
            Err(ProjectionError::LeaseLost("taken over (test)".into()))
        }
        async fn park(
            &self,
            _: &RecordedEvent,
            _: &str,
            _: &Checkpoint,
            _: &Checkpoint,
        ) -> Result<(), ProjectionError> {
            panic!("a fenced runner parks nothing")
        }
    }
    let store = Arc::new(InMemoryStore::new());
    append_many(&store, 2, 3).await;
    let projection = Arc::new(Fenced(Mutex::new(0)));
    let (handle, stop, task) = spawn_runner(
        Arc::clone(&store),
        Arc::clone(&projection) as Arc<dyn Projection>,
    );
    let status = wait_for_status(&handle, |s| s.state == ProjectionState::Fenced).await;
    assert_eq!(status.last_error.as_deref(), Some("taken over (test)"));
    append_many_more(&store).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        *projection.0.lock().expect("lock"),
        1,
        "no retry once fenced"
    );
    assert_eq!(handle.status().state, ProjectionState::Fenced);
    let _ = stop.send(());
    task.await.expect("runner task");
}
