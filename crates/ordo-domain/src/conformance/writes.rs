//! Commits with their checkpoint, the compare-and-set under concurrent writers, parking.

use std::sync::Arc;

use time::macros::datetime;
use uuid::Uuid;

use ordo_es::Checkpoint;

use crate::Money;
use crate::read_store::{OrderReadStore, ParkedEvent, ReadModelBatch, ReadStoreError};
use crate::values::Status;

use super::{PROJECTION, Projector, created, live_view, parked_event, past, status, storing};

pub async fn a_committed_order_reads_back_with_its_checkpoint(store: Arc<dyn OrderReadStore>) {
    let mut p = Projector::new(Arc::clone(&store));
    let id = Uuid::now_v7();
    let at = datetime!(2026-01-02 03:04:05.123456 UTC);
    p.project(vec![(
        id,
        1,
        created("Ada", "Ada@Example.com", "Widget", 1990),
        at,
    )])
    .await;
    let view = store
        .get(id)
        .await
        .expect("get")
        .expect("the order is there");
    assert_eq!(view.customer_email.as_deref(), Some("ada@example.com"));
    assert_eq!(view.total_amount, Money::from_cents(1990));
    assert_eq!(
        (view.status, view.version, view.created_at),
        (Status::Pending, 1, at),
        "times keep their microseconds"
    );
    assert_eq!(
        store.load_checkpoint(PROJECTION).await.expect("load"),
        Some(p.checkpoint.clone())
    );
    let states = store
        .load_views(&[id, Uuid::now_v7()])
        .await
        .expect("load views");
    assert_eq!(states.len(), 1, "only the orders the store knows");
    assert_eq!(states[&id].version(), 1);
    assert!(store.load_views(&[]).await.expect("load none").is_empty());

    p.project(vec![(
        id,
        2,
        status(Status::Pending, Status::Confirmed),
        at,
    )])
    .await;
    assert_eq!(
        store
            .get(id)
            .await
            .expect("get")
            .map(|v| (v.status, v.version)),
        Some((Status::Confirmed, 2))
    );
    assert!(store.get(Uuid::now_v7()).await.expect("get").is_none());
    assert_eq!(store.load_checkpoint("other").await.expect("load"), None);
    store.ping().await.expect("ping");
}

pub async fn of_concurrent_commits_from_one_checkpoint_exactly_one_wins(
    store: Arc<dyn OrderReadStore>,
) {
    // First from the origin (nothing stored: the insert path), then from the checkpoint
    // the winner stored (the update path).
    let mut from = Checkpoint::origin(1);
    for round in 0..2u64 {
        let mut tasks = Vec::new();
        for i in 1..=8u64 {
            let store = Arc::clone(&store);
            let from = from.clone();
            tasks.push(tokio::spawn(async move {
                let to = past(&from, 1_000 * (round + 1) + i);
                store
                    .commit("race", ReadModelBatch::default().into(), &from, &to)
                    .await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(()) => won += 1,
                Err(ReadStoreError::CheckpointMoved) => {}
                Err(e) => panic!("unexpected error: {e:?}"),
            }
        }
        assert_eq!(won, 1, "round {round}");
        from = store
            .load_checkpoint("race")
            .await
            .expect("load")
            .expect("stored");
    }
}

pub async fn a_commit_from_a_checkpoint_that_moved_changes_nothing(store: Arc<dyn OrderReadStore>) {
    let origin = Checkpoint::origin(1);
    let one = past(&origin, 5);
    let two = past(&one, 6);
    store
        .commit("p", ReadModelBatch::default().into(), &origin, &one)
        .await
        .expect("first commit from the origin");
    let batch = storing(vec![live_view("bo@example.com", 100)]);
    let id = batch.views[0].0;
    for stale in [&origin, &two] {
        let err = store
            .commit("p", batch.clone().into(), stale, &two)
            .await
            .expect_err("stale from");
        assert!(matches!(err, ReadStoreError::CheckpointMoved), "{err:?}");
    }
    assert!(
        store.get(id).await.expect("get").is_none(),
        "a refused commit stored a view"
    );
    let summary = store.summary().await.expect("summary");
    assert_eq!(
        (summary.total_orders, summary.total_revenue),
        (0, Money::ZERO)
    );
    assert!(store.top_customers(10).await.expect("top").is_empty());
    assert_eq!(
        store.load_checkpoint("p").await.expect("load"),
        Some(one.clone())
    );
    store
        .commit("p", batch.into(), &one, &two)
        .await
        .expect("commit from the stored checkpoint");
    assert_eq!(store.load_checkpoint("p").await.expect("load"), Some(two));
    assert!(store.get(id).await.expect("get").is_some());
    assert_eq!(store.summary().await.expect("summary").total_orders, 1);
}

/// The stored error text of a parked event: as given, or with each NUL replaced by
/// U+FFFD where the database's text cannot hold one (PostgreSQL).
fn stored_as_given(stored: &ParkedEvent, given: &ParkedEvent) -> bool {
    let mut replaced = given.clone();
    replaced.error = given.error.replace('\0', "\u{FFFD}");
    stored == given || *stored == replaced
}

pub async fn parking_moves_the_checkpoint_and_lists_oldest_first(store: Arc<dyn OrderReadStore>) {
    let origin = Checkpoint::origin(1);
    let one = past(&origin, 1);
    let two = past(&one, 2);
    let first = parked_event(1, "cannot decode: bad total ✗");
    store
        .park("p", first.clone(), &origin, &one)
        .await
        .expect("park from the origin");
    assert_eq!(
        store.load_checkpoint("p").await.expect("load"),
        Some(one.clone())
    );

    // A stale checkpoint parks nothing and moves nothing.
    let refused = parked_event(2, "refused");
    for stale in [&origin, &two] {
        let err = store
            .park("p", refused.clone(), stale, &two)
            .await
            .expect_err("stale from");
        assert!(matches!(err, ReadStoreError::CheckpointMoved), "{err:?}");
    }
    assert_eq!(
        store.parked("p").await.expect("parked"),
        vec![first.clone()]
    );

    // The same event parked again (a redelivery) is kept once; the checkpoint moves.
    let second = parked_event(2, "nul \0 inside");
    store
        .park("p", second.clone(), &one, &two)
        .await
        .expect("park the second");
    let three = past(&two, 3);
    store
        .park("p", first.clone(), &two, &three)
        .await
        .expect("park the first again");
    assert_eq!(store.load_checkpoint("p").await.expect("load"), Some(three));
    let parked = store.parked("p").await.expect("parked");
    assert_eq!(parked.len(), 2, "each once: {parked:?}");
    assert_eq!(parked[0], first, "oldest first");
    assert!(stored_as_given(&parked[1], &second), "{:?}", parked[1]);
    assert!(store.parked("other").await.expect("parked").is_empty());

    // Parked events of one projection are apart from another's, and a reset clears all.
    store
        .park("other", first.clone(), &origin, &one)
        .await
        .expect("park in another projection");
    assert_eq!(store.parked("other").await.expect("parked").len(), 1);
    store.reset().await.expect("reset");
    assert!(store.parked("p").await.expect("parked").is_empty());
    assert!(store.parked("other").await.expect("parked").is_empty());
    assert_eq!(store.load_checkpoint("p").await.expect("load"), None);
}

pub async fn of_a_park_and_a_commit_from_one_checkpoint_exactly_one_wins(
    store: Arc<dyn OrderReadStore>,
) {
    let origin = Checkpoint::origin(1);
    for round in 0..5u64 {
        let from = store
            .load_checkpoint("race")
            .await
            .expect("load")
            .unwrap_or_else(|| origin.clone());
        let to = past(&from, 10 + round);
        let (a, b) = (Arc::clone(&store), Arc::clone(&store));
        let (from_a, to_a, from_b, to_b) = (from.clone(), to.clone(), from.clone(), to.clone());
        let parked = parked_event(round, "poison");
        let park = tokio::spawn(async move { a.park("race", parked, &from_a, &to_a).await });
        let commit = tokio::spawn(async move {
            b.commit("race", ReadModelBatch::default().into(), &from_b, &to_b)
                .await
        });
        let results = [park.await.expect("task"), commit.await.expect("task")];
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, ReadStoreError::CheckpointMoved), "{e:?}");
            }
        }
        let stored = store.parked("race").await.expect("parked");
        assert_eq!(
            stored.iter().any(|p| p.version == round),
            results[0].is_ok(),
            "round {round}: the event is parked exactly when the park won"
        );
    }
}
