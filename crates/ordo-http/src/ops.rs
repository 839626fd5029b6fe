//! Operations: liveness, readiness, metrics.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use time::OffsetDateTime;

use ordo_es::{ProjectionState, ProjectionStatus};

use crate::AppState;
use crate::error::problem_response;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

async fn health() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

const PING_TIMEOUT: Duration = Duration::from_secs(2);

async fn ready(State(state): State<AppState>) -> Response {
    let mut problems = Vec::new();
    match tokio::time::timeout(PING_TIMEOUT, state.service.store().ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: event store");
            problems.push("the event store does not answer".to_string());
        }
        Err(_) => problems.push("the event store did not answer in time".to_string()),
    }
    match tokio::time::timeout(PING_TIMEOUT, state.reads().ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: read store");
            problems.push("the read store does not answer".to_string());
        }
        Err(_) => problems.push("the read store did not answer in time".to_string()),
    }
    let status = state.read_side.status();
    match status.state {
        ProjectionState::Running => {}
        ProjectionState::Starting => {
            problems.push(format!("projection {} is starting", status.name))
        }
        ProjectionState::Stopped => {
            problems.push(format!("projection {} has stopped", status.name))
        }
        ProjectionState::Failing => problems.push(format!(
            "projection {} is failing: {}",
            status.name,
            status.last_error.as_deref().unwrap_or("unknown error")
        )),
    }
    if problems.is_empty() {
        axum::Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        problem_response(StatusCode::SERVICE_UNAVAILABLE, problems.join("; "), None)
    }
}

/// Lag: how old the oldest unprojected event is, approximated by the time since the last
/// projected event when events are waiting, else 0.
pub(crate) async fn projection_gauges(state: &AppState, status: &ProjectionStatus) -> (u64, f64) {
    let Some(checkpoint) = &status.checkpoint else {
        return (0, 0.0);
    };
    let position: u64 = checkpoint.cursors().iter().map(|c| c.major).sum();
    let waiting = state
        .service
        .store()
        .count_after(checkpoint)
        .await
        .unwrap_or(0);
    let lag = match (waiting, status.last_event_at) {
        (0, _) => 0.0,
        (_, Some(at)) => (OffsetDateTime::now_utc() - at).as_seconds_f64().max(0.0),
        (_, None) => 0.0,
    };
    (position, lag)
}

async fn metrics(State(state): State<AppState>) -> Response {
    let status = state.read_side.status();
    let (position, lag) = projection_gauges(&state, &status).await;
    let gauges = crate::metrics::ProjectionGauges {
        name: status.name.clone(),
        position,
        lag_seconds: lag,
        parked: status.events_parked,
    };
    let body = state.metrics.render(&[gauges], state.jobs.events_applied());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
