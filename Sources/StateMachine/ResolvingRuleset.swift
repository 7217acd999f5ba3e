extension Ruleset {
    /// The lockdown plus vpnsup's own name resolution, committed only while it resolves the host
    /// names of `remote` lines in Init: DNS (UDP and TCP port 53) to each nameserver through the
    /// WAN, only for packets carrying `mark` (the resolver's socket sets it, nothing else in the
    /// namespace does before OpenVPN starts), and the replies of those flows. Nothing is forwarded.
    ///
    /// Loopback nameservers (Docker's 127.0.0.11, a local stub) get no rule: the lockdown already
    /// lets loopback through. IPv4 only, like every WAN rule.
    public static func resolving(nameservers: [IPv4Address], wanInterface wan: String, mark: UInt32) -> Ruleset {
        var servers: [IPv4Address] = []
        for server in nameservers where !loopback.contains(server) && !servers.contains(server) {
            servers.append(server)
        }
        var input = [Rule([.inputInterface("lo")], .accept)]
        // Replies only (and the nameserver's ICMP errors about them, which end a wait early): new
        // flows from a nameserver stay dropped.
        input += servers.map { server in
            Rule([.inputInterface(wan), .sourceNetwork(IPv4Network(containing: server, prefixLength: 32)),
                  .connectionState([.established, .related])], .accept)
        }
        input.append(Rule([], counted: true, .drop))

        var output = [Rule([.outputInterface("lo")], .accept)]
        for server in servers {
            for transport in TransportProtocol.allCases {
                output.append(Rule([.outputInterface(wan), .mark(mark), .destinationAddress(server),
                                    .destinationPort(transport, 53)], .accept))
            }
        }
        output.append(Rule([], counted: true, .drop))

        return Ruleset(chains: [
            Chain(name: "input", kind: .filter, hook: .input, priority: 0, policy: .drop, rules: input),
            Chain(name: "forward", kind: .filter, hook: .forward, priority: 0, policy: .drop, rules: [
                Rule([], counted: true, .drop),
            ]),
            Chain(name: "output", kind: .filter, hook: .output, priority: 0, policy: .drop, rules: output),
        ])
    }

    private static let loopback = IPv4Network(containing: IPv4Address(127, 0, 0, 0), prefixLength: 8)
}
