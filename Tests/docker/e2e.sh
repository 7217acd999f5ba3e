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
#
# Images (DOCKER_TARGETS, default "prebuilt runtime"): `prebuilt` copies dist/vpnsup into the
# image; `runtime`, the Dockerfile's default target, compiles vpnsup in its build stage, on an
# image made from the Swift toolchain installed here (scripts/swift-builder-image.sh). The whole
# scenario runs against each. DOCKER_SCENARIO_TARGETS (default: all of DOCKER_TARGETS) limits the
# scenario to some of them (`none`: to none); the others are still built and checked (size,
# files, --version, that the container commits its lockdown and reaches TunnelConnecting).
#
# The engine is the test's own (Tests/docker/engine.sh): dockerd in a network namespace of its
# own, so nothing of Docker's (docker0, bridges, iptables chains, FORWARD policy, ip_forward)
# reaches the host's network, and the host rules go into that namespace's DOCKER-USER. Every
# container and network goes at the end, even when a check fails; the engine is stopped by its
# pid, and its images and state are removed unless KEEP_IMAGES=1 (a cache for the next run:
# the base, builder and lab-tools images take minutes to make). DOCKER_E2E_KEEP=1 keeps the run
# directory.
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
DOCKER_TARGETS=${DOCKER_TARGETS:-prebuilt runtime}
DOCKER_SCENARIO_TARGETS=${DOCKER_SCENARIO_TARGETS:-$DOCKER_TARGETS}
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
CONTAINERS=(vpsu-client vpsu-router vpsu-vpn vpsu-echo vpsu-smoke)

# The lab's PKI, server and client profiles, and echo, with this scenario's addresses. The
# client profile names the server by its container name: Docker's embedded DNS (127.0.0.11)
# answers vpnsup's resolution over the container's loopback.
LAB_VPN_SERVER_IP=$SERVER_IP
LAB_VPN_NAME=vpsu-vpn
RUN_BASE=$(mktemp -d /var/tmp/vpnsup-docker.XXXXXX)
mkdir -p "$RUN_BASE/logs"
LAB_RUNDIR=$RUN_BASE
RUN=$RUN_BASE

ENGINE_STARTED=no
HOST_RULES_APPLIED=no
CAPTURE_PID=

log() { echo "docker-e2e: $*" >&2; }
now_ms() { lab_now_ms; }
seconds_since() { lab_ms_to_s $(($(now_ms) - $1)); }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1000000 }'; }

remove_scenario() {
    docker rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true
    docker network rm "$LAN" "$WEB" >/dev/null 2>&1 || true
}

remove_host_rules() {
    [ "$HOST_RULES_APPLIED" = yes ] || return 0
    HOST_RULES_APPLIED=no
    docker_engine_exec "$VPNSUP" host-rules --subnet "$LAN_NET" --bridge "$LAN" --remove >/dev/null ||
        tap_not_ok "host-rules --remove at clean-up"
}

stop_capture() {
    [ -n "$CAPTURE_PID" ] || return 0
    kill -INT "$CAPTURE_PID" 2>/dev/null
    wait "$CAPTURE_PID" 2>/dev/null || true
    CAPTURE_PID=
}

# The router container's network namespace, entered from the host by the container's pid: the
# image has no shell nor `ip` to run inside it.
in_router() { nsenter -t "$(docker inspect -f '{{.State.Pid}}' vpsu-router)" -n "$@"; }
router_mac() { in_router ip -o link show dev eth0 | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }
router_has_gateway() { in_router ip -4 -o addr show dev eth1 | grep -q " $LAN_GW_CIDR "; }

finish() {
    local status=$?
    trap - EXIT
    set +e
    stop_capture
    if [ "$ENGINE_STARTED" = yes ]; then
        if [ "$TAP_FAIL" -gt 0 ] || [ "$status" -ne 0 ]; then
            tap_note "the end of the router's log:"
            docker logs vpsu-router 2>&1 | tail -n 30 | sed 's/^/#   /'
        fi
        remove_host_rules
        remove_scenario
        docker_engine_stop || tap_not_ok "the test's Docker engine stops and leaves no process behind"
        if [ "${KEEP_IMAGES:-0}" = 1 ]; then
            tap_note "KEEP_IMAGES=1: the engine's images stay in $DOCKER_ENGINE_ROOT"
        else
            tap_check "the engine's images and state are removed ($DOCKER_ENGINE_ROOT)" test ! -e "$DOCKER_ENGINE_ROOT"
        fi
        tap_check "the engine's network namespace is gone and no docker0 was made on the host" \
            sh -c "! ip netns list | grep -q '^$DOCKER_ENGINE_NS\\b' && ! ip link show dev docker0 >/dev/null 2>&1"
    fi
    if [ "$TAP_FAIL" -eq 0 ] && [ "$status" -eq 0 ] && [ "${DOCKER_E2E_KEEP:-0}" != 1 ]; then
        rm -rf "${RUN_BASE:?}"
    else
        tap_note "run files kept in $RUN_BASE"
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

host_docker0=$(ip link show dev docker0 >/dev/null 2>&1 && echo yes || echo no)
if ! docker_engine_start "$RUN_BASE/logs"; then
    tap_not_ok "the test's Docker engine starts in its own network namespace"
    tap_note_file 20 "$RUN_BASE/logs/dockerd.log"
    exit 1
fi
ENGINE_STARTED=yes
tap_note "docker engine $(docker version -f '{{.Server.Version}}' 2>/dev/null), storage $(docker info -f '{{.Driver}}' 2>/dev/null), in namespace $DOCKER_ENGINE_NS"
[ "$host_docker0" = yes ] || tap_check "the engine made no docker0 on the host (only in its namespace)" \
    sh -c "! ip link show dev docker0 >/dev/null 2>&1 && ip -n '$DOCKER_ENGINE_NS' link show dev docker0 >/dev/null"
remove_scenario # leftovers of an interrupted run with KEEP_IMAGES=1

t0=$(now_ms)
bash "$REPO/scripts/debian-base-image.sh"
base=$(docker image inspect -f '{{.Size}}' debian:bookworm-slim)
mkdir -p "$REPO/dist"
[ "$VPNSUP" -ef "$REPO/dist/vpnsup" ] || install -m 0755 "$VPNSUP" "$REPO/dist/vpnsup"
EXPECTED_COMMIT=$(bash "$REPO/scripts/commit.sh")

# image_check IMAGE LABEL VERSION_LINE: the files, the metadata and the version of an image.
image_check() {
    local image=$1 label=$2 want_version=$3 size files version
    size=$(docker image inspect -f '{{.Size}}' "$image")
    tap_note "figure: image $image ($label): $(mb "$size") MB ($size bytes; debian:bookworm-slim alone is $(mb "$base") MB)"
    metadata_ok() {
        [ "$(docker image inspect -f '{{json .Config.Entrypoint}}' "$image")" = '["/usr/local/bin/vpnsup","run"]' ] &&
            [ "$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$image")" = '["CMD","/usr/local/bin/vpnsup","health"]' ] &&
            [ "$(docker image inspect -f '{{.Config.StopSignal}}' "$image")" = SIGTERM ] &&
            [ "$(docker image inspect -f '{{json .Config.Volumes}}' "$image")" = '{"/config":{}}' ]
    }
    tap_check "$label: ENTRYPOINT vpnsup run, HEALTHCHECK vpnsup health, STOPSIGNAL SIGTERM, VOLUME /config" metadata_ok
    # The image's files, from an exported container: no shell, no package manager.
    docker create --name vpsu-smoke "$image" >/dev/null
    docker export vpsu-smoke >"$RUN_BASE/logs/export-$label.tar"
    tar -tf "$RUN_BASE/logs/export-$label.tar" | sed 's,/$,,' | sort >"$RUN_BASE/logs/files-$label.txt"
    # Regular files only (type '-'), for the list of libraries below.
    tar -tvf "$RUN_BASE/logs/export-$label.tar" | awk '$1 ~ /^-/ { print $NF }' | sort >"$RUN_BASE/logs/regular-$label.txt"
    # The size goal is 30 MB plus what WireGuard's userspace plane costs (the wireguard-go binary,
    # which came after the goal was set); the figure also says how far from 30 MB alone it is.
    wireguard_go=$(tar -tvf "$RUN_BASE/logs/export-$label.tar" | awk '$NF == "usr/bin/wireguard-go" { print $3 }')
    vpnsup_size=$(tar -tvf "$RUN_BASE/logs/export-$label.tar" | awk '$NF ~ /(^|\/)vpnsup$/ { print $3 }')
    goal=$((30000000 + ${wireguard_go:-0}))
    tap_note "figure: image $label: $(mb "$size") MB, vpnsup $(mb "${vpnsup_size:-0}") MB, wireguard-go $(mb "${wireguard_go:-0}") MB; without wireguard-go $(mb $((size - ${wireguard_go:-0}))) MB"
    tap_check "$label: the image holds wireguard-go and is at most 30 MB plus wireguard-go, $(mb "$goal") MB ($(mb "$size") MB)" \
        test -n "$wireguard_go" -a "$size" -le "$goal"
    rm -f "$RUN_BASE/logs/export-$label.tar"
    docker rm -f vpsu-smoke >/dev/null
    files=$(grep -vc '/$' "$RUN_BASE/logs/files-$label.txt" || true)
    distroless() {
        grep -qx 'usr/local/bin/vpnsup' "$RUN_BASE/logs/files-$label.txt" &&
            grep -qx 'usr/sbin/openvpn' "$RUN_BASE/logs/files-$label.txt" &&
            grep -qx 'usr/bin/wireguard-go' "$RUN_BASE/logs/files-$label.txt" &&
            ! grep -qE '^(usr/)?bin/(sh|bash|dash)$|^usr/bin/(apt|dpkg)$' "$RUN_BASE/logs/files-$label.txt"
    }
    tap_check "$label: distroless: vpnsup, openvpn and wireguard-go, no shell, no apt or dpkg ($files entries)" distroless
    tap_note "figure: image $label holds: $(sed 's,.*/,,' "$RUN_BASE/logs/regular-$label.txt" | xargs)"
    version=$(docker run --rm --entrypoint /usr/local/bin/vpnsup "$image" --version 2>&1 || true)
    tap_check "$label: vpnsup --version in the image: '$version'" test "$version" = "$want_version"
    # Read whole, then matched: grep -q closing the pipe early would fail the run under pipefail.
    openvpn_version=$(docker run --rm --entrypoint /usr/sbin/openvpn "$image" --version 2>&1 || true)
    openvpn_runs() { [[ $openvpn_version == "OpenVPN 2.6"* ]]; }
    tap_check "$label: OpenVPN runs in the image (its libraries are all there)" openvpn_runs
}

# smoke IMAGE LABEL: the container alone (no networks but its own): it commits its lockdown and,
# with a literal remote nobody answers, stays TunnelConnecting, unhealthy.
smoke() {
    local image=$1 label=$2 state
    mkdir -p "$RUN_BASE/smoke"
    printf 'client\ndev tun\nproto udp\nremote 192.0.2.1 1194\nnobind\nauth-user-pass\n' >"$RUN_BASE/smoke/client.ovpn"
    (umask 077 && printf 'user\npass\n' >"$RUN_BASE/smoke/credentials")
    docker run -d --name vpsu-smoke --cap-add NET_ADMIN --device /dev/net/tun -v "$RUN_BASE/smoke:/config:ro" \
        -v "$RUN_BASE/smoke/credentials:/run/secrets/openvpn_credentials:ro" \
        -e CONFIG=client.ovpn -e IP_ADDR=172.22.0.1/24 -e LAN_IF=eth0 -e WAN_IF=lo "$image" >/dev/null
    connecting() { state=$(docker exec vpsu-smoke vpnsup status --json 2>/dev/null | jq -r .state 2>/dev/null) && [ "$state" = TunnelConnecting ]; }
    tap_check "$label: a container of the image alone commits its ruleset and reaches TunnelConnecting" lab_wait_for 30 connecting
    tap_last_failed && docker logs vpsu-smoke 2>&1 | tail -n 10 | sed 's/^/#   /'
    docker rm -f vpsu-smoke >/dev/null
}

for target in $DOCKER_TARGETS; do
    t1=$(now_ms)
    case $target in
    prebuilt)
        if docker build -q --target prebuilt -t vpnsup:e2e-prebuilt "$REPO" >"$RUN_BASE/logs/build-prebuilt.log" 2>&1; then
            tap_ok "the image builds (target prebuilt, dist/vpnsup) in $(seconds_since "$t1") s"
            image_check vpnsup:e2e-prebuilt prebuilt "$("$REPO/dist/vpnsup" --version)"
        else
            tap_not_ok "the image builds (target prebuilt)"
            tap_note_file 20 "$RUN_BASE/logs/build-prebuilt.log"
            exit 1
        fi
        ;;
    runtime)
        if builder=$(bash "$REPO/scripts/swift-builder-image.sh" 2>"$RUN_BASE/logs/builder.log"); then
            tap_ok "the Swift builder image $builder is made from the toolchain here ($(seconds_since "$t1") s)"
            tap_note "figure: builder image $builder: $(mb "$(docker image inspect -f '{{.Size}}' "$builder")") MB"
        else
            tap_not_ok "the Swift builder image is made from the toolchain here"
            tap_note_file 20 "$RUN_BASE/logs/builder.log"
            exit 1
        fi
        t1=$(now_ms)
        if docker build -q --build-arg SWIFT_IMAGE="$builder" --build-arg VPNSUP_COMMIT="$EXPECTED_COMMIT" \
            -t vpnsup:e2e-runtime "$REPO" >"$RUN_BASE/logs/build-runtime.log" 2>&1; then
            tap_ok "the image builds from the Dockerfile's own build stage (default target) in $(seconds_since "$t1") s"
            image_check vpnsup:e2e-runtime runtime "$("$REPO/dist/vpnsup" --version | sed 's/(commit .*)/(commit '"$EXPECTED_COMMIT"')/')"
        else
            tap_not_ok "the image builds from the Dockerfile's own build stage (default target)"
            tap_note_file 30 "$RUN_BASE/logs/build-runtime.log"
            exit 1
        fi
        ;;
    *)
        tap_not_ok "DOCKER_TARGETS names $target: prebuilt or runtime"
        exit 1
        ;;
    esac
    [[ " $DOCKER_SCENARIO_TARGETS " == *" $target "* ]] || smoke "vpnsup:e2e-$target" "$target"
done
if ! docker build -q -t "$TOOLS_IMAGE" - <"$REPO/Tests/docker/labtools.Dockerfile" >"$RUN_BASE/logs/tools-build.log" 2>&1; then
    tap_not_ok "the lab-tools image builds"
    tap_note_file 20 "$RUN_BASE/logs/tools-build.log"
    exit 1
fi
tap_note "figure: engine and images ready in $(seconds_since "$t0") s"

# ---- the original README, step by step ----

scenario() { # IMAGE LABEL: the whole scenario against one image; every check names LABEL
IMAGE=$1
local label=$2
LAB_RUNDIR=$RUN_BASE/$label
RUN=$LAB_RUNDIR
mkdir -p "$RUN"/{logs,inet,client,capture}
_lab_pki
_lab_configs
_lab_echo_script
cp "$RUN/inet/echo.py" "$RUN/client/echo.py"
tap_note "---- the scenario with $IMAGE ($label) ----"

# 1. The isolated network, the default gateway reserved as an aux address; the web network.
docker network create -d bridge -o com.docker.network.bridge.name="$WEB" \
    --subnet "$WEB_NET" "$WEB" >/dev/null
docker network create -d bridge -o com.docker.network.bridge.name="$LAN" --internal \
    --subnet "$LAN_NET" --gateway "$LAN_DOCKER_GW" --aux-address "DefaultGatewayIPv4=$LAN_GW" \
    "$LAN" >/dev/null
tap_ok "$label: networks $WEB and $LAN (--internal, --aux-address DefaultGatewayIPv4=$LAN_GW) created"

# 2. The host's DOCKER-USER rules, which the original asked users to write by hand.
user_rules() { docker_engine_exec iptables -w -S DOCKER-USER | grep -c -- "$LAN_NET" || true; }
if docker_engine_exec "$VPNSUP" host-rules --network "$LAN" --apply >"$RUN/logs/host-rules.log" 2>&1; then
    HOST_RULES_APPLIED=yes
fi
first=$(user_rules)
docker_engine_exec "$VPNSUP" host-rules --network "$LAN" --apply >>"$RUN/logs/host-rules.log" 2>&1 || true
second=$(user_rules)
tap_check "$label: host-rules --apply installs the forwarding rules for $LAN ($first rules), a second run adds none ($second)" \
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
client_gateway() { grep -q "via $LAN_GW" <<<"$(docker exec vpsu-client ip -4 route show default)"; }
tap_check "$label: the client's default route is the aux address $LAN_GW (Docker's DefaultGatewayIPv4)" client_gateway

# The capture on the web bridge, everything on it, from before the router starts, so its start-up
# is watched too. The accounting keeps what the router sent and anything with a LAN address.
# Started directly, not through a function (which would run in a subshell): $! is tcpdump itself,
# so the SIGINT that ends the capture reaches it.
ip netns exec "$DOCKER_ENGINE_NS" tcpdump -n -i "$WEB" --immediate-mode -U -w "$RUN/capture/web.pcap" >"$RUN/logs/tcpdump.log" 2>&1 &
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
    tap_ok "$label: docker-compose starts the router from examples/docker-compose.yml"
else
    tap_not_ok "$label: docker-compose starts the router from examples/docker-compose.yml"
    tap_note_file 10 "$RUN/logs/compose.log"
fi
eth_order() {
    [ "$(router_mac)" = "$(docker inspect -f \
        "{{(index .NetworkSettings.Networks \"$WEB\").MacAddress}}" vpsu-router)" ]
}
tap_check "$label: the network priorities make $WEB eth0 and $LAN eth1" eth_order
ROUTER_MAC=$(router_mac 2>/dev/null || echo 00:00:00:00:00:00)

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
    tap_ok "$label: the router reaches TunnelUp"
    tap_note "figure: container start -> TunnelUp: $took s"
    TUNNEL_ADDR=$(jq -r '.tunnelAddress // empty' <<<"$json")
    TUNNEL_ADDR=${TUNNEL_ADDR%/*}
else
    tap_not_ok "$label: the router reaches TunnelUp (state: $(router_status | jq -r .state 2>/dev/null || echo '?'))"
    TUNNEL_ADDR=
fi
pinned() { router_status | jq -e --arg ip "$SERVER_IP" '.resolvedRemotes["vpsu-vpn"] == [$ip]' >/dev/null; }
tap_check "$label: the remote 'vpsu-vpn' was resolved through Docker's DNS and pinned as $SERVER_IP" pinned
tap_check "$label: the router put $LAN_GW_CIDR on eth1" \
    router_has_gateway
tap_check "$label: docker inspect reports the router healthy" lab_wait_for 15 health_is healthy

# ---- what the client gets ----

client_fetch() { docker exec vpsu-client curl -sS --max-time "${1:-3}" "http://$ECHO_IP/" 2>>"$RUN/logs/client.err"; }
via_tunnel() { [[ $1 == "$LAB_VPN_PREFIX"* ]]; }
seen=$(client_fetch 5 || true)
tap_check "$label: the client reaches the echo only through the tunnel (the echo sees ${seen:-nothing}, not $CLIENT_IP)" \
    via_tunnel "$seen"

answer=$(docker exec vpsu-client dig +short +time=2 +tries=2 "@$ROGUE_DNS" "$LAB_DNS_NAME" 2>/dev/null || true)
dns_via_tunnel() {
    [ "$answer" = "$ECHO_IP" ] &&
        grep -q "query\[A\] $LAB_DNS_NAME from $LAB_VPN_PREFIX" "$RUN/inet/dns.log" &&
        ! grep -q "from ${LAN_NET%.*}\." "$RUN/inet/dns.log"
}
tap_check "$label: DNS is enforced: a query to $ROGUE_DNS is answered by DNS=$ECHO_IP (${answer:-no answer}), reaching it through the tunnel" \
    dns_via_tunnel

forwarded=$(docker exec vpsu-vpn curl -sS --max-time 3 "http://$TUNNEL_ADDR:$FORWARD_PORT/" 2>/dev/null || true)
tap_check "$label: the port forward works: the VPN side reaches $CLIENT_IP:$FORWARD_PORT at $TUNNEL_ADDR:$FORWARD_PORT (client saw ${forwarded:-nothing})" \
    via_tunnel "$forwarded"

# ---- the VPN server goes away: no way out ----

client_blocked() { ! docker exec vpsu-client curl -s --max-time 2 -o /dev/null "http://$ECHO_IP/"; }
ping_blocked() { ! docker exec vpsu-client ping -q -c 2 -i 0.3 -W 1 "$ECHO_IP" >/dev/null 2>&1; }
dns_blocked() { ! docker exec vpsu-client dig +short +time=1 +tries=1 "@$ECHO_IP" "$LAB_DNS_NAME" >/dev/null 2>&1; }
t0=$(now_ms)
docker stop -t 2 vpsu-vpn >/dev/null
if lab_wait_for 30 state_is_not TunnelUp; then
    tap_ok "$label: the router leaves TunnelUp when the server stops ($(seconds_since "$t0") s; now $(router_status | jq -r .state))"
else
    tap_not_ok "$label: the router leaves TunnelUp when the server stops (not within 30 s)"
fi
tap_check "$label: docker inspect reports the router unhealthy" lab_wait_for 15 health_is unhealthy
tap_check "$label: server down: the client cannot reach the echo (HTTP)" client_blocked
tap_check "$label: server down: no ping gets out" ping_blocked
tap_check "$label: server down: no DNS gets out" dns_blocked

t0=$(now_ms)
docker start vpsu-vpn >/dev/null
if lab_wait_for 60 state_is TunnelUp; then
    tap_ok "$label: server back: TunnelUp again ($(seconds_since "$t0") s)"
else
    tap_not_ok "$label: server back: TunnelUp again (not within 60 s)"
fi
seen=$(client_fetch 5 || true)
tap_check "$label: server back: the client is through the tunnel again (${seen:-nothing})" via_tunnel "$seen"
tap_check "$label: server back: docker inspect reports healthy" lab_wait_for 15 health_is healthy

# ---- the router itself killed: the client has no gateway, nothing else routes it ----

docker kill vpsu-router >/dev/null
tap_check "$label: router killed: the client cannot reach the echo" client_blocked

# ---- accounting ----

stop_capture
captured=$(sed -n 's/^\([0-9]*\) packets\{0,1\} captured$/\1/p' "$RUN/logs/tcpdump.log" | tail -n 1)
received=$(sed -n 's/^\([0-9]*\) packets\{0,1\} received by filter$/\1/p' "$RUN/logs/tcpdump.log" | tail -n 1)
transport="arp or (ip src $ROUTER_WEB_IP and ip dst $SERVER_IP and (udp dst port $LAB_VPN_PORT or ip[6:2] & 0x1fff != 0))"
tcpdump -nn -r "$RUN/capture/web.pcap" "ether src host $ROUTER_MAC and not ($transport)" \
    >"$RUN/capture/router-leaks.txt" 2>/dev/null || true
tcpdump -nn -r "$RUN/capture/web.pcap" "net $LAN_NET" >"$RUN/capture/lan-leaks.txt" 2>/dev/null || true
router_frames=$(tcpdump -nn -r "$RUN/capture/web.pcap" "ip src $ROUTER_WEB_IP" 2>/dev/null | wc -l)
leaks=$(($(wc -l <"$RUN/capture/router-leaks.txt") + $(wc -l <"$RUN/capture/lan-leaks.txt")))
complete() { [ -n "$captured" ] && [ "$captured" = "$received" ] && [ "$router_frames" -gt 0 ]; }
tap_check "$label: the capture on $WEB is complete ($captured captured, $received received, $router_frames from the router)" complete
tap_check "$label: nothing leaks onto $WEB: the router sent only OpenVPN's transport to $SERVER_IP:$LAB_VPN_PORT, no LAN address seen ($leaks leaked)" \
    test "$leaks" -eq 0
[ "$leaks" -eq 0 ] || head -n 20 "$RUN/capture/router-leaks.txt" "$RUN/capture/lan-leaks.txt" | sed 's/^/#   /'
lan_sources() { awk '{print $2}' "$RUN/inet/echo.log" | grep -c "^${LAN_NET%.*}\." || true; }
tap_check "$label: the echo never saw a LAN source address" test "$(lan_sources)" -eq 0
remove_host_rules
remove_scenario
}

for target in $DOCKER_SCENARIO_TARGETS; do
    [ "$target" = none ] || scenario "vpnsup:e2e-$target" "$target"
done
tap_note "figure: Docker test run time $(seconds_since "$T_START") s"
