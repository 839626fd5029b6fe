//! A bulk load pipelines its commits (batch N+1 folded while batch N commits). It must
//! end with exactly the read models that batches committed one at a time give, also when
//! commits fail on the way and when a poison event sits in the middle of a batch.

use crate::support::*;

/// Counts the batches the projection failed because an order's events did not follow
/// its stored version: what a pipelined batch would see if it loaded an order from the
/// store while the batch before it, which changed that order, was still committing.
#[derive(Debug)]
struct CountingGaps {
    inner: Arc<OrderProjection>,
    gaps: AtomicU32,
}

#[async_trait]
impl Projection for CountingGaps {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn load_checkpoint(&self) -> Result<Option<Checkpoint>, ProjectionError> {
        self.inner.load_checkpoint().await
    }
    async fn apply_batch(
        &self,
        events: &[RecordedEvent],
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ProjectionError> {
        let result = self.inner.apply_batch(events, from, to).await;
        if let Err(ProjectionError::Failed(e)) = &result
            && e.to_string().contains("(a gap)")
        {
            self.gaps.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
    async fn park(
        &self,
        event: &RecordedEvent,
        error: &str,
        from: &Checkpoint,
        to: &Checkpoint,
    ) -> Result<(), ProjectionError> {
        self.inner.park(event, error, from, to).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_bulk_commits_give_the_read_models_of_one_by_one_commits() {
    let (events, ids, last) = seeded_log().await;

    let usual: Arc<dyn OrderReadStore> = Arc::new(InMemoryReadStore::default());
    let (usual_handle, stop_usual) = run(&events, Arc::new(OrderProjection::new(usual.clone())));

    // Early commits, far from the last one, so the failures happen mid-load.
    let failing = Arc::new(FailingCommits::new(vec![2, 5, 6], None));
    let bulk = hooked(InMemoryReadStore::default(), &failing);
    let projection = Arc::new(OrderProjection::new(bulk.clone()));
    projection.begin_bulk().await.expect("bulk mode");
    let counting = Arc::new(CountingGaps {
        inner: Arc::clone(&projection),
        gaps: AtomicU32::new(0),
    });
    let (bulk_handle, stop_bulk) = run(&events, counting.clone());

    let patience = Duration::from_secs(60);
    assert!(
        usual_handle.wait_for(&last, patience).await,
        "usual caught up"
    );
    assert!(
        bulk_handle.wait_for(&last, patience).await,
        "bulk caught up"
    );
    projection
        .finish_bulk()
        .await
        .expect("the last pipelined commit succeeded");
    assert!(
        failing.commits.load(Ordering::SeqCst) > 20,
        "many pipelined commits ran"
    );
    assert_eq!(
        counting.gaps.load(Ordering::SeqCst),
        0,
        "a batch was folded over an order state its predecessor had already changed"
    );
    // After the bulk load the projection commits before returning again.
    let more = OrderService::new(Arc::clone(&events))
        .update_status(ids[239], Status::Confirmed, CommandContext::default())
        .await
        .expect("one more command");
    assert!(usual_handle.wait_for(&more.position, patience).await);
    assert!(bulk_handle.wait_for(&more.position, patience).await);
    let _ = stop_usual.send(true);
    let _ = stop_bulk.send(true);

    let parked = bulk.parked(OrderProjection::NAME).await.expect("parked");
    assert_eq!(parked.len(), 1, "the poison event parked once: {parked:?}");
    assert_eq!(
        parked,
        usual
            .parked(OrderProjection::NAME)
            .await
            .expect("parked")
            .into_iter()
            .map(|p| ParkedEvent {
                parked_at: parked[0].parked_at,
                ..p
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(
        bulk.get(ids[239]).await.expect("get").map(|v| v.status),
        Some(Status::Confirmed),
        "a batch after the bulk load is committed as usual"
    );
    for id in &ids {
        assert_eq!(
            bulk.get(*id).await.expect("get"),
            usual.get(*id).await.expect("get"),
            "order {id}"
        );
    }
    assert_eq!(
        bulk.summary().await.expect("summary"),
        usual.summary().await.expect("summary")
    );
    assert_eq!(
        bulk.top_customers(50).await.expect("top"),
        usual.top_customers(50).await.expect("top")
    );
    let today = time::OffsetDateTime::now_utc().date();
    let (from, to) = (
        today - time::Duration::days(2),
        today + time::Duration::days(1),
    );
    assert_eq!(
        bulk.daily(from, to).await.expect("daily"),
        usual.daily(from, to).await.expect("daily")
    );
    for query in [
        ListQuery::default(),
        ListQuery {
            search: Some("engine".into()),
            limit: 100,
            ..ListQuery::default()
        },
        ListQuery {
            status: Some(Status::Confirmed),
            limit: 100,
            ..ListQuery::default()
        },
        ListQuery {
            customer_email: Some("customer3@example.com".into()),
            limit: 100,
            ..ListQuery::default()
        },
    ] {
        assert_eq!(
            bulk.list(&query).await.expect("list"),
            usual.list(&query).await.expect("list"),
            "{query:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_commit_keeps_failing_is_parked_event_by_event_and_the_load_goes_on() {
    let (events, ids, last) = seeded_log().await;
    let doomed = ids[50];
    let doomed_events = OrderService::new(Arc::clone(&events))
        .history(doomed)
        .await
        .expect("history")
        .len();
    let failing = Arc::new(FailingCommits::new(Vec::new(), Some(doomed)));
    let bulk = hooked(InMemoryReadStore::default(), &failing);
    let projection = Arc::new(OrderProjection::new(bulk.clone()));
    projection.begin_bulk().await.expect("bulk mode");
    let (handle, stop) = run(&events, projection.clone());

    // Before the fix, a pipelined commit's failure was always "unavailable": the runner
    // reloaded and folded the same batch again, forever, and this never returned.
    assert!(
        handle.wait_for(&last, Duration::from_secs(60)).await,
        "the load went past the failing batch"
    );
    wait_stored(bulk.as_ref(), &last).await;
    projection.finish_bulk().await.expect("finish");
    let _ = stop.send(true);

    let parked = bulk.parked(OrderProjection::NAME).await.expect("parked");
    let parked_of_doomed = parked
        .iter()
        .filter(|p| p.stream_id == doomed.to_string())
        .count();
    assert_eq!(
        parked_of_doomed, doomed_events,
        "each event of the order that cannot be stored is parked: {parked:?}"
    );
    assert_eq!(parked.len(), doomed_events + 1, "and the poison event");
    assert_eq!(bulk.get(doomed).await.expect("get"), None);
    assert!(
        bulk.get(ids[51]).await.expect("get").is_some(),
        "the orders after it are there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_of_a_replaced_writer_is_refused_and_changes_nothing() {
    // A runner aborted while its commit was stuck may see that commit land after the
    // runner that replaced it has committed the same events: the checkpoint's
    // compare-and-set must refuse it.
    let (events, _ids, _last) = seeded_log().await;
    let store: Arc<dyn OrderReadStore> = Arc::new(InMemoryReadStore::default());
    let projection = OrderProjection::new(store.clone());
    let origin = Checkpoint::origin(events.partitions());
    let batch = events.read_all(&origin, 50).await.expect("read");
    let mut to = origin.clone();
    for event in &batch {
        to.advance(&event.position);
    }
    projection
        .apply_batch(&batch, &origin, &to)
        .await
        .expect("the replacing runner commits");
    let after = store.summary().await.expect("summary");
    let late = projection.apply_batch(&batch, &origin, &to).await;
    assert!(
        matches!(late, Err(ProjectionError::CheckpointMoved)),
        "{late:?}"
    );
    assert_eq!(store.summary().await.expect("summary"), after);
    assert_eq!(
        store
            .load_checkpoint(OrderProjection::NAME)
            .await
            .expect("checkpoint"),
        Some(to)
    );
}
