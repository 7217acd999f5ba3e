#!/usr/bin/env bash
# Tests/lab/forwards.sh — live port forwards in the namespace lab: vpnsup runs on the lab's router
# with PORT_FWD and PORT_FWD_FILE; while a long TCP transfer from the VPN side flows through
# forward A to the LAN client, the file is replaced by a rename (forward B added, C removed), and
# the change goes into the kernel as map elements in one transaction, without a commit of the
# ruleset: the transfer arrives whole (byte counts equal, no reset), B works afterwards and C does
# not. Then a bad file is refused (the forwards in force stay, the reason in status), SIGHUP reads
# an unchanged file, and 10,000 forwards from the file are put in force live (a sample of them
# reached over the tunnel). The WAN carries nothing but the tunnel's transport all along.
#
#   VPNSUP=path/to/vpnsup bash Tests/lab/forwards.sh     (default .build/debug/vpnsup; needs root)
#   LAB_KEEP=1 keeps the run directory (logs, captures) even when everything passed.
# Prints ok/not ok lines and "lab: P passed, F failed"; exits non-zero on any failure. Everything
# is torn down by the EXIT trap.
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
# PORT_FWD keeps one forward of its own: the file's lines are checked against it, and the TCP map
# holds it whatever the file says.
FEATURE_PORT_FWD="8080:$LAB_CLIENT_IP:80/tcp"
STREAM_SECONDS=12 # the long transfer through A; the file changes about 3 s into it
A="20001:$LAB_CLIENT_IP:5001/tcp"
B="20002:$LAB_CLIENT_IP:5002/tcp"
C="20003:$LAB_CLIENT_IP:5003/tcp"
U="20004:$LAB_CLIENT_IP:5004/udp"
MANY=10000

trap lab_test_finish EXIT
trap 'exit 130' INT TERM

lab_init
lab_test_preflight
RUNTIME=$LAB_RUNDIR/runtime
# shellcheck source=Tests/lab/router.sh
. "$REPO/Tests/lab/router.sh"

# The file lives in a directory of its own, as a mounted ConfigMap or /etc/vpnsup would.
FORWARDS_DIR=$LAB_RUNDIR/forwards
FORWARDS=$FORWARDS_DIR/forwards

# put_forwards LINE...: the file replaced atomically (written aside, then renamed over it).
put_forwards() {
    printf '%s\n' "# vpnsup lab: forwards from the tunnel to the LAN client" "$@" >"$FORWARDS.new"
    mv -f "$FORWARDS.new" "$FORWARDS"
}

# The status field FIELD (a jq path) now.
status_field() { status_json | jq -r "$1" 2>/dev/null; }

# Waits until status shows a reading of the file after COUNT changes whose outcome is ACCEPTED
# (true|false) and whose message contains TEXT.
last_change_is() { # ACCEPTED TEXT
    local json
    json=$(status_json) || return 1
    jq -e --argjson accepted "$1" --arg text "$2" \
        '.lastForwardsChange.accepted == $accepted and (.lastForwardsChange.message | contains($text))' <<<"$json" >/dev/null
}

tunnel_ip=
# From the VPN side: an HTTP fetch through public port PORT, which the client's target on
# TARGET_PORT logs with PATH; or a datagram TEXT, answered from the client and logged.
reached() { # PORT TARGET_PORT PATH
    _feature_isp_fetch "$tunnel_ip" "$1" "$3" 3 >/dev/null && lab_wait_for 2 _feature_targets_saw " $2 $3"
}
not_reached() { # PORT PATH
    ! _feature_isp_fetch "$tunnel_ip" "$1" "$2" "$FEATURE_NEGATIVE_WAIT" >/dev/null && _feature_targets_quiet " $2"
}
udp_reached() { # PORT TARGET_PORT TEXT
    local reply
    reply=$(lab_udp_ask isp "$tunnel_ip" "$1" "$3" 3) && via_tunnel "$reply" && lab_wait_for 2 _feature_targets_saw " $2 $3"
}

# The receiving end of the long transfer, on the client: counts what arrives on one connection and
# answers the count when the sender is done.
write_scripts() {
cat >"$LAB_RUNDIR/sink.py" <<'PYEOF'
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen(1)
print("listening", flush=True)
connection, peer = server.accept()
print(f"connected from {peer[0]}", flush=True)
total = 0
while True:
    data = connection.recv(65536)
    if not data:
        break
    total += len(data)
connection.sendall(f"{total}\n".encode())
connection.close()
print(f"received {total}", flush=True)
PYEOF
# The sending end, on the VPN side: steady for SECONDS (about 2 MB/s, leaving the cores to the
# rest), then the count the sink reports; or how the connection broke.
cat >"$LAB_RUNDIR/stream.py" <<'PYEOF'
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
chunk = b"x" * 8192
sent = 0
try:
    connection = socket.create_connection((host, port), timeout=5)
    print("connected", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        connection.sendall(chunk)
        sent += len(chunk)
        time.sleep(0.004)
    connection.shutdown(socket.SHUT_WR)
    counted = int(connection.makefile().readline())
    print(f"done sent {sent} counted {counted}", flush=True)
except Exception as error:
    print(f"FAIL after {sent} bytes: {type(error).__name__} {error}", flush=True)
PYEOF
}

lab_up
tap_note "lab up in $(lab_ms_to_s "$LAB_UP_MS") s (prefix $LAB_PREFIX, vpnsup $VPNSUP)"
write_scripts
# HTTP echo targets for B and C (and the 10,000), a datagram echo for U; A's end is the sink.
lab_targets_start 5002,5003 5004
lab_daemon_start sink client "$LAB_PYTHON" -u "$LAB_RUNDIR/sink.py" "$LAB_CLIENT_IP" 5001
lab_wait_for 10 _lab_listening_on client tcp "$LAB_CLIENT_IP" 5001 || tap_note "the sink is not listening"
mkdir -p "$FORWARDS_DIR"
put_forwards "$A" "$C" "$U"

lab_capture_start
mapfile -t vars < <(vpnsup_env; echo "PORT_FWD_FILE=$FORWARDS")
lab_daemon_start vpnsup router env -i "${vars[@]}" "$VPNSUP" run
lab_vpn_server_start
if lab_wait_for 30 state_is TunnelUp; then
    tap_ok "vpnsup with PORT_FWD_FILE reaches TunnelUp"
else
    tap_not_ok "vpnsup with PORT_FWD_FILE reaches TunnelUp (state $(vpnsup_state || echo '?'))"
fi
tunnel_ip=$(_feature_tunnel_ip)
tunnel_ip=${tunnel_ip:-${LAB_VPN_PREFIX}2}
listed=$(status_json | jq -r '.portForwards[]' 2>/dev/null | sort | xargs)
tap_check "status lists PORT_FWD's forward and the file's three ($listed)" test "$listed" = \
    "20001/tcp -> $LAB_CLIENT_IP:5001 20003/tcp -> $LAB_CLIENT_IP:5003 20004/udp -> $LAB_CLIENT_IP:5004 8080/tcp -> $LAB_CLIENT_IP:80"
tap_check "from the VPN side, C (20003) reaches the client" reached 20003 5003 /c-before
tap_check "from the VPN side, U (20004/udp) reaches the client" udp_reached 20004 5004 u-before
tap_check "B (20002) is not forwarded yet" not_reached 20002 /b-before

# 1. A long transfer through A while the file changes: B added, C removed, by a rename.
commits_of_up() { grep -c "committed the up ruleset" "$LAB_RUNDIR/logs/vpnsup.log" || true; }
# The table's chains, rules and maps with their kernel handles; the maps' elements and the
# counters' values left out.
structure() {
    lab_exec router nft -j -a list table inet vpnsup | jq -c '.nftables[] | select(has("chain") or has("rule") or has("map"))
        | del(.map.elem) | walk(if type == "object" and has("packets") then del(.packets, .bytes) else . end)'
}
structure >"$LAB_RUNDIR/structure-before.txt"
commits_before=$(commits_of_up)
: >"$LAB_RUNDIR/logs/stream.log"
lab_daemon_start stream isp "$LAB_PYTHON" -u "$LAB_RUNDIR/stream.py" "$tunnel_ip" 20001 "$STREAM_SECONDS"
lab_wait_for 10 grep -q '^connected' "$LAB_RUNDIR/logs/stream.log" || tap_note "the transfer did not connect"
sleep 3
put_forwards "$A" "$B" "$U"
if lab_wait_for 10 last_change_is true "applying them as map element changes, done in"; then
    tap_ok "the renamed file is read and applied as map element changes ($(status_field .lastForwardsChange.message))"
else
    tap_not_ok "the renamed file is read and applied as map element changes (status: $(status_field .lastForwardsChange))"
fi
tap_check "the change was no commit of the up ruleset ($commits_before commits before, $(commits_of_up) after)" \
    test "$(commits_of_up)" = "$commits_before"
structure >"$LAB_RUNDIR/structure-after.txt"
tap_check "the table's chains, rules and maps are the same kernel objects (same handles) after the change" \
    cmp -s "$LAB_RUNDIR/structure-before.txt" "$LAB_RUNDIR/structure-after.txt"
tap_last_failed && diff "$LAB_RUNDIR/structure-before.txt" "$LAB_RUNDIR/structure-after.txt" | head -n 6 | sed 's/^/#   /'
changed_once() {
    status_json | jq -e --arg b "20002/tcp -> $LAB_CLIENT_IP:5002" --arg c "20003/tcp -> $LAB_CLIENT_IP:5003" \
        '.forwardsChanges == 1 and (.portForwards | index($b)) != null and (.portForwards | index($c)) == null' >/dev/null
}
tap_check "status: forwardsChanges 1, B listed and C not" changed_once
tap_check "B (20002) now reaches the client" reached 20002 5002 /b-after
tap_check "C (20003) no longer does" not_reached 20003 /c-after
lab_wait_for $((STREAM_SECONDS + 10)) grep -q '^done\|^FAIL' "$LAB_RUNDIR/logs/stream.log" || true
result=$(grep '^done\|^FAIL' "$LAB_RUNDIR/logs/stream.log" || echo "no result")
whole() {
    [[ $result =~ ^done\ sent\ ([0-9]+)\ counted\ ([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] &&
        [ "${BASH_REMATCH[1]}" -gt 0 ]
}
tap_check "the transfer through A kept flowing across the change: every byte counted, no reset ($result)" whole

# 2. Bad files: refused, the forwards in force stay, the reason in status (JSON and text).
put_forwards "$A" "$B" "$U" "20005:10.0.0.5:80/tcp"
bad="PORT_FWD_FILE=$FORWARDS:5 has '20005:10.0.0.5:80/tcp', which targets 10.0.0.5, outside the LAN $LAB_LAN_NET"
if lab_wait_for 10 last_change_is false "$bad"; then
    tap_ok "a bad file is refused, naming the file and the line ($bad)"
else
    tap_not_ok "a bad file is refused, naming the file and the line (status: $(status_field .lastForwardsChange))"
fi
said_refused() {
    timeout 5 ip netns exec "$(lab_ns router)" "$VPNSUP" status --runtime-dir "$RUNTIME" 2>>"$LAB_RUNDIR/logs/status.err" |
        grep -qF "refused: $bad"
}
tap_check "vpnsup status says it was refused, and why" said_refused
tap_check "the forwards in force stay: B still reaches the client" reached 20002 5002 /b-refused
put_forwards "$A" "$B" "$U" "8080:$LAB_CLIENT_IP:81/tcp"
tap_check "a line forwarding what PORT_FWD forwards is refused, naming PORT_FWD's forward" \
    lab_wait_for 10 last_change_is false "already forwarded to $LAB_CLIENT_IP:80 in PORT_FWD"
put_forwards "$A" "$B" "$U"
tap_check "the good file back: accepted, unchanged" lab_wait_for 10 last_change_is true "unchanged: 4 forwards"

# 3. 10,000 forwards from the file, live: public ports 30000-39999 to the client's targets (every
# third UDP), with A, B and U.
{
    echo "# $MANY forwards"
    printf '%s\n' "$A" "$B" "$U"
    for ((i = 0; i < MANY; i++)); do
        if ((i % 3 == 0)); then echo "$((30000 + i)):$LAB_CLIENT_IP:5004/udp"; else echo "$((30000 + i)):$LAB_CLIENT_IP:5002/tcp"; fi
    done
} >"$FORWARDS.new"
mv -f "$FORWARDS.new" "$FORWARDS"
total=$((MANY + 4))
if lab_wait_for 30 last_change_is true "$total forwards (0 removed, $MANY added): applying them as map element changes, done in"; then
    tap_ok "$MANY forwards from the file are put in force ($(status_field .lastForwardsChange.message))"
else
    tap_not_ok "$MANY forwards from the file are put in force (status: $(status_field .lastForwardsChange))"
fi
tap_note "figure: $(grep "forward deletes and" "$LAB_RUNDIR/logs/vpnsup.log" | tail -n 1 | sed 's/.*applied/applied/')"
map_count() { lab_exec router nft -j list map inet vpnsup "$1" | jq '[.nftables[] | .map? | select(. != null) | .elem | length] | add'; }
in_kernel() { [ $(($(map_count tcp_forwards) + $(map_count udp_forwards))) -eq "$total" ]; }
tap_check "the kernel's maps hold all $total" in_kernel
tap_check "status lists all $total" test "$(status_json | jq '.portForwards | length')" -eq "$total"
many_reached() { reached 30001 5002 /many-30001 && reached 34999 5002 /many-34999 && udp_reached 39999 5004 many-39999; }
tap_check "a sample reaches the client: 30001 and 34999 (tcp), 39999 (udp)" many_reached
tap_check "B still reaches the client" reached 20002 5002 /b-many
# Init -> AddressAssigned -> TunnelConnecting -> TunnelUp, and nothing since.
stayed_up() { status_json | jq -e '[.transitions[].to] == ["AddressAssigned", "TunnelConnecting", "TunnelUp"] and .state == "TunnelUp"' >/dev/null; }
tap_check "vpnsup stayed TunnelUp through every change" stayed_up

# 4. SIGHUP: the file is read again (unchanged), besides the credentials and CONFIG, which
# restart OpenVPN; the up ruleset is then committed whole with the forwards in force.
unchanged_readings() { grep -c "forwards read again: unchanged, $total forwards" "$LAB_RUNDIR/logs/vpnsup.log" || true; }
readings_before=$(unchanged_readings)
kill -HUP "$(lab_daemon_pid vpnsup)"
reread() { [ "$(unchanged_readings)" -gt "$readings_before" ]; }
tap_check "SIGHUP reads the file again: unchanged, $total forwards" lab_wait_for 10 reread
back_up() { state_is TunnelUp && [ "$(status_json | jq '[.transitions[].to] | length')" -gt 3 ]; }
tap_check "after the restart SIGHUP brings, TunnelUp again" lab_wait_for 30 back_up
tap_check "… with all $total forwards in the kernel's maps" in_kernel
tap_check "… and a sample reaching the client" reached 34000 5002 /many-34000-after-sighup

# 5. Over the whole run: nothing but the tunnel's transport on the WAN.
if leaks=$(lab_leaks); then
    tap_check "zero leaked packets on the WAN ($leaks of $(lab_capture_count) captured are not tunnel transport)" test "$leaks" -eq 0
    [ "$leaks" -eq 0 ] || tap_note_file 20 "$LAB_RUNDIR/capture/leaks.txt"
else
    tap_not_ok "zero leaked packets on the WAN (the capture could not be read)"
fi

pid=$(lab_daemon_pid vpnsup || echo none)
lab_daemon_stop vpnsup TERM 5
gone() { ! lab_daemon_pid vpnsup >/dev/null; }
tap_check "SIGTERM: vpnsup (pid $pid) is gone" gone
