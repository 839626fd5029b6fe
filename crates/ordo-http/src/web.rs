//! The web interface: the dashboard (`/`), one order's page (`/orders/{id}`), the API
//! reference (`/docs`) and their static assets (`/assets/...`), all compiled into the
//! binary. The pages are hand-written HTML, CSS and JavaScript that use only the public
//! HTTP API; nothing is loaded from another host, which the Content-Security-Policy on
//! every page enforces in the browser.
//!
//! Assets carry an `ETag` (a hash of their bytes) and `Cache-Control: no-cache`: a
//! browser keeps them and revalidates with `If-None-Match` (a 304, no body), so a new
//! binary's assets are used at once without versioned paths.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use swagger_ui_redist::{SwaggerUi, SwaggerUiStaticFile};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;
use crate::openapi::NotFound;

/// Where the OpenAPI document is served (api.md, "Discovery").
const OPENAPI_PATH: &str = "/api-docs/openapi.json";

/// The pages' policy: scripts, styles, images and requests from this origin only.
const PAGE_POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Swagger UI starts from an inline script and styles elements inline; it still loads
/// and asks nothing from another host.
const DOCS_POLICY: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dashboard))
        .routes(routes!(order_page))
        .routes(routes!(docs))
        .routes(routes!(asset))
}

/// One file served from memory.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str) -> Asset {
        let etag = HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(body)))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Asset {
            body,
            content_type,
            etag,
        }
    }

    /// The file, or 304 when the client already holds this version.
    fn respond(&self, request: &HeaderMap, policy: Option<&'static str>) -> Response {
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',')
                    .any(|t| t.trim().trim_start_matches("W/") == self.etag)
            });
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut r = self.body.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            r
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if let Some(policy) = policy {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(policy),
            );
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
        }
        response
    }
}

/// A stable 64-bit hash of an asset's bytes (for its ETag; not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

struct Web {
    dashboard: Asset,
    order: Asset,
    docs: Asset,
    /// By path under `/assets/`.
    assets: HashMap<&'static str, Asset>,
}

fn web() -> &'static Web {
    static WEB: OnceLock<Web> = OnceLock::new();
    WEB.get_or_init(|| {
        let mut assets = HashMap::from([
            ("app.css", Asset::new(include_bytes!("../web/app.css"), CSS)),
            (
                "common.js",
                Asset::new(include_bytes!("../web/common.js"), JS),
            ),
            (
                "dashboard.js",
                Asset::new(include_bytes!("../web/dashboard.js"), JS),
            ),
            (
                "order.js",
                Asset::new(include_bytes!("../web/order.js"), JS),
            ),
            (
                "favicon.svg",
                Asset::new(include_bytes!("../web/favicon.svg"), "image/svg+xml"),
            ),
        ]);
        for (file, body) in SwaggerUi::static_files() {
            let content_type = match file {
                SwaggerUiStaticFile::Css | SwaggerUiStaticFile::IndexCss => CSS,
                SwaggerUiStaticFile::Js | SwaggerUiStaticFile::StandalonePresetJs => JS,
                _ => "image/png",
            };
            assets.insert(
                swagger_path(*file).trim_start_matches("/assets/"),
                Asset::new(body, content_type),
            );
        }
        Web {
            dashboard: Asset::new(include_bytes!("../web/index.html"), HTML),
            order: Asset::new(include_bytes!("../web/order.html"), HTML),
            docs: Asset::new(docs_html().into_bytes().leak(), HTML),
            assets,
        }
    })
}

fn swagger_path(file: SwaggerUiStaticFile) -> &'static str {
    match file {
        SwaggerUiStaticFile::Css => "/assets/swagger-ui.css",
        SwaggerUiStaticFile::IndexCss => "/assets/swagger-index.css",
        SwaggerUiStaticFile::Js => "/assets/swagger-ui-bundle.js",
        SwaggerUiStaticFile::StandalonePresetJs => "/assets/swagger-ui-standalone-preset.js",
        SwaggerUiStaticFile::Favicon16 => "/assets/swagger-favicon-16x16.png",
        _ => "/assets/swagger-favicon-32x32.png",
    }
}

/// Swagger UI's page, on the OpenAPI document of this server, with every file from this
/// binary. The validator is off (it would send the document to swagger.io), and "Try it
/// out" sends requests to the origin the page came from (the document's servers are
/// relative).
fn docs_html() -> String {
    let mut ui = SwaggerUi::new();
    ui.title("ordo API reference");
    for file in SwaggerUiStaticFile::all() {
        ui.override_file_path(*file, swagger_path(*file).to_string());
    }
    ui.config()
        .urls([OPENAPI_PATH])
        .validator_url("none")
        .try_it_out_enabled(true)
        .deep_linking(true)
        .display_request_duration(true)
        .filter(true);
    ui.serve().unwrap_or_else(|error| {
        tracing::error!(%error, "cannot build the API reference page");
        format!(
            "<!DOCTYPE html><html lang=\"en\"><title>ordo API reference</title>\
             <p>The API reference could not be built; the OpenAPI document is at \
             <a href=\"{OPENAPI_PATH}\">{OPENAPI_PATH}</a>.</p></html>"
        )
    })
}

/// The dashboard: orders with filters, search, sort and paging; charts; projections.
#[utoipa::path(
    get,
    path = "/",
    tag = "pages",
    operation_id = "dashboardPage",
    responses((status = 200, description = "The dashboard page.", content_type = "text/html", body = String)),
)]
async fn dashboard(headers: HeaderMap) -> Response {
    web().dashboard.respond(&headers, Some(PAGE_POLICY))
}

/// The page for any id: its script reads the id from the URL and shows "no such order"
/// itself, from the API's answer.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "pages",
    operation_id = "orderPage",
    params(("id" = String, Path, description = "The order id; the page says when there is no such order.")),
    responses((status = 200, description = "The order page (for any id: the page itself shows an unknown order).", content_type = "text/html", body = String)),
)]
async fn order_page(Path(_id): Path<String>, headers: HeaderMap) -> Response {
    web().order.respond(&headers, Some(PAGE_POLICY))
}

/// This reference, interactive, on the OpenAPI document.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "pages",
    operation_id = "apiReferencePage",
    responses((status = 200, description = "The API reference page.", content_type = "text/html", body = String)),
)]
async fn docs(headers: HeaderMap) -> Response {
    web().docs.respond(&headers, Some(DOCS_POLICY))
}

/// A file of the pages (scripts, styles, images), with an ETag; 304 to If-None-Match.
#[utoipa::path(
    get,
    path = "/assets/{file}",
    tag = "pages",
    operation_id = "pageAsset",
    params(("file" = String, Path, description = "The file name, such as app.css.")),
    responses(
        (status = 200, description = "The file.", content_type = "application/octet-stream", body = String),
        (status = 304, description = "Not modified: the If-None-Match ETag is current."),
        (status = 404, response = NotFound),
    ),
)]
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let asset = web()
        .assets
        .get(file.as_str())
        .ok_or_else(|| ApiError::NotFound("no such asset".into()))?;
    Ok(asset.respond(&headers, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_reference_loads_nothing_from_another_host() {
        let html = docs_html();
        assert!(html.contains("\"validatorUrl\": \"none\""), "{html}");
        assert!(html.contains(OPENAPI_PATH), "{html}");
        for file in SwaggerUiStaticFile::all() {
            assert!(html.contains(swagger_path(*file)), "{html}");
        }
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{html}"
        );
    }

    #[test]
    fn etags_change_with_the_bytes() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b"abc"), fnv1a(b"abc"));
    }
}
