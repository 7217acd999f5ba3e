import StateMachine

/// One line of OpenVPN's management output, parsed.
///
/// Real-time notifications start with `>`; command replies are `SUCCESS:`/`ERROR:` lines or
/// multi-line bodies ending in `END`. Notifications may arrive between a command and its reply,
/// so every line is classified on its own: the parser keeps no state besides the partial line.
public enum ManagementMessage: Sendable, Hashable {
    /// `>INFO:` (the greeting, among others).
    case info(String)
    /// `>HOLD:Waiting for hold release:0`
    case hold(String)
    /// `>PASSWORD:Need 'Auth' username/password` gives type `Auth`.
    case passwordNeeded(type: String)
    /// `>PASSWORD:Verification Failed: 'Auth'` gives type `Auth`.
    case passwordVerificationFailed(type: String)
    /// A `>STATE:` notification, or a line of the history answered to `state`/`state on all`.
    case state(StateRecord)
    /// `>FATAL:` — OpenVPN is about to exit.
    case fatal(String)
    /// `>BYTECOUNT:in,out`
    case byteCount(received: UInt64, sent: UInt64)
    /// `>LOG:time,flags,text`, kept whole.
    case log(String)
    /// `>REMOTE:host,port,proto` (with `--management-query-remote`).
    case remote(host: String, port: UInt16?, proto: String)
    case notify(String)
    case echo(String)
    case needOK(String)
    case needStr(String)
    /// Any other `>KIND:text` notification (`INFOMSG`, `CLIENT`, `PK_SIGN`, ...). An auth token
    /// (`>PASSWORD:Auth-Token:`) arrives here with its secret replaced by `<redacted>`.
    case other(kind: String, text: String)
    /// `SUCCESS: text`
    case success(String)
    /// `ERROR: text`
    case error(String)
    /// A line of a multi-line reply body that is not a state record (`version`, `help`, `status`).
    case replyLine(String)
    /// `END`: the last line of a multi-line reply (after a state history: the history is complete).
    case endOfReply
    /// Anything unparseable: invalid UTF-8, an over-long line, a notification without its fields.
    case malformed(String)
}

/// The fields of a `>STATE:` line: time, state, detail, tunnel IPv4, remote address, remote port,
/// local address, local port, tunnel IPv6. Absent fields are empty strings.
public struct StateRecord: Sendable, Hashable {
    /// Unix time of the transition; nil when OpenVPN left the field empty.
    public var time: Int64?
    public var state: OpenVPNState
    /// The reason on RECONNECTING/EXITING (`ping-restart`, `SIGTERM`, ...), `SUCCESS`/`ERROR` on CONNECTED.
    public var detail: String
    public var tunnelIPv4: String
    public var remoteAddress: String
    public var remotePort: String
    public var localAddress: String
    public var localPort: String
    public var tunnelIPv6: String

    public init(time: Int64?, state: OpenVPNState, detail: String = "", tunnelIPv4: String = "",
                remoteAddress: String = "", remotePort: String = "", localAddress: String = "",
                localPort: String = "", tunnelIPv6: String = "") {
        self.time = time
        self.state = state
        self.detail = detail
        self.tunnelIPv4 = tunnelIPv4
        self.remoteAddress = remoteAddress
        self.remotePort = remotePort
        self.localAddress = localAddress
        self.localPort = localPort
        self.tunnelIPv6 = tunnelIPv6
    }
}

/// Turns the management byte stream into messages, incrementally: bytes in, complete lines out.
/// Pure (no I/O) and total: whatever the input, it returns messages and never traps.
public struct ManagementParser: Sendable {
    public static let defaultMaxLineLength = 64 * 1024

    /// Lines longer than this (in bytes, before the line feed) are discarded and reported once.
    public let maxLineLength: Int
    private var line: [UInt8] = []
    /// Set while skipping the rest of an over-long line up to its line feed.
    private var discarding = false

    public init(maxLineLength: Int = ManagementParser.defaultMaxLineLength) {
        self.maxLineLength = max(1, maxLineLength)
    }

    /// Consumes `bytes`; returns the messages of the lines they complete. A trailing partial line
    /// is kept for the next call, so how the stream is split does not change the result.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [ManagementMessage] {
        var messages: [ManagementMessage] = []
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                if discarding {
                    discarding = false
                } else if let message = Self.parse(line: line[...]) {
                    messages.append(message)
                }
                line.removeAll(keepingCapacity: true)
            } else if discarding {
                continue
            } else if line.count == maxLineLength {
                // Report at the moment the cap is crossed, so memory stays bounded however long
                // the line gets and the report does not depend on how bytes were chunked.
                messages.append(.malformed("line longer than \(maxLineLength) bytes discarded: "
                    + String(decoding: line.prefix(80), as: UTF8.self)))
                line.removeAll(keepingCapacity: true)
                discarding = true
            } else {
                line.append(byte)
            }
        }
        return messages
    }

    /// Ends the stream (the connection closed): a partial last line is reported as malformed.
    public mutating func finish() -> [ManagementMessage] {
        defer {
            line.removeAll()
            discarding = false
        }
        guard !discarding, !line.isEmpty else { return [] }
        return [.malformed("unterminated line: " + String(decoding: line.prefix(80), as: UTF8.self))]
    }

    /// Parses one complete line (without its line feed; a trailing CR is dropped). Nil for an empty line.
    public static func parse(line bytes: ArraySlice<UInt8>) -> ManagementMessage? {
        var bytes = bytes
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        if bytes.isEmpty { return nil }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return .malformed(String(decoding: bytes, as: UTF8.self))
        }
        return parse(line: text)
    }

    static func parse(line text: String) -> ManagementMessage {
        if text.hasPrefix(">") { return parseNotification(text) }
        if text == "END" { return .endOfReply }
        if let rest = text.dropPrefix("SUCCESS:") { return .success(String(rest.drop { $0 == " " })) }
        if let rest = text.dropPrefix("ERROR:") { return .error(String(rest.drop { $0 == " " })) }
        if let record = historyRecord(text) { return .state(record) }
        return .replyLine(text)
    }

    private static func parseNotification(_ text: String) -> ManagementMessage {
        let body = text.dropFirst()
        guard let colon = body.firstIndex(of: ":") else { return .malformed(text) }
        let kind = body[..<colon]
        let payload = String(body[body.index(after: colon)...])
        guard !kind.isEmpty, kind.utf8.allSatisfy(isKindByte) else { return .malformed(text) }
        switch kind {
        case "INFO": return .info(payload)
        case "HOLD": return .hold(payload)
        case "FATAL": return .fatal(payload)
        case "LOG": return .log(payload)
        case "NOTIFY": return .notify(payload)
        case "ECHO": return .echo(payload)
        case "NEED-OK": return .needOK(payload)
        case "NEED-STR": return .needStr(payload)
        case "PASSWORD": return password(payload)
        case "STATE": return stateRecord(payload).map(ManagementMessage.state) ?? .malformed(text)
        case "BYTECOUNT": return byteCount(payload) ?? .malformed(text)
        case "REMOTE": return remote(payload) ?? .malformed(text)
        default: return .other(kind: String(kind), text: payload)
        }
    }

    private static func isKindByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "_"), UInt8(ascii: "-"): true
        default: false
        }
    }

    private static func password(_ payload: String) -> ManagementMessage {
        if let rest = payload.dropPrefix("Need "), let type = quoted(rest) {
            return .passwordNeeded(type: type)
        }
        if let rest = payload.dropPrefix("Verification Failed: "), let type = quoted(rest) {
            return .passwordVerificationFailed(type: type)
        }
        // The token is a credential: keep it out of anything that logs messages.
        if payload.hasPrefix("Auth-Token:") {
            return .other(kind: "PASSWORD", text: "Auth-Token:<redacted>")
        }
        return .other(kind: "PASSWORD", text: payload)
    }

    /// `'Auth' username/password` gives `Auth`.
    private static func quoted(_ text: Substring) -> String? {
        guard text.first == "'" else { return nil }
        let rest = text.dropFirst()
        guard let end = rest.firstIndex(of: "'") else { return nil }
        return String(rest[..<end])
    }

    private static func byteCount(_ payload: String) -> ManagementMessage? {
        let fields = payload.split(separator: ",", omittingEmptySubsequences: false)
        guard fields.count == 2, let received = UInt64(fields[0]), let sent = UInt64(fields[1]) else { return nil }
        return .byteCount(received: received, sent: sent)
    }

    /// `host,port,proto`; the host is everything before the last two fields.
    private static func remote(_ payload: String) -> ManagementMessage? {
        var fields = payload.split(separator: ",", omittingEmptySubsequences: false)
        guard fields.count >= 2, let proto = fields.popLast() else { return nil }
        var port: UInt16?
        if fields.count >= 2 {
            let portField = fields.removeLast()
            port = UInt16(portField)
        }
        let host = fields.joined(separator: ",")
        guard !host.isEmpty, !proto.isEmpty else { return nil }
        return .remote(host: host, port: port, proto: String(proto))
    }

    /// The fields after `>STATE:`. OpenVPN 2.6 prints 8 fields (9 with a tunnel IPv6 address);
    /// a description containing commas would add fields, so the six address fields are taken
    /// from the end when there are more than nine.
    static func stateRecord(_ payload: Substring) -> StateRecord? {
        let fields = payload.split(separator: ",", omittingEmptySubsequences: false)
        guard fields.count >= 2 else { return nil }
        let time: Int64?
        if fields[0].isEmpty {
            time = nil
        } else {
            guard fields[0].utf8.allSatisfy(isDigit), let value = Int64(fields[0]) else { return nil }
            time = value
        }
        guard isStateName(fields[1]) else { return nil }
        let tail: ArraySlice<Substring>
        var record = StateRecord(time: time, state: OpenVPNState(name: String(fields[1])))
        if fields.count > 9 {
            record.detail = fields[2..<(fields.count - 6)].joined(separator: ",")
            tail = fields[(fields.count - 6)...]
        } else {
            record.detail = fields.count > 2 ? String(fields[2]) : ""
            tail = fields.count > 3 ? fields[3...] : []
        }
        func field(_ offset: Int) -> String {
            let index = tail.startIndex + offset
            return index < tail.endIndex ? String(tail[index]) : ""
        }
        record.tunnelIPv4 = field(0)
        record.remoteAddress = field(1)
        record.remotePort = field(2)
        record.localAddress = field(3)
        record.localPort = field(4)
        record.tunnelIPv6 = field(5)
        return record
    }

    private static func stateRecord(_ payload: String) -> StateRecord? { stateRecord(payload[...]) }

    /// A line of a state history body: `time,STATE,...` without the `>STATE:` prefix. Other bodies
    /// can also start with a number (`log all`: `time,FLAGS,text`), so this demands a time, a
    /// state-like name that is not made of log flag letters, and at least the first three fields.
    private static func historyRecord(_ text: String) -> StateRecord? {
        let fields = text.split(separator: ",", maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3, !fields[0].isEmpty else { return nil }
        let name = String(fields[1])
        if case .other = OpenVPNState(name: name), name.utf8.allSatisfy(logFlagLetters.contains) { return nil }
        return stateRecord(text[...])
    }

    /// Letters `log all` prints as message flags (Info, Fatal, Non-fatal, Warning, Debug, Client).
    private static let logFlagLetters: Set<UInt8> = Set("IFNWDC".utf8)

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    /// OpenVPN's state names: upper-case letters, digits and underscores; `?` is what OpenVPN
    /// prints for a state it has no name for.
    private static func isStateName(_ name: Substring) -> Bool {
        if name == "?" { return true }
        guard let first = name.utf8.first, first >= UInt8(ascii: "A"), first <= UInt8(ascii: "Z") else { return false }
        return name.utf8.allSatisfy { isKindByte($0) && $0 != UInt8(ascii: "-") }
    }
}

/// Quotes a value for a management command, e.g. the password in `password "Auth" <value>`:
/// wraps it in double quotes and backslash-escapes `\` and `"`. Returns nil when the value holds
/// CR, LF or NUL: OpenVPN reads commands line by line, so those would inject a second command.
public func managementQuoted(_ value: String) -> String? {
    var result = "\""
    for scalar in value.unicodeScalars {
        switch scalar {
        case "\r", "\n", "\0": return nil
        case "\\", "\"": result.unicodeScalars.append("\\")
        default: break
        }
        result.unicodeScalars.append(scalar)
    }
    result += "\""
    return result
}

extension StringProtocol {
    fileprivate func dropPrefix(_ prefix: String) -> SubSequence? {
        hasPrefix(prefix) ? dropFirst(prefix.count) : nil
    }
}
