# shellcheck shell=bash
# lab/wireguard.sh — the lab's WireGuard side, sourced after lab/lab.sh.
#
#   ROUTER ns                        ISP ns (+ WireGuard server)            INET ns
#   eth0 198.51.100.2 ------------- rtr0 198.51.100.1 :51820/udp
#   (tunnel link: LAB_WG_ROUTER_IF)  LAB_WG_SERVER_IF 10.9.0.1/24 (wireguard-go)
#                                    10.9.0.0/24 forwarded to INET, no NAT   echo sees 10.9.0.2
#
# As with the OpenVPN server, the ISP forwards the tunnel subnet without NAT: traffic that came
# through the tunnel reaches the echo from the router's tunnel address (LAB_WG_CLIENT_IP), a leak
# from the LAN address. The server is Debian's wireguard-go (no kernel module on these machines)
# configured with `wg`, with keys made at test time.
#
# wireguard-go's UAPI sockets live in /var/run/wireguard, which every network namespace shares:
# interface names carry the lab's owner (LAB_WG_SERVER_IF vwgs<tag>, LAB_WG_ROUTER_IF vwgr<tag>,
# tag = the owner pid, or a checksum of a custom prefix), so labs side by side never collide.
#
# Functions:
#   lab_wg_init                 names and files of this lab's WireGuard side (after lab_init)
#   lab_wg_setup                keys (server, client, a wrong server key) and the client files:
#                               <rundir>/config/client.conf       Endpoint by host name (LAB_VPN_NAME)
#                               <rundir>/config/client-ip.conf    Endpoint by address
#                               <rundir>/config/client-wrongkey.conf  a server PublicKey the server
#                                                                 does not hold: no handshake ever
#   lab_wg_server_start/stop    wireguard-go + `wg set` in ISP, its tunnel address, by pid
#   lab_wg_use_transport        make lab_leaks count WireGuard's transport (UDP LAB_WG_PORT) as
#                               the only allowed WAN traffic, instead of OpenVPN's
#   lab_wg_router_pid           pid of the wireguard-go running in the router namespace (vpnsup's
#                               or the emulated router's), fails when none runs
#   lab_wg_kill_router          SIGKILL that wireguard-go, by pid; waits until it and its link are gone
#   lab_wg_handshake NODE IF    latest handshake of IF's first peer, seconds since the epoch (0: none)
#   lab_wg_emulate_router_start [client.conf|client-ip.conf|client-wrongkey.conf], ..._stop
#                               a hand-made WireGuard router (wireguard-go configured by `wg`, the
#                               transport marked as vpnsup marks it, nft masquerade, 0/1 and 128/1
#                               into the tunnel) for validating the lab without vpnsup
#   lab_wg_down                 remove socket files of this lab's devices left by a SIGKILL
#                               (lab_down calls it)

# shellcheck disable=SC2034 # constants for the scripts that source this file
LAB_WG_PORT=51820
LAB_WG_NET=10.9.0.0/24
LAB_WG_PREFIX=10.9.0.
LAB_WG_SERVER_TUN_IP=10.9.0.1
LAB_WG_CLIENT_IP=10.9.0.2
LAB_WG_SOCKET_DIR=/var/run/wireguard
# vpnsup's transport mark (Configuration.transportMark), which the emulated router sets too.
LAB_WG_MARK=0x76706e01

lab_wg_init() {
    local base tag
    base=${LAB_PREFIX:?lab_init first}
    base=${base%-}
    tag=${base#vpl}
    # Interface names hold 15 bytes: "vwg" + role + at most 11 more.
    if ! [[ $tag =~ ^[0-9]{1,11}$ ]]; then
        tag=$(printf '%s' "$base" | cksum | awk '{printf "%x", $1}')
    fi
    LAB_WG_SERVER_IF=vwgs$tag
    LAB_WG_ROUTER_IF=vwgr$tag
    LAB_WG_DIR=$LAB_RUNDIR/wg
    export LAB_WG_SERVER_IF LAB_WG_ROUTER_IF LAB_WG_DIR
}

_lab_wg_require() {
    lab_require wireguard-go wg
}

# Keys and client files, once per lab run.
lab_wg_setup() {
    [ -n "${LAB_WG_DIR:-}" ] || lab_wg_init
    [ -s "$LAB_WG_DIR/server.pub" ] && return 0
    _lab_wg_require
    mkdir -p "$LAB_WG_DIR" "$LAB_RUNDIR/config"
    (
        umask 077
        cd "$LAB_WG_DIR" || exit 1
        for who in server client wrong; do
            wg genkey >"$who.key"
            wg pubkey <"$who.key" >"$who.pub"
        done
        wg genpsk >psk
    )
    local private server psk
    private=$(cat "$LAB_WG_DIR/client.key")
    server=$(cat "$LAB_WG_DIR/server.pub")
    psk=$(cat "$LAB_WG_DIR/psk")
    (
        umask 077
        # A provider's file, with the wg-quick extras vpnsup names as ignored.
        cat >"$LAB_RUNDIR/config/client.conf" <<EOF
# vpnsup lab: the provider's WireGuard profile, as a user would drop it in /config
[Interface]
PrivateKey = $private
Address = $LAB_WG_CLIENT_IP/32
DNS = $LAB_ECHO_IP
PostUp = echo vpnsup never runs this
[Peer]
PublicKey = $server
PresharedKey = $psk
AllowedIPs = 0.0.0.0/0
Endpoint = $LAB_VPN_NAME:$LAB_WG_PORT
EOF
        sed "s/^Endpoint = .*/Endpoint = $LAB_VPN_SERVER_IP:$LAB_WG_PORT/" "$LAB_RUNDIR/config/client.conf" \
            >"$LAB_RUNDIR/config/client-ip.conf"
        sed "s|^PublicKey = .*|PublicKey = $(cat "$LAB_WG_DIR/wrong.pub")|" "$LAB_RUNDIR/config/client-ip.conf" \
            >"$LAB_RUNDIR/config/client-wrongkey.conf"
    )
}

_lab_wg_socket() { echo "$LAB_WG_SOCKET_DIR/$1.sock"; }

_lab_wg_socket_present() { [ -S "$(_lab_wg_socket "$1")" ]; }

lab_wg_server_start() {
    lab_wg_setup
    if lab_daemon_pid wg-server >/dev/null; then
        _lab_log "WireGuard server already running"
        return 0
    fi
    # A socket file left by a killed device of this very name: wireguard-go replaces it itself.
    lab_daemon_start wg-server isp env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=verbose \
        wireguard-go -f "$LAB_WG_SERVER_IF"
    _lab_wait_log wg-server "$LAB_RUNDIR/logs/wg-server.log" "UAPI listener started" 10 || return 1
    lab_exec isp wg set "$LAB_WG_SERVER_IF" private-key "$LAB_WG_DIR/server.key" listen-port "$LAB_WG_PORT" \
        peer "$(cat "$LAB_WG_DIR/client.pub")" preshared-key "$LAB_WG_DIR/psk" allowed-ips "$LAB_WG_CLIENT_IP/32"
    lab_exec isp ip addr add "$LAB_WG_SERVER_TUN_IP/24" dev "$LAB_WG_SERVER_IF"
    lab_exec isp ip link set "$LAB_WG_SERVER_IF" up
}

lab_wg_server_stop() { lab_daemon_stop wg-server TERM 5; }

lab_wg_use_transport() {
    LAB_TRANSPORT_FILTER="arp or (ip src $LAB_ROUTER_WAN_IP and ip dst $LAB_VPN_SERVER_IP and (udp dst port $LAB_WG_PORT or ip[6:2] & 0x1fff != 0))"
}

# The wireguard-go in the router namespace: whichever process there runs it (vpnsup's child or
# the emulated router's).
lab_wg_router_pid() {
    local pid comm
    for pid in $(ip netns pids "$(lab_ns router)" 2>/dev/null); do
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
        if [ "$comm" = wireguard-go ]; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

lab_wg_kill_router() {
    local pid
    pid=$(lab_wg_router_pid) || { _lab_log "no wireguard-go in the router"; return 1; }
    kill -s KILL "$pid"
    _lab_wait_gone "$pid" "$(lab_ns router)" 5 || { _lab_log "wireguard-go (pid $pid) survives SIGKILL"; return 1; }
    # Its threads close the TUN descriptor after the main thread has left the namespace.
    lab_wait_for 5 _lab_wg_router_links_gone || { _lab_log "the links of wireguard-go (pid $pid) survive it"; return 1; }
}

_lab_wg_router_links_gone() {
    ! grep -q . <<<"$(lab_exec router ip -o link show type tun 2>/dev/null)"
}

lab_wg_handshake() { # NODE IF
    lab_exec "$1" wg show "$2" latest-handshakes 2>/dev/null | awk 'NR == 1 {print $2}'
}

# The client file's values, for `wg set` (PrivateKey and PresharedKey through files, not argv).
_lab_wg_value() { sed -n "s/^$1 = //p" "$2" | head -n 1; }

lab_wg_emulate_router_start() {
    local file=$LAB_RUNDIR/config/${1:-client.conf} endpoint
    lab_wg_setup
    lab_exec router ip addr replace "$LAB_LAN_GW_CIDR" dev eth1
    lab_exec client ip neigh flush dev eth0
    lab_daemon_start wg-router router env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=verbose \
        wireguard-go -f "$LAB_WG_ROUTER_IF"
    _lab_wait_log wg-router "$LAB_RUNDIR/logs/wg-router.log" "UAPI listener started" 10 || return 1
    endpoint=$(_lab_wg_value Endpoint "$file")
    (
        umask 077
        _lab_wg_value PrivateKey "$file" >"$LAB_WG_DIR/router.key"
        _lab_wg_value PresharedKey "$file" >"$LAB_WG_DIR/router.psk"
    )
    # `wg` resolves a host name itself, with the ISP's resolver (ip netns exec mounts the
    # router's resolv.conf).
    lab_exec router wg set "$LAB_WG_ROUTER_IF" private-key "$LAB_WG_DIR/router.key" fwmark "$LAB_WG_MARK" \
        peer "$(_lab_wg_value PublicKey "$file")" preshared-key "$LAB_WG_DIR/router.psk" \
        endpoint "$endpoint" allowed-ips 0.0.0.0/0 persistent-keepalive 25
    lab_exec router ip addr add "$LAB_WG_CLIENT_IP/32" dev "$LAB_WG_ROUTER_IF"
    lab_exec router ip link set "$LAB_WG_ROUTER_IF" up
    lab_exec router ip route add 0.0.0.0/1 dev "$LAB_WG_ROUTER_IF"
    lab_exec router ip route add 128.0.0.0/1 dev "$LAB_WG_ROUTER_IF"
    # Masquerade into the tunnel; count the transport on the WAN, marked and not.
    lab_exec router nft -f - <<EOF
table ip labwg {
    counter marked {
    }
    counter unmarked {
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "$LAB_WG_ROUTER_IF" masquerade
    }
    chain egress {
        type filter hook postrouting priority 0; policy accept;
        oifname "eth0" udp dport $LAB_WG_PORT meta mark $LAB_WG_MARK counter name "marked"
        oifname "eth0" udp dport $LAB_WG_PORT meta mark != $LAB_WG_MARK counter name "unmarked"
    }
}
EOF
}

# Packets the emulated router sent to the WireGuard port on the WAN: "marked unmarked".
lab_wg_transport_marks() {
    local name out=""
    for name in marked unmarked; do
        out+="$(lab_exec router nft list counter ip labwg "$name" 2>/dev/null | sed -n 's/.*packets \([0-9]*\).*/\1/p' | head -n 1) "
    done
    echo "${out% }"
}

lab_wg_emulate_router_stop() {
    lab_daemon_stop wg-router TERM 5
    lab_exec router nft delete table ip labwg 2>/dev/null || true
    lab_exec router ip addr del "$LAB_LAN_GW_CIDR" dev eth1 2>/dev/null || true
    rm -f "$LAB_WG_DIR/router.key" "$LAB_WG_DIR/router.psk"
    _lab_wg_remove_stale "$LAB_WG_ROUTER_IF"
}

# Remove IF's socket file when no process serves it (SIGKILL leaves it behind). A live socket is
# left alone: wireguard-go stops when its socket file goes.
_lab_wg_remove_stale() {
    local socket
    socket=$(_lab_wg_socket "$1")
    [ -S "$socket" ] || return 0
    # A connect tells (ss would not: it lists the sockets of its own network namespace only).
    if ! "$LAB_PYTHON" -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$socket" 2>/dev/null; then
        rm -f "$socket"
    fi
}

lab_wg_down() {
    [ -n "${LAB_WG_SERVER_IF:-}" ] || return 0
    _lab_wg_remove_stale "$LAB_WG_SERVER_IF"
    _lab_wg_remove_stale "$LAB_WG_ROUTER_IF"
    return 0
}
