# shellcheck shell=bash
# Tests/lab/harness.sh — what every lab test script (e2e.sh, soak.sh) does around its checks:
# the EXIT handler and the checks before the lab is built. Sourced after lab/lab.sh and tap.sh.

# The EXIT trap: on failure, the end of vpnsup's log (and LAB_FAILURE_NOTE, when set); then the
# lab torn down, its run directory removed unless something failed or LAB_KEEP=1; the closing
# "lab: P passed, F failed" line and the script's exit status.
lab_test_finish() {
    local status=$?
    trap - EXIT
    set +e
    if [ "$TAP_FAIL" -gt 0 ] || [ "$status" -ne 0 ]; then
        [ -z "${LAB_FAILURE_NOTE:-}" ] || tap_note "$LAB_FAILURE_NOTE"
        if [ -f "${LAB_RUNDIR:-}/logs/vpnsup.log" ]; then
            tap_note "the end of vpnsup's log:"
            tap_note_file 30 "$LAB_RUNDIR/logs/vpnsup.log"
        fi
    fi
    lab_down
    if [ "$TAP_FAIL" -eq 0 ] && [ "$status" -eq 0 ] && [ "${LAB_KEEP:-0}" != 1 ]; then
        rm -rf "${LAB_RUNDIR:?}"
    elif [ -d "${LAB_RUNDIR:-}" ]; then
        tap_note "lab files kept in $LAB_RUNDIR"
    fi
    tap_finish "$status"
    exit $?
}

# Root, and a vpnsup binary at $VPNSUP; exits (through the trap) when either is missing.
lab_test_preflight() {
    if [ "$(id -u)" -ne 0 ]; then
        tap_not_ok "the lab needs root (network namespaces)"
        exit 1
    fi
    if [ ! -x "$VPNSUP" ]; then
        tap_not_ok "vpnsup binary at $VPNSUP (build it: make build, or set VPNSUP)"
        exit 1
    fi
}
