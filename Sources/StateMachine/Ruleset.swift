/// A description of the `inet vpnsup` table, independent of how it reaches the kernel.
/// `Actions` turns it into one libnftnl transaction; `nftText` prints it in nft syntax.
public struct Ruleset: Hashable, Sendable {
    public static let tableName = "vpnsup"

    public var chains: [Chain]
    /// Port-forward maps, looked up once per packet whatever their size.
    public var maps: [ForwardMap]

    public init(chains: [Chain], maps: [ForwardMap] = []) {
        self.chains = chains
        self.maps = maps
    }

    public func chain(_ hook: Chain.Hook) -> Chain? { chains.first { $0.hook == hook } }
}

public struct Chain: Hashable, Sendable {
    public enum Kind: String, Hashable, Sendable { case filter, nat }
    public enum Hook: String, Hashable, Sendable, CaseIterable { case prerouting, input, forward, output, postrouting }
    public enum Policy: String, Hashable, Sendable { case accept, drop }

    public var name: String
    public var kind: Kind
    public var hook: Hook
    public var priority: Int32
    public var policy: Policy
    public var rules: [Rule]

    public init(name: String, kind: Kind, hook: Hook, priority: Int32, policy: Policy, rules: [Rule]) {
        self.name = name
        self.kind = kind
        self.hook = hook
        self.priority = priority
        self.policy = policy
        self.rules = rules
    }
}

/// A named map from a public port to a LAN target (`type inet_service : ipv4_addr . inet_service`),
/// used by a `dnat ip to tcp dport map @name` rule.
public struct ForwardMap: Hashable, Sendable {
    public struct Entry: Hashable, Sendable {
        public var publicPort: UInt16
        public var target: IPv4Address
        public var targetPort: UInt16

        public init(publicPort: UInt16, target: IPv4Address, targetPort: UInt16) {
            self.publicPort = publicPort
            self.target = target
            self.targetPort = targetPort
        }
    }

    public var name: String
    public var transport: TransportProtocol
    /// Sorted by public port; public ports are unique.
    public var entries: [Entry]

    public init(name: String, transport: TransportProtocol, entries: [Entry]) {
        self.name = name
        self.transport = transport
        self.entries = entries.sorted { $0.publicPort < $1.publicPort }
    }
}

/// ICMPv6 neighbour-discovery messages, which a LAN needs even when IPv6 goes nowhere.
public enum NeighbourDiscovery: String, Hashable, Sendable, CaseIterable {
    case routerSolicit = "nd-router-solicit"
    case routerAdvert = "nd-router-advert"
    case neighbourSolicit = "nd-neighbor-solicit"
    case neighbourAdvert = "nd-neighbor-advert"

    /// The ICMPv6 type number.
    public var type: UInt8 {
        switch self {
        case .routerSolicit: 133
        case .routerAdvert: 134
        case .neighbourSolicit: 135
        case .neighbourAdvert: 136
        }
    }
}

/// Connection-tracking states, as nft's `ct state` names them.
public struct ConnectionStates: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    // The kernel's NF_CT_STATE_BIT values.
    public static let invalid = ConnectionStates(rawValue: 1 << 0)
    public static let established = ConnectionStates(rawValue: 1 << 1)
    public static let related = ConnectionStates(rawValue: 1 << 2)
    public static let new = ConnectionStates(rawValue: 1 << 3)
    public static let untracked = ConnectionStates(rawValue: 1 << 6)

    /// In the order nft prints them.
    public static let named: [(ConnectionStates, String)] = [
        (.invalid, "invalid"), (.established, "established"), (.related, "related"),
        (.new, "new"), (.untracked, "untracked"),
    ]
}

/// One condition of a rule. Each carries the dependency nft would add itself (an `ip daddr`
/// match only applies to IPv4 packets), so the kernel and nft's listing agree.
public enum Match: Hashable, Sendable {
    /// `iifname "eth1"`
    case inputInterface(String)
    /// `oifname "tun0"`
    case outputInterface(String)
    /// `ct state established,related`
    case connectionState(ConnectionStates)
    /// `meta nfproto ipv4|ipv6`
    case family(Family)
    /// `ip saddr 172.22.0.0/24`
    case sourceNetwork(IPv4Network)
    /// `ip daddr 192.0.2.1`
    case destinationAddress(IPv4Address)
    /// `ip daddr != 192.0.2.1`
    case notDestinationAddress(IPv4Address)
    /// `ip daddr 10.244.0.0/16` (the overlay's rules: a whole cluster network)
    case destinationNetwork(IPv4Network)
    /// `meta l4proto icmp`
    case protocolICMP
    /// `udp dport 1194` / `tcp dport 1194`
    case destinationPort(TransportProtocol, UInt16)
    /// `meta mark 0x...`
    case mark(UInt32)
    /// `icmpv6 type nd-neighbor-solicit` (IPv6 only)
    case neighbourDiscovery(NeighbourDiscovery)
    /// `ct status dnat`: the flow was destination-NATed (a port forward).
    case destinationNATed
    /// `tcp flags syn`
    case tcpSYN

    public enum Family: String, Hashable, Sendable { case ipv4, ipv6 }
}

public enum RuleAction: Hashable, Sendable {
    case accept
    case drop
    case masquerade
    /// `dnat ip to 10.0.0.53`
    case destinationNAT(IPv4Address)
    /// `dnat ip to tcp dport map @tcp_forwards`: the packet's destination port is the key.
    case destinationNATMap(name: String, transport: TransportProtocol)
    /// `tcp option maxseg size set rt mtu`: a statement, not a verdict (the chain goes on).
    case clampMSSToPathMTU
}

public struct Rule: Hashable, Sendable {
    public var matches: [Match]
    /// Counts what the rule matched (packets and bytes), readable by `vpnsup status`.
    public var counted: Bool
    public var action: RuleAction

    public init(_ matches: [Match], counted: Bool = false, _ action: RuleAction) {
        self.matches = matches
        self.counted = counted
        self.action = action
    }
}
