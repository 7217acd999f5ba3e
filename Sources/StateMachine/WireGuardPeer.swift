/// Where a peer is reached: an IPv4 or IPv6 literal, or a host name vpnsup resolves and pins.
public enum WireGuardEndpointHost: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)
    case name(String)

    public var description: String {
        switch self {
        case .v4(let address): address.description
        case .v6(let address): "[\(address)]"
        case .name(let name): name
        }
    }
}

/// A peer's `Endpoint = host:port` (UDP, always).
public struct WireGuardEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var host: WireGuardEndpointHost
    public var port: UInt16

    public init(host: WireGuardEndpointHost, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// `192.0.2.1:51820`, `[2001:db8::1]:51820`, `vpn.example.com:51820`.
    public init?(_ text: some StringProtocol) {
        let text = Substring(text)
        let hostText: Substring, portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            hostText = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
            guard let address = IPv6Address(hostText) else { return nil }
            host = .v6(address)
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            hostText = text[..<colon]
            portText = text[text.index(after: colon)...]
            if let address = IPv4Address(hostText) {
                host = .v4(address)
            } else if Configuration.isDNSName(String(hostText)), !hostText.allSatisfy({ $0.isNumber || $0 == "." }) {
                // All digits and dots is a malformed address, not a name (`192.0.2:51820`).
                host = .name(String(hostText))
            } else {
                return nil
            }
        }
        guard (1...5).contains(portText.count), portText.allSatisfy({ $0.isASCII && $0.isNumber }),
              let port = UInt16(portText), port > 0 else { return nil }
        self.port = port
    }

    public var description: String { "\(host):\(port)" }

    /// The endpoint as a `Remote` for pinning (RemotePins, the resolver); nil for IPv6.
    public var remote: Remote? {
        switch host {
        case .v4(let address): Remote(host: address.description, port: port, transport: .udp)
        case .name(let name): Remote(host: name, port: port, transport: .udp)
        case .v6: nil
        }
    }
}

/// A `[Peer]` section.
public struct WireGuardPeer: Hashable, Sendable {
    public var publicKey: WireGuardKey
    public var presharedKey: WireGuardSecret?
    public var endpoint: WireGuardEndpoint
    /// Host bits cleared, duplicates within the peer dropped, in the file's order.
    public var allowedIPs: [WireGuardPrefix]
    /// Seconds; nil when absent, `off` or 0.
    public var persistentKeepalive: UInt16?

    public init(publicKey: WireGuardKey, presharedKey: WireGuardSecret? = nil, endpoint: WireGuardEndpoint,
                allowedIPs: [WireGuardPrefix], persistentKeepalive: UInt16? = nil) {
        self.publicKey = publicKey
        self.presharedKey = presharedKey
        self.endpoint = endpoint
        self.allowedIPs = allowedIPs
        self.persistentKeepalive = persistentKeepalive
    }

    public var allowedIPv4: [IPv4Network] {
        allowedIPs.compactMap { if case .v4(let network) = $0 { network } else { nil } }
    }
}
