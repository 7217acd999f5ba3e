/// How `vpnsup run` treats each connection profile of the configuration: the dry run (`vpnsup
/// rules`), `vpnsup check` and `run` itself read it from here, so they cannot disagree.
public struct RemotePlan: Hashable, Sendable {
    public enum Treatment: Hashable, Sendable {
        /// An IPv4 literal: pinned as written.
        case pinned(Endpoint)
        /// A host name: resolved by `run` once the lockdown stands, each IPv4 address then pinned
        /// with this port and transport.
        case resolvedAtRun(port: UInt16, transport: TransportProtocol)
        /// Not used, and OpenVPN is told to skip it (`remote SKIP`): why.
        case skipped(String)
    }

    public struct Entry: Hashable, Sendable, CustomStringConvertible {
        public var profile: ConnectionProfile
        /// The family the remote can be reached over: an address literal's own, else its protocol's.
        public var family: AddressFamily
        public var treatment: Treatment

        public var description: String {
            let what = "remote \(OpenVPNConfigSyntax.quoted(profile.host)) \(OpenVPNConfigSyntax.quoted(profile.port)) \(profile.proto) (line \(profile.line))"
            switch treatment {
            case .pinned(let endpoint): return "\(what): pinned as \(endpoint)"
            case .resolvedAtRun(let port, let transport): return "\(what): resolved by `vpnsup run` once the lockdown stands, each IPv4 address pinned with \(port)/\(transport)"
            case .skipped(let reason): return "\(what): skipped: \(reason)"
            }
        }

        /// The remote as `RemotePins` takes it, unless skipped.
        public var remote: Remote? {
            if case .skipped = treatment { return nil }
            return profile.remote
        }
    }

    public let entries: [Entry]

    /// The WAN carries IPv4 only: IPv6-only remotes (an IPv6 literal, `udp6`/`tcp6-client`) are
    /// skipped. `family` is kept on each entry so that pinning IPv6 can be added.
    public init(profiles: [ConnectionProfile]) {
        entries = profiles.map { profile in
            let literalFamily: AddressFamily? = IPv4Address(profile.host) != nil ? .ipv4 : profile.host.contains(":") ? .ipv6 : nil
            let family = literalFamily ?? profile.proto.family
            func entry(_ treatment: Treatment) -> Entry { Entry(profile: profile, family: family, treatment: treatment) }
            if let disabled = profile.disabledBy { return entry(.skipped("\(disabled) disables it: OpenVPN never uses it")) }
            if profile.host.isEmpty { return entry(.skipped("no host")) }
            guard let port = profile.portNumber, port > 0 else {
                return entry(.skipped("port '\(profile.port)' is not a number in 1...65535 (vpnsup pins numeric ports)"))
            }
            if literalFamily == .ipv6 { return entry(.skipped("an IPv6 address, and the WAN carries IPv4 only")) }
            if profile.proto.family == .ipv6 { return entry(.skipped("\(profile.proto) is IPv6 only, and the WAN carries IPv4 only")) }
            if let address = IPv4Address(profile.host) {
                return entry(.pinned(Endpoint(address: address, port: port, transport: profile.proto.transport)))
            }
            return entry(.resolvedAtRun(port: port, transport: profile.proto.transport))
        }
    }

    /// The plan of a vetted configuration.
    public init(_ vetted: VettedOpenVPNConfig) {
        self.init(profiles: vetted.profiles)
    }

    /// The remotes `run` uses, for `RemotePins`.
    public var remotes: [Remote] { entries.compactMap(\.remote) }

    /// The endpoints pinned as written (IPv4 literals), in order, without repeats.
    public var literalEndpoints: [Endpoint] {
        var result: [Endpoint] = []
        for entry in entries {
            if case .pinned(let endpoint) = entry.treatment, !result.contains(endpoint) { result.append(endpoint) }
        }
        return result
    }

    /// The host names `run` resolves.
    public var hostNames: [String] { RemotePins.hostNames(in: remotes) }

    /// Why `run` cannot use the configuration (every remote skipped, or none at all), as the one
    /// line it prints before exiting 78; nil when some remote is usable.
    public func problem(path: String) -> String? {
        if entries.isEmpty { return "CONFIG=\(path) has no remote line" }
        guard remotes.isEmpty else { return nil }
        let reasons = entries.map { entry -> String in
            if case .skipped(let reason) = entry.treatment { return "\(entry.profile.host) \(entry.profile.port) \(entry.profile.proto) (\(reason))" }
            return entry.profile.description
        }
        return "CONFIG=\(path) has no usable remote: \(reasons.joined(separator: "; "))"
    }
}
