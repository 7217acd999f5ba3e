#!/usr/bin/env bash
# Tests/docker/wireguard.sh — a WireGuard router container, shorter than the OpenVPN scenario of
# Tests/docker/e2e.sh but with the same engine, image and checks where they apply:
#
#   vpsw-web (bridge) 172.31.252.0/24               vpsw-lan (--internal) 172.31.253.0/24, gateway .254,
#     vpsw-vpn    .2  wireguard-go server :51820/udp     --aux-address DefaultGatewayIPv4=.1
#                     (tunnel 10.9.0.1/24, forwards, no NAT)
#     vpsw-echo   .3  HTTP echo :80 + DNS, route 10.9.0.0/24 via .2
#     vpsw-router .5  eth0 -- vpnsup (the prebuilt image, CONFIG a wg-quick file) -- eth1 .1
#                                                      vpsw-client .10 (default via .1)
#
# The router's file names the server by its container name (Docker's DNS answers vpnsup's
# resolution). Shown: TunnelUp over WireGuard, healthy; the client reaches the echo only through
# the tunnel, DNS enforced; the server gone -> not TunnelUp, unhealthy, nothing out; back ->
# TunnelUp; `docker stop` -> exit 0; over the run the router sent nothing on the web bridge but
# WireGuard's transport to the server, and the echo never saw a LAN address.
#
#   bash Tests/docker/wireguard.sh    (root; VPNSUP=static vpnsup, default dist/vpnsup)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=lab/lab.sh
. "$REPO/lab/lab.sh"
# shellcheck source=Tests/lab/tap.sh
. "$REPO/Tests/lab/tap.sh"
# shellcheck source=Tests/docker/engine.sh
. "$REPO/Tests/docker/engine.sh"

VPNSUP=${VPNSUP:-$REPO/dist/vpnsup}
[[ $VPNSUP == /* ]] || VPNSUP=$REPO/$VPNSUP
IMAGE=vpnsup:wg-e2e
TOOLS_IMAGE=vpnsup-labtools:e2e
WEB=vpsw-web
LAN=vpsw-lan
WEB_NET=172.31.252.0/24
LAN_NET=172.31.253.0/24
LAN_GW_CIDR=172.31.253.1/24
LAN_DOCKER_GW=172.31.253.254
SERVER_IP=172.31.252.2
ECHO_IP=172.31.252.3
ROUTER_WEB_IP=172.31.252.5
CLIENT_IP=172.31.253.10
ROGUE_DNS=172.31.252.53
WG_PREFIX=10.9.0.
WG_PORT=51820
CONTAINERS=(vpsw-client vpsw-router vpsw-vpn vpsw-echo)
RUN=$(mktemp -d /var/tmp/vpnsup-docker-wg.XXXXXX)
mkdir -p "$RUN"/{logs,inet,config,keys,capture}
# lab.sh's echo script writes into LAB_RUNDIR/inet.
LAB_RUNDIR=$RUN
ENGINE_STARTED=no
HOST_RULES_APPLIED=no
CAPTURE_PID=

now_ms() { lab_now_ms; }
seconds_since() { lab_ms_to_s $(($(now_ms) - $1)); }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1000000 }'; }
remove_host_rules() {
    [ "$HOST_RULES_APPLIED" = yes ] || return 0
    HOST_RULES_APPLIED=no
    docker_engine_exec "$VPNSUP" host-rules --subnet "$LAN_NET" --bridge "$LAN" --remove >/dev/null ||
        tap_not_ok "host-rules --remove at clean-up"
}
remove_scenario() {
    docker rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true
    docker network rm "$LAN" "$WEB" >/dev/null 2>&1 || true
}
stop_capture() {
    [ -n "$CAPTURE_PID" ] || return 0
    kill -INT "$CAPTURE_PID" 2>/dev/null
    wait "$CAPTURE_PID" 2>/dev/null || true
    CAPTURE_PID=
}
finish() {
    local status=$?
    trap - EXIT
    set +e
    stop_capture
    if [ "$ENGINE_STARTED" = yes ]; then
        if [ "$TAP_FAIL" -gt 0 ] || [ "$status" -ne 0 ]; then
            tap_note "the end of the router's log:"
            docker logs vpsw-router 2>&1 | tail -n 30 | sed 's/^/#   /'
        fi
        remove_host_rules
        remove_scenario
        docker_engine_stop || tap_not_ok "the test's Docker engine stops and leaves no process behind"
    fi
    if [ "$TAP_FAIL" -eq 0 ] && [ "$status" -eq 0 ] && [ "${DOCKER_E2E_KEEP:-0}" != 1 ]; then
        rm -rf "${RUN:?}"
    else
        tap_note "run files kept in $RUN"
    fi
    tap_finish "$status"
    exit $?
}
trap finish EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" -ne 0 ]; then
    tap_not_ok "the Docker test needs root"
    exit 1
fi
if [ ! -x "$VPNSUP" ]; then
    tap_not_ok "static vpnsup at $VPNSUP (make it: bash scripts/build-static.sh)"
    exit 1
fi
lab_require wg jq tcpdump
T_START=$(now_ms)

# ---- the engine, the images ----

if ! docker_engine_start "$RUN/logs"; then
    tap_not_ok "the test's Docker engine starts in its own network namespace"
    tap_note_file 20 "$RUN/logs/dockerd.log"
    exit 1
fi
ENGINE_STARTED=yes
remove_scenario
bash "$REPO/scripts/debian-base-image.sh"
mkdir -p "$REPO/dist"
[ "$VPNSUP" -ef "$REPO/dist/vpnsup" ] || install -m 0755 "$VPNSUP" "$REPO/dist/vpnsup"
if docker build -q --target prebuilt -t "$IMAGE" "$REPO" >"$RUN/logs/build.log" 2>&1; then
    tap_ok "the image builds (target prebuilt) with wireguard-go"
else
    tap_not_ok "the image builds (target prebuilt) with wireguard-go"
    tap_note_file 20 "$RUN/logs/build.log"
    exit 1
fi
tap_note "figure: image $IMAGE: $(mb "$(docker image inspect -f '{{.Size}}' "$IMAGE")") MB"
if ! docker build -q -t "$TOOLS_IMAGE" - <"$REPO/Tests/docker/labtools.Dockerfile" >"$RUN/logs/tools-build.log" 2>&1; then
    tap_not_ok "the lab-tools image builds"
    tap_note_file 20 "$RUN/logs/tools-build.log"
    exit 1
fi

# ---- keys and files ----

(
    umask 077
    cd "$RUN/keys"
    for who in server client; do wg genkey >"$who.key"; wg pubkey <"$who.key" >"$who.pub"; done
    cat >"$RUN/config/wg0.conf" <<EOF
[Interface]
PrivateKey = $(cat client.key)
Address = ${WG_PREFIX}2/32
DNS = $ECHO_IP
[Peer]
PublicKey = $(cat server.pub)
AllowedIPs = 0.0.0.0/0
Endpoint = vpsw-vpn:$WG_PORT
EOF
)
_lab_echo_script

# ---- the networks, the server, the echo, the client ----

docker network create -d bridge -o com.docker.network.bridge.name="$WEB" --subnet "$WEB_NET" "$WEB" >/dev/null
docker network create -d bridge -o com.docker.network.bridge.name="$LAN" --internal --subnet "$LAN_NET" \
    --gateway "$LAN_DOCKER_GW" --aux-address "DefaultGatewayIPv4=${LAN_GW_CIDR%/*}" "$LAN" >/dev/null
# The host's DOCKER-USER rules (Docker drops what an --internal network's hosts send elsewhere).
if docker_engine_exec "$VPNSUP" host-rules --network "$LAN" --apply >"$RUN/logs/host-rules.log" 2>&1; then
    HOST_RULES_APPLIED=yes
fi
tap_check "host-rules --apply installs the forwarding rules for $LAN" test "$HOST_RULES_APPLIED" = yes
tools() { # NAME ARGS...
    local name=$1
    shift
    docker run -d --name "$name" -v "$RUN:$RUN" "$@" >/dev/null
}
# wireguard-go daemonizes itself; the container lives on its sleep. Keys through files, not argv.
tools vpsw-vpn --network "$WEB" --ip "$SERVER_IP" --cap-add NET_ADMIN --device /dev/net/tun \
    --sysctl net.ipv4.ip_forward=1 "$TOOLS_IMAGE" sh -c "
    wireguard-go wg0 && wg set wg0 private-key $RUN/keys/server.key listen-port $WG_PORT \
        peer \$(cat $RUN/keys/client.pub) allowed-ips ${WG_PREFIX}2/32 &&
    ip addr add ${WG_PREFIX}1/24 dev wg0 && ip link set wg0 up && exec sleep infinity"
tools vpsw-echo --network "$WEB" --ip "$ECHO_IP" --cap-add NET_ADMIN "$TOOLS_IMAGE" sh -c "
    ip route add ${WG_PREFIX}0/24 via $SERVER_IP &&
    dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address=$ECHO_IP \
        --address=/$LAB_DNS_NAME/$ECHO_IP --log-queries --log-facility=$RUN/inet/dns.log &
    exec python3 $RUN/inet/echo.py $RUN/inet/echo.log 0.0.0.0 80"
tools vpsw-client --network "$LAN" --ip "$CLIENT_IP" "$TOOLS_IMAGE" sleep infinity
server_up() { docker exec vpsw-vpn wg show wg0 listen-port 2>/dev/null | grep -qx "$WG_PORT"; }
echo_ready() { docker exec vpsw-echo curl -s --max-time 1 -o /dev/null "http://$ECHO_IP/"; }
tap_check "the WireGuard server container listens on $SERVER_IP:$WG_PORT" lab_wait_for 20 server_up
lab_wait_for 20 echo_ready || tap_note "the echo does not answer"

ip netns exec "$DOCKER_ENGINE_NS" tcpdump -n -i "$WEB" --immediate-mode -U -w "$RUN/capture/web.pcap" >"$RUN/logs/tcpdump.log" 2>&1 &
CAPTURE_PID=$!
lab_wait_for 10 grep -q "listening on" "$RUN/logs/tcpdump.log" || tap_note "tcpdump did not start listening"

# ---- the router: web first (eth0), then the isolated network (eth1) ----

docker create --name vpsw-router --network "$WEB" --ip "$ROUTER_WEB_IP" --cap-add NET_ADMIN --device /dev/net/tun \
    --sysctl net.ipv4.ip_forward=1 -v "$RUN/config:/config:ro" --health-interval 1s --health-timeout 2s \
    --health-retries 1 --health-start-period 0s -e CONFIG=wg0.conf -e IP_ADDR="$LAN_GW_CIDR" \
    -e PROBE_INTERVAL=2 -e PROBE_TIMEOUT=1 -e PROBE_FAILURES=3 "$IMAGE" >/dev/null
docker network connect "$LAN" vpsw-router
t0=$(now_ms)
docker start vpsw-router >/dev/null
router_status() { docker exec vpsw-router vpnsup status --json 2>/dev/null; }
state_is() { [ "$(router_status | jq -r .state 2>/dev/null)" = "$1" ]; }
state_is_not() { local s; s=$(router_status | jq -r .state 2>/dev/null) && [ -n "$s" ] && [ "$s" != "$1" ]; }
health_is() { [ "$(docker inspect -f '{{.State.Health.Status}}' vpsw-router 2>/dev/null)" = "$1" ]; }
if lab_wait_for 60 state_is TunnelUp; then
    tap_ok "the router container reaches TunnelUp over WireGuard ($(seconds_since "$t0") s)"
else
    tap_not_ok "the router container reaches TunnelUp over WireGuard (state $(router_status | jq -r .state 2>/dev/null || echo '?'))"
fi
json=$(router_status || true)
status_ok() {
    jq -e --arg ip "$SERVER_IP" '.resolvedRemotes["vpsw-vpn"] == [$ip] and .wireGuard.interface == "wg0"
        and .wireGuard.plane == "userspace" and .wireGuard.evidence == "up"
        and .wireGuard.peers[0].latestHandshakeAgeSeconds != null' <<<"$json" >/dev/null
}
tap_check "status: vpsw-vpn resolved through Docker's DNS and pinned, wireguard-go (userspace) in wg0, handshakes up" status_ok
tap_last_failed && tap_note "status: $(jq -c '{state, reason, resolvedRemotes, wireGuard}' <<<"$json" 2>/dev/null || echo "$json")"
tap_check "docker inspect reports the router healthy" lab_wait_for 15 health_is healthy

client_fetch() { docker exec vpsw-client curl -sS --max-time "${1:-3}" "http://$ECHO_IP/" 2>>"$RUN/logs/client.err"; }
via_tunnel() { [[ $1 == "$WG_PREFIX"* ]]; }
seen=$(client_fetch 5 || true)
tap_check "the client reaches the echo only through the tunnel (the echo sees ${seen:-nothing}, not $CLIENT_IP)" via_tunnel "$seen"
if tap_last_failed; then
    in_router() { nsenter -t "$(docker inspect -f '{{.State.Pid}}' vpsw-router)" -n "$@"; }
    {
        echo "router rules:"; in_router ip -4 rule show
        echo "table 30320:"; in_router ip -4 route show table 30320
        echo "main:"; in_router ip -4 route show
        echo "addresses:"; in_router ip -4 -o addr show
        echo "forwarding: $(in_router cat /proc/sys/net/ipv4/ip_forward)"
        echo "wireguard:"; router_status | jq -c .wireGuard
        echo "ruleset:"; in_router nft list ruleset
        echo "server:"; docker exec vpsw-vpn wg show wg0; docker exec vpsw-vpn ip -4 -o addr show
        echo "client routes:"; docker exec vpsw-client ip -4 route show
        echo "echo routes:"; docker exec vpsw-echo ip -4 route show
    } >"$RUN/logs/diagnosis.txt" 2>&1
    tap_note_file 80 "$RUN/logs/diagnosis.txt"
fi
answer=$(docker exec vpsw-client dig +short +time=2 +tries=2 "@$ROGUE_DNS" "$LAB_DNS_NAME" 2>/dev/null || true)
dns_via_tunnel() { [ "$answer" = "$ECHO_IP" ] && grep -q "query\[A\] $LAB_DNS_NAME from $WG_PREFIX" "$RUN/inet/dns.log"; }
tap_check "DNS is enforced to the file's DNS = $ECHO_IP through the tunnel (${answer:-no answer})" dns_via_tunnel

# ---- the server goes away, and comes back ----

client_blocked() { ! docker exec vpsw-client curl -s --max-time 2 -o /dev/null "http://$ECHO_IP/"; }
t0=$(now_ms)
docker stop -t 2 vpsw-vpn >/dev/null
if lab_wait_for 30 state_is_not TunnelUp; then
    tap_ok "the router leaves TunnelUp when the server stops ($(seconds_since "$t0") s; now $(router_status | jq -r .state))"
else
    tap_not_ok "the router leaves TunnelUp when the server stops (not within 30 s)"
fi
tap_check "docker inspect reports the router unhealthy" lab_wait_for 15 health_is unhealthy
tap_check "server down: the client cannot reach the echo" client_blocked
t0=$(now_ms)
docker start vpsw-vpn >/dev/null
if lab_wait_for 60 state_is TunnelUp; then
    tap_ok "server back: TunnelUp again ($(seconds_since "$t0") s)"
else
    tap_not_ok "server back: TunnelUp again (not within 60 s)"
fi
seen=$(client_fetch 5 || true)
tap_check "server back: the client is through the tunnel again (${seen:-nothing})" via_tunnel "$seen"

# ---- docker stop: SIGTERM, exit 0 ----

docker stop -t 10 vpsw-router >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' vpsw-router)
tap_check "docker stop: vpnsup stops wireguard-go and exits 0 (got $code)" test "$code" = 0

# ---- accounting ----

stop_capture
router_mac=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$WEB\").MacAddress}}" vpsw-router)
transport="arp or (ip src $ROUTER_WEB_IP and ip dst $SERVER_IP and (udp dst port $WG_PORT or ip[6:2] & 0x1fff != 0))"
router_frames=$(tcpdump -nn -r "$RUN/capture/web.pcap" "ip src $ROUTER_WEB_IP" 2>/dev/null | wc -l)
leaks=$(( $(tcpdump -nn -r "$RUN/capture/web.pcap" "ether src host $router_mac and not ($transport)" 2>/dev/null | tee "$RUN/capture/leaks.txt" | wc -l)
    + $(tcpdump -nn -r "$RUN/capture/web.pcap" "net $LAN_NET" 2>/dev/null | wc -l) ))
tap_check "nothing leaks onto $WEB: the router sent only WireGuard's transport to $SERVER_IP:$WG_PORT ($router_frames frames), no LAN address seen ($leaks leaked)" \
    test "$router_frames" -gt 0 -a "$leaks" -eq 0
[ "$leaks" -eq 0 ] || head -n 20 "$RUN/capture/leaks.txt" | sed 's/^/#   /'
lan_sources() { awk '{print $2}' "$RUN/inet/echo.log" | grep -c "^${LAN_NET%.*}\." || true; }
tap_check "the echo never saw a LAN source address" test "$(lan_sources)" -eq 0
tap_note "figure: Docker WireGuard test run time $(seconds_since "$T_START") s"
