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

    public init(lanInterface: String, wanInterface: String, tunnelInterface: String,
                endpoints: [Endpoint], transportMark: UInt32) {
        self.lanInterface = lanInterface
        self.wanInterface = wanInterface
        self.tunnelInterface = tunnelInterface
        self.endpoints = endpoints
        self.transportMark = transportMark
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
    /// each filter chain so `vpnsup status` can say what the kill switch blocked.
    public static func build(_ policy: FirewallPolicy, for layout: NetworkLayout) -> Ruleset {
        guard policy != .lockdown else { return .lockdown }
        let lan = layout.lanInterface, wan = layout.wanInterface, tun = layout.tunnelInterface
        let tunnelUp = policy == .up

        var input: [Rule] = [
            Rule([.inputInterface("lo")], .accept),
            Rule([.connectionState([.established, .related])], .accept),
            // Clients may ping their gateway; nothing else on the router is theirs to reach.
            Rule([.inputInterface(lan), .protocolICMP], .accept),
        ]
        input.append(Rule([], counted: true, .drop))

        var forward: [Rule] = []
        if tunnelUp {
            forward.append(Rule([.inputInterface(lan), .outputInterface(tun)], .accept))
            forward.append(Rule([.inputInterface(tun), .outputInterface(lan),
                                 .connectionState([.established, .related])], .accept))
        }
        forward.append(Rule([], counted: true, .drop))

        var output: [Rule] = [Rule([.outputInterface("lo")], .accept)]
        // Only OpenVPN's own packets, and only to a pinned endpoint. Conntrack state is deliberately
        // not accepted on the WAN: a flow opened before vpnsup started must not survive the lockdown.
        for endpoint in layout.endpoints {
            output.append(Rule([.outputInterface(wan), .mark(layout.transportMark),
                                .destinationAddress(endpoint.address),
                                .destinationPort(endpoint.transport, endpoint.port)], .accept))
        }
        output.append(Rule([.outputInterface(lan), .connectionState([.established, .related])], .accept))
        output.append(Rule([.outputInterface(lan), .protocolICMP], .accept))
        if tunnelUp {
            output.append(Rule([.outputInterface(tun)], .accept))
        }
        output.append(Rule([], counted: true, .drop))

        var chains = [
            Chain(name: "input", kind: .filter, hook: .input, priority: 0, policy: .drop, rules: input),
            Chain(name: "forward", kind: .filter, hook: .forward, priority: 0, policy: .drop, rules: forward),
            Chain(name: "output", kind: .filter, hook: .output, priority: 0, policy: .drop, rules: output),
        ]
        if tunnelUp {
            chains.append(Chain(name: "postrouting", kind: .nat, hook: .postrouting, priority: 100, policy: .accept,
                                rules: [Rule([.outputInterface(tun)], .masquerade)]))
        }
        return Ruleset(chains: chains)
    }
}
