//! Operations: liveness, readiness, metrics.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use ordo_es::{ProjectionState, ProjectionStatus};

use crate::error::problem_response;
use crate::openapi::Unavailable;
use crate::{AppState, RequestId};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

/// The answer of /health and of a ready /ready.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)] // Documentation only; the handlers write the same object.
struct StatusAnswer {
    /// `ok` (health) or `ready`.
    #[schema(example = "ok")]
    status: String,
    /// On /ready only: `here` when this process runs the projections (and /ready checked
    /// them), `elsewhere` when it runs none (`--role api`: it answers from the read
    /// models other processes keep, and /ready checked the stores only).
    #[schema(example = "here")]
    projections: Option<String>,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    operation_id = "health",
    responses((status = 200, description = "The process runs.", body = StatusAnswer)),
)]
async fn health() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// How long each store has to answer the readiness ping. Both are pinged at once, and
/// never for longer than the request deadline allows (less a margin), so that a store
/// that stops answering is named, instead of the answer being the deadline's.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness: the stores answer and the projections run (in a process that runs them:
/// with `--role api`, the stores only).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    operation_id = "ready",
    responses(
        (status = 200, description = "Ready.", body = StatusAnswer),
        (status = 503, response = Unavailable),
    ),
)]
async fn ready(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
) -> Response {
    let mut problems = Vec::new();
    let ping_timeout =
        PING_TIMEOUT.min(crate::limits::consistency_wait_cap(state.request_deadline));
    let reads = state.reads();
    let keys = state.erasures.ring().store();
    let (events_ping, reads_ping, keys_ping) = tokio::join!(
        tokio::time::timeout(ping_timeout, state.service.store().ping()),
        tokio::time::timeout(ping_timeout, reads.ping()),
        tokio::time::timeout(ping_timeout, keys.ping()),
    );
    match events_ping {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(request_id = %request_id, error = %e, "readiness: event store");
            problems.push("the event store does not answer".to_string());
        }
        Err(_) => problems.push("the event store did not answer in time".to_string()),
    }
    match reads_ping {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(request_id = %request_id, error = %e, "readiness: read store");
            problems.push("the read store does not answer".to_string());
        }
        Err(_) => problems.push("the read store did not answer in time".to_string()),
    }
    match keys_ping {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(request_id = %request_id, error = %e, "readiness: key store");
            problems.push("the key store does not answer".to_string());
        }
        Err(_) => problems.push("the key store did not answer in time".to_string()),
    }
    let projection = state.read_side.status();
    if state.read_side.runs_projection() {
        problems.extend(projection_problem(&projection));
    }
    if problems.is_empty() {
        let projections = if state.read_side.runs_projection() {
            "here"
        } else {
            "elsewhere"
        };
        return axum::Json(serde_json::json!({ "status": "ready", "projections": projections }))
            .into_response();
    }
    let detail = problems.join("; ");
    // The answer names the part only; the cause (store or database text) is for the log
    // and the admin projections endpoint, not for whoever can reach /ready.
    tracing::warn!(
        request_id = %request_id,
        detail,
        projection_error = projection.last_error.as_deref().unwrap_or(""),
        "not ready"
    );
    problem_response(StatusCode::SERVICE_UNAVAILABLE, detail, None)
}

/// Why a projection keeps the service from being ready, if it does. A projection still
/// applying the backlog it started with serves incomplete read models: not ready until it
/// has caught up once (lagging under load later is not an outage; see the lag metric).
fn projection_problem(status: &ProjectionStatus) -> Option<String> {
    let name = &status.name;
    match status.state {
        // Fenced: a shard's runner whose lease moved to another process, which projects
        // it now; nothing is missing.
        ProjectionState::Running | ProjectionState::Fenced => None,
        ProjectionState::Starting => Some(format!("projection {name} is starting")),
        ProjectionState::CatchingUp => Some(format!(
            "projection {name} is catching up with the events stored before it started"
        )),
        ProjectionState::Stopped => Some(format!("projection {name} has stopped")),
        ProjectionState::Failing => Some(format!(
            "projection {name} is failing; see the log and GET /api/v1/admin/projections"
        )),
        // The runner's own text (partition and positions, no store or database text): the
        // repair needs saying where the operator looks first.
        ProjectionState::Halted => Some(format!(
            "projection {name} has halted: {}",
            status
                .last_error
                .as_deref()
                .unwrap_or("the event log went backwards; run `ordo replay`")
        )),
    }
}

/// Lag: how old the oldest unprojected event is, approximated by the time since the last
/// projected event when events are waiting, else 0. A process that runs no projection
/// knows no last projected event: it reads the first event after the stored checkpoint.
pub(crate) async fn projection_gauges(state: &AppState, status: &ProjectionStatus) -> (u64, f64) {
    let Some(checkpoint) = &status.checkpoint else {
        return (0, 0.0);
    };
    let position: u64 = checkpoint.cursors().iter().map(|c| c.major).sum();
    // The read side's own store, not the commands' gated one: the metrics are most
    // needed when the queues are full.
    let waiting = state
        .read_side
        .events()
        .count_after(checkpoint)
        .await
        .unwrap_or(0);
    let last_event_at = match status.last_event_at {
        None if waiting > 0 && !state.read_side.runs_projection() => {
            first_event_after(state, checkpoint).await
        }
        at => at,
    };
    let lag = match (waiting, last_event_at) {
        (0, _) => 0.0,
        (_, Some(at)) => (OffsetDateTime::now_utc() - at).as_seconds_f64().max(0.0),
        (_, None) => 0.0,
    };
    (position, lag)
}

/// When the first event after `checkpoint` occurred (`None` when it cannot be read).
async fn first_event_after(
    state: &AppState,
    checkpoint: &ordo_es::Checkpoint,
) -> Option<OffsetDateTime> {
    let events = state
        .read_side
        .events()
        .read_all(checkpoint, 1)
        .await
        .ok()?;
    events.first().map(|e| e.occurred_at)
}

/// Prometheus metrics: commands by type and outcome, append latency, projection position
/// and lag, replay progress, HTTP requests.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4.", content_type = "text/plain", body = String)),
)]
async fn metrics(State(state): State<AppState>) -> Response {
    let status = state.read_side.status();
    let (position, lag) = projection_gauges(&state, &status).await;
    let runner = state
        .read_side
        .runs_projection()
        .then(|| crate::metrics::RunnerGauges {
            applied: state.read_side.events_committed(),
            parked: status.events_parked,
            restarts: status.restarts,
            halted: status.state == ProjectionState::Halted,
            shards_owned: state
                .read_side
                .shards_owned()
                .unwrap_or(u64::from(state.partitions)),
        });
    let gauges = crate::metrics::ProjectionGauges {
        name: status.name.clone(),
        position,
        lag_seconds: lag,
        runner,
    };
    let mut body = state.metrics.render(&[gauges], state.jobs.events_applied());
    let queues: Vec<_> = state.queues.iter().map(|q| q.stats()).collect();
    crate::metrics::render_queues(&mut body, &queues);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: ProjectionState, last_error: Option<&str>) -> ProjectionStatus {
        ProjectionStatus {
            name: "orders".into(),
            state,
            checkpoint: None,
            last_event_at: None,
            last_error: last_error.map(str::to_string),
            events_applied: 0,
            events_parked: 0,
            restarts: 0,
            log_checked: None,
        }
    }

    #[test]
    fn only_a_running_projection_is_ready() {
        assert_eq!(
            projection_problem(&status(ProjectionState::Running, Some("parked event x"))),
            None,
            "a parked event is reported elsewhere, not an outage"
        );
        for (state, expected) in [
            (
                ProjectionState::CatchingUp,
                "projection orders is catching up with the events stored before it started",
            ),
            (ProjectionState::Starting, "projection orders is starting"),
            (
                ProjectionState::Failing,
                "projection orders is failing; see the log and GET /api/v1/admin/projections",
            ),
            (ProjectionState::Stopped, "projection orders has stopped"),
            (
                ProjectionState::Halted,
                "projection orders has halted: disk full",
            ),
        ] {
            assert_eq!(
                projection_problem(&status(state, Some("disk full"))).as_deref(),
                Some(expected)
            );
        }
    }
}
