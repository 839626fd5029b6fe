//! Operator endpoints: replay jobs, snapshots, projection status. They need
//! `Authorization: Bearer <token>` equal to the configured admin token.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use ordo_es::ProjectionState;

use ordo_app::{EraseError, JobStatus, OrderProjection, ReplayRequest, StartError};
use ordo_domain::privacy::KeyRingError;
use ordo_domain::{CustomerEmail, FieldError, ParkedEvent};

use crate::auth::{SecretToken, bearer, same_secret};
use crate::error::ApiError;
use crate::extract::json_body;
use crate::openapi::{AdminErrors, BadRequest, BodyErrors, Conflict, NotFound, Unavailable};
use crate::{AppState, parse_order_id};

/// The admin routes, behind `admin_token` (none: they answer 403).
pub fn router(admin_token: Option<SecretToken>) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_replay))
        .routes(routes!(replay_status))
        .routes(routes!(take_snapshot))
        .routes(routes!(projections))
        .routes(routes!(erase_personal_data))
        .route_layer(middleware::from_fn_with_state(admin_token, require_admin))
}

/// A replay request. Without a body (or `{}`), every read model is rebuilt beside the
/// live ones and switched over when complete.
#[derive(serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ReplayRequest)]
#[allow(dead_code)] // Documentation only: `parse_replay_request` reads the body.
struct ReplayBody {
    /// Repair every order with an event at or after this RFC 3339 instant.
    from_timestamp: Option<OffsetDateTime>,
    /// Repair one order.
    aggregate_id: Option<Uuid>,
}

/// A replay job was started.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ReplayStarted {
    job_id: Uuid,
}

/// A snapshot was taken.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SnapshotTaken {
    order_id: Uuid,
    /// The version the snapshot covers.
    version: u64,
}

/// The projections of this process.
#[derive(Serialize, ToSchema)]
struct Projections {
    projections: Vec<ProjectionReport>,
}

/// One projection: where it is, how far behind, and what it could not apply.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ProjectionReport {
    name: String,
    /// starting, catching-up, running, failing, halted, stopped or following. `halted`: the event
    /// log went backwards under the projection (see `lastError` and `repair`); nothing
    /// more is applied until the read models are rebuilt. `following`: this process
    /// runs no projection (`--role api`); the report is of the checkpoint other
    /// processes stored, and `lastError` of reading it.
    #[schema(example = "running")]
    state: &'static str,
    /// What repairs the state, when only an operator can: for `halted`, rebuilding the
    /// read models from the event log. Null otherwise.
    repair: Option<&'static str>,
    /// The checkpoint the latest check of the event log confirmed (the log reached it and
    /// holds there the events the projection applied), opaque; null before the first check.
    log_checked: Option<String>,
    /// The sum of the checkpoint's cursors: grows as events are applied.
    position: u64,
    /// The checkpoint, opaque; null before the first batch.
    checkpoint: Option<String>,
    /// How old the oldest event not yet applied is, approximately; 0 when caught up.
    lag_seconds: f64,
    /// Events applied since the process started.
    events_applied: u64,
    /// What went wrong last, while failing (a store error, a panic, a batch stuck for
    /// too long) or after an event was parked; null otherwise.
    last_error: Option<String>,
    /// Times the projection's runner was restarted after it panicked or a batch got
    /// stuck (each restart resumes from the stored checkpoint).
    restarts: u64,
    /// The read-model generation queries are served from.
    generation: String,
    /// A generation being loaded by a rebuild or a bulk start, if any.
    loading_generation: Option<String>,
    /// Events the projection could not apply, kept aside, oldest first.
    parked: Vec<ParkedEvent>,
    /// Where the read models are in PostgreSQL, the projection is divided into shards
    /// (the event log's partitions), each projected by the process holding its lease:
    /// every shard, with its holder, position and backlog. Null where one process
    /// projects everything (the embedded store).
    shards: Option<Vec<ShardJson>>,
}

/// One shard of a projection.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ShardJson {
    /// The shard's number: the event-log partition it projects.
    shard: u32,
    /// The projector process holding the lease (host, process id and a random part);
    /// null when nobody holds it.
    owner: Option<String>,
    /// Whether the holder is the process answering.
    here: bool,
    /// The lease's fencing token: greater at every new holder.
    token: Option<u64>,
    /// When the lease lapses unless renewed (the database's clock); a time in the past
    /// means its holder stopped renewing and another projector may take it.
    #[serde(with = "time::serde::rfc3339::option")]
    lease_expires_at: Option<time::OffsetDateTime>,
    /// The position of the last event applied in the shard's partition, opaque; null
    /// before the first.
    position: Option<String>,
    /// Events of the shard's partition not applied yet; null when the event store did
    /// not answer.
    events_behind: Option<u64>,
}

async fn require_admin(
    State(admin_token): State<Option<SecretToken>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = admin_token.as_ref() else {
        return crate::error::problem_response(
            StatusCode::FORBIDDEN,
            "admin endpoints are disabled: start ordo with --admin-token or ORDO_ADMIN_TOKEN set"
                .into(),
            None,
        );
    };
    match bearer(&request) {
        Some(token) if same_secret(token.as_bytes(), expected.expose().as_bytes()) => {
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

/// Starts rebuilding the read models from the events (all of them, one order, or every
/// order touched since an instant).
#[utoipa::path(
    post,
    path = "/api/v1/admin/replay",
    tag = "admin",
    operation_id = "startReplay",
    security(("admin" = [])),
    request_body(content = Option<ReplayBody>, content_type = "application/json", description = "Optional."),
    responses(
        (status = 202, description = "Started; poll the job.", body = ReplayStarted, headers(("Location" = String, description = "The job's path."))),
        (status = 400, response = BadRequest),
        AdminErrors,
        (status = 409, response = Conflict),
        BodyErrors,
        (status = 503, response = Unavailable),
    ),
)]
async fn start_replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, true).await?;
    let request = parse_replay_request(body.as_ref())?;
    let job = state.jobs.start(request).map_err(|e| match e {
        StartError::AlreadyRunning(_) | StartError::NoProjection => {
            ApiError::Conflict(e.to_string())
        }
    })?;
    let mut response = (StatusCode::ACCEPTED, Json(ReplayStarted { job_id: job })).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/admin/replay/{job}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// A replay job's progress.
#[utoipa::path(
    get,
    path = "/api/v1/admin/replay/{job}",
    tag = "admin",
    operation_id = "replayStatus",
    security(("admin" = [])),
    params(("job" = String, Path, description = "The jobId the start answered.")),
    responses(
        (status = 200, description = "The job.", body = JobStatus),
        AdminErrors,
        (status = 404, response = NotFound),
    ),
)]
async fn replay_status(
    State(state): State<AppState>,
    Path(job): Path<String>,
) -> Result<Response, ApiError> {
    let unknown = || ApiError::NotFound("no replay job with this id".into());
    let job = Uuid::try_parse(&job).map_err(|_| unknown())?;
    let status = state.jobs.status(job).ok_or_else(unknown)?;
    Ok(Json(status).into_response())
}

/// Takes a snapshot of one order now.
#[utoipa::path(
    post,
    path = "/api/v1/admin/snapshots/{id}",
    tag = "admin",
    operation_id = "takeSnapshot",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The order id.")),
    responses(
        (status = 201, description = "Taken.", body = SnapshotTaken),
        AdminErrors,
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn take_snapshot(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_order_id(&id)?;
    match state.service.snapshot(id).await? {
        Some(version) => Ok((
            StatusCode::CREATED,
            Json(SnapshotTaken {
                order_id: id,
                version,
            }),
        )
            .into_response()),
        None => Err(ApiError::NotFound("no order with this id".into())),
    }
}

/// What an erasure did.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ErasureDone {
    /// The e-mail as given (normalised): the caller's own input, echoed.
    #[schema(example = "ada@example.com")]
    customer_email: String,
    /// Orders whose personal data this call removed from the read models: 0 when the
    /// erasure is repeated.
    orders_affected: u64,
    /// When the customer's keys were destroyed (the first erasure's time when repeated).
    #[serde(with = "time::serde::rfc3339")]
    erased_at: OffsetDateTime,
}

/// Erase one customer's personal data (crypto-shredding).
///
/// Destroys the customer's data keys, so that their name, e-mail and address can no
/// longer be read from any copy of their events, records the erasure (when, by which
/// admin token's holder, without the personal data), and rebuilds their orders' read
/// models: the orders stay, with null personal fields and `personalDataErased: true`,
/// and no customer query, search or top-customers row finds them. Repeating it answers
/// 200 again and changes nothing. An order placed later with the same e-mail gets a new
/// key and is not erased. See docs/privacy.md.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/customers/{email}/personal-data",
    tag = "admin",
    operation_id = "erasePersonalData",
    security(("admin" = [])),
    params(("email" = String, Path, description = "The customer's e-mail address (compared case-insensitively).", example = "ada@example.com")),
    responses(
        (status = 200, description = "Erased (or erased before).", body = ErasureDone),
        (status = 400, response = BadRequest),
        AdminErrors,
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn erase_personal_data(
    State(state): State<AppState>,
    Path(email): Path<String>,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let email = CustomerEmail::parse(&email)
        .map_err(|e| ApiError::BadRequest(format!("email (path) {e}")))?;
    let by = match crate::auth::bearer_of(&request_headers) {
        Some(token) => format!(
            "admin-token:{}",
            ordo_domain::privacy::crypto::token_fingerprint(token)
        ),
        None => "admin-token".to_owned(),
    };
    let report = state
        .erasures
        .erase(&email, &by)
        .await
        .map_err(|e| match e {
            EraseError::NotFound => {
                ApiError::NotFound("no order ever had this customer e-mail".into())
            }
            EraseError::ReadModelsBehind | EraseError::RebuildRunning => ApiError::Unavailable {
                detail: e.to_string(),
                retry_after_secs: 5,
            },
            EraseError::Keys(KeyRingError::Store(_))
            | EraseError::Events(_)
            | EraseError::Reads(_) => ApiError::Unavailable {
                detail:
                    "a store did not answer; the erasure may be partly done: ask again to finish it"
                        .into(),
                retry_after_secs: 2,
            },
            other => ApiError::Internal(anyhow::Error::new(other)),
        })?;
    Ok(Json(ErasureDone {
        customer_email: report.customer_email,
        orders_affected: report.orders_affected,
        erased_at: report.erased_at,
    })
    .into_response())
}

/// The repair of a projection halted by an event log that went backwards.
const HALTED_REPAIR: &str = "rebuild the read models from the event log: run `ordo replay`, \
     or POST /api/v1/admin/replay with an empty body; the rebuilt projection starts over \
     from the log as it is now";

/// The state a process that runs no projection (`--role api`) reports.
const FOLLOWING: &str = "following";

/// The state of each projection.
#[utoipa::path(
    get,
    path = "/api/v1/admin/projections",
    tag = "admin",
    operation_id = "projections",
    security(("admin" = [])),
    responses(
        (status = 200, description = "Every projection of this process.", body = Projections),
        AdminErrors,
        (status = 503, response = Unavailable),
    ),
)]
async fn projections(State(state): State<AppState>) -> Result<Response, ApiError> {
    let status = state.read_side.status();
    let (position, lag) = crate::ops::projection_gauges(&state, &status).await;
    let parked = state.reads().parked(OrderProjection::NAME).await?;
    let shards = state.read_side.shard_reports().await?.map(|shards| {
        shards
            .into_iter()
            .map(|s| ShardJson {
                shard: s.shard,
                owner: s.owner,
                here: s.here,
                token: s.token,
                lease_expires_at: s.lease_expires_at,
                position: s.position,
                events_behind: s.events_behind,
            })
            .collect()
    });
    let checkpoint = status.checkpoint.as_ref().map(|c| c.encode());
    let state_name = if state.read_side.runs_projection() {
        status.state.as_str()
    } else {
        FOLLOWING
    };
    Ok(Json(Projections {
        projections: vec![ProjectionReport {
            name: status.name,
            state: state_name,
            repair: (status.state == ProjectionState::Halted).then_some(HALTED_REPAIR),
            log_checked: status.log_checked.as_ref().map(|c| c.encode()),
            position,
            checkpoint,
            lag_seconds: lag,
            events_applied: status.events_applied,
            last_error: status.last_error,
            restarts: status.restarts,
            generation: state.read_side.generation(),
            loading_generation: state.read_side.loading_generation(),
            parked,
            shards,
        }],
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
