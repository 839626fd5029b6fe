//! The summary, top customers, lists with their filters, sorting, paging and search.

use std::sync::Arc;

use time::macros::{date, datetime};
use uuid::Uuid;

use ordo_es::Checkpoint;

use crate::Money;
use crate::read_store::{ListQuery, OrderReadStore, Sort};
use crate::values::{EmailKey, Status};
use crate::view::ViewState;

use super::{
    PROJECTION, Projector, cancelled, created, deleted, ids_of, live_view, past, query, searching,
    status, storing,
};

pub async fn summary_and_top_customers_follow_creates_cancels_and_deletes(
    store: Arc<dyn OrderReadStore>,
) {
    let mut p = Projector::new(Arc::clone(&store));
    let [a1, a2, b1, c1] = [(); 4].map(|()| Uuid::now_v7());
    let t = |h: u8| datetime!(2026-03-01 00:00 UTC) + time::Duration::hours(i64::from(h));
    p.project(vec![
        (
            a1,
            1,
            created("Ann Old", "ann@example.com", "Lamp", 1000),
            t(1),
        ),
        (b1, 1, created("Ben", "ben@example.com", "Desk", 2500), t(2)),
        (
            a2,
            1,
            created("Ann New", "ann@example.com", "Chair", 1500),
            t(3),
        ),
        (c1, 1, created("Cat", "cat@example.com", "Rug", 2500), t(4)),
    ])
    .await;
    let summary = store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 4);
    assert_eq!(summary.orders_by_status.get(Status::Pending), 4);
    assert_eq!(summary.total_revenue, Money::from_cents(7500));
    assert_eq!(summary.last_updated, Some(t(4)));
    let rows = |top: &[crate::view::TopCustomer]| -> Vec<(String, String, u64, i128)> {
        top.iter()
            .map(|c| {
                (
                    c.customer_email.clone(),
                    c.customer_name.clone(),
                    c.order_count,
                    c.total_spent.cents(),
                )
            })
            .collect()
    };
    let row = |email: &str, name: &str, orders, cents| (email.into(), name.into(), orders, cents);
    assert_eq!(
        rows(&store.top_customers(10).await.expect("top")),
        [
            row("ann@example.com", "Ann New", 2, 2500),
            row("ben@example.com", "Ben", 1, 2500),
            row("cat@example.com", "Cat", 1, 2500),
        ],
        "highest spend first, ties by e-mail; the name of the most recent order"
    );
    assert_eq!(store.top_customers(1).await.expect("top 1").len(), 1);

    // Cancelling Ann's newest order: out of revenue, and her name comes from the most
    // recent order still counted.
    p.project(vec![(a2, 2, cancelled(), t(5))]).await;
    let summary = store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 4);
    assert_eq!(summary.orders_by_status.get(Status::Cancelled), 1);
    assert_eq!(summary.total_revenue, Money::from_cents(6000));
    assert_eq!(summary.average_order_value, Money::from_cents(2000));
    assert_eq!(
        rows(&store.top_customers(10).await.expect("top")),
        [
            row("ben@example.com", "Ben", 1, 2500),
            row("cat@example.com", "Cat", 1, 2500),
            row("ann@example.com", "Ann Old", 1, 1000),
        ]
    );

    // Deleting Ben's only order removes him everywhere; the tombstone keeps the version.
    p.project(vec![(b1, 2, deleted(), t(6))]).await;
    let summary = store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 3);
    assert_eq!(summary.total_revenue, Money::from_cents(3500));
    let emails: Vec<_> = store
        .top_customers(10)
        .await
        .expect("top")
        .into_iter()
        .map(|c| c.customer_email)
        .collect();
    assert_eq!(emails, ["cat@example.com", "ann@example.com"]);
    assert!(store.get(b1).await.expect("get").is_none());
    assert_eq!(
        store.load_views(&[b1]).await.expect("load")[&b1],
        ViewState::Deleted { version: 2 }
    );
    assert_eq!(store.list(&query()).await.expect("list").total, 3);

    // Redelivering an old event changes nothing.
    let answers = async || {
        (
            store.summary().await.expect("summary"),
            store.top_customers(10).await.expect("top"),
            store
                .daily(date!(2026 - 03 - 01), date!(2026 - 03 - 01))
                .await
                .expect("daily"),
            store
                .load_views(&[a1, a2, b1, c1])
                .await
                .expect("views")
                .len(),
            store.list(&query()).await.expect("list"),
        )
    };
    let before = answers().await;
    p.project(vec![(
        b1,
        1,
        created("Ben", "ben@example.com", "Desk", 2500),
        t(2),
    )])
    .await;
    p.project(vec![(a2, 2, cancelled(), t(5))]).await;
    assert_eq!(answers().await, before);

    store.reset().await.expect("reset");
    let summary = store.summary().await.expect("summary");
    assert_eq!(
        (
            summary.total_orders,
            summary.total_revenue,
            summary.last_updated
        ),
        (0, Money::ZERO, None)
    );
    assert!(store.top_customers(10).await.expect("top").is_empty());
    assert_eq!(store.list(&query()).await.expect("list").total, 0);
    assert_eq!(store.load_checkpoint(PROJECTION).await.expect("load"), None);
}

/// Projections of several shards (each its own checkpoint, its own orders) committing
/// at once move the rows they share (the summary, the customers' and the days' figures)
/// by their deltas: no update is lost, none counted twice.
pub async fn shards_committing_at_once_keep_the_shared_figures_exact(
    store: Arc<dyn OrderReadStore>,
) {
    const SHARDS: u64 = 4;
    const BATCHES: u64 = 8;
    let emails = ["ann@example.com", "ben@example.com", "cat@example.com"];
    let days = [
        datetime!(2026-05-01 10:00 UTC),
        datetime!(2026-05-02 10:00 UTC),
    ];
    // Each shard's batches: three new orders (one per customer); from the second batch
    // on, the first order of the batch before is cancelled as well.
    let mut expected: std::collections::BTreeMap<&str, (u64, i128)> = Default::default();
    let mut per_day = [0u64; 2];
    let mut plans = Vec::new();
    for shard in 0..SHARDS {
        let mut batches = Vec::new();
        let mut previous_first: Option<(Uuid, &str, i128)> = None;
        for b in 0..BATCHES {
            let day = usize::try_from(b % 2).expect("day");
            let mut steps = Vec::new();
            let mut first = None;
            for (k, email) in emails.iter().enumerate() {
                let id = Uuid::now_v7();
                let cents = i128::from(100 * (shard + 1) + b) + k as i128;
                steps.push((id, 1, created("Customer", email, "Lamp", cents), days[day]));
                let entry = expected.entry(email).or_default();
                entry.0 += 1;
                entry.1 += cents;
                per_day[day] += 1;
                first.get_or_insert((id, *email, cents));
            }
            if let Some((id, email, cents)) = previous_first.take() {
                steps.push((id, 2, cancelled(), days[day]));
                let entry = expected.entry(email).or_default();
                entry.0 -= 1;
                entry.1 -= cents;
            }
            previous_first = first;
            batches.push(steps);
        }
        plans.push((shard, batches));
    }
    let tasks: Vec<_> = plans
        .into_iter()
        .map(|(shard, batches)| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut p = Projector::named(store, &format!("orders-shard-{shard}"));
                for steps in batches {
                    p.project(steps).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a shard's projection");
    }

    let orders = SHARDS * BATCHES * 3;
    let cancelled_orders = SHARDS * (BATCHES - 1);
    let revenue: i128 = expected.values().map(|(_, cents)| cents).sum();
    let summary = store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, orders);
    assert_eq!(
        summary.orders_by_status.get(Status::Cancelled),
        i64::try_from(cancelled_orders).expect("count")
    );
    assert_eq!(summary.total_revenue, Money::from_cents(revenue));
    let top = store.top_customers(10).await.expect("top");
    let mut found: Vec<(String, u64, i128)> = top
        .iter()
        .map(|c| {
            (
                c.customer_email.clone(),
                c.order_count,
                c.total_spent.cents(),
            )
        })
        .collect();
    found.sort();
    let wanted: Vec<(String, u64, i128)> = expected
        .iter()
        .map(|(email, (n, cents))| ((*email).to_owned(), *n, *cents))
        .collect();
    assert_eq!(found, wanted);
    let daily = store
        .daily(date!(2026 - 05 - 01), date!(2026 - 05 - 02))
        .await
        .expect("daily");
    assert_eq!(
        daily.iter().map(|d| d.orders).collect::<Vec<_>>(),
        per_day.to_vec()
    );
    assert_eq!(
        daily.iter().map(|d| d.revenue).sum::<Money>(),
        Money::from_cents(revenue),
        "the days' revenue is the summary's"
    );
}

pub async fn lists_filter_sort_page_and_search_case_insensitively(store: Arc<dyn OrderReadStore>) {
    let mut p = Projector::new(Arc::clone(&store));
    let t = |h: u8| datetime!(2026-04-01 00:00 UTC) + time::Duration::hours(i64::from(h));
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    p.project(vec![
        (
            ids[0],
            1,
            created("Zoë Quinn", "zoe@example.com", "Blue 100% Wool Scarf", 500),
            t(1),
        ),
        (
            ids[1],
            1,
            created("Max", "max@shop.example", "Red Mug", 1500),
            t(2),
        ),
        (
            ids[2],
            1,
            created("Max", "max@shop.example", "Green Mug", 1000),
            t(3),
        ),
        (
            ids[3],
            1,
            created("Ivy", "ivy@example.com", "Tea", 2000),
            t(4),
        ),
    ])
    .await;
    let list = async |q: ListQuery| store.list(&q).await.expect("list");

    let all = list(query()).await;
    assert_eq!(
        (all.total, ids_of(&all)),
        (4, vec![ids[3], ids[2], ids[1], ids[0]]),
        "newest first by default"
    );
    let sorted = async |sort| ids_of(&list(ListQuery { sort, ..query() }).await);
    assert_eq!(
        sorted(Sort::CreatedAt).await,
        [ids[0], ids[1], ids[2], ids[3]]
    );
    assert_eq!(
        sorted(Sort::TotalAmount).await,
        [ids[0], ids[2], ids[1], ids[3]]
    );
    assert_eq!(
        sorted(Sort::TotalAmountDesc).await,
        [ids[3], ids[1], ids[2], ids[0]]
    );

    assert_eq!(ids_of(&list(searching("mug")).await), [ids[2], ids[1]]);
    assert_eq!(ids_of(&list(searching("100% wool")).await), [ids[0]]);
    assert_eq!(
        ids_of(&list(searching("0%")).await),
        [ids[0]],
        "% is literal in a search"
    );
    assert!(
        list(searching("_ug")).await.orders.is_empty(),
        "_ is literal"
    );
    assert_eq!(ids_of(&list(searching("zoë q")).await), [ids[0]], "by name");
    assert_eq!(list(searching("shop.ex")).await.total, 2, "by e-mail");
    let tail = ids[3].to_string()[24..].to_string();
    assert_eq!(ids_of(&list(searching(&tail)).await), [ids[3]], "by id");
    assert!(list(searching("jacquard")).await.orders.is_empty());

    let filtered = ListQuery {
        customer_email: Some("max@shop.example".into()),
        min_total: Some(Money::from_cents(1000)),
        max_total: Some(Money::from_cents(1500)),
        created_from: Some(t(2)),
        created_to: Some(t(3)),
        status: Some(Status::Pending),
        ..query()
    };
    let page = list(filtered.clone()).await;
    assert_eq!(
        (page.total, ids_of(&page)),
        (2, vec![ids[2], ids[1]]),
        "filters are inclusive"
    );
    let narrower = ListQuery {
        min_total: Some(Money::from_cents(1001)),
        ..filtered
    };
    assert_eq!(ids_of(&list(narrower).await), [ids[1]]);
    let shipped = ListQuery {
        status: Some(Status::Shipped),
        ..query()
    };
    assert_eq!(list(shipped).await.total, 0);
    let searched_and_filtered = ListQuery {
        search: Some("mug".into()),
        max_total: Some(Money::from_cents(1000)),
        ..query()
    };
    assert_eq!(ids_of(&list(searched_and_filtered).await), [ids[2]]);

    let page2 = list(ListQuery {
        page: 2,
        limit: 3,
        ..query()
    })
    .await;
    assert_eq!(
        (page2.total, ids_of(&page2), page2.page, page2.limit),
        (4, vec![ids[0]], 2, 3)
    );
    let beyond = list(ListQuery {
        page: 9,
        limit: 3,
        ..query()
    })
    .await;
    assert_eq!((beyond.total, beyond.orders.len()), (4, 0));

    // A status change moves an order between status filters; a deletion takes it out of
    // every list and search.
    p.project(vec![(
        ids[1],
        2,
        status(Status::Pending, Status::Confirmed),
        t(5),
    )])
    .await;
    let confirmed = ListQuery {
        status: Some(Status::Confirmed),
        ..query()
    };
    assert_eq!(ids_of(&list(confirmed).await), [ids[1]]);
    p.project(vec![(ids[2], 2, deleted(), t(6))]).await;
    assert_eq!(ids_of(&list(searching("mug")).await), [ids[1]]);
    assert_eq!(list(query()).await.total, 3);
}

pub async fn views_stored_with_capitals_are_found_and_counted_under_the_lower_cased_e_mail(
    store: Arc<dyn OrderReadStore>,
) {
    // Views stored before stored events decoded lower-cased may hold capitals.
    let batch = storing(vec![
        live_view("Ada@Example.COM", 100),
        live_view("ada@example.com", 200),
    ]);
    let origin = Checkpoint::origin(1);
    store
        .commit(PROJECTION, batch.into(), &origin, &past(&origin, 2))
        .await
        .expect("commit");
    let page = store
        .list(&ListQuery {
            customer_email: Some(EmailKey::new("ADA@example.com")),
            ..query()
        })
        .await
        .expect("list");
    assert_eq!(page.total, 2);
    let top = store.top_customers(5).await.expect("top customers");
    assert_eq!(top.len(), 1, "{top:?}");
    assert_eq!(top[0].customer_email, "ada@example.com");
    assert_eq!(
        (top[0].customer_name.as_str(), top[0].order_count),
        ("Ada", 2)
    );
}
