/// An IPv6 address, for what a wg-quick file may name in IPv6 (Address, DNS, AllowedIPs, Endpoint).
/// The router carries no IPv6 yet: these are parsed so they can be named and refused or ignored
/// precisely, not routed.
public struct IPv6Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// RFC 4291 text: eight groups of 1-4 hex digits, one `::` for a run of zero groups, and an
    /// IPv4 dotted quad in the last 32 bits. No zone (`%eth0`), no brackets.
    public init?(_ text: some StringProtocol) {
        let text = String(text)
        guard !text.isEmpty, text.utf8.count <= 45, text.utf8.allSatisfy({ $0 < 0x80 }) else { return nil }
        let halves = text.components(separatedByDoubleColon: ())
        guard halves.count <= 2 else { return nil }
        func groups(_ part: Substring, allowIPv4Tail: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            var result: [UInt16] = []
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            for (index, piece) in pieces.enumerated() {
                if index == pieces.count - 1, allowIPv4Tail, piece.contains("."), let v4 = IPv4Address(piece) {
                    result += [UInt16(v4.value >> 16), UInt16(v4.value & 0xffff)]
                    continue
                }
                guard (1...4).contains(piece.count), piece.allSatisfy(\.isHexDigit),
                      let value = UInt16(piece, radix: 16) else { return nil }
                result.append(value)
            }
            return result
        }
        var words: [UInt16]
        if halves.count == 2 {
            guard let head = groups(halves[0], allowIPv4Tail: false),
                  let tail = groups(halves[1], allowIPv4Tail: true),
                  head.count + tail.count <= 7 else { return nil }
            words = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard let all = groups(halves[0], allowIPv4Tail: true), all.count == 8 else { return nil }
            words = all
        }
        high = words[0..<4].reduce(0) { $0 << 16 | UInt64($1) }
        low = words[4..<8].reduce(0) { $0 << 16 | UInt64($1) }
    }

    var words: [UInt16] {
        (0..<4).map { UInt16(truncatingIfNeeded: high >> (48 - 16 * UInt64($0))) }
            + (0..<4).map { UInt16(truncatingIfNeeded: low >> (48 - 16 * UInt64($0))) }
    }

    /// RFC 5952: lower case, no leading zeros, the longest run of two or more zero groups (the
    /// first of equals) as `::`.
    public var description: String {
        let words = words
        var bestStart = -1, bestLength = 0, start = -1
        for index in 0...8 {
            if index < 8, words[index] == 0 {
                if start < 0 { start = index }
            } else if start >= 0 {
                if index - start > bestLength, index - start >= 2 { bestStart = start; bestLength = index - start }
                start = -1
            }
        }
        func hex(_ range: Range<Int>) -> String { range.map { String(words[$0], radix: 16) }.joined(separator: ":") }
        guard bestStart >= 0 else { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }

    public static func < (lhs: IPv6Address, rhs: IPv6Address) -> Bool { (lhs.high, lhs.low) < (rhs.high, rhs.low) }
}

extension String {
    /// Splits at each `::` (at most the first two halves matter; a third means a second `::`).
    fileprivate func components(separatedByDoubleColon _: ()) -> [Substring] {
        var result: [Substring] = []
        var rest = self[...]
        while let range = rest.firstRange(of: "::") {
            result.append(rest[..<range.lowerBound])
            rest = rest[range.upperBound...]
        }
        result.append(rest)
        return result
    }
}

/// An IPv6 subnet: host bits zero.
public struct IPv6Network: Hashable, Sendable, CustomStringConvertible {
    public let address: IPv6Address
    public let prefixLength: Int

    public init(containing address: IPv6Address, prefixLength: Int) {
        precondition((0...128).contains(prefixLength))
        self.prefixLength = prefixLength
        let highMask: UInt64 = prefixLength >= 64 ? .max : (prefixLength == 0 ? 0 : .max << UInt64(64 - prefixLength))
        let lowMask: UInt64 = prefixLength <= 64 ? 0 : (prefixLength == 128 ? .max : .max << UInt64(128 - prefixLength))
        self.address = IPv6Address(high: address.high & highMask, low: address.low & lowMask)
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

/// An AllowedIPs entry: an IPv4 or IPv6 network, host bits cleared as WireGuard itself does.
public enum WireGuardPrefix: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Network)
    case v6(IPv6Network)

    /// `10.0.0.0/8`, `::/0`; an address without a length is a host (/32, /128), as `wg` takes it.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else { return nil }
        var length: Int?
        if parts.count == 2 {
            let digits = parts[1]
            guard (1...3).contains(digits.count), digits.allSatisfy({ $0.isASCII && $0.isNumber }),
                  !(digits.count > 1 && digits.first == "0"), let value = Int(digits) else { return nil }
            length = value
        }
        if let v4 = IPv4Address(parts[0]) {
            guard (0...32).contains(length ?? 32) else { return nil }
            self = .v4(IPv4Network(containing: v4, prefixLength: length ?? 32))
        } else if let v6 = IPv6Address(parts[0]) {
            guard (0...128).contains(length ?? 128) else { return nil }
            self = .v6(IPv6Network(containing: v6, prefixLength: length ?? 128))
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .v4(let network): network.description
        case .v6(let network): network.description
        }
    }
}

/// An [Interface] Address: the tunnel's own address with its prefix length (host bits kept).
public enum WireGuardAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Interface)
    case v6(IPv6Address, prefixLength: Int)

    /// `10.64.0.2/32`, `fc00::2/128`; without a length a host address, as `ip addr add` takes it.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2 else { return nil }
        var length: Int?
        if parts.count == 2 {
            let digits = parts[1]
            guard (1...3).contains(digits.count), digits.allSatisfy({ $0.isASCII && $0.isNumber }),
                  !(digits.count > 1 && digits.first == "0"), let value = Int(digits) else { return nil }
            length = value
        }
        if let v4 = IPv4Address(parts[0]) {
            guard (0...32).contains(length ?? 32) else { return nil }
            self = .v4(IPv4Interface(address: v4, prefixLength: length ?? 32))
        } else if let v6 = IPv6Address(parts[0]) {
            guard (0...128).contains(length ?? 128) else { return nil }
            self = .v6(v6, prefixLength: length ?? 128)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .v4(let interface): interface.description
        case .v6(let address, let length): "\(address)/\(length)"
        }
    }
}
