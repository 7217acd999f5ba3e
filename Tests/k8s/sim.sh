#!/usr/bin/env bash
# Tests/k8s/sim.sh — vpnsup on the simulated cluster (lab/k8s-sim.sh): the gateway pod runs
# `vpnsup run`, the client pods `vpnsup join`, with the environment the rendered manifests set.
# Shows: client pods on two nodes reach the internet only through the gateway's tunnel and
# cluster services directly, cluster names through kube-dns and other names through the tunnel,
# with zero leaked packets on every node's uplink and the cluster's (and a pod that is not a
# client is caught by the same captures); the client kill switch repaired when deleted and
# holding against a client's own default route; the gateway's tunnel down -> Degraded on the
# gateway, clients blocked, no leak, no false move; vpnsup killed in the gateway and the gateway
# pod deleted -> clients blocked, no leak; the gateway rescheduled to another node and address
# -> the clients follow (timed); throughput direct, through the tunnel, and through overlay and
# tunnel (iperf3, printed). Needs root and the vpnsup binary ($VPNSUP, default
# .build/debug/vpnsup); bounded (about 1.5 min).
# Prints ok/not ok lines, "# " notes and "k8s-sim: P passed, F failed"; exits non-zero on failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=lab/k8s-sim.sh
. "$REPO/lab/k8s-sim.sh"
# shellcheck source=Tests/lab/tap.sh
. "$REPO/Tests/lab/tap.sh"

finish() {
    local status=$?
    trap - EXIT
    set +e
    if { [ "$TAP_FAIL" -gt 0 ] || [ "$status" -ne 0 ]; } && [ -d "${LAB_RUNDIR:-}/logs" ]; then
        local log
        for log in "$LAB_RUNDIR"/logs/vpnsup-*.log "$LAB_RUNDIR"/logs/join-*.log; do
            [ -f "$log" ] || continue
            tap_note "the end of ${log##*/}:"
            tap_note_file 12 "$log"
        done
    fi
    ksim_down
    local left
    left=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -c "^${LAB_PREFIX:-none}" || true)
    if [ "$left" -ne 0 ]; then tap_not_ok "every namespace of the run removed ($left left)"; fi
    if [ "$TAP_FAIL" -eq 0 ] && [ "$status" -eq 0 ] && [ "${LAB_KEEP:-0}" != 1 ]; then
        rm -rf "${LAB_RUNDIR:?}"
    elif [ -d "${LAB_RUNDIR:-}" ]; then
        tap_note "lab files kept in $LAB_RUNDIR"
    fi
    if [ "$status" -ne 0 ] && [ "$TAP_FAIL" -eq 0 ]; then tap_not_ok "test script aborted (status $status)"; fi
    echo "k8s-sim: $TAP_PASS passed, $TAP_FAIL failed"
    [ "$TAP_FAIL" -eq 0 ] && [ "$status" -eq 0 ]
}
trap finish EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" -ne 0 ]; then
    tap_not_ok "the simulation needs root (network namespaces)"
    exit 1
fi
if [ ! -x "$VPNSUP" ]; then
    tap_not_ok "vpnsup binary at $VPNSUP (build it: make build, or set VPNSUP)"
    exit 1
fi
lab_init
t_start=$(lab_now_ms)
ksim_up
tap_note "cluster up in $(lab_ms_to_s "$KSIM_UP_MS") s (prefix $LAB_PREFIX): 3 nodes, kube-dns, web, VPN server; vpnsup $VPNSUP"

GW1=10.244.1.20 GW2=10.244.3.20
GATEWAYS="src host $GW1 or src host $GW2"
GATEWAY_OVERLAY=${KSIM_GATEWAY_ADDR%/*}
fetch() { ksim_exec "$1" curl -sS --max-time "${2:-3}" "$LAB_ECHO_URL" 2>/dev/null; }
via_tunnel() { local seen; seen=$(fetch "$1" "${2:-3}") && [[ $seen == "$LAB_VPN_PREFIX"* ]]; }
blocked() { ! fetch "$1" 2 >/dev/null; }
web_sees_pod() { [ "$(ksim_exec "$1" curl -sS --max-time 3 "http://$KSIM_WEB_SERVICE/" 2>/dev/null)" = "$(ksim_pod_ip "$1")" ]; }
status_field() { ksim_vpnsup "$1" status --json 2>/dev/null | jq -r "$2"; }
no_leaks() { # ROUND-LABEL: the node uplinks and the cluster's uplink count zero
    local counts cluster
    counts=$(ksim_capture_leaks "$GATEWAYS") || counts=incomplete
    cluster=$(lab_leaks) || cluster=incomplete
    if [ "$counts" = incomplete ] || [ "$cluster" = incomplete ]; then
        tap_not_ok "$1: captures complete (nodes: $counts, cluster: $cluster)"
        return 0
    fi
    if [[ " $counts " =~ \ n[0-9]:[1-9] ]] || [ "$cluster" != 0 ]; then
        tap_not_ok "$1: zero leaks on every node uplink ($counts; leaked/captured) and the cluster uplink ($cluster)"
        cat "$LAB_RUNDIR"/capture/leaks-n*-"$KSIM_CAPTURE_ROUND".txt "$LAB_RUNDIR/capture/leaks.txt" 2>/dev/null | head -n 10 | sed 's/^/#   /'
    else
        tap_ok "$1: zero leaks on every node uplink ($counts; leaked/captured) and the cluster uplink"
    fi
}
captures_start() { ksim_capture_start && lab_capture_start; }

# ---- the gateway on n1, clients on n1 and n2 ----
captures_start
t0=$(lab_now_ms)
ksim_gateway_start gw n1 "$GW1" || true
took=$(($(lab_now_ms) - t0))
tap_check "vpnsup run in the gateway pod: TunnelUp" ksim_state_is gw TunnelUp
tap_note "figure: gateway pod created -> vpnsup run TunnelUp: $(lab_ms_to_s "$took") s"
gateway_owns_overlay() {
    # Here-strings, not pipes: grep -q leaving early would fail the pipeline (pipefail).
    grep -q "vxlan id $(ksim_manifest_value gateway OVERLAY_VNI) .*dstport $KSIM_PORT" <<<"$(ksim_exec gw ip -d link show vxlan0)" &&
        grep -q " inet $KSIM_GATEWAY_ADDR " <<<"$(ksim_exec gw ip -4 -o addr show dev vxlan0)" &&
        grep -q "via 169.254.1.1 dev eth0" <<<"$(ksim_exec gw ip route show "$KSIM_POD_CIDR")"
}
tap_check "the gateway created its overlay link (VNI, port, IP_ADDR) and routes the pods by eth0" gateway_owns_overlay
ksim_dns_set "$KSIM_GATEWAY_NAME" "$GW1"
t0=$(lab_now_ms)
ksim_client_join client-a n1 10.244.1.10 || true
ksim_client_join client-b n2 10.244.2.10 || true
tap_note "figure: two client pods created -> both vpnsup join healthy (Joined): $(lab_ms_to_s $(($(lab_now_ms) - t0))) s"
joined_to() { [ "$(status_field "$1" '.state + " " + .gateway')" = "Joined $2" ]; }
tap_check "both clients found the gateway by its Service name and joined it (vpnsup health passes)" \
    eval 'joined_to client-a $GW1 && joined_to client-b $GW1'

# The processes run with the manifests' environment: what /proc shows of them, against the
# rendered ConfigMaps, every variable equal but the site's.
environment_of() { tr '\0' '\n' <"/proc/$(ksim_daemon_pid "$1")/environ" | grep -v '^PATH=' | sort; }
expected_environment() { ksim_env "$1" "$2" | grep -v '^PATH=' | sort; }
agrees_with_manifests() {
    local site
    site=$(ksim_site_env "$2" "$3" | cut -d= -f1 | paste -sd' ')
    diff <(environment_of "$1") <(expected_environment "$2" "$3") >/dev/null &&
        tap_note "$1: $(wc -l <"$LAB_RUNDIR/sim/$2.manifest.env") variables from the manifests, the site's: $site"
}
tap_check "vpnsup run runs with the gateway manifests' environment (only the site's values differ)" agrees_with_manifests vpnsup-gw gateway gw
tap_check "vpnsup join runs with the client manifests' environment (only the site's values differ)" agrees_with_manifests join-client-a join client-a
overlay_address() { grep -q " inet $2/${KSIM_GATEWAY_ADDR#*/} " <<<"$(ksim_exec "$1" ip -4 -o addr show dev vxlan0)"; }
tap_check "client overlay addresses derived from the pod IPs (172.31.1.10, 172.31.2.10)" \
    eval 'overlay_address client-a 172.31.1.10 && overlay_address client-b 172.31.2.10'

for pod in client-a client-b; do
    tap_check "$pod reaches the internet through the tunnel (the echo sees $(fetch "$pod" || echo nothing))" via_tunnel "$pod"
    tap_check "$pod reaches the web Service directly (web sees its pod IP)" web_sees_pod "$pod"
    tap_check "$pod resolves a cluster name through kube-dns" test "$(ksim_resolve "$pod" "$KSIM_WEB_NAME" || true)" = "$KSIM_WEB_SERVICE"
    tap_check "$pod resolves an internet name through the tunnel" test "$(ksim_resolve "$pod" "$LAB_DNS_NAME" || true)" = "$LAB_ECHO_IP"
done
resolves_with_own_resolver() { [ "$(ksim_exec client-a dig +short +time=2 +tries=1 @8.8.8.8 "$LAB_DNS_NAME" A | head -n 1)" = "$LAB_ECHO_IP" ]; }
tap_check "a query to another resolver (8.8.8.8) is answered by the pod's forwarder, through the tunnel" resolves_with_own_resolver
tunnel_dns_only() {
    local sources
    sources=$(lab_dns_query_sources dns "$LAB_DNS_NAME" | tr '\n' ' ')
    [ -n "$sources" ] && [[ ! $sources =~ (^| )[^1]|(^| )1[^0] ]] && [[ $sources == "$LAB_VPN_PREFIX"* ]]
}
tap_check "the internet's resolver saw queries from the tunnel address only ($(lab_dns_query_sources dns "$LAB_DNS_NAME" | tr '\n' ' '))" tunnel_dns_only
kube_dns_no_internet_names() { ! grep -q "query\[A\] $LAB_DNS_NAME from" "$LAB_RUNDIR/sim/dns.log"; }
tap_check "kube-dns never saw the internet name (no DNS leak through the cluster resolver)" kube_dns_no_internet_names
# A port forward from the tunnel to a client, through the overlay (the gateway found client-b from
# its frames): asked from the VPN server's side, answered by client-b's echo.
ksim_daemon_start web-client-b client-b "$LAB_PYTHON" -u "$LAB_RUNDIR/inet/echo.py" "$LAB_RUNDIR/sim/web-client-b.log" 172.31.2.10 80
lab_wait_for 5 _ksim_listening client-b tcp 172.31.2.10 80 || true
forwarded() {
    local tunnel seen
    tunnel=$(status_field gw .tunnelAddress) || return 1
    seen=$(lab_exec isp curl -sS --max-time 3 "http://$tunnel:${KSIM_FORWARD%%:*}/" 2>/dev/null) || return 1
    [[ $seen == "$LAB_VPN_PREFIX"* ]]
}
tap_check "the gateway's port forward ($KSIM_FORWARD) reaches client-b through tunnel and overlay" forwarded
relayed() { [ "$(status_field client-a '.dns.relayed')" -ge 3 ]; }
tap_check "client-a's status counts the forwarder's relayed queries ($(status_field client-a '.dns | tostring'))" relayed
no_leaks "gateway up, clients through it"

# ---- the detector catches a pod that is not a client; the client kill switch holds ----
captures_start
ksim_pod_add bystander n2 10.244.2.30
seen=$(fetch bystander || true)
tap_check "a pod without vpnsup join: the echo sees the cluster's NAT address ($seen), not the tunnel" test "$seen" = "$LAB_ROUTER_WAN_IP"
counts=$(ksim_capture_leaks "$GATEWAYS" || echo failed)
cluster=$(lab_leaks || echo failed)
tap_check "... and the captures count it on n2's uplink ($counts) and the cluster's ($cluster)" \
    eval '[[ " $counts " =~ \ n2:[1-9] ]] && [[ $cluster =~ ^[1-9] ]] && grep -q "IP 10.244.2.30\." "$LAB_RUNDIR/capture/leaks-n2-$KSIM_CAPTURE_ROUND.txt"'

captures_start
ksim_exec client-b nft delete table inet vpnsup
table_back() { ksim_exec client-b nft list chain inet vpnsup output >/dev/null 2>&1; }
tap_check "client-b's kill switch deleted: vpnsup join commits it again" lab_wait_for 5 table_back
ksim_exec client-b ip route replace default via 169.254.1.1 dev eth0
into_overlay() { grep -q "via $GATEWAY_OVERLAY dev vxlan0" <<<"$(ksim_exec client-b ip route show default)"; }
tap_check "client-b's default route moved out of eth0: vpnsup join puts it back into the overlay" lab_wait_for 5 into_overlay
# The sidecar dies: what it committed stays in the kernel, and holds even against the routes.
ksim_daemon_stop join-client-b KILL
ksim_exec client-b ip route replace default via 169.254.1.1 dev eth0
tap_check "client-b's sidecar killed, its default route out of eth0: blocked (the kernel keeps the kill switch)" blocked client-b
tap_check "... while client-b still reaches the web Service" web_sees_pod client-b
# The kubelet restarts a native sidecar: it starts over from the lockdown and joins again.
mapfile -t join_vars < <(ksim_env join client-b)
ksim_daemon_start join-client-b client-b env -i "${join_vars[@]}" "$VPNSUP" join
tap_check "client-b's sidecar restarted: Joined again, through the tunnel" \
    eval 'lab_wait_for 10 joined_to client-b $GW1 && lab_wait_for 5 via_tunnel client-b 1'
no_leaks "kill switch deleted, routes changed, sidecar killed and restarted"

# ---- the gateway's tunnel down: Degraded, clients blocked, no leak, no false move ----
captures_start
ksim_daemon_start ping-client-a client-a ping -n -i 0.2 "$LAB_ECHO_IP"
lab_vpn_server_stop
t0=$(lab_now_ms)
left_up() { ! ksim_state_is gw TunnelUp; }
if lab_wait_for 20 left_up; then
    tap_ok "tunnel down: the gateway leaves TunnelUp ($(ksim_state gw || echo ?): $(status_field gw '.reason'))"
    tap_note "figure: VPN server stopped -> gateway $(ksim_state gw || echo ?): $(lab_ms_to_s $(($(lab_now_ms) - t0))) s (OpenVPN's ping-restart is 5 s)"
else
    tap_not_ok "tunnel down: the gateway leaves TunnelUp (not within 20 s)"
fi
tap_check "tunnel down: the gateway is Degraded or Killswitched" eval '[[ $(ksim_state gw) =~ ^(Degraded|Killswitched)$ ]]'
tap_check "tunnel down: client-a blocked" blocked client-a
tap_check "tunnel down: client-b blocked" blocked client-b
tap_check "tunnel down: cluster services still reached directly" web_sees_pod client-b
while [ $(($(lab_now_ms) - t0)) -lt 8000 ]; do sleep 0.2; done
ksim_daemon_stop ping-client-a
tap_check "tunnel down: the gateway still answers on the overlay, client-a did not move (Joined, 0 follows)" \
    test "$(status_field client-a '.state + " " + (.follows | tostring)')" = "Joined 0"
lab_vpn_server_start
tap_check "tunnel back: the gateway TunnelUp again" lab_wait_for 30 ksim_state_is gw TunnelUp
tap_check "tunnel back: client-a through it again" lab_wait_for 10 via_tunnel client-a 1
no_leaks "tunnel down and back"

# ---- vpnsup killed in the gateway, then the gateway pod deleted: clients blocked ----
captures_start
ksim_daemon_stop vpnsup-gw KILL
openvpn_gone() { # in the gateway pod's namespace (pgrep would see every namespace's processes)
    local pid
    for pid in $(ip netns pids "$(ksim_ns gw)"); do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != openvpn ] || return 1
    done
}
tap_check "vpnsup run SIGKILLed: its OpenVPN ends too (its management connection is gone)" lab_wait_for 10 openvpn_gone
tap_check "gateway's vpnsup killed: client-a blocked" blocked client-a
tap_check "gateway's vpnsup killed: client-b blocked" blocked client-b
ksim_daemon_start ping-client-a client-a ping -n -i 0.2 "$LAB_ECHO_IP"
ksim_pod_delete gw
unreachable() { [ "$(status_field client-a .state)" = Following ]; }
t0=$(lab_now_ms)
if lab_wait_for 15 unreachable; then
    tap_ok "gateway pod deleted: client-a's sidecar sees the gateway unreachable (Following)"
    tap_note "figure: gateway pod deleted -> client-a Following (neighbour FAILED event): $(lab_ms_to_s $(($(lab_now_ms) - t0))) s"
else
    tap_not_ok "gateway pod deleted: client-a's sidecar sees the gateway unreachable (Following; $(status_field client-a .state))"
fi
ksim_daemon_stop ping-client-a
tap_check "gateway gone: client-a blocked" blocked client-a
tap_check "gateway gone: client-b still reaches the web Service" web_sees_pod client-b
no_leaks "gateway killed and gone"

# ---- rescheduled on n3 with a new IP: the clients follow ----
captures_start
ksim_gateway_start gw2 n3 "$GW2" || true
tap_check "the rescheduled gateway's vpnsup run: TunnelUp" ksim_state_is gw2 TunnelUp
t0=$(lab_now_ms)
ksim_dns_set "$KSIM_GATEWAY_NAME" "$GW2"
followed_a='' followed_b=''
while [ $(($(lab_now_ms) - t0)) -lt 20000 ] && { [ -z "$followed_a" ] || [ -z "$followed_b" ]; }; do
    [ -n "$followed_a" ] || { via_tunnel client-a 1 && followed_a=$(($(lab_now_ms) - t0)); } || true
    [ -n "$followed_b" ] || { via_tunnel client-b 1 && followed_b=$(($(lab_now_ms) - t0)); } || true
done
if [ -n "$followed_a" ] && [ -n "$followed_b" ]; then
    tap_ok "both clients follow the rescheduled gateway and get out through it"
    tap_note "figure: DNS updated -> traffic through the new gateway: client-a $(lab_ms_to_s "$followed_a") s, client-b $(lab_ms_to_s "$followed_b") s (each sending: curl with a 1 s limit, again and again)"
else
    tap_not_ok "both clients follow the rescheduled gateway (client-a: ${followed_a:-no}, client-b: ${followed_b:-no})"
fi
fdb_points_at() { grep -qx "00:00:00:00:00:00 dst $2 via eth0 self permanent" <<<"$(ksim_exec "$1" bridge fdb show dev vxlan0)"; }
tap_check "each client's overlay has one destination, the new gateway" eval 'fdb_points_at client-a $GW2 && fdb_points_at client-b $GW2'
tap_check "the clients' status: one follow, $GW1 -> $GW2" \
    eval '[ "$(status_field client-a ".follows, .lastFollow.to" | paste -sd" ")" = "1 $GW2" ] && [ "$(status_field client-b ".follows" )" = 1 ]'
no_leaks "gateway rescheduled"

only_tunnel_at_echo() {
    local src
    for src in $(awk '{print $2}' "$LAB_RUNDIR/inet/echo.log" | sort -u); do
        # The pod without vpnsup join is the only non-tunnel source the echo may have seen.
        [[ $src == "$LAB_VPN_PREFIX"* ]] || [ "$src" = "$LAB_ROUTER_WAN_IP" ] || return 1
    done
    [ "$(grep -c " $LAB_ROUTER_WAN_IP " "$LAB_RUNDIR/inet/echo.log")" -eq 1 ]
}
tap_check "the echo saw tunnel sources only, but for the pod without vpnsup join" only_tunnel_at_echo

# ---- throughput: direct, through the tunnel, through overlay and tunnel ----
lab_daemon_start iperf3 inet iperf3 -s -p 5201
lab_wait_for 5 _lab_listening inet tcp 5201 >/dev/null || true
mbits() { # POD
    ksim_exec "$1" iperf3 -c "$LAB_ECHO_IP" -p 5201 -t "${IPERF_SECONDS:-2}" -J 2>/dev/null |
        jq -r '.end.sum_received.bits_per_second / 1e6 | floor' 2>/dev/null || echo '?'
}
direct=$(mbits bystander) tunnel=$(mbits gw2) overlay=$(mbits client-a)
tap_note "figure: iperf3 to the internet host, Mbit/s: direct (a pod without vpnsup) $direct, through the tunnel (the gateway pod itself) $tunnel, through overlay and tunnel (client-a) $overlay"
tap_check "iperf3 measured all three paths" eval '[[ $direct$tunnel$overlay =~ ^[0-9]+$ ]]'
lab_daemon_stop iperf3
lab_vpn_server_stop
tap_note "figure: whole simulation $(lab_ms_to_s $(($(lab_now_ms) - t_start))) s"
