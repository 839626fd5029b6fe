//! Commits with their checkpoint, compare-and-set races, parking.

use super::*;

#[tokio::test]
async fn a_committed_order_can_be_read_back_with_its_checkpoint() {
    let mut f = Fixture::new().await;
    let id = Uuid::now_v7();
    let at = datetime!(2026-01-02 03:04:05.123456 UTC);
    f.project(vec![(
        id,
        1,
        created("Ada", "Ada@Example.com", "Widget", 1990),
        at,
    )])
    .await;
    let view = f
        .store
        .get(id)
        .await
        .expect("get")
        .expect("the order is there");
    assert_eq!(view.customer_email, "ada@example.com");
    assert_eq!(view.total_amount, Money::from_cents(1990));
    assert_eq!(
        (view.status, view.version, view.created_at),
        (Status::Pending, 1, at)
    );
    assert_eq!(
        f.store
            .load_checkpoint(OrderProjection::NAME)
            .await
            .expect("load"),
        Some(f.checkpoint.clone())
    );
    let states = f
        .store
        .load_views(&[id, Uuid::now_v7()])
        .await
        .expect("load views");
    assert_eq!(states.len(), 1);
    assert_eq!(states[&id].version(), 1);

    f.project(vec![(
        id,
        2,
        OrderEvent::StatusChanged(OrderStatusChanged {
            from: Status::Pending,
            to: Status::Confirmed,
        }),
        at,
    )])
    .await;
    assert_eq!(
        f.store
            .get(id)
            .await
            .expect("get")
            .map(|v| (v.status, v.version)),
        Some((Status::Confirmed, 2))
    );
    assert!(
        f.store
            .get(Uuid::now_v7())
            .await
            .expect("get unknown")
            .is_none()
    );
    f.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_commits_from_one_checkpoint_exactly_one_wins() {
    let f = Fixture::new().await;
    // First from the origin (nothing stored: the insert path), then from the
    // checkpoint the winner stored (the update path).
    let mut from = Checkpoint::origin(1);
    for round in 0..2u64 {
        let mut tasks = Vec::new();
        for i in 1..=8u64 {
            let store = f.store.clone();
            let from = from.clone();
            tasks.push(tokio::spawn(async move {
                let mut to = from.clone();
                to.advance(&Position::new(0, 1_000 * (round + 1) + i, i));
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
        from = f
            .store
            .load_checkpoint("race")
            .await
            .expect("load")
            .expect("stored");
    }
    f.done().await;
}

fn parked_event(n: u64, error: &str) -> ParkedEvent {
    ParkedEvent {
        position: format!("0.{n}.{n}"),
        event_id: Uuid::now_v7(),
        stream_id: format!("stream-{n}"),
        version: n,
        event_type: "OrderCreated".into(),
        error: error.into(),
        parked_at: ordo_es::now_micros(),
    }
}

fn past(checkpoint: &Checkpoint, n: u64) -> Checkpoint {
    let mut to = checkpoint.clone();
    to.advance(&Position::new(0, n, n));
    to
}

#[tokio::test]
async fn parking_moves_the_checkpoint_and_lists_oldest_first() {
    let f = Fixture::new().await;
    let origin = Checkpoint::origin(1);
    let (one, two) = (past(&origin, 1), past(&past(&origin, 1), 2));
    let first = parked_event(1, "cannot decode: bad total ✗");
    f.store
        .park("p", first.clone(), &origin, &one)
        .await
        .expect("park from the origin");
    assert_eq!(
        f.store.load_checkpoint("p").await.expect("load"),
        Some(one.clone())
    );

    // A stale checkpoint parks nothing and moves nothing.
    let refused = parked_event(2, "refused");
    for stale in [&origin, &two] {
        let err = f
            .store
            .park("p", refused.clone(), stale, &two)
            .await
            .expect_err("stale from");
        assert!(matches!(err, ReadStoreError::CheckpointMoved), "{err:?}");
    }
    assert_eq!(
        f.store.parked("p").await.expect("parked"),
        vec![first.clone()]
    );

    // The same event parked again (a redelivery) is kept once; the checkpoint moves.
    let mut second = parked_event(2, "nul \0 inside");
    f.store
        .park("p", second.clone(), &one, &two)
        .await
        .expect("park the second");
    let three = past(&two, 3);
    f.store
        .park("p", first.clone(), &two, &three)
        .await
        .expect("park the first again");
    assert_eq!(
        f.store.load_checkpoint("p").await.expect("load"),
        Some(three)
    );
    second.error = "nul \u{FFFD} inside".into();
    assert_eq!(
        f.store.parked("p").await.expect("parked"),
        [first.clone(), second],
        "oldest first, each once; a NUL in the message is replaced"
    );
    assert!(f.store.parked("other").await.expect("parked").is_empty());

    // Parked events of one projection are apart from another's, and reset clears all.
    f.store
        .park("other", first.clone(), &origin, &one)
        .await
        .expect("park in another projection");
    assert_eq!(f.store.parked("other").await.expect("parked").len(), 1);
    f.store.reset().await.expect("reset");
    assert!(f.store.parked("p").await.expect("parked").is_empty());
    assert!(f.store.parked("other").await.expect("parked").is_empty());
    assert_eq!(f.store.load_checkpoint("p").await.expect("load"), None);
    f.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_a_park_and_a_commit_from_one_checkpoint_exactly_one_wins() {
    let f = Fixture::new().await;
    let origin = Checkpoint::origin(1);
    for round in 0..5u64 {
        let from = f
            .store
            .load_checkpoint("race")
            .await
            .expect("load")
            .unwrap_or_else(|| origin.clone());
        let to = past(&from, 10 + round);
        let (a, b) = (f.store.clone(), f.store.clone());
        let (from_a, to_a, from_b, to_b) = (from.clone(), to.clone(), from.clone(), to.clone());
        let parked = parked_event(round, "poison");
        let park = tokio::spawn(async move { a.park("race", parked, &from_a, &to_a).await });
        let commit = tokio::spawn(async move {
            b.commit("race", ReadModelBatch::default().into(), &from_b, &to_b)
                .await
        });
        let results = [park.await.expect("task"), commit.await.expect("task")];
        let parked_won = results[0].is_ok();
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
        let stored = f.store.parked("race").await.expect("parked");
        assert_eq!(
            stored.iter().any(|p| p.version == round),
            parked_won,
            "round {round}: the event is parked exactly when the park won"
        );
    }
    f.done().await;
}

#[tokio::test]
async fn a_commit_from_a_checkpoint_that_moved_changes_nothing() {
    let f = Fixture::new().await;
    let origin = Checkpoint::origin(1);
    let mut one = origin.clone();
    one.advance(&Position::new(0, 5, 1));
    let mut two = one.clone();
    two.advance(&Position::new(0, 6, 2));
    f.store
        .commit("p", ReadModelBatch::default().into(), &origin, &one)
        .await
        .expect("first commit from the origin");
    let id = Uuid::now_v7();
    assert!(
        f.store
            .load_views(&[])
            .await
            .expect("load nothing")
            .is_empty()
    );
    let view = ViewState::Live(Box::new(OrderView {
        order_id: id,
        customer_name: "Bo".into(),
        customer_email: "bo@example.com".into(),
        items: Vec::new(),
        total_amount: Money::from_cents(100),
        currency: "USD".into(),
        status: Status::Pending,
        cancellation_reason: None,
        shipping_address: None,
        created_at: datetime!(2026-01-01 00:00 UTC),
        updated_at: datetime!(2026-01-01 00:00 UTC),
        version: 1,
    }));
    let batch = ReadModelBatch {
        views: vec![(id, view)],
        status_delta: [1, 0, 0, 0, 0, 0],
        revenue_delta: Money::from_cents(100),
        ..ReadModelBatch::default()
    };
    for stale in [&origin, &two] {
        let err = f
            .store
            .commit("p", batch.clone().into(), stale, &two)
            .await
            .expect_err("stale from");
        assert!(matches!(err, ReadStoreError::CheckpointMoved), "{err:?}");
    }
    assert!(
        f.store.get(id).await.expect("get").is_none(),
        "a refused commit stored a view"
    );
    assert_eq!(f.store.summary().await.expect("summary").total_orders, 0);
    assert_eq!(
        f.store.load_checkpoint("p").await.expect("load"),
        Some(one.clone())
    );
    f.store
        .commit("p", batch.into(), &one, &two)
        .await
        .expect("commit from the stored checkpoint");
    assert_eq!(f.store.load_checkpoint("p").await.expect("load"), Some(two));
    assert!(f.store.get(id).await.expect("get").is_some());
    assert_eq!(f.store.load_checkpoint("other").await.expect("load"), None);
    f.done().await;
}

#[tokio::test]
async fn views_stored_with_capitals_are_found_and_counted_under_the_lower_cased_e_mail() {
    // Views stored before stored events decoded lower-cased may hold capitals.
    let f = Fixture::new().await;
    let live = |email: &str, cents: i128| {
        ViewState::Live(Box::new(OrderView {
            order_id: Uuid::now_v7(),
            customer_name: "Ada".into(),
            customer_email: email.into(),
            items: Vec::new(),
            total_amount: Money::from_cents(cents),
            currency: "USD".into(),
            status: Status::Pending,
            cancellation_reason: None,
            shipping_address: None,
            created_at: datetime!(2026-01-01 00:00 UTC),
            updated_at: datetime!(2026-01-01 00:00 UTC),
            version: 1,
        }))
    };
    let mut batch = ReadModelBatch::default();
    for state in [live("Ada@Example.COM", 100), live("ada@example.com", 200)] {
        batch.record_change(&ViewState::Absent, &state);
        let id = state.live().expect("live").order_id;
        batch.views.push((id, state));
    }
    let origin = Checkpoint::origin(1);
    let mut to = origin.clone();
    to.advance(&Position::new(0, 2, 0));
    f.store
        .commit("p", batch.into(), &origin, &to)
        .await
        .expect("commit");
    let page = f
        .store
        .list(&ListQuery {
            customer_email: Some(EmailKey::new("ADA@example.com")),
            ..query()
        })
        .await
        .expect("list");
    assert_eq!(page.total, 2);
    let top = f.store.top_customers(5).await.expect("top customers");
    assert_eq!(top.len(), 1, "{top:?}");
    assert_eq!(top[0].customer_email, "ada@example.com");
    assert_eq!(
        (top[0].customer_name.as_str(), top[0].order_count),
        ("Ada", 2)
    );
    f.done().await;
}
