/// The kill switch of a client pod (`vpnsup join`, docs/kubernetes.md), committed as table
/// `inet vpnsup` in the pod's network namespace before the overlay exists and kept for the pod's
/// whole life: it does not depend on the gateway's state at all.
///
/// Out of the underlay (eth0) go only packets to the cluster's own networks (pods, services,
/// nodes). Everything else may leave only by the overlay link, which encapsulates it towards the
/// gateway's pod IP, itself a cluster address judged by the same rule. So while the gateway is
/// unreachable, moving, or the overlay points at a wrong address, nothing but cluster-internal
/// traffic leaves the pod, whatever the routes say and whether or not the sidecar is running.
///
/// DNS: every query (port 53, UDP and TCP) to anywhere but the pod's forwarder is redirected to
/// it; the forwarder's own sockets carry `mark` and are the only ones that may ask the cluster
/// resolver directly (names in the cluster domain) — everything else it asks through the overlay,
/// where the gateway sends it through the tunnel. IPv6 leaves by no interface.
public struct ClientKillSwitch: Hashable, Sendable {
    public struct DNSForwarding: Hashable, Sendable {
        /// 0x76706e02: the forwarder's sockets (SO_MARK); OpenVPN's transport mark is ...01.
        public static let defaultMark: UInt32 = 0x7670_6e02

        /// The cluster resolver (kube-dns's Service address).
        public var clusterResolver: IPv4Address
        /// Where the pod's forwarder listens.
        public var forwarder: IPv4Address
        public var mark: UInt32

        public init(clusterResolver: IPv4Address, forwarder: IPv4Address = IPv4Address(127, 0, 0, 1),
                    mark: UInt32 = DNSForwarding.defaultMark) {
            self.clusterResolver = clusterResolver
            self.forwarder = forwarder
            self.mark = mark
        }
    }

    public var underlayInterface: String
    public var overlayInterface: String
    public var clusterNetworks: [IPv4Network]
    public var dns: DNSForwarding

    public init(underlayInterface: String, overlayInterface: String, clusterNetworks: [IPv4Network], dns: DNSForwarding) {
        self.underlayInterface = underlayInterface
        self.overlayInterface = overlayInterface
        self.clusterNetworks = clusterNetworks
        self.dns = dns
    }

    public var ruleset: Ruleset {
        let underlay = underlayInterface
        let transports = TransportProtocol.allCases

        var natOutput = [Rule([.mark(dns.mark)], .accept)]
        natOutput += transports.map { transport in
            Rule([.notDestinationAddress(dns.forwarder), .destinationPort(transport, 53)], .destinationNAT(dns.forwarder))
        }

        var output = [Rule([.outputInterface("lo")], .accept)]
        // Queries the redirect rewrote: here `oifname` is still the route chosen before it.
        for transport in transports {
            output.append(Rule([.destinationNATed, .destinationAddress(dns.forwarder), .destinationPort(transport, 53)], .accept))
        }
        for transport in transports {
            output.append(Rule([.outputInterface(underlay), .mark(dns.mark), .destinationAddress(dns.clusterResolver),
                                .destinationPort(transport, 53)], .accept))
        }
        // Only the forwarder asks the cluster resolver, which would send other names upstream
        // outside the tunnel; a query that escaped the redirect (a repair pending) stops here.
        for transport in transports {
            output.append(Rule([.destinationAddress(dns.clusterResolver), .destinationPort(transport, 53)], counted: true, .drop))
        }
        output += clusterNetworks.map { Rule([.outputInterface(underlay), .destinationNetwork($0)], .accept) }
        output.append(Rule([.family(.ipv4), .outputInterface(overlayInterface)], .accept))
        output.append(Rule([], counted: true, .drop))

        return Ruleset(chains: [
            Chain(name: "nat_output", kind: .nat, hook: .output, priority: -100, policy: .accept, rules: natOutput),
            // A pod routes nothing for others; a nested namespace's traffic must not slip past.
            Chain(name: "forward", kind: .filter, hook: .forward, priority: 0, policy: .drop, rules: [Rule([], counted: true, .drop)]),
            Chain(name: "output", kind: .filter, hook: .output, priority: 0, policy: .drop, rules: output),
        ])
    }
}
