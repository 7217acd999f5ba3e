import StateMachine

// The DNS wire format vpnsup's resolver needs (RFC 1035): one A question out, the A records of the
// answer (following CNAMEs) back. Pure Swift, no I/O, so it is unit-tested byte for byte.

/// What a nameserver answered to one A query.
public struct DNSResponse: Hashable, Sendable {
    /// TC: the answer did not fit a UDP datagram; ask again over TCP.
    public var truncated: Bool
    /// RCODE: 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED...
    public var responseCode: UInt8
    /// The IPv4 addresses of the name (or of the name its CNAME chain ends at), in answer order.
    public var addresses: [IPv4Address]

    public init(truncated: Bool, responseCode: UInt8, addresses: [IPv4Address]) {
        self.truncated = truncated
        self.responseCode = responseCode
        self.addresses = addresses
    }

    public static let noError: UInt8 = 0
    public static let serverFailure: UInt8 = 2
    public static let nameError: UInt8 = 3

    /// The RCODE's name, for logs.
    public var responseCodeName: String {
        switch responseCode {
        case 0: "NOERROR"
        case 1: "FORMERR"
        case 2: "SERVFAIL"
        case 3: "NXDOMAIN"
        case 4: "NOTIMP"
        case 5: "REFUSED"
        default: "RCODE \(responseCode)"
        }
    }
}

public enum DNSMessage {
    static let typeA: UInt16 = 1
    static let typeCNAME: UInt16 = 5
    static let classIN: UInt16 = 1
    /// Links followed in a CNAME chain before giving up (resolvers normally flatten chains anyway).
    static let maximumChain = 16

    /// A standard query for the A records of `name`, recursion desired. Nil when `name` is not a
    /// DNS name: an empty label, a label over 63 bytes, or over 255 bytes in all.
    public static func query(id: UInt16, name: String) -> [UInt8]? {
        guard let encoded = encode(name) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(12 + encoded.count + 4)
        append(id, to: &bytes)
        append(0x0100, to: &bytes) // RD
        append(1, to: &bytes)      // QDCOUNT
        append(0, to: &bytes)      // ANCOUNT
        append(0, to: &bytes)      // NSCOUNT
        append(0, to: &bytes)      // ARCOUNT
        bytes += encoded
        append(typeA, to: &bytes)
        append(classIN, to: &bytes)
        return bytes
    }

    /// The wire form of `name` (labels, then the root's zero byte). A trailing dot is allowed.
    static func encode(_ name: String) -> [UInt8]? {
        var text = Substring(name)
        if text.hasSuffix(".") { text = text.dropLast() }
        guard !text.isEmpty else { return nil }
        var bytes: [UInt8] = []
        for label in text.split(separator: ".", omittingEmptySubsequences: false) {
            let utf8 = Array(label.utf8)
            guard (1...63).contains(utf8.count) else { return nil }
            bytes.append(UInt8(utf8.count))
            bytes += utf8
        }
        bytes.append(0)
        return bytes.count <= 255 ? bytes : nil
    }

    /// Parses `bytes` as the answer to the A query `id` for `name`. Nil when it is not that answer
    /// (another id, not a response, another question) or is malformed: the caller keeps waiting.
    public static func response(_ bytes: [UInt8], id: UInt16, name: String) -> DNSResponse? {
        var reader = Reader(bytes: bytes)
        guard let answerID = reader.u16(), answerID == id,
              let flags = reader.u16(),
              flags & 0x8000 != 0,          // QR: a response
              (flags >> 11) & 0xf == 0,     // OPCODE: QUERY
              let questions = reader.u16(), let answers = reader.u16(),
              reader.u16() != nil, reader.u16() != nil else { return nil }
        let truncated = flags & 0x0200 != 0
        let code = UInt8(flags & 0xf)
        guard let wanted = encode(name).flatMap({ Self.name(in: $0, at: 0)?.name }) else { return nil }
        switch questions {
        case 1:
            guard let question = reader.name(), question == wanted,
                  reader.u16() == typeA, reader.u16() == classIN else { return nil }
        case 0 where code != noErrorCode || truncated:
            // Some servers leave the question out of an error; the id is all there is to match.
            return DNSResponse(truncated: truncated, responseCode: code, addresses: [])
        default:
            return nil
        }
        if truncated { return DNSResponse(truncated: true, responseCode: code, addresses: []) }

        var addresses: [(owner: String, address: IPv4Address)] = []
        var aliases: [String: String] = [:]
        for _ in 0..<answers {
            guard let owner = reader.name(), let type = reader.u16(), let rrClass = reader.u16(),
                  reader.u32() != nil, let length = reader.u16(),
                  let dataStart = reader.skip(Int(length)) else { return nil }
            guard rrClass == classIN else { continue }
            if type == typeA, length == 4 {
                let d = dataStart
                addresses.append((owner, IPv4Address(bytes[d], bytes[d + 1], bytes[d + 2], bytes[d + 3])))
            } else if type == typeCNAME {
                guard let target = Self.name(in: bytes, at: dataStart), target.end <= dataStart + Int(length) else { return nil }
                aliases[owner] = target.name
            }
        }
        // The addresses of the name, or of where its CNAME chain leads.
        var owners: Set<String> = [wanted]
        var current = wanted
        for _ in 0..<maximumChain {
            guard let next = aliases[current], owners.insert(next).inserted else { break }
            current = next
        }
        var result: [IPv4Address] = []
        for (owner, address) in addresses where owners.contains(owner) && !result.contains(address) {
            result.append(address)
        }
        return DNSResponse(truncated: false, responseCode: code, addresses: result)
    }

    private static let noErrorCode = DNSResponse.noError

    /// Reads a possibly compressed name at `offset`: its lower-cased dotted form and where the
    /// name ends in place (after the first pointer, if any). Nil when malformed or looping.
    static func name(in bytes: [UInt8], at offset: Int) -> (name: String, end: Int)? {
        var labels: [String] = []
        var position = offset
        var end: Int?
        var length = 0
        var jumps = 0
        while true {
            guard position < bytes.count else { return nil }
            let byte = bytes[position]
            switch byte & 0xc0 {
            case 0x00:
                if byte == 0 {
                    return (labels.joined(separator: "."), end ?? position + 1)
                }
                let count = Int(byte)
                guard position + 1 + count <= bytes.count else { return nil }
                length += count + 1
                guard length <= 255 else { return nil }
                let label = String(decoding: bytes[(position + 1)..<(position + 1 + count)], as: UTF8.self)
                labels.append(asciiLowercased(label))
                position += 1 + count
            case 0xc0:
                guard position + 1 < bytes.count else { return nil }
                jumps += 1
                // A pointer must go backwards; bounding the jumps also stops any loop.
                let target = Int(byte & 0x3f) << 8 | Int(bytes[position + 1])
                guard jumps <= 64, target < position else { return nil }
                if end == nil { end = position + 2 }
                position = target
            default:
                return nil // 0x40 and 0x80 label types are obsolete or unassigned
            }
        }
    }

    /// DNS compares names case-insensitively in ASCII only (RFC 4343).
    static func asciiLowercased(_ text: String) -> String {
        String(decoding: text.utf8.map { (0x41...0x5a).contains($0) ? $0 + 0x20 : $0 }, as: UTF8.self)
    }

    private static func append(_ value: UInt16, to bytes: inout [UInt8]) {
        bytes.append(UInt8(value >> 8))
        bytes.append(UInt8(value & 0xff))
    }

    /// Reads big-endian fields and names from a message; every read is bounds-checked.
    struct Reader {
        let bytes: [UInt8]
        var position = 0

        mutating func u16() -> UInt16? {
            guard position + 2 <= bytes.count else { return nil }
            defer { position += 2 }
            return UInt16(bytes[position]) << 8 | UInt16(bytes[position + 1])
        }

        mutating func u32() -> UInt32? {
            guard let high = u16(), let low = u16() else { return nil }
            return UInt32(high) << 16 | UInt32(low)
        }

        /// Skips `count` bytes; returns where they started.
        mutating func skip(_ count: Int) -> Int? {
            guard position + count <= bytes.count else { return nil }
            defer { position += count }
            return position
        }

        mutating func name() -> String? {
            guard let (name, end) = DNSMessage.name(in: bytes, at: position) else { return nil }
            position = end
            return name
        }
    }
}

/// Reads the system's nameservers from resolv.conf(5).
public enum ResolvConf {
    public static let path = "/etc/resolv.conf"
    /// glibc uses the first three `nameserver` lines (MAXNS).
    public static let maximumNameservers = 3
    /// What glibc queries when resolv.conf names no nameserver.
    public static let defaultNameserver = IPv4Address(127, 0, 0, 1)

    /// The IPv4 addresses among the first three `nameserver` lines, in order. IPv6 nameservers
    /// are left out: the WAN carries no IPv6. A file with no `nameserver` line at all means the
    /// local host, as for glibc.
    public static func nameservers(in text: String) -> [IPv4Address] {
        var listed: [Substring] = []
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" || $0 == "\r\n" }) {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2, words[0] == "nameserver" else { continue }
            listed.append(words[1])
        }
        if listed.isEmpty { return [defaultNameserver] }
        var servers: [IPv4Address] = []
        for word in listed.prefix(maximumNameservers) {
            if let address = IPv4Address(word), !servers.contains(address) { servers.append(address) }
        }
        return servers
    }
}
