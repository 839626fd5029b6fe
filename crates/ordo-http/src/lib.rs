//! # ordo-http: the HTTP layer
//!
//! The outside of ordo (docs/api.md) as an axum [`Router`]. Handlers parse
//! untrusted input into domain commands and queries, call the [`OrderService`] (write
//! side) or the [`OrderReadStore`] (read side), and turn every failure into one
//! [`ApiError`], the only type that knows HTTP statuses. Every error is
//! `application/problem+json`.
//!
//! ## Layout
//!
//! - `commands.rs`: POST/PUT/DELETE on orders: If-Match, Idempotency-Key, answers with
//!   `ETag` and `X-Consistency-Token`.
//! - `queries.rs`: list, get, status, customer, summary, top customers, search (from the
//!   read models, with read-your-writes on `X-Consistency-Token`), and history (from the
//!   event store: events, `asOfVersion`, `asOf`).
//! - `ops.rs`: `/health`, `/ready`, `/metrics`.
//! - `stream/`: `GET /api/v1/events/stream`, the global log as Server-Sent Events, fed
//!   by one tail of the log per process ([`EventFeed`]).
//! - `admin.rs`: replay jobs, snapshots and projection status, behind a bearer token.
//! - `auth.rs`: the optional API tokens ([`ApiTokens`], scopes `read` and `write`) and
//!   the middleware that asks for them on the commands, queries and event stream.
//! - `openapi.rs`: the OpenAPI 3.1 document. Each module's `router()` registers its
//!   handlers with `utoipa_axum`'s `routes!`, which takes the path and method from the
//!   handler's `#[utoipa::path]`, so router and document come from one source.
//! - `web.rs`: the web interface (dashboard, order page, API reference) and its assets
//!   from `web/`, compiled in; the pages use only the public API.
//! - `limits.rs`: the request deadline (every route but the event stream).
//! - `error.rs`, `extract.rs`: problem documents, and reading bodies, headers and query
//!   strings without trusting them.
//! - This file: [`AppState`], [`router`] (one `router()` per module, merged here),
//!   [`operations_router`] (a projector process's: the operations endpoints alone) and
//!   the middleware: request ids, metrics, and a last pass that turns any non-problem
//!   error response (404 of an unknown route, 405) into a problem document.

mod admin;
mod auth;
mod commands;
mod error;
mod extract;
mod limits;
mod metrics;
mod openapi;
mod ops;
mod queries;
mod stream;
mod web;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Extension, Router};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use ordo_app::{OrderService, ReadSide, ReplayJobs};
use ordo_domain::OrderReadStore;

pub use auth::{ApiTokens, MIN_TOKEN_LEN, Scope, SecretToken, TokenFileError};
pub use error::{ApiError, PROBLEM_JSON};
pub use limits::DEFAULT_REQUEST_DEADLINE;
pub use metrics::Metrics;
pub use queries::{EventJson, event_json};
pub use stream::{EventFeed, StreamLimits};

/// The readers of untrusted request parts, for the fuzz targets (`fuzz/`) and property
/// tests: not part of the API, and free to change with them.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::extract::{MAX_BODY, header_text, if_match, json_body, query_pairs};
    pub use crate::stream::{TokenError, parse_resume_token, resume_token};
}

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub service: OrderService,
    /// The live read models (queries) and their projection.
    pub read_side: Arc<ReadSide>,
    pub jobs: Arc<ReplayJobs>,
    /// Erasing customers' personal data.
    pub erasures: Arc<ordo_app::Erasures>,
    pub metrics: Arc<Metrics>,
    /// Partitions of the event store's log (to reject foreign consistency tokens).
    pub partitions: u32,
    /// The admin bearer token; admin endpoints answer 403 without one.
    pub admin_token: Option<SecretToken>,
    /// The API tokens; none: the API is open.
    pub api_tokens: Option<Arc<ApiTokens>>,
    /// The tail of the global log that feeds the event stream.
    pub event_feed: Arc<EventFeed>,
    /// Every request but the event stream answers within this (503 past it); a
    /// consistency wait ends before it.
    pub request_deadline: Duration,
    /// The bound on requests waiting for the read models to reach a consistency token.
    pub consistency_waits: Arc<ordo_es::Admission>,
    /// Every bounded queue of the service, for the metrics.
    pub queues: Vec<Arc<ordo_es::Admission>>,
}

impl AppState {
    pub(crate) fn reads(&self) -> Arc<dyn OrderReadStore> {
        self.read_side.store()
    }
}

/// The request id of the current request (the client's `X-Request-Id` when it is
/// sensible, else a new UUID).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Every route, each with its OpenAPI description (`#[utoipa::path]` beside its handler).
/// The commands, queries and event stream are behind the API tokens (when there are any);
/// the admin routes behind the admin token alone. Every route but the event stream, which
/// lasts as long as its client wants, answers within `deadline`.
fn routes(
    admin_token: Option<SecretToken>,
    api_tokens: Option<Arc<ApiTokens>>,
    deadline: Option<Duration>,
) -> OpenApiRouter<AppState> {
    let guard = |query_token| {
        middleware::from_fn_with_state(
            auth::Guard {
                tokens: api_tokens.clone(),
                query_token,
            },
            auth::require_token,
        )
    };
    let api = OpenApiRouter::new()
        .merge(commands::router())
        .merge(queries::router())
        .route_layer(guard(false));
    let bounded = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(api)
        .merge(ops::router())
        .merge(admin::router(admin_token))
        .merge(web::router())
        .routes(routes!(openapi::openapi_json));
    let bounded = match deadline {
        Some(deadline) => bounded.layer(limits::deadline_layer(deadline)),
        None => bounded,
    };
    bounded.merge(stream::router().route_layer(guard(true)))
}

/// The OpenAPI 3.1 document of the API, as `GET /api-docs/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes(None, None, None).into_openapi();
    openapi::Finish.modify(&mut doc);
    doc
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let (routes, mut doc) = routes(
        state.admin_token.clone(),
        state.api_tokens.clone(),
        Some(state.request_deadline),
    )
    .split_for_parts();
    openapi::Finish.modify(&mut doc);
    with_middleware(routes, &state)
        .layer(Extension(openapi::Document::new(&doc)))
        .with_state(state)
}

/// What a process that only runs projections serves (`ordo serve --role projector`):
/// `/health`, `/ready` and `/metrics`, with the same middleware as [`router`]; every
/// other path is the problem document of an unknown route (404).
pub fn operations_router(state: AppState) -> Router {
    let (routes, _) = OpenApiRouter::new()
        .merge(ops::router())
        .layer(limits::deadline_layer(state.request_deadline))
        .split_for_parts();
    with_middleware(routes, &state).with_state(state)
}

/// Route tags for the metrics, the unknown-route fallback, request ids, metrics and
/// problem documents, and the body limit.
fn with_middleware(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes
        .route_layer(middleware::from_fn(tag_route))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::extract::DefaultBodyLimit::max(extract::MAX_BODY))
}

async fn unknown_route() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// An order id from a path: anything that is not a UUID is an unknown order (404).
pub(crate) fn parse_order_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::NotFound("no order with this id".into()))
}

fn request_id(request: &Request) -> String {
    request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| (1..=200).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_string)
}

/// Hands the matched route template to the outer middleware (for metric labels).
async fn tag_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(m) = matched {
        response.extensions_mut().insert(m);
    }
    response
}

/// Request ids, metrics, logging of 5xx causes, and problem documents for every error.
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&request);
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().as_str().to_string();
    let mut response = next.run(request).await;
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());

    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if (status.is_client_error() || status.is_server_error()) && !is_problem {
        let detail = match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                format!(
                    "method {method} is not allowed on this route; the Allow header lists those that are"
                )
            }
            StatusCode::NOT_FOUND => "no such route".to_string(),
            StatusCode::PAYLOAD_TOO_LARGE => format!(
                "the request body is larger than {} bytes",
                extract::MAX_BODY
            ),
            other => other.canonical_reason().unwrap_or("error").to_string(),
        };
        let mut problem = error::problem_response(status, detail, None);
        for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
            if let Some(v) = response.headers().get(&name) {
                problem.headers_mut().insert(name, v.clone());
            }
        }
        response = problem;
    }
    if status.is_server_error() {
        let cause = response
            .extensions()
            .get::<error::InternalCause>()
            .map_or("", |c| c.0.as_str());
        tracing::error!(request_id = %id, %method, %route, status = status.as_u16(), cause, "request failed");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    state.metrics.http(
        metrics::method_label(&method),
        &route,
        status.as_u16(),
        started.elapsed(),
    );
    response
}
