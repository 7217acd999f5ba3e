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
# The gateway pod runs `vpnsup run` and each client pod `vpnsup join` (the binary at $VPNSUP), with
# the environment the manifests set (deploy/kubernetes/examples, rendered by kubectl kustomize):
# only the site's values differ (ksim_site_env). As the kubelet would, the simulation gives the
# gateway pod its ip_forward sysctl and the client pods a resolv.conf naming the cluster DNS
# (/etc/netns/<pod namespace>/resolv.conf, which `ip netns exec` mounts).
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
KSIM_WEB_NAME=web.apps.svc.cluster.local
KSIM_CLUSTER_DOMAIN=cluster.local
KSIM_NODES=(n1 n2 n3)
# The gateway's port forward: tunnel port 8080 to client-b (pod 10.244.2.10) on its overlay address.
KSIM_FORWARD=8080:172.31.2.10:80
# From the manifests once rendered (ksim_up): the Service name, the gateway's overlay address
# (IP_ADDR = GATEWAY_ADDR), the overlay's port.
KSIM_GATEWAY_NAME=
KSIM_GATEWAY_ADDR=
KSIM_PORT=
VPNSUP=${VPNSUP:-$LAB_REPO/.build/debug/vpnsup}
[[ $VPNSUP == /* ]] || VPNSUP=$LAB_REPO/$VPNSUP

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
    _lab_wait_entered "$pid" "$(ksim_ns "$where")"
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
    rm -rf "/etc/netns/$ns"
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

# ---- the environments the manifests set ----

# The gateway's and the clients' environments as deploy/kubernetes renders them (the example
# kustomizations, through kubectl kustomize): ConfigMaps vpnsup-gateway and vpnsup-join, written to
# <rundir>/sim/{gateway,join}.manifest.env. The simulation takes them as they are and changes only
# what is the site's (ksim_site_env): file paths, the provider's resolver, this cluster's networks.
_ksim_manifest_env() {
    local d=$LAB_RUNDIR/sim example
    for example in gateway client; do
        kubectl kustomize "$LAB_REPO/deploy/kubernetes/examples/$example" >"$d/$example.yaml" ||
            { _lab_log "kubectl kustomize deploy/kubernetes/examples/$example failed"; return 1; }
    done
    "$LAB_PYTHON" "$LAB_REPO/Tests/k8s/manifest_env.py" "$d/gateway.yaml" vpnsup-gateway >"$d/gateway.manifest.env" &&
        "$LAB_PYTHON" "$LAB_REPO/Tests/k8s/manifest_env.py" "$d/client.yaml" vpnsup-join >"$d/join.manifest.env"
}

# What the simulation sets itself, by role; everything else comes from the manifests.
#   gateway: the provider's file and the credentials where the lab keeps them, the runtime
#            directory per pod, DNS = the lab's resolver (reached through the tunnel), and a port
#            forward from the tunnel to client-b's overlay address (KSIM_FORWARD).
#   join:    CLUSTER_CIDRS = this cluster's services and nodes, the runtime directory per pod.
# (The cluster resolver comes from the pod's resolv.conf, as the kubelet writes it.)
ksim_site_env() { # gateway|join POD
    case $1 in
        gateway)
            echo "CONFIG=$LAB_RUNDIR/config/client-ip.ovpn"
            echo "CONFIG_DIR=$LAB_RUNDIR/config"
            echo "CREDENTIALS_FILE=$LAB_RUNDIR/credentials"
            echo "RUNTIME_DIR=$LAB_RUNDIR/sim/$2/run"
            echo "DNS=$LAB_ECHO_IP"
            echo "PORT_FWD=$KSIM_FORWARD"
            ;;
        join)
            echo "CLUSTER_CIDRS=$KSIM_SERVICE_CIDR,$KSIM_NODE_CIDR"
            echo "RUNTIME_DIR=$LAB_RUNDIR/sim/$2/run"
            ;;
    esac
}

# ksim_env gateway|join POD: the manifests' environment with the site's values in place, one
# VAR=value per line (PATH first, nothing else inherited).
ksim_env() {
    local site
    site=$(ksim_site_env "$1" "$2" | cut -d= -f1 | paste -sd'|')
    echo "PATH=$PATH"
    grep -Ev "^($site)=" "$LAB_RUNDIR/sim/$1.manifest.env"
    ksim_site_env "$1" "$2"
}

# ksim_manifest_value gateway|join NAME: a variable as the manifests set it.
ksim_manifest_value() { sed -n "s/^$2=//p" "$LAB_RUNDIR/sim/$1.manifest.env"; }

# ---- vpnsup in a pod ----

# ksim_vpnsup POD ARGS...: a vpnsup command in POD against its runtime directory.
ksim_vpnsup() {
    local pod=$1
    shift
    timeout 5 ip netns exec "$(ksim_ns "$pod")" "$VPNSUP" "$@" --runtime-dir "$LAB_RUNDIR/sim/$pod/run"
}

ksim_state() { ksim_vpnsup "$1" status --json 2>/dev/null | jq -er .state; }
ksim_state_is() { [ "$(ksim_state "$1" 2>/dev/null)" = "$2" ]; }

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

# ---- the gateway pod: vpnsup run with the manifests' environment ----

# ksim_gateway_start POD NODE IP: the gateway pod (the manifest's ip_forward sysctl), vpnsup run in
# it; returns once it is TunnelUp (or fails after 30 s).
ksim_gateway_start() {
    local pod=$1 vars
    ksim_pod_add "$pod" "$2" "$3"
    _ksim_sysctl "$pod" net.ipv4.ip_forward=1
    mkdir -p "$LAB_RUNDIR/sim/$pod"
    mapfile -t vars < <(ksim_env gateway "$pod")
    ksim_daemon_start "vpnsup-$pod" "$pod" env -i "${vars[@]}" "$VPNSUP" run
    lab_wait_for 30 ksim_state_is "$pod" TunnelUp ||
        { _lab_log "vpnsup run in $pod not TunnelUp"; tail -n 20 "$LAB_RUNDIR/logs/vpnsup-$pod.log" >&2; return 1; }
}

# ---- client pods: vpnsup join with the manifests' environment ----

# ksim_client_join POD NODE IP: the pod with the resolv.conf the kubelet would write, vpnsup join
# in it (the native sidecar); returns once `vpnsup health` passes, as the startup probe would wait.
ksim_client_join() {
    local pod=$1 vars
    ksim_pod_add "$pod" "$2" "$3"
    mkdir -p "/etc/netns/$(ksim_ns "$pod")" "$LAB_RUNDIR/sim/$pod"
    printf 'search apps.svc.%s svc.%s %s\nnameserver %s\noptions ndots:5\n' "$KSIM_CLUSTER_DOMAIN" \
        "$KSIM_CLUSTER_DOMAIN" "$KSIM_CLUSTER_DOMAIN" "$KSIM_CLUSTER_DNS" >"/etc/netns/$(ksim_ns "$pod")/resolv.conf"
    mapfile -t vars < <(ksim_env join "$pod")
    ksim_daemon_start "join-$pod" "$pod" env -i "${vars[@]}" "$VPNSUP" join
    lab_wait_for 15 ksim_vpnsup "$pod" health >/dev/null ||
        { _lab_log "vpnsup join in $pod not healthy"; tail -n 20 "$LAB_RUNDIR/logs/join-$pod.log" >&2; return 1; }
}

# ksim_resolve POD NAME: the A record through the pod's forwarder (the first address), or failure.
ksim_resolve() {
    local answer
    answer=$(ksim_exec "$1" dig +short +time=1 +tries=1 @127.0.0.1 "$2" A 2>/dev/null | head -n 1) || return 1
    [[ $answer =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
    echo "$answer"
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
    lab_require iperf3
    _ksim_manifest_env
    KSIM_GATEWAY_NAME=$(ksim_manifest_value join GATEWAY)
    KSIM_GATEWAY_ADDR=$(ksim_manifest_value gateway IP_ADDR)
    KSIM_PORT=$(ksim_manifest_value gateway OVERLAY_PORT)
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
