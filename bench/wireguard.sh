#!/usr/bin/env bash
# 7. WireGuard through the router, in the namespace lab, vpnsup (release) as the router:
# - throughput: iperf3 from the LAN client to the internet host over WireGuard (wireguard-go, the
#   userspace plane; the server is wireguard-go too) against the same harness over OpenVPN,
#   alternated run by run (TUNNEL_RUNS pairs) so that a drift of the machine's load hits both;
# - reactions: wireguard-go SIGKILLed -> the client's traffic through the tunnel again, and the
#   server back after an outage -> TunnelUp (polled every 20 ms: the figures carry that much);
# - idle cost: wake-ups per second of vpnsup with the tunnel up and nothing to carry, over
#   IDLE_SECONDS (context switches of all its threads, /proc/PID/task/*/status), without and with
#   the DNS probe, over WireGuard and over OpenVPN; the tunnel programs' own for scale.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
bench_reset_section wireguard
VPNSUP=${VPNSUP:-$(bench_vpnsup)}
TUNNEL_RUNS=${TUNNEL_RUNS:-$RUNS}
IPERF_SECONDS=${IPERF_SECONDS:-3}
IDLE_SECONDS=${IDLE_SECONDS:-60}
# shellcheck source=bench/lablib.sh
. "$BENCH_DIR/lablib.sh"
# shellcheck source=lab/wireguard.sh
. "$REPO/lab/wireguard.sh"
bench_lab_up
lab_wg_init
lab_wg_setup
lab_wg_server_start
lab_daemon_start iperf inet iperf3 -s -B "$LAB_ECHO_IP"
lab_wait_for 10 _lab_listening inet tcp 5201

WIREGUARD="vpnsup, WireGuard (wireguard-go)"
OPENVPN="OpenVPN under vpnsup (for comparison)"

# Over WireGuard: the wg-quick file with the endpoint as an address, the lab's own link name.
wg_start() { bench_vpnsup_start CONFIG="$LAB_RUNDIR/config/client-ip.conf" TUNNEL_IF="$LAB_WG_ROUTER_IF" "$@"; }

# Prints milliseconds until CMD succeeds (polled every 20 ms), or fails after SECONDS.
ms_until() { # SECONDS CMD...
    local seconds=$1 t0 deadline
    shift
    t0=$(lab_now_ms)
    deadline=$((t0 + seconds * 1000))
    until "$@"; do
        [ "$(lab_now_ms)" -lt "$deadline" ] || return 1
        sleep 0.02
    done
    echo $(($(lab_now_ms) - t0))
}
carries() { lab_exec client curl -s --max-time 1 "$LAB_ECHO_URL" 2>/dev/null | grep -q "^$1"; }

# Context switches (voluntary and not) of every thread of PID so far.
switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { n += $2 } END { print n + 0 }'
}
# Wake-ups per second of each PID over IDLE_SECONDS, space separated.
idle_rates() {
    local pid before=() after=() i
    for pid in "$@"; do before+=("$(switches "$pid")"); done
    sleep "$IDLE_SECONDS"
    for pid in "$@"; do after+=("$(switches "$pid")"); done
    for i in "${!before[@]}"; do
        awk -v a="${before[i]}" -v b="${after[i]}" -v s="$IDLE_SECONDS" 'BEGIN { printf "%.3f ", (b - a) / s }'
    done
}
tunnel_pid() { # the tunnel's program in the router (wireguard-go or openvpn)
    local pid
    for pid in $(ip netns pids "$(lab_ns router)"); do
        case $(cat "/proc/$pid/comm" 2>/dev/null) in wireguard-go | openvpn) echo "$pid"; return 0 ;; esac
    done
    return 1
}

# ---- throughput, alternated ----
wg_runs=() ovpn_runs=()
for ((run = 0; run < TUNNEL_RUNS; run++)); do
    wg_start
    lab_wait_for 30 carries "$LAB_WG_PREFIX"
    wg_runs+=("$(bench_iperf_through_router "$IPERF_SECONDS")")
    bench_vpnsup_stop
    bench_vpnsup_start
    lab_wait_for 30 carries "$LAB_VPN_PREFIX"
    ovpn_runs+=("$(bench_iperf_through_router "$IPERF_SECONDS")")
    bench_vpnsup_stop
done
bench_record wireguard "$WIREGUARD" "iperf3 TCP, LAN client -> internet host" Mbit/s "${wg_runs[@]}"
bench_record wireguard "$OPENVPN" "iperf3 TCP, LAN client -> internet host" Mbit/s "${ovpn_runs[@]}"

# ---- reactions over WireGuard (the DNS probe every 2 s finds the server's outage) ----
wg_start PROBE_INTERVAL=2 PROBE_TIMEOUT=1
lab_wait_for 30 carries "$LAB_WG_PREFIX"
killed=()
for ((run = 0; run < RUNS; run++)); do
    kill -KILL "$(lab_wg_router_pid)"
    killed+=("$(ms_until 30 carries "$LAB_WG_PREFIX")")
done
bench_record wireguard "$WIREGUARD" "wireguard-go SIGKILLed -> client traffic through the tunnel" ms "${killed[@]}"
left=() back=()
for ((run = 0; run < RUNS; run++)); do
    lab_wg_server_stop
    left+=("$(ms_until 30 bench_state_is Degraded)")
    lab_wg_server_start
    back+=("$(ms_until 60 bench_state_is TunnelUp)")
done
bench_record wireguard "$WIREGUARD" "server stopped -> Degraded (DNS probe every 2 s, 3 failures)" ms "${left[@]}"
bench_record wireguard "$WIREGUARD" "server back -> TunnelUp" ms "${back[@]}"
bench_vpnsup_stop

# ---- idle cost ----
idle() { # SUBJECT PROGRAM LABEL START-FUNCTION [VAR=V...]
    local subject=$1 program=$2 label=$3 start=$4 rates
    shift 4
    "$start" "$@"
    sleep 5 # past the start-up's fast looks
    read -r -a rates <<<"$(idle_rates "$VPNSUP_PID" "$(tunnel_pid)")"
    bench_record wireguard "$subject" "idle, tunnel up, $label: vpnsup's wake-ups" 1/s "${rates[0]}"
    bench_record wireguard "$program (for scale)" "idle, tunnel up, $label: the tunnel program's wake-ups" 1/s "${rates[1]}"
    bench_vpnsup_stop
}
idle "$WIREGUARD" wireguard-go "no DNS probe" wg_start
idle "$WIREGUARD" wireguard-go "DNS probe every 10 s" wg_start PROBE_INTERVAL=10
idle "$OPENVPN" openvpn "no DNS probe" bench_vpnsup_start
idle "$OPENVPN" openvpn "DNS probe every 10 s" bench_vpnsup_start PROBE_INTERVAL=10
bench_summary wireguard
