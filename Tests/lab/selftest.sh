#!/usr/bin/env bash
# Tests/lab/selftest.sh — proves the lab itself, without vpnsup: a hand-made router (plain
# OpenVPN client + an nft masquerade rule) gets the client out through the tunnel with zero leaks
# counted, and a router that merely forwards is caught leaking, on the wire and at the echo.
# Needs root. Prints ok/not ok lines and "lab: P passed, F failed"; exits non-zero on failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=lab/lab.sh
. "$REPO/lab/lab.sh"
# shellcheck source=Tests/lab/tap.sh
. "$REPO/Tests/lab/tap.sh"

finish() {
    local status=$?
    trap - EXIT
    set +e
    lab_down
    if [ "$TAP_FAIL" -eq 0 ] && [ "$status" -eq 0 ] && [ "${LAB_KEEP:-0}" != 1 ]; then
        rm -rf "$LAB_RUNDIR"
    else
        tap_note "lab files kept in $LAB_RUNDIR"
    fi
    tap_finish "$status"
    exit $?
}
trap finish EXIT
trap 'exit 130' INT TERM

client_blocked() { ! lab_exec client curl -s --max-time 2 -o /dev/null "$LAB_ECHO_URL"; }
host_links() { ip -o link show | awk -F': ' '{print $2}' | sort; }

host_before=$(host_links)
lab_init
lab_up
tap_note "lab up in $(lab_ms_to_s "$LAB_UP_MS") s (prefix $LAB_PREFIX)"

names_ok() {
    local node list
    list=" $(ip netns list | awk '{print $1}' | tr '\n' ' ') "
    for node in client router isp inet; do
        [[ $list == *" $(lab_ns "$node") "* ]] || return 1
    done
    [ "$(host_links)" = "$host_before" ]
}
tap_check "four namespaces exist and the host's namespace gained no link" names_ok

no_gateway_yet() {
    local addrs
    addrs=$(lab_exec router ip -4 -o addr show dev eth1) || return 1
    [[ $addrs != *"$LAB_LAN_GW/"* ]]
}
tap_check "the router's eth1 is up without the LAN gateway address" no_gateway_yet
tap_check "without a router the client cannot reach the echo" client_blocked

# --- a correct (hand-made) router: everything the client sends goes through the tunnel ---
lab_capture_start
t0=$(lab_now_ms)
lab_vpn_server_start
tap_note "VPN server started in $(lab_ms_to_s $(($(lab_now_ms) - t0))) s"
t0=$(lab_now_ms)
lab_emulate_router_start tunnel
tap_note "plain openvpn client connected in $(lab_ms_to_s $(($(lab_now_ms) - t0))) s"
resolved_by_isp() { grep -qxF "A $LAB_VPN_NAME $LAB_ROUTER_WAN_IP" <<<"$(lab_resolver_queries)"; }
tap_check "the router resolves the remote $LAB_VPN_NAME with the ISP's resolver (/etc/netns resolv.conf)" resolved_by_isp

seen=$(lab_exec client curl -sS --max-time 5 "$LAB_ECHO_URL" || true)
tap_check "through the tunnel the echo sees the tunnel address ($seen)" \
    test "${seen#"$LAB_VPN_PREFIX"}" != "$seen"
dns=$(lab_exec client dig +short +time=2 +tries=1 "@$LAB_ECHO_IP" "$LAB_DNS_NAME" || true)
tap_check "DNS through the tunnel answers ($dns)" test "$dns" = "$LAB_ECHO_IP"
lab_exec client ping -q -c 3 -i 0.2 -W 1 "$LAB_ECHO_IP" >/dev/null || true

leaks=$(lab_leaks)
tap_check "tunnelled traffic: zero leaks counted ($(lab_capture_count) packets captured)" test "$leaks" -eq 0
[ "$leaks" -eq 0 ] || tap_note_file 10 "$LAB_RUNDIR/capture/leaks.txt"
sources=$(lab_echo_sources | tr '\n' ' ')
only_tunnel() {
    local src
    [ -n "$sources" ] || return 1
    for src in $sources; do [[ $src == "$LAB_VPN_PREFIX"* ]] || return 1; done
}
tap_check "the echo logged tunnel sources only ($sources)" only_tunnel

# --- a leaky router: plain forwarding, no tunnel ---
lab_capture_start
lab_emulate_router_stop
lab_emulate_router_start leaky
seen=$(lab_exec client curl -sS --max-time 5 "$LAB_ECHO_URL" || true)
tap_check "plain forwarding: the echo sees the LAN address ($seen)" test "$seen" = "$LAB_CLIENT_IP"
# The lab's IPv6 works: with plain forwarding the client's IPv6 reaches the internet host (so an
# e2e check that it does not is the router's doing).
lab_ipv6_up
lab_ipv6_router_up
ping6_out() { lab_exec client ping -6 -q -n -c 3 -i 0.3 -W 2 "$LAB_ECHO_IP6" >/dev/null 2>&1; }
tap_check "plain forwarding: the client's IPv6 reaches the internet host ($LAB_ECHO_IP6)" ping6_out
# IPv6 from the router's WAN side counts too.
lab_exec router ip addr add fe80::1/64 dev eth0 nodad
lab_exec router ping -6 -q -c 1 -W 1 ff02::1%eth0 >/dev/null 2>&1 || true
leaks=$(lab_leaks)
leaked() { grep -q "$1" "$LAB_RUNDIR/capture/leaks.txt"; }
tap_check "plain forwarding: the capture counts the leak ($leaks packets)" leaked "IP $LAB_CLIENT_IP\."
tap_check "IPv6 sent onto the WAN counts as a leak" leaked "IP6 "
leak_at_echo() { [[ " $(lab_echo_sources | tr '\n' ' ') " == *" $LAB_CLIENT_IP "* ]]; }
tap_check "plain forwarding: the echo's sources show the LAN address" leak_at_echo

# --- tear-down ---
lab_vpn_server_stop
lab_down
gone() {
    local ns
    for ns in $(ip netns list | awk '{print $1}'); do [[ $ns != "$LAB_PREFIX"* ]] || return 1; done
    [ ! -e "/etc/netns/$(lab_ns router)" ] && [ "$(host_links)" = "$host_before" ]
}
tap_check "lab_down removes every namespace of the run" gone
lab_down
tap_check "lab_down is idempotent" gone
