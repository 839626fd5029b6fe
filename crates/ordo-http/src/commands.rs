//! The write side: POST, PUT and DELETE on orders.

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post, put};
use serde::Serialize;
use uuid::Uuid;

use ordo_domain::command::{parse_cancel_request, parse_status_request};
use ordo_domain::{CommandContext, CommandError, CommandOutcome, CreateOrder, IdempotencyKey};
use ordo_es::Metadata;

use crate::error::ApiError;
use crate::extract::{header_text, if_match, json_body};
use crate::{AppState, RequestId, parse_order_id};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/orders/order", post(create_order))
        .route("/api/v1/orders/order/{id}/status", put(update_status))
        .route("/api/v1/orders/order/{id}/cancel", put(cancel_order))
        .route("/api/v1/orders/order/{id}", delete(delete_order))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CommandAnswer {
    order_id: Uuid,
    version: u64,
    consistency_token: String,
}

fn answer(status: StatusCode, outcome: &CommandOutcome) -> Response {
    let token = outcome.position.to_string();
    let body = CommandAnswer {
        order_id: outcome.order_id,
        version: outcome.version,
        consistency_token: token.clone(),
    };
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", outcome.version)) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&token) {
        headers.insert("x-consistency-token", v);
    }
    if status == StatusCode::CREATED
        && let Ok(v) = HeaderValue::from_str(&format!("/api/v1/orders/order/{}", outcome.order_id))
    {
        headers.insert(header::LOCATION, v);
    }
    response
}

/// Event metadata from the request: correlation id (the client's X-Correlation-Id, else
/// the request id), causation id (the request id), user agent.
fn context(headers: &HeaderMap, request_id: &RequestId) -> Result<CommandContext, ApiError> {
    let correlation = header_text(headers, "x-correlation-id")?
        .filter(|c| (1..=200).contains(&c.len()))
        .map_or_else(|| request_id.0.clone(), str::to_string);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(500).collect());
    Ok(CommandContext {
        metadata: Metadata {
            correlation_id: Some(correlation),
            causation_id: Some(request_id.0.clone()),
            user_agent,
            ..Metadata::default()
        },
        if_match: if_match(headers)?,
    })
}

fn outcome_label(result: &Result<CommandOutcome, CommandError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(CommandError::Rule(_)) => "rejected",
        Err(CommandError::PreconditionFailed { .. }) => "precondition_failed",
        Err(CommandError::IdempotencyMismatch) => "idempotency_mismatch",
        Err(CommandError::Contended) => "contended",
        Err(_) => "error",
    }
}

/// Runs a command, records its outcome and latency, and answers with `status`.
async fn run(
    state: &AppState,
    name: &str,
    status: StatusCode,
    command: impl std::future::Future<Output = Result<CommandOutcome, CommandError>>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let result = command.await;
    state
        .metrics
        .command(name, outcome_label(&result), started.elapsed());
    Ok(answer(status, &result?))
}

/// A required JSON body.
async fn required_json(headers: &HeaderMap, body: Body) -> Result<serde_json::Value, ApiError> {
    json_body(headers, body, false)
        .await?
        .ok_or_else(|| ApiError::BadRequest("the request needs a JSON body".into()))
}

async fn create_order(
    State(state): State<AppState>,
    request_id: axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = match header_text(&headers, "idempotency-key")? {
        None => None,
        Some(k) if (1..=200).contains(&k.chars().count()) => Some(k.to_string()),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "Idempotency-Key must be 1 to 200 characters".into(),
            ));
        }
    };
    let ctx = context(&headers, &request_id)?;
    let value = required_json(&headers, body).await?;
    let command = CreateOrder::parse(&value).map_err(|e| ApiError::Validation(e.0))?;
    let idempotency = key.map(|k| IdempotencyKey::new(k, &value));
    run(
        &state,
        "CreateOrder",
        StatusCode::CREATED,
        state.service.create(command, idempotency, ctx),
    )
    .await
}

async fn update_status(
    State(state): State<AppState>,
    request_id: axum::Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_order_id(&id)?;
    let ctx = context(&headers, &request_id)?;
    let value = required_json(&headers, body).await?;
    let status = parse_status_request(&value).map_err(|e| ApiError::Validation(e.0))?;
    run(
        &state,
        "UpdateOrderStatus",
        StatusCode::OK,
        state.service.update_status(id, status, ctx),
    )
    .await
}

async fn cancel_order(
    State(state): State<AppState>,
    request_id: axum::Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_order_id(&id)?;
    let ctx = context(&headers, &request_id)?;
    let value = json_body(&headers, body, true).await?;
    let request = parse_cancel_request(value.as_ref()).map_err(|e| ApiError::Validation(e.0))?;
    run(
        &state,
        "CancelOrder",
        StatusCode::OK,
        state.service.cancel(id, request.reason, ctx),
    )
    .await
}

async fn delete_order(
    State(state): State<AppState>,
    request_id: axum::Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_order_id(&id)?;
    let ctx = context(&headers, &request_id)?;
    run(
        &state,
        "DeleteOrder",
        StatusCode::OK,
        state.service.delete(id, ctx),
    )
    .await
}
