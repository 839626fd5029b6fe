//! Orders and revenue per day.

use super::*;

/// Orders created on four days, then changed, cancelled and deleted later; the
/// figures they leave are [`daily_expected`].
pub(super) fn daily_history() -> Vec<Step> {
    let [a, b, c, d, e, g] = [(); 6].map(|_| Uuid::now_v7());
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
/// midnight; 12-01: one cancelled order (one deleted, one created and deleted);
/// 12-02: one order.
pub(super) fn daily_expected() -> Vec<DailyFigures> {
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

pub(super) async fn daily_of(store: &PgReadStore) -> Vec<DailyFigures> {
    store.daily(DAILY_FROM, DAILY_TO).await.expect("daily")
}

#[tokio::test]
async fn the_figures_of_each_day_follow_creates_status_changes_cancels_and_deletes() {
    let mut f = Fixture::new().await;
    let steps = daily_history();
    f.project(steps[..5].to_vec()).await;
    assert_eq!(
        daily_of(&f.store).await,
        vec![
            DailyFigures {
                date: date!(2026 - 11 - 30),
                orders: 1,
                revenue: Money::from_cents(1_000)
            },
            DailyFigures {
                date: date!(2026 - 12 - 01),
                orders: 2,
                revenue: Money::from_cents(3_000)
            },
        ],
        "the day whose only order was deleted has no row left"
    );
    for step in &steps[5..] {
        f.project(vec![step.clone()]).await;
    }
    let stored = daily_of(&f.store).await;
    assert_eq!(stored, daily_expected());
    assert_eq!(
        f.store
            .daily(date!(2026 - 12 - 01), date!(2026 - 12 - 01))
            .await
            .expect("daily"),
        vec![daily_expected()[1]],
        "both ends are included"
    );
    // Summed over the days: the summary's totals.
    let summary = f.store.summary().await.expect("summary");
    let filled = ordo_domain::fill_days(DAILY_FROM, DAILY_TO, &stored);
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
    f.project(vec![
        (gone, 1, created("Bo", "bo@example.com", "Desk", 800), at),
        (gone, 2, deleted(), at),
        (kept, 1, created("Cy", "cy@example.com", "Pen", 25), at),
    ])
    .await;
    assert_eq!(daily_of(&f.store).await[2].revenue, Money::from_cents(750));
    // A reset empties the model; the log projected again gives the same figures.
    f.store.reset().await.expect("reset");
    assert!(daily_of(&f.store).await.is_empty());
    f.checkpoint = Checkpoint::origin(1);
    f.project(steps).await;
    assert_eq!(daily_of(&f.store).await, daily_expected());
    f.done().await;
}

#[tokio::test]
async fn a_bulk_load_gives_the_daily_figures_of_batches_applied_one_by_one() {
    let steps = daily_history();
    let mut usual = Fixture::new().await;
    for step in &steps {
        usual.project(vec![step.clone()]).await;
    }
    let mut bulk = Fixture::new().await;
    bulk.projection.begin_bulk().await.expect("bulk mode");
    for chunk in steps.chunks(5) {
        bulk.project(chunk.to_vec()).await;
    }
    bulk.projection.finish_bulk().await.expect("finish");
    assert_eq!(daily_of(&usual.store).await, daily_expected());
    assert_eq!(daily_of(&bulk.store).await, daily_expected());
    usual.done().await;
    bulk.done().await;
}
