//! Fenced writes: a commit or park carrying a lease applies while the lease is its
//! shard's current one, and changes nothing once the shard was taken over or released,
//! however the writer's own clock sees it.

use std::sync::Arc;
use std::time::Duration;

use ordo_es::{Checkpoint, Lease, LeaseStore};
use uuid::Uuid;

use crate::read_store::{OrderReadStore, ReadModelBatch, ReadStoreError};

use super::{PROJECTION, live_view, parked_event, past, storing};

/// Expands to one `#[tokio::test]` per fencing case. `$make` gives
/// `(store, leases, guard)`: a read store whose fenced writes are checked against
/// `leases` (an `Arc<dyn LeaseStore>`), and what must live as long as they do.
#[macro_export]
macro_rules! read_store_fencing_conformance {
    ($make:expr) => {
        $crate::read_store_fencing_conformance!(@cases $make;
            a_write_fenced_by_a_lease_taken_over_changes_nothing,
            a_released_lease_fences_off_its_writer,
        );
    };
    (@cases $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, leases, _guard) = $make.await;
                $crate::conformance::$case(::std::sync::Arc::new(store), leases).await;
            }
        )+
    };
}

const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_millis(200);

fn shard_key() -> String {
    format!("fencing-{}", Uuid::now_v7().simple())
}

/// `owner` takes `shard` once its lease lapsed, within a minute.
async fn take_over(leases: &dyn LeaseStore, key: &str, shard: u32, owner: &str) -> Lease {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(lease) = leases
            .acquire(key, shard, owner, LONG)
            .await
            .expect("acquire")
        {
            return lease;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lost(result: Result<(), ReadStoreError>, key: &str, shard: u32) {
    match result {
        Err(ReadStoreError::LeaseLost {
            projection,
            shard: s,
        }) => {
            assert_eq!((projection.as_str(), s), (key, shard));
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
}

pub async fn a_write_fenced_by_a_lease_taken_over_changes_nothing(
    store: Arc<dyn OrderReadStore>,
    leases: Arc<dyn LeaseStore>,
) {
    let key = shard_key();
    let paused = leases
        .acquire(&key, 3, "paused", SHORT)
        .await
        .expect("acquire")
        .expect("free");
    let origin = Checkpoint::origin(1);
    let one = past(&origin, 1);
    let first = storing(vec![live_view("ada@example.com", 100)]);
    let first_id = first.views[0].0;
    store
        .commit_fenced(PROJECTION, first.into(), &origin, &one, Some(&paused))
        .await
        .expect("a write fenced by the current lease applies");

    // The holder pauses past its lease; another takes the shard over.
    let successor = take_over(leases.as_ref(), &key, 3, "successor").await;
    let two = past(&one, 2);
    let late = storing(vec![live_view("bo@example.com", 200)]);
    let late_id = late.views[0].0;
    lost(
        store
            .commit_fenced(PROJECTION, late.clone().into(), &one, &two, Some(&paused))
            .await,
        &key,
        3,
    );
    lost(
        store
            .park_fenced(
                PROJECTION,
                parked_event(2, "poison"),
                &one,
                &two,
                Some(&paused),
            )
            .await,
        &key,
        3,
    );
    assert!(
        store.get(late_id).await.expect("get").is_none(),
        "the late commit stored a view"
    );
    assert!(store.parked(PROJECTION).await.expect("parked").is_empty());
    assert_eq!(
        store.load_checkpoint(PROJECTION).await.expect("load"),
        Some(one.clone())
    );
    assert_eq!(store.summary().await.expect("summary").total_orders, 1);

    // The successor writes on from where the shard was left.
    store
        .commit_fenced(PROJECTION, late.into(), &one, &two, Some(&successor))
        .await
        .expect("the successor's write applies");
    assert!(store.get(first_id).await.expect("get").is_some());
    assert!(store.get(late_id).await.expect("get").is_some());
    // A fence does not replace the compare-and-set: a stale checkpoint still loses.
    let err = store
        .commit_fenced(
            PROJECTION,
            ReadModelBatch::default().into(),
            &one,
            &past(&two, 3),
            Some(&successor),
        )
        .await
        .expect_err("stale checkpoint");
    assert!(matches!(err, ReadStoreError::CheckpointMoved), "{err:?}");
}

pub async fn a_released_lease_fences_off_its_writer(
    store: Arc<dyn OrderReadStore>,
    leases: Arc<dyn LeaseStore>,
) {
    let key = shard_key();
    let leaving = leases
        .acquire(&key, 0, "leaving", LONG)
        .await
        .expect("acquire")
        .expect("free");
    let origin = Checkpoint::origin(1);
    store
        .park_fenced(
            PROJECTION,
            parked_event(1, "poison"),
            &origin,
            &past(&origin, 1),
            Some(&leaving),
        )
        .await
        .expect("a park fenced by the current lease applies");
    leases.release(&leaving).await.expect("release");
    let from = past(&origin, 1);
    lost(
        store
            .commit_fenced(
                PROJECTION,
                ReadModelBatch::default().into(),
                &from,
                &past(&from, 2),
                Some(&leaving),
            )
            .await,
        &key,
        0,
    );
    assert_eq!(
        store.load_checkpoint(PROJECTION).await.expect("load"),
        Some(from)
    );
    assert_eq!(store.parked(PROJECTION).await.expect("parked").len(), 1);
}
