#!/usr/bin/env bash
# Tests/lab/e2e.sh — end-to-end test of vpnsup in the namespace lab (lab/lab.sh): a LAN client
# behind vpnsup reaches the internet only through the tunnel, across a server outage, after
# vpnsup and OpenVPN are SIGKILLed, and never leaks a packet onto the WAN. With the tunnel up it
# also checks DNS enforcement, port forwards, IPv6 and the MSS clamp (Tests/lab/features.sh), and
# configuration files as providers publish them (Tests/lab/provider-config.sh).
#
#   VPNSUP=path/to/vpnsup bash Tests/lab/e2e.sh     (default .build/debug/vpnsup; needs root)
#   LAB_KEEP=1 keeps the run directory (logs, captures) even when everything passed.
# Prints ok/not ok lines, "# " notes with timings, and "lab: P passed, F failed"; exits
# non-zero on any failure. Everything is torn down by the EXIT trap.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=lab/lab.sh
. "$REPO/lab/lab.sh"
# shellcheck source=Tests/lab/tap.sh
. "$REPO/Tests/lab/tap.sh"
# shellcheck source=Tests/lab/harness.sh
. "$REPO/Tests/lab/harness.sh"
# shellcheck source=Tests/lab/features.sh
. "$REPO/Tests/lab/features.sh"

VPNSUP=${VPNSUP:-.build/debug/vpnsup}
[[ $VPNSUP == /* ]] || VPNSUP=$REPO/$VPNSUP

TUNNEL_UP_TIMEOUT=30 # server start -> TunnelUp
OUTAGE_TIMEOUT=20    # server stop -> vpnsup leaves TunnelUp (OpenVPN's ping-restart is 5 s)
RECOVER_TIMEOUT=40   # server back -> traffic flows again

trap lab_test_finish EXIT
trap 'exit 130' INT TERM

lab_init
lab_test_preflight
RUNTIME=$LAB_RUNDIR/runtime
# shellcheck source=Tests/lab/router.sh
. "$REPO/Tests/lab/router.sh"
# shellcheck source=Tests/lab/provider-config.sh
. "$REPO/Tests/lab/provider-config.sh"

# ---- the lab ----

lab_up
tap_note "lab up in $(lab_ms_to_s "$LAB_UP_MS") s (prefix $LAB_PREFIX, vpnsup $VPNSUP)"
feature_setup # rogue resolver, port-forward targets, IPv6 (not yet the router's), LAN MTU
lab_capture_start # from before vpnsup starts: its start-up window is watched too
start_vpnsup
# `ip netns exec` enters the namespace a moment after the fork: wait for it before recording the pid.
lab_wait_for 5 lab_daemon_pid vpnsup >/dev/null || true
VPNSUP_PID=$(lab_daemon_pid vpnsup || echo none)
feature_router_ipv6 # once the lockdown is committed: the router's own IPv6 chatter is then dropped

# 1. No VPN server yet: nothing gets out, status answers and is not TunnelUp.
if lab_wait_for 10 status_answers; then
    json=$(status_json || true)
    tap_note "state before the server runs: $(jq -c '{state, since}' <<<"$json" 2>/dev/null || echo "$json")"
    has_fields() { jq -e 'has("state") and has("since")' <<<"$json" >/dev/null 2>&1; }
    tap_check "status --json answers with state and since" has_fields
    tap_check "status is not TunnelUp while no server runs" state_is_not TunnelUp
else
    tap_not_ok "status --json answers with state and since (none within 10 s)"
    tap_not_ok "status is not TunnelUp while no server runs"
fi
vpnsup_health() { timeout 5 ip netns exec "$(lab_ns router)" "$VPNSUP" health --runtime-dir "$RUNTIME" >"$LAB_RUNDIR/logs/health.out" 2>&1; }
unhealthy_saying_why() { ! vpnsup_health && grep -q '^unhealthy: ' "$LAB_RUNDIR/logs/health.out"; }
tap_check "no server: vpnsup health exits non-zero and says why" unhealthy_saying_why
tap_check "vpnsup puts $LAB_LAN_GW_CIDR on eth1" lab_wait_for 10 gateway_on_lan
tap_check "no server: the client cannot reach the internet" client_blocked

# 2. Server up: TunnelUp, the client gets out through the tunnel.
t0=$(lab_now_ms)
lab_vpn_server_start
if lab_wait_for "$TUNNEL_UP_TIMEOUT" state_is TunnelUp; then
    took=$(seconds_since "$t0")
    tap_note "figure: server start -> TunnelUp: $took s"
    tap_ok "TunnelUp after the server starts ($took s)"
else
    tap_not_ok "TunnelUp after the server starts (not within $TUNNEL_UP_TIMEOUT s; state $(vpnsup_state || echo '?'))"
fi
tap_check "TunnelUp: vpnsup health exits 0" vpnsup_health
# Credentials travel over the management socket only: OpenVPN authenticated, yet the password is
# in no argv or environment of vpnsup or OpenVPN, and in no file of the runtime directory.
password_nowhere() {
    local password pid
    password=$(sed -n 2p "$LAB_RUNDIR/credentials")
    [ -n "$password" ] && [ -n "$(router_openvpns)" ] || return 1
    for pid in "$VPNSUP_PID" $(router_openvpns); do
        ! grep -qaF -- "$password" "/proc/$pid/cmdline" "/proc/$pid/environ" || return 1
    done
    ! grep -rqaF -- "$password" "$RUNTIME" 2>/dev/null
}
tap_check "the password is in no argv or environment (vpnsup, OpenVPN) and no runtime file" password_nowhere
seen=$(client_fetch 5 || true)
tap_check "the client reaches the echo, which sees the tunnel address ($seen), not $LAB_CLIENT_IP" \
    via_tunnel "$seen"
# The traffic in status is tun0's, read from the kernel at the request (no OpenVPN report timer).
tunnel_traffic() {
    local json kernel
    json=$(status_json) && kernel=$(lab_exec router cat /sys/class/net/tun0/statistics/tx_bytes) &&
        jq -e --argjson kernel "$kernel" '.bytesIn > 0 and .bytesOut > 0 and .bytesOut <= $kernel' <<<"$json" >/dev/null
}
tap_check "status shows tun0's traffic as the kernel counts it" tunnel_traffic

# 2a. The remote is a host name: vpnsup resolved it before OpenVPN started, pinned its address,
# and answered OpenVPN's >REMOTE query with that address (OpenVPN's own DNS would be dropped).
json=$(status_json || true)
hostname_pinned() {
    jq -e --arg name "$LAB_VPN_NAME" --arg ip "$LAB_VPN_SERVER_IP" --arg port "$LAB_VPN_PORT" \
        '.resolvedRemotes[$name] == [$ip] and .endpoints == ["\($ip):\($port)/udp"] and .remote == "\($ip):\($port)"' \
        <<<"$json" >/dev/null
}
tap_check "a hostname remote connects: $LAB_VPN_NAME pinned as $LAB_VPN_SERVER_IP, OpenVPN connected there" hostname_pinned
tap_last_failed && tap_note "status: $(jq -c '{resolvedRemotes, endpoints, remote}' <<<"$json" 2>/dev/null || echo "$json")"
tap_check "OpenVPN got 'remote MOD $LAB_VPN_SERVER_IP $LAB_VPN_PORT' for $LAB_VPN_NAME" \
    grep -qF "MANAGEMENT: CMD 'remote MOD $LAB_VPN_SERVER_IP $LAB_VPN_PORT'" "$LAB_RUNDIR/logs/vpnsup.log"
resolved=$(grep -o 'resolved [0-9]* of [0-9]* remote host names in [0-9.]* ms' "$LAB_RUNDIR/logs/vpnsup.log" | head -n 1)
tap_note "figure: ${resolved:-no resolution logged}"

# 2b. Tunnel up: DNS enforced for the client and the router, port forwards from the VPN side,
# IPv6 goes nowhere, SYNs into the tunnel clamped.
t0=$(lab_now_ms)
feature_checks
tap_note "figure: DNS, port-forward, IPv6 and MSS checks: $(seconds_since "$t0") s"

# 3. Server gone: vpnsup leaves TunnelUp and nothing gets out.
was_up=no
state_is TunnelUp && was_up=yes
t0=$(lab_now_ms)
lab_vpn_server_stop
if [ "$was_up" = no ]; then
    tap_not_ok "status leaves TunnelUp when the server goes away (it was not TunnelUp)"
elif lab_wait_for "$OUTAGE_TIMEOUT" state_is_not TunnelUp; then
    took=$(seconds_since "$t0")
    tap_note "figure: server stop -> left TunnelUp: $took s (now $(vpnsup_state || echo '?'))"
    tap_ok "status leaves TunnelUp when the server goes away ($took s)"
else
    tap_not_ok "status leaves TunnelUp when the server goes away (not within $OUTAGE_TIMEOUT s)"
fi
tap_check "server down: the client cannot reach the internet" client_blocked

# 4. Server back: traffic flows again, same vpnsup process.
t0=$(lab_now_ms)
lab_vpn_server_start
if lab_wait_for "$RECOVER_TIMEOUT" client_via_tunnel; then
    took=$(seconds_since "$t0")
    tap_note "figure: server back -> client traffic through the tunnel: $took s"
    tap_ok "server back: traffic flows through the tunnel again ($took s)"
else
    tap_not_ok "server back: traffic flows through the tunnel again (not within $RECOVER_TIMEOUT s)"
fi
same_process_up() {
    [ "$(lab_daemon_pid vpnsup || echo gone)" = "$VPNSUP_PID" ] && lab_wait_for 10 state_is TunnelUp
}
tap_check "server back: same vpnsup process (pid $VPNSUP_PID), status TunnelUp" same_process_up

# 4b. Drift repair: `nft flush ruleset` from outside while the client keeps sending. vpnsup hears
# it on the nftables notification group (it does not poll) and commits its table again; the
# leak capture (step 7) covers the window with no rules. Only this test polls, with nft list.
# Meanwhile the client floods the ISP's WAN address, which the router's main table reaches by
# eth0: only vpnsup's policy routing (iif eth1 -> its own table: tun0 or unreachable) keeps those
# packets off the WAN while no ruleset stands. Counted from the running capture.
lan_sourced_on_wan() {
    tcpdump -nn -r "$(cat "$LAB_RUNDIR/capture/current")" "ip src net $LAB_LAN_NET" 2>/dev/null | wc -l | tr -d ' '
}
policy_rule() { grep -q "^100:.*iif eth1 lookup 30320" <<<"$(lab_exec router ip -4 rule show)"; }
tap_check "policy routing: rule iif eth1 lookup 30320 (priority 100) in the router" policy_rule
policy_routes() {
    local routes
    routes=$(lab_exec router ip -4 route show table 30320)
    grep -q '^default dev tun0' <<<"$routes" && grep -q '^unreachable default' <<<"$routes"
}
tap_check "policy routing: table 30320 holds default dev tun0 and unreachable default" policy_routes
lab_daemon_start drift-ping client ping -n -i 0.05 "$LAB_ECHO_IP"
lab_daemon_start drift-http client bash -c "while :; do curl -s --max-time 1 -o /dev/null $LAB_ECHO_URL; sleep 0.1; done"
sleep 1
lan_before=$(lan_sourced_on_wan)
lab_daemon_start drift-flood client ping -n -q -i 0.002 -c 300 "$LAB_ISP_WAN_IP"
sleep 0.1
repair_ms=$(lab_exec router bash -c 't0=${EPOCHREALTIME/./}; nft flush ruleset
    until nft list table inet vpnsup >/dev/null 2>&1; do ((${EPOCHREALTIME/./} - t0 < 5000000)) || exit 1; done
    echo $(((${EPOCHREALTIME/./} - t0) / 1000))') || repair_ms=""
if [ -n "$repair_ms" ]; then
    tap_note "figure: drift repair: outside flush -> table re-committed: $repair_ms ms (nft list polled by the test)"
    tap_ok "outside nft flush ruleset: vpnsup commits table inet vpnsup again ($repair_ms ms)"
else
    tap_not_ok "outside nft flush ruleset: vpnsup commits table inet vpnsup again (not within 5 s)"
fi
repairs_counted() { [ "$(status_json | jq -r '.firewallRepairs // 0')" -ge 1 ]; }
tap_check "status counts the repair (firewallRepairs >= 1)" lab_wait_for 5 repairs_counted
tap_note "lastRepair: $(status_json | jq -c '.lastRepair' 2>/dev/null || echo '?')"
# The listing is read whole before grep looks at it: `nft ... | grep -q` under pipefail fails
# whenever grep's early exit gives nft a SIGPIPE (more likely the longer the table).
up_table_back() {
    local table
    table=$(lab_exec router nft list table inet vpnsup 2>/dev/null) && grep -q 'oifname "tun0" masquerade' <<<"$table"
}
tap_check "the table is the up ruleset again, state $(vpnsup_state || echo '?')" up_table_back
tap_check "after the repair: the client's traffic flows through the tunnel" lab_wait_for 10 client_via_tunnel
lab_daemon_stop drift-http
lab_daemon_stop drift-ping INT
tap_note "client ping across the flush: $(grep -h 'packets transmitted' "$LAB_RUNDIR/logs/drift-ping.log" || echo '?')"
flood_done() { ! lab_daemon_pid drift-flood >/dev/null || grep -q 'packets transmitted' "$LAB_RUNDIR/logs/drift-flood.log"; }
lab_wait_for 5 flood_done || true
lab_daemon_stop drift-flood INT
sleep 0.2  # the capture writes each packet at once (-U); let the last ones land
lan_leaked=$(( $(lan_sourced_on_wan) - lan_before ))
tap_note "client flood of $LAB_ISP_WAN_IP across the flush: $(grep -h 'packets transmitted' "$LAB_RUNDIR/logs/drift-flood.log" || echo '?')"
tap_note "figure: drift repair: LAN-source packets on the WAN during the flush: $lan_leaked"
tap_check "across the flush: no LAN-source packet on the WAN ($lan_leaked; policy routing holds)" test "$lan_leaked" -eq 0

# 4c. OpenVPN SIGKILLed ten times in a row: vpnsup respawns it every time, traffic flows again,
# the same vpnsup runs throughout and no zombie is left behind.
recovered=0
slowest=0
for round in 1 2 3 4 5 6 7 8 9 10; do
    victim=$(router_openvpns | head -n 1)
    [ -n "$victim" ] || break
    t0=$(lab_now_ms)
    kill -KILL "$victim"
    # Back once a different OpenVPN carries the client's traffic.
    new_openvpn_carries() { local p; p=$(router_openvpns | head -n 1); [ -n "$p" ] && [ "$p" != "$victim" ] && client_via_tunnel; }
    lab_wait_for "$RECOVER_TIMEOUT" new_openvpn_carries || break
    took=$(($(lab_now_ms) - t0))
    [ "$took" -le "$slowest" ] || slowest=$took
    recovered=$round
done
tap_note "figure: OpenVPN SIGKILL -> client traffic through the tunnel again: slowest of $recovered rounds $(lab_ms_to_s "$slowest") s"
tap_check "OpenVPN SIGKILLed 10 times: recovered every time (recovered $recovered)" test "$recovered" -eq 10
tap_check "after 10 OpenVPN kills: the same vpnsup process (pid $VPNSUP_PID)" \
    test "$(lab_daemon_pid vpnsup || echo gone)" = "$VPNSUP_PID"
# The scan must see vpnsup's live child (OpenVPN), or finding no zombie would prove nothing.
tap_check "after 10 OpenVPN kills: the child scan sees vpnsup's OpenVPN" test -n "$(children_of_vpnsup "$VPNSUP_PID")"
tap_check "after 10 OpenVPN kills: no zombie child of vpnsup" test -z "$(zombies_of_vpnsup "$VPNSUP_PID")"

# 4d. The tunnel silently black-holed: the server drops everything its tun carries while OpenVPN
# and its keepalives live on. Only the DNS probe can tell: Degraded within the probe budget
# (3 failures at 2 s), a reconnect over management, TunnelUp once the black hole is gone.
blackhole_on() {
    lab_exec isp nft -f - <<'NFTEOF'
table ip lab_blackhole {
    chain forward {
        type filter hook forward priority -10; policy accept;
        iifname "tun*" drop
        oifname "tun*" drop
    }
}
NFTEOF
}
blackhole_off() { lab_exec isp nft delete table ip lab_blackhole 2>/dev/null || true; }
reconnects() { status_json | jq -r '.reconnects // 0'; }
reconnects_before=$(reconnects || echo 0)
t0=$(lab_now_ms)
blackhole_on
if lab_wait_for 20 state_is Degraded; then
    took=$(seconds_since "$t0")
    tap_note "figure: tunnel black-holed -> Degraded: $took s (probe budget 3 x 2 s + 1 s timeout)"
    tap_ok "black-holed tunnel: Degraded within the probe budget ($took s)"
else
    tap_not_ok "black-holed tunnel: Degraded within the probe budget (state $(vpnsup_state || echo '?') after 20 s)"
fi
probe_reason() { status_json | jq -r '.reason // ""' | grep -q 'DNS probe failed'; }
tap_check "black-holed tunnel: status says the DNS probe failed" probe_reason
reconnected() { [ "$(reconnects || echo 0)" -gt "$reconnects_before" ]; }
tap_check "black-holed tunnel: vpnsup asks OpenVPN to reconnect (signal SIGUSR1)" lab_wait_for 5 reconnected
tap_check "black-holed tunnel: OpenVPN got the reconnect" \
    grep -qF "MANAGEMENT: CMD 'signal SIGUSR1'" "$LAB_RUNDIR/logs/vpnsup.log"
tap_check "black-holed tunnel: the client cannot get out" client_blocked
t0=$(lab_now_ms)
blackhole_off
if lab_wait_for "$RECOVER_TIMEOUT" client_via_tunnel && lab_wait_for 10 state_is TunnelUp; then
    took=$(seconds_since "$t0")
    tap_note "figure: black hole removed -> TunnelUp and client traffic through the tunnel: $took s"
    tap_ok "black hole removed: TunnelUp, traffic through the tunnel ($took s)"
else
    tap_not_ok "black hole removed: TunnelUp, traffic through the tunnel (state $(vpnsup_state || echo '?'))"
fi

# 4e. WAN link down: the tunnel is treated as lost (Degraded) until the WAN returns.
t0=$(lab_now_ms)
lab_exec router ip link set eth0 down
if lab_wait_for 10 state_is Degraded; then
    tap_note "figure: WAN down -> Degraded: $(seconds_since "$t0") s"
    tap_ok "WAN down: Degraded"
else
    tap_not_ok "WAN down: Degraded (state $(vpnsup_state || echo '?'))"
fi
wan_reason() { status_json | jq -r '.reason // ""' | grep -q 'WAN link is down'; }
tap_check "WAN down: status says the WAN link is down" wan_reason
tap_check "WAN down: the client cannot get out" client_blocked
t0=$(lab_now_ms)
lab_exec router ip link set eth0 up
lab_exec router ip route replace default via "$LAB_ISP_WAN_IP" dev eth0 2>/dev/null || true
if lab_wait_for "$RECOVER_TIMEOUT" client_via_tunnel && lab_wait_for 10 state_is TunnelUp; then
    took=$(seconds_since "$t0")
    tap_note "figure: WAN back -> TunnelUp and client traffic through the tunnel: $took s"
    tap_ok "WAN back: TunnelUp, traffic through the tunnel ($took s)"
else
    tap_not_ok "WAN back: TunnelUp, traffic through the tunnel (state $(vpnsup_state || echo '?'))"
fi

# 4f. The LAN gateway address removed from outside: netlink reports it, vpnsup puts it back.
t0=$(lab_now_ms)
lab_exec router ip addr del "$LAB_LAN_GW_CIDR" dev eth1
if lab_wait_for 5 gateway_on_lan; then
    tap_note "figure: LAN gateway address removed -> put back: $(seconds_since "$t0") s"
    tap_ok "LAN gateway address removed from outside: put back"
else
    tap_not_ok "LAN gateway address removed from outside: put back (not within 5 s)"
fi
tap_check "after the address is back: the client's traffic flows through the tunnel" lab_wait_for 10 client_via_tunnel

# 4c. A root process that connects to the management socket before OpenVPN's respawn (it waits in
# the socket's one-slot backlog while OpenVPN holds the connection): when OpenVPN is killed, vpnsup
# accepts it, sees it is not the OpenVPN it started (SO_PEERCRED), and closes it before it gets a
# byte (no >HOLD, no >PASSWORD); the respawned OpenVPN connects and the tunnel comes back up.
lab_daemon_start rogue router /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
print("connected", flush=True)
s.settimeout(60)
got = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    print("closed after %d bytes" % len(got), flush=True)
except OSError as error:
    print("%s after %d bytes" % (error, len(got)), flush=True)
' "$RUNTIME/management.sock"
rogue_connected() { grep -q '^connected' "$LAB_RUNDIR/logs/rogue.log"; }
lab_wait_for 5 rogue_connected || tap_note "the rogue client did not connect: $(tail -n 2 "$LAB_RUNDIR/logs/rogue.log")"
rogue_pid=$(lab_daemon_pid rogue || echo gone)
openvpns=$(router_openvpns | xargs)
tap_note "SIGKILL to OpenVPN ($openvpns) with a rogue management client (pid $rogue_pid) queued"
for pid in $openvpns; do kill -KILL "$pid" 2>/dev/null || true; done
rogue_closed() { grep -q 'after [0-9]* bytes' "$LAB_RUNDIR/logs/rogue.log"; }
tap_check "a rogue management client queued before OpenVPN's respawn is closed" lab_wait_for 10 rogue_closed
tap_check "... having received nothing ($(grep -h 'after' "$LAB_RUNDIR/logs/rogue.log" || echo '?'))" \
    grep -q '^closed after 0 bytes' "$LAB_RUNDIR/logs/rogue.log"
rogue_refused_logged() { grep -q "management socket: refused a connection from pid $rogue_pid, uid 0" "$LAB_RUNDIR/logs/vpnsup.log"; }
tap_check "vpnsup logs the refusal, naming the rogue's pid" lab_wait_for 5 rogue_refused_logged
t0=$(lab_now_ms)
if lab_wait_for "$TUNNEL_UP_TIMEOUT" state_is TunnelUp && lab_wait_for 10 client_via_tunnel; then
    took=$(seconds_since "$t0")
    tap_note "figure: OpenVPN killed with a rogue client queued -> TunnelUp and client traffic: $took s"
    tap_ok "the respawned OpenVPN is served: TunnelUp, traffic through the tunnel ($took s)"
else
    tap_not_ok "the respawned OpenVPN is served: TunnelUp (state $(vpnsup_state || echo '?') after $TUNNEL_UP_TIMEOUT s)"
fi
lab_daemon_stop rogue

# 5. vpnsup and OpenVPN SIGKILLed: the committed ruleset still holds.
# vpnsup by its recorded pid, OpenVPN (its child, or whatever it spawned) by name in the router.
victims=$(echo "$(lab_daemon_pid vpnsup || true) $(router_openvpns)" | xargs)
tap_note "SIGKILL to vpnsup and openvpn: ${victims:-nothing alive}"
for pid in $victims; do kill -KILL "$pid" 2>/dev/null || true; done
none_left() { ! lab_daemon_pid vpnsup >/dev/null && [ -z "$(router_openvpns)" ]; }
lab_wait_for 5 none_left || tap_note "vpnsup/openvpn still alive after SIGKILL"
tap_check "after SIGKILL of vpnsup and OpenVPN: HTTP from the client does not get out" client_blocked
tap_check "after SIGKILL of vpnsup and OpenVPN: ping from the client does not get out" ping_blocked
tap_check "after SIGKILL of vpnsup and OpenVPN: DNS from the client does not get out" dns_blocked

# 6. A fresh vpnsup (after the SIGKILL, from the lockdown it left) comes back up; SIGTERM then
# stops OpenVPN and exits 0, leaving the lockdown committed.
mapfile -t vars < <(VPNSUP_CONFIG=$LAB_RUNDIR/config/client-ip.ovpn vpnsup_env) # a literal remote
(exec ip netns exec "$(lab_ns router)" env -i "${vars[@]}" "$VPNSUP" run >>"$LAB_RUNDIR/logs/vpnsup-term.log" 2>&1 </dev/null) &
term_pid=$!
t0=$(lab_now_ms)
if lab_wait_for "$TUNNEL_UP_TIMEOUT" client_via_tunnel; then
    took=$(seconds_since "$t0")
    tap_note "figure: vpnsup start over a killed one's ruleset -> client traffic through the tunnel: $took s"
    tap_ok "a new vpnsup recovers from the killed one's ruleset ($took s)"
else
    tap_not_ok "a new vpnsup recovers from the killed one's ruleset (not within $TUNNEL_UP_TIMEOUT s)"
fi
tap_check "literal remotes only ($LAB_VPN_SERVER_IP): OpenVPN is not made to ask for its remote (no one-second query)" \
    bash -c '! grep -qF -e ">REMOTE:" -e "asks for remote" "$1" && grep -qF "Initialization Sequence Completed" "$1"' _ "$LAB_RUNDIR/logs/vpnsup-term.log"
t0=$(lab_now_ms)
kill -TERM "$term_pid"
rc=0
wait "$term_pid" || rc=$?
took=$(seconds_since "$t0")
tap_note "figure: SIGTERM -> vpnsup exited: $took s"
tap_check "SIGTERM: vpnsup exits 0 (got $rc, after $took s)" test "$rc" -eq 0
tap_check "SIGTERM: no OpenVPN is left in the router" test -z "$(router_openvpns)"
tap_check "after SIGTERM: HTTP from the client does not get out" client_blocked
lockdown_after_term() {
    lab_exec router nft list table inet vpnsup >"$LAB_RUNDIR/logs/term.nft" 2>&1 &&
        grep -q 'hook forward priority filter; policy drop;' "$LAB_RUNDIR/logs/term.nft" &&
        ! grep -q 'tun0' "$LAB_RUNDIR/logs/term.nft"
}
tap_check "after SIGTERM: the lockdown table is what stays committed" lockdown_after_term
tap_last_failed && tap_note_file 20 "$LAB_RUNDIR/logs/term.nft"

# 6b. Wrong password: the server rejects it, vpnsup goes Killswitched and says why, and does not
# retry with the rejected credentials.
printf 'lab-user\nnot-the-password\n' >"$LAB_RUNDIR/credentials-wrong"
chmod 0600 "$LAB_RUNDIR/credentials-wrong"
mapfile -t vars < <(vpnsup_env | sed "s|^CREDENTIALS_FILE=.*|CREDENTIALS_FILE=$LAB_RUNDIR/credentials-wrong|")
(exec ip netns exec "$(lab_ns router)" env -i "${vars[@]}" "$VPNSUP" run >>"$LAB_RUNDIR/logs/vpnsup-wrong.log" 2>&1 </dev/null) &
wrong_pid=$!
t0=$(lab_now_ms)
if lab_wait_for 30 state_is Killswitched; then
    took=$(seconds_since "$t0")
    tap_note "figure: vpnsup start with a wrong password -> Killswitched: $took s"
    tap_ok "wrong password: Killswitched ($took s)"
else
    tap_not_ok "wrong password: Killswitched (state $(vpnsup_state || echo '?') after 30 s)"
fi
reason=$(status_json | jq -r '.reason // ""' 2>/dev/null || true)
tap_check "wrong password: status says why ($reason)" grep -q 'authentication failed' <<<"$reason"
tap_check "wrong password: the client cannot get out" client_blocked
sleep 2
tap_check "wrong password: no OpenVPN retries with the rejected credentials" test -z "$(router_openvpns)"
# SIGHUP with a broken credentials file: refused, the machine stays where it was.
printf 'lab-user\n' >"$LAB_RUNDIR/credentials-wrong"
kill -HUP "$wrong_pid"
reload_refused() { status_json | jq -e '.lastReload.accepted == false' >/dev/null 2>&1; }
tap_check "SIGHUP with a one-line credentials file: reload refused" lab_wait_for 5 reload_refused
tap_check "after the refused reload: still Killswitched, no OpenVPN" \
    bash -c '[ "$1" = Killswitched ] && [ -z "$2" ]' _ "$(vpnsup_state || echo '?')" "$(router_openvpns)"
# SIGHUP with the right password: TunnelUp.
cp "$LAB_RUNDIR/credentials" "$LAB_RUNDIR/credentials-wrong"
t0=$(lab_now_ms)
kill -HUP "$wrong_pid"
if lab_wait_for 30 state_is TunnelUp && lab_wait_for 10 client_via_tunnel; then
    took=$(seconds_since "$t0")
    tap_note "figure: SIGHUP with the right password -> TunnelUp and client traffic: $took s"
    tap_ok "SIGHUP with the right password: TunnelUp, traffic through the tunnel ($took s)"
else
    tap_not_ok "SIGHUP with the right password: TunnelUp (state $(vpnsup_state || echo '?') after 30 s)"
fi
# 6c. SIGHUP with the credentials file replaced by a FIFO nothing writes to (which would block an
# open, and a read, forever): the reload is refused, naming it, within the loader's deadline, and
# an outside `nft flush ruleset` at the same moment is repaired in milliseconds: files are read off
# the interpreter and the effects, so the kill switch never waits for them.
rm -f "$LAB_RUNDIR/credentials-wrong"
mkfifo -m 0600 "$LAB_RUNDIR/credentials-wrong"
fifo_refused() { status_json | jq -e '.lastReload.accepted == false and (.lastReload.message | contains("not a regular file but a FIFO"))' >/dev/null 2>&1; }
t0=$(lab_now_ms)
kill -HUP "$wrong_pid"
fifo_repair_ms=$(lab_exec router bash -c 't0=${EPOCHREALTIME/./}; nft flush ruleset
    until nft list table inet vpnsup >/dev/null 2>&1; do ((${EPOCHREALTIME/./} - t0 < 5000000)) || exit 1; done
    echo $(((${EPOCHREALTIME/./} - t0) / 1000))') || fifo_repair_ms=""
if lab_wait_for 5 fifo_refused; then
    took=$(seconds_since "$t0")
    tap_note "figure: SIGHUP with a FIFO credentials file -> reload refused (status polled): $took s"
    tap_ok "SIGHUP with a FIFO credentials file: reload refused, naming it ($took s)"
else
    tap_not_ok "SIGHUP with a FIFO credentials file: reload refused (not within 5 s: $(status_json | jq -c .lastReload 2>/dev/null || echo '?'))"
fi
if [ -n "$fifo_repair_ms" ]; then
    tap_note "figure: drift repair during the FIFO reload: outside flush -> table re-committed: $fifo_repair_ms ms"
    tap_ok "outside flush during the FIFO reload: table inet vpnsup committed again ($fifo_repair_ms ms)"
else
    tap_not_ok "outside flush during the FIFO reload: table inet vpnsup committed again (not within 5 s)"
fi
tap_check "after the FIFO reload and the repair: the up ruleset" lab_wait_for 5 up_table_back
tap_check "after the FIFO reload: still TunnelUp" lab_wait_for 5 state_is TunnelUp
tap_check "after the FIFO reload: the client's traffic flows through the tunnel" lab_wait_for 10 client_via_tunnel
rm -f "$LAB_RUNDIR/credentials-wrong"
kill -TERM "$wrong_pid" 2>/dev/null || true
wait "$wrong_pid" 2>/dev/null || true

# 6c. Configuration files as providers publish them (Tests/lab/provider-config.sh): scripts never
# run, an option OpenVPN does not know and a udp6-only file end run with 78, a server that moves
# to another address is followed.
t0=$(lab_now_ms)
provider_config_tests
tap_note "figure: provider configuration checks: $(seconds_since "$t0") s"

# Bad configuration, in a throwaway namespace: exit 78, one line naming IP_ADDR and the value,
# and the lockdown table committed all the same.
bad_ns=$(lab_ns bad)
ip netns add "$bad_ns"
ip -n "$bad_ns" link add eth0 type veth peer name eth1
ip -n "$bad_ns" link set eth0 up
ip -n "$bad_ns" link set eth1 up
mapfile -t vars < <(vpnsup_env | sed "s|^IP_ADDR=.*|IP_ADDR=garbage|; s|^RUNTIME_DIR=.*|RUNTIME_DIR=$LAB_RUNDIR/runtime-bad|")
rc=0
timeout 20 ip netns exec "$bad_ns" env -i "${vars[@]}" "$VPNSUP" run \
    >"$LAB_RUNDIR/logs/bad.out" 2>"$LAB_RUNDIR/logs/bad.err" </dev/null || rc=$?
tap_check "IP_ADDR=garbage: vpnsup run exits 78 (got $rc)" test "$rc" -eq 78
one_line_naming() {
    [ "$(wc -l <"$LAB_RUNDIR/logs/bad.err")" -eq 1 ] &&
        grep -q 'IP_ADDR' "$LAB_RUNDIR/logs/bad.err" && grep -q 'garbage' "$LAB_RUNDIR/logs/bad.err"
}
tap_check "IP_ADDR=garbage: one stderr line naming IP_ADDR and the value" one_line_naming
tap_last_failed && tap_note_file 5 "$LAB_RUNDIR/logs/bad.err"
lockdown_listed() {
    ip netns exec "$bad_ns" nft list table inet vpnsup >"$LAB_RUNDIR/logs/bad.nft" 2>&1 &&
        grep -q 'policy drop' "$LAB_RUNDIR/logs/bad.nft"
}
tap_check "IP_ADDR=garbage: the lockdown table inet vpnsup is committed" lockdown_listed
tap_last_failed && tap_note_file 10 "$LAB_RUNDIR/logs/bad.nft"

# A credentials file that is a FIFO at start: exit 78 at once, one line naming it (a blocking open
# would have waited for a writer forever), the lockdown committed.
mkfifo -m 0600 "$LAB_RUNDIR/credentials-fifo"
mapfile -t vars < <(vpnsup_env | sed "s|^CREDENTIALS_FILE=.*|CREDENTIALS_FILE=$LAB_RUNDIR/credentials-fifo|; s|^RUNTIME_DIR=.*|RUNTIME_DIR=$LAB_RUNDIR/runtime-bad|")
ip netns exec "$bad_ns" nft delete table inet vpnsup 2>/dev/null || true
rc=0
t0=$(lab_now_ms)
timeout 5 ip netns exec "$bad_ns" env -i "${vars[@]}" "$VPNSUP" run \
    >"$LAB_RUNDIR/logs/fifo.out" 2>"$LAB_RUNDIR/logs/fifo.err" </dev/null || rc=$?
took=$(seconds_since "$t0")
tap_note "figure: vpnsup run with a FIFO credentials file -> exit: $took s"
tap_check "CREDENTIALS_FILE a FIFO at start: vpnsup run exits 78 (got $rc after $took s)" test "$rc" -eq 78
fifo_line() {
    [ "$(wc -l <"$LAB_RUNDIR/logs/fifo.err")" -eq 1 ] &&
        grep -qF "CREDENTIALS_FILE=$LAB_RUNDIR/credentials-fifo cannot be read: not a regular file but a FIFO" "$LAB_RUNDIR/logs/fifo.err"
}
tap_check "CREDENTIALS_FILE a FIFO at start: one stderr line naming it" fifo_line
tap_last_failed && tap_note_file 5 "$LAB_RUNDIR/logs/fifo.err"
tap_check "CREDENTIALS_FILE a FIFO at start: the lockdown table inet vpnsup is committed" lockdown_listed
rm -f "$LAB_RUNDIR/credentials-fifo"

# 7. Over the whole run: nothing but the tunnel's transport on the WAN, only tunnel sources at
# the echo.
if leaks=$(lab_leaks); then
    tap_check "zero leaked packets on the WAN ($leaks of $(lab_capture_count) captured are not tunnel transport)" \
        test "$leaks" -eq 0
    [ "$leaks" -eq 0 ] || tap_note_file 20 "$LAB_RUNDIR/capture/leaks.txt"
else
    tap_not_ok "zero leaked packets on the WAN (the capture could not be read)"
fi
feature_capture_checks
# The resolver on the WAN heard only vpnsup's own questions: A records of the remote's name (from
# each start with the host-name configuration), nothing from OpenVPN (which would also ask AAAA).
queries=$(lab_resolver_queries | sort | uniq -c | xargs)
only_vpnsup_queries() {
    local other
    other=$(lab_resolver_queries | grep -vxF "A $LAB_VPN_NAME $LAB_ROUTER_WAN_IP" || true)
    [ -n "$(lab_resolver_queries)" ] && [ -z "$other" ]
}
tap_check "the WAN resolver was asked only for the A records of $LAB_VPN_NAME ($queries)" only_vpnsup_queries
sources=$(lab_echo_sources | tr '\n' ' ')
only_tunnel_sources() {
    local src
    [ -n "$sources" ] || return 1
    for src in $sources; do via_tunnel "$src" || return 1; done
}
tap_check "the echo saw tunnel sources only ($sources)" only_tunnel_sources
