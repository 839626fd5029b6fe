//! Access control of the API: bearer tokens with a scope, read from a token file at start.
//!
//! When [`ApiTokens`] are configured, every route behind [`require_token`] needs
//! `Authorization: Bearer <token>`: GET and HEAD need the `read` scope, every other method
//! (the commands) `write`, which implies `read`. With none configured the guard lets every
//! request through. The admin routes have their own guard and token (`admin.rs`); `/health`,
//! `/ready`, `/metrics` and the pages are not behind this one.
//!
//! Tokens are compared with [`subtle::ConstantTimeEq`], against every configured token
//! whatever matched before, so the time taken says neither how much of a token matched nor
//! which one. Nothing here prints a token: the error messages of [`ApiTokens::parse`] name
//! line numbers only, and the `Debug` forms only count tokens.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::{Choice, ConstantTimeEq};

use crate::error::problem_response;

/// Tokens shorter than this are refused: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;
/// Tokens longer than this are refused (they travel in a header).
pub const MAX_TOKEN_LEN: usize = 1024;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Queries, history and the event stream.
    Read,
    /// Commands too.
    Write,
}

/// The API tokens, each with its scope; built once at start and shared behind an `Arc`.
#[derive(Clone)]
pub struct ApiTokens {
    tokens: Vec<(Box<[u8]>, Scope)>,
}

/// Why a token file was refused: its line number and the rule broken, never its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    #[error("the token file holds no token: give one `TOKEN SCOPE` line (scope read or write)")]
    Empty,
    #[error("line {line}: expected `TOKEN SCOPE`, two fields separated by blanks")]
    Malformed { line: usize },
    #[error("line {line}: unknown scope: use read or write")]
    UnknownScope { line: usize },
    #[error(
        "line {line}: the token is shorter than {MIN_TOKEN_LEN} characters or longer than {MAX_TOKEN_LEN}"
    )]
    BadLength { line: usize },
    #[error("line {line}: the token holds a character that is not visible ASCII")]
    BadCharacter { line: usize },
    #[error("line {line}: the same token as line {first}")]
    Repeated { line: usize, first: usize },
}

impl ApiTokens {
    /// Parses a token file: one `TOKEN SCOPE` line per token (fields separated by spaces or
    /// tabs; scope `read` or `write`), blank lines and lines starting with `#` ignored. Any
    /// other line, a token shorter than [`MIN_TOKEN_LEN`], a repeated token or a file
    /// without a token is refused, naming the line.
    pub fn parse(text: &str) -> Result<ApiTokens, TokenFileError> {
        let mut tokens = Vec::new();
        let mut first_line: HashMap<&str, usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let mut fields = content.split([' ', '\t']).filter(|f| !f.is_empty());
            let (Some(token), Some(scope), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(TokenFileError::Malformed { line });
            };
            let scope = match scope {
                "read" => Scope::Read,
                "write" => Scope::Write,
                _ => return Err(TokenFileError::UnknownScope { line }),
            };
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TokenFileError::BadCharacter { line });
            }
            if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
                return Err(TokenFileError::BadLength { line });
            }
            if let Some(&first) = first_line.get(token) {
                return Err(TokenFileError::Repeated { line, first });
            }
            first_line.insert(token, line);
            tokens.push((token.as_bytes().into(), scope));
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(ApiTokens { tokens })
    }

    /// The scope of `given`, if it is one of the tokens. Every token is compared, in
    /// constant time for its length, whichever matches.
    pub fn scope_of(&self, given: &[u8]) -> Option<Scope> {
        let mut read = Choice::from(0);
        let mut write = Choice::from(0);
        for (token, scope) in &self.tokens {
            let matched = token.as_ref().ct_eq(given);
            match scope {
                Scope::Read => read |= matched,
                Scope::Write => write |= matched,
            }
        }
        if bool::from(write) {
            Some(Scope::Write)
        } else if bool::from(read) {
            Some(Scope::Read)
        } else {
            None
        }
    }

    /// How many tokens have each scope: (read, write).
    pub fn counts(&self) -> (usize, usize) {
        let write = self
            .tokens
            .iter()
            .filter(|(_, s)| *s == Scope::Write)
            .count();
        (self.tokens.len() - write, write)
    }
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (read, write) = self.counts();
        f.debug_struct("ApiTokens")
            .field("read", &read)
            .field("write", &write)
            .finish()
    }
}

/// A secret that never prints: `Debug` shows `***`.
#[derive(Clone)]
pub struct SecretToken(Arc<str>);

impl SecretToken {
    pub fn new(token: impl Into<Arc<str>>) -> SecretToken {
        SecretToken(token.into())
    }

    /// The token itself, to compare with.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SecretToken {
    fn from(token: &str) -> SecretToken {
        SecretToken::new(token)
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(***)")
    }
}

/// Whether `a` and `b` are the same secret, in time that depends only on their lengths.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The token of `Authorization: Bearer <token>` (the scheme name in any case).
pub(crate) fn bearer(request: &Request) -> Option<&str> {
    bearer_of(request.headers())
}

/// The bearer token of these request headers.
pub(crate) fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// What [`require_token`] checks: the tokens (none: everything is open), and whether the
/// route also takes the token as `?access_token=` (the event stream only: a browser's
/// `EventSource` cannot send headers).
#[derive(Clone, Debug)]
pub(crate) struct Guard {
    pub tokens: Option<Arc<ApiTokens>>,
    pub query_token: bool,
}

/// The `access_token` of a query string; the route's handler rejects malformed queries.
fn query_token(request: &Request) -> Option<String> {
    let query = request.uri().query()?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    pairs
        .into_iter()
        .find(|(name, _)| name == "access_token")
        .map(|(_, value)| value)
}

/// The middleware: 401 without a known token, 403 for a read token on a command.
pub(crate) async fn require_token(
    State(guard): State<Guard>,
    request: Request,
    next: Next,
) -> Response {
    let Some(tokens) = guard.tokens.as_deref() else {
        return next.run(request).await;
    };
    let from_query = if guard.query_token {
        query_token(&request)
    } else {
        None
    };
    let given = bearer(&request).or(from_query.as_deref());
    let needed = if request.method() == Method::GET || request.method() == Method::HEAD {
        Scope::Read
    } else {
        Scope::Write
    };
    match (given, given.and_then(|t| tokens.scope_of(t.as_bytes()))) {
        (_, Some(Scope::Write)) => next.run(request).await,
        (_, Some(Scope::Read)) if needed == Scope::Read => next.run(request).await,
        (_, Some(Scope::Read)) => challenge(
            StatusCode::FORBIDDEN,
            "this token may only read: commands need a token with the write scope",
            "Bearer realm=\"ordo\", error=\"insufficient_scope\", scope=\"write\"",
        ),
        (None, None) => challenge(
            StatusCode::UNAUTHORIZED,
            "this API needs Authorization: Bearer <token> (tokens are configured with --api-token-file)",
            "Bearer realm=\"ordo\"",
        ),
        (Some(_), None) => challenge(
            StatusCode::UNAUTHORIZED,
            "the bearer token is not one of the API tokens",
            "Bearer realm=\"ordo\", error=\"invalid_token\"",
        ),
    }
}

fn challenge(status: StatusCode, detail: &str, www_authenticate: &'static str) -> Response {
    let mut response = problem_response(status, detail.into(), None);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(www_authenticate),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: &str = "reader-token-0123456789";
    const WRITE: &str = "writer-token-0123456789";

    fn file() -> String {
        format!("# ordo API tokens\n\n  {READ}\tread  \n{WRITE} write\n")
    }

    #[test]
    fn a_token_file_gives_each_token_its_scope() {
        let tokens = ApiTokens::parse(&file()).expect("valid file");
        assert_eq!(tokens.scope_of(READ.as_bytes()), Some(Scope::Read));
        assert_eq!(tokens.scope_of(WRITE.as_bytes()), Some(Scope::Write));
        assert_eq!(tokens.scope_of(b"reader-token-012345678"), None);
        assert_eq!(tokens.scope_of(b"reader-token-01234567890"), None);
        assert_eq!(tokens.scope_of(b""), None);
        assert_eq!(tokens.counts(), (1, 1));
    }

    #[test]
    fn the_debug_form_of_the_tokens_counts_them_and_prints_none() {
        let tokens = ApiTokens::parse(&file()).expect("valid file");
        let debug = format!("{tokens:?} {:?}", Some(Arc::new(tokens.clone())));
        assert!(!debug.contains(READ) && !debug.contains(WRITE), "{debug}");
        assert!(
            debug.contains("read: 1") && debug.contains("write: 1"),
            "{debug}"
        );
        let secret = SecretToken::new(WRITE);
        assert_eq!(format!("{secret:?}"), "SecretToken(***)");
    }

    #[test]
    fn bad_token_files_are_refused_by_line_number_without_the_token() {
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        let cases = [
            ("", TokenFileError::Empty),
            ("# only a comment\n\n", TokenFileError::Empty),
            (
                &format!("{READ} read\n{WRITE}\n") as &str,
                TokenFileError::Malformed { line: 2 },
            ),
            (
                &format!("{READ} read extra\n"),
                TokenFileError::Malformed { line: 1 },
            ),
            (
                &format!("\n{WRITE} admin\n"),
                TokenFileError::UnknownScope { line: 2 },
            ),
            (
                &format!("{READ} READ\n"),
                TokenFileError::UnknownScope { line: 1 },
            ),
            ("abc123 read\n", TokenFileError::BadLength { line: 1 }),
            (
                &format!("{long} read\n"),
                TokenFileError::BadLength { line: 1 },
            ),
            (
                "caf\u{e9}-token-0123456789 read\n",
                TokenFileError::BadCharacter { line: 1 },
            ),
            (
                &format!("{WRITE} read\n# again\n{WRITE} write\n"),
                TokenFileError::Repeated { line: 3, first: 1 },
            ),
        ];
        for (text, expected) in cases {
            let error = ApiTokens::parse(text).expect_err(text);
            assert_eq!(error, expected, "{text:?}");
            let message = error.to_string();
            for secret in [READ, WRITE, "abc123", "caf"] {
                assert!(!message.contains(secret), "{message}");
            }
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"toke", b"token"));
        assert!(!same_secret(b"tokens", b"token"));
        assert!(!same_secret(b"", b"token"));
        assert!(!same_secret(b"tokeN", b"token"));
    }
}
