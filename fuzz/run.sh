#!/usr/bin/env bash
# Builds the libFuzzer targets (Sources/Fuzz*) with -sanitize=fuzzer,address and runs each for a
# bounded time, starting from the committed seeds in fuzz/corpus/<target>. Prints the executions
# per target; exits 1 when any target crashed (the input is kept under .build-fuzz/crashes).
#
#   fuzz/run.sh                    every target, FUZZ_SECONDS each (default 60)
#   FUZZ_SECONDS=5 fuzz/run.sh     the short pass `make fuzz-short` runs
#   fuzz/run.sh FuzzDNS FuzzNetlink
#
# Inputs that once crashed live in fuzz/regressions/<target> and are replayed first; each also
# has a unit test in Tests/. The growing corpus stays in .build-fuzz/corpus (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."

SWIFT=${SWIFT:-swift}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
SCRATCH=${FUZZ_SCRATCH:-.build-fuzz}
CONFIGURATION=${FUZZ_CONFIGURATION:-release}
ALL_TARGETS=(FuzzManagement FuzzConfiguration FuzzOpenVPNConfig FuzzDNS FuzzNetlink FuzzWireGuardConfig)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${ALL_TARGETS[@]}"); fi

# Swift's backtracer would attach to every crash and can hold the run up; libFuzzer reports them.
export SWIFT_BACKTRACE=enable=no
# LeakSanitizer sees the Swift runtime's one-time caches; a parser that leaks would show as RSS growth.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}

# The fuzz targets exist in Package.swift only with VPNSUP_FUZZ=1 (they cannot link without
# libFuzzer); one product at a time, since the other executables cannot link with it.
for target in "${targets[@]}"; do
    echo "== building $target ($CONFIGURATION)"
    rm -f "$SCRATCH/$CONFIGURATION/$target" # a failed build must not leave an old binary to run
    if ! VPNSUP_FUZZ=1 "$SWIFT" build --scratch-path "$SCRATCH" -c "$CONFIGURATION" --product "$target" \
        -Xswiftc -sanitize=fuzzer,address 2>&1 | { grep -v "Cannot export local symbol" || true; } ||
        [ ! -x "$SCRATCH/$CONFIGURATION/$target" ]; then
        echo "fuzz: $target did not build" >&2
        exit 2
    fi
done

summary=()
failed=0
for target in "${targets[@]}"; do
    binary="$SCRATCH/$CONFIGURATION/$target"
    work="$SCRATCH/corpus/$target"
    crashes="$SCRATCH/crashes/$target"
    mkdir -p "$work" "$crashes" "fuzz/corpus/$target"
    log="$SCRATCH/$target.log"

    if [ -d "fuzz/regressions/$target" ] && [ -n "$(ls -A "fuzz/regressions/$target")" ]; then
        if ! "$binary" -runs=0 "fuzz/regressions/$target"/* >"$log.regressions" 2>&1; then
            echo "fuzz: $target crashes again on a regression input; see $log.regressions" >&2
            summary+=("$(printf '%-18s %8s %12s %10s  %s' "$target" - - - "REGRESSION")")
            failed=1
            continue
        fi
    fi

    echo "== fuzzing $target for ${FUZZ_SECONDS}s"
    options=(-max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -max_len=4096
             -print_final_stats=1 -artifact_prefix="$crashes/")
    # Swift compares strings in its runtime, out of libFuzzer's sight: the tokens come from a dictionary.
    [ -f "fuzz/dict/$target.dict" ] && options+=(-dict="fuzz/dict/$target.dict")
    status=0
    "$binary" "${options[@]}" "$work" "fuzz/corpus/$target" >"$log" 2>&1 || status=$?
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    per_second=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "$work" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        result="ok"
    else
        result="CRASH ($(ls -t "$crashes" | head -1)); reproduce: $binary $crashes/$(ls -t "$crashes" | head -1)"
        grep -E "invariant broken|Fatal error|ERROR: AddressSanitizer|SUMMARY" "$log" | head -3 >&2 || true
        failed=1
    fi
    summary+=("$(printf '%-18s %8s %12s %10s  %s' "$target" "${FUZZ_SECONDS}s" "${executions:-?}" "${per_second:-?}/s" "corpus $corpus, $result")")
done

echo
printf '%-18s %8s %12s %10s  %s\n' target budget executions rate result
printf '%s\n' "${summary[@]}"
exit "$failed"
