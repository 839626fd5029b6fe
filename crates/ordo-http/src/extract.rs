//! Reading untrusted requests: bodies, headers, query strings.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use serde_json::Value;

use crate::error::ApiError;

/// The largest body accepted (docs/api.md: 256 KiB).
pub const MAX_BODY: usize = 256 * 1024;

/// Reads a JSON body. `None` when the body is empty and `optional` is set.
pub async fn json_body(
    headers: &HeaderMap,
    body: Body,
    optional: bool,
) -> Result<Option<Value>, ApiError> {
    if let Some(len) = headers.get(header::CONTENT_LENGTH)
        && let Some(len) = len.to_str().ok().and_then(|s| s.parse::<u64>().ok())
        && len > MAX_BODY as u64
    {
        return Err(ApiError::PayloadTooLarge { limit: MAX_BODY });
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit: MAX_BODY })?;
    if bytes.is_empty() && optional {
        return Ok(None);
    }
    check_json_content_type(headers)?;
    if bytes.is_empty() {
        return Err(ApiError::BadRequest("the request needs a JSON body".into()));
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(Some(value))
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let wrong = || {
        ApiError::UnsupportedMediaType(
            "the body must be sent as Content-Type: application/json".into(),
        )
    };
    let value = headers.get(header::CONTENT_TYPE).ok_or_else(wrong)?;
    let value = value.to_str().map_err(|_| wrong())?;
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(wrong())
    }
}

/// A header as text, if present; 400 when it is not visible ASCII.
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::BadRequest(format!("the {name} header must be visible ASCII text"))
        }),
    }
}

/// `If-Match: "3"` → 3. `*` → None (any version).
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(raw) = header_text(headers, "if-match")? else {
        return Ok(None);
    };
    let raw = raw.trim();
    if raw == "*" {
        return Ok(None);
    }
    let bad = || ApiError::BadRequest("If-Match must be a version ETag such as \"3\"".into());
    let inner = raw
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(bad)?;
    if inner.is_empty() || inner.len() > 20 || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    inner.parse().map(Some).map_err(|_| bad())
}

/// Query parameters as (name, value) pairs; 400 on a malformed query, an unknown name or a
/// repeated one.
/// Text that reaches a query (a search term, an e-mail) never holds control characters:
/// no stored text can match them, and some stores reject them (NUL ends an FTS5 query).
pub fn no_control_characters(what: &str, value: &str) -> Result<(), ApiError> {
    if value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

pub fn query_pairs(raw: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| ApiError::BadRequest("malformed query string".into()))?;
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in &pairs {
        if !known.contains(&name.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {name:?}; known: {}",
                known.join(", ")
            )));
        }
        if seen.contains(&name.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "query parameter {name:?} given twice"
            )));
        }
        seen.push(name);
    }
    for (name, value) in &pairs {
        no_control_characters(&format!("query parameter {name:?}"), value)?;
    }
    Ok(pairs)
}
