/// A wg-quick client configuration, as providers publish them, validated for a router whose LAN
/// leaves only by the tunnel. Errors are `CONFIG=<path>:<line> ...`, one line, naming the field and
/// never echoing a value (a key pasted into the wrong field must not reach a log).
public struct WireGuardConfiguration: Hashable, Sendable {
    public static let mtuRange = 576...9000

    public var privateKey: WireGuardSecret
    public var addresses: [WireGuardAddress]
    /// `DNS =` addresses vpnsup can enforce (IPv4), in order.
    public var dnsServers: [IPv4Address]
    /// `DNS =` IPv6 addresses: kept to be named, not used (the router carries no IPv6).
    public var dnsServersV6: [IPv6Address]
    /// `DNS =` entries that are names (wg-quick's search domains): ignored.
    public var searchDomains: [String]
    public var mtu: Int?
    public var listenPort: UInt16?
    public var peers: [WireGuardPeer]
    /// One line per thing in the file vpnsup does not apply (wg-quick's commands, Table,
    /// SaveConfig, FwMark, search domains, IPv6 parts, AllowedIPs that leave part of IPv4 out),
    /// each named once. Not errors: the file is usable without them.
    public var notes: [String]

    public init(privateKey: WireGuardSecret, addresses: [WireGuardAddress], dnsServers: [IPv4Address] = [],
                dnsServersV6: [IPv6Address] = [], searchDomains: [String] = [], mtu: Int? = nil,
                listenPort: UInt16? = nil, peers: [WireGuardPeer], notes: [String] = []) {
        self.privateKey = privateKey
        self.addresses = addresses
        self.dnsServers = dnsServers
        self.dnsServersV6 = dnsServersV6
        self.searchDomains = searchDomains
        self.mtu = mtu
        self.listenPort = listenPort
        self.peers = peers
        self.notes = notes
    }

    /// The tunnel's IPv4 addresses (at least one: the LAN is masqueraded behind it).
    public var ipv4Addresses: [IPv4Interface] {
        addresses.compactMap { if case .v4(let interface) = $0 { interface } else { nil } }
    }

    /// The peers' endpoints as remotes, for the resolver and `RemotePins`.
    public var remotes: [Remote] { peers.compactMap(\.endpoint.remote) }

    /// The resolver the LAN is held to: `DNS` when set, else the file's first IPv4 `DNS =`.
    public func enforcedDNS(configured: IPv4Address?) -> IPv4Address? { configured ?? dnsServers.first }

    /// The address each peer is configured with (`WireGuardProfile.endpoints(pins:attempt:)`).
    public func peerEndpoints(pins: RemotePins, attempt: Int = 0) -> [WireGuardKey: Endpoint] {
        WireGuardProfile(self, settings: WireGuardSettings()).endpoints(pins: pins, attempt: attempt)
    }
}

extension WireGuardConfiguration {
    /// What a line of the file is, once comments and blanks are gone.
    private enum Line {
        case section(String)
        case setting(key: String, value: String)
    }

    /// Parses and validates a wg-quick file. `path` only names the file in messages.
    public init(text: String, path: String) throws(ConfigurationError) {
        func failure(_ line: Int?, _ problem: String) -> ConfigurationError {
            ConfigurationError("CONFIG", line.map { "\(path):\($0)" } ?? path, problem)
        }
        var notes: [String] = []
        var noted = Set<String>()
        func note(_ topic: String, _ line: Int?, _ text: String) {
            guard noted.insert(topic).inserted else { return }
            notes.append(failure(line, text).description)
        }

        var privateKey: WireGuardSecret?
        var interfaceLine: Int?
        var addresses: [WireGuardAddress] = []
        var dnsServers: [IPv4Address] = [], dnsServersV6: [IPv6Address] = [], searchDomains: [String] = []
        var mtu: Int?, listenPort: UInt16?
        struct PeerDraft {
            var line: Int
            var publicKey: WireGuardKey?
            var presharedKey: WireGuardSecret?
            var endpoint: WireGuardEndpoint?
            var allowedIPs: [WireGuardPrefix] = []
            var keepalive: UInt16?
            var seen = Set<String>()
        }
        var peers: [PeerDraft] = []
        var interfaceSeen = Set<String>()
        enum Section { case none, interface, peer }
        var section = Section.none

        let rawLines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        for (index, raw) in rawLines.enumerated() {
            let number = index + 1
            guard let line = try Self.classify(raw, failure: { failure(number, $0) }) else { continue }
            switch line {
            case .section(let name):
                switch name {
                case "interface":
                    guard interfaceLine == nil else { throw failure(number, "has a second [Interface] section") }
                    interfaceLine = number
                    section = .interface
                case "peer":
                    peers.append(PeerDraft(line: number))
                    section = .peer
                default:
                    throw failure(number, "has a section other than [Interface] or [Peer]")
                }
            case .setting(let key, let value):
                switch section {
                case .none:
                    throw failure(number, "has a setting before the first [Interface] or [Peer] section")
                case .interface:
                    guard let field = InterfaceField(key) else {
                        throw failure(number, "has \(Self.nameOfUnknown(key)) in [Interface]")
                    }
                    if !field.repeats {
                        guard interfaceSeen.insert(field.rawValue).inserted else {
                            throw failure(number, "sets \(field.rawValue) twice in [Interface]")
                        }
                    }
                    switch field {
                    case .privateKey:
                        guard let key = WireGuardSecret(base64: value) else {
                            throw failure(number, "has a PrivateKey that is not a key (base64 of 32 bytes: 44 characters ending in '=')")
                        }
                        guard !key.key.isZero else { throw failure(number, "has a PrivateKey of zeros, which WireGuard takes as no key") }
                        privateKey = key
                    case .address:
                        for item in try Self.list(value, field: "Address", failure: { failure(number, $0) }) {
                            guard let address = WireGuardAddress(item) else {
                                throw failure(number, "has an Address that is not an IPv4 or IPv6 address with an optional prefix length")
                            }
                            if case .v4(let interface) = address, interface.address == IPv4Address(0) {
                                throw failure(number, "has the Address 0.0.0.0, which no tunnel can use")
                            }
                            if !addresses.contains(address) { addresses.append(address) }
                        }
                    case .dns:
                        for item in try Self.list(value, field: "DNS", failure: { failure(number, $0) }) {
                            if let v4 = IPv4Address(item) {
                                if !dnsServers.contains(v4) { dnsServers.append(v4) }
                            } else if let v6 = IPv6Address(item) {
                                if !dnsServersV6.contains(v6) { dnsServersV6.append(v6) }
                                note("dns6", number, "names an IPv6 DNS server, which is not used: the router carries no IPv6")
                            } else if Configuration.isDNSName(item), !item.allSatisfy({ $0.isNumber || $0 == "." }) {
                                if !searchDomains.contains(item) { searchDomains.append(item) }
                                note("search", number, "names DNS search domains, which are ignored: vpnsup enforces the resolver address only")
                            } else {
                                throw failure(number, "has a DNS entry that is neither an IP address nor a domain name")
                            }
                        }
                    case .mtu:
                        guard let value = Self.number(value), Self.mtuRange.contains(value) else {
                            throw failure(number, "has an MTU that is not a number in \(Self.mtuRange.lowerBound)...\(Self.mtuRange.upperBound)")
                        }
                        mtu = value
                    case .listenPort:
                        guard let value = Self.number(value), value <= 65535 else {
                            throw failure(number, "has a ListenPort that is not a port number in 0...65535")
                        }
                        listenPort = UInt16(value)
                    case .preUp, .postUp, .preDown, .postDown:
                        note("commands", number, "has \(field.rawValue), which is ignored: vpnsup never runs a command from the configuration")
                    case .table:
                        note("table", number, "has Table, which is ignored: vpnsup routes the LAN through its own table")
                    case .saveConfig:
                        note("save", number, "has SaveConfig, which is ignored: vpnsup never writes the configuration")
                    case .fwMark:
                        note("fwmark", number, "has FwMark, which is ignored: vpnsup marks the tunnel's transport itself")
                    }
                case .peer:
                    guard let field = PeerField(key) else {
                        throw failure(number, "has \(Self.nameOfUnknown(key)) in [Peer]")
                    }
                    if field != .allowedIPs {
                        guard peers[peers.count - 1].seen.insert(field.rawValue).inserted else {
                            throw failure(number, "sets \(field.rawValue) twice in one [Peer]")
                        }
                    }
                    switch field {
                    case .publicKey:
                        guard let key = WireGuardKey(base64: value) else {
                            throw failure(number, "has a PublicKey that is not a key (base64 of 32 bytes: 44 characters ending in '=')")
                        }
                        peers[peers.count - 1].publicKey = key
                    case .presharedKey:
                        guard let key = WireGuardSecret(base64: value) else {
                            throw failure(number, "has a PresharedKey that is not a key (base64 of 32 bytes: 44 characters ending in '=')")
                        }
                        // All zeros is WireGuard's "no preshared key".
                        peers[peers.count - 1].presharedKey = key.key.isZero ? nil : key
                    case .endpoint:
                        guard let endpoint = WireGuardEndpoint(value) else {
                            throw failure(number, "has an Endpoint that is not host:port (an IPv4 address, [IPv6 address] or host name; port 1...65535)")
                        }
                        peers[peers.count - 1].endpoint = endpoint
                    case .allowedIPs:
                        for item in try Self.list(value, field: "AllowedIPs", failure: { failure(number, $0) }) {
                            guard let prefix = WireGuardPrefix(item) else {
                                throw failure(number, "has an AllowedIPs entry that is not an IPv4 or IPv6 network")
                            }
                            if !peers[peers.count - 1].allowedIPs.contains(prefix) { peers[peers.count - 1].allowedIPs.append(prefix) }
                        }
                    case .persistentKeepalive:
                        if value.lowercased() == "off" {
                            peers[peers.count - 1].keepalive = nil
                        } else {
                            guard let seconds = Self.number(value), seconds <= 65535 else {
                                throw failure(number, "has a PersistentKeepalive that is not off or a number of seconds in 0...65535")
                            }
                            peers[peers.count - 1].keepalive = seconds == 0 ? nil : UInt16(seconds)
                        }
                    }
                }
            }
        }

        // The file as a whole.
        guard let interfaceLine else { throw failure(nil, "has no [Interface] section") }
        guard let privateKey else { throw failure(interfaceLine, "has no PrivateKey in [Interface]") }
        guard addresses.contains(where: { if case .v4 = $0 { true } else { false } }) else {
            throw failure(interfaceLine, "has no IPv4 Address in [Interface]: the LAN leaves by the tunnel from one")
        }
        if addresses.contains(where: { if case .v6 = $0 { true } else { false } }) {
            note("address6", interfaceLine, "has an IPv6 Address, which is not used: the router carries no IPv6")
        }
        guard !peers.isEmpty else { throw failure(nil, "has no [Peer] section") }
        var finished: [WireGuardPeer] = []
        var owner: [WireGuardPrefix: Int] = [:]
        for (index, draft) in peers.enumerated() {
            let ordinal = peers.count == 1 ? "[Peer]" : "[Peer] \(index + 1)"
            guard let publicKey = draft.publicKey else { throw failure(draft.line, "has no PublicKey in \(ordinal)") }
            if let earlier = finished.firstIndex(where: { $0.publicKey == publicKey }) {
                throw failure(draft.line, "has the PublicKey of [Peer] \(earlier + 1) again in \(ordinal)")
            }
            guard let endpoint = draft.endpoint else {
                throw failure(draft.line, "has no Endpoint in \(ordinal): a router's peer must be reachable, and pinned, at a known address")
            }
            if case .v6 = endpoint.host {
                throw failure(draft.line, "has the IPv6 Endpoint \(endpoint) in \(ordinal): the WAN carries IPv4 only (an IPv4 address or a host name)")
            }
            guard !draft.allowedIPs.isEmpty else {
                throw failure(draft.line, "has no AllowedIPs in \(ordinal): nothing could go through it")
            }
            // WireGuard keeps a prefix named by two peers for the last one only: the file would
            // not say where that traffic goes. Nested prefixes are fine (longest match, all inside
            // the tunnel).
            for prefix in draft.allowedIPs {
                if let earlier = owner[prefix] {
                    throw failure(draft.line, "has the AllowedIPs \(prefix) in \(ordinal), already [Peer] \(earlier + 1)'s: WireGuard would keep it for one peer only")
                }
                owner[prefix] = index
            }
            if draft.allowedIPs.contains(where: { if case .v6 = $0 { true } else { false } }) {
                note("allowed6", draft.line, "has IPv6 AllowedIPs, which carry nothing: the router forwards no IPv6")
            }
            finished.append(WireGuardPeer(publicKey: publicKey, presharedKey: draft.presharedKey, endpoint: endpoint,
                                          allowedIPs: draft.allowedIPs, persistentKeepalive: draft.keepalive))
        }
        let ipv4 = finished.flatMap(\.allowedIPv4)
        guard !ipv4.isEmpty else {
            throw failure(nil, "has no IPv4 AllowedIPs in any [Peer]: the LAN's traffic could go nowhere")
        }
        if let gap = Self.firstUncovered(ipv4) {
            note("coverage", nil, "has AllowedIPs that do not cover all of IPv4 (\(gap) is in no peer's): the LAN's traffic to such addresses is dropped inside the tunnel, never sent by the WAN")
        }

        self.init(privateKey: privateKey, addresses: addresses, dnsServers: dnsServers, dnsServersV6: dnsServersV6,
                  searchDomains: searchDomains, mtu: mtu, listenPort: listenPort, peers: finished, notes: notes)
    }

    private enum InterfaceField: String, CaseIterable {
        case privateKey = "PrivateKey", address = "Address", dns = "DNS", mtu = "MTU", listenPort = "ListenPort"
        case preUp = "PreUp", postUp = "PostUp", preDown = "PreDown", postDown = "PostDown"
        case table = "Table", saveConfig = "SaveConfig", fwMark = "FwMark"

        init?(_ key: String) {
            guard let field = Self.allCases.first(where: { $0.rawValue.lowercased() == key.lowercased() }) else { return nil }
            self = field
        }

        /// wg-quick appends these (and runs each command line), so they may repeat.
        var repeats: Bool { [.address, .dns, .preUp, .postUp, .preDown, .postDown].contains(self) }
    }

    private enum PeerField: String, CaseIterable {
        case publicKey = "PublicKey", presharedKey = "PresharedKey", endpoint = "Endpoint"
        case allowedIPs = "AllowedIPs", persistentKeepalive = "PersistentKeepalive"

        init?(_ key: String) {
            guard let field = Self.allCases.first(where: { $0.rawValue.lowercased() == key.lowercased() }) else { return nil }
            self = field
        }
    }

    /// Comments (`#` to the end of the line, as wg-quick strips them) and surrounding blanks go; a
    /// blank result is nil.
    private static func classify(_ raw: Substring, failure: (String) -> ConfigurationError) throws(ConfigurationError) -> Line? {
        var body = raw
        if let hash = body.firstIndex(of: "#") { body = body[..<hash] }
        let line = trimmed(body)
        guard !line.isEmpty else { return nil }
        if line.hasPrefix("[") {
            guard line.hasSuffix("]"), line.count >= 2 else { throw failure("has a section header without its closing ']'") }
            return .section(trimmed(line.dropFirst().dropLast()).lowercased())
        }
        guard let equals = line.firstIndex(of: "=") else {
            throw failure("is neither a [Section] nor a Key = Value line")
        }
        let key = trimmed(line[..<equals]), value = trimmed(line[line.index(after: equals)...])
        guard !key.isEmpty else { throw failure("has a line with no key before '='") }
        guard !value.isEmpty else { throw failure("has \(nameOfUnknown(key, known: true)) without a value") }
        return .setting(key: key, value: value)
    }

    /// A key as a message may show it: only a short word of letters (a key's value pasted where a
    /// name belongs must not be echoed, and base64 keys are 44 characters).
    private static func nameOfUnknown(_ key: String, known: Bool = false) -> String {
        let printable = key.count <= 16 && key.unicodeScalars.allSatisfy { $0.isASCII && $0.properties.isAlphabetic }
        if known, printable, InterfaceField(key) != nil || PeerField(key) != nil {
            return (InterfaceField(key)?.rawValue ?? PeerField(key)?.rawValue)!
        }
        if known { return printable ? "the key \(key)" : "a key" }
        return printable ? "an unknown key \(key)" : "an unknown key"
    }

    private static func trimmed(_ text: Substring) -> String {
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\u{FEFF}" }
        return String(text.drop(while: isBlank).reversed().drop(while: isBlank).reversed())
    }

    /// Comma-separated items, blanks around each ignored; an empty item is an error.
    private static func list(_ value: String, field: String,
                             failure: (String) -> ConfigurationError) throws(ConfigurationError) -> [String] {
        let items = value.split(separator: ",", omittingEmptySubsequences: false).map { trimmed($0) }
        guard !items.contains(where: \.isEmpty) else { throw failure("has an empty item in \(field)") }
        return items
    }

    /// Decimal digits only (up to 6), no sign.
    private static func number(_ text: String) -> Int? {
        guard (1...6).contains(text.count), text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(text)
    }

    /// The lowest IPv4 address no network of `networks` contains, or nil when together they cover
    /// all of IPv4.
    static func firstUncovered(_ networks: [IPv4Network]) -> IPv4Address? {
        let ranges = networks.map { (start: UInt64($0.address.value), end: UInt64($0.address.value) + (UInt64(1) << UInt64(32 - $0.prefixLength))) }
            .sorted { $0.start < $1.start }
        var next: UInt64 = 0
        for range in ranges {
            if range.start > next { break }
            next = max(next, range.end)
        }
        return next >= 1 << 32 ? nil : IPv4Address(UInt32(next))
    }
}
