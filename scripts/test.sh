#!/usr/bin/env bash
# The test command (README.md; .ci/run calls it): starts what the tests need, then runs
# every test of the workspace (the browser tests once), then the API test suite again on
# each store combination.
# It fails, never skips, when a server it needs cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/services.sh
ordo_postgres
ordo_redis
ordo_redis_cluster
ordo_chromium

export RUST_BACKTRACE=1

# Every schema and key prefix the API tests create is named t_<run>_<uuid>; remove this
# run's when it ends, whatever the outcome, so the shared servers do not fill up.
ORDO_TEST_RUN="r$(od -An -N4 -tx1 /dev/urandom | tr -d " \n")"
export ORDO_TEST_RUN
cleanup() {
    ordo_stop_started_servers
    local schemas
    schemas=$(psql "$ORDO_TEST_POSTGRES_URL" -qAtc \
        "select nspname from pg_namespace where nspname like 't\\_${ORDO_TEST_RUN}\\_%'" 2>/dev/null || true)
    for schema in $schemas; do
        psql "$ORDO_TEST_POSTGRES_URL" -qAtc "drop schema if exists \"$schema\" cascade" >/dev/null 2>&1 || true
    done
    for pattern in "t_${ORDO_TEST_RUN}_*" "t-${ORDO_TEST_RUN}-*"; do
        redis-cli -u "$ORDO_TEST_REDIS_URL" --scan --pattern "$pattern" 2>/dev/null \
            | xargs -r -n 500 redis-cli -u "$ORDO_TEST_REDIS_URL" del >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT
echo "== all crates (embedded store, conformance suites, PostgreSQL and Redis stores, the"
echo "   web interface in headless Chromium)"
cargo test --workspace --all-features --locked

# The same API tests on each store combination (the default run above used the embedded
# stores): events x read models.
for combination in postgres:postgres postgres:sqlite redis:sqlite redis-cluster:postgres sqlite:postgres; do
    events="${combination%%:*}"
    reads="${combination##*:}"
    echo "== API tests with events in $events, read models in $reads"
    ORDO_TEST_EVENT_STORE="$events" ORDO_TEST_READ_STORE="$reads" \
        cargo test --locked -p ordo --test api
done

echo "== fuzz targets (fuzz/), ${ORDO_FUZZ_SECONDS:-20} s each, with their regression inputs"
scripts/fuzz.sh

echo "== the OpenAPI document: validated, then a contract test of the live service from it"
scripts/contract.sh
