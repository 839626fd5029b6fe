//! The summary, top customers and lists.

use super::*;

#[tokio::test]
async fn summary_and_top_customers_follow_creates_cancels_and_deletes() {
    let mut f = Fixture::new().await;
    let (a1, a2, b1, c1) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let t = |h: u8| datetime!(2026-03-01 00:00 UTC) + time::Duration::hours(i64::from(h));
    f.project(vec![
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
    let summary = f.store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 4);
    assert_eq!(summary.orders_by_status.get(Status::Pending), 4);
    assert_eq!(summary.total_revenue, Money::from_cents(7500));
    assert_eq!(summary.last_updated, Some(t(4)));
    let top = f.store.top_customers(10).await.expect("top");
    let rows: Vec<_> = top
        .iter()
        .map(|c| {
            (
                c.customer_email.as_str(),
                c.customer_name.as_str(),
                c.order_count,
                c.total_spent.cents(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("ann@example.com", "Ann New", 2, 2500),
            ("ben@example.com", "Ben", 1, 2500),
            ("cat@example.com", "Cat", 1, 2500),
        ]
    );
    assert_eq!(f.store.top_customers(1).await.expect("top 1").len(), 1);

    // Cancelling Ann's newest order: out of revenue, and her name comes from the
    // most recent order still counted.
    f.project(vec![(a2, 2, cancelled(), t(5))]).await;
    let summary = f.store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 4);
    assert_eq!(summary.orders_by_status.get(Status::Cancelled), 1);
    assert_eq!(summary.total_revenue, Money::from_cents(6000));
    assert_eq!(summary.average_order_value, Money::from_cents(2000));
    let top = f.store.top_customers(10).await.expect("top");
    assert_eq!(top[2].customer_email, "ann@example.com");
    assert_eq!(
        (top[2].customer_name.as_str(), top[2].order_count),
        ("Ann Old", 1)
    );

    // Deleting Ben's only order removes him everywhere; the tombstone keeps the version.
    f.project(vec![(b1, 2, OrderEvent::Deleted(OrderDeleted {}), t(6))])
        .await;
    let summary = f.store.summary().await.expect("summary");
    assert_eq!(summary.total_orders, 3);
    assert_eq!(summary.total_revenue, Money::from_cents(3500));
    let emails: Vec<_> = f
        .store
        .top_customers(10)
        .await
        .expect("top")
        .into_iter()
        .map(|c| c.customer_email)
        .collect();
    assert_eq!(emails, ["cat@example.com", "ann@example.com"]);
    assert!(f.store.get(b1).await.expect("get").is_none());
    assert_eq!(
        f.store.load_views(&[b1]).await.expect("load")[&b1],
        ViewState::Deleted { version: 2 }
    );
    assert_eq!(f.store.list(&query()).await.expect("list").total, 3);

    // Redelivering an old event changes nothing.
    let before = f.store.summary().await.expect("summary");
    f.project(vec![(
        b1,
        1,
        created("Ben", "ben@example.com", "Desk", 2500),
        t(2),
    )])
    .await;
    assert_eq!(
        f.store.summary().await.expect("summary").total_revenue,
        before.total_revenue
    );

    f.store.reset().await.expect("reset");
    let summary = f.store.summary().await.expect("summary");
    assert_eq!(
        (
            summary.total_orders,
            summary.total_revenue,
            summary.last_updated
        ),
        (0, Money::ZERO, None)
    );
    assert!(f.store.top_customers(10).await.expect("top").is_empty());
    assert_eq!(
        f.store
            .load_checkpoint(OrderProjection::NAME)
            .await
            .expect("load"),
        None
    );
    f.done().await;
}

#[tokio::test]
async fn lists_filter_sort_page_and_search_case_insensitively() {
    let mut f = Fixture::new().await;
    let t = |h: u8| datetime!(2026-04-01 00:00 UTC) + time::Duration::hours(i64::from(h));
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    f.project(vec![
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
    let found = |page: &OrderPage| page.orders.iter().map(|o| o.order_id).collect::<Vec<_>>();

    let all = f.store.list(&query()).await.expect("list");
    assert_eq!(
        (all.total, found(&all)),
        (4, vec![ids[3], ids[2], ids[1], ids[0]])
    );
    let oldest_first = f
        .store
        .list(&ListQuery {
            sort: Sort::CreatedAt,
            ..query()
        })
        .await
        .expect("list");
    assert_eq!(found(&oldest_first), [ids[0], ids[1], ids[2], ids[3]]);
    let cheap_first = f
        .store
        .list(&ListQuery {
            sort: Sort::TotalAmount,
            ..query()
        })
        .await
        .expect("list");
    assert_eq!(found(&cheap_first), [ids[0], ids[2], ids[1], ids[3]]);

    let mugs = f
        .store
        .list(&ListQuery {
            search: Some("mug".into()),
            ..query()
        })
        .await
        .expect("search");
    assert_eq!(found(&mugs), [ids[2], ids[1]]);
    let wool = f
        .store
        .list(&ListQuery {
            search: Some("100% wool".into()),
            ..query()
        })
        .await
        .expect("search");
    assert_eq!(found(&wool), [ids[0]]);
    let literal = f
        .store
        .list(&ListQuery {
            search: Some("0%".into()),
            ..query()
        })
        .await
        .expect("search");
    assert_eq!(found(&literal), [ids[0]], "% is literal in a search");
    let by_name = f
        .store
        .list(&ListQuery {
            search: Some("zoë q".into()),
            ..query()
        })
        .await
        .expect("search");
    assert_eq!(found(&by_name), [ids[0]]);
    let by_email = f
        .store
        .list(&ListQuery {
            search: Some("shop.ex".into()),
            ..query()
        })
        .await
        .expect("search");
    assert_eq!(by_email.total, 2);
    let by_id = f
        .store
        .list(&ListQuery {
            search: Some(ids[3].to_string()[24..].to_string()),
            ..query()
        })
        .await
        .expect("search");
    assert_eq!(found(&by_id), [ids[3]]);

    let filtered = ListQuery {
        customer_email: Some("max@shop.example".into()),
        min_total: Some(Money::from_cents(1000)),
        max_total: Some(Money::from_cents(1500)),
        created_from: Some(t(2)),
        created_to: Some(t(3)),
        status: Some(Status::Pending),
        ..query()
    };
    assert_eq!(
        found(&f.store.list(&filtered).await.expect("list")),
        [ids[2], ids[1]],
        "filters are inclusive"
    );
    let none = ListQuery {
        status: Some(Status::Shipped),
        ..query()
    };
    assert_eq!(f.store.list(&none).await.expect("list").total, 0);

    let page2 = f
        .store
        .list(&ListQuery {
            page: 2,
            limit: 3,
            ..query()
        })
        .await
        .expect("page 2");
    assert_eq!(
        (page2.total, found(&page2), page2.page, page2.limit),
        (4, vec![ids[0]], 2, 3)
    );
    let past = f
        .store
        .list(&ListQuery {
            page: 9,
            limit: 3,
            ..query()
        })
        .await
        .expect("past the end");
    assert_eq!((past.total, past.orders.len()), (4, 0));

    // With a table of realistic size the planner serves a search from the trigram
    // index instead of reading every row.
    let client = testdb::raw_client().await;
    let plan = client
        .simple_query(&format!(
            "CREATE TEMP TABLE filler AS SELECT gen_random_uuid() AS id, i FROM generate_series(1, 5000) AS i;
                 INSERT INTO \"{s}\".orders (order_id, version, deleted, doc, status, customer_email, customer_name,
                     total_cents, created_at)
                 SELECT id, 1, false, '{{}}', 'pending', 'filler' || i || '@example.com', 'Filler', i, now()
                 FROM filler;
                 INSERT INTO \"{s}\".order_search (order_id, search_text)
                 SELECT id, 'filler ' || md5(i::text) FROM filler;
                 ANALYZE \"{s}\".orders;
                 ANALYZE \"{s}\".order_search;
                 EXPLAIN SELECT order_id FROM \"{s}\".orders o WHERE NOT o.deleted AND o.order_id IN
                     (SELECT t.order_id FROM \"{s}\".order_search t WHERE t.search_text LIKE '%green mug%')",
            s = f.schema
        ))
        .await
        .expect("explain");
    let plan: String = plan
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        plan.contains("order_search_text"),
        "search does not use the trigram index:\n{plan}"
    );
    f.done().await;
}
