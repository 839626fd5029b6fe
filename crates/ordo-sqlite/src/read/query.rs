//! The queries the API answers from: one order, filtered and sorted pages with trigram
//! search, the summary, top customers and orders per day.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use time::Date;
use uuid::Uuid;

use ordo_domain::read_store::{ListQuery, ReadStoreError, Sort};
use ordo_domain::{DailyFigures, Money, OrderPage, OrderView, StatusCounts, Summary, TopCustomer};

use super::{
    BlockingError, SqliteReadStore, corrupt, day_number, from_day_number, from_micros, micros,
    parse_doc,
};

pub(super) fn read_counters(
    conn: &Connection,
) -> Result<(StatusCounts, Money, Option<i64>), BlockingError> {
    let row: Option<(String, String, Option<i64>)> = conn
        .prepare_cached(
            "SELECT status_counts, revenue_cents, last_updated FROM summary WHERE id = 1",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((counts, revenue, last)) = row else {
        return Ok((StatusCounts::default(), Money::ZERO, None));
    };
    let mut parsed = StatusCounts::default();
    let parts: Vec<&str> = counts.split(',').collect();
    if parts.len() != 6 {
        return Err(corrupt("summary status counts").into());
    }
    for (slot, part) in parsed.0.iter_mut().zip(parts) {
        *slot = part.parse().map_err(corrupt)?;
    }
    let revenue = Money::from_cents(revenue.parse().map_err(corrupt)?);
    Ok((parsed, revenue, last))
}

/// The SQL of one page of a list, with its parameters (limit and offset bound too, so
/// that the statement cache serves every page).
pub(super) fn page_sql(query: &ListQuery) -> (String, Vec<SqlValue>) {
    let (from, filter, mut params) = list_filter(query);
    let order = match query.sort {
        Sort::CreatedAtDesc => "o.created_at DESC, o.order_id DESC",
        Sort::CreatedAt => "o.created_at ASC, o.order_id ASC",
        Sort::TotalAmount => "o.total_cents ASC, o.order_id ASC",
        Sort::TotalAmountDesc => "o.total_cents DESC, o.order_id DESC",
    };
    params.push(SqlValue::Integer(i64::from(query.limit)));
    params.push(SqlValue::Integer(
        i64::try_from(query.offset()).unwrap_or(i64::MAX),
    ));
    let n = params.len();
    let sql = format!(
        "SELECT o.doc FROM {from} WHERE {filter} ORDER BY {order} LIMIT ?{} OFFSET ?{n}",
        n - 1
    );
    (sql, params)
}

/// Builds the WHERE clause and parameters of a list query.
/// The FROM clause and the WHERE clause of a list query, with their parameters. A search
/// of three or more characters starts from the trigram index (`CROSS JOIN` keeps SQLite
/// from walking every order in sort order instead), and the small result is sorted after.
fn list_filter(query: &ListQuery) -> (String, String, Vec<SqlValue>) {
    let mut from = "orders o".to_string();
    let mut clauses = vec!["o.deleted = 0".to_string()];
    let mut params: Vec<SqlValue> = Vec::new();
    let mut push = |clause: &str, value: SqlValue| {
        params.push(value);
        clauses.push(clause.replace('?', &format!("?{}", params.len())));
    };
    if let Some(status) = query.status {
        push("o.status = ?", SqlValue::Text(status.as_str().into()));
    }
    if let Some(email) = &query.customer_email {
        push(
            "o.customer_email = ?",
            SqlValue::Text(email.as_str().to_owned()),
        );
    }
    if let Some(min) = query.min_total {
        push(
            "o.total_cents >= ?",
            SqlValue::Integer(i64::try_from(min.cents()).unwrap_or(i64::MAX)),
        );
    }
    if let Some(max) = query.max_total {
        push(
            "o.total_cents <= ?",
            SqlValue::Integer(i64::try_from(max.cents()).unwrap_or(i64::MAX)),
        );
    }
    if let Some(from) = query.created_from {
        push("o.created_at >= ?", SqlValue::Integer(micros(from)));
    }
    if let Some(to) = query.created_to {
        push("o.created_at <= ?", SqlValue::Integer(micros(to)));
    }
    if let Some(term) = &query.search {
        push("instr(o.search_text, ?) > 0", SqlValue::Text(term.clone()));
        // Terms of 3+ characters use the trigram indexes; shorter ones fall back to a scan.
        if let Some(trigrams) = trigram_query(term) {
            params.push(SqlValue::Text(trigrams));
            let n = params.len();
            // Each order is in one of the two indexes (see `SEARCH_INDEXES`).
            from = format!(
                "(SELECT rowid FROM orders_search WHERE orders_search MATCH ?{n}
                  UNION ALL SELECT rowid FROM orders_search_live WHERE orders_search_live MATCH ?{n}) s
                 CROSS JOIN orders o ON o.rowid = s.rowid"
            );
        }
    }
    (from, clauses.join(" AND "), params)
}

/// The FTS5 query for the orders whose search text holds every trigram of `term` (the
/// index keeps no positions, so no phrase query): each distinct trigram quoted, ANDed.
/// `None` for terms shorter than three characters, which have no trigram.
pub(super) fn trigram_query(term: &str) -> Option<String> {
    let chars: Vec<char> = term.chars().collect();
    let mut seen = std::collections::HashSet::new();
    let quoted: Vec<String> = chars
        .windows(3)
        .map(|w| w.iter().collect::<String>())
        .filter(|t| seen.insert(t.clone()))
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect();
    (!quoted.is_empty()).then(|| quoted.join(" "))
}

pub(super) async fn get(
    store: &SqliteReadStore,
    id: Uuid,
) -> Result<Option<OrderView>, ReadStoreError> {
    let key = id.to_string();
    store
        .read(move |conn| {
            let doc: Option<String> = conn
                .prepare_cached("SELECT doc FROM orders WHERE order_id = ?1 AND deleted = 0")?
                .query_row([key], |r| r.get(0))
                .optional()?;
            Ok(doc.map(|d| parse_doc(&d)).transpose()?)
        })
        .await
}

pub(super) async fn list(
    store: &SqliteReadStore,
    query: &ListQuery,
) -> Result<OrderPage, ReadStoreError> {
    let query = query.clone();
    store
        .read(move |conn| {
            let (from, filter, params) = list_filter(&query);
            // With no filter but status, the summary's counters already hold the total:
            // no query counts every order.
            let total: i64 = if query.only_status_filter() {
                let (counts, _, _) = read_counters(conn)?;
                match query.status {
                    Some(status) => counts.get(status),
                    None => counts.total(),
                }
            } else {
                conn.prepare_cached(&format!("SELECT COUNT(*) FROM {from} WHERE {filter}"))?
                    .query_row(params_from_iter(params.iter()), |r| r.get(0))?
            };
            let (sql, page_params) = page_sql(&query);
            let mut stmt = conn.prepare_cached(&sql)?;
            let docs = stmt
                .query_map(params_from_iter(page_params.iter()), |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let orders = docs
                .iter()
                .map(|d| parse_doc(d))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(OrderPage {
                orders,
                total: total as u64,
                page: query.page,
                limit: query.limit,
            })
        })
        .await
}

pub(super) async fn summary(store: &SqliteReadStore) -> Result<Summary, ReadStoreError> {
    store
        .read(|conn| {
            let (counts, revenue, last) = read_counters(conn)?;
            let last = last.map(from_micros).transpose()?;
            Ok(Summary::from_counters(counts, revenue, last))
        })
        .await
}

pub(super) async fn top_customers(
    store: &SqliteReadStore,
    limit: u32,
) -> Result<Vec<TopCustomer>, ReadStoreError> {
    store
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT customer_email, customer_name, order_count, total_cents FROM customers
                 ORDER BY total_cents DESC, customer_email ASC LIMIT ?1",
            )?;
            let rows = stmt
                .query_map([i64::from(limit)], |r| {
                    Ok(TopCustomer {
                        customer_email: r.get(0)?,
                        customer_name: r.get(1)?,
                        order_count: r.get::<_, i64>(2)? as u64,
                        total_spent: Money::from_cents(i128::from(r.get::<_, i64>(3)?)),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
}

pub(super) async fn daily(
    store: &SqliteReadStore,
    from: Date,
    to: Date,
) -> Result<Vec<DailyFigures>, ReadStoreError> {
    let (from, to) = (day_number(from), day_number(to));
    store
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT day, orders, revenue_cents FROM daily_orders
                 WHERE day BETWEEN ?1 AND ?2 ORDER BY day",
            )?;
            let rows = stmt
                .query_map([from, to], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out = Vec::with_capacity(rows.len());
            for (day, orders, cents) in rows {
                out.push(DailyFigures {
                    date: from_day_number(day)?,
                    orders: u64::try_from(orders)
                        .map_err(|_| corrupt(format!("day {day} has {orders} orders")))?,
                    revenue: Money::from_cents(i128::from(cents)),
                });
            }
            Ok(out)
        })
        .await
}
