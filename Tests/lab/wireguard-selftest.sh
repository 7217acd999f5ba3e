#!/usr/bin/env bash
# Tests/lab/wireguard-selftest.sh — proves the lab's WireGuard side (lab/wireguard.sh) without
# vpnsup: the server in the ISP namespace, the client files it writes, and a hand-made router
# (wireguard-go configured by `wg`, its transport marked as vpnsup marks it) that gets the client
# out through the tunnel with zero leaks counted; the wrong-key file never completes a handshake
# and lets nothing out; SIGKILLing the router's wireguard-go takes its link away.
# Needs root. Prints ok/not ok lines and "lab: P passed, F failed"; exits non-zero on failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=lab/lab.sh
. "$REPO/lab/lab.sh"
# shellcheck source=lab/wireguard.sh
. "$REPO/lab/wireguard.sh"
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

if [ "$(id -u)" -ne 0 ]; then
    tap_not_ok "the lab needs root (network namespaces)"
    exit 1
fi

lab_init
lab_wg_init
lab_up
tap_note "lab up in $(lab_ms_to_s "$LAB_UP_MS") s (prefix $LAB_PREFIX, devices $LAB_WG_SERVER_IF, $LAB_WG_ROUTER_IF)"

# --- the server and the files ---
t0=$(lab_now_ms)
lab_wg_server_start
tap_note "WireGuard server up in $(lab_ms_to_s $(($(lab_now_ms) - t0))) s"
server_listens() { grep -q . <<<"$(lab_exec isp ss -Hlun "sport = :$LAB_WG_PORT")"; }
tap_check "the server listens on $LAB_VPN_SERVER_IP:$LAB_WG_PORT/udp in the ISP namespace" server_listens
names_unique() {
    [[ $LAB_WG_SERVER_IF == vwgs* && $LAB_WG_ROUTER_IF == vwgr* ]] && [ ${#LAB_WG_SERVER_IF} -le 15 ] &&
        [[ $LAB_WG_SERVER_IF == *"${LAB_OWNER}" ]] && _lab_wg_socket_present "$LAB_WG_SERVER_IF"
}
tap_check "device names carry the lab's owner ($LAB_WG_SERVER_IF) and its UAPI socket exists" names_unique
files_ok() {
    local f
    for f in client.conf client-ip.conf client-wrongkey.conf; do
        [ "$(stat -c %a "$LAB_RUNDIR/config/$f")" = 600 ] || return 1
        grep -q "^\[Interface\]" "$LAB_RUNDIR/config/$f" || return 1
    done
    grep -qx "Endpoint = $LAB_VPN_NAME:$LAB_WG_PORT" "$LAB_RUNDIR/config/client.conf" &&
        grep -qx "Endpoint = $LAB_VPN_SERVER_IP:$LAB_WG_PORT" "$LAB_RUNDIR/config/client-ip.conf" &&
        ! cmp -s "$LAB_RUNDIR/config/client-ip.conf" "$LAB_RUNDIR/config/client-wrongkey.conf"
}
tap_check "client files: by name, by address, with a wrong server key (mode 600)" files_ok
no_key_in_argv() {
    local pid
    pid=$(lab_daemon_pid wg-server) || return 1
    ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$(cat "$LAB_WG_DIR/server.key")"
}
tap_check "the server's private key is not in its command line" no_key_in_argv

# --- a correct (hand-made) router, by host name ---
client_blocked() { ! lab_exec client curl -s --max-time 2 -o /dev/null "$LAB_ECHO_URL"; }
tap_check "without a router the client cannot reach the echo" client_blocked
lab_wg_use_transport
lab_capture_start
t0=$(lab_now_ms)
lab_wg_emulate_router_start client.conf
handshaken() { [ "$(lab_wg_handshake router "$LAB_WG_ROUTER_IF")" -gt 0 ] 2>/dev/null; }
if lab_wait_for 10 handshaken; then
    tap_ok "the hand-made router completes a handshake ($(lab_ms_to_s $(($(lab_now_ms) - t0))) s from its start)"
else
    tap_not_ok "the hand-made router completes a handshake (none within 10 s)"
fi
resolved_by_isp() { grep -qxF "A $LAB_VPN_NAME $LAB_ROUTER_WAN_IP" <<<"$(lab_resolver_queries)"; }
tap_check "the router resolves the endpoint $LAB_VPN_NAME with the ISP's resolver" resolved_by_isp
seen=$(lab_exec client curl -sS --max-time 5 "$LAB_ECHO_URL" || true)
tap_check "through the tunnel the echo sees the tunnel address ($seen)" test "$seen" = "$LAB_WG_CLIENT_IP"
dns=$(lab_exec client dig +short +time=2 +tries=1 "@$LAB_ECHO_IP" "$LAB_DNS_NAME" || true)
tap_check "DNS through the tunnel answers ($dns)" test "$dns" = "$LAB_ECHO_IP"
lab_exec client ping -q -c 3 -i 0.2 -W 1 "$LAB_ECHO_IP" >/dev/null || true
read -r marked unmarked <<<"$(lab_wg_transport_marks)"
tap_check "wireguard-go puts the device's fwmark on its transport ($marked marked, $unmarked unmarked)" \
    test "${marked:-0}" -gt 0 -a "${unmarked:-1}" -eq 0
leaks=$(lab_leaks)
tap_check "tunnelled traffic: zero leaks counted ($(lab_capture_count) packets captured)" test "$leaks" -eq 0
[ "$leaks" -eq 0 ] || tap_note_file 10 "$LAB_RUNDIR/capture/leaks.txt"
sources=$(lab_echo_sources | tr '\n' ' ')
only_tunnel() {
    local src
    [ -n "$sources" ] || return 1
    for src in $sources; do [[ $src == "$LAB_WG_PREFIX"* ]] || return 1; done
}
tap_check "the echo logged tunnel sources only ($sources)" only_tunnel

# --- SIGKILL of the router's wireguard-go ---
pid=$(lab_wg_router_pid || echo none)
lab_wg_kill_router
link_gone() { ! lab_exec router ip link show "$LAB_WG_ROUTER_IF" >/dev/null 2>&1; }
tap_check "lab_wg_kill_router SIGKILLs the router's wireguard-go (pid $pid) and its link goes" link_gone
stale() { _lab_wg_socket_present "$LAB_WG_ROUTER_IF"; }
tap_check "its socket file stays behind, stale" stale
lab_wg_emulate_router_stop
stale_removed() { ! _lab_wg_socket_present "$LAB_WG_ROUTER_IF" && _lab_wg_socket_present "$LAB_WG_SERVER_IF"; }
tap_check "the stale socket is removed, the server's live one is not" stale_removed

# --- the wrong server key: no handshake, nothing out ---
lab_capture_start
lab_wg_emulate_router_start client-wrongkey.conf
sleep 3
tap_check "with the wrong server key no handshake completes in 3 s" test "$(lab_wg_handshake router "$LAB_WG_ROUTER_IF")" = 0
tap_check "with the wrong server key the client gets nowhere" client_blocked
sent=$(lab_exec router wg show "$LAB_WG_ROUTER_IF" transfer | awk '{print $3}')
tap_check "the router kept sending handshake initiations ($sent bytes)" test "${sent:-0}" -gt 0
leaks=$(lab_leaks)
tap_check "wrong key: zero leaks counted ($(lab_capture_count) packets captured)" test "$leaks" -eq 0
lab_wg_emulate_router_stop

# --- tear-down ---
spid=$(lab_daemon_pid wg-server || echo none)
lab_wg_server_stop
server_gone() { [ "$spid" != none ] && ! kill -0 "$spid" 2>/dev/null && ! _lab_wg_socket_present "$LAB_WG_SERVER_IF"; }
tap_check "lab_wg_server_stop stops the server (pid $spid) and its socket goes" server_gone
lab_down
gone() {
    local ns
    for ns in $(ip netns list | awk '{print $1}'); do [[ $ns != "$LAB_PREFIX"* ]] || return 1; done
    [ ! -e "$LAB_WG_SOCKET_DIR/$LAB_WG_SERVER_IF.sock" ] && [ ! -e "$LAB_WG_SOCKET_DIR/$LAB_WG_ROUTER_IF.sock" ]
}
tap_check "lab_down removes every namespace and socket of the run" gone
