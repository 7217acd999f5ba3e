#!/usr/bin/env bash
# 2. Reaction time in the namespace lab, vpnsup (release) as the router with the tunnel up. Events:
# OpenVPN SIGKILLed (-> TunnelConnecting, connecting ruleset), OpenVPN's soft restart (SIGUSR1:
# >STATE:RECONNECTING -> Degraded), tun0 deleted (-> Degraded), an outside `nft flush ruleset`
# (-> the up ruleset committed again). Measured by bench/nlwatch.py inside the router namespace:
# vpnsup's commit is the kernel's nftables notification carrying vpnsup's pid; the flush and the
# link removal are stamped by their own kernel notifications; the state by the status socket.
# The original entrypoint has no reaction to compare with: when OpenVPN dies its container ends,
# and a flushed ruleset stays flushed.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
bench_reset_section react
VPNSUP=${VPNSUP:-$(bench_vpnsup)}
# shellcheck source=bench/lablib.sh
. "$BENCH_DIR/lablib.sh"
bench_lab_up
bench_vpnsup_start # defaults: probe off

react() { # EVENT LABEL WHAT-IT-CHANGES
    local out=$BENCH_TMP/react-$1.jsonl
    lab_exec router "$PYTHON" "$BENCH_DIR/nlwatch.py" react --event "$1" --vpnsup-pid "$VPNSUP_PID" \
        --runtime "$BENCH_RUNTIME" --runs "$RUNS" >"$out"
    # Only what the event changes: a flush leaves the state alone, the same policy needs no commit.
    # shellcheck disable=SC2046 # one sample per word
    [[ $3 != *commit* ]] || bench_record react vpnsup "$2: ruleset committed" ms $(bench_field commit <"$out")
    # The flush's own notification and vpnsup's may reach the listener together; this bound holds anyway.
    # shellcheck disable=SC2046
    [ "$1" != flush ] || bench_record react vpnsup "$2: ruleset committed, from the nft command's start" ms $(bench_field commit_from_command <"$out")
    # OpenVPN's exit (SIGCHLD) comes only once the kernel has torn its tun0 down: RTM_DELLINK's stamp.
    # shellcheck disable=SC2046
    [ "$1" != kill-openvpn ] || bench_record react "kernel (for scale)" "$2: tun0 removed (RTM_DELLINK)" ms $(bench_field tun_gone <"$out")
    # The dead OpenVPN's exit (a pidfd turns readable, as vpnsup's SIGCHLD is sent) waits for the
    # kernel to close its files; what follows it is vpnsup's share of the commit's time.
    # shellcheck disable=SC2046
    [ "$1" != kill-openvpn ] || bench_record react "kernel (for scale)" "$2: OpenVPN's exit complete (SIGCHLD)" ms $(bench_field exited <"$out")
    # shellcheck disable=SC2046
    [ "$1" != kill-openvpn ] || bench_record react vpnsup "$2: ruleset committed, from OpenVPN's exit" ms $(bench_field commit_from_exit <"$out")
    # shellcheck disable=SC2046
    [[ $3 != *state* ]] || bench_record react vpnsup "$2: state left TunnelUp" ms $(bench_field left <"$out")
    # shellcheck disable=SC2046
    [[ $3 != *state* ]] || bench_record react vpnsup "$2: TunnelUp again" ms $(bench_field back <"$out")
}
react flush "outside nft flush ruleset" commit
react kill-openvpn "OpenVPN SIGKILLed" commit,state
react reconnect "OpenVPN SIGUSR1 (>STATE:RECONNECTING)" state
react tun-del "tun0 deleted" state
bench_summary react
