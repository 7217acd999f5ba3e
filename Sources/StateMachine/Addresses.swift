/// An IPv4 address held in host order; `description` is the dotted quad.
public struct IPv4Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses a strict dotted quad: four decimal octets, no leading zeros, nothing else.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var result: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  !(part.count > 1 && part.first == "0"),
                  let octet = UInt8(part) else { return nil }
            result = result << 8 | UInt32(octet)
        }
        value = result
    }

    /// The four octets in network order.
    public var octets: [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
    }

    public var description: String { octets.map(String.init).joined(separator: ".") }

    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.value < rhs.value }
}

/// An address with a prefix length, as in `172.22.0.1/24`: the gateway address and its subnet.
public struct IPv4Interface: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var prefixLength: Int

    public init(address: IPv4Address, prefixLength: Int) {
        precondition((0...32).contains(prefixLength))
        self.address = address
        self.prefixLength = prefixLength
    }

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4Address(parts[0]),
              (1...2).contains(parts[1].count), parts[1].allSatisfy({ $0.isASCII && $0.isNumber }),
              !(parts[1].count > 1 && parts[1].first == "0"),
              let prefix = Int(parts[1]), (0...32).contains(prefix) else { return nil }
        self.init(address: address, prefixLength: prefix)
    }

    public var network: IPv4Network { IPv4Network(containing: address, prefixLength: prefixLength) }
    public var description: String { "\(address)/\(prefixLength)" }
}

/// A subnet: a network address (host bits zero) and a prefix length.
public struct IPv4Network: Hashable, Sendable, CustomStringConvertible {
    public let address: IPv4Address
    public let prefixLength: Int

    public init(containing address: IPv4Address, prefixLength: Int) {
        precondition((0...32).contains(prefixLength))
        self.prefixLength = prefixLength
        self.address = IPv4Address(address.value & IPv4Network.mask(prefixLength))
    }

    public var mask: UInt32 { IPv4Network.mask(prefixLength) }

    public func contains(_ other: IPv4Address) -> Bool { other.value & mask == address.value }

    public var description: String { "\(address)/\(prefixLength)" }

    static func mask(_ prefixLength: Int) -> UInt32 {
        prefixLength == 0 ? 0 : UInt32.max << UInt32(32 - prefixLength)
    }
}

public enum TransportProtocol: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case udp, tcp
    public var description: String { rawValue }
}

/// Where OpenVPN's transport goes: the only traffic the WAN may carry.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var port: UInt16
    public var transport: TransportProtocol

    public init(address: IPv4Address, port: UInt16, transport: TransportProtocol) {
        self.address = address
        self.port = port
        self.transport = transport
    }

    public var description: String { "\(address):\(port)/\(transport)" }
}
