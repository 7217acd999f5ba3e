#!/usr/bin/env bash
# lab/demo.sh — `make demo`: builds the namespace lab, starts the VPN server and vpnsup in the
# router namespace, waits for TunnelUp, shows a LAN client fetching the echo (which answers with
# the source address it saw) and `vpnsup status`, then tears everything down. Needs root.
#   VPNSUP=path/to/vpnsup (default .build/debug/vpnsup, relative to the repository)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lab/lab.sh
. "$REPO/lab/lab.sh"

VPNSUP=${VPNSUP:-.build/debug/vpnsup}
[[ $VPNSUP == /* ]] || VPNSUP=$REPO/$VPNSUP
if [ ! -x "$VPNSUP" ]; then
    echo "demo: no vpnsup binary at $VPNSUP (run: make build)" >&2
    exit 1
fi

lab_init
RUNTIME=$LAB_RUNDIR/runtime

finish() {
    local status=$?
    trap - EXIT
    set +e
    echo
    echo "== tearing the lab down"
    lab_down
    [ "$status" -ne 0 ] || rm -rf "$LAB_RUNDIR"
    [ "$status" -eq 0 ] || echo "demo failed; logs kept in $LAB_RUNDIR" >&2
    exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*"; }
show() { # show NODE CMD...: print the command as typed in that namespace, then run it
    local node=$1
    shift
    printf '[%s]$ %s\n' "$node" "$*"
    lab_exec "$node" "$@"
}
tunnel_up() {
    local json
    json=$(lab_exec router "$VPNSUP" status --json --runtime-dir "$RUNTIME" 2>/dev/null) || return 1
    [ "$(jq -r .state <<<"$json" 2>/dev/null)" = TunnelUp ]
}

say "building the lab: client $LAB_CLIENT_IP -> router (vpnsup) -> ISP + VPN server $LAB_VPN_SERVER_IP -> echo $LAB_ECHO_IP"
lab_up
echo "ready in $(lab_ms_to_s "$LAB_UP_MS") s; namespaces $(lab_ns client) $(lab_ns router) $(lab_ns isp) $(lab_ns inet)"

say "starting the VPN server and vpnsup"
lab_vpn_server_start
t0=$(lab_now_ms)
lab_daemon_start vpnsup router env -i PATH="$PATH" \
    CONFIG="$LAB_RUNDIR/config/client.ovpn" IP_ADDR="$LAB_LAN_GW_CIDR" LAN_IF=eth1 WAN_IF=eth0 \
    CREDENTIALS_FILE="$LAB_RUNDIR/credentials" RUNTIME_DIR="$RUNTIME" "$VPNSUP" run
echo "vpnsup run (pid $(lab_daemon_pid vpnsup || echo '?')): CONFIG=config/client.ovpn IP_ADDR=$LAB_LAN_GW_CIDR LAN_IF=eth1 WAN_IF=eth0"
if ! lab_wait_for 30 tunnel_up; then
    echo "vpnsup did not reach TunnelUp within 30 s; the end of its log:" >&2
    tail -n 20 "$LAB_RUNDIR/logs/vpnsup.log" >&2
    exit 1
fi
echo "TunnelUp after $(lab_ms_to_s $(($(lab_now_ms) - t0))) s"

say "the LAN client fetches the echo; it answers with the source address it saw"
show client curl -sS --max-time 5 "$LAB_ECHO_URL"
echo "(the client is $LAB_CLIENT_IP; the echo saw the router's tunnel address)"

say "vpnsup status"
show router "$VPNSUP" status --runtime-dir "$RUNTIME"
