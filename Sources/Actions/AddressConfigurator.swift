import CNetlink
import Glibc
import StateMachine
import SystemSupport

/// Puts addresses on interfaces and brings links up, over rtnetlink. Each call is one short
/// request/ACK exchange on its own socket (these are rare, so holding a socket buys nothing).
/// The calls block only for that round trip, bounded by a receive timeout. Errors are
/// `SystemError`s (`NetlinkError`) with the kernel's extended-ACK text.
public struct AddressConfigurator: Sendable {
    public init() {}

    /// RTM_NEWADDR with IFA_LOCAL, IFA_ADDRESS and IFA_BROADCAST. Idempotent: the kernel's EEXIST
    /// (that address with that prefix is already there) counts as success.
    public func ensureAddress(_ address: IPv4Interface, on interface: String) throws(SystemError) {
        let operation = "add \(address) to \(interface)"
        let index = try Self.index(of: interface, operation: operation)
        var request = NetlinkRequest(type: UInt16(RTM_NEWADDR), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL))
        request.append(ifaddrmsg(ifa_family: UInt8(AF_INET), ifa_prefixlen: UInt8(address.prefixLength), ifa_flags: 0,
                                 ifa_scope: UInt8(RT_SCOPE_UNIVERSE.rawValue), ifa_index: index))
        // Network byte order on the wire.
        request.appendAttribute(UInt16(IFA_LOCAL), address.address.value.bigEndian)
        request.appendAttribute(UInt16(IFA_ADDRESS), address.address.value.bigEndian)
        // /31 and /32 have no broadcast address (RFC 3021); `ip addr add` omits it there too.
        if address.prefixLength <= 30 {
            let broadcast = address.address.value | ~address.network.mask
            request.appendAttribute(UInt16(IFA_BROADCAST), broadcast.bigEndian)
        }
        try Self.transact(request, operation: operation, tolerating: [EEXIST])
    }

    /// RTM_NEWLINK setting IFF_UP (and changing no other flag). Idempotent.
    public func setLinkUp(_ interface: String) throws(SystemError) {
        let operation = "set \(interface) up"
        let index = try Self.index(of: interface, operation: operation)
        try Self.transact(.link(RTM_NEWLINK, index: index, up: true), operation: operation)
    }

    // MARK: Policy routing

    /// RTM_NEWROUTE `unreachable default metric 4294967295 table <table>`: the table's last word,
    /// so a packet routed by it never falls through to another table. Idempotent (EEXIST).
    public func ensureUnreachableDefault(table: UInt32) throws(SystemError) {
        var request = Self.defaultRoute(table: table, type: UInt8(RTN_UNREACHABLE), scope: UInt8(RT_SCOPE_UNIVERSE.rawValue))
        request.appendAttribute(UInt16(RTA_PRIORITY.rawValue), UInt32.max)
        try Self.transact(request, operation: "add unreachable default to table \(table)", tolerating: [EEXIST])
    }

    /// RTM_NEWROUTE `default dev <interface> table <table>` (metric 0, scope link). Idempotent
    /// (EEXIST). The kernel removes the route when the interface goes down or away, and refuses it
    /// (ENETDOWN) while the interface is down: add it again each time the interface comes up.
    public func ensureDefaultRoute(dev interface: String, table: UInt32) throws(SystemError) {
        let operation = "add default dev \(interface) to table \(table)"
        let index = try Self.index(of: interface, operation: operation)
        var request = Self.defaultRoute(table: table, type: UInt8(RTN_UNICAST), scope: UInt8(RT_SCOPE_LINK.rawValue))
        request.appendAttribute(UInt16(RTA_OIF.rawValue), index)
        try Self.transact(request, operation: operation, tolerating: [EEXIST])
    }

    /// RTM_NEWRULE (IPv4) `iif <interface> lookup <table> priority <priority>`. Idempotent: with
    /// NLM_F_EXCL the kernel answers EEXIST for an identical rule instead of adding a duplicate.
    /// The interface need not exist (the rule matches by name).
    public func ensureRule(inputInterface interface: String, table: UInt32, priority: UInt32) throws(SystemError) {
        let operation = "add rule iif \(interface) lookup \(table) priority \(priority)"
        guard !interface.isEmpty, interface.utf8.count < Int(IFNAMSIZ) else {
            throw SystemError(operation: operation, errno: EINVAL)
        }
        var request = NetlinkRequest(type: UInt16(RTM_NEWRULE), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL))
        var rule = fib_rule_hdr()
        rule.family = UInt8(AF_INET)
        rule.table = UInt8(RT_TABLE_UNSPEC.rawValue)  // the real id goes in FRA_TABLE
        rule.action = UInt8(FR_ACT_TO_TBL)
        request.append(rule)
        request.appendAttribute(UInt16(FRA_IIFNAME), string: interface)
        request.appendAttribute(UInt16(FRA_PRIORITY), priority)
        request.appendAttribute(UInt16(FRA_TABLE), table)
        try Self.transact(request, operation: operation, tolerating: [EEXIST])
    }

    /// An RTM_NEWROUTE request for the IPv4 default route (0.0.0.0/0) in `table`.
    private static func defaultRoute(table: UInt32, type: UInt8, scope: UInt8) -> NetlinkRequest {
        var request = NetlinkRequest(type: UInt16(RTM_NEWROUTE), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL))
        var route = rtmsg()
        route.rtm_family = UInt8(AF_INET)
        route.rtm_dst_len = 0
        route.rtm_table = UInt8(RT_TABLE_UNSPEC.rawValue)  // ids above 255 need RTA_TABLE
        route.rtm_protocol = UInt8(RTPROT_STATIC)
        route.rtm_scope = scope
        route.rtm_type = type
        request.append(route)
        request.appendAttribute(UInt16(RTA_TABLE.rawValue), table)
        return request
    }

    /// One request and its ACK on a socket of its own.
    private static func transact(_ request: NetlinkRequest, operation: String, tolerating: Set<Int32> = []) throws(SystemError) {
        try requestSocket().transact(request, operation: operation, tolerating: tolerating)
    }

    /// A NETLINK_ROUTE socket for one request: extended ACKs, a bounded wait for the answer.
    static func requestSocket() throws(SystemError) -> NetlinkSocket {
        let socket = try NetlinkSocket(protocol: NETLINK_ROUTE)
        socket.requestExtendedAcks()
        socket.setReceiveTimeout(seconds: 5)
        return socket
    }

    /// Whether an interface of that name exists in this network namespace.
    public static func interfaceExists(_ name: String) -> Bool {
        if_nametoindex(name) != 0
    }

    /// The index of `interface`, or the error of `operation` (ENODEV) naming it.
    static func index(of interface: String, operation: String) throws(SystemError) -> UInt32 {
        let index = if_nametoindex(interface)
        guard index != 0 else { throw SystemError(operation: operation, errno: errno == 0 ? ENODEV : errno) }
        return index
    }
}

extension NetlinkRequest {
    /// An RTM_*LINK request with its ifinfomsg (AF_UNSPEC); `up` sets IFF_UP and changes no other
    /// flag (ifi_change is the mask of the flags a request sets).
    static func link(_ type: Int, flags: Int32 = 0, index: UInt32 = 0, up: Bool = false,
                     acknowledged: Bool = true) -> NetlinkRequest {
        var request = NetlinkRequest(type: UInt16(type), flags: UInt16(NLM_F_REQUEST | (acknowledged ? NLM_F_ACK : 0) | flags))
        request.append(ifinfomsg(ifi_family: UInt8(AF_UNSPEC), __ifi_pad: 0, ifi_type: 0, ifi_index: Int32(bitPattern: index),
                                 ifi_flags: up ? UInt32(IFF_UP) : 0, ifi_change: up ? UInt32(IFF_UP) : 0))
        return request
    }
}

/// A failed rtnetlink request, by its earlier name: the operation, the kernel's errno and, when
/// it gave one, its extended-ACK text.
public typealias NetlinkError = SystemError

extension SystemError {
    /// The interface a request named is missing (ENODEV) or down (ENETDOWN).
    public var interfaceMissingOrDown: Bool { errno == ENODEV || errno == ENETDOWN }
}

/// Bytes through an interface as the kernel counts them (IFLA_STATS64), read when asked: the
/// status shows the tunnel's traffic without OpenVPN reporting it on a timer.
public struct LinkTraffic: Equatable, Sendable {
    public var received: UInt64
    public var sent: UInt64

    /// The counters of `interface` in this network namespace; nil when there is no such link.
    public static func of(_ interface: String) -> LinkTraffic? {
        guard !interface.isEmpty, interface.utf8.count < Int(IFNAMSIZ),
              let socket = try? AddressConfigurator.requestSocket() else { return nil }
        var request = NetlinkRequest.link(RTM_GETLINK, acknowledged: false)
        request.appendAttribute(UInt16(IFLA_IFNAME), string: interface)
        // The answer is the link (RTM_NEWLINK) or an error (no such link): either ends the wait.
        let traffic = try? socket.exchange(request, operation: "read the counters of \(interface)") { bytes, sequence -> LinkTraffic?? in
            if let traffic = parse(bytes, sequence: sequence) { return .some(traffic) }
            return NetlinkAck.parse(bytes, sequence: sequence, portID: socket.portID) == nil ? nil : .some(nil)
        }
        return traffic ?? nil
    }

    /// The RTM_NEWLINK answer to `sequence` in `bytes`, its IFLA_STATS64 rx/tx bytes; nil for an
    /// error answer, another request's, or anything cut short.
    static func parse(_ bytes: [UInt8], sequence: UInt32) -> LinkTraffic? {
        guard let attributes = NetlinkAttributes(linkAnswerIn: bytes, sequence: sequence) else { return nil }
        for attribute in attributes where attribute.type == UInt16(IFLA_STATS64) {
            // struct rtnl_link_stats64: rx_packets, tx_packets, rx_bytes, tx_bytes, ...
            let payload = attribute.payload
            guard let received = bytes.uint64(at: payload.lowerBound + 16, within: payload),
                  let sent = bytes.uint64(at: payload.lowerBound + 24, within: payload) else { return nil }
            return LinkTraffic(received: received, sent: sent)
        }
        return nil
    }
}

extension NetlinkAttributes {
    /// The attributes of the RTM_NEWLINK answer to request `sequence` in `bytes` (after its
    /// ifinfomsg); nil when the buffer holds no such answer, or one cut short.
    init?(linkAnswerIn bytes: [UInt8], sequence: UInt32) {
        let linkInfoSize = 16  // struct ifinfomsg
        guard let message = NetlinkMessages(bytes).first(where: {
            $0.header.type == UInt16(RTM_NEWLINK) && $0.header.sequence == sequence
        }), message.body.count >= linkInfoSize else { return nil }
        self.init(bytes, message.body.lowerBound + linkInfoSize ..< message.body.upperBound)
    }
}
