/// What the machine knows of a wg-quick file: the link's name, the peers by public key with their
/// endpoints, the file's DNS. No key material: the effects hold the parsed file, keys and all,
/// under the `CredentialsToken` of the configuration in use (as they hold OpenVPN's credentials),
/// and only they turn it into UAPI requests.
public struct WireGuardProfile: Hashable, Sendable {
    public struct Peer: Hashable, Sendable {
        public var publicKey: WireGuardKey
        public var endpoint: WireGuardEndpoint

        public init(publicKey: WireGuardKey, endpoint: WireGuardEndpoint) {
            self.publicKey = publicKey
            self.endpoint = endpoint
        }
    }

    /// TUNNEL_IF: the link wireguard-go creates, and the name of its UAPI socket.
    public var interface: String
    public var peers: [Peer]
    /// The file's `DNS =` IPv4 addresses (the first is enforced when `DNS` is unset).
    public var dnsServers: [IPv4Address]

    public init(interface: String, peers: [Peer], dnsServers: [IPv4Address] = []) {
        self.interface = interface
        self.peers = peers
        self.dnsServers = dnsServers
    }

    public init(_ configuration: WireGuardConfiguration, settings: WireGuardSettings) {
        self.init(interface: settings.tunnelInterface,
                  peers: configuration.peers.map { Peer(publicKey: $0.publicKey, endpoint: $0.endpoint) },
                  dnsServers: configuration.dnsServers)
    }

    /// The peers' endpoints as remotes (UDP), for the resolver and `RemotePins`.
    public var remotes: [Remote] { peers.compactMap(\.endpoint.remote) }

    public var publicKeys: [WireGuardKey] { peers.map(\.publicKey) }

    /// The resolver the LAN is held to: `DNS` when set, else the file's first IPv4 `DNS =`.
    public func enforcedDNS(configured: IPv4Address?) -> IPv4Address? { configured ?? dnsServers.first }

    /// The address each peer is configured with: a literal as written, a host name as one of its
    /// pinned addresses (`attempt` rotates through them: each recovery tries the next). A peer
    /// whose name resolved to nothing is absent: it cannot be pinned, so it must not be configured.
    public func endpoints(pins: RemotePins, attempt: Int = 0) -> [WireGuardKey: Endpoint] {
        var result: [WireGuardKey: Endpoint] = [:]
        for peer in peers {
            switch peer.endpoint.host {
            case .v4(let address):
                result[peer.publicKey] = Endpoint(address: address, port: peer.endpoint.port, transport: .udp)
            case .name(let name):
                if let addresses = pins.resolved[RemotePins.key(name)], !addresses.isEmpty {
                    let address = addresses[((attempt % addresses.count) + addresses.count) % addresses.count]
                    result[peer.publicKey] = Endpoint(address: address, port: peer.endpoint.port, transport: .udp)
                }
            case .v6:
                break
            }
        }
        return result
    }

    /// The peers' host names (their endpoints are resolved and pinned), without repeats.
    public var hostNames: [String] { RemotePins.hostNames(in: remotes) }

    /// Recoveries in a full round: every pinned address of each host name tried once (the most
    /// addresses any name has), after which the names are resolved again.
    public func roundLength(pins: RemotePins) -> Int {
        hostNames.map { pins.resolved[RemotePins.key($0)]?.count ?? 0 }.max().map { max(1, $0) } ?? 1
    }
}

/// How the machine wants a WireGuard tunnel configured now: the file (by token: the effects hold
/// its keys), each peer's pinned endpoint, and the mark on the transport.
public struct WireGuardPlan: Hashable, Sendable {
    /// Names the parsed wg-quick file the effects hold.
    public var file: CredentialsToken
    /// Each peer's endpoint; a peer whose name resolved to nothing is absent.
    public var endpoints: [WireGuardKey: Endpoint]
    /// vpnsup's transport mark, the device's `fwmark`: only marked UDP to a pinned endpoint may use the WAN.
    public var fwmark: UInt32

    public init(file: CredentialsToken, endpoints: [WireGuardKey: Endpoint], fwmark: UInt32 = Configuration.transportMark) {
        self.file = file
        self.endpoints = endpoints
        self.fwmark = fwmark
    }
}
