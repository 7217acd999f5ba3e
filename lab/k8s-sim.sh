#!/usr/bin/env bash
# lab/k8s-sim.sh — what Kubernetes gives a pod, simulated in network namespaces, for vpnsup's
# gateway and client pods (docs/kubernetes.md). Sourced by Tests/k8s/sim.sh; built on lab/lab.sh,
# whose router namespace becomes the cluster's edge (NAT to the ISP), whose ISP runs the OpenVPN
# server and whose internet host runs the HTTP echo and DNS.
#
#   node n1 (192.168.50.11)       node n2 (.12)              node n3 (.13)
#     pods 10.244.1.x/32            pods 10.244.2.x/32         pods 10.244.3.x/32
#     kube-dns .53, gateway .20,    client-b .10, web .80      (the gateway, rescheduled: .20)
#     client-a .10
#        \ eth0                       | eth0                    / eth0
#         up1 ------------ bridge nodes0 192.168.50.1 (edge = lab's router) ------ up3
#                                   up2        | eth0 198.51.100.2, masquerade
#                                        ISP (OpenVPN server) -- internet (echo, DNS)
#
# Pods are namespaces routed by their node as Calico does it: eth0 holds the pod IP as /32, the
# default route is 169.254.1.1 (the node's end answers by proxy ARP), the node routes each pod IP
# to its veth and other nodes' pod /24s to those nodes. Services are a kube-proxy-like DNAT on
# every node (10.96.0.10 kube-dns, 10.96.0.80 web); the cluster DNS is dnsmasq in the kube-dns pod,
# answering the gateway's headless Service name with the gateway pod's IP (ksim_dns_set).
#
# Phase 1 (now): the gateway and the clients are configured by hand (ip/nft commands below), as
# vpnsup run (gateway) and vpnsup join (clients) will do it: phase 2 swaps those in with the same
# environment the manifests set (deploy/kubernetes). What is by hand:
#   gateway: vxlan0 (VNI, port, learning) over eth0 with the overlay's gateway address and the MAC
#            derived from it, a route for the pod network by eth0 (above OpenVPN's redirect),
#            OpenVPN, masquerade into the tunnel, a forward filter (overlay -> tunnel only), DNS
#            from the overlay redirected to the echo's resolver through the tunnel.
#   client:  the kill switch (ClientKillSwitch's ruleset, as its unit test prints it), the pod's
#            DNS forwarder (cluster domain -> kube-dns, everything else -> the gateway, from marked
#            sockets), the gateway's name resolved through it, vxlan0 (nolearning, remote = the
#            gateway's pod IP) with the derived overlay address and MAC, cluster routes on eth0,
#            default route into the overlay.
#
# Namespaces are named <lab prefix>k-<name>, so lab_down removes them too; daemons are recorded
# in <rundir>/sim-pids and stopped by pid (ksim_down), before lab_down.

# shellcheck source=lab/lab.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lab.sh"

# shellcheck disable=SC2034 # constants for the scripts that source this file
KSIM_POD_CIDR=10.244.0.0/16
KSIM_SERVICE_CIDR=10.96.0.0/12
KSIM_NODE_CIDR=192.168.50.0/24
KSIM_EDGE_IP=192.168.50.1
KSIM_CLUSTER_DNS=10.96.0.10
KSIM_WEB_SERVICE=10.96.0.80
KSIM_GATEWAY_NAME=vpn-gateway.vpn.svc.cluster.local
KSIM_WEB_NAME=web.apps.svc.cluster.local
KSIM_CLUSTER_DOMAIN=cluster.local
KSIM_GATEWAY_ADDR=172.30.0.1/15 # the gateway's IP_ADDR, the clients' GATEWAY_ADDR
KSIM_VNI=30320
KSIM_PORT=4789
KSIM_DNS_MARK=0x76706e02 # ClientKillSwitch.DNSForwarding.defaultMark
KSIM_NODES=(n1 n2 n3)

ksim_ns() { echo "${LAB_PREFIX:?lab_init first}k-$1"; }
ksim_exec() {
    local ns
    ns=$(ksim_ns "$1")
    shift
    ip netns exec "$ns" "$@"
}
_ksim_sysctl() {
    local name=$1
    shift
    ksim_exec "$name" sysctl -qw "$@" >/dev/null
}

# Node number of nN, and the IP of a node.
_ksim_node_ip() { echo "192.168.50.1${1#n}"; }

# ---- daemons (recorded by pid, stopped by pid) ----

ksim_daemon_start() { # NAME NAMESPACE-NAME CMD...
    local name=$1 where=$2 pid
    shift 2
    mkdir -p "$LAB_RUNDIR/logs" "$LAB_RUNDIR/sim-pids"
    (exec ip netns exec "$(ksim_ns "$where")" "$@" >>"$LAB_RUNDIR/logs/$name.log" 2>&1 </dev/null) &
    pid=$!
    disown "$pid" 2>/dev/null || true
    echo "$pid $where" >"$LAB_RUNDIR/sim-pids/$name.pid"
}

ksim_daemon_pid() {
    local pid where
    read -r pid where <"$LAB_RUNDIR/sim-pids/$1.pid" 2>/dev/null || return 1
    _lab_pid_in_ns "$pid" "$(ksim_ns "$where")" || return 1
    echo "$pid"
}

ksim_daemon_stop() { # NAME [SIGNAL]
    local f=$LAB_RUNDIR/sim-pids/$1.pid pid where ns
    [ -f "$f" ] || return 0
    read -r pid where <"$f" || true
    ns=$(ksim_ns "$where")
    if _lab_pid_in_ns "$pid" "$ns"; then
        kill -s "${2:-TERM}" "$pid" 2>/dev/null || true
        if ! _lab_wait_gone "$pid" "$ns" 5; then
            kill -s KILL "$pid" 2>/dev/null || true
            _lab_wait_gone "$pid" "$ns" 5 || _lab_log "$1 (pid $pid) survives SIGKILL"
        fi
    fi
    rm -f "$f"
}

# ---- the cluster ----

_ksim_ns_add() {
    ip netns add "$(ksim_ns "$1")"
    # No IPv6 anywhere in the cluster: its own chatter is not what the captures look for.
    _ksim_sysctl "$1" net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    # Pods and nodes route asymmetrically at times (a CNI sets rp_filter off where it must).
    _ksim_sysctl "$1" net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    ksim_exec "$1" ip link set lo up
}

_ksim_nodes() {
    local r node ip n other
    r=$(lab_ns router)
    lab_exec router ip link add nodes0 type bridge
    lab_exec router ip addr add "$KSIM_EDGE_IP/24" dev nodes0
    lab_exec router ip link set nodes0 up
    for node in "${KSIM_NODES[@]}"; do
        n=${node#n} ip=$(_ksim_node_ip "$node")
        _ksim_ns_add "$node"
        _ksim_sysctl "$node" net.ipv4.ip_forward=1
        ip link add eth0 netns "$(ksim_ns "$node")" type veth peer name "up$n" netns "$r"
        lab_exec router ip link set "up$n" master nodes0 up
        ksim_exec "$node" ip addr add "$ip/24" dev eth0
        ksim_exec "$node" ip link set eth0 up
        ksim_exec "$node" ip route add default via "$KSIM_EDGE_IP"
        lab_exec router ip route add "10.244.$n.0/24" via "$ip"
        # The node's own pod block: a pod IP without a pod goes nowhere (Calico's blackhole),
        # instead of back to the edge and round again.
        ksim_exec "$node" ip route add blackhole "10.244.$n.0/24"
        for other in "${KSIM_NODES[@]}"; do
            [ "$other" = "$node" ] || ksim_exec "$node" ip route add "10.244.${other#n}.0/24" via "$(_ksim_node_ip "$other")"
        done
        # kube-proxy: the Services, DNATed where the client pod's packet enters its node (so the
        # reply comes back through the same node's conntrack).
        ksim_exec "$node" nft -f - <<EOF
table ip kubeproxy {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr $KSIM_CLUSTER_DNS udp dport 53 dnat to 10.244.1.53
        ip daddr $KSIM_CLUSTER_DNS tcp dport 53 dnat to 10.244.1.53
        ip daddr $KSIM_WEB_SERVICE tcp dport 80 dnat to 10.244.2.80
    }
}
EOF
    done
    # The cluster's NAT to the internet (a cloud NAT or the nodes' own masquerade).
    lab_exec router nft -f - <<EOF
table ip clusteredge {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" ip saddr { $KSIM_POD_CIDR, $KSIM_NODE_CIDR } masquerade
    }
}
EOF
}

# ksim_pod_add POD NODE IP: a pod namespace with IP/32 on eth0, routed by NODE.
ksim_pod_add() {
    local pod=$1 node=$2 ip=$3 veth="c$1"
    _ksim_ns_add "$pod"
    _ksim_sysctl "$pod" net.ipv4.ip_forward=0
    ip link add eth0 netns "$(ksim_ns "$pod")" type veth peer name "$veth" netns "$(ksim_ns "$node")"
    ksim_exec "$node" ip link set "$veth" up
    _ksim_sysctl "$node" "net.ipv4.conf.$veth.proxy_arp=1"
    ksim_exec "$node" ip route add "$ip/32" dev "$veth"
    ksim_exec "$pod" ip addr add "$ip/32" dev eth0
    ksim_exec "$pod" ip link set eth0 up
    ksim_exec "$pod" ip route add 169.254.1.1 dev eth0 scope link
    ksim_exec "$pod" ip route add default via 169.254.1.1 dev eth0
    echo "$node $ip" >"$LAB_RUNDIR/sim-pods/$pod"
}

# ksim_pod_delete POD: its processes, its namespace, its node's route (what the kubelet and CNI do).
ksim_pod_delete() {
    local node ip ns
    read -r node ip <"$LAB_RUNDIR/sim-pods/$1" || return 1
    ns=$(ksim_ns "$1")
    _lab_kill_ns_procs "$ns" || true
    ip netns del "$ns"
    ksim_exec "$node" ip route del "$ip/32" 2>/dev/null || true
    rm -f "$LAB_RUNDIR/sim-pods/$1"
}

ksim_pod_ip() { local node ip; read -r node ip <"$LAB_RUNDIR/sim-pods/$1" && echo "$ip"; }

# The cluster DNS: dnsmasq in the kube-dns pod, authoritative for the cluster domain, no upstream.
_ksim_cluster_dns() {
    local d=$LAB_RUNDIR/sim
    : >"$d/dns.log"
    ksim_pod_add kube-dns n1 10.244.1.53
    printf '%s %s\n' "$KSIM_WEB_SERVICE" "$KSIM_WEB_NAME" >"$d/hosts"
    ksim_daemon_start kube-dns kube-dns dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv \
        --no-hosts --addn-hosts="$d/hosts" --local="/$KSIM_CLUSTER_DOMAIN/" --local-ttl=5 \
        --bind-interfaces --listen-address=10.244.1.53 --user=root --group=root --pid-file \
        --log-queries=extra --log-facility="$d/dns.log"
    lab_wait_for 10 _ksim_listening kube-dns udp 10.244.1.53 53 || { _lab_log "kube-dns not listening"; return 1; }
}

_ksim_listening() { # POD tcp|udp ADDR PORT
    local out
    out=$(ksim_exec "$1" ss -Hln --"$2" "src $3 and sport = :$4" 2>/dev/null) || return 1
    [ -n "$out" ]
}

# ksim_dns_set NAME IP: the cluster DNS answers NAME with IP (as the Endpoints controller would
# have it for a headless Service), reloaded by SIGHUP.
ksim_dns_set() {
    local d=$LAB_RUNDIR/sim
    { grep -v " $1\$" "$d/hosts" || true; printf '%s %s\n' "$2" "$1"; } >"$d/hosts.new"
    mv "$d/hosts.new" "$d/hosts"
    kill -HUP "$(ksim_daemon_pid kube-dns)"
}

# A cluster service: the lab's HTTP echo in the web pod (it answers with the source it saw).
_ksim_web() {
    ksim_pod_add web n2 10.244.2.80
    : >"$LAB_RUNDIR/sim/web.log"
    ksim_daemon_start web web "$LAB_PYTHON" -u "$LAB_RUNDIR/inet/echo.py" "$LAB_RUNDIR/sim/web.log" 10.244.2.80 80
    lab_wait_for 10 _ksim_listening web tcp 10.244.2.80 80 || { _lab_log "web not listening"; return 1; }
}

# ---- the gateway pod (by hand; phase 2: vpnsup run with POD_CIDRS set) ----

# The overlay's MAC for an address: OverlayAddressing.macAddress (02:76 and the four octets).
ksim_overlay_mac() {
    local IFS=.
    # shellcheck disable=SC2086 # the octets
    set -- $1
    printf '02:76:%02x:%02x:%02x:%02x' "$1" "$2" "$3" "$4"
}

# The client address of a pod IP: OverlayAddressing.clientAddress for 10.244.0.0/16 and
# 172.30.0.1/15 (the upper half starts at 172.31.0.0; same offset as in the pod network).
ksim_client_address() {
    local IFS=.
    # shellcheck disable=SC2086
    set -- $1
    echo "172.31.$3.$4"
}

# ksim_gateway_start POD NODE IP: the gateway pod, its tunnel up; returns once OpenVPN is connected.
ksim_gateway_start() {
    local pod=$1 gw=${KSIM_GATEWAY_ADDR%/*}
    ksim_pod_add "$pod" "$2" "$3"
    _ksim_sysctl "$pod" net.ipv4.ip_forward=1
    ksim_exec "$pod" ip link add vxlan0 type vxlan id "$KSIM_VNI" dstport "$KSIM_PORT" dev eth0 local "$3"
    ksim_exec "$pod" ip link set vxlan0 address "$(ksim_overlay_mac "$gw")"
    ksim_exec "$pod" ip addr add "$KSIM_GATEWAY_ADDR" dev vxlan0
    ksim_exec "$pod" ip link set vxlan0 up
    # The overlay's own packets to the pods go by eth0: without this route OpenVPN's
    # redirect-gateway (0/1 and 128/1 via tun0) would send them into the tunnel (vxlan routes
    # learned destinations by the main table, whatever its `dev`).
    ksim_exec "$pod" ip route add "$KSIM_POD_CIDR" via 169.254.1.1 dev eth0
    # Overlay traffic into the tunnel only, masqueraded; overlay DNS to the echo's resolver.
    ksim_exec "$pod" nft -f - <<EOF
table inet gateway {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "vxlan0" ip daddr != $LAB_ECHO_IP udp dport 53 dnat ip to $LAB_ECHO_IP
        iifname "vxlan0" ip daddr != $LAB_ECHO_IP tcp dport 53 dnat ip to $LAB_ECHO_IP
    }
    chain forward {
        type filter hook forward priority 0; policy drop;
        iifname "vxlan0" oifname "tun0" accept
        iifname "tun0" oifname "vxlan0" ct state established,related accept
        counter drop
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "tun0" masquerade
    }
    # The WAN (eth0) carries OpenVPN's transport and the overlay, nothing else: what vpnsup's
    # egress chain allows (there with OpenVPN's fwmark; the kernel's ICMP errors are dropped too).
    chain egress {
        type filter hook postrouting priority 0; policy accept;
        oifname "eth0" ip daddr $LAB_VPN_SERVER_IP udp dport $LAB_VPN_PORT accept
        oifname "eth0" ip daddr $KSIM_POD_CIDR udp dport $KSIM_PORT accept
        oifname "eth0" counter drop
    }
}
EOF
    ksim_gateway_tunnel_start "$pod"
}

ksim_gateway_tunnel_start() {
    ksim_daemon_start "openvpn-$1" "$1" openvpn --config "$LAB_RUNDIR/config/client-ip.ovpn" \
        --auth-user-pass "$LAB_RUNDIR/credentials" --dev tun0 --dev-type tun
    lab_wait_for 30 grep -qF "Initialization Sequence Completed" "$LAB_RUNDIR/logs/openvpn-$1.log" ||
        { _lab_log "openvpn in $1 did not connect"; tail -n 20 "$LAB_RUNDIR/logs/openvpn-$1.log" >&2; return 1; }
}

ksim_gateway_tunnel_stop() { ksim_daemon_stop "openvpn-$1"; }

# ---- client pods (by hand; phase 2: vpnsup join with the vpnsup-join ConfigMap) ----

_ksim_forwarder_script() {
    cat >"$LAB_RUNDIR/sim/forwarder.py" <<'PYEOF'
"""The pod's DNS forwarder (docs/kubernetes.md; phase 2 builds it into vpnsup join): listens on
127.0.0.1:53 (UDP); names in the cluster domain go to the cluster resolver, every other name to
the gateway's overlay address, where the gateway sends it through the tunnel. Its upstream
sockets carry the mark the client kill switch lets through.
usage: forwarder.py CLUSTER_DOMAIN CLUSTER_DNS GATEWAY MARK LOG"""
import socket
import sys
import threading

DOMAIN, CLUSTER_DNS, GATEWAY, MARK, LOG = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4], 0), sys.argv[5]
SO_MARK = 36


def qname(packet):
    labels, i = [], 12
    while i < len(packet) and packet[i]:
        labels.append(packet[i + 1:i + 1 + packet[i]].decode("ascii", "replace"))
        i += 1 + packet[i]
    return ".".join(labels).lower()


def relay(listener, query, client):
    name = qname(query)
    upstream = CLUSTER_DNS if name == DOMAIN or name.endswith("." + DOMAIN) else GATEWAY
    with open(LOG, "a", encoding="ascii") as log:
        log.write(f"{name} -> {upstream}\n")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_MARK, MARK)
    s.settimeout(2)
    try:
        s.sendto(query, (upstream, 53))
        listener.sendto(s.recv(4096), client)
    except OSError:
        pass
    finally:
        s.close()


listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
listener.bind(("127.0.0.1", 53))
while True:
    query, client = listener.recvfrom(4096)
    threading.Thread(target=relay, args=(listener, query, client), daemon=True).start()
PYEOF
}

# The client kill switch: ClientKillSwitch(...).ruleset.nftText for the simulation's networks
# (Tests/StateMachineTests/OverlayTests.swift prints the same ruleset for its own).
ksim_client_killswitch() {
    ksim_exec "$1" nft -f - <<EOF
table inet vpnsup {
	chain nat_output {
		type nat hook output priority -100; policy accept;
		meta mark $KSIM_DNS_MARK accept
		ip daddr != 127.0.0.1 udp dport 53 dnat ip to 127.0.0.1
		ip daddr != 127.0.0.1 tcp dport 53 dnat ip to 127.0.0.1
	}

	chain forward {
		type filter hook forward priority 0; policy drop;
		counter drop
	}

	chain output {
		type filter hook output priority 0; policy drop;
		oifname "lo" accept
		ct status dnat ip daddr 127.0.0.1 udp dport 53 accept
		ct status dnat ip daddr 127.0.0.1 tcp dport 53 accept
		oifname "eth0" meta mark $KSIM_DNS_MARK ip daddr $KSIM_CLUSTER_DNS udp dport 53 accept
		oifname "eth0" meta mark $KSIM_DNS_MARK ip daddr $KSIM_CLUSTER_DNS tcp dport 53 accept
		ip daddr $KSIM_CLUSTER_DNS udp dport 53 counter drop
		ip daddr $KSIM_CLUSTER_DNS tcp dport 53 counter drop
		oifname "eth0" ip daddr $KSIM_POD_CIDR accept
		oifname "eth0" ip daddr $KSIM_SERVICE_CIDR accept
		oifname "eth0" ip daddr $KSIM_NODE_CIDR accept
		meta nfproto ipv4 oifname "vxlan0" accept
		counter drop
	}
}
EOF
}

# ksim_resolve POD NAME: the A record through the pod's forwarder (the first address), or failure.
ksim_resolve() {
    local answer
    answer=$(ksim_exec "$1" dig +short +time=1 +tries=1 @127.0.0.1 "$2" A 2>/dev/null | head -n 1) || return 1
    [[ $answer =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
    echo "$answer"
}

# ksim_client_join POD NODE IP: kill switch first, then the forwarder, the gateway's name, the
# overlay and the routes. Prints the gateway pod IP it joined.
ksim_client_join() {
    local pod=$1 ip=$3 overlay gateway
    ksim_pod_add "$pod" "$2" "$ip"
    ksim_client_killswitch "$pod"
    ksim_daemon_start "forwarder-$pod" "$pod" "$LAB_PYTHON" -u "$LAB_RUNDIR/sim/forwarder.py" "$KSIM_CLUSTER_DOMAIN" \
        "$KSIM_CLUSTER_DNS" "${KSIM_GATEWAY_ADDR%/*}" "$KSIM_DNS_MARK" "$LAB_RUNDIR/sim/forwarder-$pod.log"
    lab_wait_for 10 _ksim_listening "$pod" udp 127.0.0.1 53 || { _lab_log "forwarder in $pod not listening"; return 1; }
    gateway=$(lab_wait_for 10 ksim_resolve "$pod" "$KSIM_GATEWAY_NAME" >/dev/null && ksim_resolve "$pod" "$KSIM_GATEWAY_NAME") ||
        { _lab_log "$pod cannot resolve $KSIM_GATEWAY_NAME"; return 1; }
    overlay=$(ksim_client_address "$ip")
    ksim_exec "$pod" ip link add vxlan0 type vxlan id "$KSIM_VNI" dstport "$KSIM_PORT" dev eth0 local "$ip" \
        nolearning remote "$gateway"
    ksim_exec "$pod" ip link set vxlan0 address "$(ksim_overlay_mac "$overlay")"
    ksim_exec "$pod" ip addr add "$overlay/${KSIM_GATEWAY_ADDR#*/}" dev vxlan0
    ksim_exec "$pod" ip link set vxlan0 up
    ksim_neighbour_timers "$pod"
    local net
    for net in "$KSIM_POD_CIDR" "$KSIM_SERVICE_CIDR" "$KSIM_NODE_CIDR"; do
        ksim_exec "$pod" ip route add "$net" via 169.254.1.1 dev eth0
    done
    ksim_exec "$pod" ip route replace default via "${KSIM_GATEWAY_ADDR%/*}" dev vxlan0
    echo "$gateway"
}

# The gateway-move detector's timers on a client's vxlan0 (docs/kubernetes.md, Gateway moves):
# without confirmation from traffic the gateway's entry is re-checked after 1-3 s, probed once a
# second later, three unicast probes 0.5 s apart, then FAILED, which rtnetlink announces.
ksim_neighbour_timers() {
    _ksim_sysctl "$1" net.ipv4.neigh.vxlan0.base_reachable_time_ms=2000 net.ipv4.neigh.vxlan0.delay_first_probe_time=1 \
        net.ipv4.neigh.vxlan0.retrans_time_ms=500 net.ipv4.neigh.vxlan0.ucast_solicit=3 net.ipv4.neigh.vxlan0.mcast_solicit=3
}

# ksim_client_follow POD: re-resolve the gateway's name, re-point the overlay in place
# (RTM_NEWLINK IFLA_VXLAN_GROUP, what VxlanLink.setRemote sends), and forget the gateway's
# neighbour entry: the client's next packet then ARPs, which is how the new gateway learns the
# client (its link learns; it cannot ask, having no default destination). Prints the address.
ksim_client_follow() {
    local gateway
    gateway=$(ksim_resolve "$1" "$KSIM_GATEWAY_NAME") || return 1
    ksim_exec "$1" ip link set vxlan0 type vxlan remote "$gateway"
    ksim_exec "$1" ip neigh flush dev vxlan0
    echo "$gateway"
}

# ---- captures: every node's uplink (what the node sends into the fabric) ----

ksim_capture_start() {
    local node n pcap mac
    mkdir -p "$LAB_RUNDIR/capture"
    KSIM_CAPTURE_ROUND=$((${KSIM_CAPTURE_ROUND:-0} + 1))
    for node in "${KSIM_NODES[@]}"; do
        n=${node#n}
        pcap=$LAB_RUNDIR/capture/$node-$KSIM_CAPTURE_ROUND.pcap
        # Only frames the node sent (its MAC as source), chosen in the kernel: then tcpdump's
        # "received by filter" equals what it wrote, and a lost packet shows.
        mac=$(ksim_exec "$node" cat /sys/class/net/eth0/address)
        rm -f "$LAB_RUNDIR/logs/tcpdump-$node.log"
        lab_daemon_start "tcpdump-$node" router tcpdump -n -Z root -Q in --immediate-mode -U -i "up$n" \
            -w "$pcap" "ether src $mac"
    done
    for node in "${KSIM_NODES[@]}"; do
        _lab_wait_log "tcpdump-$node" "$LAB_RUNDIR/logs/tcpdump-$node.log" "listening on" 10 || return 1
    done
}

# What a node may send into the fabric: anything to the cluster's own networks, ARP, and the
# gateway's tunnel transport (from a gateway pod's IP to the VPN server's port). Everything else
# is a pod's (or the node's) packet on its way out of the cluster: a leak.
ksim_allowed_filter() {
    local gateways=$1
    echo "arp or dst net $KSIM_POD_CIDR or dst net $KSIM_SERVICE_CIDR or dst net $KSIM_NODE_CIDR" \
        "or (udp and dst host $LAB_VPN_SERVER_IP and dst port $LAB_VPN_PORT and (${gateways}))"
}

# ksim_capture_leaks "src host A or src host B": stops the captures, prints "node:count ..." and
# lists the leaked packets in <rundir>/capture/leaks-<node>.txt. Fails when a capture is incomplete.
ksim_capture_leaks() {
    local node pcap out captured received counts=()
    for node in "${KSIM_NODES[@]}"; do
        lab_daemon_stop "tcpdump-$node" INT 5
    done
    for node in "${KSIM_NODES[@]}"; do
        pcap=$LAB_RUNDIR/capture/$node-$KSIM_CAPTURE_ROUND.pcap
        out=$LAB_RUNDIR/capture/leaks-$node-$KSIM_CAPTURE_ROUND.txt
        captured=$(sed -n 's/^\([0-9]*\) packets\{0,1\} captured$/\1/p' "$LAB_RUNDIR/logs/tcpdump-$node.log" | tail -n 1)
        received=$(sed -n 's/^\([0-9]*\) packets\{0,1\} received by filter$/\1/p' "$LAB_RUNDIR/logs/tcpdump-$node.log" | tail -n 1)
        if [ -z "$captured" ] || [ "$captured" != "$received" ] || [ ! -s "$pcap" ]; then
            _lab_log "capture on $node incomplete (captured '$captured', received '$received')"
            return 1
        fi
        tcpdump -nn -r "$pcap" "not ($(ksim_allowed_filter "$1"))" >"$out" 2>/dev/null || return 1
        counts+=("$node:$(wc -l <"$out" | tr -d ' ')/$captured")
    done
    echo "${counts[*]}"
}

# ---- up / down ----

ksim_up() {
    local t0
    t0=$(lab_now_ms)
    lab_up
    mkdir -p "$LAB_RUNDIR/sim" "$LAB_RUNDIR/sim-pods" "$LAB_RUNDIR/sim-pids"
    _ksim_forwarder_script
    _ksim_nodes
    _ksim_cluster_dns
    _ksim_web
    lab_vpn_server_start
    KSIM_UP_MS=$(($(lab_now_ms) - t0))
}

# Stops every recorded daemon by pid, then lab_down removes every namespace of the prefix.
ksim_down() {
    local f name
    if [ -d "${LAB_RUNDIR:-}/sim-pids" ]; then
        for f in "$LAB_RUNDIR"/sim-pids/*.pid; do
            [ -e "$f" ] || continue
            name=${f##*/}
            ksim_daemon_stop "${name%.pid}"
        done
    fi
    lab_down
}
