import StateMachine

// Shared by the rtnetlink and nf_tables decoders: bounds-checked reading of netlink messages.

// MARK: - Bounds-checked reading

/// A validated struct nlmsghdr: its length covers at least itself and lies within the buffer.
struct NetlinkMessageHeader {
    static let size = 16
    let length: Int
    let type: UInt16
    let flags: UInt16
    let sequence: UInt32
    let portID: UInt32

    init?(_ bytes: [UInt8], at offset: Int) {
        let all = 0 ..< bytes.count
        guard offset >= 0, bytes.count - offset >= Self.size,
              let length = bytes.uint32(at: offset, within: all),
              Int(length) >= Self.size, Int(length) <= bytes.count - offset,
              let type = bytes.uint16(at: offset + 4, within: all),
              let flags = bytes.uint16(at: offset + 6, within: all),
              let sequence = bytes.uint32(at: offset + 8, within: all),
              let portID = bytes.uint32(at: offset + 12, within: all)
        else { return nil }
        self.length = Int(length)
        self.type = type
        self.flags = flags
        self.sequence = sequence
        self.portID = portID
    }
}

/// The struct rtattr TLVs in a range; iteration stops at the first malformed one.
struct NetlinkAttributes: Sequence, IteratorProtocol {
    struct Attribute { let type: UInt16; let payload: Range<Int> }

    private let bytes: [UInt8]
    private var range: Range<Int>

    init(_ bytes: [UInt8], _ range: Range<Int>) {
        self.bytes = bytes
        self.range = range.clamped(to: 0 ..< bytes.count)
    }

    mutating func next() -> Attribute? {
        guard range.count >= 4,
              let length = bytes.uint16(at: range.lowerBound, within: range).map(Int.init),
              let type = bytes.uint16(at: range.lowerBound + 2, within: range),
              length >= 4, length <= range.count
        else { return nil }
        let payload = range.lowerBound + 4 ..< range.lowerBound + length
        let next = Swift.min(range.lowerBound + NetlinkDecoder.align(length), range.upperBound)
        range = next ..< range.upperBound
        // The top two bits are NLA_F_NESTED / NLA_F_NET_BYTEORDER, not part of the type.
        return Attribute(type: type & 0x3fff, payload: payload)
    }
}

extension [UInt8] {
    /// Host-order integers, as netlink sends them; nil unless entirely inside `range`.
    func load<T: FixedWidthInteger>(_: T.Type, at offset: Int, within range: Range<Int>) -> T? {
        let size = MemoryLayout<T>.size
        guard offset >= range.lowerBound, offset <= range.upperBound - size,
              range.lowerBound >= 0, range.upperBound <= count else { return nil }
        return withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
    }

    func uint16(at offset: Int, within range: Range<Int>) -> UInt16? { load(UInt16.self, at: offset, within: range) }
    func uint32(at offset: Int, within range: Range<Int>) -> UInt32? { load(UInt32.self, at: offset, within: range) }
    func int32(at offset: Int, within range: Range<Int>) -> Int32? { load(Int32.self, at: offset, within: range) }

    /// An IPv4 address attribute: exactly four bytes in network order.
    func ipv4(_ payload: Range<Int>) -> IPv4Address? {
        guard payload.count == 4, payload.lowerBound >= 0, payload.upperBound <= count else { return nil }
        return IPv4Address(self[payload.lowerBound], self[payload.lowerBound + 1],
                           self[payload.lowerBound + 2], self[payload.lowerBound + 3])
    }

    /// A NUL-terminated string attribute (the terminator is optional; invalid UTF-8 is repaired).
    func cString(in payload: Range<Int>) -> String? {
        guard payload.lowerBound >= 0, payload.upperBound <= count else { return nil }
        let slice = self[payload]
        let end = slice.firstIndex(of: 0) ?? slice.endIndex
        return String(decoding: slice[..<end], as: UTF8.self)
    }
}
