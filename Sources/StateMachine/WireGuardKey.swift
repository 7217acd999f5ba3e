/// A WireGuard public key: 32 bytes, written as base64 in wg-quick files and as hex over UAPI.
/// Public keys are not secrets: status and logs may show them.
public struct WireGuardKey: Hashable, Sendable, CustomStringConvertible {
    public static let byteCount = 32

    /// Exactly 32 bytes.
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = bytes
    }

    /// The base64 form `wg` writes and reads: 44 characters, the last one `=`, and the unused low
    /// bits of the 43rd zero (the only spelling `wg` accepts for a key).
    public init?(base64 text: some StringProtocol) {
        guard let bytes = WireGuardBase64.decodeKey(text) else { return nil }
        self.bytes = bytes
    }

    public var base64: String { WireGuardBase64.encode(bytes) }
    /// Lower-case hex, as UAPI's `public_key=` carries it.
    public var hex: String { WireGuardBase64.hex(bytes) }
    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    public var description: String { base64 }
}

/// A private or preshared key. Its text forms are only for the UAPI request and for tests; it
/// prints as a placeholder wherever it is interpolated, dumped or reflected, so no log line, error
/// or test failure can show it by accident.
public struct WireGuardSecret: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable {
    public let key: WireGuardKey

    public init(_ key: WireGuardKey) { self.key = key }

    public init?(base64 text: some StringProtocol) {
        guard let key = WireGuardKey(base64: text) else { return nil }
        self.key = key
    }

    public var description: String { "(secret)" }
    public var debugDescription: String { "(secret)" }
    public var customMirror: Mirror { Mirror(self, children: [:]) }
}

/// Base64 and hex for keys, written here so the pure core needs no Foundation.
enum WireGuardBase64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    private static func value(of byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): UInt32(byte - UInt8(ascii: "A"))
        case UInt8(ascii: "a")...UInt8(ascii: "z"): UInt32(byte - UInt8(ascii: "a") + 26)
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(byte - UInt8(ascii: "0") + 52)
        case UInt8(ascii: "+"): 62
        case UInt8(ascii: "/"): 63
        default: nil
        }
    }

    /// 44 characters: ten groups of four (30 bytes), then three characters carrying the last two
    /// bytes and two spare bits that must be zero, then `=`.
    static func decodeKey(_ text: some StringProtocol) -> [UInt8]? {
        let characters = Array(text.utf8)
        guard characters.count == 44, characters[43] == UInt8(ascii: "=") else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(WireGuardKey.byteCount)
        for group in 0..<10 {
            var word: UInt32 = 0
            for index in 0..<4 {
                guard let sextet = value(of: characters[group * 4 + index]) else { return nil }
                word = word << 6 | sextet
            }
            bytes += [UInt8(word >> 16), UInt8(word >> 8 & 0xff), UInt8(word & 0xff)]
        }
        var tail: UInt32 = 0
        for index in 40..<43 {
            guard let sextet = value(of: characters[index]) else { return nil }
            tail = tail << 6 | sextet
        }
        guard tail & 0b11 == 0 else { return nil }
        bytes += [UInt8(tail >> 10), UInt8(tail >> 2 & 0xff)]
        return bytes
    }

    static func encode(_ bytes: [UInt8]) -> String {
        var output: [UInt8] = []
        var index = 0
        while index < bytes.count {
            let chunk = Array(bytes[index..<min(index + 3, bytes.count)])
            let word = chunk.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (16 - 8 * UInt32($1.offset)) }
            for position in 0..<4 {
                if position <= chunk.count {
                    output.append(alphabet[Int(word >> (18 - 6 * UInt32(position)) & 0x3f)])
                } else {
                    output.append(UInt8(ascii: "="))
                }
            }
            index += 3
        }
        return String(decoding: output, as: UTF8.self)
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            output.append(digits[Int(byte >> 4)])
            output.append(digits[Int(byte & 0xf)])
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// 64 hex digits (either case) -> 32 bytes.
    static func decodeHexKey(_ text: some StringProtocol) -> [UInt8]? {
        let characters = Array(text.utf8)
        guard characters.count == 2 * WireGuardKey.byteCount else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(WireGuardKey.byteCount)
        for index in stride(from: 0, to: characters.count, by: 2) {
            guard let high = nibble(characters[index]), let low = nibble(characters[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }
}

extension WireGuardKey {
    /// From UAPI's hex form (`public_key=` in a `get` answer).
    public init?(hex text: some StringProtocol) {
        guard let bytes = WireGuardBase64.decodeHexKey(text) else { return nil }
        self.bytes = bytes
    }
}
