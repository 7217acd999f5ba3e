#!/usr/bin/env bash
# Tests/k8s/sim.sh — the Kubernetes simulation (lab/k8s-sim.sh) proves its topology and its leak
# detector, with the gateway and the clients configured by hand as vpnsup run / vpnsup join will
# do it (phase 2 swaps those in): client pods on two nodes reach the internet only through the
# gateway's tunnel and cluster services directly, with zero leaked packets on every node's uplink
# and the cluster's; a client that bypasses the overlay is caught on its node's uplink and at the
# echo; with the gateway's tunnel down, or the gateway pod gone, clients are blocked and leak
# nothing, even when a client's default route points out of eth0; the kernel announces a deleted
# gateway as a neighbour failure on a sending client's overlay (timed), and a mere tunnel outage
# not; the gateway rescheduled to another node with a new IP is followed (timed). Needs root;
# bounded (about 25 s).
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
lab_init
t_start=$(lab_now_ms)
ksim_up
tap_note "cluster up in $(lab_ms_to_s "$KSIM_UP_MS") s (prefix $LAB_PREFIX): 3 nodes, kube-dns, web, VPN server"

GW1=10.244.1.20 GW2=10.244.3.20
GATEWAYS="src host $GW1 or src host $GW2"
fetch() { ksim_exec "$1" curl -sS --max-time "${2:-3}" "$LAB_ECHO_URL" 2>/dev/null; }
via_tunnel() { local seen; seen=$(fetch "$1") && [[ $seen == "$LAB_VPN_PREFIX"* ]]; }
blocked() { ! fetch "$1" 2 >/dev/null; }
web_sees_pod() { [ "$(ksim_exec "$1" curl -sS --max-time 3 "http://$KSIM_WEB_SERVICE/" 2>/dev/null)" = "$(ksim_pod_ip "$1")" ]; }
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
ksim_gateway_start gw n1 "$GW1"
ksim_dns_set "$KSIM_GATEWAY_NAME" "$GW1"
tap_note "figure: gateway pod's tunnel up in $(lab_ms_to_s $(($(lab_now_ms) - t0))) s"
joined_a=$(ksim_client_join client-a n1 10.244.1.10)
joined_b=$(ksim_client_join client-b n2 10.244.2.10)
tap_check "both clients found the gateway by its Service name through their forwarder ($joined_a, $joined_b)" \
    test "$joined_a $joined_b" = "$GW1 $GW1"
overlay_address() { grep -q " inet $2/15 " <<<"$(ksim_exec "$1" ip -4 -o addr show dev vxlan0)"; }
tap_check "client overlay addresses derived from the pod IPs (172.31.1.10, 172.31.2.10)" \
    eval 'overlay_address client-a 172.31.1.10 && overlay_address client-b 172.31.2.10'

for pod in client-a client-b; do
    tap_check "$pod reaches the internet through the tunnel (the echo sees $(fetch "$pod" || echo nothing))" via_tunnel "$pod"
    tap_check "$pod reaches the web Service directly (web sees its pod IP)" web_sees_pod "$pod"
    tap_check "$pod resolves a cluster name through kube-dns" test "$(ksim_resolve "$pod" "$KSIM_WEB_NAME" || true)" = "$KSIM_WEB_SERVICE"
    tap_check "$pod resolves an internet name through the tunnel" test "$(ksim_resolve "$pod" "$LAB_DNS_NAME" || true)" = "$LAB_ECHO_IP"
done
tunnel_dns_only() {
    local sources
    sources=$(lab_dns_query_sources dns "$LAB_DNS_NAME" | tr '\n' ' ')
    [ -n "$sources" ] && [[ ! $sources =~ (^| )[^1]|(^| )1[^0] ]] && [[ $sources == "$LAB_VPN_PREFIX"* ]]
}
tap_check "the internet's resolver saw queries from the tunnel address only ($(lab_dns_query_sources dns "$LAB_DNS_NAME" | tr '\n' ' '))" tunnel_dns_only
kube_dns_no_internet_names() { ! grep -q "query\[A\] $LAB_DNS_NAME from" "$LAB_RUNDIR/sim/dns.log"; }
tap_check "kube-dns never saw the internet name (no DNS leak through the cluster resolver)" kube_dns_no_internet_names
no_leaks "gateway up, clients through it"

# ---- the detector catches a client that bypasses the overlay ----
captures_start
ksim_exec client-b nft delete table inet vpnsup
ksim_exec client-b ip route replace default via 169.254.1.1 dev eth0
seen=$(fetch client-b || true)
tap_check "bypassing client: the echo sees the cluster's NAT address ($seen), not the tunnel" test "$seen" = "$LAB_ROUTER_WAN_IP"
counts=$(ksim_capture_leaks "$GATEWAYS" || echo failed)
cluster=$(lab_leaks || echo failed)
tap_check "bypassing client: the leak is counted on n2's uplink ($counts) and the cluster's ($cluster)" \
    eval '[[ " $counts " =~ \ n2:[1-9] ]] && [[ $cluster =~ ^[1-9] ]] && grep -q "IP 10.244.2.10\." "$LAB_RUNDIR/capture/leaks-n2-$KSIM_CAPTURE_ROUND.txt"'
ksim_client_killswitch client-b
ksim_exec client-b ip route replace default via "${KSIM_GATEWAY_ADDR%/*}" dev vxlan0
tap_check "client-b back on the overlay" via_tunnel client-b

# The gateway-move detector (phase 2's vpnsup join listens to it): rtnetlink's neighbour events on
# client-a's vxlan0, while client-a keeps sending (a ping to the internet, through the overlay).
ksim_daemon_start neigh-client-a client-a ip -ts monitor neigh dev vxlan0
gateway_failed() { grep -q " ${KSIM_GATEWAY_ADDR%/*} .*FAILED" "$LAB_RUNDIR/logs/neigh-client-a.log"; }
gateway_confirmations() { grep -c " ${KSIM_GATEWAY_ADDR%/*} .*REACHABLE" "$LAB_RUNDIR/logs/neigh-client-a.log" || true; }
traffic_start() { ksim_daemon_start ping-client-a client-a ping -n -i 0.2 "$LAB_ECHO_IP"; }
traffic_stop() { ksim_daemon_stop ping-client-a; }

# ---- the gateway's tunnel down: clients blocked, nothing leaks ----
captures_start
ksim_gateway_tunnel_stop gw
t0=$(lab_now_ms)
confirmed_before=$(gateway_confirmations)
traffic_start
tap_check "tunnel down: client-a blocked" blocked client-a
tap_check "tunnel down: client-b blocked" blocked client-b
tap_check "tunnel down: cluster services still reached directly" web_sees_pod client-b
# Long enough for the neighbour timers to run out twice: the gateway pod answers its probes.
while [ $(($(lab_now_ms) - t0)) -lt 7000 ]; do sleep 0.2; done
traffic_stop
confirmed=$(($(gateway_confirmations) - confirmed_before))
tap_check "tunnel down: the gateway still answers on the overlay ($confirmed probes answered, no neighbour failure in 7 s of traffic)" \
    eval '[ "$confirmed" -gt 0 ] && ! gateway_failed'
ksim_gateway_tunnel_start gw
tap_check "tunnel back: client-a through it again" lab_wait_for 10 via_tunnel client-a
no_leaks "tunnel down and back"

# ---- the gateway pod gone: clients blocked, even with their default route on eth0 ----
captures_start
traffic_start
t0=$(lab_now_ms)
ksim_pod_delete gw
if lab_wait_for 15 gateway_failed; then
    took=$(($(lab_now_ms) - t0))
    tap_ok "gateway gone: the kernel reports the gateway's overlay address FAILED on client-a's vxlan0"
    tap_note "figure: gateway pod deleted -> neighbour FAILED event on a sending client: $(lab_ms_to_s "$took") s"
else
    tap_not_ok "gateway gone: the kernel reports the gateway's overlay address FAILED on client-a's vxlan0 (not within 15 s)"
fi
traffic_stop
tap_check "gateway gone: client-a blocked" blocked client-a
ksim_exec client-b ip route replace default via 169.254.1.1 dev eth0
tap_check "gateway gone, client-b's default route out of eth0: still blocked (its kill switch)" blocked client-b
tap_check "gateway gone: client-b still reaches the web Service" web_sees_pod client-b
ksim_exec client-b ip route replace default via "${KSIM_GATEWAY_ADDR%/*}" dev vxlan0
no_leaks "gateway gone"

# ---- rescheduled on n3 with a new IP: the clients follow ----
captures_start
ksim_gateway_start gw2 n3 "$GW2"
t0=$(lab_now_ms)
ksim_dns_set "$KSIM_GATEWAY_NAME" "$GW2"
followed=$(ksim_client_follow client-a || true)
followed="$followed $(ksim_client_follow client-b || true)"
both_through() { via_tunnel client-a && via_tunnel client-b; }
if lab_wait_for 10 both_through; then
    took=$(($(lab_now_ms) - t0))
    tap_ok "both clients follow the rescheduled gateway ($followed) and get out through it"
    tap_note "figure: DNS updated -> both clients' traffic through the new gateway: $(lab_ms_to_s "$took") s (hand-made follow: re-resolve + re-point)"
else
    tap_not_ok "both clients follow the rescheduled gateway ($followed)"
fi
fdb_points_at() { grep -qx "00:00:00:00:00:00 dst $2 via eth0 self permanent" <<<"$(ksim_exec "$1" bridge fdb show dev vxlan0)"; }
tap_check "each client's overlay has one destination, the new gateway" eval 'fdb_points_at client-a $GW2 && fdb_points_at client-b $GW2'
no_leaks "gateway rescheduled"

only_tunnel_at_echo() {
    local src
    for src in $(awk '{print $2}' "$LAB_RUNDIR/inet/echo.log" | sort -u); do
        # The one bypass above is the only non-tunnel source the echo may have seen.
        [[ $src == "$LAB_VPN_PREFIX"* ]] || [ "$src" = "$LAB_ROUTER_WAN_IP" ] || return 1
    done
    [ "$(grep -c " $LAB_ROUTER_WAN_IP " "$LAB_RUNDIR/inet/echo.log")" -eq 1 ]
}
tap_check "the echo saw tunnel sources only, but for the one deliberate bypass" only_tunnel_at_echo
lab_vpn_server_stop
tap_note "figure: whole simulation $(lab_ms_to_s $(($(lab_now_ms) - t_start))) s"
