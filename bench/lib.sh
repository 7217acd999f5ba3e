# shellcheck shell=bash
# bench/lib.sh — shared by the benchmark scripts: namespaces that are always removed, results as
# JSON lines (one per series of samples), the vpnsup release build.
#
#   bench_init                 prefix vpb<pid>- for namespaces, EXIT trap that removes them
#   bench_ns NAME              create namespace <prefix>NAME (lo up), print its name
#   bench_record SECTION SUBJECT METRIC UNIT SAMPLE...   append one series to $BENCH_RESULTS
#   bench_summary SECTION      print the section's medians (min-max) and ratios
#   bench_vpnsup               print the path of the release vpnsup (built if missing)

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
BENCH_RESULTS=${BENCH_RESULTS:-$BENCH_DIR/results/latest.jsonl}
RUNS=${RUNS:-7}
SWIFT=${SWIFT:-swift}
SCRATCH=${SCRATCH:-$REPO/.build-bench}
PYTHON=${PYTHON:-python3}

BENCH_EXIT_HOOKS=() # functions run by the EXIT trap before the namespaces go (lab_down...)

_bench_log() { echo "bench: $*" >&2; }

bench_cleanup() {
    local ns pids
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        [[ $ns == "$BENCH_PREFIX"* ]] || continue
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        # shellcheck disable=SC2086 # one pid per word
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || _bench_log "could not delete namespace $ns"
    done
}

bench_exit() {
    local status=$? hook
    set +e
    for hook in "${BENCH_EXIT_HOOKS[@]}"; do "$hook"; done
    bench_cleanup
    rm -rf "$BENCH_TMP"
    exit "$status"
}

bench_init() {
    if [ "$(id -u)" -ne 0 ]; then
        _bench_log "needs root (network namespaces)"
        exit 1
    fi
    BENCH_PREFIX=vpb$$-
    BENCH_TMP=$(mktemp -d /tmp/vpnsup-bench.XXXXXX)
    mkdir -p "$(dirname "$BENCH_RESULTS")"
    trap bench_exit EXIT
    trap 'exit 130' INT TERM
}

bench_ns() {
    local ns=$BENCH_PREFIX$1
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    echo "$ns"
}

bench_record() {
    local section=$1 subject=$2 metric=$3 unit=$4
    shift 4
    [ $# -gt 0 ] || { _bench_log "no samples for $section/$subject/$metric"; return 0; }
    local samples
    samples=$(IFS=,; echo "$*")
    printf '{"section":"%s","subject":"%s","metric":"%s","unit":"%s","samples":[%s]}\n' \
        "$section" "$subject" "$metric" "$unit" "$samples" >>"$BENCH_RESULTS"
}

bench_summary() { "$PYTHON" "$BENCH_DIR/report.py" summary "$BENCH_RESULTS" "$1"; }

# Drops the earlier series of a section, so a re-run of one script replaces its figures.
bench_reset_section() {
    [ -f "$BENCH_RESULTS" ] || return 0
    "$PYTHON" - "$BENCH_RESULTS" "$1" <<'PY'
import json, sys
path, section = sys.argv[1], sys.argv[2]
lines = [l for l in open(path) if l.strip() and json.loads(l)["section"] != section]
open(path, "w").writelines(lines)
PY
}

bench_vpnsup() {
    local binary=$SCRATCH/release/vpnsup
    if [ ! -x "$binary" ] || [ "${BENCH_BUILD:-1}" = 1 ]; then
        (cd "$REPO" && "$SWIFT" build -c release --scratch-path "$SCRATCH" --product vpnsup >&2)
    fi
    echo "$binary"
}

# Values of one JSON field from nlwatch lines, space separated ("null" lines skipped).
bench_field() { "$PYTHON" -c 'import json,sys; print(" ".join(str(round(v,3)) for v in (json.loads(l).get(sys.argv[1]) for l in sys.stdin if l.startswith("{")) if v is not None))' "$1"; }
