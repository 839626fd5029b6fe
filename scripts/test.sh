#!/usr/bin/env bash
# The test command (README.md; .ci/run calls it): starts what the tests need, then runs
# every test of the workspace, then the API test suite again on each store combination.
# It fails, never skips, when a server it needs cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/services.sh
ordo_postgres
ordo_redis
ordo_redis_cluster

export RUST_BACKTRACE=1
echo "== all crates (embedded store, conformance suites, PostgreSQL and Redis stores)"
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
