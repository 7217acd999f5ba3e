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

private extension String {
    var trimmingSpacesAndColons: String {
        var text = Substring(self)
        while let last = text.last, last == ":" || last == " " { text = text.dropLast() }
        while let first = text.first, first == " " { text = text.dropFirst() }
        return String(text)
    }
}
