//! Access control at start: the admin token (from its flag or its file), the API tokens
//! (from their file), and the warning when a server reachable from other hosts has none.
//! Messages name files and line numbers, never a token.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};

use ordo_http::{ApiTokens, SecretToken};

use crate::config::ServeArgs;

/// The admin token of `--admin-token` or of the file `--admin-token-file` names: the
/// file's content without surrounding blanks, one line.
pub fn admin_token(args: &ServeArgs) -> anyhow::Result<Option<SecretToken>> {
    match (&args.admin_token, &args.admin_token_file) {
        (Some(_), Some(_)) => bail!(
            "give the admin token once: --admin-token (ORDO_ADMIN_TOKEN) or --admin-token-file (ORDO_ADMIN_TOKEN_FILE), not both"
        ),
        (Some(token), None) => Ok(Some(SecretToken::from(token.expose()))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
            let token = text.trim();
            if token.is_empty() {
                bail!("the admin token file {} is empty", path.display());
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                bail!(
                    "the admin token file {} must hold one token of visible ASCII characters on one line",
                    path.display()
                );
            }
            Ok(Some(SecretToken::from(token)))
        }
        (None, None) => Ok(None),
    }
}

/// The API tokens of the file `--api-token-file` names (docs/api.md, "Authentication").
pub fn api_tokens(path: Option<&Path>) -> anyhow::Result<Option<Arc<ApiTokens>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the API token file {}", path.display()))?;
    let tokens = ApiTokens::parse(&text)
        .with_context(|| format!("the API token file {} is refused", path.display()))?;
    let (read, write) = tokens.counts();
    tracing::info!(
        file = %path.display(),
        read,
        write,
        "access control on: the API needs a bearer token"
    );
    Ok(Some(Arc::new(tokens)))
}

/// Warns when the API is open to every host that can reach `address`.
pub(crate) fn warn_if_open(address: SocketAddr, api_tokens: Option<&ApiTokens>) {
    if api_tokens.is_none() && !address.ip().is_loopback() {
        tracing::warn!(
            %address,
            "listening on a non-loopback address with no API tokens: anyone who can reach it can read and change every order; set --api-token-file (ORDO_API_TOKEN_FILE)"
        );
    }
}
