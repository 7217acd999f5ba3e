#!/usr/bin/env bash
# scripts/step-time.sh — the shell `make test` runs its recipe lines with (SHELL in the Makefile):
# runs each line with bash as make would, then prints on stderr how long it took (wall clock) and
# the load average around it, and appends the same to $TEST_TIMES (tab separated: seconds, exit
# status, load before, load after, the line) when that is set. docs/benchmarks.md's "Test suite
# time" table comes from it.
load() { cut -d ' ' -f 1 /proc/loadavg; }
line=${*: -1}
before=$(load)
started=${EPOCHREALTIME/./}
status=0
bash "$@" || status=$?
elapsed=$(((${EPOCHREALTIME/./} - started) / 100000))
seconds="$((elapsed / 10)).$((elapsed % 10))"
after=$(load)
printf 'step time: %s s (load %s -> %s, status %s): %.100s\n' "$seconds" "$before" "$after" "$status" "$line" >&2
if [ -n "${TEST_TIMES:-}" ]; then
    printf '%s\t%s\t%s\t%s\t%s\n' "$seconds" "$status" "$before" "$after" "$line" >>"$TEST_TIMES"
fi
exit "$status"
