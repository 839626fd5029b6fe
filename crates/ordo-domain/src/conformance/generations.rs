//! A provider's generations: apart until one is made active, and the rebuild lock.

use std::sync::Arc;

use time::macros::datetime;
use uuid::Uuid;

use crate::read_store::ReadStoreProvider;

use super::{PROJECTION, Projector, created};

pub async fn generations_are_apart_until_one_is_made_active(provider: Arc<dyn ReadStoreProvider>) {
    let active = provider
        .open_active()
        .await
        .expect("open the active generation");
    assert_eq!(provider.active_id().await.expect("active id"), active.id);
    let mut live = Projector::new(Arc::clone(&active.store));
    let old = Uuid::now_v7();
    live.project(vec![(
        old,
        1,
        created("Ada", "ada@example.com", "Lamp", 100),
        datetime!(2026-01-01 00:00 UTC),
    )])
    .await;

    let next = provider
        .create_generation()
        .await
        .expect("a new generation");
    assert_ne!(next.id, active.id);
    assert_eq!(
        provider.active_id().await.expect("active id"),
        active.id,
        "a new generation is not active"
    );
    assert!(
        next.store.get(old).await.expect("get").is_none(),
        "it starts empty"
    );
    assert_eq!(
        next.store.load_checkpoint(PROJECTION).await.expect("load"),
        None
    );
    let mut rebuilt = Projector::new(Arc::clone(&next.store));
    let new = Uuid::now_v7();
    rebuilt
        .project(vec![(
            new,
            1,
            created("Bo", "bo@example.com", "Desk", 200),
            datetime!(2026-01-02 00:00 UTC),
        )])
        .await;
    assert!(
        active.store.get(new).await.expect("get").is_none(),
        "generations share nothing"
    );
    assert_eq!(
        active.store.summary().await.expect("summary").total_orders,
        1
    );

    provider.activate(&next.id).await.expect("activate");
    assert_eq!(provider.active_id().await.expect("active id"), next.id);
    let reopened = provider
        .open_active()
        .await
        .expect("open the active generation");
    assert_eq!(reopened.id, next.id);
    assert!(reopened.store.get(new).await.expect("get").is_some());
    assert!(reopened.store.get(old).await.expect("get").is_none());

    let lock = provider
        .try_lock_rebuild()
        .await
        .expect("lock")
        .expect("free");
    let spare = provider
        .create_generation()
        .await
        .expect("another generation");
    assert_ne!(spare.id, next.id);
    drop((active, spare));
    let dropped = provider.drop_inactive().await.expect("drop the inactive");
    assert_eq!(dropped, 2, "the old and the spare generation");
    assert_eq!(provider.drop_inactive().await.expect("again"), 0);
    drop(lock);
    assert_eq!(provider.active_id().await.expect("active id"), next.id);
    let still = provider.open_active().await.expect("open");
    assert!(
        still.store.get(new).await.expect("get").is_some(),
        "the active one is kept"
    );
}

pub async fn one_holder_at_a_time_has_the_rebuild_lock(provider: Arc<dyn ReadStoreProvider>) {
    let _active = provider.open_active().await.expect("open");
    let held = provider
        .try_lock_rebuild()
        .await
        .expect("lock")
        .expect("free at first");
    assert!(
        provider.try_lock_rebuild().await.expect("lock").is_none(),
        "held by the first"
    );
    drop(held);
    let again = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            if let Some(lock) = provider.try_lock_rebuild().await.expect("lock") {
                return lock;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("free again once dropped");
    drop(again);
}
