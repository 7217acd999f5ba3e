/// What the kill switch allows. Every state names one (see `State.policy`).
public enum FirewallPolicy: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// Loopback only: nothing in, out or through, IPv4 or IPv6. Needs no configuration, so it can
    /// be committed before the configuration is even read.
    case lockdown
    /// The WAN carries only OpenVPN's own transport (fwmark) to the pinned endpoints; nothing is forwarded.
    case connecting
    /// As `connecting`, plus LAN -> tunnel forwarding, masqueraded, and replies back.
    case up

    /// Whether OpenVPN may reach its endpoints: the hold is released only once such a policy is committed.
    public var allowsTransport: Bool { self != .lockdown }

    public var description: String { rawValue }
}

/// The interfaces and endpoints a ruleset is built from.
public struct NetworkLayout: Hashable, Sendable {
    public var lanInterface: String
    public var wanInterface: String
    public var tunnelInterface: String
    public var endpoints: [Endpoint]
    /// The fwmark OpenVPN puts on its transport socket (`--mark`); only marked packets may use the WAN.
    public var transportMark: UInt32
    /// When set, every DNS query (port 53, UDP and TCP) from the LAN or the router to another
    /// address is redirected here, through the tunnel.
    public var dns: IPv4Address?
    public var portForwards: [PortForward]
    /// The router's address on the LAN (IP_ADDR): the only address of the router a LAN host may
    /// send to. When nil, LAN packets to the router's other addresses are only refused by the
    /// input chain's policy (established flows excepted).
    public var lanGateway: IPv4Address?
    /// METRICS_LISTEN's port when it listens on `lanGateway`: LAN hosts may open TCP connections to
    /// it there, and nothing else may (a loopback listener needs no rule).
    public var metricsPort: UInt16?

    public init(lanInterface: String, wanInterface: String, tunnelInterface: String,
                endpoints: [Endpoint], transportMark: UInt32, dns: IPv4Address? = nil,
                portForwards: [PortForward] = [], lanGateway: IPv4Address? = nil, metricsPort: UInt16? = nil) {
        self.lanInterface = lanInterface
        self.wanInterface = wanInterface
        self.tunnelInterface = tunnelInterface
        self.endpoints = endpoints
        self.transportMark = transportMark
        self.dns = dns
        self.portForwards = portForwards
        self.lanGateway = lanGateway
        self.metricsPort = metricsPort
    }

    /// One map per transport that has forwards, named `tcp_forwards` / `udp_forwards`.
    public var forwardMaps: [ForwardMap] {
        TransportProtocol.allCases.compactMap { transport in
            let entries = portForwards.filter { $0.transport == transport }
                .map { ForwardMap.Entry(publicPort: $0.publicPort, target: $0.target, targetPort: $0.targetPort) }
            return entries.isEmpty ? nil : ForwardMap(name: "\(transport)_forwards", transport: transport, entries: entries)
        }
    }
}

extension Ruleset {
    /// The lockdown ruleset: independent of any configuration.
    public static let lockdown = Ruleset(chains: [
        Chain(name: "input", kind: .filter, hook: .input, priority: 0, policy: .drop, rules: [
            Rule([.inputInterface("lo")], .accept),
            Rule([], counted: true, .drop),
        ]),
        Chain(name: "forward", kind: .filter, hook: .forward, priority: 0, policy: .drop, rules: [
            Rule([], counted: true, .drop),
        ]),
        Chain(name: "output", kind: .filter, hook: .output, priority: 0, policy: .drop, rules: [
            Rule([.outputInterface("lo")], .accept),
            Rule([], counted: true, .drop),
        ]),
    ])

    /// The ruleset for `policy`. Chain policies are drop everywhere but NAT; a counted drop ends
    /// each filter chain so `vpnsup status` can say what the kill switch blocked. IPv6 gets nothing
    /// but neighbour discovery on the LAN: every rule that lets a packet leave by the WAN or the
    /// tunnel matches IPv4 only.
    public static func build(_ policy: FirewallPolicy, for layout: NetworkLayout) -> Ruleset {
        guard policy != .lockdown else { return .lockdown }
        let lan = layout.lanInterface, wan = layout.wanInterface, tun = layout.tunnelInterface
        let tunnelUp = policy == .up
        let neighbourDiscovery = NeighbourDiscovery.allCases

        var input: [Rule] = [Rule([.inputInterface("lo")], .accept)]
        if let gateway = layout.lanGateway {
            // Before the conntrack shortcut: a LAN host cannot reach, probe or inject into the
            // router's tunnel or WAN addresses (the CVE-2019-14899 class), not even with packets
            // that match one of the router's own flows.
            input.append(Rule([.inputInterface(lan), .notDestinationAddress(gateway)], counted: true, .drop))
        }
        input += [
            Rule([.connectionState([.established, .related])], .accept),
            // Clients may ping their gateway; nothing else on the router is theirs to reach.
            Rule([.inputInterface(lan), .protocolICMP], .accept),
        ]
        input += neighbourDiscovery.map { Rule([.inputInterface(lan), .neighbourDiscovery($0)], .accept) }
        if let gateway = layout.lanGateway, let port = layout.metricsPort {
            // METRICS_LISTEN: scrapes from the LAN, to the gateway address only. The WAN and the
            // tunnel reach the port no more than any other.
            input.append(Rule([.inputInterface(lan), .destinationAddress(gateway), .destinationPort(.tcp, port)], .accept))
        }
        input.append(Rule([], counted: true, .drop))

        var forward: [Rule] = []
        let maps = tunnelUp ? layout.forwardMaps : []
        if tunnelUp {
            // Before any verdict: SYNs into the tunnel carry an MSS that fits its path MTU.
            forward.append(Rule([.outputInterface(tun), .tcpSYN], .clampMSSToPathMTU))
            forward.append(Rule([.family(.ipv4), .inputInterface(lan), .outputInterface(tun)], .accept))
            forward.append(Rule([.inputInterface(tun), .outputInterface(lan),
                                 .connectionState([.established, .related])], .accept))
            if !maps.isEmpty {
                // New flows from the tunnel side only when a port forward rewrote them.
                forward.append(Rule([.inputInterface(tun), .outputInterface(lan), .destinationNATed], .accept))
            }
        }
        forward.append(Rule([], counted: true, .drop))

        var output: [Rule] = [Rule([.outputInterface("lo")], .accept)]
        if tunnelUp, let dns = layout.dns {
            // The router's own queries, redirected by nat_output. Here `oifname` is still the
            // route chosen before the redirect, so the real exit is judged in `egress` instead.
            for transport in TransportProtocol.allCases {
                output.append(Rule([.destinationNATed, .destinationAddress(dns), .destinationPort(transport, 53)], .accept))
            }
        }
        // Only OpenVPN's own packets, and only to a pinned endpoint. Conntrack state is deliberately
        // not accepted on the WAN: a flow opened before vpnsup started must not survive the lockdown.
        for endpoint in layout.endpoints {
            output.append(Rule([.outputInterface(wan), .mark(layout.transportMark),
                                .destinationAddress(endpoint.address),
                                .destinationPort(endpoint.transport, endpoint.port)], .accept))
        }
        output.append(Rule([.outputInterface(lan), .connectionState([.established, .related])], .accept))
        output.append(Rule([.outputInterface(lan), .protocolICMP], .accept))
        output += neighbourDiscovery.map { Rule([.outputInterface(lan), .neighbourDiscovery($0)], .accept) }
        if tunnelUp {
            output.append(Rule([.family(.ipv4), .outputInterface(tun)], .accept))
        }
        output.append(Rule([], counted: true, .drop))

        // The last word on the WAN, where `oifname` is the real exit (after any NAT re-route):
        // OpenVPN's marked transport to a pinned endpoint, and nothing else.
        var egress: [Rule] = layout.endpoints.map { endpoint in
            Rule([.outputInterface(wan), .mark(layout.transportMark), .destinationAddress(endpoint.address),
                  .destinationPort(endpoint.transport, endpoint.port)], .accept)
        }
        egress.append(Rule([.outputInterface(wan)], counted: true, .drop))

        var chains: [Chain] = []
        if tunnelUp {
            var prerouting: [Rule] = []
            if let dns = layout.dns {
                for transport in TransportProtocol.allCases {
                    prerouting.append(Rule([.inputInterface(lan), .notDestinationAddress(dns), .destinationPort(transport, 53)],
                                           .destinationNAT(dns)))
                }
            }
            for map in maps {
                prerouting.append(Rule([.inputInterface(tun)], .destinationNATMap(name: map.name, transport: map.transport)))
            }
            if !prerouting.isEmpty {
                chains.append(Chain(name: "prerouting", kind: .nat, hook: .prerouting, priority: -100, policy: .accept,
                                    rules: prerouting))
            }
        }
        chains += [
            Chain(name: "input", kind: .filter, hook: .input, priority: 0, policy: .drop, rules: input),
            Chain(name: "forward", kind: .filter, hook: .forward, priority: 0, policy: .drop, rules: forward),
            Chain(name: "output", kind: .filter, hook: .output, priority: 0, policy: .drop, rules: output),
            Chain(name: "egress", kind: .filter, hook: .postrouting, priority: 0, policy: .accept, rules: egress),
        ]
        if tunnelUp {
            if let dns = layout.dns {
                // The router's own queries too; before the tunnel is up the output filter drops them.
                // OpenVPN's own transport is exempt (an endpoint may well listen on port 53), and so
                // is loopback: a local resolver (Docker's 127.0.0.11) cannot be redirected out of the
                // tunnel, and its upstream queries are redirected in turn.
                var natOutput = [Rule([.mark(layout.transportMark)], .accept), Rule([.outputInterface("lo")], .accept)]
                natOutput += TransportProtocol.allCases.map { transport in
                    Rule([.notDestinationAddress(dns), .destinationPort(transport, 53)], .destinationNAT(dns))
                }
                chains.append(Chain(name: "nat_output", kind: .nat, hook: .output, priority: -100, policy: .accept,
                                    rules: natOutput))
            }
            chains.append(Chain(name: "postrouting", kind: .nat, hook: .postrouting, priority: 100, policy: .accept,
                                rules: [Rule([.outputInterface(tun)], .masquerade)]))
        }
        return Ruleset(chains: chains, maps: maps)
    }
}
