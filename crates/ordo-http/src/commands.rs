//! The write side: POST, PUT and DELETE on orders.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use ordo_app::{CommandContext, CommandError, CommandOutcome, IdempotencyKey};
use ordo_domain::CreateOrder;
use ordo_domain::command::{parse_cancel_request, parse_status_request};
use ordo_es::Metadata;

use crate::error::ApiError;
use crate::extract::{header_text, if_match, json_body};
use crate::openapi::{
    BadRequest, BodyErrors, CommandHeaders, IdempotencyHeader, OrderCommandErrors, OrderIdPath,
    Unavailable,
};
use crate::{AppState, RequestId, parse_order_id};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_order))
        .routes(routes!(update_status))
        .routes(routes!(cancel_order))
        .routes(routes!(delete_order))
}

/// 200 to a command on an existing order.
#[derive(utoipa::ToResponse)]
#[response(
    description = "Stored.",
    headers(
        ("ETag" = String, description = "The order's new version, quoted: send it as If-Match with the next command."),
        ("X-Consistency-Token" = String, description = "The same token as in the body."),
    ),
)]
#[allow(dead_code)] // Documentation only.
pub(crate) struct Stored(CommandAnswer);

/// The answer to every successful command.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CommandAnswer {
    order_id: Uuid,
    /// The order's version after the command (also the ETag).
    version: u64,
    /// Send it back as X-Consistency-Token to read this write from the read models.
    #[schema(example = "0.42.0")]
    consistency_token: String,
}

// The request bodies, as the OpenAPI document describes them. The handlers read bodies
// as JSON values and parse them with the domain's parsers (`CreateOrder::parse`, ...),
// which report every bad field at once; these types only document those rules.

/// CreateOrder. Unknown fields are rejected (422).
#[derive(serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreateOrder, example = json!({
    "customerName": "Ada Lovelace", "customerEmail": "ada@example.com", "currency": "EUR",
    "items": [{"productId": "p-1", "productName": "Difference Engine", "quantity": 2, "unitPrice": 19.99}]
}))]
#[allow(dead_code)] // Documentation only.
struct CreateOrderBody {
    /// 1 to 200 characters after trimming; stored trimmed.
    #[schema(min_length = 1, max_length = 200)]
    customer_name: String,
    /// local@domain with a dot in the domain; stored lower-cased.
    #[schema(min_length = 3, max_length = 254, format = Email)]
    customer_email: String,
    /// 1 to 100 lines.
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<ItemBody>,
    /// ISO 4217: three upper-case letters. Default USD.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: Option<String>,
    shipping_address: Option<AddressBody>,
}

/// One line of a CreateOrder.
#[derive(serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = OrderLine)]
#[allow(dead_code)] // Documentation only.
struct ItemBody {
    #[schema(min_length = 1, max_length = 64)]
    product_id: String,
    #[schema(min_length = 1, max_length = 200)]
    product_name: String,
    #[schema(minimum = 1, maximum = 10_000)]
    quantity: u32,
    /// A decimal with at most two fraction digits (1.990 is 1.99; 1.999 is rejected).
    #[schema(value_type = f64, minimum = 0, maximum = 1_000_000, example = 19.99)]
    unit_price: serde_json::Number,
}

/// A shipping address.
#[derive(serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ShippingAddressInput)]
#[allow(dead_code)] // Documentation only.
struct AddressBody {
    #[schema(min_length = 1, max_length = 200)]
    line1: String,
    #[schema(max_length = 200)]
    line2: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    city: String,
    #[schema(max_length = 200)]
    region: Option<String>,
    #[schema(min_length = 1, max_length = 20)]
    postal_code: String,
    /// ISO 3166-1 alpha-2, upper-case.
    #[schema(pattern = "^[A-Z]{2}$", example = "DE")]
    country: String,
}

/// UpdateOrderStatus: one forward step (pending, confirmed, processing, shipped,
/// delivered); `cancelled` is reached only through the cancel endpoint (409 here).
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateOrderStatus)]
#[allow(dead_code)] // Documentation only.
struct StatusBody {
    status: ordo_domain::Status,
}

/// CancelOrder. The body is optional; without a reason, null is stored.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CancelOrder)]
#[allow(dead_code)] // Documentation only.
struct CancelBody {
    #[schema(max_length = 1000)]
    reason: Option<String>,
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

/// Executes a command, records its outcome and latency, and answers with `status`.
async fn execute(
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

/// Creates an order.
///
/// Stored durably before the answer; the read models follow asynchronously.
#[utoipa::path(
    post,
    path = "/api/v1/orders/order",
    tag = "commands",
    operation_id = "createOrder",
    params(IdempotencyHeader, CommandHeaders),
    request_body(content = CreateOrderBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; the same answer again for a repeated Idempotency-Key with the same body.", body = CommandAnswer, headers(
            ("ETag" = String, description = "The order's version, quoted: send it as If-Match with the next command."),
            ("X-Consistency-Token" = String, description = "The same token as in the body."),
            ("Location" = String, description = "The order's path: /api/v1/orders/order/{id}."),
        )),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
        BodyErrors,
    ),
)]
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
    execute(
        &state,
        "CreateOrder",
        StatusCode::CREATED,
        state.service.create(command, idempotency, ctx),
    )
    .await
}

/// Moves an order one step forward in its status flow.
#[utoipa::path(
    put,
    path = "/api/v1/orders/order/{id}/status",
    tag = "commands",
    operation_id = "updateOrderStatus",
    params(OrderIdPath, CommandHeaders),
    request_body(content = StatusBody, content_type = "application/json"),
    responses(
        (status = 200, response = Stored),
        OrderCommandErrors,
        BodyErrors,
    ),
)]
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
    execute(
        &state,
        "UpdateOrderStatus",
        StatusCode::OK,
        state.service.update_status(id, status, ctx),
    )
    .await
}

/// Cancels an order that is pending, confirmed or processing.
#[utoipa::path(
    put,
    path = "/api/v1/orders/order/{id}/cancel",
    tag = "commands",
    operation_id = "cancelOrder",
    params(OrderIdPath, CommandHeaders),
    request_body(content = Option<CancelBody>, content_type = "application/json", description = "Optional."),
    responses(
        (status = 200, response = Stored),
        OrderCommandErrors,
        BodyErrors,
    ),
)]
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
    execute(
        &state,
        "CancelOrder",
        StatusCode::OK,
        state.service.cancel(id, request.reason, ctx),
    )
    .await
}

/// Deletes an order: it accepts no command afterwards and leaves every read model; its events stay.
#[utoipa::path(
    delete,
    path = "/api/v1/orders/order/{id}",
    tag = "commands",
    operation_id = "deleteOrder",
    params(OrderIdPath, CommandHeaders),
    responses(
        (status = 200, response = Stored),
        OrderCommandErrors,
    ),
)]
async fn delete_order(
    State(state): State<AppState>,
    request_id: axum::Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_order_id(&id)?;
    let ctx = context(&headers, &request_id)?;
    execute(
        &state,
        "DeleteOrder",
        StatusCode::OK,
        state.service.delete(id, ctx),
    )
    .await
}
