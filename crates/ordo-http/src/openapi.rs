//! The OpenAPI 3.1 document, generated from the code.
//!
//! Every route is registered through `utoipa_axum`'s `routes!`, which takes the path and
//! method from the handler's `#[utoipa::path]` attribute, so the router and the document
//! are built from one source. The attribute beside each handler states its parameters,
//! bodies and answers; the shared parts live here:
//!
//! - the problem responses every endpoint names by status (`BadRequest`, `NotFound`, ...),
//!   each an `application/problem+json` [`Problem`](crate::error::Problem) document;
//! - the request headers shared by several endpoints ([`ConsistencyHeaders`],
//!   [`CommandHeaders`], [`IdempotencyHeader`]);
//! - [`Finish`], which adds what every operation has (the `X-Request-Id` header on every
//!   request and answer), the admin bearer scheme, and the optional API bearer scheme
//!   (`api`, with its 401 and 403 answers) on every /api/v1 operation outside admin.
//!
//! `router_tests` below fails when a route of the router is missing from the document or
//! the document names a path the router does not serve; the API tests check the methods
//! of every path against the live server, and scripts/test.sh validates the document
//! against the OpenAPI 3.1 schema and runs a contract test from it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response as OaResponse, ResponseBuilder};
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{
    Http, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Required};
use utoipa::{IntoParams, IntoResponses, Modify, ToResponse};

use crate::error::{PROBLEM_JSON, Problem};

/// The document's root: what the routes do not say themselves.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ordo",
        description = "An event-sourced order service (CQRS and event sourcing). Commands \
            are decided by the order aggregate and stored as events; queries are answered \
            from read models kept current by projections; history is read from the event \
            store. Every error is an RFC 9457 problem document (application/problem+json).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "commands", description = "The write side: each command is decided by the order aggregate and stored as events before the answer."),
        (name = "queries", description = "The read side: answered from the read models only; send X-Consistency-Token to read your own writes."),
        (name = "history", description = "Straight from the event store: the audit trail and the order as it was."),
        (name = "live", description = "Events as they are stored, as Server-Sent Events."),
        (name = "operations", description = "Liveness, readiness and metrics."),
        (name = "admin", description = "Operator endpoints; they need the admin bearer token."),
        (name = "pages", description = "The web interface and this document."),
    ),
    components(
        schemas(Problem),
        responses(
            crate::commands::Stored,
            BadRequest, NotFound, Gone, Conflict, PreconditionFailed, PayloadTooLarge,
            UnsupportedMediaType, ValidationFailed, Unauthorized, Forbidden,
            TokenMissing, ReadOnlyToken, Unavailable
        )
    ),
)]
pub(crate) struct ApiDoc;

/// A reusable problem+json answer: `$name` in `components.responses`.
macro_rules! problem_response {
    ($($(#[$doc:meta])* $name:ident: $description:literal $(, header $header:literal = $header_doc:literal)?;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;

        impl<'s> ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<OaResponse>) {
                #[allow(unused_mut)]
                let mut response = problem_builder($description);
                $(
                    response = response.header($header, string_header($header_doc));
                )?
                (stringify!($name), response.build().into())
            }
        }
    )*};
}

problem_response! {
    BadRequest: "A malformed header, path or query parameter, or malformed JSON, or an X-Consistency-Token no command returned; the detail names it.";
    NotFound: "No such order (an id that is not an order id is unknown too), or nothing at that version or time.";
    Gone: "The order has been deleted and accepts no command.";
    Conflict: "A business rule forbids the command (for example an invalid status transition); the detail says which.";
    PreconditionFailed: "If-Match does not match the order's current version; nothing was stored.";
    PayloadTooLarge: "The body is larger than 256 KiB.";
    UnsupportedMediaType: "The body is not application/json.";
    /// 422 with the `errors` list.
    ValidationFailed: "Well-formed JSON that fails validation: `errors` names each bad field by its path (customerEmail, items[0].quantity); unknown fields are rejected too. On create, also an Idempotency-Key already used with a different body (no errors list). Nothing was stored.";
    Unauthorized: "The admin bearer token is missing or wrong.", header "WWW-Authenticate" = "Bearer realm=\"ordo-admin\"";
    Forbidden: "Admin endpoints are disabled: no admin token is configured (ORDO_ADMIN_TOKEN).";
    /// 401 of the API tokens.
    TokenMissing: "Access control is on (--api-token-file) and the bearer token is missing or not one of the API tokens.", header "WWW-Authenticate" = "Bearer realm=\"ordo\"";
    /// 403 of the API tokens.
    ReadOnlyToken: "Access control is on and the token has the read scope only: commands need the write scope.", header "WWW-Authenticate" = "Bearer realm=\"ordo\", error=\"insufficient_scope\"";
    Unavailable: "A store cannot be reached, or a consistency wait timed out; retry after the number of seconds in Retry-After.", header "Retry-After" = "Seconds to wait before retrying.";
}

/// A set of the problem responses above, named by status, for an endpoint's
/// `responses(...)` list.
macro_rules! problem_set {
    ($($(#[$doc:meta])* $name:ident: $($status:literal => $response:ident),+;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<OaResponse>> {
                BTreeMap::from([$(
                    (
                        $status.to_string(),
                        RefOr::Ref(Ref::from_response_name(stringify!($response))),
                    ),
                )+])
            }
        }
    )*};
}

problem_set! {
    /// What any read of the read models can answer besides success.
    QueryErrors: "400" => BadRequest, "503" => Unavailable;
    /// What a command on an existing order can answer besides success.
    OrderCommandErrors: "400" => BadRequest, "404" => NotFound, "409" => Conflict,
        "410" => Gone, "412" => PreconditionFailed, "503" => Unavailable;
    /// What reading a JSON request body can answer.
    BodyErrors: "413" => PayloadTooLarge, "415" => UnsupportedMediaType,
        "422" => ValidationFailed;
    /// The admin guard's answers.
    AdminErrors: "401" => Unauthorized, "403" => Forbidden;
}

/// The order id in a path.
#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)] // Documentation only: handlers read the id with `parse_order_id`.
pub(crate) struct OrderIdPath(
    /// The order id (a UUID; anything else is an unknown order).
    String,
);

fn problem_builder(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "Problem",
            ))))
            .build(),
    )
}

fn string_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .build()
}

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(string_schema()))
        .description(Some(description))
        .build()
}

/// Read-your-writes, on every query of the read models.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by `queries::await_consistency`; this type only documents them.
pub(crate) struct ConsistencyHeaders {
    /// The token a command returned: the answer waits until the read models show that
    /// write (up to the timeout, then 503 with Retry-After). Malformed, from another
    /// event store, or ahead of every event stored (no command returned it): 400 at once.
    #[param(
        rename = "X-Consistency-Token",
        max_length = 64,
        pattern = "^[0-9]+\\.[0-9]+\\.[0-9]+$"
    )]
    consistency_token: Option<String>,
    /// How long to wait for the token, in milliseconds (default 5000; above 30000 counts
    /// as 30000).
    #[param(rename = "X-Consistency-Timeout-Ms", minimum = 0, example = 2000)]
    consistency_timeout_ms: Option<u64>,
}

/// Headers every command reads.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by `commands::context`; this type only documents them.
pub(crate) struct CommandHeaders {
    /// Optimistic concurrency: the version the client last saw, as the ETag gave it
    /// (`"3"`). When the order is at another version the answer is 412 and nothing is
    /// stored. Without it the command is decided again on fresh state when a concurrent
    /// writer wins.
    #[param(
        rename = "If-Match",
        pattern = "^\\s*(\\*|\"[0-9]{1,20}\")\\s*$",
        example = "\"3\""
    )]
    if_match: Option<String>,
    /// Recorded as the events' correlationId; without it, or when it is not 1 to 200
    /// characters, the request id is used.
    #[param(rename = "X-Correlation-Id")]
    correlation_id: Option<String>,
}

/// The create command's retry key.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by `commands::create_order`; this type only documents it.
pub(crate) struct IdempotencyHeader {
    /// The same key with the same body answers the first answer again (201, same
    /// orderId) and stores nothing; with another body it is 422. 1 to 200 characters.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 200)]
    idempotency_key: Option<String>,
}

/// What the `api` security scheme says.
const API_SCHEME: &str = "Optional access control: when ordo runs with --api-token-file \
    (ORDO_API_TOKEN_FILE), every /api/v1 operation outside /api/v1/admin needs \
    `Authorization: Bearer <token>`, a token of the read scope for GET and HEAD and of the \
    write scope (which implies read) for commands; without access control the security \
    requirement is met by nothing (`{}`). The event stream also takes the token as the \
    `access_token` query parameter, for browsers' EventSource. The admin endpoints need \
    the admin token instead.";

/// Adds what every operation shares, the admin security scheme and the optional API
/// scheme; applied once every route is in the document.
pub(crate) struct Finish;

impl Modify for Finish {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "api",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(API_SCHEME))
                    .build(),
            ),
        );
        for response in components.responses.values_mut() {
            if let RefOr::T(response) = response {
                add_request_id_header(response);
            }
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let guarded = path.starts_with("/api/v1/") && !path.starts_with("/api/v1/admin/");
            for (reads, operation) in [
                (true, &mut item.get),
                (false, &mut item.put),
                (false, &mut item.post),
                (false, &mut item.delete),
                (true, &mut item.head),
                (false, &mut item.patch),
                (false, &mut item.options),
                (false, &mut item.trace),
            ] {
                let Some(operation) = operation else { continue };
                if guarded {
                    api_security(operation, reads);
                }
                let parameters = operation.parameters.get_or_insert_with(Vec::new);
                for parameter in parameters.iter_mut() {
                    if let RefOr::T(parameter) = parameter
                        && parameter.parameter_in == ParameterIn::Header
                    {
                        // A header is present or absent, never null.
                        if let Some(RefOr::T(schema)) = &mut parameter.schema {
                            drop_null(schema);
                        }
                    }
                }
                parameters.push(RefOr::T(request_id_parameter()));
                // An optional body is absent, not `null`.
                if let Some(RefOr::T(body)) = &mut operation.request_body {
                    for content in body.content.values_mut() {
                        if let RefOr::T(content) = content
                            && let Some(schema) = &mut content.schema
                        {
                            unwrap_nullable(schema);
                        }
                    }
                }
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        add_request_id_header(response);
                    }
                }
            }
        }
    }
}

/// The optional `api` scheme on one operation, with the answers it adds.
fn api_security(operation: &mut utoipa::openapi::path::Operation, reads: bool) {
    let scope = if reads { "read" } else { "write" };
    operation.security = Some(vec![
        SecurityRequirement::default(),
        SecurityRequirement::new("api", [scope]),
    ]);
    let responses = &mut operation.responses.responses;
    responses
        .entry("401".into())
        .or_insert_with(|| Ref::from_response_name("TokenMissing").into());
    if !reads {
        responses
            .entry("403".into())
            .or_insert_with(|| Ref::from_response_name("ReadOnlyToken").into());
    }
}

/// `["string", "null"]` becomes `"string"`.
fn drop_null(schema: &mut Schema) {
    if let Schema::Object(object) = schema
        && let SchemaType::Array(types) = &object.schema_type
    {
        let kept: Vec<Type> = types
            .iter()
            .filter(|t| **t != Type::Null)
            .cloned()
            .collect();
        if let [only] = kept.as_slice() {
            object.schema_type = SchemaType::Type(only.clone());
        }
    }
}

/// `oneOf: [X, {type: null}]` becomes `X`.
fn unwrap_nullable(schema: &mut RefOr<Schema>) {
    let RefOr::T(Schema::OneOf(one_of)) = schema else {
        return;
    };
    let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    if one_of.items.len() == 2
        && let Some(null_at) = one_of.items.iter().position(is_null)
    {
        let kept = one_of.items.remove(1 - null_at);
        *schema = kept;
    }
}

fn request_id_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("X-Request-Id")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Identifies the request in the log; echoed in the answer. One of 1 to 200 \
             visible ASCII characters is kept; without one, or with any other, a new id \
             is made.",
        ))
        .schema(Some(string_schema()))
        .build()
}

fn add_request_id_header(response: &mut OaResponse) {
    response.headers.insert(
        "X-Request-Id".to_string(),
        RefOr::T(string_header(
            "The request's id (the client's, or a new one); quote it when reporting a problem.",
        )),
    );
}

/// The document as served: JSON made once at start.
#[derive(Clone, Debug)]
pub(crate) struct Document(pub(crate) Arc<[u8]>);

impl Document {
    pub(crate) fn new(doc: &OpenApi) -> Self {
        // The document is built from static data; serialising it cannot fail.
        let json = serde_json::to_vec(doc).unwrap_or_default();
        Document(json.into())
    }
}

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/api-docs/openapi.json",
    tag = "pages",
    operation_id = "openApiDocument",
    responses((status = 200, description = "The OpenAPI 3.1 document of every endpoint.", content_type = "application/json", body = Object)),
)]
pub(crate) async fn openapi_json(Extension(doc): Extension<Document>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        axum::body::Bytes::from_owner(doc.0),
    )
        .into_response()
}

#[cfg(test)]
mod router_tests {
    use std::collections::BTreeSet;

    /// The paths the router serves, read from its route table: axum prints it in its
    /// `Debug` form as `path_router: ... RouteId(n): "/path" ...`, before the fallback
    /// router's own entries.
    fn router_paths(router: &axum::Router<crate::AppState>) -> BTreeSet<String> {
        let debug = format!("{router:?}");
        let routes = debug
            .split_once("fallback_router")
            .map_or(debug.as_str(), |(routes, _)| routes);
        let mut paths = BTreeSet::new();
        let mut rest = routes;
        while let Some(at) = rest.find("RouteId(") {
            rest = &rest[at..];
            let Some(open) = rest.find(": \"") else { break };
            let after = &rest[open + 3..];
            let Some(close) = after.find('"') else { break };
            paths.insert(after[..close].to_string());
            rest = &after[close..];
        }
        paths
    }

    #[test]
    fn the_document_names_exactly_the_routes_the_router_serves() {
        let (router, _) = crate::routes(None, None, None).split_for_parts();
        let served = router_paths(&router);
        assert!(
            served.len() >= 15,
            "the route table was not read (axum's Debug output changed?): {served:?}"
        );
        let documented: BTreeSet<String> = crate::openapi().paths.paths.keys().cloned().collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the OpenAPI document: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "the OpenAPI document names routes the router does not serve: {unserved:?}"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_admin_scheme_and_request_ids() {
        let doc = serde_json::to_value(crate::openapi()).expect("serialisable");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"]["admin"],
            serde_json::json!({"type": "http", "scheme": "bearer"})
        );
        let api = &doc["components"]["securitySchemes"]["api"];
        assert_eq!(api["type"], "http");
        assert_eq!(api["scheme"], "bearer");
        assert!(
            api["description"]
                .as_str()
                .is_some_and(|d| d.contains("--api-token-file"))
        );
        let create = &doc["paths"]["/api/v1/orders/order"]["post"];
        assert_eq!(
            create["security"],
            serde_json::json!([{}, {"api": ["write"]}])
        );
        assert_eq!(
            create["responses"]["403"]["$ref"],
            "#/components/responses/ReadOnlyToken"
        );
        let list = &doc["paths"]["/api/v1/orders"]["get"];
        assert_eq!(list["security"], serde_json::json!([{}, {"api": ["read"]}]));
        assert_eq!(
            list["responses"]["401"]["$ref"],
            "#/components/responses/TokenMissing"
        );
        let stream = &doc["paths"]["/api/v1/events/stream"]["get"];
        assert_eq!(
            stream["security"],
            serde_json::json!([{}, {"api": ["read"]}])
        );
        let replay = &doc["paths"]["/api/v1/admin/replay"]["post"];
        assert_eq!(replay["security"], serde_json::json!([{"admin": []}]));
        assert!(doc["paths"]["/health"]["get"]["security"].is_null());
        let headers: Vec<&str> = create["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|p| p["in"] == "header")
            .filter_map(|p| p["name"].as_str())
            .collect();
        for name in ["Idempotency-Key", "If-Match", "X-Request-Id"] {
            assert!(headers.contains(&name), "{name} missing from {headers:?}");
        }
        assert!(create["responses"]["201"]["headers"]["Location"].is_object());
        assert_eq!(
            create["responses"]["422"]["$ref"],
            "#/components/responses/ValidationFailed"
        );
        let validation = &doc["components"]["responses"]["ValidationFailed"];
        assert!(validation["content"]["application/problem+json"].is_object());
        assert!(validation["headers"]["X-Request-Id"].is_object());
        assert!(
            doc["components"]["responses"]["Unavailable"]["headers"]["Retry-After"].is_object()
        );
        assert!(doc["components"]["schemas"]["Problem"]["properties"]["errors"].is_object());
    }

    /// Every `"$ref"` in `value`.
    fn refs<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner.as_str()) {
                        ("$ref", Some(target)) => found.push(target),
                        _ => refs(inner, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| refs(i, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_in_the_document_names_a_component() {
        let doc = serde_json::to_value(crate::openapi()).expect("serialisable");
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50, "too few references: {}", found.len());
        for target in found {
            let pointer = target.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{target} names nothing");
        }
    }

    #[test]
    fn money_is_a_number_and_times_are_rfc_3339() {
        let doc = serde_json::to_value(crate::openapi()).expect("serialisable");
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Money"]["type"], "number");
        assert_eq!(
            schemas["OrderView"]["properties"]["totalAmount"]["$ref"],
            "#/components/schemas/Money"
        );
        assert_eq!(
            schemas["OrderView"]["properties"]["createdAt"]["format"],
            "date-time"
        );
        assert_eq!(
            schemas["OrderView"]["properties"]["orderId"]["format"],
            "uuid"
        );
    }
}
