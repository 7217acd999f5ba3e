# shellcheck shell=bash
# bench/lablib.sh — the namespace lab (lab/lab.sh) for the benchmarks that need a real OpenVPN
# server: vpnsup (release build) as the router, its status, iperf3. Source after bench/lib.sh.
#
#   bench_lab_up                 lab with the VPN server running; lab_down joins the EXIT trap
#   bench_vpnsup_start [VAR=V]   vpnsup run in the router ns (literal remote, DNS enforced, no probe
#                                unless PROBE_INTERVAL is given); waits for TunnelUp
#   bench_vpnsup_stop            SIGTERM, wait
#   bench_state                  vpnsup's state (status --json)

# shellcheck disable=SC2034 # VPNSUP_PID, BENCH_RUNTIME: for the scripts that source this file
# shellcheck disable=SC2120 # bench_vpnsup_start's arguments are optional
# shellcheck source=lab/lab.sh
. "$REPO/lab/lab.sh"

bench_lab_up() {
    lab_init
    BENCH_EXIT_HOOKS+=(lab_down bench_lab_remove_rundir)
    lab_up
    lab_require iperf3 jq
    lab_vpn_server_start
    BENCH_RUNTIME=$LAB_RUNDIR/runtime
}

# The run directory (PKI, logs) goes with the lab; BENCH_KEEP_LAB=1 keeps it for a look.
bench_lab_remove_rundir() { [ "${BENCH_KEEP_LAB:-0}" = 1 ] || rm -rf "${LAB_RUNDIR:?}"; }

bench_vpnsup_start() {
    local vars=(PATH="$PATH" CONFIG="$LAB_RUNDIR/config/client-ip.ovpn" IP_ADDR="$LAB_LAN_GW_CIDR"
        LAN_IF=eth1 WAN_IF=eth0 CREDENTIALS_FILE="$LAB_RUNDIR/credentials" RUNTIME_DIR="$BENCH_RUNTIME"
        DNS="$LAB_ECHO_IP" PROBE_INTERVAL=0 "$@")
    lab_daemon_start vpnsup router env -i "${vars[@]}" "$VPNSUP" run
    if ! lab_wait_for 30 bench_state_is TunnelUp; then
        _bench_log "vpnsup did not reach TunnelUp; the end of its log:"
        tail -n 20 "$LAB_RUNDIR/logs/vpnsup.log" >&2
        return 1
    fi
    VPNSUP_PID=$(lab_daemon_pid vpnsup)
}

bench_vpnsup_stop() { lab_daemon_stop vpnsup TERM 5; }

bench_state() {
    timeout 5 ip netns exec "$(lab_ns router)" "$VPNSUP" status --json --runtime-dir "$BENCH_RUNTIME" 2>/dev/null |
        jq -er '.state'
}
bench_state_is() { [ "$(bench_state 2>/dev/null)" = "$1" ]; }

# iperf3 from the client to the internet host for SECONDS; prints the received Mbit/s.
bench_iperf_through_router() { # SECONDS [iperf3 args...]
    local seconds=$1
    shift
    lab_exec client iperf3 -c "$LAB_ECHO_IP" -t "$seconds" -J "$@" |
        jq -r '.end.sum_received.bits_per_second / 1e6'
}
