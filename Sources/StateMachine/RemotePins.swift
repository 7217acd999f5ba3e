/// How vpnsup answers OpenVPN's `>REMOTE:host,port,proto` (it runs with `--management-query-remote`).
public enum RemoteAnswer: Hashable, Sendable, CustomStringConvertible {
    /// Use the remote as written: a literal IPv4 endpoint that is pinned.
    case accept
    /// Move on to the next remote: this one is not pinned, so the kill switch would drop it.
    case skip
    /// Connect to this pinned address instead of the host name, so OpenVPN never resolves it
    /// itself (its DNS would be dropped).
    case modify(IPv4Address, port: UInt16)

    /// The management command.
    public var command: String {
        switch self {
        case .accept: "remote ACCEPT"
        case .skip: "remote SKIP"
        case .modify(let address, let port): "remote MOD \(address) \(port)"
        }
    }

    public var description: String { command }
}

extension Remote {
    /// Whether `host` must be resolved: neither an IPv4 nor an IPv6 literal.
    public var isHostName: Bool { IPv4Address(host) == nil && !host.contains(":") }

    /// Whether vpnsup can pin it: the WAN carries IPv4 only, so an IPv6-only protocol cannot be.
    var isPinnable: Bool { family != .ipv6 }
}

/// The remotes of the OpenVPN configuration with the addresses their host names resolved to:
/// the endpoints the ruleset pins, and the answers to OpenVPN's `>REMOTE:` queries.
public struct RemotePins: Hashable, Sendable {
    public let remotes: [Remote]
    /// Lower-cased host name (trailing dot dropped) -> its addresses, in the resolver's order.
    public let resolved: [String: [IPv4Address]]
    /// Every endpoint: literal IPv4 remotes, and each resolved address with its remote's port and
    /// protocol. In remote order, without duplicates.
    public let endpoints: [Endpoint]
    /// How many times each (host, port, protocol) was asked for: the next answer rotates to the
    /// next pinned address, as OpenVPN itself would try a name's addresses in turn.
    private var asked: [String: Int] = [:]

    /// `resolved` is keyed by host name as written; names are compared case-insensitively.
    public init(remotes: [Remote], resolved: [String: [IPv4Address]] = [:]) {
        self.remotes = remotes
        var byName: [String: [IPv4Address]] = [:]
        // Sorted, so names differing only in case merge in a fixed order.
        for name in resolved.keys.sorted() {
            var list = byName[Self.key(name)] ?? []
            for address in resolved[name]! where !list.contains(address) { list.append(address) }
            if !list.isEmpty { byName[Self.key(name)] = list }
        }
        self.resolved = byName
        var endpoints: [Endpoint] = []
        for remote in remotes where remote.isPinnable {
            let addresses = remote.endpoint.map { [$0.address] } ?? (remote.isHostName ? byName[Self.key(remote.host)] ?? [] : [])
            for address in addresses {
                let endpoint = Endpoint(address: address, port: remote.port, transport: remote.transport)
                if !endpoints.contains(endpoint) { endpoints.append(endpoint) }
            }
        }
        self.endpoints = endpoints
    }

    /// The distinct host names among `remotes` that need resolving, in order of appearance
    /// (not those of IPv6-only protocols: their A records could not be used).
    public static func hostNames(in remotes: [Remote]) -> [String] {
        var seen = Set<String>()
        return remotes.filter { $0.isHostName && $0.isPinnable && seen.insert(key($0.host)).inserted }.map(\.host)
    }

    /// Host names of `remotes` that resolved to nothing.
    public var unresolved: [String] {
        Self.hostNames(in: remotes).filter { resolved[Self.key($0)] == nil }
    }

    /// The answer to `>REMOTE:host,port,proto`. Only what the ruleset pins is let through: a
    /// literal IPv4 endpoint as is, a host name as one of its pinned addresses (rotating on each
    /// ask); anything else (unpinned, IPv6, an unknown protocol) is skipped.
    public mutating func answer(host: String, port: UInt16?, proto: String) -> RemoteAnswer {
        // IPv6-only protocols cannot use an IPv4 pin (and the WAN carries no IPv6).
        guard let port, let parsed = OpenVPNProtocol(openVPNName: proto), parsed.family != .ipv6 else { return .skip }
        let transport = parsed.transport
        if let address = IPv4Address(host) {
            return endpoints.contains(Endpoint(address: address, port: port, transport: transport)) ? .accept : .skip
        }
        let remote = Remote(host: host, port: port, transport: transport)
        guard remote.isHostName,
              remotes.contains(where: { $0.isHostName && $0.isPinnable && Self.key($0.host) == Self.key(host) && $0.port == port && $0.transport == transport }),
              let addresses = resolved[Self.key(host)], !addresses.isEmpty else { return .skip }
        let slot = "\(Self.key(host)) \(port) \(transport)"
        let turn = asked[slot, default: 0]
        asked[slot] = turn + 1
        return .modify(addresses[turn % addresses.count], port: port)
    }

    /// DNS names are case-insensitive, and `name.` is the same name as `name`.
    static func key(_ name: String) -> String {
        let lower = name.lowercased()
        return lower.hasSuffix(".") ? String(lower.dropLast()) : lower
    }
}
