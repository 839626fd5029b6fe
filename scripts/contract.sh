#!/usr/bin/env bash
# The API's description against the API itself (scripts/test.sh runs it):
#   1. the document at /api-docs/openapi.json is validated against the OpenAPI 3.1 schema
#      (openapi-spec-validator);
#   2. schemathesis generates requests from the document alone and checks every answer
#      against it: no 5xx, statuses, content types, headers and bodies as documented,
#      405 with Allow for other methods, ... for a bounded time (ORDO_CONTRACT_SECONDS,
#      default 120).
# Both tools come from PyPI into a virtual environment under ~/.cache/ordo (made when
# missing); without python3 and its venv module this fails and says what to install.
# Uses the debug build of `ordo` (built here when missing) on a fresh embedded store.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'contract: %s\n' "$*" >&2; }
die() { printf 'contract: ERROR: %s\n' "$*" >&2; exit 1; }

VENV="${ORDO_TOOLS_VENV:-$HOME/.cache/ordo/venv}"
SCHEMATHESIS_VERSION=4.32.5
VALIDATOR_VERSION=0.9.0
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION" \
    || ! [ -x "$VENV/bin/openapi-spec-validator" ]; then
    command -v python3 >/dev/null 2>&1 || die "python3 is missing: apt-get install python3 python3-venv"
    say "installing schemathesis $SCHEMATHESIS_VERSION and openapi-spec-validator $VALIDATOR_VERSION into $VENV"
    python3 -m venv "$VENV" || die "cannot make a virtual environment: apt-get install python3-venv"
    "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" \
        "openapi-spec-validator==$VALIDATOR_VERSION" \
        || die "cannot install schemathesis and openapi-spec-validator from PyPI"
fi

cargo build --locked -q -p ordo
work="$(mktemp -d)"
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
token="contract-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
ORDO_ADMIN_TOKEN="$token" RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/debug/ordo" serve --listen "127.0.0.1:$port" \
    --data-dir "$work/data" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -fs "$base/health" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; die "ordo did not start"; }
    sleep 0.1
done
curl -fs "$base/api-docs/openapi.json" -o "$work/openapi.json" || die "GET /api-docs/openapi.json failed"

say "validating the document against the OpenAPI 3.1 schema"
"$VENV/bin/openapi-spec-validator" "$work/openapi.json"

# Checks left out, and why:
# - positive_data_acceptance: the domain's rules go beyond what JSON Schema can say (a
#   name that is blank once trimmed, at most two fraction digits, an e-mail's dot, not
#   asOf and asOfVersion together), so some schema-valid requests are rightly 422 or 400.
# - use_after_free: after DELETE it expects every path of the order to be 404, but the
#   order's history stays readable by design (its events, asOf, asOfVersion: the audit
#   trail); the order view itself is 404, which the API tests check.
# - the coverage phase: it sends unknown header names and expects them refused; HTTP
#   servers ignore unknown headers. (Hostile input has its own tests: tests/api/hostile.rs.)
# POST /api/v1/admin/replay is left out (each call starts a rebuild), and so is the event
# stream (an answer that never ends; tests/api/stream.rs reads it as a client does).
say "schemathesis against $base for ${ORDO_CONTRACT_SECONDS:-120} s"
# From the temporary directory: schemathesis keeps a cache in its working directory.
(cd "$work" && "$VENV/bin/st" run "$base/api-docs/openapi.json" \
    --phases examples,fuzzing,stateful \
    --checks all --exclude-checks positive_data_acceptance,use_after_free \
    --max-time "${ORDO_CONTRACT_SECONDS:-120}" --workers 2 --seed 1 \
    --header "Authorization: Bearer $token" \
    --exclude-path /api/v1/admin/replay --exclude-path /api/v1/events/stream) \
    || { tail -n 50 "$work/server.log" >&2; die "the API does not answer as its OpenAPI document says"; }
if grep -q "panicked" "$work/server.log"; then
    cat "$work/server.log" >&2
    die "the server panicked during the contract run"
fi
say "passed"
