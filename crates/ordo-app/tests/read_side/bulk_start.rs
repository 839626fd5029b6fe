//! Empty read models started on a long log are loaded in bulk, into a generation that
//! then replaces the empty one, and fall back to catching up batch by batch when that
//! fails.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_read_models_on_a_long_log_are_loaded_in_bulk_and_answer_what_a_catch_up_does() {
    let (events, ids, last) = seeded_log().await;
    let plain = start_batch_by_batch(&events).await;
    let bulk = start(
        &events,
        InMemoryReadStores::new(),
        bulk_start(Duration::from_secs(60)),
    )
    .await;
    let (empty, first) = (bulk.generation(), plain.generation());
    assert!(plain.wait_for(&last, Duration::from_secs(60)).await);
    assert!(bulk.wait_for(&last, Duration::from_secs(60)).await);
    assert_eq!(bulk.status().state, ProjectionState::Running);
    assert_eq!(bulk.loading_generation(), None, "the load is over");
    assert_ne!(
        bulk.generation(),
        empty,
        "the generation loaded in bulk replaced the empty one"
    );
    assert_eq!(
        plain.generation(),
        first,
        "no bulk load: the first generation stays"
    );
    assert_eq!(answers(&bulk, &ids).await, answers(&plain, &ids).await);

    // After the load the new generation follows the log like any other.
    let more = OrderService::new(Arc::clone(&events))
        .update_status(ids[238], Status::Confirmed, CommandContext::default())
        .await
        .expect("one more command");
    assert!(bulk.wait_for(&more.position, Duration::from_secs(60)).await);
    assert!(
        plain
            .wait_for(&more.position, Duration::from_secs(60))
            .await
    );
    assert_eq!(answers(&bulk, &ids).await, answers(&plain, &ids).await);
    // And it is the active one for the next start: nothing is loaded again.
    let loaded = bulk.generation();
    bulk.shutdown().await;
    bulk.settled().await;
    drop(bulk);
    let again = start(
        &events,
        InMemoryReadStores::new(),
        bulk_start(Duration::from_secs(60)),
    )
    .await;
    assert!(
        again
            .wait_for(&more.position, Duration::from_secs(60))
            .await
    );
    assert_eq!(again.generation(), loaded);
    assert_eq!(answers(&again, &ids).await, answers(&plain, &ids).await);
    again.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_at_start_that_makes_no_progress_falls_back_to_catching_up() {
    let (events, ids, last) = seeded_log().await;
    let side = start(
        &events,
        TestGenerations::refusing().provider(),
        bulk_start(Duration::from_secs(2)),
    )
    .await;
    let active = side.generation();
    let loading = side
        .loading_generation()
        .expect("a generation is being loaded");
    assert_ne!(loading, active);
    // The generation being loaded answers no query: no consistency token is taken as
    // covered, and the service does not report caught up, while it stalls.
    assert!(!side.wait_for(&last, Duration::from_millis(500)).await);
    assert_ne!(side.status().state, ProjectionState::Running);
    assert_eq!(
        side.store().summary().await.expect("summary").total_orders,
        0,
        "queries meanwhile are answered from the (empty) active read models"
    );
    // Past the stall limit, the active generation is caught up batch by batch.
    fell_back_to_catching_up(&side, &active, &events, &ids, &last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_stopped_during_its_bulk_load_discards_it_and_loads_again_at_the_next_start() {
    let (events, ids, last) = seeded_log().await;
    let stores = InMemoryReadStores::new();
    // A load that cannot finish (its generation refuses every commit) when the service
    // is stopped.
    let stuck = start(
        &events,
        TestGenerations::over(Arc::clone(&stores), NewGenerations::RefuseCommits).provider(),
        bulk_start(Duration::from_secs(600)),
    )
    .await;
    let empty = stuck.generation();
    tokio::time::timeout(Duration::from_secs(60), stuck.shutdown())
        .await
        .expect("a shutdown during the load is not kept waiting");
    tokio::time::timeout(Duration::from_secs(60), stuck.settled())
        .await
        .expect("the load let go of its locks");
    assert_eq!(stuck.generation(), empty, "nothing was switched");
    drop(stuck);

    let restarted = start(
        &events,
        Arc::clone(&stores) as Arc<dyn ReadStoreProvider>,
        bulk_start(Duration::from_secs(60)),
    )
    .await;
    assert!(restarted.wait_for(&last, Duration::from_secs(60)).await);
    assert_ne!(restarted.generation(), empty, "loaded in bulk again");
    assert_eq!(
        answers(&restarted, &ids).await,
        caught_up_batch_by_batch(&events, &ids, &last).await
    );
    restarted.shutdown().await;
    restarted.settled().await;
    // One generation in use, the one left by the stopped load removed.
    assert_eq!(stores.generation_ids(), [restarted.generation()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_that_cannot_begin_leaves_no_generation_behind_and_catches_up() {
    let (events, ids, last) = seeded_log().await;
    let provider = Arc::new(TestGenerations::new(NewGenerations::RefuseBulk));
    let side = start(
        &events,
        provider.provider(),
        bulk_start(Duration::from_secs(60)),
    )
    .await;
    assert_eq!(
        provider.created.load(Ordering::SeqCst),
        1,
        "a load was tried"
    );
    let files = provider.inner.generation_ids();
    assert_eq!(
        files.len(),
        1,
        "its generation was dropped at once: {files:?}"
    );
    let active = side.generation();
    fell_back_to_catching_up(&side, &active, &events, &ids, &last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_asked_for_during_the_bulk_start_waits_for_it_instead_of_loading_twice() {
    let (events, ids, last) = seeded_log().await;
    let provider = Arc::new(TestGenerations::counting());
    let side = start(
        &events,
        provider.provider(),
        bulk_start(Duration::from_secs(60)),
    )
    .await;
    let empty = side.generation();
    let reports = std::sync::Mutex::new(Vec::new());
    side.rebuild(&|done, total| reports.lock().expect("reports").push((done, total)))
        .await
        .expect("the rebuild is the bulk load");
    assert_eq!(
        provider.created.load(Ordering::SeqCst),
        1,
        "one generation loaded"
    );
    assert_ne!(side.generation(), empty);
    let reports = reports.into_inner().expect("reports");
    let (done, total) = *reports.last().expect("progress was reported");
    assert!(done >= 400 && done == total, "{reports:?}");
    assert!(side.wait_for(&last, Duration::from_secs(60)).await);

    let expected = caught_up_batch_by_batch(&events, &ids, &last).await;
    assert_eq!(answers(&side, &ids).await, expected);

    // Once the load is done, a rebuild is a rebuild again.
    side.rebuild(&|_, _| {}).await.expect("a second rebuild");
    assert_eq!(provider.created.load(Ordering::SeqCst), 2);
    assert_eq!(answers(&side, &ids).await, expected);
    side.shutdown().await;
}
