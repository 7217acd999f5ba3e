/// Everything `vpnsup run` needs, validated. Built from variables named as in the environment.
public struct Configuration: Hashable, Sendable {
    public static let defaultConfigDirectory = "/config"
    public static let defaultCredentialsFile = "/run/secrets/openvpn_credentials"
    public static let defaultRuntimeDirectory = "/run/vpnsup"
    public static let defaultLANInterface = "eth1"
    public static let defaultWANInterface = "eth0"
    /// The tunnel's interface name, fixed so the ruleset can name it before it exists.
    public static let tunnelInterface = "tun0"
    /// fwmark for OpenVPN's transport socket ("vpn" and a 1).
    public static let transportMark: UInt32 = 0x7670_6e01
    /// vpnsup's own routing table ("vp"): `unreachable default` and, while tun0 exists,
    /// `default dev tun0`. Everything that arrives on the LAN interface is routed by it alone.
    public static let routingTable: UInt32 = 0x7670
    /// Priority of the rule `iif LAN_IF lookup routingTable`: after `local` (0), before `main` (32766).
    public static let routingRulePriority: UInt32 = 100

    public var openvpnConfigPath: String
    public var gateway: IPv4Interface
    public var dns: IPv4Address?
    /// PORT_FWD's forwards; `addingPortForwards(fromFile:)` returns a copy with the file's too.
    public var portForwards: [PortForward]
    /// PORT_FWD_FILE: an absolute path, one forward per line. Read by the caller (this type does
    /// no I/O) and parsed by `addingPortForwards(fromFile:)`.
    public var portForwardFile: String?
    public var lanInterface: String
    public var wanInterface: String
    public var credentialsFile: String
    public var runtimeDirectory: String
    /// A group (name or numeric id) allowed to read the status socket; nil: root only.
    public var statusGroup: String?
    public var probe: ProbeSettings
    /// The Kubernetes gateway's overlay (POD_CIDRS set): LAN_IF is a vxlan link vpnsup creates
    /// over WAN_IF (docs/kubernetes.md). nil: an ordinary router, LAN_IF exists already.
    public var overlay: GatewayOverlay?
    /// METRICS_LISTEN; nil: no HTTP metrics (`vpnsup metrics` still answers on the unix socket).
    public var metricsListen: MetricsListen?

    /// Validates `values`, keyed by variable name (CONFIG, CONFIG_DIR, IP_ADDR, DNS, PORT_FWD,
    /// PORT_FWD_FILE, LAN_IF, WAN_IF, CREDENTIALS_FILE, RUNTIME_DIR, ..., and the overlay's:
    /// POD_CIDRS, OVERLAY_VNI, OVERLAY_PORT). Empty values count as unset.
    public init(_ values: [String: String]) throws(ConfigurationError) {
        func value(_ name: String) -> String? {
            guard let v = values[name], !v.isEmpty else { return nil }
            return v
        }
        guard let config = value("CONFIG") else {
            throw ConfigurationError("CONFIG", "", "is required: the OpenVPN configuration file, absolute or relative to CONFIG_DIR")
        }
        let directory = value("CONFIG_DIR") ?? Configuration.defaultConfigDirectory
        guard directory.hasPrefix("/") else {
            throw ConfigurationError("CONFIG_DIR", directory, "is not an absolute path")
        }
        openvpnConfigPath = config.hasPrefix("/") ? config : (directory.hasSuffix("/") ? directory : directory + "/") + config

        guard let gatewayText = value("IP_ADDR") else {
            throw ConfigurationError("IP_ADDR", "", "is required: the LAN gateway address with prefix length, e.g. 172.22.0.1/24")
        }
        guard let gateway = IPv4Interface(gatewayText) else {
            throw ConfigurationError("IP_ADDR", gatewayText, "is not an IPv4 address with prefix length")
        }
        guard (1...30).contains(gateway.prefixLength) else {
            throw ConfigurationError("IP_ADDR", gatewayText, "has a prefix length outside 1...30, which leaves no room for a LAN")
        }
        let network = gateway.network
        guard gateway.address != network.address,
              gateway.address.value != network.address.value | ~network.mask else {
            throw ConfigurationError("IP_ADDR", gatewayText, "is the network or broadcast address of its subnet")
        }
        self.gateway = gateway

        if let dnsText = value("DNS") {
            guard let dns = IPv4Address(dnsText) else {
                throw ConfigurationError("DNS", dnsText, "is not an IPv4 address")
            }
            self.dns = dns
        } else {
            dns = nil
        }

        lanInterface = try Configuration.interfaceName("LAN_IF", value("LAN_IF") ?? Configuration.defaultLANInterface)
        wanInterface = try Configuration.interfaceName("WAN_IF", value("WAN_IF") ?? Configuration.defaultWANInterface)
        guard lanInterface != wanInterface else {
            throw ConfigurationError("WAN_IF", wanInterface, "is the same interface as LAN_IF")
        }
        for (name, interface) in [("LAN_IF", lanInterface), ("WAN_IF", wanInterface)] where interface == Configuration.tunnelInterface {
            throw ConfigurationError(name, interface, "is the tunnel's own interface name")
        }

        portForwards = try value("PORT_FWD").map { text throws(ConfigurationError) in
            try Configuration.portForwards(text, lan: network)
        } ?? []
        portForwardFile = try value("PORT_FWD_FILE").map { path throws(ConfigurationError) in
            try Configuration.absolutePath("PORT_FWD_FILE", path)
        }

        credentialsFile = try Configuration.absolutePath("CREDENTIALS_FILE", value("CREDENTIALS_FILE") ?? Configuration.defaultCredentialsFile)
        runtimeDirectory = try Configuration.absolutePath("RUNTIME_DIR", value("RUNTIME_DIR") ?? Configuration.defaultRuntimeDirectory)
        statusGroup = try value("STATUS_GROUP").map { group throws(ConfigurationError) in
            guard Configuration.isGroupName(group) else {
                throw ConfigurationError("STATUS_GROUP", group, "is not a group name or numeric group id")
            }
            return group
        }

        var probeServer = dns
        if let serverText = value("PROBE_SERVER") {
            guard let server = IPv4Address(serverText) else {
                throw ConfigurationError("PROBE_SERVER", serverText, "is not an IPv4 address")
            }
            probeServer = server
        }
        let probeName = value("PROBE_NAME") ?? ProbeSettings.defaultName
        guard Configuration.isDNSName(probeName) else {
            throw ConfigurationError("PROBE_NAME", probeName, "is not a DNS name (labels of 1 to 63 letters, digits, '-' or '_', 253 bytes at most)")
        }
        let interval = try value("PROBE_INTERVAL").map { text throws(ConfigurationError) in
            try Configuration.seconds("PROBE_INTERVAL", text, allowZero: true, range: "0 (no probe) or 1...86400")
        } ?? ProbeSettings.defaultInterval
        let timeout = try value("PROBE_TIMEOUT").map { text throws(ConfigurationError) in
            try Configuration.seconds("PROBE_TIMEOUT", text, allowZero: false, range: "1...86400")
        } ?? ProbeSettings.defaultTimeout
        if interval != .zero, timeout >= interval {
            throw ConfigurationError("PROBE_TIMEOUT", value("PROBE_TIMEOUT") ?? "2",
                                     "is not shorter than PROBE_INTERVAL (\(interval.components.seconds) s)")
        }
        var failures = ProbeSettings.defaultFailures
        if let failuresText = value("PROBE_FAILURES") {
            guard failuresText.count <= 3, failuresText.allSatisfy({ $0.isASCII && $0.isNumber }),
                  let count = Int(failuresText), (1...100).contains(count) else {
                throw ConfigurationError("PROBE_FAILURES", failuresText, "is not a count in 1...100")
            }
            failures = count
        }
        probe = ProbeSettings(server: probeServer, name: probeName, interval: interval == .zero ? nil : interval,
                              timeout: timeout, failures: failures)

        metricsListen = try value("METRICS_LISTEN").map { text throws(ConfigurationError) in
            try Configuration.metricsListen(text, gateway: gateway.address, dns: dns)
        }
        overlay = nil
        overlay = try GatewayOverlay(values, router: self)
    }

    /// METRICS_LISTEN: `ADDR:PORT`, where ADDR is the LAN gateway address (IP_ADDR's) or a loopback
    /// address. Port 53 on the gateway is refused when DNS is set: the LAN's port-53 packets are
    /// redirected to DNS before they could reach it.
    public static func metricsListen(_ text: String, gateway: IPv4Address, dns: IPv4Address?) throws(ConfigurationError) -> MetricsListen {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4Address(parts[0]) else {
            throw ConfigurationError("METRICS_LISTEN", text, "is not ADDR:PORT with an IPv4 address, e.g. \(gateway):9477")
        }
        guard let port = port(parts[1]) else {
            throw ConfigurationError("METRICS_LISTEN", text, "has a port outside 1...65535")
        }
        let listen = MetricsListen(address: address, port: port)
        guard listen.isLoopback || address == gateway else {
            throw ConfigurationError("METRICS_LISTEN", text,
                                     "is neither the LAN gateway address \(gateway) (IP_ADDR) nor a loopback address: metrics are never served on the WAN")
        }
        if !listen.isLoopback, port == 53, dns != nil {
            throw ConfigurationError("METRICS_LISTEN", text, "uses port 53, which DNS redirection takes from the LAN")
        }
        return listen
    }

    /// Whole seconds, 1...86400 (0 too when `allowZero`).
    static func seconds(_ variable: String, _ text: String, allowZero: Bool, range: String) throws(ConfigurationError) -> Duration {
        guard text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(text),
              value <= 86400, value > 0 || (allowZero && value == 0) else {
            throw ConfigurationError(variable, text, "is not a number of seconds in \(range)")
        }
        return .seconds(value)
    }

    /// Host names as DNS carries them: dot-separated labels of 1...63 bytes (letters, digits,
    /// '-', '_'), 253 bytes in all; a trailing dot is allowed.
    static func isDNSName(_ name: String) -> Bool {
        let trimmed = name.hasSuffix(".") ? String(name.dropLast()) : name
        guard !trimmed.isEmpty, trimmed.utf8.count <= 253 else { return false }
        return trimmed.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            (1...63).contains(label.utf8.count)
                && label.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") }
        }
    }

    /// A POSIX-ish group name (letters, digits, '_', '-', '.', not starting with '-', at most 32
    /// bytes) or a numeric id: what getgrnam and the kernel accept, and nothing a log could misread.
    static func isGroupName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 32, !name.hasPrefix("-") else { return false }
        if name.allSatisfy(\.isASCII) && name.allSatisfy(\.isNumber) { return UInt32(name) != nil }
        return name.unicodeScalars.allSatisfy {
            $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" || $0 == ".")
        }
    }

    public func layout(endpoints: [Endpoint]) -> NetworkLayout {
        NetworkLayout(lanInterface: lanInterface, wanInterface: wanInterface,
                      tunnelInterface: Configuration.tunnelInterface,
                      endpoints: endpoints, transportMark: Configuration.transportMark,
                      dns: dns, portForwards: portForwards, lanGateway: gateway.address,
                      metricsPort: metricsListen.flatMap { $0.address == gateway.address ? $0.port : nil })
    }

    /// The ruleset for `policy`: the router's, and with an overlay, the router's plus the overlay's
    /// encapsulated traffic on the WAN (`Ruleset.build(_:for:overlay:)`).
    public func ruleset(_ policy: FirewallPolicy, endpoints: [Endpoint]) -> Ruleset {
        ruleset(policy, for: layout(endpoints: endpoints))
    }

    /// The ruleset for `policy` over `layout` (an OpenVPN or a WireGuard tunnel's), with the
    /// overlay's traffic when there is one.
    public func ruleset(_ policy: FirewallPolicy, for layout: NetworkLayout) -> Ruleset {
        guard let overlay else { return Ruleset.build(policy, for: layout) }
        return Ruleset.build(policy, for: layout, overlay: overlay.underlayTraffic)
    }

    /// Linux interface names: 1 to 15 bytes, no '/', ':', whitespace or NUL, not "." or ".."; and
    /// no '"', which nft cannot quote.
    public static func interfaceName(_ variable: String, _ name: String) throws(ConfigurationError) -> String {
        guard !name.isEmpty, name.utf8.count <= 15 else {
            throw ConfigurationError(variable, name, "is not an interface name: 1 to 15 bytes")
        }
        guard name != ".", name != "..",
              !name.unicodeScalars.contains(where: { $0 == "/" || $0 == ":" || $0.value <= 0x20 || $0.value == 0x7f }) else {
            throw ConfigurationError(variable, name, "is not an interface name: no '/', ':', spaces or control characters")
        }
        // Linux allows it, but an nft string has no escape for it: `vpnsup rules` would print a
        // ruleset that does not load (found by fuzz/FuzzConfiguration).
        guard !name.contains("\"") else {
            throw ConfigurationError(variable, name, "holds a '\"', which nft cannot write in a ruleset")
        }
        return name
    }

    static func absolutePath(_ variable: String, _ path: String) throws(ConfigurationError) -> String {
        guard path.hasPrefix("/") else { throw ConfigurationError(variable, path, "is not an absolute path") }
        guard !path.contains("\0") else { throw ConfigurationError(variable, path, "contains a NUL byte") }
        return path
    }

    /// PORT_FWD: the original `IP:PORT` (TCP and UDP, same port), or a list separated by commas or
    /// spaces of `[PUBLIC_PORT:]IP:PORT[/tcp|/udp]`. Targets must be on the LAN; a public port may
    /// be forwarded once per protocol.
    public static func portForwards(_ text: String, lan: IPv4Network) throws(ConfigurationError) -> [PortForward] {
        var result: [PortForward] = []
        var seen: [String: PortForward] = [:]
        let items = text.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" || $0 == "\n" })
        guard !items.isEmpty else { throw ConfigurationError("PORT_FWD", text, "lists no port forward") }
        for item in items {
            let entry = String(item)
            func fail(_ problem: String) -> ConfigurationError {
                ConfigurationError("PORT_FWD", text, "has '\(entry)', which \(problem)")
            }
            let forwards: [PortForward]
            switch portForwards(entry: entry, lan: lan) {
            case .success(let parsed): forwards = parsed
            case .failure(let problem): throw fail(problem.text)
            }
            for forward in forwards {
                let key = "\(forward.publicPort)/\(forward.transport)"
                if let earlier = seen[key] {
                    throw fail(earlier == forward
                        ? "repeats the forward of \(key)"
                        : "forwards \(key) again, already forwarded to \(earlier.target):\(earlier.targetPort)")
                }
                seen[key] = forward
                result.append(forward)
            }
        }
        return result
    }

    /// Why one `[PUBLIC_PORT:]IP:PORT[/tcp|/udp]` entry is not a forward.
    struct EntryProblem: Error { var text: String }

    /// One entry of PORT_FWD or line of PORT_FWD_FILE: one forward, or two (TCP and UDP) without a
    /// protocol.
    static func portForwards(entry: String, lan: IPv4Network) -> Result<[PortForward], EntryProblem> {
        var body = Substring(entry)
        var transports: [TransportProtocol] = [.tcp, .udp]
        if let slash = body.firstIndex(of: "/") {
            guard let transport = TransportProtocol(rawValue: String(body[body.index(after: slash)...]).lowercased()) else {
                return .failure(EntryProblem(text: "names a protocol other than tcp or udp"))
            }
            transports = [transport]
            body = body[..<slash]
        }
        let parts = body.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3 else {
            return .failure(EntryProblem(text: "is not [PUBLIC_PORT:]IP:PORT[/tcp|/udp]"))
        }
        let addressText = parts[parts.count - 2]
        guard let target = IPv4Address(addressText) else { return .failure(EntryProblem(text: "has no IPv4 address")) }
        guard lan.contains(target) else { return .failure(EntryProblem(text: "targets \(target), outside the LAN \(lan)")) }
        guard let targetPort = port(parts[parts.count - 1]) else { return .failure(EntryProblem(text: "has a port outside 1...65535")) }
        var publicPort = targetPort
        if parts.count == 3 {
            guard let p = port(parts[0]) else { return .failure(EntryProblem(text: "has a public port outside 1...65535")) }
            publicPort = p
        }
        return .success(transports.map { PortForward(publicPort: publicPort, target: target, targetPort: targetPort, transport: $0) })
    }

    /// This configuration with the forwards of PORT_FWD_FILE's `text` added to PORT_FWD's: one
    /// forward per line in PORT_FWD's syntax, `#` starting a comment (a whole line or the rest of
    /// one), blank lines ignored. Validated like PORT_FWD (LAN targets, ports, a public port once
    /// per protocol, across the file and PORT_FWD); an error names the file and the line, e.g.
    /// `PORT_FWD_FILE=/etc/vpnsup/forwards:12 has '8080:10.0.0.5:80', which targets 10.0.0.5, outside
    /// the LAN 172.22.0.0/24`. Pure: the caller reads the file. Call it on the configuration that
    /// holds PORT_FWD's forwards only (as `init` made it), once per reading of the file.
    public func addingPortForwards(fromFile text: String) throws(ConfigurationError) -> Configuration {
        let path = portForwardFile ?? "PORT_FWD_FILE"
        let lan = gateway.network
        var next = self
        // Where each public port/protocol was forwarded: PORT_FWD or a line of the file.
        var seen: [String: (forward: PortForward, origin: String)] = [:]
        for forward in portForwards { seen["\(forward.publicPort)/\(forward.transport)"] = (forward, "in PORT_FWD") }
        var number = 0
        // "\r\n" is one Character in Swift, so it must be named as a separator of its own.
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            number += 1
            var line = rawLine
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let entry = line.trimmingSpaces()
            guard !entry.isEmpty else { continue }
            func fail(_ problem: String) -> ConfigurationError {
                ConfigurationError("PORT_FWD_FILE", "\(path):\(number)", "has '\(entry)', which \(problem)")
            }
            guard !entry.contains(where: { $0 == "," || $0 == " " || $0 == "\t" }) else {
                throw fail("is more than one forward (one per line)")
            }
            let forwards: [PortForward]
            switch Configuration.portForwards(entry: entry, lan: lan) {
            case .success(let parsed): forwards = parsed
            case .failure(let problem): throw fail(problem.text)
            }
            for forward in forwards {
                let key = "\(forward.publicPort)/\(forward.transport)"
                if let earlier = seen[key] {
                    throw fail(earlier.forward == forward
                        ? "repeats the forward of \(key) \(earlier.origin)"
                        : "forwards \(key) again, already forwarded to \(earlier.forward.target):\(earlier.forward.targetPort) \(earlier.origin)")
                }
                seen[key] = (forward, "on line \(number)")
                next.portForwards.append(forward)
            }
        }
        return next
    }

    private static func port(_ text: Substring) -> UInt16? {
        guard (1...5).contains(text.count), text.allSatisfy({ $0.isASCII && $0.isNumber }),
              let value = UInt16(text), value > 0 else { return nil }
        return value
    }
}

private extension Substring {
    /// Without leading and trailing spaces, tabs and carriage returns (a file written on Windows).
    func trimmingSpaces() -> String {
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        guard let first = firstIndex(where: { !blank($0) }), let last = lastIndex(where: { !blank($0) }) else { return "" }
        return String(self[first...last])
    }
}

/// The username and password OpenVPN asks for over the management interface.
public struct Credentials: Hashable, Sendable {
    public var username: String
    public var password: String

    /// Parses "username\npassword\n" (a trailing CR per line is tolerated). `path` only names the
    /// file in errors; the secret itself never appears in a message.
    public init(fileContents text: String, path: String) throws(ConfigurationError) {
        // "\r\n" is one Character in Swift, so it must be named as a separator of its own.
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
            .map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
        guard lines.count >= 2, !lines[0].isEmpty, !lines[1].isEmpty else {
            throw ConfigurationError("CREDENTIALS_FILE", path, "must hold a username line and a password line")
        }
        let injects = { (line: String) in line.unicodeScalars.contains { $0 == "\0" || $0 == "\r" || $0 == "\n" } }
        guard !injects(lines[0]), !injects(lines[1]) else {
            throw ConfigurationError("CREDENTIALS_FILE", path, "holds a control character that could inject a management command")
        }
        username = lines[0]
        password = lines[1]
    }
}

extension Credentials {
    /// The warning for a credentials file other users can read (mode o+r), nil otherwise. Only a
    /// warning: Docker mounts secrets 0444 unless told otherwise, and refusing would leave the
    /// kill switch closed for a file nobody else in the container may be able to reach.
    public static func permissionWarning(path: String, mode: UInt32) -> String? {
        guard mode & 0o004 != 0 else { return nil }
        let octal = String(mode & 0o7777, radix: 8)
        return "CREDENTIALS_FILE=\(path) is readable by every user (mode \(String(repeating: "0", count: max(0, 4 - octal.count)) + octal)): "
            + "chmod 600 it, or give the secret mode 0400"
    }
}
