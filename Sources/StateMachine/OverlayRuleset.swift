/// What a gateway pod's WAN carries besides OpenVPN's transport: the overlay's encapsulated UDP,
/// to and from the cluster's pod networks at the overlay port only. In a pod, eth0 is both the WAN
/// and the overlay's underlay (docs/kubernetes.md).
public struct OverlayUnderlay: Hashable, Sendable {
    /// The underlay interface: WAN_IF.
    public var interface: String
    /// Where clients can be: POD_CIDRS.
    public var peers: [IPv4Network]
    public var port: UInt16

    public init(interface: String, peers: [IPv4Network], port: UInt16) {
        self.interface = interface
        self.peers = peers
        self.port = port
    }
}

extension Ruleset {
    /// The router's ruleset for `policy` (`Ruleset.build`), plus the overlay's encapsulated UDP on
    /// the underlay: in from a pod network to the overlay port (input), out to a pod network at
    /// the overlay port (output, and egress, where the real exit is judged), each placed before
    /// the chain's closing drop. The inner traffic needs nothing new: it arrives on LAN_IF (the
    /// vxlan link) and is forwarded only into the tunnel, like any LAN's.
    ///
    /// The lockdown stays loopback only: before the configuration is read, and when vpnsup has
    /// given up, the overlay is closed too, and clients, which cannot reach the gateway, keep
    /// their traffic inside the cluster (ClientKillSwitch).
    public static func build(_ policy: FirewallPolicy, for layout: NetworkLayout, overlay: OverlayUnderlay) -> Ruleset {
        var ruleset = build(policy, for: layout)
        guard policy != .lockdown else { return ruleset }
        let udp = TransportProtocol.udp
        let incoming = overlay.peers.map { peer in
            Rule([.inputInterface(overlay.interface), .sourceNetwork(peer), .destinationPort(udp, overlay.port)], .accept)
        }
        let outgoing = overlay.peers.map { peer in
            Rule([.outputInterface(overlay.interface), .destinationNetwork(peer), .destinationPort(udp, overlay.port)], .accept)
        }
        for index in ruleset.chains.indices {
            let chain = ruleset.chains[index]
            guard chain.kind == .filter else { continue }
            switch chain.hook {
            case .input: ruleset.chains[index].rules.insertBeforeClosingDrop(incoming)
            case .output, .postrouting: ruleset.chains[index].rules.insertBeforeClosingDrop(outgoing)
            default: break
            }
        }
        return ruleset
    }
}

extension [Rule] {
    /// Inserts `rules` before the last rule when that one drops (the chain's counted catch-all,
    /// or egress's `oifname WAN drop`), else appends them.
    mutating func insertBeforeClosingDrop(_ rules: [Rule]) {
        if let last = self.last, last.action == .drop {
            insert(contentsOf: rules, at: endIndex - 1)
        } else {
            append(contentsOf: rules)
        }
    }
}
