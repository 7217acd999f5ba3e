/// Which tunnel a configuration file drives.
public enum TunnelKind: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case openvpn
    case wireguard

    public var description: String { rawValue }

    /// What the file is: a wg-quick file starts (after blank and comment lines) with `[Interface]`
    /// or `[Peer]`; anything else is taken for OpenVPN, whose parser then says what is wrong.
    /// Only the first meaningful line is read: no OpenVPN directive starts with `[`.
    public static func detect(in text: String) -> TunnelKind {
        for raw in text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            let line = raw.drop(while: { $0 == " " || $0 == "\t" || $0 == "\u{FEFF}" })
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            guard line.hasPrefix("[") else { return .openvpn }
            var name = line.dropFirst().prefix(while: { $0 != "]" })
            while name.first == " " || name.first == "\t" { name = name.dropFirst() }
            while name.last == " " || name.last == "\t" { name = name.dropLast() }
            return ["interface", "peer"].contains(name.lowercased()) ? .wireguard : .openvpn
        }
        return .openvpn
    }

    /// `VPN_TYPE` when set (it wins over the file), else what the file looks like.
    public static func resolve(vpnType: String?, configText: String) throws(ConfigurationError) -> TunnelKind {
        guard let vpnType, !vpnType.isEmpty else { return detect(in: configText) }
        guard let kind = TunnelKind(rawValue: vpnType) else {
            throw ConfigurationError("VPN_TYPE", vpnType, "is not openvpn or wireguard")
        }
        return kind
    }
}

/// What a WireGuard tunnel needs beyond `Configuration`: the name of its interface.
///
/// The name is also wireguard-go's UAPI socket, `/var/run/wireguard/NAME.sock`, and that
/// directory is shared by every network namespace of a machine (it is a file system path, not a
/// network object): two routers in two namespaces of one host must use two names. In a container
/// `/var/run` is the container's own, so the default is safe there; a host running several
/// routers in namespaces (the systemd units) gives each its own `TUNNEL_IF`.
public struct WireGuardSettings: Hashable, Sendable {
    public static let defaultTunnelInterface = "wg0"

    public var tunnelInterface: String

    public init(tunnelInterface: String = WireGuardSettings.defaultTunnelInterface) {
        self.tunnelInterface = tunnelInterface
    }

    /// From `TUNNEL_IF` (empty counts as unset), checked against the LAN and WAN interfaces.
    public init(_ values: [String: String]) throws(ConfigurationError) {
        func value(_ name: String) -> String? {
            guard let v = values[name], !v.isEmpty else { return nil }
            return v
        }
        let name = try Configuration.interfaceName("TUNNEL_IF", value("TUNNEL_IF") ?? Self.defaultTunnelInterface)
        let lan = value("LAN_IF") ?? Configuration.defaultLANInterface
        let wan = value("WAN_IF") ?? Configuration.defaultWANInterface
        if name == lan { throw ConfigurationError("TUNNEL_IF", name, "is the same interface as LAN_IF") }
        if name == wan { throw ConfigurationError("TUNNEL_IF", name, "is the same interface as WAN_IF") }
        tunnelInterface = name
    }
}

extension Configuration {
    /// The interfaces and endpoints the kill switch is built from for a WireGuard tunnel: the
    /// same rules as OpenVPN's (`Ruleset.build`), with the tunnel's own interface name, the peers'
    /// pinned endpoints (UDP) as the only WAN destinations, vpnsup's mark on the transport
    /// (wireguard-go and the kernel put the device's fwmark on every packet of it), and DNS held to
    /// `DNS`, or to the file's first IPv4 `DNS =` when `DNS` is unset.
    public func wireGuardLayout(_ wireGuard: WireGuardConfiguration, settings: WireGuardSettings,
                                endpoints: [Endpoint]) -> NetworkLayout {
        NetworkLayout(lanInterface: lanInterface, wanInterface: wanInterface,
                      tunnelInterface: settings.tunnelInterface,
                      endpoints: endpoints, transportMark: Configuration.transportMark,
                      dns: wireGuard.enforcedDNS(configured: dns), portForwards: portForwards,
                      lanGateway: gateway.address)
    }
}
