//! The web interface's routes: pages, assets and their caching, and errors beside them.
//! (The pages themselves are tested in a browser: tests/browser.)

use reqwest::{Method, StatusCode, header};

use crate::helpers::*;

fn header_of(response: &reqwest::Response, name: header::HeaderName) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The `/assets/...` paths a page refers to.
fn asset_paths(html: &str) -> Vec<String> {
    html.split(['"', '\''])
        .filter(|s| s.starts_with("/assets/"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_pages_are_html_that_may_load_only_from_this_origin() {
    let app = TestApp::spawn().await;
    for path in [
        "/",
        "/orders/0193a0c0-0000-7000-8000-000000000001",
        "/orders/not-an-id",
        "/docs",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header_of(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8",
            "{path}"
        );
        let policy = header_of(&response, header::CONTENT_SECURITY_POLICY);
        assert!(
            policy.starts_with("default-src 'self';"),
            "{path}: {policy}"
        );
        assert!(!policy.contains("http"), "{path}: {policy}");
        let html = response.text().await.expect("body");
        assert!(html.starts_with("<!DOCTYPE html>"), "{path}");
        let assets = asset_paths(&html);
        assert!(!assets.is_empty(), "{path} names its assets");
        for asset in assets {
            assert_eq!(
                app.get(&asset).await.status(),
                StatusCode::OK,
                "{path} names {asset}"
            );
        }
    }
}

#[tokio::test]
async fn assets_have_their_content_type_and_revalidate_with_their_etag() {
    let app = TestApp::spawn().await;
    for (path, content_type) in [
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/common.js", "text/javascript; charset=utf-8"),
        ("/assets/dashboard.js", "text/javascript; charset=utf-8"),
        ("/assets/order.js", "text/javascript; charset=utf-8"),
        ("/assets/favicon.svg", "image/svg+xml"),
        (
            "/assets/swagger-ui-bundle.js",
            "text/javascript; charset=utf-8",
        ),
        ("/assets/swagger-ui.css", "text/css; charset=utf-8"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header_of(&response, header::CONTENT_TYPE),
            content_type,
            "{path}"
        );
        assert_eq!(
            header_of(&response, header::CACHE_CONTROL),
            "no-cache",
            "{path}"
        );
        assert_eq!(
            header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
            "nosniff"
        );
        let etag = header_of(&response, header::ETAG);
        assert!(etag.starts_with('"') && etag.len() > 2, "{path}: {etag:?}");
        assert!(!response.bytes().await.expect("body").is_empty());

        let again = app
            .request(Method::GET, path)
            .header(header::IF_NONE_MATCH, &etag)
            .send()
            .await
            .expect("request");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(header_of(&again, header::ETAG), etag);
        assert!(again.bytes().await.expect("body").is_empty());

        let other = app
            .request(Method::GET, path)
            .header(header::IF_NONE_MATCH, "\"something-else\"")
            .send()
            .await
            .expect("request");
        assert_eq!(other.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn unknown_assets_and_wrong_methods_are_problem_documents() {
    let app = TestApp::spawn().await;
    for path in [
        "/assets/",
        "/assets/nope.js",
        "/assets/../Cargo.toml",
        "/assets/swagger/",
        "/orders/",
    ] {
        expect_problem(app.get(path).await, StatusCode::NOT_FOUND).await;
    }
    let response = app
        .request(Method::POST, "/")
        .send()
        .await
        .expect("request");
    assert_eq!(header_of(&response, header::ALLOW), "GET,HEAD");
    expect_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
}
