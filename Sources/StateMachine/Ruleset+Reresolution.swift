extension Ruleset {
    /// This ruleset plus vpnsup's own name resolution through the WAN: DNS (UDP and TCP port 53)
    /// to each nameserver, only for packets carrying `mark` (the resolver's socket), in the output
    /// filter and in the WAN's last word (`egress`), before their final drops. Replies come back
    /// under the policies' established/related rule. Committed only while a running tunnel's host
    /// names are resolved again, and closed by committing the policy alone.
    ///
    /// Loopback nameservers get no rule: every policy lets loopback through.
    public func addingNameResolution(nameservers: [IPv4Address], wanInterface wan: String, mark: UInt32) -> Ruleset {
        var servers: [IPv4Address] = []
        for server in nameservers where !Self.isLoopback(server) && !servers.contains(server) {
            servers.append(server)
        }
        let dns = servers.flatMap { server in
            TransportProtocol.allCases.map { transport in
                Rule([.outputInterface(wan), .mark(mark), .destinationAddress(server), .destinationPort(transport, 53)], .accept)
            }
        }
        var result = self
        for index in result.chains.indices where result.chains[index].kind == .filter
            && [.output, .postrouting].contains(result.chains[index].hook) {
            var rules = result.chains[index].rules
            // Before the chain's final drop (the counted drop, or the WAN's drop in egress).
            let end = rules.last.map { $0.action == .drop } == true ? rules.count - 1 : rules.count
            rules.insert(contentsOf: dns, at: end)
            result.chains[index].rules = rules
        }
        return result
    }

    private static func isLoopback(_ address: IPv4Address) -> Bool { address.value >> 24 == 127 }
}
