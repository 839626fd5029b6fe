//! The queries the API answers from: one order, filtered and sorted pages with search,
//! the summary, top customers and orders per day.

use time::{Date, OffsetDateTime};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use ordo_domain::view::StatusCounts;
use ordo_domain::{
    DailyFigures, EmailKey, ListQuery, OrderPage, OrderView, ReadStoreError, Sort, Summary,
    TopCustomer,
};

use super::{PgReadStore, corrupt, get_err, parse_cents, parse_view};

/// `%` and `_` and the escape character itself are literal in a search term.
fn like_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// ORDER BY for a sort, the order id breaking ties in the same direction.
fn order_by(sort: Sort, table: &str) -> String {
    let (column, direction) = match sort {
        Sort::CreatedAt => ("created_at", "ASC"),
        Sort::CreatedAtDesc => ("created_at", "DESC"),
        Sort::TotalAmount => ("total_cents", "ASC"),
        Sort::TotalAmountDesc => ("total_cents", "DESC"),
    };
    format!("{table}.{column} {direction}, {table}.order_id {direction}")
}

pub(super) async fn get(
    store: &PgReadStore,
    id: Uuid,
) -> Result<Option<OrderView>, ReadStoreError> {
    let rows = store.query(&store.sql.get, &[&id]).await?;
    match rows.first() {
        None => Ok(None),
        Some(row) => Ok(Some(parse_view(
            row.try_get::<_, &str>(0).map_err(get_err)?,
        )?)),
    }
}

pub(super) async fn list(
    store: &PgReadStore,
    query: &ListQuery,
) -> Result<OrderPage, ReadStoreError> {
    let status = query.status.map(|s| s.as_str().to_string());
    let email = query.customer_email.as_ref().map(EmailKey::as_str);
    let min_total = query.min_total.map(|m| m.cents().to_string());
    let max_total = query.max_total.map(|m| m.cents().to_string());
    let pattern = query.search.as_deref().map(like_pattern);
    let limit = i64::from(query.limit);
    let offset = i64::try_from(query.offset()).unwrap_or(i64::MAX);

    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let mut conditions = vec!["NOT o.deleted".to_string()];
    if let Some(v) = &status {
        params.push(v);
        conditions.push(format!("o.status = ${}", params.len()));
    }
    if let Some(v) = &email {
        params.push(v);
        conditions.push(format!("o.customer_email = ${}", params.len()));
    }
    if let Some(v) = &min_total {
        params.push(v);
        conditions.push(format!("o.total_cents >= ${}::text::numeric", params.len()));
    }
    if let Some(v) = &max_total {
        params.push(v);
        conditions.push(format!("o.total_cents <= ${}::text::numeric", params.len()));
    }
    if let Some(v) = &query.created_from {
        params.push(v);
        conditions.push(format!("o.created_at >= ${}::timestamptz", params.len()));
    }
    if let Some(v) = &query.created_to {
        params.push(v);
        conditions.push(format!("o.created_at <= ${}::timestamptz", params.len()));
    }
    if let Some(v) = &pattern {
        params.push(v);
        conditions.push(format!(
            "o.order_id IN (SELECT t.order_id FROM {}.order_search t WHERE t.search_text LIKE ${})",
            store.sql.s,
            params.len()
        ));
    }
    params.push(&limit);
    let limit_n = params.len();
    params.push(&offset);
    let offset_n = params.len();
    let s = &store.sql.s;
    let conditions = conditions.join(" AND ");
    // With no filter but status, the summary's counters already hold the total: no
    // query counts every order.
    let total = if query.only_status_filter() {
        match query.status {
            Some(status) => format!("(SELECT {} FROM {s}.order_summary)", status.as_str()),
            None => format!(
                "(SELECT pending + confirmed + processing + shipped + delivered + cancelled FROM {s}.order_summary)"
            ),
        }
    } else {
        format!("(SELECT count(*) FROM {s}.orders o WHERE {conditions})")
    };
    let sql = format!(
        "SELECT {total} AS total, p.doc
             FROM (SELECT 1) AS one
             LEFT JOIN LATERAL (
                 SELECT o.doc::text AS doc, o.created_at, o.total_cents, o.order_id FROM {s}.orders o
                 WHERE {conditions} ORDER BY {inner} LIMIT ${limit_n} OFFSET ${offset_n}
             ) p ON true
             ORDER BY {outer}",
        inner = order_by(query.sort, "o"),
        outer = order_by(query.sort, "p"),
    );
    let rows = store.query(&sql, &params).await?;
    let mut total = 0i64;
    let mut orders = Vec::with_capacity(rows.len());
    for row in &rows {
        total = row.try_get(0).map_err(get_err)?;
        if let Some(doc) = row.try_get::<_, Option<&str>>(1).map_err(get_err)? {
            orders.push(parse_view(doc)?);
        }
    }
    Ok(OrderPage {
        orders,
        total: u64::try_from(total).unwrap_or(0),
        page: query.page,
        limit: query.limit,
    })
}

pub(super) async fn summary(store: &PgReadStore) -> Result<Summary, ReadStoreError> {
    let rows = store.query(&store.sql.summary, &[]).await?;
    let row = rows
        .first()
        .ok_or_else(|| corrupt("summary", "the counter row is missing"))?;
    let mut counts = [0i64; 6];
    for (i, count) in counts.iter_mut().enumerate() {
        *count = row.try_get(i).map_err(get_err)?;
    }
    let revenue = parse_cents(row.try_get::<_, &str>(6).map_err(get_err)?)?;
    let last_updated: Option<OffsetDateTime> = row.try_get(7).map_err(get_err)?;
    Ok(Summary::from_counters(
        StatusCounts(counts),
        revenue,
        last_updated,
    ))
}

pub(super) async fn top_customers(
    store: &PgReadStore,
    limit: u32,
) -> Result<Vec<TopCustomer>, ReadStoreError> {
    let rows = store
        .query(&store.sql.top_customers, &[&i64::from(limit)])
        .await?;
    rows.iter()
        .map(|row| {
            let count: i64 = row.try_get(2).map_err(get_err)?;
            Ok(TopCustomer {
                customer_email: row.try_get(0).map_err(get_err)?,
                customer_name: row.try_get(1).map_err(get_err)?,
                order_count: u64::try_from(count).map_err(|e| corrupt("order count", e))?,
                total_spent: parse_cents(row.try_get::<_, &str>(3).map_err(get_err)?)?,
            })
        })
        .collect()
}

pub(super) async fn daily(
    store: &PgReadStore,
    from: Date,
    to: Date,
) -> Result<Vec<DailyFigures>, ReadStoreError> {
    let rows = store.query(&store.sql.daily, &[&from, &to]).await?;
    rows.iter()
        .map(|row| {
            let orders: i64 = row.try_get(1).map_err(get_err)?;
            Ok(DailyFigures {
                date: row.try_get(0).map_err(get_err)?,
                orders: u64::try_from(orders).map_err(|e| corrupt("orders of a day", e))?,
                revenue: parse_cents(row.try_get::<_, &str>(2).map_err(get_err)?)?,
            })
        })
        .collect()
}
