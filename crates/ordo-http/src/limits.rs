//! The request deadline: every route but the event stream answers within it.

use std::future::{Ready, ready};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::response::{IntoResponse, Response};
use tower::layer::util::{Identity, Stack};
use tower::timeout::TimeoutLayer;
use tower::{BoxError, ServiceBuilder};

use crate::error::ApiError;

/// The default request deadline (docs/api.md).
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// How long a consistency wait may last under `deadline`: it must end before the
/// deadline, so that the client hears why (the read models lag) instead of a bare
/// deadline answer. The margin is a fifth of the deadline, at most one second.
pub(crate) fn consistency_wait_cap(deadline: Duration) -> Duration {
    deadline.saturating_sub((deadline / 5).min(Duration::from_secs(1)))
}

type DeadlineLayer<F> =
    ServiceBuilder<Stack<TimeoutLayer, Stack<HandleErrorLayer<F, ()>, Identity>>>;

/// tower's timeout, with its error turned into the API's 503 problem document with
/// `Retry-After` (tower answers an error, not a response; axum needs a response).
pub(crate) fn deadline_layer(
    deadline: Duration,
) -> DeadlineLayer<impl Fn(BoxError) -> Ready<Response> + Clone> {
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |error: BoxError| {
            ready(deadline_answer(deadline, &error))
        }))
        .layer(TimeoutLayer::new(deadline))
}

fn deadline_answer(deadline: Duration, error: &BoxError) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::Unavailable {
            detail: format!(
                "the request did not finish within its deadline of {} ms; retry later",
                deadline.as_millis()
            ),
            retry_after_secs: 1,
        }
        .into_response()
    } else {
        // The routes inside cannot fail (axum handlers are infallible): only the timeout
        // produces an error here.
        ApiError::internal(anyhow::anyhow!("request failed: {error}")).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_request_past_its_deadline_is_a_503_problem_with_retry_after() {
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "too late"
                }),
            )
            .layer(deadline_layer(Duration::from_millis(50)));
        let response = app
            .oneshot(Request::get("/slow").body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(crate::PROBLEM_JSON.as_bytes())
        );
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }

    #[tokio::test]
    async fn a_request_inside_its_deadline_is_answered() {
        let app = Router::new()
            .route("/quick", get(|| async { "on time" }))
            .layer(deadline_layer(Duration::from_secs(30)));
        let response = app
            .oneshot(Request::get("/quick").body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn a_consistency_wait_ends_before_the_deadline() {
        assert_eq!(
            consistency_wait_cap(Duration::from_secs(30)),
            Duration::from_secs(29)
        );
        assert_eq!(
            consistency_wait_cap(Duration::from_secs(1)),
            Duration::from_millis(800)
        );
    }
}
