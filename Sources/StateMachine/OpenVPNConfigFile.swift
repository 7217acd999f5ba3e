/// The address family a remote can be reached over: OpenVPN's `udp4`/`tcp4-client` are IPv4 only,
/// `udp6`/`tcp6-client` IPv6 only, `udp`/`tcp-client` either; an address literal has its own.
public enum AddressFamily: String, Hashable, Sendable, CustomStringConvertible {
    case any, ipv4, ipv6
    public var description: String { rawValue }
}

/// A protocol name of OpenVPN 2.6 (`proto`, the third word of `remote`, the third field of
/// `>REMOTE:`), read as OpenVPN's `ascii2proto`/`ascii2af` do: case-sensitive, from its table.
public struct OpenVPNProtocol: Hashable, Sendable, CustomStringConvertible {
    public enum Role: Hashable, Sendable { case udp, tcpClient, tcpServer, tcp }
    public var role: Role
    public var family: AddressFamily

    public init(role: Role, family: AddressFamily) {
        self.role = role
        self.family = family
    }

    public init?(openVPNName name: some StringProtocol) {
        let roles: [(String, Role)] = [("udp", .udp), ("tcp-server", .tcpServer), ("tcp-client", .tcpClient), ("tcp", .tcp)]
        for (base, role) in roles {
            for (suffix, family) in [("", AddressFamily.any), ("4", .ipv4), ("6", .ipv6)] {
                let spelled = role == .udp || role == .tcp ? base + suffix
                    : "tcp\(suffix)-" + (role == .tcpServer ? "server" : "client")
                if name == spelled {
                    self.init(role: role, family: family)
                    return
                }
            }
        }
        return nil
    }

    public var transport: TransportProtocol { role == .udp ? .udp : .tcp }

    /// As a client uses it: with `client`, OpenVPN turns `tcp` into `tcp-client`.
    public var asClient: OpenVPNProtocol { role == .tcp ? OpenVPNProtocol(role: .tcpClient, family: family) : self }

    /// OpenVPN's own spelling (`proto2ascii`): `udp`, `tcp4-client`, `udp6`...
    public var description: String {
        let suffix = family == .ipv4 ? "4" : family == .ipv6 ? "6" : ""
        switch role {
        case .udp: return "udp" + suffix
        case .tcp: return "tcp" + suffix
        case .tcpClient: return "tcp\(suffix)-client"
        case .tcpServer: return "tcp\(suffix)-server"
        }
    }
}

extension TransportProtocol {
    /// The transport of an OpenVPN protocol name (`udp`, `tcp-client`, `udp6`...); see
    /// `OpenVPNProtocol` for its address family.
    public init?(openVPNName name: some StringProtocol) {
        guard let parsed = OpenVPNProtocol(openVPNName: name) else { return nil }
        self = parsed.transport
    }
}

/// A `remote` of an OpenVPN configuration, as written: `host` may be an address or a name.
public struct Remote: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    public var transport: TransportProtocol
    /// What the protocol allows (`udp6`: IPv6 only).
    public var family: AddressFamily

    public init(host: String, port: UInt16, transport: TransportProtocol, family: AddressFamily = .any) {
        self.host = host
        self.port = port
        self.transport = transport
        self.family = family
    }

    public var description: String {
        "\(host):\(port)/\(transport)" + (family == .any ? "" : " (\(family == .ipv4 ? "IPv4" : "IPv6") only)")
    }

    /// The endpoint, when `host` is an IPv4 literal and the protocol allows IPv4.
    public var endpoint: Endpoint? {
        guard family != .ipv6 else { return nil }
        return IPv4Address(host).map { Endpoint(address: $0, port: port, transport: transport) }
    }
}

/// One connection profile of an OpenVPN configuration, as OpenVPN 2.6 builds it (what its
/// `--verb 4` dump lists as "Connection profiles"): host, port and protocol as OpenVPN holds them.
public struct ConnectionProfile: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    /// As written: OpenVPN hands it to getaddrinfo, so a service name is possible.
    public var port: String
    public var proto: OpenVPNProtocol
    /// Line of the `remote` (top level or in its `<connection>` block).
    public var line: Int
    /// `proto-force` names another protocol: OpenVPN never uses this profile.
    public var disabledBy: String?

    public init(host: String, port: String, proto: OpenVPNProtocol, line: Int, disabledBy: String? = nil) {
        self.host = host
        self.port = port
        self.proto = proto
        self.line = line
        self.disabledBy = disabledBy
    }

    public var description: String { "\(host) \(port) \(proto)" }

    /// The port, when it is a number OpenVPN and vpnsup agree on.
    public var portNumber: UInt16? {
        guard port.utf8.allSatisfy({ (0x30...0x39).contains($0) }), !port.hasPrefix("0"), let value = UInt16(port) else { return nil }
        return value
    }

    /// As vpnsup pins it, when the port is a number.
    public var remote: Remote? {
        portNumber.map { Remote(host: host, port: $0, transport: proto.transport, family: proto.family) }
    }
}

/// Reads what the firewall needs from an OpenVPN client configuration: its remotes.
public enum OpenVPNConfigFile {
    /// Every connection profile, with OpenVPN's rules: without `<connection>` blocks, one per
    /// top-level `remote`, with the `port`/`rport`/`proto` in force at the end of the file (1194,
    /// udp by default); with blocks, one per block and top-level `remote` lines ignored, each
    /// block starting from the top-level values in force where it begins. A file that does not
    /// parse has none.
    public static func connectionProfiles(in text: String) -> [ConnectionProfile] {
        guard case .success(let options) = OpenVPNConfigSyntax.parse(text) else { return [] }
        return connectionProfiles(of: options)
    }

    /// Every remote with a numeric port (1...65535), as `connectionProfiles` lists them; profiles
    /// `proto-force` disables are left out. IPv6-only ones are included, with their family.
    public static func remotes(in text: String) -> [Remote] {
        connectionProfiles(in: text).filter { $0.disabledBy == nil && !$0.host.isEmpty }.compactMap(\.remote)
    }

    /// What `remote`, `port`, `rport` and `proto` set: OpenVPN's `struct connection_entry`.
    private struct Entry {
        var host: String?
        var port = "1194"
        var proto = OpenVPNProtocol(role: .udp, family: .any)
        var line = 0
    }

    public static func connectionProfiles(of options: [OpenVPNOption]) -> [ConnectionProfile] {
        var global = Entry()
        var topLevel: [(host: String, port: String?, proto: OpenVPNProtocol?, line: Int)] = []
        var blocks: [Entry] = []
        var forced: OpenVPNProtocol?
        // `client` makes OpenVPN read `tcp` as `tcp-client` (options_postprocess_mutate_ce).
        let client = options.contains { $0.name == "client" && $0.arguments.isEmpty }

        func apply(_ option: OpenVPNOption, to entry: inout Entry) -> Bool {
            let arguments = option.arguments
            guard arguments.count == 1 else { return false }
            switch option.name {
            case "port", "rport":
                entry.port = arguments[0]
            case "proto":
                if let proto = OpenVPNProtocol(openVPNName: arguments[0]) { entry.proto = proto }
            default:
                return false
            }
            return true
        }

        for option in options {
            if let inside = option.connection {
                var block = global
                block.host = nil
                for inner in inside {
                    if inner.name == "remote", let parsed = remoteWords(inner.arguments) {
                        // One remote per block: a later one replaces the host, and the port and
                        // protocol when it names them.
                        block.host = parsed.host
                        block.line = inner.line
                        if let port = parsed.port { block.port = port }
                        if let proto = parsed.proto { block.proto = proto }
                    } else {
                        _ = apply(inner, to: &block)
                    }
                }
                if block.host != nil { blocks.append(block) }
                continue
            }
            if option.name == "remote", let parsed = remoteWords(option.arguments) {
                topLevel.append((parsed.host, parsed.port, parsed.proto, option.line))
            } else if option.name == "proto-force", option.arguments.count == 1 {
                forced = OpenVPNProtocol(openVPNName: option.arguments[0])
            } else {
                _ = apply(option, to: &global)
            }
        }
        let entries: [Entry] = blocks.isEmpty
            ? topLevel.map { Entry(host: $0.host, port: $0.port ?? global.port, proto: $0.proto ?? global.proto, line: $0.line) }
            : blocks
        return entries.map { entry in
            let proto = client ? entry.proto.asClient : entry.proto
            // OpenVPN compares the forced protocol as written with the profile's after that
            // mutation, so `proto-force tcp` disables even tcp remotes of a client.
            let disabled = forced.flatMap { $0.role == proto.role ? nil : "proto-force \($0)" }
            return ConnectionProfile(host: entry.host ?? "", port: entry.port, proto: proto, line: entry.line, disabledBy: disabled)
        }
    }

    /// `remote HOST [PORT [PROTO]]` as OpenVPN accepts it; nil where OpenVPN refuses the line.
    static func remoteWords(_ arguments: [String]) -> (host: String, port: String?, proto: OpenVPNProtocol?)? {
        guard (1...3).contains(arguments.count) else { return nil }
        var proto: OpenVPNProtocol?
        if arguments.count == 3 {
            guard let parsed = OpenVPNProtocol(openVPNName: arguments[2]) else { return nil }
            proto = parsed
        }
        return (arguments[0], arguments.count >= 2 ? arguments[1] : nil, proto)
    }
}
