#!/usr/bin/env bash
# The test command (README.md; .ci/run calls it): runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUST_BACKTRACE=1
cargo test --workspace --all-features
