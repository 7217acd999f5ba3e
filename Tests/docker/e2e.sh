#!/usr/bin/env bash
# Tests/docker/e2e.sh — the original vpn_nat_router scenario, step by step, with a real Docker
# engine and the project's image:
#
#   vpsu-web (bridge, not internal)                  vpsu-lan (--internal, bridge vpsu-lan)
#   172.31.250.0/24                                  172.31.251.0/24, gateway .254,
#     vpsu-vpn    .2  OpenVPN server (pool 10.8.0.0/24, no NAT)   --aux-address DefaultGatewayIPv4=.1
#     vpsu-echo   .3  HTTP echo :80 + DNS (echo.lab), route 10.8.0.0/24 via .2
#     vpsu-router .5  eth0 -- vpnsup (image, docker-compose) -- eth1, takes 172.31.251.1/24
#                                                    vpsu-client .10 (default via .1), echo :8080
#
# Because the server does not NAT, the echo sees tunnelled traffic from the router's tunnel
# address (10.8.0.x) and a leak with its LAN source; the capture on the vpsu-web bridge sees every
# frame the router sends. The host rules come from `vpnsup host-rules --apply`.
#
#   bash Tests/docker/e2e.sh      (root; VPNSUP=path of a static vpnsup, default dist/vpnsup,
#                                  which scripts/build-static.sh makes)
# Starts dockerd when none runs (and stops it afterwards), makes debian:bookworm-slim with
# debootstrap when no registry serves it, builds the image (target prebuilt) and a lab-tools
# image. Removes every container, network and host rule it made, even when it fails; the images
# stay as a cache (vpnsup:e2e, vpnsup-labtools:e2e). DOCKER_E2E_KEEP=1 keeps the run directory.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=lab/lab.sh
. "$REPO/lab/lab.sh"
# shellcheck source=Tests/lab/tap.sh
. "$REPO/Tests/lab/tap.sh"

VPNSUP=${VPNSUP:-$REPO/dist/vpnsup}
[[ $VPNSUP == /* ]] || VPNSUP=$REPO/$VPNSUP
IMAGE=vpnsup:e2e
TOOLS_IMAGE=vpnsup-labtools:e2e

WEB=vpsu-web
LAN=vpsu-lan
WEB_NET=172.31.250.0/24
LAN_NET=172.31.251.0/24
LAN_GW=172.31.251.1
LAN_GW_CIDR=172.31.251.1/24
LAN_DOCKER_GW=172.31.251.254
SERVER_IP=172.31.250.2
ECHO_IP=172.31.250.3
ROUTER_WEB_IP=172.31.250.5
CLIENT_IP=172.31.251.10
ROGUE_DNS=172.31.250.53 # no host has it: a query to it can only be answered by DNS enforcement
FORWARD_PORT=8080
CONTAINERS=(vpsu-client vpsu-router vpsu-vpn vpsu-echo)

# The lab's PKI, server and client profiles, and echo, with this scenario's addresses. The
# client profile names the server by its container name: Docker's embedded DNS (127.0.0.11)
# answers vpnsup's resolution over the container's loopback.
LAB_VPN_SERVER_IP=$SERVER_IP
LAB_VPN_NAME=vpsu-vpn
LAB_RUNDIR=$(mktemp -d /var/tmp/vpnsup-docker.XXXXXX)
mkdir -p "$LAB_RUNDIR"/{logs,inet,client,capture}
RUN=$LAB_RUNDIR

STARTED_DOCKERD=no
HOST_RULES_APPLIED=no
CAPTURE_PID=

log() { echo "docker-e2e: $*" >&2; }
now_ms() { lab_now_ms; }
seconds_since() { lab_ms_to_s $(($(now_ms) - $1)); }

remove_scenario() {
    docker rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true
    docker network rm "$LAN" "$WEB" >/dev/null 2>&1 || true
}

finish() {
    local status=$?
    trap - EXIT
    set +e
    if [ -n "$CAPTURE_PID" ]; then kill -INT "$CAPTURE_PID" 2>/dev/null; wait "$CAPTURE_PID" 2>/dev/null; fi
    if [ "$TAP_FAIL" -gt 0 ] || [ "$status" -ne 0 ]; then
        tap_note "the end of the router's log:"
        docker logs vpsu-router 2>&1 | tail -n 30 | sed 's/^/#   /'
    fi
    if [ "$HOST_RULES_APPLIED" = yes ]; then
        "$VPNSUP" host-rules --subnet "$LAN_NET" --bridge "$LAN" --remove >/dev/null ||
            tap_not_ok "host-rules --remove at clean-up"
    fi
    remove_scenario
    if [ "$STARTED_DOCKERD" = yes ]; then
        pid=$(cat "$RUN/dockerd.pid")
        kill "$pid" 2>/dev/null
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
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
T_START=$(now_ms)

# ---- the engine, the images ----

docker_answers() { docker info >/dev/null 2>&1; }
if ! docker_answers; then
    command -v dockerd >/dev/null || { tap_not_ok "dockerd is installed (apt-get install docker.io)"; exit 1; }
    log "starting dockerd"
    nohup dockerd >"$RUN/logs/dockerd.log" 2>&1 &
    echo $! >"$RUN/dockerd.pid"
    STARTED_DOCKERD=yes
    if ! lab_wait_for 60 docker_answers; then
        tap_not_ok "dockerd answers within 60 s"
        tap_note_file 20 "$RUN/logs/dockerd.log"
        exit 1
    fi
fi
tap_note "docker engine $(docker version -f '{{.Server.Version}}' 2>/dev/null), storage $(docker info -f '{{.Driver}}' 2>/dev/null)"
remove_scenario # leftovers of an interrupted run

t0=$(now_ms)
bash "$REPO/scripts/debian-base-image.sh"
mkdir -p "$REPO/dist"
[ "$VPNSUP" -ef "$REPO/dist/vpnsup" ] || install -m 0755 "$VPNSUP" "$REPO/dist/vpnsup"
if docker build -q --target prebuilt -t "$IMAGE" "$REPO" >"$RUN/logs/build.log" 2>&1; then
    size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
    base=$(docker image inspect -f '{{.Size}}' debian:bookworm-slim)
    tap_ok "the image builds (target prebuilt)"
    tap_note "figure: image $IMAGE: $((size / 1000000)) MB ($(((size - base) / 1000000)) MB on top of debian:bookworm-slim); binary $(($(stat -c %s "$REPO/dist/vpnsup") / 1000000)) MB"
else
    tap_not_ok "the image builds (target prebuilt)"
    tap_note_file 20 "$RUN/logs/build.log"
    exit 1
fi
if ! docker build -q -t "$TOOLS_IMAGE" - <"$REPO/Tests/docker/labtools.Dockerfile" >"$RUN/logs/tools-build.log" 2>&1; then
    tap_not_ok "the lab-tools image builds"
    tap_note_file 20 "$RUN/logs/tools-build.log"
    exit 1
fi
image_ok() {
    [ "$(docker image inspect -f '{{json .Config.Entrypoint}}' "$IMAGE")" = '["/usr/local/bin/vpnsup","run"]' ] &&
        [ "$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE")" = '["CMD","/usr/local/bin/vpnsup","health"]' ]
}
tap_check "the image runs 'vpnsup run' as PID 1 and checks health with 'vpnsup health'" image_ok
tap_note "figure: engine and images ready in $(seconds_since "$t0") s"

# ---- the original README, step by step ----

_lab_pki
_lab_configs
_lab_echo_script
cp "$RUN/inet/echo.py" "$RUN/client/echo.py"

# 1. The isolated network, the default gateway reserved as an aux address; the web network.
docker network create -d bridge -o com.docker.network.bridge.name="$WEB" \
    --subnet "$WEB_NET" "$WEB" >/dev/null
docker network create -d bridge -o com.docker.network.bridge.name="$LAN" --internal \
    --subnet "$LAN_NET" --gateway "$LAN_DOCKER_GW" --aux-address "DefaultGatewayIPv4=$LAN_GW" \
    "$LAN" >/dev/null
tap_ok "networks $WEB and $LAN (--internal, --aux-address DefaultGatewayIPv4=$LAN_GW) created"

# 2. The host's DOCKER-USER rules, which the original asked users to write by hand.
user_rules() { iptables -w -S DOCKER-USER | grep -c -- "$LAN_NET" || true; }
if "$VPNSUP" host-rules --network "$LAN" --apply >"$RUN/logs/host-rules.log" 2>&1; then
    HOST_RULES_APPLIED=yes
fi
first=$(user_rules)
"$VPNSUP" host-rules --network "$LAN" --apply >>"$RUN/logs/host-rules.log" 2>&1 || true
second=$(user_rules)
tap_check "host-rules --apply installs the forwarding rules for $LAN ($first rules), a second run adds none ($second)" \
    test "$HOST_RULES_APPLIED" = yes -a "$first" = 2 -a "$second" = 2
tap_last_failed && tap_note_file 10 "$RUN/logs/host-rules.log"

# 3. The VPN provider and the internet: an OpenVPN server and an HTTP echo with DNS.
tools() { # NAME ARGS... -- CMD...
    local name=$1
    shift
    docker run -d --name "$name" -v "$RUN:$RUN" "$@" >/dev/null
}
tools vpsu-vpn --network "$WEB" --ip "$SERVER_IP" --cap-add NET_ADMIN --device /dev/net/tun \
    --sysctl net.ipv4.ip_forward=1 "$TOOLS_IMAGE" \
    openvpn --config "$RUN/server/server.conf" --log "$RUN/logs/openvpn-server.log"
tools vpsu-echo --network "$WEB" --ip "$ECHO_IP" --cap-add NET_ADMIN "$TOOLS_IMAGE" sh -c "
    ip route add $LAB_VPN_NET via $SERVER_IP &&
    dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address=$ECHO_IP \
        --address=/$LAB_DNS_NAME/$ECHO_IP --log-queries --log-facility=$RUN/inet/dns.log &
    exec python3 $RUN/inet/echo.py $RUN/inet/echo.log 0.0.0.0 80"
# 4. A client on the isolated network; it serves the port-forward target.
tools vpsu-client --network "$LAN" --ip "$CLIENT_IP" "$TOOLS_IMAGE" \
    python3 "$RUN/client/echo.py" "$RUN/client/forward.log" 0.0.0.0 "$FORWARD_PORT"
server_ready() { grep -q 'Initialization Sequence Completed' "$RUN/logs/openvpn-server.log" 2>/dev/null; }
echo_ready() { docker exec vpsu-echo curl -s --max-time 1 -o /dev/null "http://$ECHO_IP/"; }
lab_wait_for 20 server_ready || tap_note "the OpenVPN server did not report its initialisation"
lab_wait_for 20 echo_ready || tap_note "the echo does not answer"
client_gateway() { docker exec vpsu-client ip -4 route show default | grep -q "via $LAN_GW"; }
tap_check "the client's default route is the aux address $LAN_GW (Docker's DefaultGatewayIPv4)" client_gateway

# The capture on the web bridge, everything on it, from before the router starts, so its start-up
# is watched too. The accounting keeps what the router sent and anything with a LAN address.
tcpdump -n -i "$WEB" --immediate-mode -U -w "$RUN/capture/web.pcap" >"$RUN/logs/tcpdump.log" 2>&1 &
CAPTURE_PID=$!
lab_wait_for 10 grep -q "listening on" "$RUN/logs/tcpdump.log" || tap_note "tcpdump did not start listening"

# 5. The router, started by docker-compose from examples/docker-compose.yml with this scenario's
# names, paths and values put in (everything else, priorities included, as the example has it).
mkdir -p "$RUN/compose"
/usr/bin/python3 - "$REPO/examples/docker-compose.yml" "$RUN/compose/docker-compose.yml" <<EOF
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
app = doc["services"]["app"]
app.update(image="$IMAGE", container_name="vpsu-router", restart="no")
names = {"underbridge": "$LAN", "web": "$WEB"}
app["networks"] = {names[k]: v for k, v in app["networks"].items()}
app["networks"]["$WEB"]["ipv4_address"] = "$ROUTER_WEB_IP"
doc["networks"] = {names[k]: v for k, v in doc["networks"].items()}
app["volumes"] = [v.replace("/srv/appdata/vpn/openvpn_credentials", "$RUN/credentials")
                   .replace("/srv/appdata/vpn", "$RUN/config") for v in app["volumes"]]
app["environment"].update(CONFIG="client.ovpn", IP_ADDR="$LAN_GW_CIDR", DNS="$ECHO_IP",
                          PORT_FWD="$CLIENT_IP:$FORWARD_PORT", PROBE_INTERVAL="2",
                          PROBE_TIMEOUT="1", PROBE_FAILURES="3")
app["healthcheck"] = {"interval": "1s", "timeout": "2s", "retries": 1, "start_period": "0s"}
yaml.safe_dump(doc, open(sys.argv[2], "w"), sort_keys=False)
EOF
if docker-compose -p vpsu -f "$RUN/compose/docker-compose.yml" up -d >"$RUN/logs/compose.log" 2>&1; then
    tap_ok "docker-compose starts the router from examples/docker-compose.yml"
else
    tap_not_ok "docker-compose starts the router from examples/docker-compose.yml"
    tap_note_file 10 "$RUN/logs/compose.log"
fi
eth_order() {
    [ "$(docker exec vpsu-router cat /sys/class/net/eth0/address)" = "$(docker inspect -f \
        "{{(index .NetworkSettings.Networks \"$WEB\").MacAddress}}" vpsu-router)" ]
}
tap_check "the network priorities make $WEB eth0 and $LAN eth1" eth_order
ROUTER_MAC=$(docker exec vpsu-router cat /sys/class/net/eth0/address 2>/dev/null || echo 00:00:00:00:00:00)

router_status() { docker exec vpsu-router vpnsup status --json 2>/dev/null; }
state_is() { [ "$(router_status | jq -r .state 2>/dev/null)" = "$1" ]; }
state_is_not() { local s; s=$(router_status | jq -r .state 2>/dev/null) && [ -n "$s" ] && [ "$s" != "$1" ]; }
health_is() { [ "$(docker inspect -f '{{.State.Health.Status}}' vpsu-router 2>/dev/null)" = "$1" ]; }

if lab_wait_for 60 state_is TunnelUp; then
    json=$(router_status)
    # Time from the container's start (Docker's clock) to the TunnelUp transition (vpnsup's).
    took=$(python3 - "$(docker inspect -f '{{.State.StartedAt}}' vpsu-router)" "$json" <<'EOF'
import json, re, sys
from datetime import datetime
def parse(s):
    s = re.sub(r"(\.\d{6})\d*", r"\1", s.replace("Z", "+00:00"))
    return datetime.fromisoformat(s)
started = parse(sys.argv[1])
up = [t["at"] for t in json.loads(sys.argv[2])["transitions"] if t["to"] == "TunnelUp"]
print(f"{(parse(up[0]) - started).total_seconds():.3f}" if up else "?")
EOF
    )
    tap_ok "the router reaches TunnelUp"
    tap_note "figure: container start -> TunnelUp: $took s"
    TUNNEL_ADDR=$(jq -r '.tunnelAddress // empty' <<<"$json")
    TUNNEL_ADDR=${TUNNEL_ADDR%/*}
else
    tap_not_ok "the router reaches TunnelUp (state: $(router_status | jq -r .state 2>/dev/null || echo '?'))"
    TUNNEL_ADDR=
fi
pinned() { router_status | jq -e --arg ip "$SERVER_IP" '.resolvedRemotes["vpsu-vpn"] == [$ip]' >/dev/null; }
tap_check "the remote 'vpsu-vpn' was resolved through Docker's DNS and pinned as $SERVER_IP" pinned
tap_check "the router put $LAN_GW_CIDR on eth1" \
    sh -c "docker exec vpsu-router cat /proc/net/fib_trie | grep -q '$LAN_GW'"
tap_check "docker inspect reports the router healthy" lab_wait_for 15 health_is healthy

# ---- what the client gets ----

client_fetch() { docker exec vpsu-client curl -sS --max-time "${1:-3}" "http://$ECHO_IP/" 2>>"$RUN/logs/client.err"; }
via_tunnel() { [[ $1 == "$LAB_VPN_PREFIX"* ]]; }
seen=$(client_fetch 5 || true)
tap_check "the client reaches the echo only through the tunnel (the echo sees ${seen:-nothing}, not $CLIENT_IP)" \
    via_tunnel "$seen"

answer=$(docker exec vpsu-client dig +short +time=2 +tries=2 "@$ROGUE_DNS" "$LAB_DNS_NAME" 2>/dev/null || true)
dns_via_tunnel() {
    [ "$answer" = "$ECHO_IP" ] &&
        grep -q "query\[A\] $LAB_DNS_NAME from $LAB_VPN_PREFIX" "$RUN/inet/dns.log" &&
        ! grep -q "from ${LAN_NET%.*}\." "$RUN/inet/dns.log"
}
tap_check "DNS is enforced: a query to $ROGUE_DNS is answered by DNS=$ECHO_IP (${answer:-no answer}), reaching it through the tunnel" \
    dns_via_tunnel

forwarded=$(docker exec vpsu-vpn curl -sS --max-time 3 "http://$TUNNEL_ADDR:$FORWARD_PORT/" 2>/dev/null || true)
tap_check "the port forward works: the VPN side reaches $CLIENT_IP:$FORWARD_PORT at $TUNNEL_ADDR:$FORWARD_PORT (client saw ${forwarded:-nothing})" \
    via_tunnel "$forwarded"

# ---- the VPN server goes away: no way out ----

client_blocked() { ! docker exec vpsu-client curl -s --max-time 2 -o /dev/null "http://$ECHO_IP/"; }
ping_blocked() { ! docker exec vpsu-client ping -q -c 2 -i 0.3 -W 1 "$ECHO_IP" >/dev/null 2>&1; }
dns_blocked() { ! docker exec vpsu-client dig +short +time=1 +tries=1 "@$ECHO_IP" "$LAB_DNS_NAME" >/dev/null 2>&1; }
t0=$(now_ms)
docker stop -t 2 vpsu-vpn >/dev/null
if lab_wait_for 30 state_is_not TunnelUp; then
    tap_ok "the router leaves TunnelUp when the server stops ($(seconds_since "$t0") s; now $(router_status | jq -r .state))"
else
    tap_not_ok "the router leaves TunnelUp when the server stops (not within 30 s)"
fi
tap_check "docker inspect reports the router unhealthy" lab_wait_for 15 health_is unhealthy
tap_check "server down: the client cannot reach the echo (HTTP)" client_blocked
tap_check "server down: no ping gets out" ping_blocked
tap_check "server down: no DNS gets out" dns_blocked

t0=$(now_ms)
docker start vpsu-vpn >/dev/null
if lab_wait_for 60 state_is TunnelUp; then
    tap_ok "server back: TunnelUp again ($(seconds_since "$t0") s)"
else
    tap_not_ok "server back: TunnelUp again (not within 60 s)"
fi
seen=$(client_fetch 5 || true)
tap_check "server back: the client is through the tunnel again (${seen:-nothing})" via_tunnel "$seen"
tap_check "server back: docker inspect reports healthy" lab_wait_for 15 health_is healthy

# ---- the router itself killed: the client has no gateway, nothing else routes it ----

docker kill vpsu-router >/dev/null
tap_check "router killed: the client cannot reach the echo" client_blocked

# ---- accounting ----

kill -INT "$CAPTURE_PID"
wait "$CAPTURE_PID" || true
CAPTURE_PID=
captured=$(sed -n 's/^\([0-9]*\) packets\{0,1\} captured$/\1/p' "$RUN/logs/tcpdump.log" | tail -n 1)
received=$(sed -n 's/^\([0-9]*\) packets\{0,1\} received by filter$/\1/p' "$RUN/logs/tcpdump.log" | tail -n 1)
transport="arp or (ip src $ROUTER_WEB_IP and ip dst $SERVER_IP and (udp dst port $LAB_VPN_PORT or ip[6:2] & 0x1fff != 0))"
tcpdump -nn -r "$RUN/capture/web.pcap" "ether src host $ROUTER_MAC and not ($transport)" \
    >"$RUN/capture/router-leaks.txt" 2>/dev/null || true
tcpdump -nn -r "$RUN/capture/web.pcap" "net $LAN_NET" >"$RUN/capture/lan-leaks.txt" 2>/dev/null || true
router_frames=$(tcpdump -nn -r "$RUN/capture/web.pcap" "ip src $ROUTER_WEB_IP" 2>/dev/null | wc -l)
leaks=$(($(wc -l <"$RUN/capture/router-leaks.txt") + $(wc -l <"$RUN/capture/lan-leaks.txt")))
complete() { [ -n "$captured" ] && [ "$captured" = "$received" ] && [ "$router_frames" -gt 0 ]; }
tap_check "the capture on $WEB is complete ($captured captured, $received received, $router_frames from the router)" complete
tap_check "nothing leaks onto $WEB: the router sent only OpenVPN's transport to $SERVER_IP:$LAB_VPN_PORT, no LAN address seen ($leaks leaked)" \
    test "$leaks" -eq 0
[ "$leaks" -eq 0 ] || head -n 20 "$RUN/capture/router-leaks.txt" "$RUN/capture/lan-leaks.txt" | sed 's/^/#   /'
lan_sources() { awk '{print $2}' "$RUN/inet/echo.log" | grep -c "^${LAN_NET%.*}\." || true; }
tap_check "the echo never saw a LAN source address" test "$(lan_sources)" -eq 0
tap_note "figure: Docker test run time $(seconds_since "$T_START") s"
