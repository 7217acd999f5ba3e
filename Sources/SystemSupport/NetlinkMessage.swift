import CNetlink

// The one netlink message codec: every rtnetlink and nfnetlink user reads and builds messages
// here. Reading is pure and checks every length before trusting it, so arbitrary bytes yield
// messages or nothing, never a trap (the fuzz targets feed it garbage).

// MARK: - Reading

/// A validated struct nlmsghdr: its length covers at least itself and lies within the buffer.
public struct NetlinkMessageHeader: Sendable, Equatable {
    public static let size = 16
    public let length: Int
    public let type: UInt16
    public let flags: UInt16
    public let sequence: UInt32
    public let portID: UInt32

    public init?(_ bytes: [UInt8], at offset: Int) {
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

/// The messages of a buffer (a datagram holds one or more), in order. Iteration stops at the
/// first malformed header: a length that lies leaves nothing after it trustworthy.
public struct NetlinkMessages: Sequence, IteratorProtocol {
    public struct Message: Sendable, Equatable {
        public let header: NetlinkMessageHeader
        /// Where the message starts in the buffer.
        public let offset: Int
        /// The bytes after the header.
        public var body: Range<Int> { offset + NetlinkMessageHeader.size ..< offset + header.length }
    }

    private let bytes: [UInt8]
    private var offset = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public mutating func next() -> Message? {
        guard let header = NetlinkMessageHeader(bytes, at: offset) else { return nil }
        defer { offset += netlinkAligned(header.length) }
        return Message(header: header, offset: offset)
    }
}

/// The struct nlattr (rtattr) TLVs in a range; iteration stops at the first malformed one.
public struct NetlinkAttributes: Sequence, IteratorProtocol {
    public struct Attribute: Sendable, Equatable {
        public let type: UInt16
        public let payload: Range<Int>
    }

    private let bytes: [UInt8]
    private var range: Range<Int>

    public init(_ bytes: [UInt8], _ range: Range<Int>) {
        self.bytes = bytes
        self.range = range.clamped(to: 0 ..< bytes.count)
    }

    public mutating func next() -> Attribute? {
        guard range.count >= 4,
              let length = bytes.uint16(at: range.lowerBound, within: range).map(Int.init),
              let type = bytes.uint16(at: range.lowerBound + 2, within: range),
              length >= 4, length <= range.count
        else { return nil }
        let payload = range.lowerBound + 4 ..< range.lowerBound + length
        let next = Swift.min(range.lowerBound + netlinkAligned(length), range.upperBound)
        range = next ..< range.upperBound
        // The top two bits are NLA_F_NESTED / NLA_F_NET_BYTEORDER, not part of the type.
        return Attribute(type: type & 0x3fff, payload: payload)
    }
}

/// NLMSG_ALIGN / NLA_ALIGN: messages and attributes start on 4-byte boundaries.
public func netlinkAligned(_ length: Int) -> Int { (length + 3) & ~3 }

extension [UInt8] {
    /// Host-order integers, as netlink sends them; nil unless entirely inside `range`.
    public func load<T: FixedWidthInteger>(_: T.Type, at offset: Int, within range: Range<Int>) -> T? {
        let size = MemoryLayout<T>.size
        guard offset >= range.lowerBound, offset <= range.upperBound - size,
              range.lowerBound >= 0, range.upperBound <= count else { return nil }
        return withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
    }

    public func uint16(at offset: Int, within range: Range<Int>) -> UInt16? { load(UInt16.self, at: offset, within: range) }
    public func uint32(at offset: Int, within range: Range<Int>) -> UInt32? { load(UInt32.self, at: offset, within: range) }
    public func int32(at offset: Int, within range: Range<Int>) -> Int32? { load(Int32.self, at: offset, within: range) }
    public func uint64(at offset: Int, within range: Range<Int>) -> UInt64? { load(UInt64.self, at: offset, within: range) }

    /// A host-order integer attribute of exactly its size.
    public func exactly<T: FixedWidthInteger>(_: T.Type, _ payload: Range<Int>) -> T? {
        guard payload.count == MemoryLayout<T>.size else { return nil }
        return load(T.self, at: payload.lowerBound, within: payload)
    }

    /// An integer attribute in network order (nf_tables sends its numbers so): exactly its size.
    public func bigEndian<T: FixedWidthInteger>(_: T.Type, _ payload: Range<Int>) -> T? {
        guard payload.count == MemoryLayout<T>.size else { return nil }
        return load(T.self, at: payload.lowerBound, within: payload).map(T.init(bigEndian:))
    }

    /// A NUL-terminated string attribute (the terminator is optional; invalid UTF-8 is repaired).
    public func cString(in payload: Range<Int>) -> String? {
        guard payload.lowerBound >= 0, payload.upperBound <= count else { return nil }
        let slice = self[payload]
        let end = slice.firstIndex(of: 0) ?? slice.endIndex
        return String(decoding: slice[..<end], as: UTF8.self)
    }
}

// MARK: - Answers

/// The kernel's answer to a request: an NLMSG_ERROR message (errno 0 is a plain ACK), with the
/// extended-ACK text and missing attribute when the kernel gave them.
public struct NetlinkAck: Sendable, Equatable {
    public var errno: Int32
    public var message: String?
    /// NLMSGERR_ATTR_MISS_TYPE: the type of a required attribute the request lacked.
    public var missingAttribute: Int?

    public init(errno: Int32, message: String? = nil, missingAttribute: Int? = nil) {
        self.errno = errno
        self.message = message
        self.missingAttribute = missingAttribute
    }

    /// Decodes `message`, which must be an NLMSG_ERROR of `bytes`; nil for anything else or a
    /// body too short to hold an errno.
    public init?(_ bytes: [UInt8], _ message: NetlinkMessages.Message) {
        let body = message.body
        guard message.header.type == UInt16(NLMSG_ERROR),
              let code = bytes.int32(at: body.lowerBound, within: body) else { return nil }
        self.init(errno: 0 &- code)  // &-: Int32.min must not trap
        let flags = message.header.flags
        guard flags & UInt16(NLM_F_ACK_TLVS) != 0 else { return }
        // After struct nlmsgerr's errno comes our request's header, and its payload too unless
        // the kernel capped the echo (NETLINK_CAP_ACK).
        var echoed = NetlinkMessageHeader.size
        if flags & UInt16(NLM_F_CAPPED) == 0, let requestLength = bytes.uint32(at: body.lowerBound + 4, within: body) {
            echoed = Swift.max(echoed, Int(requestLength))
        }
        let start = body.lowerBound + 4 + netlinkAligned(echoed)
        guard start <= body.upperBound else { return }
        for attribute in NetlinkAttributes(bytes, start ..< body.upperBound) {
            switch UInt32(attribute.type) {
            case NLMSGERR_ATTR_MSG.rawValue:
                self.message = bytes.cString(in: attribute.payload)
            case NLMSGERR_ATTR_MISS_TYPE.rawValue:
                self.missingAttribute = bytes.uint32(at: attribute.payload.lowerBound, within: attribute.payload).map(Int.init)
            default:
                break
            }
        }
    }

    /// The answer to request `sequence` from port `portID` in a buffer of messages, if it is there.
    public static func parse(_ bytes: [UInt8], sequence: UInt32, portID: UInt32) -> NetlinkAck? {
        for message in NetlinkMessages(bytes)
        where message.header.sequence == sequence && message.header.portID == portID {
            if let ack = NetlinkAck(bytes, message) { return ack }
        }
        return nil
    }
}

// MARK: - Building

/// One netlink request under construction: the header, a fixed family header (ifinfomsg,
/// ifaddrmsg, rtmsg, ...) and attributes, each padded to 4 bytes, the length kept up to date.
public struct NetlinkRequest: Sendable {
    public private(set) var bytes: [UInt8]

    public init(type: UInt16, flags: UInt16) {
        bytes = [UInt8](repeating: 0, count: NetlinkMessageHeader.size)
        store(UInt16(type), at: 4)
        store(UInt16(flags), at: 6)
        updateLength()
    }

    public var sequence: UInt32 {
        get { bytes.uint32(at: 8, within: 0 ..< bytes.count) ?? 0 }
        set { store(newValue, at: 8) }
    }

    /// Appends a fixed C header such as `ifinfomsg`, as the kernel lays it out.
    public mutating func append<Header>(_ header: Header) {
        withUnsafeBytes(of: header) { bytes += $0 }
        pad()
    }

    public mutating func appendAttribute(_ type: UInt16, _ value: UInt32) {
        appendAttribute(type, payload: withUnsafeBytes(of: value) { Array($0) })
    }

    public mutating func appendAttribute(_ type: UInt16, u64 value: UInt64) {
        appendAttribute(type, payload: withUnsafeBytes(of: value) { Array($0) })
    }

    public mutating func appendAttribute(_ type: UInt16, u16 value: UInt16) {
        appendAttribute(type, payload: withUnsafeBytes(of: value) { Array($0) })
    }

    public mutating func appendAttribute(_ type: UInt16, u8 value: UInt8) {
        appendAttribute(type, payload: [value])
    }

    /// An attribute whose payload is `bytes` as given (a hardware address).
    public mutating func appendAttribute(_ type: UInt16, bytes value: [UInt8]) {
        appendAttribute(type, payload: value)
    }

    /// A NUL-terminated string attribute.
    public mutating func appendAttribute(_ type: UInt16, string: String) {
        appendAttribute(type, payload: Array(string.utf8) + [0])
    }

    /// A nested attribute (IFLA_LINKINFO, IFLA_INFO_DATA): what `contents` appends is its payload.
    /// Its type carries NLA_F_NESTED, as libmnl and iproute2 send it.
    public mutating func appendNested(_ type: UInt16, _ contents: (inout NetlinkRequest) -> Void) {
        let start = bytes.count
        bytes += [UInt8](repeating: 0, count: 4)
        store(type | UInt16(NLA_F_NESTED), at: start + 2)
        contents(&self)
        store(UInt16(bytes.count - start), at: start)
        updateLength()
    }

    private mutating func appendAttribute(_ type: UInt16, payload: [UInt8]) {
        let start = bytes.count
        bytes += [UInt8](repeating: 0, count: 4)
        store(UInt16(4 + payload.count), at: start)
        store(type, at: start + 2)
        bytes += payload
        pad()
    }

    private mutating func pad() {
        bytes += [UInt8](repeating: 0, count: netlinkAligned(bytes.count) - bytes.count)
        updateLength()
    }

    private mutating func updateLength() { store(UInt32(bytes.count), at: 0) }

    private mutating func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeBytes(of: value) { bytes.replaceSubrange(offset ..< offset + $0.count, with: $0) }
    }
}
