//! The read side: queries answered from the read models, and history from the event store.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use ordo_app::AsOf;
use ordo_domain::read_store::ListQuery;
use ordo_domain::view::{format_date, parse_date};
use ordo_domain::{
    DailyFigures, EmailKey, Money, OrderPage, OrderView, Sort, Status, Summary, fill_days,
};
use ordo_es::{Metadata, Payload, Position, RecordedEvent, StoreError};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{header_text, query_pairs};
use crate::openapi::{ConsistencyHeaders, NotFound, OrderIdPath, QueryErrors};
use crate::{AppState, parse_order_id};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(order_events))
        .routes(routes!(orders_by_status))
        .routes(routes!(orders_by_customer))
        .routes(routes!(summary))
        .routes(routes!(top_customers))
        .routes(routes!(search))
        .routes(routes!(daily))
}

// The query parameters, as the OpenAPI document describes them; `list_query` and the
// handlers parse the raw query string strictly (an unknown parameter is 400).

/// Paging and sorting of every list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documentation only.
struct PagingParams {
    /// 1-based; a page past the end is an empty list with the true total.
    #[param(minimum = 1, default = 1)]
    page: Option<u32>,
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<u32>,
    #[param(inline)]
    sort: Option<SortParam>,
}

/// The order of a list: newest first by default.
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)] // Documentation only.
enum SortParam {
    #[serde(rename = "-createdAt")]
    Newest,
    #[serde(rename = "createdAt")]
    Oldest,
    #[serde(rename = "totalAmount")]
    Smallest,
    #[serde(rename = "-totalAmount")]
    Largest,
}

/// The filters of GET /api/v1/orders; every bound is inclusive.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[allow(dead_code)] // Documentation only.
struct ListFilters {
    status: Option<Status>,
    /// Matched case-insensitively.
    #[param(
        min_length = 1,
        max_length = 254,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    customer_email: Option<String>,
    #[param(value_type = Option<f64>, minimum = 0, example = 10.00)]
    min_total: Option<Money>,
    #[param(value_type = Option<f64>, minimum = 0, example = 100.00)]
    max_total: Option<Money>,
    /// RFC 3339.
    created_from: Option<OffsetDateTime>,
    /// RFC 3339.
    created_to: Option<OffsetDateTime>,
}

/// The search term.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documentation only.
struct SearchParams {
    /// Case-insensitive substring of the order id, customer name, customer e-mail or a
    /// product name.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"
    )]
    q: String,
}

/// Time travel: the order as it was.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[allow(dead_code)] // Documentation only.
struct AsOfParams {
    /// The order as it was after its event number N (1-based): folded from the event
    /// store, for deleted orders too. Above the current version: 404.
    #[param(minimum = 1)]
    as_of_version: Option<u64>,
    /// The order as it was at this RFC 3339 instant; before the order existed: 404. Not
    /// together with asOfVersion.
    as_of: Option<OffsetDateTime>,
}

/// The length of the top-customers list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documentation only.
struct TopCustomersParams {
    #[param(minimum = 1, maximum = 100, default = 10)]
    limit: Option<u32>,
}

/// The answer of the top-customers query.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)] // Documentation only; the handler builds the same object.
struct TopCustomers {
    /// By totalSpent, largest first, then e-mail.
    customers: Vec<ordo_domain::TopCustomer>,
}

/// Default and longest read-your-writes waits (docs/api.md).
const DEFAULT_WAIT: Duration = Duration::from_secs(5);
const MAX_WAIT_MS: u64 = 30_000;

/// The read-your-writes headers, checked whether or not the other one is there (a
/// malformed header is 400 even when it would change nothing): the token's position and
/// how long to wait for it.
fn consistency_headers(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Position, Duration)>, ApiError> {
    let wait = match header_text(headers, "x-consistency-timeout-ms")? {
        None => DEFAULT_WAIT,
        Some(ms) => {
            let ms: u64 = ms.trim().parse().map_err(|_| {
                ApiError::BadRequest(
                    "X-Consistency-Timeout-Ms must be a whole number of milliseconds".into(),
                )
            })?;
            Duration::from_millis(ms.min(MAX_WAIT_MS))
        }
    }
    .min(crate::limits::consistency_wait_cap(state.request_deadline));
    let Some(token) = header_text(headers, "x-consistency-token")? else {
        return Ok(None);
    };
    let position: Position = token.trim().parse().map_err(|_| {
        ApiError::BadRequest(
            "X-Consistency-Token is malformed: send back the token a command returned".into(),
        )
    })?;
    if position.partition >= state.partitions {
        return Err(ApiError::BadRequest(
            "X-Consistency-Token does not belong to this event store".into(),
        ));
    }
    Ok(Some((position, wait)))
}

/// Read-your-writes: with `X-Consistency-Token`, waits until the read models cover it.
async fn await_consistency(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some((position, wait)) = consistency_headers(state, headers)? else {
        return Ok(());
    };
    // A token the read models already cover needs no look at the store. One they do not
    // is either not projected yet or past everything stored: a command answers with its
    // token only after the append committed, so a token it returned is within the head.
    if state.read_side.wait_for(&position, Duration::ZERO).await {
        return Ok(());
    }
    match state.service.store().head().await {
        Ok(head) if !head.covers(&position) => {
            return Err(ApiError::BadRequest(
                "X-Consistency-Token is ahead of every event stored: send back a token a command returned"
                    .into(),
            ));
        }
        Ok(_) => {}
        Err(StoreError::Overloaded(full)) => return Err(full_wait(&full)),
        // Without the head the token cannot be judged; waiting is what it got before.
        Err(e) => {
            tracing::warn!(error = %e, "consistency token: cannot read the head of the event store")
        }
    }
    let _pass = state
        .consistency_waits
        .enter()
        .map_err(|full| full_wait(&full))?;
    if state.read_side.wait_for(&position, wait).await {
        Ok(())
    } else {
        Err(ApiError::unavailable(format!(
            "the read models have not caught up with that write within {} ms; retry",
            wait.as_millis()
        )))
    }
}

/// A consistency wait turned away because too many are waiting already (or the event
/// store is too busy to say whether the token can be reached).
fn full_wait(full: &ordo_es::Overloaded) -> ApiError {
    ApiError::unavailable(format!(
        "too busy to wait for the read models: the {} queue is full ({} operations); retry later",
        full.queue, full.limit
    ))
}

fn with_etag(view: &OrderView) -> Response {
    let mut response = Json(view).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", view.version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// One order: from the read models, or, with asOfVersion or asOf, as it was (folded
/// from the event store).
#[utoipa::path(
    get,
    path = "/api/v1/orders/order/{id}",
    tag = "queries",
    operation_id = "getOrder",
    params(OrderIdPath, AsOfParams, ConsistencyHeaders),
    responses(
        (status = 200, description = "Found.", body = OrderView, headers(("ETag" = String, description = "The order's version, quoted: send it as If-Match with a command."))),
        (status = 404, response = NotFound),
        QueryErrors,
    ),
)]
async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_order_id(&id)?;
    let params = query_pairs(query.as_deref(), &["asOfVersion", "asOf"])?;
    let mut as_of = None;
    for (name, value) in params {
        if as_of.is_some() {
            return Err(ApiError::BadRequest(
                "give asOfVersion or asOf, not both".into(),
            ));
        }
        as_of = Some(match name.as_str() {
            "asOfVersion" => {
                let v: u64 = value.parse().map_err(|_| {
                    ApiError::BadRequest("asOfVersion must be a whole number >= 1".into())
                })?;
                if v < 1 {
                    return Err(ApiError::BadRequest(
                        "asOfVersion must be a whole number >= 1".into(),
                    ));
                }
                AsOf::Version(v)
            }
            _ => AsOf::Time(parse_time("asOf", &value)?),
        });
    }
    if let Some(as_of) = as_of {
        // History comes from the event store, not the read models: nothing to wait for,
        // but the headers are still checked.
        consistency_headers(&state, &headers)?;
        let view = state.service.view_as_of(id, as_of).await?;
        return Ok(with_etag(&view));
    }
    await_consistency(&state, &headers).await?;
    match state.reads().get(id).await? {
        Some(view) => Ok(with_etag(&view)),
        None => Err(ApiError::NotFound("no order with this id".into())),
    }
}

/// The JSON form of a stored event, as the events endpoint and `ordo events` print it.
/// Serialised as it is (the payload's stored text written out verbatim, never parsed
/// again); fields in the order a JSON object of them always had (alphabetical).
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = StoredEvent)]
pub struct EventJson<'a> {
    /// The event's payload, as stored (its shape depends on eventType and schemaVersion).
    #[schema(value_type = Object)]
    data: &'a Payload,
    /// A UUID v7.
    event_id: Uuid,
    /// OrderCreated, OrderStatusChanged, OrderCancelled or OrderDeleted.
    #[schema(value_type = String, example = "OrderCreated")]
    event_type: &'a str,
    #[schema(value_type = EventMetadata)]
    metadata: &'a Metadata,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    occurred_at: String,
    /// The event's place in the store's global log (opaque).
    #[schema(example = "0.42.0")]
    position: String,
    schema_version: u32,
    /// `order-<order id>`.
    #[schema(value_type = String)]
    stream_id: &'a str,
    /// 1-based, per order.
    version: u64,
    /// On events that carry personal data (OrderCreated): true once the customer's
    /// personal data is erased (the payload's personal fields are then null). Absent on
    /// the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    personal_data_erased: Option<bool>,
}

/// Whether `e` carries personal data, and if so whether it was erased.
pub fn personal_data_erased(e: &RecordedEvent) -> Option<bool> {
    (e.event_type == ordo_domain::OrderEvent::CREATED).then(|| {
        e.data
            .to_value()
            .ok()
            .and_then(|v| v.get(ordo_domain::privacy::sealed::ERASED_FIELD)?.as_bool())
            .unwrap_or(false)
    })
}

/// Who and what caused an event; absent keys were not known.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Documentation only: `Metadata` serialises these keys.
struct EventMetadata {
    /// The client's X-Correlation-Id, else the request id.
    correlation_id: Option<String>,
    /// The id of the request that issued the command.
    causation_id: Option<String>,
    idempotency_key: Option<String>,
    /// A fingerprint of the body that carried the idempotency key.
    request_hash: Option<String>,
    user_agent: Option<String>,
}

pub fn event_json(e: &RecordedEvent) -> EventJson<'_> {
    EventJson {
        data: &e.data,
        event_id: e.event_id,
        event_type: &e.event_type,
        metadata: &e.metadata,
        occurred_at: e.occurred_at.format(&Rfc3339).unwrap_or_default(),
        position: e.position.to_string(),
        schema_version: e.schema_version,
        stream_id: e.stream_id.as_str(),
        version: e.version,
        personal_data_erased: personal_data_erased(e),
    }
}

/// An order's events, oldest first.
#[derive(serde::Serialize, ToSchema)]
#[schema(as = OrderEvents)]
struct EventsBody<'a> {
    events: Vec<EventJson<'a>>,
}

/// The order's events, oldest first, straight from the event store (deleted orders too).
#[utoipa::path(
    get,
    path = "/api/v1/orders/order/{id}/events",
    tag = "history",
    operation_id = "orderEvents",
    params(OrderIdPath),
    responses(
        (status = 200, description = "Found.", body = EventsBody),
        (status = 404, response = NotFound),
        QueryErrors,
    ),
)]
async fn order_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = parse_order_id(&id)?;
    query_pairs(query.as_deref(), &[])?;
    let events = state.service.history(id).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound("no order with this id".into()));
    }
    Ok(Json(EventsBody {
        events: events.iter().map(event_json).collect(),
    })
    .into_response())
}

fn parse_time(name: &str, value: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
        ApiError::BadRequest(format!(
            "{name} must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z"
        ))
    })
}

fn parse_amount(name: &str, value: &str) -> Result<Money, ApiError> {
    Money::parse_json_number(value)
        .map_err(|e| ApiError::BadRequest(format!("{name} {e} (a decimal such as 19.99)")))
}

fn parse_bounded(name: &str, value: &str, max: u32) -> Result<u32, ApiError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::BadRequest(format!("{name} must be a whole number from 1 to {max}"))
        })
}

/// Paging and sorting, shared by every list.
const PAGING: &[&str] = &["page", "limit", "sort"];

fn list_query(raw: Option<&str>, filters: &[&str]) -> Result<ListQuery, ApiError> {
    let known: Vec<&str> = PAGING.iter().chain(filters).copied().collect();
    let mut query = ListQuery::default();
    for (name, value) in query_pairs(raw, &known)? {
        match name.as_str() {
            "page" => query.page = parse_bounded("page", &value, u32::MAX / 128)?,
            "limit" => query.limit = parse_bounded("limit", &value, 100)?,
            "sort" => {
                query.sort = Sort::parse(&value).ok_or_else(|| {
                    ApiError::BadRequest(
                        "sort must be one of createdAt, -createdAt, totalAmount, -totalAmount"
                            .into(),
                    )
                })?;
            }
            "status" => query.status = Some(parse_status(&value)?),
            "customerEmail" => query.customer_email = Some(email_key("customerEmail", &value)?),
            "minTotal" => query.min_total = Some(parse_amount("minTotal", &value)?),
            "maxTotal" => query.max_total = Some(parse_amount("maxTotal", &value)?),
            "createdFrom" => query.created_from = Some(parse_time("createdFrom", &value)?),
            "createdTo" => query.created_to = Some(parse_time("createdTo", &value)?),
            "q" => {
                let n = value.chars().count();
                if !(1..=200).contains(&n) {
                    return Err(ApiError::BadRequest("q must be 1 to 200 characters".into()));
                }
                query.search = Some(value.to_lowercase());
            }
            _ => {}
        }
    }
    Ok(query)
}

fn parse_status(value: &str) -> Result<Status, ApiError> {
    Status::parse(value).ok_or_else(|| {
        ApiError::BadRequest(
            "status must be one of pending, confirmed, processing, shipped, delivered, cancelled"
                .into(),
        )
    })
}

/// Lists orders, filtered, sorted and paged.
#[utoipa::path(
    get,
    path = "/api/v1/orders",
    tag = "queries",
    operation_id = "listOrders",
    params(ListFilters, PagingParams, ConsistencyHeaders),
    responses(
        (status = 200, description = "Found.", body = OrderPage),
        QueryErrors,
    ),
)]
async fn list_orders(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = list_query(
        raw.as_deref(),
        &[
            "status",
            "customerEmail",
            "minTotal",
            "maxTotal",
            "createdFrom",
            "createdTo",
        ],
    )?;
    if let (Some(min), Some(max)) = (query.min_total, query.max_total)
        && min > max
    {
        return Err(ApiError::BadRequest(
            "minTotal is greater than maxTotal".into(),
        ));
    }
    await_consistency(&state, &headers).await?;
    Ok(Json(state.reads().list(&query).await?).into_response())
}

/// Orders in one status.
#[utoipa::path(
    get,
    path = "/api/v1/orders/status/{status}",
    tag = "queries",
    operation_id = "ordersByStatus",
    params(("status" = Status, Path), PagingParams, ConsistencyHeaders),
    responses(
        (status = 200, description = "Found.", body = OrderPage),
        QueryErrors,
    ),
)]
async fn orders_by_status(
    State(state): State<AppState>,
    Path(status): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut query = list_query(raw.as_deref(), &[])?;
    query.status = Some(parse_status(&status)?);
    await_consistency(&state, &headers).await?;
    Ok(Json(state.reads().list(&query).await?).into_response())
}

/// One customer's orders (the e-mail matched case-insensitively).
#[utoipa::path(
    get,
    path = "/api/v1/orders/customer/{email}",
    tag = "queries",
    operation_id = "ordersByCustomer",
    params(("email" = String, Path, min_length = 1, max_length = 254, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]+$"), PagingParams, ConsistencyHeaders),
    responses(
        (status = 200, description = "Found.", body = OrderPage),
        QueryErrors,
    ),
)]
async fn orders_by_customer(
    State(state): State<AppState>,
    Path(email): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut query = list_query(raw.as_deref(), &[])?;
    query.customer_email = Some(email_key("the e-mail", &email)?);
    await_consistency(&state, &headers).await?;
    Ok(Json(state.reads().list(&query).await?).into_response())
}

/// A customer e-mail given to look orders up by (the list's filter, the customer
/// endpoint's path), as documented: 1 to 254 characters, none a control character.
fn email_key(what: &str, value: &str) -> Result<EmailKey, ApiError> {
    if !(1..=254).contains(&value.chars().count()) {
        return Err(ApiError::BadRequest(format!(
            "{what} must be 1 to 254 characters"
        )));
    }
    crate::extract::no_control_characters(what, value)?;
    Ok(EmailKey::new(value))
}

/// Orders whose id, customer name, e-mail or a product name contains the term.
#[utoipa::path(
    get,
    path = "/api/v1/orders/search",
    tag = "queries",
    operation_id = "searchOrders",
    params(SearchParams, PagingParams, ConsistencyHeaders),
    responses(
        (status = 200, description = "Found.", body = OrderPage),
        QueryErrors,
    ),
)]
async fn search(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = list_query(raw.as_deref(), &["q"])?;
    if query.search.is_none() {
        return Err(ApiError::BadRequest(
            "q is required (1 to 200 characters)".into(),
        ));
    }
    await_consistency(&state, &headers).await?;
    Ok(Json(state.reads().list(&query).await?).into_response())
}

/// Counts per status, revenue and average order value.
#[utoipa::path(
    get,
    path = "/api/v1/orders/summary",
    tag = "queries",
    operation_id = "orderSummary",
    params(ConsistencyHeaders),
    responses(
        (status = 200, description = "Found.", body = Summary),
        QueryErrors,
    ),
)]
async fn summary(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    query_pairs(raw.as_deref(), &[])?;
    await_consistency(&state, &headers).await?;
    Ok(Json(state.reads().summary().await?).into_response())
}

/// Customers by what they spent on orders neither cancelled nor deleted.
#[utoipa::path(
    get,
    path = "/api/v1/orders/top-customers",
    tag = "queries",
    operation_id = "topCustomers",
    params(TopCustomersParams, ConsistencyHeaders),
    responses(
        (status = 200, description = "Found.", body = TopCustomers),
        QueryErrors,
    ),
)]
async fn top_customers(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut limit = 10;
    for (_, value) in query_pairs(raw.as_deref(), &["limit"])? {
        limit = parse_bounded("limit", &value, 100)?;
    }
    await_consistency(&state, &headers).await?;
    let customers = state.reads().top_customers(limit).await?;
    Ok(Json(serde_json::json!({ "customers": customers })).into_response())
}

/// The daily answer: every day of the range, oldest first, zeros included.
#[derive(serde::Serialize, ToSchema)]
#[schema(as = DailyOrders)]
struct DailyBody {
    /// The first day, YYYY-MM-DD.
    #[schema(format = Date, example = "2026-11-03")]
    from: String,
    /// The last day, YYYY-MM-DD.
    #[schema(format = Date, example = "2026-12-02")]
    to: String,
    days: Vec<DailyFigures>,
}

/// The range of the daily query.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documentation only.
struct DailyParams {
    /// How many days, ending with `to`.
    #[param(minimum = 1, maximum = 366, default = 30)]
    days: Option<u32>,
    /// The last day (UTC), YYYY-MM-DD; default today.
    #[param(value_type = Option<String>, format = Date, example = "2026-12-02")]
    to: Option<String>,
}

/// Orders and revenue per UTC day: orders created that day and not deleted, and the
/// revenue of those neither cancelled nor deleted (summed over every day: the summary).
#[utoipa::path(
    get,
    path = "/api/v1/orders/daily",
    tag = "queries",
    operation_id = "dailyOrders",
    params(DailyParams, ConsistencyHeaders),
    responses(
        (status = 200, description = "Every day of the range, oldest first, zeros included.", body = DailyBody),
        QueryErrors,
    ),
)]
async fn daily(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut days = 30;
    let mut to = None;
    for (name, value) in query_pairs(raw.as_deref(), &["days", "to"])? {
        match name.as_str() {
            "days" => days = parse_bounded("days", &value, 366)?,
            _ => {
                to = Some(parse_date(&value).ok_or_else(|| {
                    ApiError::BadRequest("to must be a date such as 2026-01-31 (YYYY-MM-DD)".into())
                })?);
            }
        }
    }
    let to = to.unwrap_or_else(|| OffsetDateTime::now_utc().date());
    // Years before 1 would not be written as four digits.
    let from = to
        .checked_sub(time::Duration::days(i64::from(days) - 1))
        .filter(|from| from.year() >= 1)
        .ok_or_else(|| {
            ApiError::BadRequest("to is too early: the range would start before year 1".into())
        })?;
    await_consistency(&state, &headers).await?;
    let stored = state.reads().daily(from, to).await?;
    Ok(Json(DailyBody {
        from: format_date(from),
        to: format_date(to),
        days: fill_days(from, to, &stored),
    })
    .into_response())
}
