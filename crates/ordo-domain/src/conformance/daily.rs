//! Orders and revenue per day, and a bulk load against batch by batch.

use std::sync::Arc;

use time::Date;
use time::macros::{date, datetime};
use uuid::Uuid;

use crate::Money;
use crate::read_store::{ListQuery, OrderReadStore, Sort};
use crate::values::Status;
use crate::view::{DailyFigures, fill_days};

use super::{PROJECTION, Projector, Step, cancelled, created, deleted, query, searching, status};

/// Orders created on four days, then changed, cancelled and deleted later; the figures
/// they leave are [`daily_expected`].
pub fn daily_history() -> Vec<Step> {
    let [a, b, c, d, e, g] = [(); 6].map(|()| Uuid::now_v7());
    let order = |cents| created("Ada", "ada@example.com", "Lamp", cents);
    vec![
        (g, 1, order(900), datetime!(2026-11-29 08:00 UTC)),
        (
            a,
            1,
            order(1_000),
            datetime!(2026-11-30 23:59:59.999999 UTC),
        ),
        (b, 1, order(2_550), datetime!(2026-12-01 00:00 UTC)),
        (c, 1, order(450), datetime!(2026-12-01 12:00 UTC)),
        (g, 2, deleted(), datetime!(2026-12-01 14:00 UTC)),
        (
            a,
            2,
            status(Status::Pending, Status::Confirmed),
            datetime!(2026-12-02 09:00 UTC),
        ),
        (b, 2, cancelled(), datetime!(2026-12-02 09:01 UTC)),
        (c, 2, deleted(), datetime!(2026-12-02 09:02 UTC)),
        (d, 1, order(10_000), datetime!(2026-12-01 18:00 UTC)),
        (d, 2, deleted(), datetime!(2026-12-02 09:03 UTC)),
        (e, 1, order(725), datetime!(2026-12-02 10:00 UTC)),
        (
            e,
            2,
            status(Status::Pending, Status::Confirmed),
            datetime!(2026-12-02 11:00 UTC),
        ),
    ]
}

/// 11-29: its only order deleted, no row; 11-30: the order of a microsecond before
/// midnight; 12-01: one cancelled order (one deleted, one created and deleted); 12-02:
/// one order.
pub fn daily_expected() -> Vec<DailyFigures> {
    let day = |date, orders, cents| DailyFigures {
        date,
        orders,
        revenue: Money::from_cents(cents),
    };
    vec![
        day(date!(2026 - 11 - 30), 1, 1_000),
        day(date!(2026 - 12 - 01), 1, 0),
        day(date!(2026 - 12 - 02), 1, 725),
    ]
}

const DAILY_FROM: Date = date!(2026 - 11 - 01);
const DAILY_TO: Date = date!(2026 - 12 - 31);

async fn daily_of(store: &dyn OrderReadStore) -> Vec<DailyFigures> {
    store.daily(DAILY_FROM, DAILY_TO).await.expect("daily")
}

pub async fn the_figures_of_each_day_follow_creates_status_changes_cancels_and_deletes(
    store: Arc<dyn OrderReadStore>,
) {
    let mut p = Projector::new(Arc::clone(&store));
    let steps = daily_history();
    // The order of 11-29 created in one batch and deleted in the next: its day's row
    // goes to zero across batches and must go.
    p.project(steps[..4].to_vec()).await;
    p.project(steps[4..5].to_vec()).await;
    let day = |date, orders, cents| DailyFigures {
        date,
        orders,
        revenue: Money::from_cents(cents),
    };
    assert_eq!(
        daily_of(store.as_ref()).await,
        [
            day(date!(2026 - 11 - 30), 1, 1_000),
            day(date!(2026 - 12 - 01), 2, 3_000)
        ],
        "the day whose only order was deleted has no row left"
    );
    for step in &steps[5..] {
        p.project(vec![step.clone()]).await;
    }
    let stored = daily_of(store.as_ref()).await;
    assert_eq!(stored, daily_expected());
    assert_eq!(
        store
            .daily(date!(2026 - 12 - 01), date!(2026 - 12 - 01))
            .await
            .expect("daily"),
        [daily_expected()[1]],
        "both ends are included"
    );
    assert!(
        store
            .daily(date!(2026 - 12 - 03), date!(2027 - 01 - 01))
            .await
            .expect("daily")
            .is_empty()
    );
    // Summed over the days: the summary's totals.
    let summary = store.summary().await.expect("summary");
    let filled = fill_days(DAILY_FROM, DAILY_TO, &stored);
    assert_eq!(filled.len(), 61);
    assert_eq!(
        filled.iter().map(|d| d.orders).sum::<u64>(),
        summary.total_orders
    );
    assert_eq!(
        filled.iter().map(|d| d.revenue).sum::<Money>(),
        summary.total_revenue
    );
    // Changes that cancel out within a batch write nothing.
    let (kept, gone) = (Uuid::now_v7(), Uuid::now_v7());
    let at = datetime!(2026-12-02 15:00 UTC);
    p.project(vec![
        (gone, 1, created("Bo", "bo@example.com", "Desk", 800), at),
        (gone, 2, deleted(), at),
        (kept, 1, created("Cy", "cy@example.com", "Pen", 25), at),
    ])
    .await;
    assert_eq!(
        daily_of(store.as_ref()).await[2],
        day(date!(2026 - 12 - 02), 2, 750)
    );
    // A reset empties the model; the log projected again gives the same figures.
    store.reset().await.expect("reset");
    assert!(daily_of(store.as_ref()).await.is_empty());
    p.restart();
    p.project(steps).await;
    assert_eq!(daily_of(store.as_ref()).await, daily_expected());
}

/// Everything the queries answer, for comparing two stores.
async fn answers(store: &dyn OrderReadStore, ids: &[Uuid]) -> String {
    let queries = [
        query(),
        searching("engine"),
        searching("loom"),
        ListQuery {
            customer_email: Some("lovelace@example.com".into()),
            ..query()
        },
        ListQuery {
            customer_email: Some("ada@example.com".into()),
            ..query()
        },
        ListQuery {
            status: Some(Status::Pending),
            sort: Sort::TotalAmount,
            ..query()
        },
        ListQuery {
            page: 2,
            limit: 2,
            sort: Sort::CreatedAt,
            ..query()
        },
    ];
    let mut out = Vec::new();
    for q in &queries {
        out.push(format!("{q:?} -> {:?}", store.list(q).await.expect("list")));
    }
    for id in ids {
        out.push(format!("{id} -> {:?}", store.get(*id).await.expect("get")));
    }
    out.push(format!(
        "{:?}",
        store.load_views(ids).await.map(|v| {
            let mut v: Vec<_> = v.into_iter().collect();
            v.sort_by_key(|(id, _)| *id);
            v
        })
    ));
    out.push(format!("{:?}", store.summary().await.expect("summary")));
    out.push(format!("{:?}", store.top_customers(10).await.expect("top")));
    out.push(format!("{:?}", daily_of(store).await));
    out.push(format!(
        "{:?}",
        store.load_checkpoint(PROJECTION).await.expect("checkpoint")
    ));
    out.join("\n")
}

pub async fn a_bulk_load_answers_every_query_like_batches_applied_one_by_one(
    usual: Arc<dyn OrderReadStore>,
    bulk: Arc<dyn OrderReadStore>,
) {
    let t = |m: i64| datetime!(2026-11-26 10:00 UTC) + time::Duration::minutes(m);
    let [a, b, c, d] = [(); 4].map(|()| Uuid::now_v7());
    let mut steps = vec![
        (
            a,
            1,
            created("Ada", "lovelace@example.com", "Analytical Engine", 12_000),
            t(0),
        ),
        (
            b,
            1,
            created("Ada L.", "lovelace@example.com", "Difference Engine", 5_000),
            t(0),
        ),
        (c, 1, created("Bob", "bob@example.com", "Loom", 700), t(1)),
        (c, 2, deleted(), t(2)),
        (b, 2, status(Status::Pending, Status::Confirmed), t(3)),
        (d, 1, created("Cy", "cy@example.com", "Pen", 300), t(4)),
        (d, 2, cancelled(), t(5)),
    ];
    steps.extend(daily_history());
    let ids: Vec<Uuid> = {
        let mut ids: Vec<Uuid> = steps.iter().map(|s| s.0).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let mut one_by_one = Projector::new(Arc::clone(&usual));
    for step in &steps {
        one_by_one.project(vec![step.clone()]).await;
    }
    let mut loading = Projector::new(Arc::clone(&bulk));
    bulk.begin_bulk()
        .await
        .expect("bulk mode on an empty store");
    for chunk in steps.chunks(4) {
        loading.project(chunk.to_vec()).await;
    }
    bulk.finish_bulk().await.expect("finish");
    bulk.finish_bulk()
        .await
        .expect("finishing twice is harmless");
    assert_eq!(
        answers(bulk.as_ref(), &ids).await,
        answers(usual.as_ref(), &ids).await,
        "every answer and the checkpoint"
    );
    assert_eq!(
        bulk.list(&searching("engine")).await.expect("search").total,
        2
    );
    let mut expected_days = vec![DailyFigures {
        date: date!(2026 - 11 - 26),
        orders: 3,
        revenue: Money::from_cents(17_000),
    }];
    expected_days.extend(daily_expected());
    assert_eq!(
        daily_of(bulk.as_ref()).await,
        expected_days,
        "the deleted order left its day; a day with no order left has no row"
    );
    assert_eq!(
        bulk.top_customers(1).await.expect("top")[0].customer_name,
        "Ada L.",
        "both of her orders have one createdAt: the later id names her"
    );

    // After the bulk load, batches keep the search index in step as usual.
    let e = Uuid::now_v7();
    loading
        .project(vec![(
            e,
            1,
            created("Eve", "eve@example.com", "Jacquard loom", 900),
            t(6),
        )])
        .await;
    assert_eq!(
        bulk.list(&searching("jacquard"))
            .await
            .expect("search")
            .total,
        1
    );
}
