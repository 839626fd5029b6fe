//! The read side: queries answered from the read models, and history from the event store.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use ordo_domain::read::ListQuery;
use ordo_domain::{AsOf, Money, OrderView, Sort, Status};
use ordo_es::{Metadata, Payload, Position, RecordedEvent};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{header_text, query_pairs};
use crate::{AppState, parse_order_id};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/orders", get(list_orders))
        .route("/api/v1/orders/order/{id}", get(get_order))
        .route("/api/v1/orders/order/{id}/events", get(order_events))
        .route("/api/v1/orders/status/{status}", get(orders_by_status))
        .route("/api/v1/orders/customer/{email}", get(orders_by_customer))
        .route("/api/v1/orders/summary", get(summary))
        .route("/api/v1/orders/top-customers", get(top_customers))
        .route("/api/v1/orders/search", get(search))
}

/// Default and longest read-your-writes waits (docs/api.md).
const DEFAULT_WAIT: Duration = Duration::from_secs(5);
const MAX_WAIT_MS: u64 = 30_000;

/// Read-your-writes: with `X-Consistency-Token`, waits until the read models cover it.
async fn await_consistency(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = header_text(headers, "x-consistency-token")? else {
        return Ok(());
    };
    let position: Position = token.trim().parse().map_err(|_| {
        ApiError::BadRequest(
            "X-Consistency-Token is malformed: send back the token a command returned".into(),
        )
    })?;
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
    };
    if position.partition >= state.partitions {
        return Err(ApiError::BadRequest(
            "X-Consistency-Token does not belong to this event store".into(),
        ));
    }
    if state.read_side.wait_for(&position, wait).await {
        Ok(())
    } else {
        Err(ApiError::unavailable(format!(
            "the read models have not caught up with that write within {} ms; retry",
            wait.as_millis()
        )))
    }
}

fn with_etag(view: &OrderView) -> Response {
    let mut response = Json(view).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", view.version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

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
        // History comes from the event store, not the read models.
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
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventJson<'a> {
    data: &'a Payload,
    event_id: Uuid,
    event_type: &'a str,
    metadata: &'a Metadata,
    occurred_at: String,
    position: String,
    schema_version: u32,
    stream_id: &'a str,
    version: u64,
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
    }
}

#[derive(serde::Serialize)]
struct EventsBody<'a> {
    events: Vec<EventJson<'a>>,
}

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
            "customerEmail" => query.customer_email = Some(value.trim().to_lowercase()),
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

async fn orders_by_customer(
    State(state): State<AppState>,
    Path(email): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut query = list_query(raw.as_deref(), &[])?;
    if email.is_empty() || email.chars().count() > 254 {
        return Err(ApiError::BadRequest(
            "the e-mail must be 1 to 254 characters".into(),
        ));
    }
    crate::extract::no_control_characters("the e-mail", &email)?;
    query.customer_email = Some(email.trim().to_lowercase());
    await_consistency(&state, &headers).await?;
    Ok(Json(state.reads().list(&query).await?).into_response())
}

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

async fn summary(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    query_pairs(raw.as_deref(), &[])?;
    await_consistency(&state, &headers).await?;
    Ok(Json(state.reads().summary().await?).into_response())
}

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
