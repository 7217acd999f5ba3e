/// A `remote` of an OpenVPN configuration, as written: `host` may be an address or a name.
public struct Remote: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    public var transport: TransportProtocol

    public init(host: String, port: UInt16, transport: TransportProtocol) {
        self.host = host
        self.port = port
        self.transport = transport
    }

    public var description: String { "\(host):\(port)/\(transport)" }

    /// The endpoint, when `host` is an IPv4 literal.
    public var endpoint: Endpoint? {
        IPv4Address(host).map { Endpoint(address: $0, port: port, transport: transport) }
    }
}

/// Reads what the firewall needs from an OpenVPN client configuration: its remotes.
public enum OpenVPNConfigFile {
    /// Every `remote` line, top level and inside `<connection>` blocks, with the `port`/`rport`/`proto`
    /// defaults OpenVPN would apply (1194, udp). Inline files (`<ca>` ...) are skipped.
    public static func remotes(in text: String) -> [Remote] {
        var globalPort: UInt16 = 1194
        var globalTransport: TransportProtocol = .udp
        // Remotes whose port or protocol was not given keep `nil` until the defaults are known,
        // since `port`/`proto` may follow the `remote` line.
        var pending: [(host: String, port: UInt16?, transport: TransportProtocol?, blockPort: UInt16?, blockTransport: TransportProtocol?)] = []
        var inlineTag: String?
        var block: (port: UInt16?, transport: TransportProtocol?, start: Int)?

        for rawLine in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" || $0 == "\r\n" }) {
            let line = rawLine.drop(while: { $0 == " " || $0 == "\t" })
            if let tag = inlineTag {
                if line.lowercased().hasPrefix("</\(tag)>") { inlineTag = nil }
                continue
            }
            if line.hasPrefix("#") || line.hasPrefix(";") || line.isEmpty { continue }
            if line.hasPrefix("<") {
                let tag = line.dropFirst().prefix(while: { $0 != ">" }).lowercased()
                if tag == "connection" {
                    block = (nil, nil, pending.count)
                } else if tag == "/connection" {
                    if let b = block {
                        for i in b.start..<pending.count {
                            pending[i].blockPort = b.port
                            pending[i].blockTransport = b.transport
                        }
                    }
                    block = nil
                } else if !tag.hasPrefix("/") {
                    inlineTag = tag
                }
                continue
            }
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let directive = words.first?.lowercased() else { continue }
            switch directive {
            case "remote" where words.count >= 2:
                let port = words.count >= 3 ? portNumber(words[2]) : nil
                if words.count >= 3 && port == nil { continue } // unusable: OpenVPN rejects it too
                let transport = words.count >= 4 ? transportName(words[3]) : nil
                let host = unquoted(words[1])
                // `remote ""` names no host: nothing to pin or resolve (found by FuzzOpenVPNConfig).
                if host.isEmpty { continue }
                pending.append((host, port, transport, nil, nil))
            case "port", "rport":
                guard words.count >= 2, let port = portNumber(words[1]) else { continue }
                if block != nil { block?.port = port } else { globalPort = port }
            case "proto":
                guard words.count >= 2, let transport = transportName(words[1]) else { continue }
                if block != nil { block?.transport = transport } else { globalTransport = transport }
            default:
                continue
            }
        }
        return pending.map {
            Remote(host: $0.host,
                   port: $0.port ?? $0.blockPort ?? globalPort,
                   transport: $0.transport ?? $0.blockTransport ?? globalTransport)
        }
    }

    private static func portNumber(_ text: String) -> UInt16? {
        guard let value = UInt16(text), value > 0 else { return nil }
        return value
    }

    private static func transportName(_ text: String) -> TransportProtocol? {
        switch text.lowercased() {
        case "udp", "udp4", "udp6": .udp
        case "tcp", "tcp4", "tcp6", "tcp-client", "tcp4-client", "tcp6-client": .tcp
        default: nil
        }
    }

    private static func unquoted(_ text: String) -> String {
        if text.count >= 2, text.first == "\"" || text.first == "'", text.last == text.first {
            return String(text.dropFirst().dropLast())
        }
        return text
    }
}
