/// The text of WireGuard's configuration protocol (UAPI, wireguard.com/xplatform): `set=1` requests
/// built from a configuration, `get=1` answers parsed into what vpnsup needs. Pure: the socket is
/// `Actions.WireGuardUAPIClient`'s.
///
/// A request that carries the private key holds it in hex in `bytes`; its description shows
/// `(secret)` instead, so logging a request cannot leak the key.
public struct WireGuardUAPIRequest: Hashable, Sendable, CustomStringConvertible {
    /// The whole request, `set=1\n` ... `\n` (a blank line ends it) or `get=1\n\n`.
    public let bytes: [UInt8]
    private let redacted: String

    /// `lines`: key, value, and whether the value is a secret.
    fileprivate init(lines: [(String, String, Bool)], operation: String) {
        var text = operation + "=1\n"
        var shown = text
        for (key, value, secret) in lines {
            text += "\(key)=\(value)\n"
            shown += "\(key)=\(secret ? "(secret)" : value)\n"
        }
        bytes = Array((text + "\n").utf8)
        redacted = shown + "\n"
    }

    public var description: String { redacted }

    /// `get=1`: the device and its peers.
    public static let get = WireGuardUAPIRequest(lines: [], operation: "get")

    /// The whole device: private key, listen port, vpnsup's fwmark on the transport, and every peer
    /// (replacing any the device had). Peers are configured as `peers(...)` does.
    public static func device(_ configuration: WireGuardConfiguration, endpoints: [WireGuardKey: Endpoint],
                              fwmark: UInt32, defaultKeepalive: UInt16? = WireGuardUAPIRequest.defaultKeepalive) -> WireGuardUAPIRequest {
        var lines: [(String, String, Bool)] = [("private_key", configuration.privateKey.key.hex, true)]
        if let port = configuration.listenPort { lines.append(("listen_port", String(port), false)) }
        lines.append(("fwmark", String(fwmark), false))
        lines += peerLines(configuration, endpoints: endpoints, defaultKeepalive: defaultKeepalive)
        return WireGuardUAPIRequest(lines: lines, operation: "set")
    }

    /// Every peer anew (`replace_peers`): the device drops its peers and their sessions, so each
    /// starts from no handshake (what `WireGuardHandshakeMonitor` counts on), and turning the
    /// keepalive on for a new peer makes WireGuard send one at once, which starts the handshake
    /// without waiting for LAN traffic. A peer missing from `endpoints` (its name resolved to
    /// nothing) is left out: it could not be pinned.
    public static func peers(_ configuration: WireGuardConfiguration, endpoints: [WireGuardKey: Endpoint],
                             defaultKeepalive: UInt16? = WireGuardUAPIRequest.defaultKeepalive) -> WireGuardUAPIRequest {
        WireGuardUAPIRequest(lines: peerLines(configuration, endpoints: endpoints, defaultKeepalive: defaultKeepalive),
                             operation: "set")
    }

    /// The keepalive for a peer whose file sets none (seconds): without traffic WireGuard sends
    /// nothing, so without it a router could not tell an idle tunnel from a dead one, nor start
    /// the first handshake before the LAN sends something; 25 s also keeps NAT mappings open.
    public static let defaultKeepalive: UInt16 = 25

    private static func peerLines(_ configuration: WireGuardConfiguration, endpoints: [WireGuardKey: Endpoint],
                                  defaultKeepalive: UInt16?) -> [(String, String, Bool)] {
        var lines: [(String, String, Bool)] = [("replace_peers", "true", false)]
        for peer in configuration.peers {
            guard let endpoint = endpoints[peer.publicKey] else { continue }
            lines.append(("public_key", peer.publicKey.hex, false))
            if let psk = peer.presharedKey { lines.append(("preshared_key", psk.key.hex, true)) }
            lines.append(("endpoint", "\(endpoint.address):\(endpoint.port)", false))
            if let keepalive = peer.persistentKeepalive ?? defaultKeepalive {
                lines.append(("persistent_keepalive_interval", String(keepalive), false))
            }
            lines.append(("replace_allowed_ips", "true", false))
            for prefix in peer.allowedIPs { lines.append(("allowed_ip", prefix.description, false)) }
        }
        return lines
    }
}

/// A peer as a `get=1` answer describes it.
public struct WireGuardPeerStatus: Hashable, Sendable {
    public var publicKey: WireGuardKey
    public var endpoint: String?
    /// Wall-clock time (since the Unix epoch) of the latest completed handshake; nil: none yet.
    public var lastHandshake: Duration?
    public var receivedBytes: UInt64
    public var sentBytes: UInt64
    public var persistentKeepalive: UInt16
    public var allowedIPs: [String]

    public init(publicKey: WireGuardKey, endpoint: String? = nil, lastHandshake: Duration? = nil,
                receivedBytes: UInt64 = 0, sentBytes: UInt64 = 0, persistentKeepalive: UInt16 = 0, allowedIPs: [String] = []) {
        self.publicKey = publicKey
        self.endpoint = endpoint
        self.lastHandshake = lastHandshake
        self.receivedBytes = receivedBytes
        self.sentBytes = sentBytes
        self.persistentKeepalive = persistentKeepalive
        self.allowedIPs = allowedIPs
    }
}

/// A `get=1` answer. The private key the device reports is skipped, never kept.
public struct WireGuardDeviceStatus: Hashable, Sendable {
    public var listenPort: UInt16?
    public var fwmark: UInt32?
    public var peers: [WireGuardPeerStatus]

    public init(listenPort: UInt16? = nil, fwmark: UInt32? = nil, peers: [WireGuardPeerStatus] = []) {
        self.listenPort = listenPort
        self.fwmark = fwmark
        self.peers = peers
    }

    public func peer(_ key: WireGuardKey) -> WireGuardPeerStatus? { peers.first { $0.publicKey == key } }
}

/// What a UAPI answer said, or why it could not be read.
public enum WireGuardUAPIAnswerError: Error, Hashable, Sendable, CustomStringConvertible {
    /// `errno=N` with N other than 0 (wireguard-go sends negative errnos: -EINVAL, -EADDRINUSE...).
    case failed(errno: Int32)
    /// The answer broke the protocol (a line without `=`, a number that is not one, no errno).
    case malformed(String)

    public var description: String {
        switch self {
        case .failed(let code): "the device refused the request (errno \(code))"
        case .malformed(let why): "malformed UAPI answer: \(why)"
        }
    }
}

extension WireGuardDeviceStatus {
    /// Parses a whole answer (ending with its blank line or not). `set` answers carry only the
    /// errno: they parse to an empty status.
    public static func parse(_ bytes: [UInt8]) -> Result<WireGuardDeviceStatus, WireGuardUAPIAnswerError> {
        var status = WireGuardDeviceStatus()
        var errnoValue: Int32?
        var current: WireGuardPeerStatus?
        var handshakeSeconds: UInt64 = 0, handshakeNanoseconds: UInt64 = 0
        func finishPeer() {
            guard var peer = current else { return }
            if handshakeSeconds != 0 || handshakeNanoseconds != 0 {
                peer.lastHandshake = .seconds(Int64(clamping: handshakeSeconds)) + .nanoseconds(Int64(clamping: handshakeNanoseconds))
            }
            status.peers.append(peer)
            current = nil
            handshakeSeconds = 0
            handshakeNanoseconds = 0
        }
        for rawLine in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            guard let equals = rawLine.firstIndex(of: UInt8(ascii: "=")) else {
                return .failure(.malformed("a line without '='"))
            }
            let key = String(decoding: rawLine[rawLine.startIndex..<equals], as: UTF8.self)
            let valueBytes = rawLine[rawLine.index(after: equals)...]
            // The private key is never turned into a String.
            if key == "private_key" { continue }
            let value = String(decoding: valueBytes, as: UTF8.self)
            func unsigned<T: FixedWidthInteger & UnsignedInteger>(_: T.Type) -> T? {
                guard !value.isEmpty, value.utf8.count <= 20, value.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
                return T(value)
            }
            func bad() -> Result<WireGuardDeviceStatus, WireGuardUAPIAnswerError> {
                .failure(.malformed("\(key) is not a number"))
            }
            switch key {
            case "errno":
                let digits = value.hasPrefix("-") ? String(value.dropFirst()) : value
                guard !digits.isEmpty, digits.count <= 10, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
                      let magnitude = Int32(digits) else { return bad() }
                errnoValue = value.hasPrefix("-") ? -magnitude : magnitude
            case "listen_port":
                guard let port = unsigned(UInt16.self) else { return bad() }
                status.listenPort = port
            case "fwmark":
                guard let mark = unsigned(UInt32.self) else { return bad() }
                status.fwmark = mark
            case "public_key":
                finishPeer()
                guard let key = WireGuardKey(hex: value) else { return .failure(.malformed("public_key is not 64 hex digits")) }
                current = WireGuardPeerStatus(publicKey: key)
            case "endpoint", "last_handshake_time_sec", "last_handshake_time_nsec", "rx_bytes", "tx_bytes",
                 "persistent_keepalive_interval", "allowed_ip":
                guard current != nil else { return .failure(.malformed("\(key) before any public_key")) }
                switch key {
                case "endpoint": current!.endpoint = value
                case "last_handshake_time_sec":
                    guard let seconds = unsigned(UInt64.self) else { return bad() }
                    handshakeSeconds = seconds
                case "last_handshake_time_nsec":
                    guard let nanoseconds = unsigned(UInt64.self), nanoseconds < 1_000_000_000 else { return bad() }
                    handshakeNanoseconds = nanoseconds
                case "rx_bytes":
                    guard let count = unsigned(UInt64.self) else { return bad() }
                    current!.receivedBytes = count
                case "tx_bytes":
                    guard let count = unsigned(UInt64.self) else { return bad() }
                    current!.sentBytes = count
                case "persistent_keepalive_interval":
                    guard let seconds = unsigned(UInt16.self) else { return bad() }
                    current!.persistentKeepalive = seconds
                default:
                    current!.allowedIPs.append(value)
                }
            default:
                // preshared_key, protocol_version, and whatever a newer device adds.
                continue
            }
        }
        finishPeer()
        guard let errnoValue else { return .failure(.malformed("no errno line")) }
        guard errnoValue == 0 else { return .failure(.failed(errno: errnoValue)) }
        return .success(status)
    }
}
