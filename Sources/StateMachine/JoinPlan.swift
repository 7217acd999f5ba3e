/// What `vpnsup join` read before anything is decided: the environment's configuration, and what
/// only the pod can tell (its address, its resolver).
public struct JoinSetup: Hashable, Sendable {
    public var configuration: JoinConfiguration
    /// The cluster resolver: CLUSTER_DNS, or else the first nameserver of the pod's resolv.conf.
    public var clusterDNS: IPv4Address
    /// Whether `clusterDNS` came from resolv.conf (for the message when it cannot be used).
    public var clusterDNSFromResolvConf: Bool
    /// The pod's IP: UNDERLAY_IF's IPv4 address. Its overlay address is derived from it.
    public var podAddress: IPv4Address

    public init(configuration: JoinConfiguration, clusterDNS: IPv4Address, clusterDNSFromResolvConf: Bool = false,
                podAddress: IPv4Address) {
        self.configuration = configuration
        self.clusterDNS = clusterDNS
        self.clusterDNSFromResolvConf = clusterDNSFromResolvConf
        self.podAddress = podAddress
    }
}

/// A client pod's overlay as the join machine decided it from a `JoinSetup`: the kill switch, the
/// link, the routes and the split DNS. The effects read everything they need from it.
public struct JoinPlan: Hashable, Sendable {
    public var setup: JoinSetup
    /// The pod's overlay address with the overlay's prefix length (`OverlayAddressing.clientAddress`).
    public var overlayAddress: IPv4Interface

    /// Judges `setup`: the pod's address must have a client address on the overlay, and the
    /// cluster resolver must be reached directly.
    public init(_ setup: JoinSetup) throws(ConfigurationError) {
        let configuration = setup.configuration
        let pods = configuration.settings.podNetworks
        let podsText = pods.map(\.description).joined(separator: ",")
        guard let address = configuration.addressing.clientAddress(forPod: setup.podAddress) else {
            if pods.contains(where: { $0.contains(setup.podAddress) }) {
                throw ConfigurationError("POD_CIDRS", podsText, "ends at this pod's address \(setup.podAddress), whose overlay address would be the overlay's broadcast address")
            }
            throw ConfigurationError("POD_CIDRS", podsText, "does not hold this pod's address \(setup.podAddress) (\(configuration.underlayInterface))")
        }
        if setup.clusterDNSFromResolvConf, !configuration.clusterNetworks.contains(where: { $0.contains(setup.clusterDNS) }) {
            throw ConfigurationError("CLUSTER_DNS", "", "is unset and the pod's resolv.conf names \(setup.clusterDNS), outside POD_CIDRS and CLUSTER_CIDRS: set CLUSTER_DNS to the cluster resolver")
        }
        self.setup = setup
        overlayAddress = address
    }

    public var configuration: JoinConfiguration { setup.configuration }

    /// The gateway's overlay address: the default route's next hop and the forwarder's upstream.
    public var gatewayOverlayAddress: IPv4Address { configuration.addressing.gateway.address }

    public var killSwitch: ClientKillSwitch { configuration.killSwitch(clusterDNS: setup.clusterDNS) }

    /// The client end of the overlay towards the gateway's pod at `gateway`: no learning (it sends
    /// everything to that one destination), its source the pod's own address, its MAC derived
    /// from its overlay address.
    public func link(towards gateway: IPv4Address) -> OverlayLink {
        OverlayLink(name: configuration.overlayInterface, vni: configuration.settings.vni, port: configuration.settings.port,
                    underlay: configuration.underlayInterface, local: setup.podAddress, remote: gateway, learning: false,
                    macAddress: OverlayAddressing.macAddress(for: overlayAddress.address), address: overlayAddress)
    }

    /// The routes the pod needs: the cluster's networks directly by the underlay's next hop,
    /// everything else into the overlay, towards the gateway.
    public var routes: JoinRoutes {
        JoinRoutes(underlay: configuration.underlayInterface, clusterNetworks: configuration.clusterNetworks,
                   overlay: configuration.overlayInterface, gateway: gatewayOverlayAddress)
    }

    public var splitDNS: SplitDNS {
        SplitDNS(clusterDomain: configuration.clusterDomain, clusterResolver: setup.clusterDNS,
                 gateway: gatewayOverlayAddress, clusterNetworks: configuration.clusterNetworks)
    }
}

/// An overlay's vxlan link as one end wants it (the effects create it with `VxlanLink`).
public struct OverlayLink: Hashable, Sendable {
    public var name: String
    public var vni: UInt32
    public var port: UInt16
    public var underlay: String
    /// The encapsulated packets' source (the pod's IP); nil: chosen by routing.
    public var local: IPv4Address?
    /// The default destination: the gateway's pod IP (clients); nil on the gateway, which learns.
    public var remote: IPv4Address?
    public var learning: Bool
    /// Seconds a learned destination is kept unused; nil: the kernel's 300.
    public var ageing: UInt32?
    public var macAddress: [UInt8]
    /// The overlay address the link carries (the client's; the gateway's is IP_ADDR, set apart).
    public var address: IPv4Interface?

    public init(name: String, vni: UInt32, port: UInt16, underlay: String, local: IPv4Address?, remote: IPv4Address?,
                learning: Bool, ageing: UInt32? = nil, macAddress: [UInt8], address: IPv4Interface?) {
        self.name = name
        self.vni = vni
        self.port = port
        self.underlay = underlay
        self.local = local
        self.remote = remote
        self.learning = learning
        self.ageing = ageing
        self.macAddress = macAddress
        self.address = address
    }
}

extension GatewayOverlay {
    /// How long the gateway keeps a client it learned: as long as conntrack keeps an idle TCP
    /// flow (nf_conntrack_tcp_timeout_established, 5 days). It has no default destination, so
    /// it cannot find a quiet client again by itself: a late answer to a flow the client opened
    /// must still find the entry. (The kernel computes with `seconds × HZ` in 32 bits: this stays
    /// far below the wrap.)
    public static let clientAgeing: UInt32 = 5 * 24 * 3600

    /// The gateway's end: learning (its clients are found from the frames they send), keeping
    /// them `clientAgeing`, the MAC derived from IP_ADDR; its source chosen by routing (the pod's IP).
    public var link: OverlayLink {
        OverlayLink(name: interface, vni: settings.vni, port: settings.port, underlay: underlay, local: nil, remote: nil,
                    learning: true, ageing: GatewayOverlay.clientAgeing,
                    macAddress: OverlayAddressing.macAddress(for: addressing.gateway.address), address: nil)
    }
}

/// A client pod's routes: the cluster's networks by the underlay's own next hop (read from the
/// pod's default route when they are installed), and the default route into the overlay.
public struct JoinRoutes: Hashable, Sendable {
    public var underlay: String
    public var clusterNetworks: [IPv4Network]
    public var overlay: String
    public var gateway: IPv4Address

    public init(underlay: String, clusterNetworks: [IPv4Network], overlay: String, gateway: IPv4Address) {
        self.underlay = underlay
        self.clusterNetworks = clusterNetworks
        self.overlay = overlay
        self.gateway = gateway
    }
}

/// The pod's split DNS (docs/kubernetes.md): names of the cluster domain, and reverse names of
/// the cluster's own addresses, go to the cluster resolver; every other name to the gateway's
/// overlay address, whose DNS enforcement sends it through the tunnel.
public struct SplitDNS: Hashable, Sendable {
    public enum Upstream: String, Hashable, Sendable {
        case cluster, gateway
    }

    public var clusterDomain: String
    public var clusterResolver: IPv4Address
    public var gateway: IPv4Address
    public var clusterNetworks: [IPv4Network]

    public init(clusterDomain: String, clusterResolver: IPv4Address, gateway: IPv4Address, clusterNetworks: [IPv4Network]) {
        self.clusterDomain = SplitDNS.lowercased(clusterDomain.hasSuffix(".") ? String(clusterDomain.dropLast()) : clusterDomain)
        self.clusterResolver = clusterResolver
        self.gateway = gateway
        self.clusterNetworks = clusterNetworks
    }

    /// Where a question about `name` goes (any case, with or without the final dot).
    public func upstream(for name: String) -> Upstream {
        var name = SplitDNS.lowercased(name)
        if name.hasSuffix(".") { name.removeLast() }
        if name == clusterDomain || name.hasSuffix("." + clusterDomain) { return .cluster }
        if let address = SplitDNS.reverseAddress(name), clusterNetworks.contains(where: { $0.contains(address) }) {
            return .cluster
        }
        return .gateway
    }

    public func address(of upstream: Upstream) -> IPv4Address {
        upstream == .cluster ? clusterResolver : gateway
    }

    /// The upstream address for a query as it arrived (raw bytes); nil for anything that is not a
    /// standard query with a question this forwarder can read (it is dropped).
    public func upstreamAddress(forQuery query: [UInt8]) -> IPv4Address? {
        SplitDNS.questionName(in: query).map { address(of: upstream(for: $0)) }
    }

    /// The name of a query's first question: the header says a query (QR 0) of opcode QUERY with
    /// at least one question, and the name is plain labels (a question has no reason to point
    /// elsewhere) without a dot inside one, 255 bytes at most. Lower-cased, dotted, without the final dot ("" for the root).
    public static func questionName(in query: [UInt8]) -> String? {
        guard query.count >= 12, query[2] & 0x80 == 0, (query[2] >> 3) & 0xf == 0,
              UInt16(query[4]) << 8 | UInt16(query[5]) >= 1 else { return nil }
        var labels: [String] = []
        var position = 12
        var length = 0
        while position < query.count {
            let size = Int(query[position])
            if size == 0 { return lowercased(labels.joined(separator: ".")) }
            guard size <= 63, position + 1 + size <= query.count else { return nil }
            // A dot inside a label would make the dotted name lie about its labels: a name
            // that reads as in the cluster domain without being in it would go to the cluster
            // resolver, which forwards what it does not know outside the tunnel.
            guard !query[(position + 1)...(position + size)].contains(0x2e) else { return nil }
            length += size + 1
            guard length < 255 else { return nil }
            labels.append(String(decoding: query[(position + 1)...(position + size)], as: UTF8.self))
            position += 1 + size
        }
        return nil
    }

    /// The address a full reverse name (`d.c.b.a.in-addr.arpa`) stands for; nil otherwise.
    static func reverseAddress(_ name: String) -> IPv4Address? {
        let suffix = ".in-addr.arpa"
        guard name.hasSuffix(suffix) else { return nil }
        let octets = name.dropLast(suffix.count).split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4 else { return nil }
        var value: UInt32 = 0
        for octet in octets.reversed() {
            guard (1...3).contains(octet.count), octet.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let number = UInt8(octet) else { return nil }
            value = value << 8 | UInt32(number)
        }
        return IPv4Address(value)
    }

    /// DNS compares names case-insensitively in ASCII only.
    static func lowercased(_ text: String) -> String {
        String(decoding: text.utf8.map { (0x41...0x5a).contains($0) ? $0 + 0x20 : $0 }, as: UTF8.self)
    }
}
