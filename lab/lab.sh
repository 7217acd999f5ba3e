#!/usr/bin/env bash
# lab/lab.sh — a network-namespace lab for testing vpnsup on one machine.
#
# Sourced, it is a library of lab_* functions; run, it is a CLI (`lab/lab.sh help`).
#
#   CLIENT ns          ROUTER ns (vpnsup)          ISP ns (+ OpenVPN server)       INET ns
#   eth0 172.22.0.10 -- eth1 (no address; vpnsup
#   default via                adds 172.22.0.1/24)
#   172.22.0.1                eth0 198.51.100.2 -- rtr0 198.51.100.1 :1194/udp
#                             default via .1        inet0 203.0.113.1 ------------ eth0 203.0.113.10
#                                                   172.22.0.0/24 via router       HTTP echo :80,
#                                                   10.8.0.0/24 on the server's    DNS (echo.lab) :53
#                                                   tun (VPN pool); forwards,      default via ISP
#                                                   no NAT
#
# The ISP forwards the LAN subnet without NAT, so a LAN packet that leaks past the router reaches
# the echo with its LAN source (172.22.0.10), while tunnelled traffic, masqueraded by the router
# onto its tun, arrives from the router's tunnel address (10.8.0.x). Leaks are also counted on the
# wire: tcpdump -Q in on rtr0 (ISP side of the WAN link) sees exactly what the router sends.
#
# Every link is created directly inside its namespace (`ip link add ... netns`), so nothing of
# the lab ever appears in the host's namespace. Namespaces are named <prefix><node>, the prefix
# being vpl<owner pid>- by default (owner = the sourcing shell, or the shell that ran `lab.sh up`).
# The run directory (logs, PKI, configs, captures) is lab/run/<prefix without dash>/.
#
# Functions (all work under `set -euo pipefail`):
#   lab_init                    choose prefix (LAB_PREFIX or vpl<owner>-) and run dir (LAB_RUNDIR
#                               or lab/run/<prefix>); lab_up calls it when not done
#   lab_up                      build the lab (removes leftovers of dead runs first), start echo+DNS
#   lab_down                    stop every daemon, delete every namespace of this prefix; idempotent
#   lab_clean_stale [--all]     remove namespaces/daemons of runs whose owner died (--all: every run)
#   lab_ns NODE                 namespace name of client|router|isp|inet (or "bad": a name for a
#                               test's scratch namespace, which lab_down removes too)
#   lab_exec NODE CMD...        run CMD inside NODE's namespace
#   lab_vpn_server_start/stop   the OpenVPN server in ISP (start waits for its initialisation)
#   lab_capture_start           tcpdump -Q in on rtr0, returns once tcpdump is listening
#   lab_capture_stop            stop it (SIGINT, waits: the file is complete afterwards)
#   lab_leaks                   stop the capture, print the number of leaked packets
#                               (list in <rundir>/capture/leaks.txt)
#   lab_echo_sources            distinct source addresses the echo (HTTP and DNS) logged
#   lab_wait_for SECONDS CMD... poll CMD every 0.1 s until it succeeds; 1 on timeout
#   lab_daemon_start NAME NODE CMD...  run a daemon in NODE (log <rundir>/logs/NAME.log, pid recorded)
#   lab_daemon_pid NAME         its pid while it lives; lab_daemon_stop NAME [SIG [SECONDS]]
#   lab_emulate_router_start tunnel|leaky, lab_emulate_router_stop
#                               a hand-made router (openvpn + nft masquerade, or plain forwarding)
#                               for validating the lab without vpnsup
# Files for vpnsup: <rundir>/config/client.ovpn (remote by host name, LAB_VPN_NAME),
# <rundir>/config/client-ip.ovpn (the same with the server's address), <rundir>/credentials (0600).
# The router resolves host names with the ISP's resolver (dnsmasq on LAB_RESOLVER_IP:53, log
# <rundir>/isp/dns.log), named in /etc/netns/<router ns>/resolv.conf, which `ip netns exec` mounts.

# ---- fixed addresses (they exist only inside the lab's namespaces) ----
# shellcheck disable=SC2034 # constants for the scripts that source this file
LAB_LAN_NET=172.22.0.0/24
LAB_LAN_GW=172.22.0.1
LAB_LAN_GW_CIDR=172.22.0.1/24
LAB_CLIENT_IP=172.22.0.10
LAB_ROUTER_WAN_IP=198.51.100.2
LAB_ISP_WAN_IP=198.51.100.1
LAB_VPN_SERVER_IP=198.51.100.1
LAB_VPN_PORT=1194
LAB_VPN_NET=10.8.0.0/24
LAB_VPN_PREFIX=10.8.0.
LAB_ISP_INET_IP=203.0.113.1
LAB_ECHO_IP=203.0.113.10
LAB_ECHO_URL=http://203.0.113.10/
LAB_DNS_NAME=echo.lab
LAB_VPN_NAME=vpn.lab.test
LAB_RESOLVER_IP=198.51.100.1
LAB_CAPTURE_IF=rtr0

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034
LAB_REPO=$(dirname "$LAB_DIR")
# shellcheck source=lab/require.sh
. "$LAB_DIR/require.sh"

LAB_COMMANDS=(ip ss nft tcpdump openvpn openssl curl dig dnsmasq python3 ping jq timeout)

_lab_log() { echo "lab: $*" >&2; }

# Milliseconds since the epoch, from bash's clock (no fork).
lab_now_ms() {
    local t=${EPOCHREALTIME/./}
    echo $((t / 1000))
}

# Print milliseconds as seconds with three decimals.
lab_ms_to_s() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

lab_wait_for() {
    local deadline=$(($(lab_now_ms) + ${1%.*} * 1000))
    shift
    until "$@"; do
        [ "$(lab_now_ms)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

lab_init() {
    local owner=${LAB_OWNER:-$$}
    LAB_OWNER=$owner
    LAB_PREFIX=${LAB_PREFIX:-vpl$owner-}
    if ! [[ $LAB_PREFIX =~ ^[a-z][a-z0-9]*-$ ]]; then
        _lab_log "bad prefix '$LAB_PREFIX' (want letters/digits and a final dash)"
        return 1
    fi
    LAB_RUNDIR=${LAB_RUNDIR:-${LAB_RUN_BASE:-$LAB_DIR/run}/${LAB_PREFIX%-}}
    LAB_PYTHON=${LAB_PYTHON:-$(command -v /usr/bin/python3 || command -v python3 || echo python3)}
    export LAB_OWNER LAB_PREFIX LAB_RUNDIR
}

lab_ns() {
    case "$1" in
        client | router | isp | inet | bad) echo "${LAB_PREFIX:?lab_init first}$1" ;;
        *) _lab_log "unknown node '$1'"; return 1 ;;
    esac
}

lab_exec() {
    local ns
    ns=$(lab_ns "$1") || return 1
    shift
    ip netns exec "$ns" "$@"
}

# ---- processes ----

# True when PID is a live process inside namespace NS (a zombie or a reused pid elsewhere is not).
_lab_pid_in_ns() {
    local a b
    a=$(stat -L -c %i "/proc/$1/ns/net" 2>/dev/null) || return 1
    b=$(stat -L -c %i "/run/netns/$2" 2>/dev/null) || return 1
    [ "$a" = "$b" ]
}

# lab_daemon_start NAME NODE CMD...: run CMD in NODE's namespace in the background, output
# appended to <rundir>/logs/NAME.log, pid (the daemon's own: ip netns exec execs it) recorded.
lab_daemon_start() {
    local name=$1 node=$2 ns pid
    shift 2
    ns=$(lab_ns "$node") || return 1
    mkdir -p "$LAB_RUNDIR/logs" "$LAB_RUNDIR/pids"
    echo "=== $(date '+%F %T') start: $*" >>"$LAB_RUNDIR/logs/$name.log"
    (exec ip netns exec "$ns" "$@" >>"$LAB_RUNDIR/logs/$name.log" 2>&1 </dev/null) &
    pid=$!
    disown "$pid" 2>/dev/null || true
    echo "$pid $node" >"$LAB_RUNDIR/pids/$name.pid"
    _lab_wait_entered "$pid" "$ns"
}

# `ip netns exec` enters the namespace a moment after the fork; until it has, lab_daemon_pid
# would take the daemon for dead (a loaded machine made _lab_wait_log give up on tcpdump).
# Bounded: returns after 5 s, or as soon as the process is gone.
_lab_wait_entered() { # PID NS
    local deadline=$(($(lab_now_ms) + 5000))
    while kill -0 "$1" 2>/dev/null && ! _lab_pid_in_ns "$1" "$2" && [ "$(lab_now_ms)" -lt "$deadline" ]; do
        sleep 0.01
    done
}

# Pid of a recorded daemon if it is still alive in its namespace; fails otherwise.
lab_daemon_pid() {
    local f=$LAB_RUNDIR/pids/$1.pid pid node
    [ -f "$f" ] || return 1
    read -r pid node <"$f" || return 1
    _lab_pid_in_ns "$pid" "$(lab_ns "$node")" || return 1
    echo "$pid"
}

# _lab_wait_gone PID NS SECONDS
_lab_wait_gone() {
    local pid=$1 ns=$2 deadline=$(($(lab_now_ms) + $3 * 1000))
    while _lab_pid_in_ns "$pid" "$ns"; do
        [ "$(lab_now_ms)" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

# lab_daemon_stop NAME [SIGNAL [SECONDS]]: signal it, wait until it is gone, SIGKILL after SECONDS.
lab_daemon_stop() {
    local name=$1 sig=${2:-TERM} secs=${3:-5} f pid node ns
    f=$LAB_RUNDIR/pids/$name.pid
    [ -f "$f" ] || return 0
    read -r pid node <"$f" || true
    ns=$(lab_ns "$node") || return 0
    if _lab_pid_in_ns "$pid" "$ns"; then
        kill -s "$sig" "$pid" 2>/dev/null || true
        if ! _lab_wait_gone "$pid" "$ns" "$secs"; then
            _lab_log "$name (pid $pid) ignored SIG$sig for ${secs}s; killing it"
            kill -s KILL "$pid" 2>/dev/null || true
            _lab_wait_gone "$pid" "$ns" 5 || _lab_log "$name (pid $pid) survives SIGKILL"
        fi
    fi
    rm -f "$f"
}

# Wait until FILE contains the fixed string TEXT, while daemon NAME is alive; bounded.
_lab_wait_log() {
    local name=$1 file=$2 text=$3 why
    local deadline=$(($(lab_now_ms) + $4 * 1000))
    while :; do
        grep -qF -- "$text" "$file" 2>/dev/null && return 0
        if ! lab_daemon_pid "$name" >/dev/null; then
            why="$name died before '$text'"
            break
        fi
        if [ "$(lab_now_ms)" -ge "$deadline" ]; then
            why="$name: no '$text' after $4 s"
            break
        fi
        sleep 0.05
    done
    _lab_log "$why; the end of its log:"
    tail -n 20 "$LAB_RUNDIR/logs/$name.log" >&2 || true
    return 1
}

_lab_ns_empty() { [ -z "$(ip netns pids "$1" 2>/dev/null)" ]; }

# Kill every process inside namespace NS: SIGTERM, then SIGKILL after a bounded wait.
_lab_kill_ns_procs() {
    local ns=$1 pids sig
    for sig in TERM KILL; do
        pids=$(ip netns pids "$ns" 2>/dev/null) || return 0
        [ -n "$pids" ] || return 0
        # shellcheck disable=SC2086 # one pid per word
        kill -s "$sig" $pids 2>/dev/null || true
        lab_wait_for 3 _lab_ns_empty "$ns" && return 0
    done
    _lab_log "processes still in $ns: $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
}

# ---- topology ----

_lab_sysctl() {
    local node=$1
    shift
    lab_exec "$node" sysctl -qw "$@" >/dev/null
}

_lab_topology() {
    local node c r i n
    for node in client router isp inet; do
        ip netns add "$(lab_ns "$node")"
        lab_exec "$node" ip link set lo up
    done
    c=$(lab_ns client) r=$(lab_ns router) i=$(lab_ns isp) n=$(lab_ns inet)
    # Each pair is born inside its namespaces: nothing appears in the host's.
    ip link add eth0 netns "$c" type veth peer name eth1 netns "$r"
    ip link add eth0 netns "$r" type veth peer name "$LAB_CAPTURE_IF" netns "$i"
    ip link add inet0 netns "$i" type veth peer name eth0 netns "$n"

    # New namespaces inherit IPv4 settings from the host's: set what matters explicitly.
    _lab_sysctl client net.ipv4.ip_forward=0
    _lab_sysctl inet net.ipv4.ip_forward=0
    _lab_sysctl isp net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    # The router as Docker hands it over: forwarding on (compose's sysctl), loose rp_filter (the
    # Debian host default a container inherits), no IPv6 address on its links (Docker's default;
    # also keeps the kernel's own DAD/RS/MLD chatter off the WAN, where it would count as leaks).
    _lab_sysctl router net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.default.rp_filter=2
    _lab_sysctl router net.ipv6.conf.eth0.addr_gen_mode=1 net.ipv6.conf.eth1.addr_gen_mode=1

    lab_exec client ip addr add "$LAB_CLIENT_IP/24" dev eth0
    lab_exec client ip link set eth0 up
    lab_exec client ip route add default via "$LAB_LAN_GW" dev eth0

    # eth1 comes up without the gateway address: vpnsup adds it.
    lab_exec router ip link set eth1 up
    lab_exec router ip addr add "$LAB_ROUTER_WAN_IP/24" dev eth0
    lab_exec router ip link set eth0 up
    lab_exec router ip route add default via "$LAB_ISP_WAN_IP" dev eth0

    lab_exec isp ip addr add "$LAB_ISP_WAN_IP/24" dev "$LAB_CAPTURE_IF"
    lab_exec isp ip addr add "$LAB_ISP_INET_IP/24" dev inet0
    lab_exec isp ip link set "$LAB_CAPTURE_IF" up
    lab_exec isp ip link set inet0 up
    lab_exec isp ip route add "$LAB_LAN_NET" via "$LAB_ROUTER_WAN_IP" dev "$LAB_CAPTURE_IF"

    lab_exec inet ip addr add "$LAB_ECHO_IP/24" dev eth0
    lab_exec inet ip link set eth0 up
    lab_exec inet ip route add default via "$LAB_ISP_INET_IP" dev eth0
}

# ---- PKI and configuration files ----

_lab_pki() {
    local d=$LAB_RUNDIR/pki
    mkdir -p "$d"
    (
        cd "$d"
        umask 077
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout ca.key -out ca.crt -days 2 -subj "/CN=vpnsup lab CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout server.key -out server.csr -subj "/CN=vpnsup-lab-server"
        # remote-cert-tls server needs these key usages on an EC server certificate.
        printf '%s\n' "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyAgreement" \
            "extendedKeyUsage=serverAuth" \
            "subjectKeyIdentifier=hash" \
            "authorityKeyIdentifier=keyid,issuer" >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key \
            -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile server.ext -out server.crt
        openvpn --genkey tls-crypt tc.key
    ) >"$LAB_RUNDIR/logs/pki.log" 2>&1 || {
        _lab_log "PKI generation failed:"
        cat "$LAB_RUNDIR/logs/pki.log" >&2
        return 1
    }
}

_lab_configs() {
    local s=$LAB_RUNDIR/server p=$LAB_RUNDIR/pki user pass
    mkdir -p "$s/tmp" "$LAB_RUNDIR/config"
    user=lab-user
    pass=$(openssl rand -hex 12)
    (
        umask 077
        printf '%s\n%s\n' "$user" "$pass" >"$LAB_RUNDIR/credentials"
        printf '%s\n%s\n' "$user" "$pass" >"$s/users"
    )
    chmod 0600 "$LAB_RUNDIR/credentials"

    cat >"$s/verify.sh" <<EOF
#!/bin/sh
# auth-user-pass-verify via-file: \$1 holds "username\\npassword\\n"; accept only the lab's pair.
{ read -r user; read -r pass; } <"\$1" || exit 1
{ read -r want_user; read -r want_pass; } <"$s/users" || exit 1
[ "\$user" = "\$want_user" ] && [ "\$pass" = "\$want_pass" ]
EOF
    chmod 0700 "$s/verify.sh"

    cat >"$s/server.conf" <<EOF
# vpnsup lab: the VPN provider's server, in the ISP namespace (generated by lab/lab.sh)
local $LAB_VPN_SERVER_IP
port $LAB_VPN_PORT
proto udp
dev tun
topology subnet
server ${LAB_VPN_NET%/*} 255.255.255.0
ca $p/ca.crt
cert $p/server.crt
key $p/server.key
dh none
tls-crypt $p/tc.key
verify-client-cert none
username-as-common-name
script-security 2
auth-user-pass-verify "$s/verify.sh" via-file
tmp-dir $s/tmp
push "redirect-gateway def1"
keepalive 1 5
verb 3
EOF

    {
        cat <<EOF
# vpnsup lab: the provider's client profile, as a user would drop it in /config
client
dev tun
proto udp
remote $LAB_VPN_NAME $LAB_VPN_PORT
nobind
remote-cert-tls server
auth-user-pass
connect-retry 1 2
server-poll-timeout 4
hand-window 10
ping 1
ping-restart 5
verb 3
EOF
        echo "<ca>"
        cat "$p/ca.crt"
        echo "</ca>"
        echo "<tls-crypt>"
        cat "$p/tc.key"
        echo "</tls-crypt>"
    } >"$LAB_RUNDIR/config/client.ovpn"
    sed "s/^remote $LAB_VPN_NAME /remote $LAB_VPN_SERVER_IP /" "$LAB_RUNDIR/config/client.ovpn" \
        >"$LAB_RUNDIR/config/client-ip.ovpn"
}

_lab_echo_script() {
    cat >"$LAB_RUNDIR/inet/echo.py" <<'EOF'
"""vpnsup lab HTTP echo: answers each request with its source address and appends
"<unix time> <source address> <source port> <method> <path>" to the log file (argv[1])."""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG, ADDR, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def answer(self, body=True):
        host, port = self.client_address[:2]
        with open(LOG, "a", encoding="ascii") as log:
            log.write(f"{time.time():.3f} {host} {port} {self.command} {self.path}\n")
        data = (host + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self):
        self.answer()

    def do_HEAD(self):
        self.answer(body=False)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer()

    def log_message(self, *args):
        pass


ThreadingHTTPServer((ADDR, PORT), Echo).serve_forever()
EOF
}

_lab_listening() { # NODE tcp|udp PORT
    local out
    out=$(lab_exec "$1" ss -Hln --"$2" "sport = :$3" 2>/dev/null) || return 1
    [ -n "$out" ]
}

_lab_inet_services_start() {
    local d=$LAB_RUNDIR/inet
    mkdir -p "$d"
    : >"$d/echo.log"
    _lab_echo_script
    lab_daemon_start echo inet "$LAB_PYTHON" -u "$d/echo.py" "$d/echo.log" "$LAB_ECHO_IP" 80
    lab_daemon_start dns inet dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv \
        --no-hosts --bind-interfaces --listen-address="$LAB_ECHO_IP" --user=root --group=root \
        --pid-file --address="/$LAB_DNS_NAME/$LAB_ECHO_IP" --log-queries=extra \
        --log-facility="$d/dns.log"
    lab_wait_for 10 _lab_listening inet tcp 80 || { _lab_log "echo server not listening"; return 1; }
    lab_wait_for 10 _lab_listening inet udp 53 || { _lab_log "dnsmasq not listening"; return 1; }
}

# The ISP's resolver, which the router's resolv.conf names: answers LAB_VPN_NAME with the VPN
# server's address, and nothing else (NXDOMAIN for the rest of .test, REFUSED beyond).
_lab_resolver_start() {
    local d=$LAB_RUNDIR/isp etc
    mkdir -p "$d"
    : >"$d/dns.log"
    lab_daemon_start resolver isp dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv \
        --no-hosts --bind-interfaces --listen-address="$LAB_RESOLVER_IP" --user=root --group=root \
        --pid-file --local=/test/ --host-record="$LAB_VPN_NAME,$LAB_VPN_SERVER_IP" \
        --log-queries=extra --log-facility="$d/dns.log"
    lab_wait_for 10 _lab_listening isp udp 53 || { _lab_log "the ISP's resolver is not listening"; return 1; }
    etc=/etc/netns/$(lab_ns router)
    mkdir -p "$etc"
    echo "nameserver $LAB_RESOLVER_IP" >"$etc/resolv.conf"
}

# Remove /etc/netns/<ns>/ (what `ip netns exec` mounts over /etc) of every namespace of PREFIX.
_lab_netns_etc_remove() {
    local d
    for d in /etc/netns/"$1"*; do
        [ -d "$d" ] && rm -rf "$d"
    done
    return 0
}

# Queries the ISP's resolver logged, one "TYPE NAME SOURCE" line each.
lab_resolver_queries() {
    sed -n 's/.* query\[\([^]]*\)\] \([^ ]*\) from \([0-9a-fA-F.:]*\)$/\1 \2 \3/p' "$LAB_RUNDIR/isp/dns.log" 2>/dev/null || true
}

# ---- up / down ----

lab_up() {
    local t0
    t0=$(lab_now_ms)
    [ -n "${LAB_PREFIX:-}" ] || lab_init
    lab_require "${LAB_COMMANDS[@]}"
    lab_clean_stale
    # A previous run with this very prefix (pid reuse, or a CLI run not torn down).
    lab_down
    rm -rf "$LAB_RUNDIR"
    mkdir -p "$LAB_RUNDIR/logs" "$LAB_RUNDIR/pids" "$LAB_RUNDIR/capture"
    {
        echo "LAB_PREFIX=$LAB_PREFIX"
        echo "LAB_RUNDIR=$LAB_RUNDIR"
        echo "LAB_OWNER=$LAB_OWNER"
    } >"$LAB_RUNDIR/lab.env"
    _lab_topology
    _lab_pki
    _lab_configs
    _lab_inet_services_start
    _lab_resolver_start
    LAB_UP_MS=$(($(lab_now_ms) - t0))
    echo "$LAB_UP_MS" >"$LAB_RUNDIR/up-ms"
}

# Stop every daemon and delete every namespace of this run (also ones a test added with this
# prefix). Never fails; safe to run twice and from an EXIT trap.
lab_down() {
    [ -n "${LAB_PREFIX:-}" ] || return 0
    local name ns
    if [ -d "${LAB_RUNDIR:-}/pids" ]; then
        # tcpdump first, politely, so its file is complete for whoever looks afterwards.
        lab_daemon_stop tcpdump INT 5 || true
        for name in "$LAB_RUNDIR"/pids/*.pid; do
            [ -e "$name" ] || continue
            name=${name##*/}
            lab_daemon_stop "${name%.pid}" TERM 3 || true
        done
    fi
    for ns in $(_lab_netns_list); do
        [[ $ns == "$LAB_PREFIX"* ]] || continue
        _lab_kill_ns_procs "$ns" || true
        ip netns del "$ns" 2>/dev/null || _lab_log "could not delete namespace $ns"
    done
    _lab_netns_etc_remove "$LAB_PREFIX"
    # lab/wireguard.sh, when sourced: socket files its killed devices left in /var/run/wireguard.
    if declare -F lab_wg_down >/dev/null; then lab_wg_down; fi
    return 0
}

_lab_netns_list() { ip netns list 2>/dev/null | awk '{print $1}'; }

# Remove namespaces (and their processes) left by runs whose owner process is gone; with --all,
# of every lab run. With --rundirs also delete those runs' directories under lab/run/.
lab_clean_stale() {
    local all=0 rundirs=0 arg ns owner d
    for arg in "$@"; do
        case "$arg" in
            --all) all=1 ;;
            --rundirs) rundirs=1 ;;
            *) _lab_log "lab_clean_stale: unknown option $arg"; return 1 ;;
        esac
    done
    for ns in $(_lab_netns_list); do
        [[ $ns =~ ^vpl([0-9]+)- ]] || continue
        owner=${BASH_REMATCH[1]}
        if [ "$all" -eq 0 ] && { kill -0 "$owner" 2>/dev/null || [ "${LAB_PREFIX:-}" = "vpl$owner-" ]; }; then
            continue
        fi
        _lab_kill_ns_procs "$ns" || true
        ip netns del "$ns" 2>/dev/null || _lab_log "could not delete namespace $ns"
    done
    # Resolver configurations of runs whose namespaces are gone already.
    for d in /etc/netns/vpl*; do
        [[ ${d##*/} =~ ^vpl([0-9]+)- ]] || continue
        owner=${BASH_REMATCH[1]}
        if [ "$all" -eq 1 ] || { ! kill -0 "$owner" 2>/dev/null && [ "${LAB_PREFIX:-}" != "vpl$owner-" ]; }; then
            rm -rf "$d"
        fi
    done
    if [ "$rundirs" -eq 1 ]; then
        for d in "${LAB_RUN_BASE:-$LAB_DIR/run}"/vpl*; do
            [ -d "$d" ] || continue
            owner=${d##*/vpl}
            [[ $owner =~ ^[0-9]+$ ]] || continue
            if [ "$all" -eq 1 ] || ! kill -0 "$owner" 2>/dev/null; then rm -rf "$d"; fi
        done
    fi
    return 0
}

# ---- the VPN server ----

lab_vpn_server_start() {
    if lab_daemon_pid openvpn-server >/dev/null; then
        _lab_log "VPN server already running"
        return 0
    fi
    lab_daemon_start openvpn-server isp openvpn --config "$LAB_RUNDIR/server/server.conf"
    _lab_wait_log openvpn-server "$LAB_RUNDIR/logs/openvpn-server.log" \
        "Initialization Sequence Completed" 10
}

lab_vpn_server_stop() { lab_daemon_stop openvpn-server TERM 5; }

# ---- leak capture ----

# Capture what the router sends onto the WAN: -Q in on the ISP side of the link. The kernel-side
# filter (everything not sent by the ISP's own port) makes tcpdump's "received by filter" count
# comparable with what it wrote, so lab_leaks can tell when a packet was lost unread.
lab_capture_start() {
    local n=1 pcap mac
    if lab_daemon_pid tcpdump >/dev/null; then
        _lab_log "capture already running"
        return 1
    fi
    while [ -e "$LAB_RUNDIR/capture/wan-$n.pcap" ]; do n=$((n + 1)); done
    pcap=$LAB_RUNDIR/capture/wan-$n.pcap
    echo "$pcap" >"$LAB_RUNDIR/capture/current"
    mac=$(lab_exec isp cat "/sys/class/net/$LAB_CAPTURE_IF/address")
    rm -f "$LAB_RUNDIR/logs/tcpdump.log"
    # --immediate-mode: each packet reaches the file at once (no 1 s TPACKET_V3 blocks that a
    # SIGINT would throw away unread).
    lab_daemon_start tcpdump isp tcpdump -n -Z root -Q in --immediate-mode -U \
        -i "$LAB_CAPTURE_IF" -w "$pcap" "not ether src $mac"
    _lab_wait_log tcpdump "$LAB_RUNDIR/logs/tcpdump.log" "listening on" 10
}

_lab_file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# Stop the capture once its file has stopped growing (bounded), with SIGINT so it is flushed.
lab_capture_stop() {
    local pcap size last=-1 stable=0 deadline
    lab_daemon_pid tcpdump >/dev/null || return 0
    pcap=$(cat "$LAB_RUNDIR/capture/current")
    deadline=$(($(lab_now_ms) + 2000))
    while [ "$stable" -lt 3 ] && [ "$(lab_now_ms)" -lt "$deadline" ]; do
        size=$(_lab_file_size "$pcap")
        if [ "$size" = "$last" ]; then stable=$((stable + 1)); else stable=0; fi
        last=$size
        sleep 0.05
    done
    lab_daemon_stop tcpdump INT 5
}

# The tunnel's transport: from the router's WAN address to the server's port (plus IP fragments
# of it, which carry no UDP header); ARP is link housekeeping. Everything else the router sends
# onto the WAN — other IPv4, any IPv6 — is a leak.
LAB_TRANSPORT_FILTER="arp or (ip src $LAB_ROUTER_WAN_IP and ip dst $LAB_VPN_SERVER_IP and (udp dst port $LAB_VPN_PORT or ip[6:2] & 0x1fff != 0))"
# vpnsup resolves the remote's host name with the router's configured resolver before OpenVPN
# starts: DNS over UDP or TCP from the router's WAN address to that resolver only is not a leak.
LAB_RESOLUTION_FILTER="ip src $LAB_ROUTER_WAN_IP and ip dst $LAB_RESOLVER_IP and (udp dst port 53 or tcp dst port 53)"

# Stop the capture (flushed) and print how many captured packets were leaks; the leaked packets
# are listed in <rundir>/capture/leaks.txt.
lab_leaks() {
    local pcap out=$LAB_RUNDIR/capture/leaks.txt
    lab_capture_stop
    pcap=$(cat "$LAB_RUNDIR/capture/current" 2>/dev/null) || { _lab_log "no capture was started"; return 1; }
    [ -s "$pcap" ] || { _lab_log "capture file $pcap is empty or missing"; return 1; }
    local captured received
    captured=$(sed -n 's/^\([0-9]*\) packets\{0,1\} captured$/\1/p' "$LAB_RUNDIR/logs/tcpdump.log" | tail -n 1)
    received=$(sed -n 's/^\([0-9]*\) packets\{0,1\} received by filter$/\1/p' "$LAB_RUNDIR/logs/tcpdump.log" | tail -n 1)
    if [ -z "$captured" ] || [ "$captured" != "$received" ]; then
        _lab_log "capture incomplete (captured '${captured}', received '${received}'): cannot count leaks"
        return 1
    fi
    if ! tcpdump -nn -r "$pcap" "not ($LAB_TRANSPORT_FILTER) and not ($LAB_RESOLUTION_FILTER)" >"$out" \
        2>"$LAB_RUNDIR/logs/tcpdump-read.log"; then
        _lab_log "reading $pcap failed: $(cat "$LAB_RUNDIR/logs/tcpdump-read.log")"
        return 1
    fi
    wc -l <"$out" | tr -d ' '
}

# Number of packets in the current (or last) capture, transport included.
lab_capture_count() {
    local pcap
    pcap=$(cat "$LAB_RUNDIR/capture/current" 2>/dev/null) || return 1
    tcpdump -nn -r "$pcap" 2>/dev/null | wc -l | tr -d ' '
}

# ---- the echo ----

# Distinct source addresses that reached the echo host: HTTP requests and DNS queries.
lab_echo_sources() {
    {
        awk '{print $2}' "$LAB_RUNDIR/inet/echo.log" 2>/dev/null || true
        sed -n 's/.* query\[[^]]*\] .* from \([0-9a-fA-F.:]*\)$/\1/p' "$LAB_RUNDIR/inet/dns.log" 2>/dev/null || true
    } | sort -u
}

# ---- extras for the feature tests: a rogue resolver, port-forward targets, IPv6 ----
# DNS enforcement: the enforced server is the echo host's dnsmasq (LAB_ECHO_IP), which answers
# LAB_DNS_NAME and every name under it with LAB_ECHO_IP. A rogue resolver, also in INET and reached
# through the ISP like any internet host, answers every name with LAB_ROGUE_ANSWER: an answer from
# it means a query was not redirected.
# Port forwards: a target service on the client (HTTP echo on TCP ports, datagram echo on UDP
# ports, each answering with the source address it saw), logging to <rundir>/client/targets.log.
# IPv6: 2001:db8:1::/64 on the LAN, 2001:db8:2::/64 on the WAN, 2001:db8:3::/64 ISP-INET; the ISP
# routes the LAN prefix to the router. The router's part is separate (lab_ipv6_router_up): once it
# has an IPv6 address its kernel sends MLD reports by itself, which are leaks unless a firewall
# is already in place.
# shellcheck disable=SC2034 # constants for the scripts that source this file
LAB_ROGUE_DNS_IP=192.0.2.53
LAB_ROGUE_ANSWER=192.0.2.66
LAB_CLIENT_IP6=2001:db8:1::10
LAB_ROUTER_LAN_IP6=2001:db8:1::1
LAB_ROUTER_LAN_LL=fe80::1
LAB_ROUTER_WAN_IP6=2001:db8:2::2
LAB_ROUTER_WAN_LL=fe80::2
LAB_ISP_WAN_IP6=2001:db8:2::1
LAB_ISP_INET_IP6=2001:db8:3::1
LAB_ECHO_IP6=2001:db8:3::10

# True when something listens on ADDR:PORT (tcp|udp) in NODE.
_lab_listening_on() { # NODE tcp|udp ADDR PORT
    local out
    out=$(lab_exec "$1" ss -Hln --"$2" "src $3 and sport = :$4" 2>/dev/null) || return 1
    [ -n "$out" ]
}

# The rogue resolver at LAB_ROGUE_DNS_IP (log <rundir>/inet/rogue-dns.log).
lab_rogue_dns_start() {
    local d=$LAB_RUNDIR/inet
    mkdir -p "$d"
    : >"$d/rogue-dns.log"
    lab_exec inet ip addr add "$LAB_ROGUE_DNS_IP/32" dev eth0
    lab_exec isp ip route add "$LAB_ROGUE_DNS_IP/32" via "$LAB_ECHO_IP" dev inet0
    lab_daemon_start rogue-dns inet dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv \
        --no-hosts --bind-interfaces --listen-address="$LAB_ROGUE_DNS_IP" --user=root --group=root \
        --pid-file --address="/#/$LAB_ROGUE_ANSWER" --log-queries=extra \
        --log-facility="$d/rogue-dns.log"
    lab_wait_for 10 _lab_listening_on inet udp "$LAB_ROGUE_DNS_IP" 53 ||
        { _lab_log "rogue dnsmasq not listening"; return 1; }
}

# Sources the DNS server logged for queries of NAME: "dns" (enforced) or "rogue-dns".
lab_dns_query_sources() { # dns|rogue-dns NAME
    local name=${2//./\\.}
    sed -n "s/.* query\[[^]]*\] $name from \([0-9a-fA-F.:]*\)\$/\1/p" "$LAB_RUNDIR/inet/$1.log" 2>/dev/null | sort -u
}

_lab_targets_script() {
    cat >"$LAB_RUNDIR/client/targets.py" <<'PYEOF'
"""vpnsup lab port-forward targets: HTTP echo on TCP ports, datagram echo on UDP ports, all on one
address. Each answers with the source address it saw and appends
"<unix time> <tcp|udp> <source address> <source port> <local port> <path or datagram>" to the log.
usage: targets.py LOG ADDR TCP_PORTS UDP_PORTS (ports comma separated)"""
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG, ADDR = sys.argv[1], sys.argv[2]
TCP = [int(p) for p in sys.argv[3].split(",") if p]
UDP = [int(p) for p in sys.argv[4].split(",") if p]
lock = threading.Lock()


def log(proto, host, port, local, what):
    with lock, open(LOG, "a", encoding="utf-8") as f:
        f.write(f"{time.time():.3f} {proto} {host} {port} {local} {what}\n")


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        host, port = self.client_address[:2]
        log("tcp", host, port, self.server.server_address[1], self.path)
        data = (host + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ADDR, port))
    while True:
        data, (host, sport) = s.recvfrom(2048)
        log("udp", host, sport, port, data.decode("utf-8", "replace").strip())
        s.sendto((host + "\n").encode(), (host, sport))


for p in TCP:
    threading.Thread(target=ThreadingHTTPServer((ADDR, p), Echo).serve_forever, daemon=True).start()
for p in UDP:
    threading.Thread(target=udp, args=(p,), daemon=True).start()
while True:
    time.sleep(3600)
PYEOF
}

# lab_targets_start TCP_PORTS UDP_PORTS (comma separated): the target service on the client, and
# a counter of the new TCP/UDP flows that reach the client from outside (lab_targets_inbound).
lab_targets_start() {
    local d=$LAB_RUNDIR/client p
    mkdir -p "$d"
    : >"$d/targets.log"
    _lab_targets_script
    lab_exec client nft -f - <<'NFTEOF'
table inet labtargets {
    counter inbound {
    }
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "eth0" ct state new meta l4proto { tcp, udp } counter name "inbound"
    }
}
NFTEOF
    lab_daemon_start targets client "$LAB_PYTHON" -u "$d/targets.py" "$d/targets.log" "$LAB_CLIENT_IP" "$1" "$2"
    for p in ${1//,/ }; do
        lab_wait_for 10 _lab_listening_on client tcp "$LAB_CLIENT_IP" "$p" ||
            { _lab_log "client target not listening on tcp $p"; return 1; }
    done
    for p in ${2//,/ }; do
        lab_wait_for 10 _lab_listening_on client udp "$LAB_CLIENT_IP" "$p" ||
            { _lab_log "client target not listening on udp $p"; return 1; }
    done
}

# Number of new TCP/UDP flows that reached the client from outside so far (forwarded or not).
lab_targets_inbound() {
    lab_exec client nft list counter inet labtargets inbound 2>/dev/null |
        sed -n 's/.*packets \([0-9]*\).*/\1/p' | head -n 1
}

# What the client's targets logged (see above), one line per request or datagram.
lab_targets_log() { cat "$LAB_RUNDIR/client/targets.log" 2>/dev/null || true; }

# lab_udp_ask NODE ADDR PORT TEXT [SECONDS]: send one datagram from NODE, print the reply; fails
# when none comes within SECONDS (default 2).
lab_udp_ask() {
    lab_exec "$1" "$LAB_PYTHON" -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[4]))
s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recv(2048).decode().strip())
except OSError:
    sys.exit(1)' "$2" "$3" "$4" "${5:-2}"
}

# IPv6 on the client, the ISP and the internet host (not the router: lab_ipv6_router_up). The
# client routes everything via the router's LAN link-local address, as a router advertisement
# would have it. No DAD (nodad): addresses are usable at once.
lab_ipv6_up() {
    _lab_sysctl client net.ipv6.conf.all.forwarding=0
    lab_exec client ip -6 addr add "$LAB_CLIENT_IP6/64" dev eth0 nodad
    lab_exec client ip -6 route add default via "$LAB_ROUTER_LAN_LL" dev eth0
    _lab_sysctl isp net.ipv6.conf.all.forwarding=1
    lab_exec isp ip -6 addr add "$LAB_ISP_WAN_IP6/64" dev "$LAB_CAPTURE_IF" nodad
    lab_exec isp ip -6 addr add "$LAB_ISP_INET_IP6/64" dev inet0 nodad
    lab_exec isp ip -6 route add "${LAB_CLIENT_IP6%::*}::/64" via "$LAB_ROUTER_WAN_IP6" dev "$LAB_CAPTURE_IF"
    lab_exec inet ip -6 addr add "$LAB_ECHO_IP6/64" dev eth0 nodad
    lab_exec inet ip -6 route add default via "$LAB_ISP_INET_IP6" dev eth0
}

# The router's IPv6: a link-local and a global address on each link (neighbour solicitations for
# forwarded packets come from the link-local one), a default route via the ISP, forwarding on.
# Call it once a firewall is in place.
lab_ipv6_router_up() {
    _lab_sysctl router net.ipv6.conf.all.forwarding=1
    lab_exec router ip -6 addr add "$LAB_ROUTER_LAN_LL/64" dev eth1 nodad
    lab_exec router ip -6 addr add "$LAB_ROUTER_LAN_IP6/64" dev eth1 nodad
    lab_exec router ip -6 addr add "$LAB_ROUTER_WAN_LL/64" dev eth0 nodad
    lab_exec router ip -6 addr add "$LAB_ROUTER_WAN_IP6/64" dev eth0 nodad
    lab_exec router ip -6 route add default via "$LAB_ISP_WAN_IP6" dev eth0
}

# ---- a hand-made router, for validating the lab without vpnsup ----
#   tunnel: gateway address, plain openvpn client, nft masquerade onto tun*.
#   leaky:  gateway address only; the router forwards LAN traffic straight out of eth0.
lab_emulate_router_start() {
    local mode=${1:-tunnel}
    lab_exec router ip addr replace "$LAB_LAN_GW_CIDR" dev eth1
    # A client that tried before the gateway existed may hold an unresolved (soon FAILED) ARP
    # entry for it, which fails its next connection; start it afresh.
    lab_exec client ip neigh flush dev eth0
    [ "$mode" = leaky ] && return 0
    lab_exec router nft -f - <<'EOF'
table ip labemu {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "tun*" masquerade
    }
}
EOF
    lab_daemon_start openvpn-client router openvpn --config "$LAB_RUNDIR/config/client.ovpn" \
        --auth-user-pass "$LAB_RUNDIR/credentials"
    _lab_wait_log openvpn-client "$LAB_RUNDIR/logs/openvpn-client.log" \
        "Initialization Sequence Completed" 30
}

lab_emulate_router_stop() {
    lab_daemon_stop openvpn-client TERM 5
    lab_exec router nft delete table ip labemu 2>/dev/null || true
    lab_exec router ip addr del "$LAB_LAN_GW_CIDR" dev eth1 2>/dev/null || true
}

# ---- CLI ----

_lab_usage() {
    cat <<'EOF'
usage: lab/lab.sh COMMAND
  up                 build a lab owned by the calling shell (prefix vpl<its pid>-), print its run dir
  down               tear down the calling shell's lab (or LAB_PREFIX's)
  clean [--all]      remove namespaces, daemons and run dirs of runs whose owner is gone (--all: all)
  env                print the lab's variables as shell assignments
  status             namespaces and daemons of this lab
  exec NODE CMD...   run CMD in client|router|isp|inet
  server-start | server-stop           the OpenVPN server in the ISP namespace
  capture-start | capture-stop | leaks tcpdump on the WAN link; leaks stops it and counts
  echo-sources       distinct sources the echo logged
  emulate tunnel|leaky | emulate-stop  a hand-made router in place of vpnsup
EOF
}

_lab_cli() {
    set -euo pipefail
    local cmd=${1:-help}
    [ $# -gt 0 ] && shift
    # A CLI lab belongs to the shell that runs the commands, so its prefix is stable across calls.
    LAB_OWNER=${LAB_OWNER:-$PPID}
    case "$cmd" in
        help | -h | --help) _lab_usage; return 0 ;;
        clean) lab_init; lab_clean_stale --rundirs "$@"; return 0 ;;
    esac
    lab_init
    case "$cmd" in
        up)
            lab_up
            echo "lab up in $(lab_ms_to_s "$LAB_UP_MS") s: prefix $LAB_PREFIX, run dir $LAB_RUNDIR"
            echo "vpnsup config: $LAB_RUNDIR/config/client.ovpn, credentials: $LAB_RUNDIR/credentials"
            ;;
        down) lab_down ;;
        env) printf 'LAB_PREFIX=%q\nLAB_RUNDIR=%q\nLAB_OWNER=%q\n' "$LAB_PREFIX" "$LAB_RUNDIR" "$LAB_OWNER" ;;
        status)
            _lab_netns_list | grep -F -- "$LAB_PREFIX" || echo "no namespaces with prefix $LAB_PREFIX"
            local f
            for f in "$LAB_RUNDIR"/pids/*.pid; do
                [ -e "$f" ] || continue
                f=${f##*/}
                f=${f%.pid}
                echo "$f: $(lab_daemon_pid "$f" || echo dead)"
            done
            ;;
        exec) lab_exec "$@" ;;
        server-start) lab_vpn_server_start ;;
        server-stop) lab_vpn_server_stop ;;
        capture-start) lab_capture_start ;;
        capture-stop) lab_capture_stop ;;
        leaks) lab_leaks ;;
        echo-sources) lab_echo_sources ;;
        emulate) lab_emulate_router_start "$@" ;;
        emulate-stop) lab_emulate_router_stop ;;
        *) _lab_usage >&2; return 2 ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    _lab_cli "$@"
fi
