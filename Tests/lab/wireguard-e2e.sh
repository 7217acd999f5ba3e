#!/usr/bin/env bash
# Tests/lab/wireguard-e2e.sh — end-to-end test of vpnsup over WireGuard in the namespace lab
# (lab/lab.sh, lab/wireguard.sh: wireguard-go as the server in the ISP namespace). The LAN client
# behind vpnsup reaches the internet only through the tunnel; DNS is enforced and port forwards
# work through it (Tests/lab/features.sh); the server going away makes it Degraded with no way
# out, and its return TunnelUp; wireguard-go SIGKILLed again and again is respawned; an outside
# `nft flush ruleset` under a LAN flood leaks nothing; SIGKILL of vpnsup and wireguard-go leaves
# nothing open; a new vpnsup recovers, and SIGTERM leaves the lockdown; a wrong server key never
# comes up and says why, and SIGHUP with the right key reconfigures the running wireguard-go. Over
# the whole run: zero packets on the WAN but the marked transport to the pinned endpoint (and
# vpnsup's own resolution of the endpoint's name), only tunnel sources at the echo.
#
#   VPNSUP=path/to/vpnsup bash Tests/lab/wireguard-e2e.sh   (default .build/debug/vpnsup; needs root)
#   LAB_KEEP=1 keeps the run directory (logs, captures) even when everything passed.
# Prints ok/not ok lines, "# figure:" notes with timings, and "lab: P passed, F failed".
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=lab/lab.sh
. "$REPO/lab/lab.sh"
# shellcheck source=lab/wireguard.sh
. "$REPO/lab/wireguard.sh"
# shellcheck source=Tests/lab/tap.sh
. "$REPO/Tests/lab/tap.sh"
# shellcheck source=Tests/lab/harness.sh
. "$REPO/Tests/lab/harness.sh"
# shellcheck source=Tests/lab/features.sh
. "$REPO/Tests/lab/features.sh"

VPNSUP=${VPNSUP:-.build/debug/vpnsup}
[[ $VPNSUP == /* ]] || VPNSUP=$REPO/$VPNSUP

TUNNEL_UP_TIMEOUT=20 # server start -> TunnelUp
OUTAGE_TIMEOUT=20    # server stop -> Degraded (the DNS probe: 3 failures 2 s apart)
RECOVER_TIMEOUT=30   # server back, wireguard-go killed -> traffic through the tunnel again
WRONG_KEY_WATCH=25   # a wrong server key: never TunnelUp in this long (the handshake is overdue at 20 s)

trap lab_test_finish EXIT
trap 'exit 130' INT TERM

lab_init
lab_wg_init
lab_test_preflight
RUNTIME=$LAB_RUNDIR/runtime
# shellcheck source=Tests/lab/router.sh
. "$REPO/Tests/lab/router.sh"
# What came through the tunnel reaches the echo from the router's WireGuard address.
LAB_VPN_PREFIX=$LAB_WG_PREFIX
FEATURE_TUNNEL_IF=$LAB_WG_ROUTER_IF
WG_IF=$LAB_WG_ROUTER_IF

# vpnsup over WireGuard: the router.sh environment with a wg-quick CONFIG and a TUNNEL_IF of the
# lab's own (UAPI sockets are shared by every namespace).
wg_env() { # [CONFIG FILE NAME]
    VPNSUP_CONFIG=$LAB_RUNDIR/config/${1:-client.conf} vpnsup_env | grep -v '^CREDENTIALS_FILE='
    echo TUNNEL_IF="$WG_IF"
}
start_wg_vpnsup() {
    local vars
    mapfile -t vars < <(wg_env "$@")
    lab_daemon_start vpnsup router env -i "${vars[@]}" "$VPNSUP" run
}
wg_pid() { lab_wg_router_pid 2>/dev/null || true; }
wg_link_present() { lab_exec router ip link show dev "$WG_IF" >/dev/null 2>&1; }
reason_has() { status_json | jq -r '.reason // ""' | grep -qF -- "$1"; }
evidence_is() { [ "$(status_json | jq -r '.wireGuard.evidence // ""')" = "$1" ]; }

# ---- the lab ----

lab_up
lab_wg_setup
tap_note "lab up in $(lab_ms_to_s "$LAB_UP_MS") s (prefix $LAB_PREFIX, vpnsup $VPNSUP, link $WG_IF)"
feature_setup
lab_wg_use_transport
lab_capture_start # from before vpnsup starts: its start-up window is watched too
start_wg_vpnsup
lab_wait_for 5 lab_daemon_pid vpnsup >/dev/null || true
VPNSUP_PID=$(lab_daemon_pid vpnsup || echo none)
feature_router_ipv6

# 1. No server yet: the handshake never comes, nothing gets out.
tap_check "status answers before the server runs" lab_wait_for 10 status_answers
tap_check "no server: status is not TunnelUp" state_is_not TunnelUp
tap_check "vpnsup puts $LAB_LAN_GW_CIDR on eth1" lab_wait_for 10 gateway_on_lan
tap_check "no server: wireguard-go runs under vpnsup, its link $WG_IF exists" lab_wait_for 10 wg_link_present
tap_check "no server: the client cannot reach the internet" client_blocked

# 2. Server up: the first handshake makes it TunnelUp; the client gets out through the tunnel.
t0=$(lab_now_ms)
lab_wg_server_start
if lab_wait_for "$TUNNEL_UP_TIMEOUT" state_is TunnelUp; then
    took=$(seconds_since "$t0")
    tap_note "figure: WireGuard server start -> TunnelUp: $took s"
    tap_ok "TunnelUp after the server starts ($took s)"
else
    tap_not_ok "TunnelUp after the server starts (not within $TUNNEL_UP_TIMEOUT s; state $(vpnsup_state || echo '?'))"
fi
vpnsup_health() { timeout 5 ip netns exec "$(lab_ns router)" "$VPNSUP" health --runtime-dir "$RUNTIME" >/dev/null 2>&1; }
tap_check "TunnelUp: vpnsup health exits 0" vpnsup_health
seen=$(client_fetch 5 || true)
tap_check "the client reaches the echo, which sees the WireGuard address ($seen), not $LAB_CLIENT_IP" via_tunnel "$seen"
# The private key travels over the UAPI socket only: in no argv or environment, no runtime file.
key_nowhere() {
    local private hex pid
    private=$(_lab_wg_value PrivateKey "$LAB_RUNDIR/config/client.conf")
    hex=$(base64 -d <<<"$private" | od -An -tx1 | tr -d ' \n')
    [ -n "$private" ] && [ ${#hex} -eq 64 ] && [ -n "$(wg_pid)" ] || return 1
    for pid in "$VPNSUP_PID" "$(wg_pid)"; do
        ! grep -qaF -e "$private" -e "$hex" "/proc/$pid/cmdline" "/proc/$pid/environ" || return 1
    done
    ! grep -rqaF -e "$private" -e "$hex" "$RUNTIME" "$LAB_RUNDIR/logs" 2>/dev/null
}
tap_check "the private key is in no argv or environment (vpnsup, wireguard-go), no runtime file, no log" key_nowhere
json=$(status_json || true)
status_complete() {
    jq -e --arg name "$LAB_VPN_NAME" --arg ip "$LAB_VPN_SERVER_IP" --arg port "$LAB_WG_PORT" --arg wg "$WG_IF" '
        .resolvedRemotes[$name] == [$ip] and .endpoints == ["\($ip):\($port)/udp"]
        and .wireGuard.interface == $wg and .wireGuard.plane == "userspace" and .wireGuard.evidence == "up"
        and (.wireGuard.peers | length) == 1 and .wireGuard.peers[0].endpoint == "\($ip):\($port)"
        and .wireGuard.peers[0].latestHandshakeAgeSeconds < 180
        and .wireGuard.peers[0].bytesIn > 0 and .wireGuard.peers[0].bytesOut > 0
        and .bytesIn > 0 and .bytesOut > 0' <<<"$json" >/dev/null
}
tap_check "status: $LAB_VPN_NAME pinned as $LAB_VPN_SERVER_IP, the userspace plane, handshakes up, the peer's endpoint, handshake age and transfer" \
    status_complete
tap_last_failed && tap_note "status: $(jq -c '{resolvedRemotes, endpoints, wireGuard, bytesIn, bytesOut}' <<<"$json" 2>/dev/null || echo "$json")"
tap_check "the log names the file's PostUp as ignored (never run)" \
    grep -q 'has PostUp, which is ignored' "$LAB_RUNDIR/logs/vpnsup.log"
router_via_tunnel() {
    local seen
    seen=$(lab_exec router curl -sS --max-time 3 "$LAB_ECHO_URL" 2>>"$LAB_RUNDIR/logs/client.err") && via_tunnel "$seen"
}
tap_check "the router's own traffic goes through the tunnel too (the echo sees the WireGuard address)" router_via_tunnel
tap_check "the transport is marked: wireguard-go's fwmark is vpnsup's" \
    bash -c '[ "$(ip netns exec "$1" wg show "$2" fwmark)" = "$3" ]' _ "$(lab_ns router)" "$WG_IF" "$LAB_WG_MARK"

# 2b. Tunnel up: DNS enforced for the client and the router, port forwards from the VPN side, no
# IPv6, SYNs into the tunnel clamped, the router's own addresses closed to the LAN.
t0=$(lab_now_ms)
feature_checks
tap_note "figure: DNS, port-forward, IPv6 and MSS checks: $(seconds_since "$t0") s"

# 3. Server gone: the DNS probe finds the tunnel dead (handshakes are read only as often as the
# evidence could change), Degraded, nothing gets out.
t0=$(lab_now_ms)
lab_wg_server_stop
if lab_wait_for "$OUTAGE_TIMEOUT" state_is Degraded; then
    took=$(seconds_since "$t0")
    tap_note "figure: WireGuard server stop -> Degraded: $took s"
    tap_ok "server gone: Degraded ($took s)"
else
    tap_not_ok "server gone: Degraded (state $(vpnsup_state || echo '?') after $OUTAGE_TIMEOUT s)"
fi
tap_check "server gone: the client cannot reach the internet" client_blocked
tap_check "server gone: no ping out either" ping_blocked

# 4. Server back: TunnelUp, same vpnsup.
t0=$(lab_now_ms)
lab_wg_server_start
if lab_wait_for "$RECOVER_TIMEOUT" client_via_tunnel && lab_wait_for 10 state_is TunnelUp; then
    took=$(seconds_since "$t0")
    tap_note "figure: WireGuard server back -> TunnelUp and client traffic through the tunnel: $took s"
    tap_ok "server back: TunnelUp, traffic through the tunnel ($took s)"
else
    tap_not_ok "server back: TunnelUp, traffic through the tunnel (state $(vpnsup_state || echo '?'))"
fi

# 4b. wireguard-go SIGKILLed five times in a row: vpnsup respawns it (its socket left stale is
# claimed again), traffic flows again, the same vpnsup throughout, no zombie.
recovered=0
slowest=0
for round in 1 2 3 4 5; do
    victim=$(wg_pid)
    [ -n "$victim" ] || break
    t0=$(lab_now_ms)
    lab_wg_kill_router || break
    new_wg_carries() { local p; p=$(wg_pid); [ -n "$p" ] && [ "$p" != "$victim" ] && client_via_tunnel; }
    lab_wait_for "$RECOVER_TIMEOUT" new_wg_carries || break
    took=$(($(lab_now_ms) - t0))
    [ "$took" -le "$slowest" ] || slowest=$took
    recovered=$round
done
tap_note "figure: wireguard-go SIGKILL -> client traffic through the tunnel again: slowest of $recovered rounds $(lab_ms_to_s "$slowest") s"
tap_check "wireguard-go SIGKILLed 5 times: recovered every time (recovered $recovered)" test "$recovered" -eq 5
tap_check "after 5 kills: the same vpnsup process (pid $VPNSUP_PID)" test "$(lab_daemon_pid vpnsup || echo gone)" = "$VPNSUP_PID"
tap_check "after 5 kills: the child scan sees vpnsup's wireguard-go" test -n "$(children_of_vpnsup "$VPNSUP_PID")"
tap_last_failed && tap_note "wireguard-go $(wg_pid): $(grep PPid /proc/$(wg_pid)/status)"
tap_check "after 5 kills: no zombie child of vpnsup" test -z "$(zombies_of_vpnsup "$VPNSUP_PID")"
tap_check "after 5 kills: TunnelUp" lab_wait_for 10 state_is TunnelUp

# 4c. An outside `nft flush ruleset` while the client floods the ISP's WAN address: vpnsup
# commits its table again; policy routing keeps LAN packets off the WAN meanwhile.
lan_sourced_on_wan() {
    tcpdump -nn -r "$(cat "$LAB_RUNDIR/capture/current")" "ip src net $LAB_LAN_NET" 2>/dev/null | wc -l | tr -d ' '
}
policy_routes() {
    local routes
    routes=$(lab_exec router ip -4 route show table 30320)
    grep -q "^default dev $WG_IF" <<<"$routes" && grep -q '^unreachable default' <<<"$routes"
}
tap_check "policy routing: table 30320 holds default dev $WG_IF and unreachable default" policy_routes
router_rules() {
    local rules
    rules=$(lab_exec router ip -4 rule show)
    grep -q "^100:.*iif eth1 lookup 30320" <<<"$rules" &&
        grep -q "^101:.*lookup main suppress_prefixlength 0" <<<"$rules" &&
        grep -q "^102:.*not from all fwmark $LAB_WG_MARK lookup 30320" <<<"$rules"
}
tap_check "policy routing: the LAN by table 30320 alone, the router's own unmarked traffic by it after main's non-default routes" router_rules
tap_last_failed && tap_note "rules: $(lab_exec router ip -4 rule show | tr '\n' ';')"
lan_before=$(lan_sourced_on_wan)
lab_daemon_start drift-flood client ping -n -q -i 0.002 -c 300 "$LAB_ISP_WAN_IP"
sleep 0.1
repair_ms=$(lab_exec router bash -c 't0=${EPOCHREALTIME/./}; nft flush ruleset
    until nft list table inet vpnsup >/dev/null 2>&1; do ((${EPOCHREALTIME/./} - t0 < 5000000)) || exit 1; done
    echo $(((${EPOCHREALTIME/./} - t0) / 1000))') || repair_ms=""
tap_check "outside nft flush ruleset: vpnsup commits table inet vpnsup again (${repair_ms:-not within 5 s} ms)" test -n "$repair_ms"
flood_done() { ! lab_daemon_pid drift-flood >/dev/null || grep -q 'packets transmitted' "$LAB_RUNDIR/logs/drift-flood.log"; }
lab_wait_for 5 flood_done || true
lab_daemon_stop drift-flood INT
sleep 0.2
lan_leaked=$(( $(lan_sourced_on_wan) - lan_before ))
tap_check "across the flush: no LAN-source packet on the WAN ($lan_leaked)" test "$lan_leaked" -eq 0
up_table_back() {
    local table
    table=$(lab_exec router nft list table inet vpnsup 2>/dev/null) && grep -q "oifname \"$WG_IF\" masquerade" <<<"$table"
}
tap_check "after the repair: the up ruleset names $WG_IF" up_table_back
tap_check "after the repair: the client's traffic flows through the tunnel" lab_wait_for 10 client_via_tunnel

# 5. vpnsup and wireguard-go SIGKILLed: the committed ruleset and policy routing still hold.
victims=$(echo "$(lab_daemon_pid vpnsup || true) $(wg_pid)" | xargs)
tap_note "SIGKILL to vpnsup and wireguard-go: ${victims:-nothing alive}"
for pid in $victims; do kill -KILL "$pid" 2>/dev/null || true; done
none_left() { ! lab_daemon_pid vpnsup >/dev/null && [ -z "$(wg_pid)" ]; }
lab_wait_for 5 none_left || tap_note "vpnsup/wireguard-go still alive after SIGKILL"
tap_check "after SIGKILL of vpnsup and wireguard-go: HTTP from the client does not get out" client_blocked
tap_check "after SIGKILL of vpnsup and wireguard-go: ping from the client does not get out" ping_blocked
tap_check "after SIGKILL of vpnsup and wireguard-go: DNS from the client does not get out" dns_blocked

# 6. A new vpnsup over the killed one's ruleset and stale socket (the endpoint as an address this
# time): TunnelUp; SIGTERM then stops wireguard-go and exits 0, the lockdown stays.
mapfile -t vars < <(wg_env client-ip.conf)
(exec ip netns exec "$(lab_ns router)" env -i "${vars[@]}" "$VPNSUP" run >>"$LAB_RUNDIR/logs/vpnsup-term.log" 2>&1 </dev/null) &
term_pid=$!
t0=$(lab_now_ms)
if lab_wait_for "$TUNNEL_UP_TIMEOUT" client_via_tunnel; then
    took=$(seconds_since "$t0")
    tap_note "figure: vpnsup start over a killed one's ruleset -> client traffic through the tunnel: $took s"
    tap_ok "a new vpnsup recovers from the killed one's ruleset and socket ($took s)"
else
    tap_not_ok "a new vpnsup recovers from the killed one's ruleset and socket (not within $TUNNEL_UP_TIMEOUT s)"
fi
t0=$(lab_now_ms)
kill -TERM "$term_pid"
rc=0
wait "$term_pid" || rc=$?
took=$(seconds_since "$t0")
tap_note "figure: SIGTERM -> vpnsup exited: $took s"
tap_check "SIGTERM: vpnsup exits 0 (got $rc, after $took s)" test "$rc" -eq 0
tap_check "SIGTERM: no wireguard-go is left, its link $WG_IF is gone" bash -c '[ -z "$1" ] && ! ip netns exec "$2" ip link show dev "$3" >/dev/null 2>&1' \
    _ "$(wg_pid)" "$(lab_ns router)" "$WG_IF"
tap_check "after SIGTERM: HTTP from the client does not get out" client_blocked
lockdown_after_term() {
    lab_exec router nft list table inet vpnsup >"$LAB_RUNDIR/logs/term.nft" 2>&1 &&
        grep -q 'hook forward priority filter; policy drop;' "$LAB_RUNDIR/logs/term.nft" &&
        ! grep -q "$WG_IF" "$LAB_RUNDIR/logs/term.nft"
}
tap_check "after SIGTERM: the lockdown table is what stays committed" lockdown_after_term
tap_last_failed && tap_note_file 20 "$LAB_RUNDIR/logs/term.nft"

# 7. A server key the server does not hold: the handshake never completes, vpnsup never comes up,
# says why, and sets the peer again; nothing gets out. SIGHUP with the right file then reaches
# the running wireguard-go over UAPI (no restart): TunnelUp.
reload_file=$LAB_RUNDIR/config/client-reload.conf
(umask 077 && cp "$LAB_RUNDIR/config/client-wrongkey.conf" "$reload_file")
mapfile -t vars < <(wg_env client-reload.conf)
(exec ip netns exec "$(lab_ns router)" env -i "${vars[@]}" "$VPNSUP" run >>"$LAB_RUNDIR/logs/vpnsup-wrong.log" 2>&1 </dev/null) &
wrong_pid=$!
t0=$(lab_now_ms)
ever_up=no
watch_until=$(($(lab_now_ms) + WRONG_KEY_WATCH * 1000))
while [ "$(lab_now_ms)" -lt "$watch_until" ]; do
    state_is TunnelUp && ever_up=yes
    sleep 0.5
done
tap_check "wrong server key: never TunnelUp in $WRONG_KEY_WATCH s (state $(vpnsup_state || echo '?'))" test "$ever_up" = no
reason=$(status_json | jq -r '.reason // ""' 2>/dev/null || true)
tap_check "wrong server key: status says why ($reason)" grep -q 'no handshake with peer .* (wrong key, server down or transport blocked?)' <<<"$reason"
tap_check "wrong server key: the handshake evidence was found overdue" \
    grep -q "WireGuard handshakes: handshake overdue: no handshake" "$LAB_RUNDIR/logs/vpnsup-wrong.log"
tap_check "wrong server key: the peer was set again (reconnects >= 1)" bash -c '[ "$1" -ge 1 ]' _ "$(status_json | jq -r '.reconnects // 0')"
tap_check "wrong server key: the client cannot get out" client_blocked
wrong_wg=$(wg_pid)
(umask 077 && cp "$LAB_RUNDIR/config/client-ip.conf" "$reload_file")
t0=$(lab_now_ms)
kill -HUP "$wrong_pid"
if lab_wait_for 20 state_is TunnelUp && lab_wait_for 10 client_via_tunnel; then
    took=$(seconds_since "$t0")
    tap_note "figure: SIGHUP with the right server key -> TunnelUp and client traffic: $took s"
    tap_ok "SIGHUP with the right server key: TunnelUp, traffic through the tunnel ($took s)"
else
    tap_not_ok "SIGHUP with the right server key: TunnelUp (state $(vpnsup_state || echo '?') after 20 s)"
fi
tap_check "SIGHUP: the same wireguard-go (pid ${wrong_wg:-none}), reconfigured over UAPI" test -n "$wrong_wg" -a "$(wg_pid)" = "$wrong_wg"
tap_check "SIGHUP: status counts the reload" bash -c '[ "$1" = true ]' _ "$(status_json | jq -r '.lastReload.accepted // false')"
kill -TERM "$wrong_pid" 2>/dev/null || true
wait "$wrong_pid" 2>/dev/null || true

# 8. Over the whole run: nothing but WireGuard's marked transport to the pinned endpoint (and
# vpnsup's own resolution of its name) on the WAN, only tunnel sources at the echo.
if leaks=$(lab_leaks); then
    tap_check "zero leaked packets on the WAN ($leaks of $(lab_capture_count) captured are not WireGuard transport)" \
        test "$leaks" -eq 0
    [ "$leaks" -eq 0 ] || tap_note_file 20 "$LAB_RUNDIR/capture/leaks.txt"
else
    tap_not_ok "zero leaked packets on the WAN (the capture could not be read)"
fi
feature_capture_checks
only_vpnsup_queries() {
    local other
    other=$(lab_resolver_queries | grep -vxF "A $LAB_VPN_NAME $LAB_ROUTER_WAN_IP" || true)
    [ -n "$(lab_resolver_queries)" ] && [ -z "$other" ]
}
tap_check "the WAN resolver was asked only for the A records of $LAB_VPN_NAME ($(lab_resolver_queries | sort | uniq -c | xargs))" \
    only_vpnsup_queries
sources=$(lab_echo_sources | tr '\n' ' ')
only_tunnel_sources() {
    local src
    [ -n "$sources" ] || return 1
    for src in $sources; do via_tunnel "$src" || return 1; done
}
tap_check "the echo saw tunnel sources only ($sources)" only_tunnel_sources
