extension Ruleset {
    /// The ruleset in nft syntax, loadable with `nft -f` (for dry runs, docs and debugging).
    public var nftText: String {
        var lines = ["table inet \(Ruleset.tableName) {"]
        for map in maps {
            lines.append("\tmap \(map.name) {")
            lines.append("\t\ttype inet_service : ipv4_addr . inet_service")
            if !map.entries.isEmpty {
                let elements = map.entries.map { "\($0.publicPort) : \($0.target) . \($0.targetPort)" }
                lines.append("\t\telements = { " + elements.joined(separator: ",\n\t\t\t     ") + " }")
            }
            lines.append("\t}")
            lines.append("")
        }
        for (index, chain) in chains.enumerated() {
            if index > 0 { lines.append("") }
            lines.append("\tchain \(chain.name) {")
            lines.append("\t\ttype \(chain.kind.rawValue) hook \(chain.hook.rawValue) priority \(chain.priority); policy \(chain.policy.rawValue);")
            for rule in chain.rules {
                lines.append("\t\t" + rule.nftText)
            }
            lines.append("\t}")
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }
}

extension Rule {
    public var nftText: String {
        var words = matches.map(\.nftText)
        if counted { words.append("counter") }
        words.append(action.nftText)
        return words.joined(separator: " ")
    }
}

extension RuleAction {
    var nftText: String {
        switch self {
        case .accept: "accept"
        case .drop: "drop"
        case .masquerade: "masquerade"
        case .destinationNAT(let address): "dnat ip to \(address)"
        case .destinationNATMap(let name, let transport): "dnat ip to \(transport) dport map @\(name)"
        case .clampMSSToPathMTU: "tcp option maxseg size set rt mtu"
        }
    }
}

extension Match {
    public var nftText: String {
        switch self {
        case .inputInterface(let name): "iifname \(quoted(name))"
        case .outputInterface(let name): "oifname \(quoted(name))"
        case .connectionState(let states):
            "ct state " + ConnectionStates.named.filter { states.contains($0.0) }.map(\.1).joined(separator: ",")
        case .family(let family): "meta nfproto \(family.rawValue)"
        case .sourceNetwork(let network):
            network.prefixLength == 32 ? "ip saddr \(network.address)" : "ip saddr \(network)"
        case .destinationAddress(let address): "ip daddr \(address)"
        case .notDestinationAddress(let address): "ip daddr != \(address)"
        case .destinationNetwork(let network):
            network.prefixLength == 32 ? "ip daddr \(network.address)" : "ip daddr \(network)"
        case .neighbourDiscovery(let type): "icmpv6 type \(type.rawValue)"
        case .destinationNATed: "ct status dnat"
        case .tcpSYN: "tcp flags syn"
        case .protocolICMP: "meta l4proto icmp"
        case .destinationPort(let transport, let port): "\(transport) dport \(port)"
        case .mark(let mark): "meta mark " + hex(mark)
        }
    }
}

private func quoted(_ name: String) -> String { "\"\(name)\"" }

private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}
