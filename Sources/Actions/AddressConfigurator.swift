import CMnl
import Glibc
import StateMachine

/// Puts addresses on interfaces and brings links up, over rtnetlink. Each call is one short
/// request/ACK exchange on its own socket (these are rare, so holding a socket buys nothing).
/// The calls block only for that round trip, bounded by a receive timeout.
public struct AddressConfigurator: Sendable {
    public init() {}

    /// RTM_NEWADDR with IFA_LOCAL, IFA_ADDRESS and IFA_BROADCAST. Idempotent: the kernel's EEXIST
    /// (that address with that prefix is already there) counts as success.
    public func ensureAddress(_ address: IPv4Interface, on interface: String) throws {
        let operation = "add \(address) to \(interface)"
        let index = try Self.index(of: interface, operation: operation)
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: [EEXIST]) { header in
            header.pointee.nlmsg_type = UInt16(RTM_NEWADDR)
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<ifaddrmsg>.size)!
                .assumingMemoryBound(to: ifaddrmsg.self)
            message.pointee.ifa_family = UInt8(AF_INET)
            message.pointee.ifa_prefixlen = UInt8(address.prefixLength)
            message.pointee.ifa_scope = UInt8(RT_SCOPE_UNIVERSE.rawValue)
            message.pointee.ifa_index = index
            // Network byte order on the wire.
            mnl_attr_put_u32(header, UInt16(IFA_LOCAL), address.address.value.bigEndian)
            mnl_attr_put_u32(header, UInt16(IFA_ADDRESS), address.address.value.bigEndian)
            // /31 and /32 have no broadcast address (RFC 3021); `ip addr add` omits it there too.
            if address.prefixLength <= 30 {
                let broadcast = address.address.value | ~address.network.mask
                mnl_attr_put_u32(header, UInt16(IFA_BROADCAST), broadcast.bigEndian)
            }
        }
    }

    /// RTM_NEWLINK setting IFF_UP (and changing no other flag). Idempotent.
    public func setLinkUp(_ interface: String) throws {
        let operation = "set \(interface) up"
        let index = try Self.index(of: interface, operation: operation)
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: []) { header in
            header.pointee.nlmsg_type = UInt16(RTM_NEWLINK)
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK)
            let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<ifinfomsg>.size)!
                .assumingMemoryBound(to: ifinfomsg.self)
            message.pointee.ifi_family = UInt8(AF_UNSPEC)
            message.pointee.ifi_index = Int32(bitPattern: index)
            message.pointee.ifi_flags = UInt32(IFF_UP)
            message.pointee.ifi_change = UInt32(IFF_UP)  // the mask of flags this request sets
        }
    }

    // MARK: Policy routing

    /// RTM_NEWROUTE `unreachable default metric 4294967295 table <table>`: the table's last word,
    /// so a packet routed by it never falls through to another table. Idempotent (EEXIST).
    public func ensureUnreachableDefault(table: UInt32) throws {
        let operation = "add unreachable default to table \(table)"
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: [EEXIST]) { header in
            Self.putDefaultRoute(header, table: table, type: UInt8(RTN_UNREACHABLE),
                                 scope: UInt8(RT_SCOPE_UNIVERSE.rawValue))
            mnl_attr_put_u32(header, UInt16(RTA_PRIORITY.rawValue), UInt32.max)
        }
    }

    /// RTM_NEWROUTE `default dev <interface> table <table>` (metric 0, scope link). Idempotent
    /// (EEXIST). The kernel removes the route when the interface goes down or away, and refuses it
    /// (ENETDOWN) while the interface is down: add it again each time the interface comes up.
    public func ensureDefaultRoute(dev interface: String, table: UInt32) throws {
        let operation = "add default dev \(interface) to table \(table)"
        let index = try Self.index(of: interface, operation: operation)
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: [EEXIST]) { header in
            Self.putDefaultRoute(header, table: table, type: UInt8(RTN_UNICAST), scope: UInt8(RT_SCOPE_LINK.rawValue))
            mnl_attr_put_u32(header, UInt16(RTA_OIF.rawValue), index)
        }
    }

    /// RTM_NEWRULE (IPv4) `iif <interface> lookup <table> priority <priority>`. Idempotent: with
    /// NLM_F_EXCL the kernel answers EEXIST for an identical rule instead of adding a duplicate.
    /// The interface need not exist (the rule matches by name).
    public func ensureRule(inputInterface interface: String, table: UInt32, priority: UInt32) throws {
        let operation = "add rule iif \(interface) lookup \(table) priority \(priority)"
        guard !interface.isEmpty, interface.utf8.count < Int(IFNAMSIZ) else {
            throw NetlinkError(operation: operation, errno: EINVAL)
        }
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: [EEXIST]) { header in
            header.pointee.nlmsg_type = UInt16(RTM_NEWRULE)
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<fib_rule_hdr>.size)!
                .assumingMemoryBound(to: fib_rule_hdr.self)
            message.pointee.family = UInt8(AF_INET)
            message.pointee.table = UInt8(RT_TABLE_UNSPEC.rawValue)  // the real id goes in FRA_TABLE
            message.pointee.action = UInt8(FR_ACT_TO_TBL)
            mnl_attr_put_strz(header, UInt16(FRA_IIFNAME), interface)
            mnl_attr_put_u32(header, UInt16(FRA_PRIORITY), priority)
            mnl_attr_put_u32(header, UInt16(FRA_TABLE), table)
        }
    }

    /// The header, rtmsg and RTA_TABLE of an IPv4 default route (0.0.0.0/0) in `table`.
    private static func putDefaultRoute(_ header: UnsafeMutablePointer<nlmsghdr>, table: UInt32, type: UInt8, scope: UInt8) {
        header.pointee.nlmsg_type = UInt16(RTM_NEWROUTE)
        header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<rtmsg>.size)!
            .assumingMemoryBound(to: rtmsg.self)
        message.pointee.rtm_family = UInt8(AF_INET)
        message.pointee.rtm_dst_len = 0
        message.pointee.rtm_table = UInt8(RT_TABLE_UNSPEC.rawValue)  // ids above 255 need RTA_TABLE
        message.pointee.rtm_protocol = UInt8(RTPROT_STATIC)
        message.pointee.rtm_scope = scope
        message.pointee.rtm_type = type
        mnl_attr_put_u32(header, UInt16(RTA_TABLE.rawValue), table)
    }

    /// Whether an interface of that name exists in this network namespace.
    public static func interfaceExists(_ name: String) -> Bool {
        if_nametoindex(name) != 0
    }

    private static func index(of interface: String, operation: String) throws -> UInt32 {
        let index = if_nametoindex(interface)
        guard index != 0 else { throw NetlinkError(operation: operation, errno: errno == 0 ? ENODEV : errno) }
        return index
    }
}

/// A failed rtnetlink request: the kernel's errno and, when it gave one, its extended-ACK text.
public struct NetlinkError: Error, CustomStringConvertible, Sendable, Hashable {
    public let operation: String
    public let errno: Int32
    public let message: String?

    public init(operation: String, errno: Int32, message: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.message = message
    }

    /// The interface a request named is missing (ENODEV) or down (ENETDOWN).
    public var interfaceMissingOrDown: Bool { errno == ENODEV || errno == ENETDOWN }

    public var description: String {
        "\(operation): \(String(cString: strerror(errno)))" + (message.map { " (\($0))" } ?? "")
    }
}

/// A NETLINK_ROUTE socket for one request and its ACK; closed when released. Internal: VxlanLink
/// and WireGuardLink send their link requests through it too.
final class RouteRequestSocket {
    private let socket: OpaquePointer
    private let descriptor: Int32
    let portID: UInt32

    init(operation: String) throws {
        guard let socket = mnl_socket_open2(NETLINK_ROUTE, SocketFlags.closeOnExec) else {
            throw NetlinkError(operation: operation, errno: errno)
        }
        var on: Int32 = 1
        // Readable error text from the kernel; no echo of our request in its ACK.
        _ = mnl_socket_setsockopt(socket, NETLINK_EXT_ACK, &on, socklen_t(MemoryLayout<Int32>.size))
        _ = mnl_socket_setsockopt(socket, NETLINK_CAP_ACK, &on, socklen_t(MemoryLayout<Int32>.size))
        let descriptor = mnl_socket_get_fd(socket)
        // The kernel always answers an NLM_F_ACK request; the timeout only guards against a bug.
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        _ = setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let error = NetlinkError(operation: operation, errno: errno)
            mnl_socket_close(socket)
            throw error
        }
        self.socket = socket
        self.descriptor = descriptor
        self.portID = mnl_socket_get_portid(socket)
    }

    deinit { mnl_socket_close(socket) }

    /// Sends the request `build` fills in (after its header's sequence is set) and reads the
    /// kernel's messages until `answer` finds the one for this request in a buffer.
    func exchange<Answer>(operation: String, build: (UnsafeMutablePointer<nlmsghdr>) -> Void,
                          answer: (_ bytes: [UInt8], _ sequence: UInt32) -> Answer?) throws -> Answer {
        let sequence = UInt32(truncatingIfNeeded: time(nil))
        var request = [UInt8](repeating: 0, count: 256)
        let sent = request.withUnsafeMutableBytes { raw -> Int in
            let header = mnl_nlmsg_put_header(raw.baseAddress)!
            header.pointee.nlmsg_seq = sequence
            build(header)
            return mnl_socket_sendto(socket, header, Int(header.pointee.nlmsg_len))
        }
        guard sent >= 0 else { throw NetlinkError(operation: operation, errno: errno) }

        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count < 0 {
                if errno == EINTR { continue }
                throw NetlinkError(operation: operation, errno: errno == EAGAIN ? ETIMEDOUT : errno)
            }
            if let found = answer(Array(buffer[..<min(count, buffer.count)]), sequence) { return found }
        }
    }

    /// Sends the message `build` fills in and waits for the kernel's ACK; errnos in `tolerating`
    /// count as success.
    func transact(operation: String, tolerating: Set<Int32>,
                  build: (UnsafeMutablePointer<nlmsghdr>) -> Void) throws {
        let ack = try exchange(operation: operation, build: build) { bytes, sequence in
            NetlinkAck.parse(bytes, sequence: sequence, portID: portID)
        }
        if ack.errno == 0 || tolerating.contains(ack.errno) { return }
        throw NetlinkError(operation: operation, errno: ack.errno, message: ack.message)
    }
}

/// Bytes through an interface as the kernel counts them (IFLA_STATS64), read when asked: the
/// status shows the tunnel's traffic without OpenVPN reporting it on a timer.
public struct LinkTraffic: Equatable, Sendable {
    public var received: UInt64
    public var sent: UInt64

    /// The counters of `interface` in this network namespace; nil when there is no such link.
    public static func of(_ interface: String) -> LinkTraffic? {
        let operation = "read the counters of \(interface)"
        guard !interface.isEmpty, interface.utf8.count < Int(IFNAMSIZ),
              let socket = try? RouteRequestSocket(operation: operation) else { return nil }
        // The answer is the link (RTM_NEWLINK) or an error (no such link): either ends the wait.
        let traffic = try? socket.exchange(operation: operation, build: { header in
            header.pointee.nlmsg_type = UInt16(RTM_GETLINK)
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST)
            let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<ifinfomsg>.size)!
                .assumingMemoryBound(to: ifinfomsg.self)
            message.pointee.ifi_family = UInt8(AF_UNSPEC)
            mnl_attr_put_strz(header, UInt16(IFLA_IFNAME), interface)
        }, answer: { bytes, sequence -> LinkTraffic?? in
            if let traffic = parse(bytes, sequence: sequence) { return .some(traffic) }
            return NetlinkAck.parse(bytes, sequence: sequence, portID: socket.portID) == nil ? nil : .some(nil)
        })
        return traffic ?? nil
    }

    /// The RTM_NEWLINK answer to `sequence` in `bytes`, its IFLA_STATS64 rx/tx bytes; nil for an
    /// error answer, another request's, or anything cut short.
    static func parse(_ bytes: [UInt8], sequence: UInt32) -> LinkTraffic? {
        let headerSize = 16, linkInfoSize = 16
        var offset = 0
        while let length = bytes.u32(offset).map(Int.init), length >= headerSize, length <= bytes.count - offset {
            let end = offset + length
            if bytes.u16(offset + 4) == UInt16(RTM_NEWLINK), bytes.u32(offset + 8) == sequence {
                var attribute = offset + headerSize + linkInfoSize
                while let size = bytes.u16(attribute, end: end).map(Int.init), size >= 4, size <= end - attribute {
                    // struct rtnl_link_stats64: rx_packets, tx_packets, rx_bytes, tx_bytes, ...
                    if bytes.u16(attribute + 2, end: end).map({ $0 & 0x3fff }) == UInt16(IFLA_STATS64), size >= 4 + 32,
                       let received = bytes.u64(attribute + 4 + 16, end: end), let sent = bytes.u64(attribute + 4 + 24, end: end) {
                        return LinkTraffic(received: received, sent: sent)
                    }
                    attribute += (size + 3) & ~3
                }
                return nil
            }
            offset += (length + 3) & ~3
        }
        return nil
    }
}

/// The kernel's answer to a request: an NLMSG_ERROR message (errno 0 is a plain ACK).
struct NetlinkAck: Equatable {
    var errno: Int32
    var message: String?

    /// Finds the answer to `sequence` in a buffer of messages; checks every length first.
    static func parse(_ bytes: [UInt8], sequence: UInt32, portID: UInt32) -> NetlinkAck? {
        var offset = 0
        while let length = bytes.u32(offset).map(Int.init), length >= 16, length <= bytes.count - offset {
            let end = offset + length
            if bytes.u16(offset + 4) == UInt16(NLMSG_ERROR), bytes.u32(offset + 8) == sequence,
               bytes.u32(offset + 12) == portID, let code = bytes.u32(offset + 16, end: end) {
                let flags = bytes.u16(offset + 6) ?? 0
                var ack = NetlinkAck(errno: 0 &- Int32(bitPattern: code), message: nil)  // &-: Int32.min must not trap
                if flags & UInt16(NLM_F_ACK_TLVS) != 0 {
                    // After struct nlmsgerr's errno comes our request's header, and its payload
                    // too unless the kernel capped the echo (NETLINK_CAP_ACK).
                    var echoed = 16
                    if flags & UInt16(NLM_F_CAPPED) == 0, let requestLength = bytes.u32(offset + 20, end: end) {
                        echoed = max(16, Int(requestLength))
                    }
                    ack.message = extackMessage(bytes, from: offset + 20 + ((echoed + 3) & ~3), to: end)
                }
                return ack
            }
            offset += (length + 3) & ~3
        }
        return nil
    }

    private static func extackMessage(_ bytes: [UInt8], from start: Int, to end: Int) -> String? {
        var offset = start
        while let length = bytes.u16(offset, end: end).map(Int.init), length >= 4, length <= end - offset {
            if bytes.u16(offset + 2, end: end).map({ $0 & 0x3fff }) == UInt16(NLMSGERR_ATTR_MSG.rawValue) {
                let text = bytes[offset + 4 ..< offset + length].prefix { $0 != 0 }
                return String(decoding: text, as: UTF8.self)
            }
            offset += (length + 3) & ~3
        }
        return nil
    }
}

// fileprivate: other files in this module have their own byte helpers.
fileprivate extension [UInt8] {
    /// Host-order integers, nil unless entirely before `end` (and inside the buffer).
    func u16(_ offset: Int, end: Int? = nil) -> UInt16? { load(offset, end: end) }
    func u32(_ offset: Int, end: Int? = nil) -> UInt32? { load(offset, end: end) }
    func u64(_ offset: Int, end: Int? = nil) -> UInt64? { load(offset, end: end) }

    private func load<T: FixedWidthInteger>(_ offset: Int, end: Int?) -> T? {
        let limit = Swift.min(end ?? count, count)
        guard offset >= 0, offset <= limit - MemoryLayout<T>.size else { return nil }
        return withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
    }
}
