# shellcheck shell=bash
# Tests/lab/features.sh — the end-to-end checks of DNS enforcement, port forwards, IPv6 and the
# MSS clamp, sourced by e2e.sh (needs lab/lab.sh and Tests/lab/tap.sh sourced first).
#
#   feature_env           DNS and PORT_FWD lines for vpnsup's environment
#   feature_setup         before vpnsup starts: rogue resolver, client targets, IPv6 on client,
#                         ISP and internet host, LAN MTU 9000 (so the clamp has something to do)
#   feature_router_ipv6   once vpnsup's lockdown is committed: the router's IPv6
#   feature_checks        with the tunnel up: (a) the client's DNS, (b) the router's own DNS,
#                         (c) port forwards, (d) IPv6, the MSS clamp, (e) the router's own
#                         addresses as the LAN sees them
#   feature_capture_checks  after lab_leaks: no IPv6 and no DNS packet in the WAN capture
#
# The enforced DNS server is the echo host's dnsmasq (LAB_ECHO_IP, answers *.echo.lab with
# LAB_ECHO_IP); it is reachable only through the tunnel. Queries go to other addresses: the rogue
# resolver (reachable through the tunnel too, answers everything with LAB_ROGUE_ANSWER) and the
# ISP's WAN address (routed out of the WAN, not through the tunnel). Each query asks a name of its
# own, so the servers' logs tell which query arrived where and from which source.

FEATURE_DNS=$LAB_ECHO_IP
# tcp only, udp only with another public port, and the original IP:PORT form (tcp and udp).
FEATURE_PORT_FWD="8080:$LAB_CLIENT_IP:80/tcp,6000:$LAB_CLIENT_IP:7000/udp $LAB_CLIENT_IP:9000"
# The targets listen on every forwarded target port with both protocols, so that a forward with
# the wrong protocol (tcp 6000 -> 7000, udp 8080 -> 80) would reach something and be seen.
FEATURE_TCP_TARGETS=80,7000,9000
FEATURE_UDP_TARGETS=80,7000,9000
FEATURE_LAN_MTU=9000
FEATURE_NEGATIVE_WAIT=1 # seconds a connection that must not get through is given

feature_env() {
    echo DNS="$FEATURE_DNS"
    echo PORT_FWD="$FEATURE_PORT_FWD"
}

feature_setup() {
    lab_rogue_dns_start
    lab_targets_start "$FEATURE_TCP_TARGETS" "$FEATURE_UDP_TARGETS"
    lab_ipv6_up
    # A LAN with jumbo frames: the client's SYNs offer MSS 8960, more than the tunnel carries.
    lab_exec client ip link set eth0 mtu "$FEATURE_LAN_MTU"
    lab_exec router ip link set eth1 mtu "$FEATURE_LAN_MTU"
}

_feature_table_committed() { lab_exec router nft list table inet vpnsup >/dev/null 2>&1; }

feature_router_ipv6() {
    if lab_wait_for 10 _feature_table_committed; then
        lab_ipv6_router_up
    else
        tap_note "no table inet vpnsup in the router after 10 s: its IPv6 stays off"
    fi
}

# ---- helpers ----

# _feature_dig NODE SERVER NAME [DIG OPTION...]: the first answer line (empty when none).
_feature_dig() {
    local node=$1 server=$2 name=$3
    shift 3
    lab_exec "$node" dig +short +time=2 +tries=1 "$@" "@$server" "$name" 2>>"$LAB_RUNDIR/logs/dig.err" |
        head -n 1 || true
}

_feature_tunnel_ip() {
    lab_exec router ip -4 -o addr show dev tun0 2>/dev/null |
        sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p' | head -n 1
}

# The enforced server logged NAME, from tunnel addresses only; the rogue one did not see it.
_feature_enforced_saw() {
    local name=$1 src
    lab_wait_for 2 test -n "$(lab_dns_query_sources dns "$name")" || return 1
    for src in $(lab_dns_query_sources dns "$name"); do via_tunnel "$src" || return 1; done
    [ -z "$(lab_dns_query_sources rogue-dns "$name")" ]
}

_feature_dns_case() { # DESCRIPTION NODE SERVER NAME [DIG OPTION...]
    local desc=$1 node=$2 server=$3 name=$4 answer
    shift 4
    answer=$(_feature_dig "$node" "$server" "$name" "$@")
    tap_check "$desc: answered by the enforced server ($name -> ${answer:-no answer}; the rogue says $LAB_ROGUE_ANSWER)" \
        test "$answer" = "$LAB_ECHO_IP"
    tap_check "$desc: the enforced server saw it from the tunnel ($(lab_dns_query_sources dns "$name" | xargs)), the rogue did not" \
        _feature_enforced_saw "$name"
}

_feature_targets_saw() { grep -qF -- "$1" <<<"$(lab_targets_log)"; }
_feature_targets_quiet() { ! grep -qF -- "$1" <<<"$(lab_targets_log)"; }

# From the VPN side (the ISP namespace runs the server): fetch PATH from ADDR:PORT.
_feature_isp_fetch() { # ADDR PORT PATH SECONDS
    lab_exec isp curl -sS --max-time "$4" "http://$1:$2$3" 2>>"$LAB_RUNDIR/logs/isp-fetch.err"
}

# _feature_attempt NAME CMD...: start CMD in the background, output discarded; _feature_collect
# waits for every attempt started and records its exit status for _feature_failed NAME.
declare -gA FEATURE_RC=()
FEATURE_PENDING=()
_feature_attempt() {
    local name=$1
    shift
    "$@" >/dev/null 2>&1 &
    FEATURE_PENDING+=("$name:$!")
}
_feature_collect() {
    local entry rc
    for entry in "${FEATURE_PENDING[@]}"; do
        rc=0
        wait "${entry##*:}" || rc=$?
        FEATURE_RC[${entry%%:*}]=$rc
    done
    FEATURE_PENDING=()
}
_feature_failed() { [ "${FEATURE_RC[$1]:-0}" -ne 0 ]; }
_feature_succeeded() { [ "${FEATURE_RC[$1]:-1}" -eq 0 ]; }

# The attempt NAME failed, and the targets never logged NAME (it is the path or datagram sent).
_feature_not_through() { _feature_failed "$1" && _feature_targets_quiet "$1"; }

_feature_both_ways() { # BODY REPLY PORT: both answered from the tunnel side, both logged on PORT
    via_tunnel "$1" && via_tunnel "$2" &&
        _feature_targets_saw " $3 /fwd-tcp-$3" && _feature_targets_saw " $3 fwd-udp-$3"
}

_feature_ping6() { lab_exec "$1" ping -6 -q -n -c 1 -W "${3:-1}" "$2" >/dev/null 2>&1; }

_feature_nd_resolved() {
    local neigh
    neigh=$(lab_exec client ip -6 neigh show "$LAB_ROUTER_LAN_LL" dev eth0)
    [[ $neigh == *lladdr* ]] && [[ $neigh != *FAILED* ]]
}

# Packets in the WAN capture so far that match FILTER (the capture keeps running).
_feature_live_count() {
    local pcap
    pcap=$(cat "$LAB_RUNDIR/capture/current" 2>/dev/null) || { echo 0; return 0; }
    tcpdump -nn -r "$pcap" "$1" 2>/dev/null | wc -l | tr -d ' '
}

# The kill switch must hold whatever the routing table says: with the enforced server routed out
# of the WAN for a moment (a host route via the ISP), queries still redirected to it must not
# leave by the WAN. The router's query goes to an address routed through the tunnel, so a filter
# that judges the packet by its route before redirection would let it out.
feature_dns_detour_check() {
    local before after route="$LAB_ECHO_IP/32 via $LAB_ISP_WAN_IP dev eth0"
    before=$(_feature_live_count "port 53")
    # shellcheck disable=SC2086 # the route's words
    lab_exec router ip route add $route
    _feature_attempt detour-router _feature_dig router "$LAB_ROGUE_DNS_IP" router-detour.echo.lab +time=1
    _feature_attempt detour-client _feature_dig client "$LAB_ROGUE_DNS_IP" client-detour.echo.lab +time=1
    _feature_collect
    # shellcheck disable=SC2086
    lab_exec router ip route del $route
    sleep 0.2
    after=$(_feature_live_count "port 53")
    tap_check "enforced server routed out of the WAN for a moment: redirected queries (router's, client's) do not leave by the WAN ($((after - before)) DNS packets there)" \
        test "$after" -eq "$before"
    tap_last_failed && tcpdump -nn -r "$(cat "$LAB_RUNDIR/capture/current")" "port 53" 2>/dev/null |
        tail -n 4 | sed 's/^/#   /'
    return 0
}

# ---- with the tunnel up ----

feature_checks() {
    local tun answer body reply

    # (a) and (b): DNS, from the client and from the router itself, udp and tcp, to an address
    # routed through the tunnel (the rogue) and to one routed out of the WAN (the ISP).
    answer=$(_feature_dig isp "$LAB_ROGUE_DNS_IP" control.echo.lab)
    tap_check "control: asked directly (from the ISP), the rogue resolver answers $LAB_ROGUE_ANSWER (got ${answer:-none})" \
        test "$answer" = "$LAB_ROGUE_ANSWER"
    _feature_dns_case "client DNS to the rogue $LAB_ROGUE_DNS_IP (udp)" client "$LAB_ROGUE_DNS_IP" client-udp.echo.lab
    _feature_dns_case "client DNS to the rogue $LAB_ROGUE_DNS_IP (tcp)" client "$LAB_ROGUE_DNS_IP" client-tcp.echo.lab +tcp
    _feature_dns_case "client DNS to the WAN address $LAB_ISP_WAN_IP (udp)" client "$LAB_ISP_WAN_IP" client-wan.echo.lab
    _feature_dns_case "router's own DNS to the rogue $LAB_ROGUE_DNS_IP (udp)" router "$LAB_ROGUE_DNS_IP" router-udp.echo.lab
    _feature_dns_case "router's own DNS to the rogue $LAB_ROGUE_DNS_IP (tcp)" router "$LAB_ROGUE_DNS_IP" router-tcp.echo.lab +tcp
    _feature_dns_case "router's own DNS to the WAN address $LAB_ISP_WAN_IP (udp)" router "$LAB_ISP_WAN_IP" router-wan.echo.lab

    feature_dns_detour_check

    # (c) port forwards, from the VPN side to the router's tunnel address.
    tun=$(_feature_tunnel_ip)
    tap_note "router's tunnel address: ${tun:-none}; PORT_FWD=$FEATURE_PORT_FWD"
    tun=${tun:-${LAB_VPN_PREFIX}2}
    body=$(_feature_isp_fetch "$tun" 8080 /fwd-tcp-8080 3 || true)
    tap_check "port forward tcp $tun:8080 -> $LAB_CLIENT_IP:80: the client answers (it saw ${body:-nothing})" \
        via_tunnel "$body"
    tap_check "port forward tcp 8080: the request reached the client's port 80" \
        _feature_targets_saw " 80 /fwd-tcp-8080"
    tap_last_failed && tap_note_file 10 "$LAB_RUNDIR/client/targets.log"
    reply=$(lab_udp_ask isp "$tun" 6000 fwd-udp-6000 3 || true)
    tap_check "port forward udp $tun:6000 -> $LAB_CLIENT_IP:7000: the client answers (it saw ${reply:-nothing})" \
        via_tunnel "$reply"
    tap_check "port forward udp 6000: the datagram reached the client's port 7000" \
        _feature_targets_saw " 7000 fwd-udp-6000"
    body=$(_feature_isp_fetch "$tun" 9000 /fwd-tcp-9000 3 || true)
    reply=$(lab_udp_ask isp "$tun" 9000 fwd-udp-9000 3 || true)
    tap_check "port forward in the original form $LAB_CLIENT_IP:9000: tcp and udp reach the client (${body:-nothing}, ${reply:-nothing})" \
        _feature_both_ways "$body" "$reply" 9000

    # What must not get through is given FEATURE_NEGATIVE_WAIT seconds, all attempts at once.
    local w=$FEATURE_NEGATIVE_WAIT inbound_before inbound_after
    inbound_before=$(lab_targets_inbound)
    _feature_attempt nofwd-tcp-80 _feature_isp_fetch "$tun" 80 /nofwd-tcp-80 "$w"
    _feature_attempt nofwd-tcp-6000 _feature_isp_fetch "$tun" 6000 /nofwd-tcp-6000 "$w"
    _feature_attempt nofwd-udp-8080 lab_udp_ask isp "$tun" 8080 nofwd-udp-8080 "$w"
    _feature_attempt nofwd-wan _feature_isp_fetch "$LAB_CLIENT_IP" 80 /nofwd-wan "$w"
    # (d) IPv6: nothing forwarded, nothing out of the WAN; neighbour discovery on the LAN works.
    _feature_attempt v6-client-inet _feature_ping6 client "$LAB_ECHO_IP6" "$w"
    _feature_attempt v6-client-isp _feature_ping6 client "$LAB_ISP_WAN_IP6" "$w"
    _feature_attempt v6-router-isp _feature_ping6 router "$LAB_ISP_WAN_IP6" "$w"
    _feature_attempt v6-control _feature_ping6 isp "$LAB_ECHO_IP6" 2
    _feature_collect
    inbound_after=$(lab_targets_inbound)

    tap_check "not forwarded: no new flow reached the client at all during these attempts ($inbound_before -> $inbound_after)" \
        test "${inbound_after:-x}" = "${inbound_before:-y}"
    tap_check "not forwarded: tcp $tun:80 does not reach the client" _feature_not_through nofwd-tcp-80
    tap_check "not forwarded: tcp $tun:6000 (forwarded for udp only) does not reach the client" \
        _feature_not_through nofwd-tcp-6000
    tap_check "not forwarded: udp $tun:8080 (forwarded for tcp only) does not reach the client" \
        _feature_not_through nofwd-udp-8080
    tap_check "not forwarded: tcp from the WAN side straight to $LAB_CLIENT_IP:80 does not reach the client" \
        _feature_not_through nofwd-wan

    tap_check "control: the ISP reaches the internet host over IPv6 ($LAB_ECHO_IP6)" \
        _feature_succeeded v6-control
    tap_check "IPv6: the client cannot reach the internet host $LAB_ECHO_IP6" _feature_failed v6-client-inet
    tap_check "IPv6: the client cannot reach the ISP $LAB_ISP_WAN_IP6" _feature_failed v6-client-isp
    tap_check "IPv6: the router itself cannot reach the ISP $LAB_ISP_WAN_IP6" _feature_failed v6-router-isp
    tap_check "IPv6: the client resolves the router's LAN address $LAB_ROUTER_LAN_LL (neighbour discovery)" \
        lab_wait_for 2 _feature_nd_resolved
    tap_last_failed && tap_note "client: $(lab_exec client ip -6 neigh show dev eth0 | xargs)"

    feature_mss_check
    feature_router_exposure_check "$tun"
}

# (e) The router itself, seen from the LAN: a listener on every router address; the client may
# ping its gateway and nothing else: not the tunnel address (the CVE-2019-14899 class), not the
# WAN address, no TCP anywhere. The router reaching its own listener proves it listens.
_feature_tcp_connects() { lab_exec "$1" timeout 2 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; }
feature_router_exposure_check() {
    local tun=$1 port=2222
    lab_daemon_start exposure-listener router socat -u "TCP-LISTEN:$port,fork,reuseaddr" OPEN:/dev/null
    lab_wait_for 5 _lab_listening router tcp "$port" || tap_note "the router's test listener did not come up"
    tap_check "control: the router reaches its own listener on the tunnel address $tun:$port" \
        _feature_tcp_connects router "$tun" "$port"
    tap_check "control: the client pings its gateway $LAB_LAN_GW" \
        lab_exec client ping -q -c 1 -W 2 "$LAB_LAN_GW"
    tap_check "from the LAN: no ping answer from the router's tunnel address $tun" \
        eval "! lab_exec client ping -q -c 2 -i 0.3 -W 1 $tun >/dev/null 2>&1"
    tap_check "from the LAN: no TCP connection to the router's tunnel address $tun:$port" \
        eval "! _feature_tcp_connects client $tun $port"
    tap_check "from the LAN: no TCP connection to the router's WAN address $LAB_ROUTER_WAN_IP:$port" \
        eval "! _feature_tcp_connects client $LAB_ROUTER_WAN_IP $port"
    tap_check "from the LAN: no TCP connection to the gateway $LAB_LAN_GW:$port" \
        eval "! _feature_tcp_connects client $LAB_LAN_GW $port"
    lab_daemon_stop exposure-listener
}

# The MSS of the client's SYN as it enters the tunnel: captured on the router's tun0, after the
# router's netfilter hooks and before OpenVPN (whose own mssfix would hide a missing clamp).
feature_mss_check() {
    local mtu mss want log=$LAB_RUNDIR/logs/syn.log
    mtu=$(lab_exec router cat /sys/class/net/tun0/mtu 2>/dev/null || echo 0)
    want=$((mtu - 40))
    rm -f "$log"
    lab_daemon_start syn router tcpdump -n -v -l -c 1 -i tun0 \
        "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn and dst host $LAB_ECHO_IP and dst port 80"
    if ! _lab_wait_log syn "$log" "listening on" 10; then
        tap_not_ok "MSS clamp: could not capture SYNs on the router's tun0"
        return 0
    fi
    lab_exec client curl -sS --max-time 3 -o /dev/null "$LAB_ECHO_URL" 2>>"$LAB_RUNDIR/logs/client.err" || true
    lab_wait_for 3 grep -q 'mss [0-9]' "$log" || true
    lab_daemon_stop syn INT 2
    mss=$(sed -n 's/.*mss \([0-9]*\).*/\1/p' "$log" | head -n 1)
    tap_check "MSS clamp: the client's SYN (LAN MTU $FEATURE_LAN_MTU) enters tun0 with MSS ${mss:-?}, within tun0's MTU $mtu - 40" \
        test "${mss:-99999}" -le "$want"
    tap_last_failed && tap_note_file 5 "$log"
    return 0
}

# ---- over the whole run, after lab_leaks ----

_feature_capture_count() { # FILTER: packets in the WAN capture that match it
    local pcap
    pcap=$(cat "$LAB_RUNDIR/capture/current" 2>/dev/null) || { echo "?"; return 0; }
    tcpdump -nn -r "$pcap" "$1" 2>/dev/null | wc -l | tr -d ' '
}

feature_capture_checks() {
    local v6 dns
    v6=$(_feature_capture_count ip6)
    # vpnsup's own resolution of the remote's host name, before OpenVPN starts, is the exception.
    dns=$(_feature_capture_count "port 53 and not ($LAB_RESOLUTION_FILTER)")
    tap_check "no IPv6 packet from the router on the WAN ($v6 captured)" test "$v6" = 0
    tap_check "no DNS packet on the WAN but vpnsup's resolution of the remote ($dns captured)" test "$dns" = 0
}
