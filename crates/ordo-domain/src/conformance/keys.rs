//! The key-store cases: what every [`KeyStore`] backend must do.
//!
//! A store crate runs them with one line in a test module:
//!
//! ```text
//! ordo_domain::key_store_conformance!(async { make_a_fresh_isolated_key_store().await });
//! ordo_domain::key_store_conformance!(guarded async { (store, temp_dir) });
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

use crate::privacy::{EraseOutcome, KeyStore, Subject, WrappedKey};

/// Expands to one `#[tokio::test]` per key-store case.
#[macro_export]
macro_rules! key_store_conformance {
    (guarded $make:expr) => {
        $crate::key_store_conformance!(@all guarded $make);
    };
    ($make:expr) => {
        $crate::key_store_conformance!(@all plain $make);
    };
    (@all $kind:ident $make:expr) => {
        $crate::key_store_conformance!(@one $kind $make;
            a_created_key_is_the_live_key_and_reads_back_by_id,
            of_concurrent_creates_for_one_subject_one_key_wins,
            erasure_destroys_every_key_of_the_subject_and_is_recorded_once,
            a_key_created_after_erasure_is_new_and_erased_on_its_own,
            keys_page_by_id_and_rewrap_only_from_the_bytes_they_hold,
            an_erasure_racing_creates_leaves_no_created_key_readable_unrecorded,
        );
    };
    (@one $kind:ident $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $crate::key_store_conformance!(@make $kind $make);
                $crate::conformance::$case(::std::sync::Arc::new(store)).await;
            }
        )+
    };
    (@make guarded $make:expr) => { $make.await };
    (@make plain $make:expr) => { ($make.await, ()) };
}

const AT: OffsetDateTime = datetime!(2026-05-04 12:00 UTC);

fn subject(n: u8) -> Subject {
    Subject::from_bytes([n; 32])
}

fn key(subject: Subject, fill: u8) -> WrappedKey {
    WrappedKey {
        id: Uuid::now_v7(),
        subject,
        wrapped: vec![fill; 56],
        created_at: AT,
    }
}

pub async fn a_created_key_is_the_live_key_and_reads_back_by_id(store: Arc<dyn KeyStore>) {
    store.ping().await.expect("ping");
    assert_eq!(store.live_key(&subject(1)).await.expect("live"), None);
    let made = key(subject(1), 1);
    let live = store.create_key(made.clone()).await.expect("create");
    assert_eq!(live, made);
    assert_eq!(
        store.live_key(&subject(1)).await.expect("live"),
        Some(made.clone())
    );
    let other = store.create_key(key(subject(2), 2)).await.expect("create");
    let mut found = store
        .keys(&[made.id, Uuid::now_v7(), other.id])
        .await
        .expect("keys");
    found.sort_by_key(|k| k.id);
    let mut expected = vec![made.clone(), other];
    expected.sort_by_key(|k| k.id);
    assert_eq!(found, expected);
    assert_eq!(store.keys(&[]).await.expect("keys"), vec![]);
    // A second create for a subject with a live key returns the live key.
    assert_eq!(
        store.create_key(key(subject(1), 9)).await.expect("create"),
        made
    );
    // The store's own subject key, under the reserved subject and the nil id.
    let index = WrappedKey {
        id: Uuid::nil(),
        ..key(Subject::INDEX, 3)
    };
    assert_eq!(store.create_key(index.clone()).await.expect("index"), index);
    assert_eq!(
        store.live_key(&Subject::INDEX).await.expect("live"),
        Some(index)
    );
}

pub async fn of_concurrent_creates_for_one_subject_one_key_wins(store: Arc<dyn KeyStore>) {
    let racers: Vec<_> = (0..8u8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.create_key(key(subject(5), i)).await })
        })
        .collect();
    let mut winners = HashSet::new();
    for racer in racers {
        winners.insert(racer.await.expect("join").expect("create").id);
    }
    assert_eq!(winners.len(), 1, "every racer got the same live key");
    let live = store
        .live_key(&subject(5))
        .await
        .expect("live")
        .expect("a key");
    assert!(winners.contains(&live.id));
    let all = store.page(None, 100).await.expect("page");
    assert_eq!(all.len(), 1, "the losers' keys were not stored: {all:?}");
}

pub async fn erasure_destroys_every_key_of_the_subject_and_is_recorded_once(
    store: Arc<dyn KeyStore>,
) {
    assert_eq!(
        store.erase(&subject(1), AT, "admin").await.expect("erase"),
        EraseOutcome::Unknown
    );
    let gone = store.create_key(key(subject(1), 1)).await.expect("create");
    let kept = store.create_key(key(subject(2), 2)).await.expect("create");
    let EraseOutcome::Erased(record) = store
        .erase(&subject(1), AT, "admin:1234")
        .await
        .expect("erase")
    else {
        panic!("the first erasure destroys the key");
    };
    assert_eq!(record.subject, subject(1));
    assert_eq!(record.erased_at, AT);
    assert_eq!(record.erased_by, "admin:1234");
    assert_eq!(record.keys_destroyed, 1);
    assert_eq!(store.live_key(&subject(1)).await.expect("live"), None);
    assert_eq!(store.keys(&[gone.id]).await.expect("keys"), vec![]);
    assert!(
        store
            .page(None, 100)
            .await
            .expect("page")
            .iter()
            .all(|k| k.id != gone.id),
        "a destroyed key is not listed"
    );
    assert!(
        !store
            .rewrap(gone.id, &gone.wrapped, b"new")
            .await
            .expect("rewrap")
    );
    // Repeating changes nothing: the first record comes back.
    let later = AT + time::Duration::hours(1);
    assert_eq!(
        store.erase(&subject(1), later, "cli").await.expect("again"),
        EraseOutcome::AlreadyErased(record)
    );
    // Another customer's key is untouched.
    assert_eq!(
        store.live_key(&subject(2)).await.expect("live"),
        Some(kept.clone())
    );
    assert_eq!(store.keys(&[kept.id]).await.expect("keys"), vec![kept]);
}

pub async fn a_key_created_after_erasure_is_new_and_erased_on_its_own(store: Arc<dyn KeyStore>) {
    let first = store.create_key(key(subject(3), 1)).await.expect("create");
    assert!(matches!(
        store.erase(&subject(3), AT, "admin").await.expect("erase"),
        EraseOutcome::Erased(_)
    ));
    let second = store.create_key(key(subject(3), 2)).await.expect("create");
    assert_ne!(second.id, first.id, "a new key, not the erased one back");
    assert_eq!(
        store.live_key(&subject(3)).await.expect("live"),
        Some(second.clone())
    );
    assert_eq!(
        store.keys(&[second.id]).await.expect("keys"),
        vec![second.clone()]
    );
    let later = AT + time::Duration::days(1);
    let EraseOutcome::Erased(record) = store
        .erase(&subject(3), later, "admin")
        .await
        .expect("erase")
    else {
        panic!("the new key is erased by a new erasure");
    };
    assert_eq!((record.erased_at, record.keys_destroyed), (later, 1));
    assert_eq!(
        store.keys(&[first.id, second.id]).await.expect("keys"),
        vec![]
    );
}

pub async fn keys_page_by_id_and_rewrap_only_from_the_bytes_they_hold(store: Arc<dyn KeyStore>) {
    let mut made = Vec::new();
    for n in 10..17u8 {
        made.push(store.create_key(key(subject(n), n)).await.expect("create"));
    }
    made.sort_by_key(|k| k.id);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.page(after, 3).await.expect("page");
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page);
    }
    assert_eq!(seen, made, "every key once, in id order");
    let target = &made[2];
    assert!(
        !store
            .rewrap(target.id, b"not what it holds", b"x")
            .await
            .expect("rewrap")
    );
    assert!(
        store
            .rewrap(target.id, &target.wrapped, b"rewrapped")
            .await
            .expect("rewrap")
    );
    let back = store.keys(&[target.id]).await.expect("keys");
    assert_eq!(back[0].wrapped, b"rewrapped");
    assert!(
        !store
            .rewrap(target.id, &target.wrapped, b"again")
            .await
            .expect("rewrap")
    );
    assert!(
        !store
            .rewrap(Uuid::now_v7(), b"", b"x")
            .await
            .expect("rewrap")
    );
}

pub async fn an_erasure_racing_creates_leaves_no_created_key_readable_unrecorded(
    store: Arc<dyn KeyStore>,
) {
    for round in 0..20u8 {
        let s = subject(100 + round);
        let first = store.create_key(key(s, 1)).await.expect("create");
        let creator = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.create_key(key(s, 2)).await })
        };
        let eraser = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.erase(&s, AT, "admin").await })
        };
        let created = creator.await.expect("join").expect("create");
        let erased = eraser.await.expect("join").expect("erase");
        assert!(
            matches!(erased, EraseOutcome::Erased(_)),
            "the first key was live"
        );
        assert_eq!(store.keys(&[first.id]).await.expect("keys"), vec![]);
        // The created key is either the first (destroyed with it) or a new one made after
        // the erasure, which is then the live key and readable.
        if created.id != first.id {
            assert_eq!(
                store.live_key(&s).await.expect("live"),
                Some(created.clone())
            );
            assert_eq!(
                store.keys(&[created.id]).await.expect("keys"),
                vec![created]
            );
        } else {
            assert_eq!(store.live_key(&s).await.expect("live"), None);
        }
    }
}
