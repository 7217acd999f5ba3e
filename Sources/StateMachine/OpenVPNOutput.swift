/// Reads what OpenVPN 2.6 prints (its log lines on stdout), for `vpnsup check` and for `run`,
/// which must tell OpenVPN's own configuration errors from crashes.
public enum OpenVPNOutput {
    /// The line without OpenVPN's timestamp (`2024-05-01 12:00:00 ` and, at --verb 4 and up,
    /// `us=123456 `).
    public static func message(_ line: String) -> Substring {
        var rest = Substring(line)
        let stamp = rest.prefix(20)
        if stamp.count == 20, stamp.dropFirst(4).first == "-", stamp.dropFirst(10).first == " ", stamp.last == " ",
           stamp.prefix(4).allSatisfy(\.isNumber) {
            rest = rest.dropFirst(20)
        }
        if rest.hasPrefix("us="), let space = rest.firstIndex(of: " ") { rest = rest[rest.index(after: space)...] }
        return rest
    }

    /// OpenVPN has read its options and checked the files they name: it prints its version
    /// (`OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)] ...`) right after, before anything else.
    public static func isVersionBanner(_ line: String) -> Bool {
        let text = message(line)
        return text.hasPrefix("OpenVPN 2.") && text.contains(" [")
    }

    /// OpenVPN has loaded its keys and certificates and turns to the network: the first line of
    /// resolving or opening its socket (it never gets further without a network).
    public static func isPastKeyLoading(_ line: String) -> Bool {
        let text = message(line)
        return ["RESOLVE: ", "TCP/UDP: ", "Socket Buffers:", "Attempting to establish TCP connection", "UDPv4 link", "UDPv6 link",
                "UDP link", "TCPv4_CLIENT link", "TCPv6_CLIENT link", "Could not determine IPv4/IPv6 protocol",
                "Initialization Sequence Completed"].contains { text.hasPrefix($0) }
    }

    /// The line that says why OpenVPN stopped before it connected, if it printed one: an
    /// "Options error" (unknown option, bad parameter, missing file), or a fatal error such as
    /// "Cannot load CA certificate file". Continuation lines ("Use --help for more information.",
    /// "Exiting due to fatal error") are not the reason.
    public static func errorLine(in lines: [String]) -> String? {
        let messages = lines.map { String(message($0)) }
        if let options = messages.first(where: { $0.contains("Options error:") }) {
            // "Options error: Please correct these errors." follows the real ones.
            if options.hasSuffix("Please correct these errors."),
               let earlier = messages.first(where: { $0.contains("Options error:") && !$0.hasSuffix("Please correct these errors.") }) {
                return earlier
            }
            return options
        }
        guard let fatal = messages.lastIndex(where: { $0.hasPrefix("Exiting due to fatal error") }) else { return nil }
        // The reason is the line before; OpenSSL's detail lines before it say why, as
        // "OpenSSL: error:0A00018E:SSL routines::ca md too weak:".
        guard let reasonIndex = messages[..<fatal].lastIndex(where: { !$0.hasPrefix("OpenSSL: ") && !$0.isEmpty }) else { return nil }
        let details = messages[..<reasonIndex].reversed().prefix { $0.hasPrefix("OpenSSL: ") }.reversed()
            .map { $0.split(separator: ":", omittingEmptySubsequences: false).dropFirst(5).joined(separator: ":").trimmingSpacesAndColons }
            .filter { !$0.isEmpty }
        return messages[reasonIndex] + (details.isEmpty ? "" : " (OpenSSL: \(details.joined(separator: "; ")))")
    }
}

/// One line OpenVPN printed with `--machine-readable-output` (as `vpnsup run` starts it):
/// `<seconds>.<microseconds> <flags in hex> <message>`, the flags being its message class
/// (src/openvpn/error.h), which says how loud the line is.
public struct OpenVPNLogLine: Hashable, Sendable {
    public enum Severity: String, Hashable, Sendable { case error, warning, info, debug }

    /// M_FATAL, M_NONFATAL, M_WARN, M_OPTERR and the debug level mask of error.h.
    static let fatal: UInt32 = 1 << 4, nonFatal: UInt32 = 1 << 5, warn: UInt32 = 1 << 6, optionsError: UInt32 = 1 << 15
    static let debugLevelMask: UInt32 = 0x0F

    /// nil for a line without the prefix (a line OpenVPN printed otherwise: the message as is).
    public var flags: UInt32?
    public var message: String

    public init(_ line: String) {
        let words = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        if words.count == 3, let stamp = words.first, stamp.contains("."),
           stamp.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
           let flags = UInt32(words[1], radix: 16) {
            self.flags = flags
            message = String(words[2])
        } else {
            flags = nil
            message = String(OpenVPNOutput.message(line))
        }
    }

    /// Errors (fatal, non-fatal, an options error) are errors, warnings warnings; messages of a
    /// debug level above 3 (what `--verb 4` and up add) are debug, the rest OpenVPN's normal
    /// account of itself.
    public var severity: Severity {
        // Without its class (a line printed before --machine-readable-output was read), only an
        // options error is known for what it is.
        guard let flags else { return message.contains("Options error:") ? .error : .info }
        if flags & (Self.fatal | Self.nonFatal | Self.optionsError) != 0 { return .error }
        if flags & Self.warn != 0 { return .warning }
        return flags & Self.debugLevelMask > 3 ? .debug : .info
    }
}

/// Follows OpenVPN's output from its start, to tell a configuration OpenVPN refuses from any other
/// end: what it printed before it first turned to the network (its options, the files they name,
/// its keys and certificates) is about the configuration; anything later (a TLS error, a tun
/// device it cannot open, a signal) is not. Pure; memory stays bounded whatever OpenVPN prints.
public struct OpenVPNStartWatch: Hashable, Sendable {
    /// Kept: the first "Options error" line, and the last lines before the network.
    static let keptLines = 64

    public private(set) var pastKeyLoading = false
    private var firstOptionsError: String?
    private var recent: [String] = []

    public init() {}

    /// The next message (without OpenVPN's timestamp or flags).
    public mutating func take(_ message: String) {
        guard !pastKeyLoading else { return }
        if OpenVPNOutput.isPastKeyLoading(message) {
            pastKeyLoading = true
            recent = []
            firstOptionsError = nil
            return
        }
        if firstOptionsError == nil, message.contains("Options error:"), !message.hasSuffix("Please correct these errors.") {
            firstOptionsError = message
        }
        recent.append(message)
        if recent.count > Self.keptLines { recent.removeFirst(recent.count - Self.keptLines) }
    }

    /// OpenVPN's reason for stopping before it turned to the network, once its output has ended:
    /// nil when it got past that point, or stopped without saying why (a signal).
    public var configurationError: String? {
        guard !pastKeyLoading else { return nil }
        return OpenVPNOutput.errorLine(in: (firstOptionsError.map { [$0] } ?? []) + recent)
    }
}

private extension String {
    var trimmingSpacesAndColons: String {
        var text = Substring(self)
        while let last = text.last, last == ":" || last == " " { text = text.dropLast() }
        while let first = text.first, first == " " { text = text.dropFirst() }
        return String(text)
    }
}
