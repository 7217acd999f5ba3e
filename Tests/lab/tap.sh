# shellcheck shell=bash
# Tests/lab/tap.sh — the lab tests' reporting: "ok N - ..." / "not ok N - ..." lines, "# ..."
# notes, and a closing "lab: P passed, F failed" line (printed by tap_finish, from the EXIT trap).

TAP_N=0
TAP_PASS=0
TAP_FAIL=0

tap_ok() {
    TAP_N=$((TAP_N + 1)) TAP_PASS=$((TAP_PASS + 1))
    echo "ok $TAP_N - $*"
}

tap_not_ok() {
    TAP_N=$((TAP_N + 1)) TAP_FAIL=$((TAP_FAIL + 1))
    echo "not ok $TAP_N - $*"
}

tap_note() { echo "# $*"; }

# tap_check DESCRIPTION CMD...: ok when CMD succeeds. Returns 0 either way (set -e safe);
# tap_last_failed tells afterwards.
TAP_LAST=ok
tap_check() {
    local desc=$1
    shift
    if "$@"; then
        TAP_LAST=ok
        tap_ok "$desc"
    else
        TAP_LAST=failed
        tap_not_ok "$desc"
    fi
}

tap_last_failed() { [ "$TAP_LAST" = failed ]; }

# Indent a file (or stdin) as notes: at most N lines from its end.
tap_note_file() {
    local lines=$1 file=${2:--}
    tail -n "$lines" "$file" 2>/dev/null | sed 's/^/#   /' || true
}

# For the EXIT trap: count an unexpected abort as a failure, print the closing line, and return
# the status the script should exit with.
tap_finish() {
    local status=$1
    if [ "$status" -ne 0 ] && [ "$TAP_FAIL" -eq 0 ]; then
        tap_not_ok "test script aborted (status $status)"
    fi
    echo "lab: $TAP_PASS passed, $TAP_FAIL failed"
    [ "$TAP_FAIL" -eq 0 ]
}
