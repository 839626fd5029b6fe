//! The OpenAPI document against the live server: every documented path answers exactly
//! the documented methods. (That the document names every path of the router is checked
//! in ordo-http against the router's own table; scripts/test.sh validates the document
//! against the OpenAPI 3.1 schema and runs a contract test from it.)

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode, header};
use serde_json::Value;

use crate::helpers::TestApp;

/// A concrete path for a documented template.
fn concrete(template: &str) -> String {
    template
        .replace("{id}", &uuid::Uuid::now_v7().to_string())
        .replace("{job}", &uuid::Uuid::now_v7().to_string())
        .replace("{status}", "pending")
        .replace("{email}", "ada@example.com")
        .replace("{file}", "app.css")
}

#[tokio::test]
async fn the_api_document_is_served_as_openapi_3_1() {
    let app = TestApp::spawn().await;
    let response = app.get("/api-docs/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let doc: Value = response.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "ordo");
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/orders/order",
        "/api/v1/orders/order/{id}/events",
        "/api/v1/admin/replay",
        "/api-docs/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    let erasure = &paths["/api/v1/admin/customers/{email}/personal-data"]["delete"];
    assert_eq!(erasure["operationId"], "erasePersonalData", "{erasure}");
    for status in ["200", "400", "404", "503"] {
        assert!(
            erasure["responses"].get(status).is_some(),
            "{status}: {erasure}"
        );
    }
    let view = &doc["components"]["schemas"]["OrderView"]["properties"];
    assert_eq!(view["personalDataErased"]["type"], "boolean", "{view}");
    app.shutdown().await;
}

#[tokio::test]
async fn every_documented_path_answers_exactly_the_documented_methods() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .get("/api-docs/openapi.json")
        .await
        .json()
        .await
        .expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "too few paths: {}", paths.len());
    for (template, item) in paths {
        let documented: BTreeSet<String> = item
            .as_object()
            .expect("path item")
            .keys()
            .filter(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
            .map(|k| k.to_uppercase())
            .collect();
        assert!(
            !documented.contains("PATCH"),
            "{template}: this test probes with PATCH, which no route uses"
        );
        // A method no route has: the router answers 405 and lists in Allow the methods
        // it serves on this path (with the admin token, so the admin guard lets it by).
        let response = app
            .admin(Method::PATCH, &concrete(template))
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{template}: PATCH should be 405"
        );
        let allow = response.headers()[header::ALLOW]
            .to_str()
            .expect("ascii")
            .to_string();
        let served: BTreeSet<String> = allow
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| m != "HEAD")
            .collect();
        assert_eq!(served, documented, "{template}: Allow {allow:?}");
    }
    app.shutdown().await;
}
