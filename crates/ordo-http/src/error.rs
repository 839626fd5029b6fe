//! The API's one error type, and its problem+json form (RFC 9457).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use ordo_app::{CommandError, HistoryError};
use ordo_domain::{FieldError, OrderError, ReadStoreError};
use ordo_es::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything a handler can answer with other than success. Only this type knows HTTP
/// statuses.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body is invalid")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after_secs: u32,
    },
    /// A bug or an unexpected failure: logged, never shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// An RFC 9457 problem document: the body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no order with this id"}))]
pub(crate) struct Problem<'a> {
    /// Always `about:blank`: the status and title say what kind of problem it is.
    #[serde(rename = "type")]
    kind: &'a str,
    /// The status's standard reason phrase.
    title: &'a str,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong, in words meant for the client's developer; never internal details.
    detail: String,
    /// Only on 422 validation failures: one entry per bad field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<FieldError>>)]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) | ApiError::Unprocessable(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        ApiError::Unavailable {
            detail: detail.into(),
            retry_after_secs: 1,
        }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(error.into())
    }
}

/// A problem document for `status` with the standard title.
pub fn problem_response(
    status: StatusCode,
    detail: String,
    errors: Option<&[FieldError]>,
) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = Problem {
        kind: "about:blank",
        title,
        status: status.as_u16(),
        detail,
        errors,
    };
    let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (status, json).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = match &self {
            ApiError::Validation(errors) => problem_response(
                status,
                "the request body failed validation; see errors".into(),
                Some(errors),
            ),
            ApiError::Internal(cause) => {
                // Logged with the request id by the middleware, which finds it here.
                let mut r = problem_response(
                    status,
                    "an internal error occurred; quote the X-Request-Id when reporting it".into(),
                    None,
                );
                r.extensions_mut()
                    .insert(InternalCause(format!("{cause:#}")));
                r
            }
            other => problem_response(status, other.to_string(), None),
        };
        if let ApiError::Unavailable {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

/// The hidden cause of a 500, for the log.
#[derive(Clone, Debug)]
pub struct InternalCause(pub String);

/// The answer when a bounded queue in front of a store is full: at once, with what is
/// full and by how much, so that an operator reading the client's report knows which
/// limit (`--max-pending`) was reached. Counted by the queue's metrics, not logged: a
/// log line per turned-away request would be its own overload.
fn overloaded(store: &str, full: &ordo_es::Overloaded) -> ApiError {
    ApiError::unavailable(format!(
        "the {store} is busy: {} operations are already in flight or waiting; retry later",
        full.limit
    ))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "event store unavailable");
                ApiError::unavailable("the event store is unavailable; retry later")
            }
            StoreError::Overloaded(full) => overloaded("event store", &full),
            other => ApiError::internal(other),
        }
    }
}

impl From<ReadStoreError> for ApiError {
    fn from(e: ReadStoreError) -> Self {
        match e {
            ReadStoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "read store unavailable");
                ApiError::unavailable("the read store is unavailable; retry later")
            }
            ReadStoreError::Overloaded(full) => overloaded("read store", &full),
            other => ApiError::internal(other),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::NotFound => ApiError::NotFound("no order with this id".into()),
            OrderError::Deleted => {
                ApiError::Gone("the order has been deleted and accepts no command".into())
            }
            other => ApiError::Conflict(other.to_string()),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Rule(rule) => rule.into(),
            CommandError::PreconditionFailed { current } => ApiError::PreconditionFailed(format!(
                "If-Match does not match the order's current version \"{current}\""
            )),
            CommandError::IdempotencyMismatch => ApiError::Unprocessable(
                "this Idempotency-Key was already used with a different request body".into(),
            ),
            CommandError::Contended => ApiError::Conflict(
                "too many concurrent writers on this order; retry the command".into(),
            ),
            CommandError::Store(s) => s.into(),
            CommandError::Decode(d) => ApiError::internal(d),
        }
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> Self {
        match e {
            HistoryError::Store(s) => s.into(),
            HistoryError::Decode(d) => ApiError::internal(d),
            other => ApiError::NotFound(other.to_string()),
        }
    }
}
