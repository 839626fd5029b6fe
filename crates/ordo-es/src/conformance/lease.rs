//! The conformance suite every [`LeaseStore`] must pass: a shard has one holder at a
//! time, a lapsed or released lease is taken over with a greater token, the old holder
//! can neither renew nor pass the fence, and the live members are the ones that beat.
//!
//! ```text
//! ordo_es::lease_store_conformance!(async { make_a_fresh_isolated_lease_store().await });
//! ```

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::lease::{Lease, LeaseStore};

/// Expands to one `#[tokio::test]` per lease-store case.
#[macro_export]
macro_rules! lease_store_conformance {
    (guarded $make:expr) => {
        $crate::lease_store_conformance!(@all guarded $make);
    };
    ($make:expr) => {
        $crate::lease_store_conformance!(@all plain $make);
    };
    (@all $kind:ident $make:expr) => {
        $crate::event_store_conformance!(@cases $kind $make;
            a_free_shard_is_taken_and_a_held_one_is_not,
            of_concurrent_takers_of_a_free_shard_exactly_one_wins,
            of_concurrent_takers_of_a_released_shard_exactly_one_wins,
            a_lapsed_lease_is_taken_over_with_a_greater_token_and_its_holder_is_fenced_off,
            a_lapsed_lease_nobody_took_is_renewed_by_its_holder,
            a_released_shard_is_taken_at_once_and_the_releaser_is_fenced_off,
            the_live_members_are_those_that_beat_within_their_time,
        );
    };
}

/// Long enough never to lapse during a case.
const LONG: Duration = Duration::from_secs(120);
/// Short enough to lapse soon: cases wait past it (a lower bound, never an upper one).
const SHORT: Duration = Duration::from_millis(200);

fn projection() -> String {
    format!("conformance-{}", Uuid::now_v7().simple())
}

async fn take(store: &dyn LeaseStore, projection: &str, shard: u32, owner: &str) -> Lease {
    store
        .acquire(projection, shard, owner, LONG)
        .await
        .expect("acquire")
        .unwrap_or_else(|| panic!("{owner} could not take shard {shard}"))
}

/// Waits until `owner` takes `shard` (the lease before it lapses), for at most a minute.
async fn take_once_lapsed(
    store: &dyn LeaseStore,
    projection: &str,
    shard: u32,
    owner: &str,
) -> Lease {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(lease) = store
            .acquire(projection, shard, owner, LONG)
            .await
            .expect("acquire")
        {
            return lease;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease of shard {shard} never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Eight takers asking for `shard` at once: the leases they got.
async fn race_for(store: &Arc<dyn LeaseStore>, projection: &str, shard: u32) -> Vec<Lease> {
    let takers: Vec<_> = (0..8)
        .map(|i| {
            let (store, p) = (Arc::clone(store), projection.to_owned());
            tokio::spawn(async move { store.acquire(&p, shard, &format!("taker-{i}"), LONG).await })
        })
        .collect();
    let mut won = Vec::new();
    for taker in takers {
        if let Some(lease) = taker.await.expect("task").expect("acquire") {
            won.push(lease);
        }
    }
    won
}

pub async fn a_free_shard_is_taken_and_a_held_one_is_not(store: Arc<dyn LeaseStore>) {
    let p = projection();
    let a = take(store.as_ref(), &p, 3, "a").await;
    assert_eq!(
        (a.projection.as_str(), a.shard, a.owner.as_str()),
        (p.as_str(), 3, "a")
    );
    assert!(
        store
            .acquire(&p, 3, "b", LONG)
            .await
            .expect("acquire")
            .is_none(),
        "held by a"
    );
    let again = take(store.as_ref(), &p, 3, "a").await;
    assert_eq!(
        again.token, a.token,
        "the holder asking again keeps its lease"
    );
    assert!(again.expires_at >= a.expires_at);
    // Other shards and other projections are apart.
    let b = take(store.as_ref(), &p, 4, "b").await;
    let other = projection();
    take(store.as_ref(), &other, 3, "b").await;
    assert!(store.is_current(&a).await.expect("current"));
    assert!(store.is_current(&b).await.expect("current"));
    let mut leases = store.leases(&p).await.expect("leases");
    leases.sort_by_key(|l| l.shard);
    let held: Vec<_> = leases.iter().map(|l| (l.shard, l.owner.as_str())).collect();
    assert_eq!(held, [(3, "a"), (4, "b")]);
    let renewed = store
        .renew(&a, LONG)
        .await
        .expect("renew")
        .expect("still held");
    assert_eq!(renewed.token, a.token);
}

pub async fn of_concurrent_takers_of_a_free_shard_exactly_one_wins(store: Arc<dyn LeaseStore>) {
    let p = projection();
    let won = race_for(&store, &p, 0).await;
    assert_eq!(won.len(), 1, "{won:?}");
    let leases = store.leases(&p).await.expect("leases");
    assert_eq!(leases, won);
}

pub async fn of_concurrent_takers_of_a_released_shard_exactly_one_wins(store: Arc<dyn LeaseStore>) {
    let p = projection();
    let first = take(store.as_ref(), &p, 0, "first").await;
    store.release(&first).await.expect("release");
    let won = race_for(&store, &p, 0).await;
    assert_eq!(won.len(), 1, "{won:?}");
    assert!(won[0].token > first.token);
    assert_eq!(store.leases(&p).await.expect("leases"), won);
}

pub async fn a_lapsed_lease_is_taken_over_with_a_greater_token_and_its_holder_is_fenced_off(
    store: Arc<dyn LeaseStore>,
) {
    let p = projection();
    let old = store
        .acquire(&p, 1, "paused", SHORT)
        .await
        .expect("acquire")
        .expect("free");
    let new = take_once_lapsed(store.as_ref(), &p, 1, "successor").await;
    assert!(new.token > old.token, "{} after {}", new.token, old.token);
    assert_eq!(new.owner, "successor");
    assert!(!store.is_current(&old).await.expect("current"), "the fence");
    assert!(store.is_current(&new).await.expect("current"));
    assert_eq!(
        store.renew(&old, LONG).await.expect("renew"),
        None,
        "the old holder learns it lost the shard"
    );
    store.release(&old).await.expect("a stale release");
    assert!(
        store.is_current(&new).await.expect("current"),
        "a stale release changes nothing"
    );
    assert!(
        store
            .acquire(&p, 1, "paused", LONG)
            .await
            .expect("acquire")
            .is_none()
    );
}

pub async fn a_lapsed_lease_nobody_took_is_renewed_by_its_holder(store: Arc<dyn LeaseStore>) {
    let p = projection();
    let lease = store
        .acquire(&p, 2, "slow", SHORT)
        .await
        .expect("acquire")
        .expect("free");
    tokio::time::sleep(SHORT * 3).await;
    let renewed = store
        .renew(&lease, LONG)
        .await
        .expect("renew")
        .expect("nobody wrote with a newer token: the holder may go on");
    assert_eq!(renewed.token, lease.token);
    assert!(renewed.expires_at > lease.expires_at);
    assert!(
        store
            .acquire(&p, 2, "other", LONG)
            .await
            .expect("acquire")
            .is_none()
    );
}

pub async fn a_released_shard_is_taken_at_once_and_the_releaser_is_fenced_off(
    store: Arc<dyn LeaseStore>,
) {
    let p = projection();
    let leaving = take(store.as_ref(), &p, 5, "leaving").await;
    store.release(&leaving).await.expect("release");
    assert!(!store.is_current(&leaving).await.expect("current"));
    assert_eq!(store.renew(&leaving, LONG).await.expect("renew"), None);
    let listed = store.leases(&p).await.expect("leases");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].owner.is_empty(), "released: no owner, {listed:?}");
    assert!(
        !store.is_current(&listed[0]).await.expect("current"),
        "a released lease is nobody's"
    );
    assert_eq!(store.renew(&listed[0], LONG).await.expect("renew"), None);
    let joining = take(store.as_ref(), &p, 5, "joining").await;
    assert!(joining.token > leaving.token);
    // The releaser may take it back once it is free again, with a newer token still.
    store.release(&joining).await.expect("release");
    let back = take(store.as_ref(), &p, 5, "leaving").await;
    assert!(back.token > joining.token);
}

pub async fn the_live_members_are_those_that_beat_within_their_time(store: Arc<dyn LeaseStore>) {
    let p = projection();
    assert_eq!(store.heartbeat(&p, "b", LONG).await.expect("beat"), ["b"]);
    assert_eq!(
        store.heartbeat(&p, "a", LONG).await.expect("beat"),
        ["a", "b"],
        "sorted"
    );
    store.heartbeat(&p, "brief", SHORT).await.expect("beat");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let live = store.heartbeat(&p, "a", LONG).await.expect("beat");
        if live == ["a", "b"] {
            break;
        }
        assert_eq!(live, ["a", "b", "brief"]);
        assert!(tokio::time::Instant::now() < deadline, "brief never lapsed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = projection();
    assert_eq!(
        store.heartbeat(&other, "c", LONG).await.expect("beat"),
        ["c"]
    );
}
