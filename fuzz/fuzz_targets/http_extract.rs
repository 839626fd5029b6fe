//! The HTTP extractors: `query_pairs`, `header_text`, `if_match` and `json_body` on any
//! query string, header bytes and body.
//!
//! Input: up to four parts separated by 0xFF bytes (never valid UTF-8, so no text part
//! needs one): the query string, an If-Match header value, a Content-Type header value,
//! then one byte of flags and the body. Properties: every rejection is a 4xx (400, 413
//! or 415), never a panic; accepted query pairs are known, distinct, free of control
//! characters and survive being written back as a query string; header text is the
//! header's bytes; If-Match yields the version its ETag spells; an accepted JSON body is
//! the document its bytes hold, sent as application/json.

#![no_main]

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use futures_util::FutureExt;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use ordo_http::ApiError;
use ordo_http::fuzzing::{MAX_BODY, header_text, if_match, json_body, query_pairs};

const KNOWN: &[&str] = &["status", "limit", "cursor", "q"];

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == 0xFF);
    let query = parts.next().unwrap_or_default();
    let if_match_value = parts.next().unwrap_or_default();
    let content_type = parts.next().unwrap_or_default();
    let (flags, body) = match parts.next() {
        Some([flags, body @ ..]) => (*flags, body),
        _ => (0, &[][..]),
    };

    if let Ok(query) = std::str::from_utf8(query) {
        check_query(query);
    }

    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(if_match_value) {
        headers.insert(header::IF_MATCH, v);
    }
    if let Ok(v) = HeaderValue::from_bytes(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    check_if_match(&headers);
    check_body(headers, flags, body);
});

fn assert_client_error(e: &ApiError, allowed: &[StatusCode]) {
    assert!(
        allowed.contains(&e.status()),
        "{e:?} answers {}",
        e.status()
    );
}

fn check_query(query: &str) {
    match query_pairs(Some(query), KNOWN) {
        Ok(pairs) => {
            for (i, (name, value)) in pairs.iter().enumerate() {
                assert!(KNOWN.contains(&name.as_str()));
                assert!(pairs[..i].iter().all(|(n, _)| n != name), "{name} twice");
                assert!(!value.chars().any(char::is_control));
            }
            let written = serde_urlencoded::to_string(&pairs).expect("pairs encode");
            let again = query_pairs(Some(&written), KNOWN).expect("written pairs parse");
            assert_eq!(again, pairs, "{query} -> {written}");
        }
        Err(e) => assert_client_error(&e, &[StatusCode::BAD_REQUEST]),
    }
    assert!(query_pairs(None, KNOWN).is_ok_and(|p| p.is_empty()));
}

fn check_if_match(headers: &HeaderMap) {
    let raw = headers.get(header::IF_MATCH);
    match header_text(headers, "if-match") {
        Ok(Some(text)) => {
            let raw = raw.expect("text of a header that is there");
            assert_eq!(text.as_bytes(), raw.as_bytes());
            assert!(
                text.bytes()
                    .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
            );
        }
        Ok(None) => assert!(raw.is_none()),
        Err(e) => {
            assert_client_error(&e, &[StatusCode::BAD_REQUEST]);
            assert!(raw.is_some_and(|v| v.to_str().is_err()));
        }
    }
    match if_match(headers) {
        Ok(Some(version)) => {
            let text = raw
                .and_then(|v| v.to_str().ok())
                .expect("an If-Match header");
            let digits = text.trim().trim_matches('"');
            assert_eq!(digits.parse::<u64>(), Ok(version));
            assert_eq!(text.trim(), format!("\"{digits}\""));
        }
        Ok(None) => assert!(raw.is_none_or(|v| v.to_str().is_ok_and(|t| t.trim() == "*"))),
        Err(e) => assert_client_error(&e, &[StatusCode::BAD_REQUEST]),
    }
}

fn check_body(mut headers: HeaderMap, flags: u8, body: &[u8]) {
    let optional = flags & 1 != 0;
    let declared_too_large = flags & 2 != 0;
    let length = if declared_too_large {
        MAX_BODY + 1
    } else {
        body.len()
    };
    if flags & 6 != 0 {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    let read = json_body(&headers, Body::from(body.to_vec()), optional)
        .now_or_never()
        .expect("a body held in memory is read at once");
    match read {
        Ok(Some(value)) => {
            assert!(!declared_too_large && !body.is_empty());
            let essence = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|t| t.split(';').next())
                .map(str::trim)
                .expect("a content type");
            assert!(essence.eq_ignore_ascii_case("application/json"));
            let expected: Value = serde_json::from_slice(body).expect("the body is JSON");
            assert_eq!(value, expected);
        }
        Ok(None) => assert!(optional && body.is_empty() && !declared_too_large),
        Err(e) => {
            if declared_too_large || body.len() > MAX_BODY {
                assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
            } else {
                assert_client_error(
                    &e,
                    &[StatusCode::BAD_REQUEST, StatusCode::UNSUPPORTED_MEDIA_TYPE],
                );
            }
        }
    }
}
