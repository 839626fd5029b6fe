//! Operator endpoints: replay jobs, snapshots, projection status. They need
//! `Authorization: Bearer <token>` equal to the configured admin token.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use ordo_domain::{FieldError, OrderProjection, ReplayRequest, StartError};

use crate::error::ApiError;
use crate::extract::json_body;
use crate::{AppState, parse_order_id};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/replay", post(start_replay))
        .route("/api/v1/admin/replay/{job}", get(replay_status))
        .route("/api/v1/admin/snapshots/{id}", post(take_snapshot))
        .route("/api/v1/admin/projections", get(projections))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

/// Compares without leaking, through timing, how much of the token matched.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = given.len() ^ expected.len();
    for (i, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(i).copied().unwrap_or(0));
    }
    difference == 0
}

async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.admin_token.as_deref() else {
        return crate::error::problem_response(
            StatusCode::FORBIDDEN,
            "admin endpoints are disabled: start ordo with --admin-token or ORDO_ADMIN_TOKEN set"
                .into(),
            None,
        );
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(token) if same_secret(token.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        _ => {
            let mut response = crate::error::problem_response(
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer <admin token>".into(),
                None,
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ordo-admin\""),
            );
            response
        }
    }
}

fn parse_replay_request(body: Option<&Value>) -> Result<ReplayRequest, ApiError> {
    let Some(body) = body else {
        return Ok(ReplayRequest::Full);
    };
    let Some(object) = body.as_object() else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )]));
    };
    let mut errors = Vec::new();
    for key in object.keys() {
        if key != "fromTimestamp" && key != "aggregateId" {
            errors.push(FieldError::new(key.clone(), "unknown field"));
        }
    }
    let from = match object.get("fromTimestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => Some(t),
            Err(_) => {
                errors.push(FieldError::new(
                    "fromTimestamp",
                    "must be an RFC 3339 timestamp",
                ));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new(
                "fromTimestamp",
                "must be an RFC 3339 timestamp",
            ));
            None
        }
    };
    let order = match object.get("aggregateId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match Uuid::try_parse(s) {
            Ok(id) => Some(id),
            Err(_) => {
                errors.push(FieldError::new("aggregateId", "must be an order id"));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("aggregateId", "must be an order id"));
            None
        }
    };
    if from.is_some() && order.is_some() {
        errors.push(FieldError::new(
            "aggregateId",
            "give fromTimestamp or aggregateId, not both",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(match (from, order) {
        (Some(t), _) => ReplayRequest::From(t),
        (_, Some(id)) => ReplayRequest::Order(id),
        _ => ReplayRequest::Full,
    })
}

async fn start_replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, true).await?;
    let request = parse_replay_request(body.as_ref())?;
    let job = state.jobs.start(request).map_err(|e| match e {
        StartError::AlreadyRunning(_) => ApiError::Conflict(e.to_string()),
    })?;
    let mut response = (StatusCode::ACCEPTED, Json(json!({ "jobId": job }))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/admin/replay/{job}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn replay_status(
    State(state): State<AppState>,
    Path(job): Path<String>,
) -> Result<Response, ApiError> {
    let unknown = || ApiError::NotFound("no replay job with this id".into());
    let job = Uuid::try_parse(&job).map_err(|_| unknown())?;
    let status = state.jobs.status(job).ok_or_else(unknown)?;
    Ok(Json(status).into_response())
}

async fn take_snapshot(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_order_id(&id)?;
    match state.service.snapshot(id).await? {
        Some(version) => Ok((
            StatusCode::CREATED,
            Json(json!({ "orderId": id, "version": version })),
        )
            .into_response()),
        None => Err(ApiError::NotFound("no order with this id".into())),
    }
}

async fn projections(State(state): State<AppState>) -> Result<Response, ApiError> {
    let status = state.read_side.status();
    let (position, lag) = crate::ops::projection_gauges(&state, &status).await;
    let parked = state.reads().parked(OrderProjection::NAME).await?;
    let checkpoint = status.checkpoint.as_ref().map(|c| c.encode());
    Ok(Json(json!({
        "projections": [{
            "name": status.name,
            "state": status.state.as_str(),
            "position": position,
            "checkpoint": checkpoint,
            "lagSeconds": lag,
            "eventsApplied": status.events_applied,
            "lastError": status.last_error,
            "generation": state.read_side.generation(),
            "loadingGeneration": state.read_side.loading_generation(),
            "parked": parked,
        }]
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"toke", b"token"));
        assert!(!same_secret(b"tokens", b"token"));
        assert!(!same_secret(b"", b"token"));
        assert!(!same_secret(b"tokeN", b"token"));
    }

    #[test]
    fn replay_bodies_are_parsed_strictly() {
        assert_eq!(parse_replay_request(None).ok(), Some(ReplayRequest::Full));
        assert_eq!(
            parse_replay_request(Some(&json!({}))).ok(),
            Some(ReplayRequest::Full)
        );
        assert!(matches!(
            parse_replay_request(Some(&json!({"fromTimestamp": "2026-01-01T00:00:00Z"}))),
            Ok(ReplayRequest::From(_))
        ));
        for bad in [
            json!({"fromTimestamp": "yesterday"}),
            json!({"aggregateId": 5}),
            json!({"x": 1}),
            json!([]),
            json!({"fromTimestamp": "2026-01-01T00:00:00Z", "aggregateId": "0193a0c0-0000-7000-8000-000000000001"}),
        ] {
            assert!(
                matches!(
                    parse_replay_request(Some(&bad)),
                    Err(ApiError::Validation(_))
                ),
                "{bad}"
            );
        }
    }
}
