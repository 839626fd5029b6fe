#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a bounded time: ORDO_FUZZ_SECONDS each (default 20),
# on its corpus (fuzz/corpus/TARGET: committed seed-* inputs plus what earlier runs found)
# and its regression inputs (fuzz/regressions/TARGET: committed inputs of fixed crashes).
# Fails when a target crashes or breaks a property, and says where the input is.
# Needs the nightly toolchain (cargo fuzz builds with sanitizer instrumentation) and
# installs cargo-fuzz when it is missing. ORDO_FUZZ_TARGETS limits the run to some targets.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${ORDO_FUZZ_SECONDS:-20}"
_say() { printf 'fuzz: %s\n' "$*" >&2; }
_die() { printf 'fuzz: ERROR: %s\n' "$*" >&2; exit 1; }

case "$seconds" in
    '' | *[!0-9]*) _die "ORDO_FUZZ_SECONDS must be a whole number of seconds, not '$seconds'" ;;
esac
command -v rustup >/dev/null 2>&1 || _die "rustup is missing: cargo fuzz needs rustup's nightly toolchain"
rustup toolchain list | grep -q '^nightly' \
    || _die "the nightly toolchain is missing: install it with 'rustup toolchain install nightly'"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    _say "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked >/dev/null \
        || _die "could not install cargo-fuzz; install it by hand: cargo install cargo-fuzz --locked"
fi

cd fuzz
if [ -n "${ORDO_FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$ORDO_FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
[ "${#targets[@]}" -gt 0 ] || _die "no fuzz targets found in fuzz/"

# No address sanitizer: the workspace forbids unsafe code, so what the fuzzers look for is
# panics and broken properties, which debug assertions and overflow checks (on) catch.
build_flags=(--sanitizer none --debug-assertions)
started=$(date +%s)
cargo +nightly fuzz build "${build_flags[@]}"
_say "built the fuzz targets in $(($(date +%s) - started)) s"

failed=()
for target in "${targets[@]}"; do
    corpus="corpus/$target"
    regressions="regressions/$target"
    artifacts="artifacts/$target"
    mkdir -p "$corpus" "$regressions" "$artifacts"
    log="$artifacts/run.log"
    _say "$target: ${seconds} s on $corpus and $regressions"
    # -timeout: one input taking this long is a failure too (a hang, or quadratic work).
    if cargo +nightly fuzz run "${build_flags[@]}" "$target" "$corpus" "$regressions" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$log" | tail -n 1 \
            | sed "s/^/fuzz: $target: /" >&2 || true
    else
        failed+=("$target")
        grep -E 'panicked at|^==[0-9]+== ERROR|SUMMARY' "$log" | head -n 5 >&2 || true
        input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        _say "$target FAILED; the whole output is in fuzz/$log"
        if [ -n "$input" ]; then
            _say "$target: the failing input is fuzz/$input"
            _say "  reproduce: (cd fuzz && cargo +nightly fuzz run ${build_flags[*]} $target $input)"
            _say "  after the fix, keep it: mv fuzz/$input fuzz/$regressions/"
        fi
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    _die "fuzz targets failed: ${failed[*]}"
fi
_say "every target ran ${seconds} s without a failure"
