#!/usr/bin/env bash
# 4. Tunnel throughput in the namespace lab: iperf3 from the LAN client through the router and the
# real OpenVPN tunnel to the internet host, vpnsup (release) as the router against the same
# OpenVPN client under the original's shell entrypoint (its iptables rules, no supervisor).
# Alternated run by run (TUNNEL_RUNS pairs), so a drift of the machine's load hits both alike.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
bench_reset_section tunnel
VPNSUP=${VPNSUP:-$(bench_vpnsup)}
TUNNEL_RUNS=${TUNNEL_RUNS:-$RUNS}
IPERF_SECONDS=${IPERF_SECONDS:-3}
# shellcheck source=bench/lablib.sh
. "$BENCH_DIR/lablib.sh"
bench_lab_up
lab_daemon_start iperf inet iperf3 -s -B "$LAB_ECHO_IP"
lab_wait_for 10 _lab_listening inet tcp 5201

# The router as the lab hands it over: no rules, no gateway address, no policy routing.
reset_router() {
    lab_exec router nft flush ruleset
    lab_exec router ip addr flush dev eth1
    lab_exec router ip rule del pref 100 2>/dev/null || true
    lab_exec router ip route flush table 30320 2>/dev/null || true
    lab_exec client ip neigh flush dev eth0
}
tunnel_carries() { lab_exec client curl -s --max-time 1 "$LAB_ECHO_URL" 2>/dev/null | grep -q "^$LAB_VPN_PREFIX"; }

start_original() {
    lab_exec router ip addr add "$LAB_LAN_GW_CIDR" dev eth1
    # Same OpenVPN client and configuration; --disable-dco as vpnsup passes it (no DCO module here anyway).
    lab_daemon_start original router env LAN_IF=eth1 WAN_IF=eth0 TUN_IF=tun0 SERVER_IP="$LAB_VPN_SERVER_IP" \
        SERVER_PORT="$LAB_VPN_PORT" DNS="$LAB_ECHO_IP" FORWARDS="" \
        OPENVPN_CONFIG="$LAB_RUNDIR/config/client-ip.ovpn" OPENVPN_CREDENTIALS="$LAB_RUNDIR/credentials" \
        bash "$BENCH_DIR/baseline/original-entrypoint.sh" --disable-dco
    lab_wait_for 30 tunnel_carries || { _bench_log "the original's tunnel does not carry"; tail -n 20 "$LAB_RUNDIR/logs/original.log" >&2; return 1; }
}

vpnsup_runs=() original_runs=()
for ((run = 0; run < TUNNEL_RUNS; run++)); do
    reset_router
    bench_vpnsup_start
    lab_wait_for 30 tunnel_carries
    vpnsup_runs+=("$(bench_iperf_through_router "$IPERF_SECONDS")")
    bench_vpnsup_stop
    reset_router
    start_original
    original_runs+=("$(bench_iperf_through_router "$IPERF_SECONDS")")
    lab_daemon_stop original TERM 5
done
bench_record tunnel vpnsup "iperf3 TCP, LAN client -> internet host" Mbit/s "${vpnsup_runs[@]}"
bench_record tunnel "original entrypoint (iptables, no supervisor)" "iperf3 TCP, LAN client -> internet host" Mbit/s "${original_runs[@]}"
bench_summary tunnel
