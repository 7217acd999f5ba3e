# shellcheck shell=bash
# The original vpn_nat_router's firewall, modelled for the benchmarks (its entrypoint script is not
# at hand; /work/shared/notes/peers.md and its README describe it): policies DROP, lo and the LAN
# open, OpenVPN's transport to the first remote only, LAN -> tun0 forwarded and masqueraded, LAN ->
# WAN dropped, DNS DNAT-ed to $DNS, one DNAT (+ forward accept) per port forward.
#
#   original_iptables_commands   one iptables command per line, in the order the entrypoint runs them
#   original_nft_ruleset         the same rules as one nft file (tables ip filter / ip nat)
# Inputs (environment): LAN_IF WAN_IF TUN_IF SERVER_IP SERVER_PORT DNS FORWARDS (space separated
# IP:PORT, each forwarded for TCP and UDP like the original's PORT_FWD).

original_iptables_commands() {
    local fwd ip port proto
    cat <<CMDS
iptables -P INPUT DROP
iptables -P FORWARD DROP
iptables -P OUTPUT DROP
iptables -A INPUT -i lo -j ACCEPT
iptables -A OUTPUT -o lo -j ACCEPT
iptables -A INPUT -i $LAN_IF -j ACCEPT
iptables -A OUTPUT -o $LAN_IF -j ACCEPT
iptables -A INPUT -i $TUN_IF -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
iptables -A OUTPUT -o $TUN_IF -j ACCEPT
iptables -A INPUT -i $WAN_IF -p udp -s $SERVER_IP --sport $SERVER_PORT -j ACCEPT
iptables -A OUTPUT -o $WAN_IF -p udp -d $SERVER_IP --dport $SERVER_PORT -j ACCEPT
iptables -A FORWARD -i $LAN_IF -o $TUN_IF -j ACCEPT
iptables -A FORWARD -i $TUN_IF -o $LAN_IF -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
iptables -A FORWARD -i $LAN_IF -o $WAN_IF -j DROP
iptables -t nat -A POSTROUTING -o $TUN_IF -j MASQUERADE
iptables -t nat -A PREROUTING -i $LAN_IF -p udp --dport 53 -j DNAT --to-destination $DNS
iptables -t nat -A PREROUTING -i $LAN_IF -p tcp --dport 53 -j DNAT --to-destination $DNS
iptables -t nat -A OUTPUT -p udp --dport 53 -j DNAT --to-destination $DNS
iptables -t nat -A OUTPUT -p tcp --dport 53 -j DNAT --to-destination $DNS
CMDS
    for fwd in ${FORWARDS:-}; do
        ip=${fwd%:*} port=${fwd##*:}
        for proto in tcp udp; do
            echo "iptables -t nat -A PREROUTING -i $TUN_IF -p $proto --dport $port -j DNAT --to-destination $ip:$port"
            echo "iptables -A FORWARD -i $TUN_IF -o $LAN_IF -p $proto -d $ip --dport $port -j ACCEPT"
        done
    done
}

original_nft_ruleset() {
    local fwd ip port proto
    cat <<NFT
table ip filter {
	chain INPUT {
		type filter hook input priority filter; policy drop;
		iifname "lo" accept
		iifname "$LAN_IF" accept
		iifname "$TUN_IF" ct state established,related accept
		iifname "$WAN_IF" ip saddr $SERVER_IP udp sport $SERVER_PORT accept
	}
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
		iifname "$LAN_IF" oifname "$TUN_IF" accept
		iifname "$TUN_IF" oifname "$LAN_IF" ct state established,related accept
		iifname "$LAN_IF" oifname "$WAN_IF" drop
NFT
    for fwd in ${FORWARDS:-}; do
        ip=${fwd%:*} port=${fwd##*:}
        for proto in tcp udp; do
            printf '\t\tiifname "%s" oifname "%s" ip daddr %s %s dport %s accept\n' "$TUN_IF" "$LAN_IF" "$ip" "$proto" "$port"
        done
    done
    cat <<NFT
	}
	chain OUTPUT {
		type filter hook output priority filter; policy drop;
		oifname "lo" accept
		oifname "$LAN_IF" accept
		oifname "$TUN_IF" accept
		oifname "$WAN_IF" ip daddr $SERVER_IP udp dport $SERVER_PORT accept
	}
}
table ip nat {
	chain PREROUTING {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "$LAN_IF" udp dport 53 dnat to $DNS
		iifname "$LAN_IF" tcp dport 53 dnat to $DNS
NFT
    for fwd in ${FORWARDS:-}; do
        ip=${fwd%:*} port=${fwd##*:}
        for proto in tcp udp; do
            printf '\t\tiifname "%s" %s dport %s dnat to %s:%s\n' "$TUN_IF" "$proto" "$port" "$ip" "$port"
        done
    done
    cat <<NFT
	}
	chain OUTPUT {
		type nat hook output priority -100; policy accept;
		udp dport 53 dnat to $DNS
		tcp dport 53 dnat to $DNS
	}
	chain POSTROUTING {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "$TUN_IF" masquerade
	}
}
NFT
}
