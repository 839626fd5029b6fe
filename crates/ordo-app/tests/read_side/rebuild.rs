//! Rebuilds beside the live read models: one whose commits never succeed gives up
//! instead of running for ever, and the live read models are left alone; what arrives
//! while the new generation builds its indexes is applied before the switch.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_that_makes_no_progress_gives_up_and_leaves_the_live_read_models_alone() {
    let (events, ids, last) = seeded_log().await;
    let provider = TestGenerations::refusing().provider();
    let side = start(
        &events,
        provider.clone(),
        ReadSideOptions {
            // Long enough for a commit to have failed even on a loaded machine (before
            // the first one, the error would say "none reported").
            stall_limit: Duration::from_secs(5),
            ..ReadSideOptions::default()
        },
    )
    .await;
    assert!(side.wait_for(&last, Duration::from_secs(60)).await);
    let live = side.generation();
    let before = side.store().summary().await.expect("summary");

    let error = side
        .rebuild(&|_, _| {})
        .await
        .expect_err("a rebuild whose commits all fail cannot finish");
    let message = error.to_string();
    assert!(matches!(error, RebuildError::Stalled { .. }), "{message}");
    assert!(
        message.contains("no progress for 5 s") && message.contains("fails (injected)"),
        "the error says why: {message}"
    );
    // Still serving, and still projecting, from the generation it had.
    assert_eq!(side.generation(), live);
    assert_eq!(side.store().summary().await.expect("summary"), before);
    let more = OrderService::new(Arc::clone(&events))
        .update_status(ids[239], Status::Confirmed, CommandContext::default())
        .await
        .expect("one more command");
    assert!(side.wait_for(&more.position, Duration::from_secs(60)).await);
    assert_eq!(
        side.store()
            .get(ids[239])
            .await
            .expect("get")
            .map(|v| v.status),
        Some(Status::Confirmed)
    );
    // The failed rebuild let go of its lock: the next one starts (and gives up too).
    let again = tokio::time::timeout(Duration::from_secs(120), side.rebuild(&|_, _| {}))
        .await
        .expect("a second rebuild was not kept waiting for the first one's lock");
    assert!(
        matches!(again, Err(RebuildError::Stalled { .. })),
        "{again:?}"
    );
    side.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_whose_commits_panic_fails_saying_so_and_leaves_the_live_read_models_alone() {
    let (events, _ids, last) = seeded_log().await;
    let provider = Arc::new(TestGenerations::new(NewGenerations::PanicAtCommits));
    let side = start(
        &events,
        provider.provider(),
        ReadSideOptions {
            stall_limit: Duration::from_secs(5),
            ..ReadSideOptions::default()
        },
    )
    .await;
    assert!(side.wait_for(&last, Duration::from_secs(60)).await);
    let live = side.generation();
    let before = side.store().summary().await.expect("summary");

    let error = tokio::time::timeout(Duration::from_secs(120), side.rebuild(&|_, _| {}))
        .await
        .expect("a rebuild whose runner keeps panicking ends")
        .expect_err("a rebuild whose commits all panic cannot finish");
    let message = error.to_string();
    assert!(matches!(error, RebuildError::Stalled { .. }), "{message}");
    assert!(
        message.contains("panicked") && message.contains("commit panicked (injected)"),
        "the error says why: {message}"
    );
    assert_eq!(side.generation(), live);
    assert_eq!(side.store().summary().await.expect("summary"), before);
    let status = side.status();
    assert_eq!(status.state, ProjectionState::Running, "{status:?}");
    assert_eq!(
        status.restarts, 0,
        "the live runner was not the one panicking"
    );
    side.shutdown().await;
}

/// Given a runtime of their own (the service runs it at a lower CPU priority than its
/// requests), the projections run there: the start-up bulk load, the live runner, a
/// rebuild and the commits they spawn, with nothing left there after a shutdown; and
/// they answer what they answer on the caller's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_run_on_the_runtime_the_read_side_is_given() {
    let (events, ids, last) = seeded_log().await;
    let projections = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("projection runtime");
    let metrics = projections.handle().metrics();
    let side = start(
        &events,
        InMemoryReadStores::new(),
        ReadSideOptions {
            projection_runtime: Some(projections.handle().clone()),
            ..bulk_start(Duration::from_secs(60))
        },
    )
    .await;
    assert!(
        metrics.num_alive_tasks() >= 1,
        "the start-up load runs on the projection runtime"
    );
    assert!(side.wait_for(&last, Duration::from_secs(60)).await);
    assert!(metrics.num_alive_tasks() >= 1, "so does the live runner");
    let busy = metrics.worker_total_busy_duration(0);

    side.rebuild(&|_, _| {}).await.expect("rebuild");
    assert!(
        metrics.worker_total_busy_duration(0) > busy,
        "the rebuild ran on the projection runtime"
    );
    assert!(side.wait_for(&last, Duration::from_secs(60)).await);
    let expected = caught_up_batch_by_batch(&events, &ids, &last).await;
    assert_eq!(answers(&side, &ids).await, expected);

    side.shutdown().await;
    // A task's join handle wakes a moment before the runtime lets go of the task.
    eventually(Duration::from_secs(10), || async {
        match metrics.num_alive_tasks() {
            0 => Ok(()),
            left => Err(left),
        }
    })
    .await
    .unwrap_or_else(|left| panic!("a shutdown stops every projection task: {left} left"));
    projections.shutdown_background();
}

/// The new generation's writes wait while its indexes are built (the embedded store's
/// one writer builds them; a plain CREATE INDEX on PostgreSQL held them off too), and
/// commands keep coming: what they wrote meanwhile is applied to the
/// new generation before the live projection is stopped for the switch, not after,
/// when every read with a consistency token newer than the stop waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_applies_what_arrived_during_its_index_builds_before_it_switches() {
    let (events, mut ids, _) = seeded_log().await;
    let provider = Arc::new(TestGenerations::new(NewGenerations::SlowIndexes));
    let slow = Arc::clone(&provider.slow_indexes);
    let side = start(
        &events,
        provider.provider(),
        ReadSideOptions {
            bulk_start_min_events: u64::MAX,
            ..ReadSideOptions::default()
        },
    )
    .await;
    slow.side.set(Arc::downgrade(&side)).expect("set once");
    let rebuild = tokio::spawn({
        let side = Arc::clone(&side);
        async move { side.rebuild(&|_, _| {}).await }
    });

    slow.building.notified().await;
    let service = OrderService::new(Arc::clone(&events));
    for i in 1_000..1_040u32 {
        let created = service
            .create(create(i), None, CommandContext::default())
            .await
            .expect("create");
        ids.push(created.order_id);
    }
    let last = last_position(&events).await;
    assert!(side.wait_for(&last, Duration::from_secs(30)).await);
    assert!(
        !slow.finished.load(Ordering::SeqCst),
        "the orders were created and projected while the indexes were built"
    );

    rebuild.await.expect("rebuild task").expect("rebuild");
    let live = slow.live_after.lock().expect("states").clone();
    assert!(
        !live.is_empty(),
        "the new generation had orders to apply after its index builds"
    );
    assert!(
        live.iter().all(|s| *s != ProjectionState::Stopped),
        "it applied them while the live projection still ran: {live:?}"
    );
    assert!(side.wait_for(&last, Duration::from_secs(30)).await);
    assert_eq!(
        answers(&side, &ids).await,
        caught_up_batch_by_batch(&events, &ids, &last).await
    );
    side.shutdown().await;
}
