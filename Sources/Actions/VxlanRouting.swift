import CMnl
import Glibc
import StateMachine

/// What the overlay's two ends need from rtnetlink besides the link itself (docs/kubernetes.md):
/// the underlay's own next hop and address, routes by it and into the overlay, and the overlay's
/// neighbour table (short timers, so a gone gateway is reported FAILED within seconds; and
/// forgetting the gateway's entry after a re-point). One request per call, like AddressConfigurator.
public enum VxlanRouting {
    /// The next hop of `interface` in the main table: its default route's (the lowest metric
    /// when there are several), in a pod the CNI's gateway (Calico's 169.254.1.1); when the
    /// default route leads elsewhere (a client pod whose sidecar restarted: it points into the
    /// overlay), the next hop of another route by `interface`.
    public static func nextHop(of interface: String) throws -> IPv4Address {
        let operation = "read the next hop of \(interface)"
        let index = try index(of: interface, operation: operation)
        let routes = try dump(RTM_GETROUTE, operation: operation).compactMap(RouteEntry.init).filter {
            $0.table == UInt32(RT_TABLE_MAIN.rawValue) && $0.outputIndex == index && $0.gateway != nil
        }
        let ordered = routes.sorted { ($0.prefixLength, $0.metric) < ($1.prefixLength, $1.metric) }
        guard let gateway = ordered.first?.gateway else {
            throw NetlinkError(operation: operation, errno: ENETUNREACH, message: "no route by \(interface) has a next hop")
        }
        return gateway
    }

    /// The IPv4 addresses of `interface` of global scope (a pod's own IP on its eth0).
    public static func addresses(of interface: String) throws -> [IPv4Interface] {
        let operation = "read the addresses of \(interface)"
        let index = try index(of: interface, operation: operation)
        return try dump(RTM_GETADDR, operation: operation).compactMap(AddressEntry.init)
            .filter { $0.index == index && $0.scope == UInt8(RT_SCOPE_UNIVERSE.rawValue) }
            .map(\.address)
    }

    /// `ip route replace <destination> via <gateway> dev <interface>` in the main table: created,
    /// or put in place of the route to the same destination (a pod's default route, say).
    public static func replaceRoute(_ destination: IPv4Network, via gateway: IPv4Address, dev interface: String) throws {
        let operation = "route \(destination) via \(gateway) dev \(interface)"
        let index = try index(of: interface, operation: operation)
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: []) { header in
            header.pointee.nlmsg_type = UInt16(RTM_NEWROUTE)
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
            let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<rtmsg>.size)!.assumingMemoryBound(to: rtmsg.self)
            message.pointee.rtm_family = UInt8(AF_INET)
            message.pointee.rtm_dst_len = UInt8(destination.prefixLength)
            message.pointee.rtm_table = UInt8(RT_TABLE_MAIN.rawValue)
            message.pointee.rtm_protocol = UInt8(RTPROT_STATIC)
            message.pointee.rtm_scope = UInt8(RT_SCOPE_UNIVERSE.rawValue)
            message.pointee.rtm_type = UInt8(RTN_UNICAST)
            if destination.prefixLength > 0 {
                mnl_attr_put_u32(header, UInt16(RTA_DST.rawValue), destination.address.value.bigEndian)
            }
            mnl_attr_put_u32(header, UInt16(RTA_GATEWAY.rawValue), gateway.value.bigEndian)
            mnl_attr_put_u32(header, UInt16(RTA_OIF.rawValue), index)
        }
    }

    /// The neighbour timers of `interface` (RTM_SETNEIGHTBL, what `ip ntable change` sends; the
    /// sysctls under /proc/sys are read-only in a container): how long a confirmation lasts, how
    /// long before probing, the time between probes and how many. Millisecond values.
    public struct NeighbourTimers: Hashable, Sendable {
        public var baseReachable: UInt64
        public var delayFirstProbe: UInt64
        public var retransmit: UInt64
        public var unicastProbes: UInt32
        public var multicastProbes: UInt32

        public init(baseReachable: UInt64, delayFirstProbe: UInt64, retransmit: UInt64, unicastProbes: UInt32,
                    multicastProbes: UInt32) {
            self.baseReachable = baseReachable
            self.delayFirstProbe = delayFirstProbe
            self.retransmit = retransmit
            self.unicastProbes = unicastProbes
            self.multicastProbes = multicastProbes
        }

        /// The client's overlay (docs/kubernetes.md, Gateway moves): an unconfirmed gateway is
        /// re-checked after 1-3 s, probed a second later, three probes 0.5 s apart, then FAILED.
        public static let gatewayWatch = NeighbourTimers(baseReachable: 2000, delayFirstProbe: 1000, retransmit: 500,
                                                         unicastProbes: 3, multicastProbes: 3)
    }

    public static func setNeighbourTimers(_ timers: NeighbourTimers, on interface: String) throws {
        let operation = "set the neighbour timers of \(interface)"
        let index = try index(of: interface, operation: operation)
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: []) { header in
            header.pointee.nlmsg_type = UInt16(RTM_SETNEIGHTBL)
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK)
            let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<ndtmsg>.size)!.assumingMemoryBound(to: ndtmsg.self)
            message.pointee.ndtm_family = UInt8(AF_INET)
            mnl_attr_put_strz(header, UInt16(NDTA_NAME), "arp_cache")
            let parameters = mnl_attr_nest_start(header, UInt16(NDTA_PARMS))
            mnl_attr_put_u32(header, UInt16(NDTPA_IFINDEX), index)
            mnl_attr_put_u64(header, UInt16(NDTPA_BASE_REACHABLE_TIME), timers.baseReachable)
            mnl_attr_put_u64(header, UInt16(NDTPA_DELAY_PROBE_TIME), timers.delayFirstProbe)
            mnl_attr_put_u64(header, UInt16(NDTPA_RETRANS_TIME), timers.retransmit)
            mnl_attr_put_u32(header, UInt16(NDTPA_UCAST_PROBES), timers.unicastProbes)
            mnl_attr_put_u32(header, UInt16(NDTPA_MCAST_PROBES), timers.multicastProbes)
            mnl_attr_nest_end(header, parameters)
        }
    }

    /// Removes `address` from `interface`'s neighbour table; a missing entry is no error.
    public static func forgetNeighbour(_ address: IPv4Address, on interface: String) throws {
        let operation = "forget the neighbour \(address) on \(interface)"
        let index = try index(of: interface, operation: operation)
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: [ENOENT]) { header in
            header.pointee.nlmsg_type = UInt16(RTM_DELNEIGH)
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK)
            let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<ndmsg>.size)!.assumingMemoryBound(to: ndmsg.self)
            message.pointee.ndm_family = UInt8(AF_INET)
            message.pointee.ndm_ifindex = Int32(bitPattern: index)
            mnl_attr_put_u32(header, UInt16(NDA_DST), address.value.bigEndian)
        }
    }

    // MARK: Dumps

    /// Every message of an IPv4 dump of `type` (RTM_GETROUTE, RTM_GETADDR), up to NLMSG_DONE.
    private static func dump(_ type: Int, operation: String) throws -> [[UInt8]] {
        let socket = try RouteRequestSocket(operation: operation)
        var messages: [[UInt8]] = []
        var failure: Int32?
        _ = try socket.exchange(operation: operation, build: { header in
            header.pointee.nlmsg_type = UInt16(type)
            header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_DUMP)
            // rtmsg and ifaddrmsg both start with the family.
            let family = mnl_nlmsg_put_extra_header(header, MemoryLayout<rtmsg>.size)!.assumingMemoryBound(to: UInt8.self)
            family.pointee = UInt8(AF_INET)
        }, answer: { bytes, sequence -> Bool? in
            var offset = 0
            while let length = bytes.u32(offset).map(Int.init), length >= 16, length <= bytes.count - offset {
                if bytes.u32(offset + 8) == sequence {
                    switch Int32(bytes.u16(offset + 4) ?? 0) {
                    case NLMSG_DONE: return true
                    case NLMSG_ERROR:
                        failure = bytes.u32(offset + 16).map { 0 &- Int32(bitPattern: $0) } ?? EPROTO
                        return true
                    default:
                        messages.append(Array(bytes[offset + 16 ..< offset + length]))
                    }
                }
                offset += (length + 3) & ~3
            }
            return nil
        })
        if let failure, failure != 0 { throw NetlinkError(operation: operation, errno: failure) }
        return messages
    }

    private static func index(of interface: String, operation: String) throws -> UInt32 {
        let index = if_nametoindex(interface)
        guard index != 0 else { throw NetlinkError(operation: operation, errno: errno == 0 ? ENODEV : errno) }
        return index
    }
}

/// An IPv4 route of a dump, from its body (rtmsg and attributes), every length checked.
private struct RouteEntry {
    var prefixLength: Int
    var table: UInt32
    var outputIndex: UInt32?
    var gateway: IPv4Address?
    var metric: UInt32

    init?(_ body: [UInt8]) {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type (u8), flags (u32).
        guard body.count >= 12, body[0] == UInt8(AF_INET), body[7] == UInt8(RTN_UNICAST) else { return nil }
        prefixLength = Int(body[1])
        table = UInt32(body[4])
        metric = 0
        for (type, start, stop) in vxlanRoutingAttributes(body, from: 12) {
            switch Int(type) {
            case Int(RTA_TABLE.rawValue) where stop - start == 4: table = body.u32(start) ?? table
            case Int(RTA_OIF.rawValue) where stop - start == 4: outputIndex = body.u32(start)
            case Int(RTA_PRIORITY.rawValue) where stop - start == 4: metric = body.u32(start) ?? 0
            case Int(RTA_GATEWAY.rawValue) where stop - start == 4:
                gateway = IPv4Address(body[start], body[start + 1], body[start + 2], body[start + 3])
            default: break
            }
        }
    }
}

/// An IPv4 address of a dump, from its body (ifaddrmsg and attributes).
private struct AddressEntry {
    var index: UInt32
    var scope: UInt8
    var address: IPv4Interface

    init?(_ body: [UInt8]) {
        // struct ifaddrmsg: family, prefixlen, flags, scope (u8), index (u32).
        guard body.count >= 8, body[0] == UInt8(AF_INET), body[1] <= 32, let index = body.u32(4) else { return nil }
        var local: IPv4Address?
        var peer: IPv4Address?
        for (type, start, stop) in vxlanRoutingAttributes(body, from: 8) where stop - start == 4 {
            let address = IPv4Address(body[start], body[start + 1], body[start + 2], body[start + 3])
            if type == UInt16(IFA_LOCAL) { local = address } else if type == UInt16(IFA_ADDRESS) { peer = address }
        }
        guard let address = local ?? peer else { return nil }
        self.index = index
        scope = body[3]
        self.address = IPv4Interface(address: address, prefixLength: Int(body[1]))
    }
}

/// (type without the nested/byte-order flags, payload start, payload end) of each attribute.
private func vxlanRoutingAttributes(_ bytes: [UInt8], from start: Int) -> [(UInt16, Int, Int)] {
    var result: [(UInt16, Int, Int)] = []
    var offset = start
    while let length = bytes.u16(offset).map(Int.init), length >= 4, length <= bytes.count - offset,
          let type = bytes.u16(offset + 2) {
        result.append((type & 0x3fff, offset + 4, offset + length))
        offset += (length + 3) & ~3
    }
    return result
}

// fileprivate: other files in this module have their own byte helpers (H2 folds them into one).
fileprivate extension [UInt8] {
    func u16(_ offset: Int) -> UInt16? { load(offset) }
    func u32(_ offset: Int) -> UInt32? { load(offset) }

    private func load<T: FixedWidthInteger>(_ offset: Int) -> T? {
        guard offset >= 0, offset <= count - MemoryLayout<T>.size else { return nil }
        return withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
    }
}
