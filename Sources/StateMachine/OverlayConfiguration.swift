/// The VXLAN overlay between client pods and the gateway pod (docs/kubernetes.md): the settings
/// both ends share. Variables: OVERLAY_VNI (default 30320), OVERLAY_PORT (default 4789),
/// POD_CIDRS (required: the cluster's pod networks, the only addresses the overlay is carried to).
public struct OverlaySettings: Hashable, Sendable {
    /// 0x7670, vpnsup's number (its routing table is 0x7670 too).
    public static let defaultVNI: UInt32 = 30320
    /// IANA's VXLAN port.
    public static let defaultPort: UInt16 = 4789
    public static let defaultInterface = "vxlan0"

    public var vni: UInt32
    public var port: UInt16
    public var podNetworks: [IPv4Network]

    public init(vni: UInt32 = OverlaySettings.defaultVNI, port: UInt16 = OverlaySettings.defaultPort, podNetworks: [IPv4Network]) {
        self.vni = vni
        self.port = port
        self.podNetworks = podNetworks
    }

    /// Reads OVERLAY_VNI, OVERLAY_PORT and POD_CIDRS (required). Empty values count as unset.
    public init(_ values: [String: String]) throws(ConfigurationError) {
        let value = { (name: String) -> String? in values[name].flatMap { $0.isEmpty ? nil : $0 } }
        vni = OverlaySettings.defaultVNI
        if let text = value("OVERLAY_VNI") {
            guard text.count <= 8, text.allSatisfy({ $0.isASCII && $0.isNumber }), let number = UInt32(text),
                  (1...0xff_ffff).contains(number) else {
                throw ConfigurationError("OVERLAY_VNI", text, "is not a VXLAN network identifier in 1...16777215")
            }
            vni = number
        }
        port = OverlaySettings.defaultPort
        if let text = value("OVERLAY_PORT") {
            guard text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }), let number = UInt16(text), number > 0 else {
                throw ConfigurationError("OVERLAY_PORT", text, "is not a UDP port in 1...65535")
            }
            port = number
        }
        guard let pods = value("POD_CIDRS") else {
            throw ConfigurationError("POD_CIDRS", "", "is required: the cluster's pod networks, e.g. 10.244.0.0/16")
        }
        podNetworks = try OverlaySettings.networks("POD_CIDRS", pods)
    }

    /// A list of IPv4 networks separated by commas or spaces: host bits zero, prefix 1...32, no
    /// two overlapping.
    public static func networks(_ variable: String, _ text: String) throws(ConfigurationError) -> [IPv4Network] {
        let items = text.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" || $0 == "\n" })
        guard !items.isEmpty else { throw ConfigurationError(variable, text, "lists no network") }
        var result: [IPv4Network] = []
        for item in items {
            guard let interface = IPv4Interface(item) else {
                throw ConfigurationError(variable, text, "has '\(item)', which is not an IPv4 network such as 10.244.0.0/16")
            }
            guard interface.prefixLength > 0 else {
                throw ConfigurationError(variable, text, "has '\(item)', which would make every address cluster-internal")
            }
            let network = interface.network
            guard network.address == interface.address else {
                throw ConfigurationError(variable, text, "has '\(item)', which has host bits set (the network is \(network))")
            }
            if let earlier = result.first(where: { $0.overlaps(network) }) {
                throw ConfigurationError(variable, text, "has '\(item)', which overlaps \(earlier)")
            }
            result.append(network)
        }
        return result
    }
}

/// The gateway pod's additions to `vpnsup run` (docs/kubernetes.md): LAN_IF is a vxlan link over
/// WAN_IF, the pod's eth0, which is both the WAN and the overlay's underlay. Present when POD_CIDRS
/// is set. Validated against the router's own configuration: the overlay network (IP_ADDR's) must
/// not overlap a pod network, and must hold a client address for every pod address.
public struct GatewayOverlay: Hashable, Sendable {
    public var settings: OverlaySettings
    public var addressing: OverlayAddressing
    /// The vxlan link (LAN_IF) and its underlay (WAN_IF).
    public var interface: String
    public var underlay: String

    /// nil when POD_CIDRS is unset: an ordinary router, no overlay.
    public init?(_ values: [String: String], router: Configuration) throws(ConfigurationError) {
        guard let pods = values["POD_CIDRS"], !pods.isEmpty else { return nil }
        settings = try OverlaySettings(values)
        do {
            addressing = try OverlayAddressing(gateway: router.gateway, podNetworks: settings.podNetworks)
        } catch {
            switch error.setting {
            case .gateway: throw ConfigurationError("IP_ADDR", router.gateway.description, error.problem)
            case .podNetworks: throw ConfigurationError("POD_CIDRS", pods, error.problem)
            }
        }
        interface = router.lanInterface
        underlay = router.wanInterface
    }

    /// What the gateway's ruleset must admit on the underlay.
    public var underlayTraffic: OverlayUnderlay {
        OverlayUnderlay(interface: underlay, peers: settings.podNetworks, port: settings.port)
    }
}

/// Everything `vpnsup join` (a client pod's sidecar) needs, validated. Variables:
/// GATEWAY (required: the gateway's headless Service name, or its pod IP), GATEWAY_ADDR
/// (required: the gateway's overlay address with prefix length, its IP_ADDR), OVERLAY_VNI,
/// OVERLAY_PORT, POD_CIDRS (required), CLUSTER_CIDRS (required: the service and node networks,
/// reached directly like the pods), CLUSTER_DNS (the cluster resolver; unset: the nameserver of
/// the pod's resolv.conf), CLUSTER_DOMAIN (default cluster.local), OVERLAY_IF (default vxlan0),
/// UNDERLAY_IF (default eth0), RUNTIME_DIR (default /run/vpnsup).
public struct JoinConfiguration: Hashable, Sendable {
    public enum GatewayName: Hashable, Sendable, CustomStringConvertible {
        case name(String)
        case address(IPv4Address)

        public var description: String {
            switch self {
            case .name(let name): name
            case .address(let address): address.description
            }
        }
    }

    public static let defaultClusterDomain = "cluster.local"
    public static let defaultUnderlayInterface = "eth0"

    public var gateway: GatewayName
    public var settings: OverlaySettings
    public var addressing: OverlayAddressing
    /// Reached directly on the underlay, never through the overlay: pods, services, nodes.
    public var clusterNetworks: [IPv4Network]
    public var clusterDNS: IPv4Address?
    public var clusterDomain: String
    public var overlayInterface: String
    public var underlayInterface: String
    public var runtimeDirectory: String

    public init(_ values: [String: String]) throws(ConfigurationError) {
        func value(_ name: String) -> String? {
            guard let v = values[name], !v.isEmpty else { return nil }
            return v
        }
        guard let gatewayText = value("GATEWAY") else {
            throw ConfigurationError("GATEWAY", "", "is required: the gateway's headless Service name, e.g. vpn-gateway.vpn.svc.cluster.local")
        }
        settings = try OverlaySettings(values)
        let pods = settings.podNetworks
        if let address = IPv4Address(gatewayText) {
            guard pods.contains(where: { $0.contains(address) }) else {
                throw ConfigurationError("GATEWAY", gatewayText, "is outside POD_CIDRS: the overlay is carried to pods only")
            }
            gateway = .address(address)
        } else {
            guard Configuration.isDNSName(gatewayText) else {
                throw ConfigurationError("GATEWAY", gatewayText, "is neither a DNS name nor an IPv4 address")
            }
            gateway = .name(gatewayText)
        }

        guard let clusterText = value("CLUSTER_CIDRS") else {
            throw ConfigurationError("CLUSTER_CIDRS", "", "is required: the service and node networks, e.g. 10.96.0.0/12,192.168.1.0/24")
        }
        let others = try OverlaySettings.networks("CLUSTER_CIDRS", clusterText)
        if let clash = others.first(where: { network in pods.contains { $0.overlaps(network) } }) {
            throw ConfigurationError("CLUSTER_CIDRS", clusterText, "has \(clash), which overlaps POD_CIDRS")
        }
        clusterNetworks = pods + others

        guard let addressText = value("GATEWAY_ADDR") else {
            throw ConfigurationError("GATEWAY_ADDR", "", "is required: the gateway's overlay address with prefix length (its IP_ADDR), e.g. 172.30.0.1/15")
        }
        guard let gatewayAddress = IPv4Interface(addressText) else {
            throw ConfigurationError("GATEWAY_ADDR", addressText, "is not an IPv4 address with prefix length")
        }
        let overlay = gatewayAddress.network
        guard gatewayAddress.address != overlay.address,
              gatewayAddress.address.value != overlay.address.value | ~overlay.mask else {
            throw ConfigurationError("GATEWAY_ADDR", addressText, "is the network or broadcast address of its subnet")
        }
        if let clash = others.first(where: { $0.overlaps(overlay) }) {
            throw ConfigurationError("GATEWAY_ADDR", addressText, "overlaps the cluster network \(clash): the overlay must be a network of its own")
        }
        do {
            addressing = try OverlayAddressing(gateway: gatewayAddress, podNetworks: pods)
        } catch {
            throw ConfigurationError(error.setting == .gateway ? "GATEWAY_ADDR" : "POD_CIDRS",
                                     error.setting == .gateway ? addressText : value("POD_CIDRS") ?? "", error.problem)
        }

        if let dnsText = value("CLUSTER_DNS") {
            guard let dns = IPv4Address(dnsText) else {
                throw ConfigurationError("CLUSTER_DNS", dnsText, "is not an IPv4 address")
            }
            guard clusterNetworks.contains(where: { $0.contains(dns) }) else {
                throw ConfigurationError("CLUSTER_DNS", dnsText, "is outside POD_CIDRS and CLUSTER_CIDRS: the cluster resolver is reached directly")
            }
            clusterDNS = dns
        }
        let domain = value("CLUSTER_DOMAIN") ?? JoinConfiguration.defaultClusterDomain
        guard Configuration.isDNSName(domain) else {
            throw ConfigurationError("CLUSTER_DOMAIN", domain, "is not a DNS name")
        }
        clusterDomain = domain.hasSuffix(".") ? String(domain.dropLast()) : domain

        overlayInterface = try Configuration.interfaceName("OVERLAY_IF", value("OVERLAY_IF") ?? OverlaySettings.defaultInterface)
        underlayInterface = try Configuration.interfaceName("UNDERLAY_IF", value("UNDERLAY_IF") ?? JoinConfiguration.defaultUnderlayInterface)
        guard overlayInterface != underlayInterface else {
            throw ConfigurationError("OVERLAY_IF", overlayInterface, "is the same interface as UNDERLAY_IF")
        }
        runtimeDirectory = try Configuration.absolutePath("RUNTIME_DIR", value("RUNTIME_DIR") ?? Configuration.defaultRuntimeDirectory)
    }

    /// Whether the gateway's pod address (as the Service name resolved) can carry the overlay:
    /// a one-line reason when it cannot (the FDB entry must never point outside the pod networks).
    public func refusal(ofGatewayAddress address: IPv4Address) -> String? {
        settings.podNetworks.contains { $0.contains(address) } ? nil
            : "GATEWAY=\(gateway) resolved to \(address), outside POD_CIDRS: not following it"
    }

    /// The kill switch this configuration commits, with the cluster resolver once known.
    public func killSwitch(clusterDNS: IPv4Address) -> ClientKillSwitch {
        ClientKillSwitch(underlayInterface: underlayInterface, overlayInterface: overlayInterface,
                         clusterNetworks: clusterNetworks,
                         dns: ClientKillSwitch.DNSForwarding(clusterResolver: clusterDNS))
    }
}
