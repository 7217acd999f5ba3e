import CNetlink
import Glibc
import StateMachine
import SystemSupport

/// What the overlay's two ends need from rtnetlink besides the link itself (docs/kubernetes.md):
/// the underlay's own next hop and address, routes by it and into the overlay, and the overlay's
/// neighbour table (short timers, so a gone gateway is reported FAILED within seconds; and
/// forgetting the gateway's entry after a re-point). One request per call, like AddressConfigurator.
public enum VxlanRouting {
    /// The next hop of `interface` in the main table: its default route's (the lowest metric
    /// when there are several), in a pod the CNI's gateway (Calico's 169.254.1.1); when the
    /// default route leads elsewhere (a client pod whose sidecar restarted: it points into the
    /// overlay), the next hop of another route by `interface`.
    public static func nextHop(of interface: String) throws(SystemError) -> IPv4Address {
        let operation = "read the next hop of \(interface)"
        let index = try AddressConfigurator.index(of: interface, operation: operation)
        let routes = try dump(RTM_GETROUTE, operation: operation).compactMap(RouteEntry.init).filter {
            $0.table == UInt32(RT_TABLE_MAIN.rawValue) && $0.outputIndex == index && $0.gateway != nil
        }
        let ordered = routes.sorted { ($0.prefixLength, $0.metric) < ($1.prefixLength, $1.metric) }
        guard let gateway = ordered.first?.gateway else {
            throw SystemError(operation: operation, errno: ENETUNREACH, message: "no route by \(interface) has a next hop")
        }
        return gateway
    }

    /// The IPv4 addresses of `interface` of global scope (a pod's own IP on its eth0).
    public static func addresses(of interface: String) throws(SystemError) -> [IPv4Interface] {
        let operation = "read the addresses of \(interface)"
        let index = try AddressConfigurator.index(of: interface, operation: operation)
        return try dump(RTM_GETADDR, operation: operation).compactMap(AddressEntry.init)
            .filter { $0.index == index && $0.scope == UInt8(RT_SCOPE_UNIVERSE.rawValue) }
            .map(\.address)
    }

    /// `ip route replace <destination> via <gateway> dev <interface>` in the main table: created,
    /// or put in place of the route to the same destination (a pod's default route, say).
    public static func replaceRoute(_ destination: IPv4Network, via gateway: IPv4Address, dev interface: String) throws(SystemError) {
        let operation = "route \(destination) via \(gateway) dev \(interface)"
        let index = try AddressConfigurator.index(of: interface, operation: operation)
        var request = NetlinkRequest(type: UInt16(RTM_NEWROUTE),
                                     flags: UInt16(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE))
        var route = rtmsg()
        route.rtm_family = UInt8(AF_INET)
        route.rtm_dst_len = UInt8(destination.prefixLength)
        route.rtm_table = UInt8(RT_TABLE_MAIN.rawValue)
        route.rtm_protocol = UInt8(RTPROT_STATIC)
        route.rtm_scope = UInt8(RT_SCOPE_UNIVERSE.rawValue)
        route.rtm_type = UInt8(RTN_UNICAST)
        request.append(route)
        if destination.prefixLength > 0 {
            request.appendAttribute(UInt16(RTA_DST.rawValue), destination.address.value.bigEndian)
        }
        request.appendAttribute(UInt16(RTA_GATEWAY.rawValue), gateway.value.bigEndian)
        request.appendAttribute(UInt16(RTA_OIF.rawValue), index)
        try AddressConfigurator.requestSocket().transact(request, operation: operation)
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

    public static func setNeighbourTimers(_ timers: NeighbourTimers, on interface: String) throws(SystemError) {
        let operation = "set the neighbour timers of \(interface)"
        let index = try AddressConfigurator.index(of: interface, operation: operation)
        var request = NetlinkRequest(type: UInt16(RTM_SETNEIGHTBL), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK))
        var table = ndtmsg()
        table.ndtm_family = UInt8(AF_INET)
        request.append(table)
        request.appendAttribute(UInt16(NDTA_NAME), string: "arp_cache")
        request.appendNested(UInt16(NDTA_PARMS)) { parameters in
            parameters.appendAttribute(UInt16(NDTPA_IFINDEX), index)
            parameters.appendAttribute(UInt16(NDTPA_BASE_REACHABLE_TIME), u64: timers.baseReachable)
            parameters.appendAttribute(UInt16(NDTPA_DELAY_PROBE_TIME), u64: timers.delayFirstProbe)
            parameters.appendAttribute(UInt16(NDTPA_RETRANS_TIME), u64: timers.retransmit)
            parameters.appendAttribute(UInt16(NDTPA_UCAST_PROBES), timers.unicastProbes)
            parameters.appendAttribute(UInt16(NDTPA_MCAST_PROBES), timers.multicastProbes)
        }
        try AddressConfigurator.requestSocket().transact(request, operation: operation)
    }

    /// Removes `address` from `interface`'s neighbour table; a missing entry is no error.
    public static func forgetNeighbour(_ address: IPv4Address, on interface: String) throws(SystemError) {
        let operation = "forget the neighbour \(address) on \(interface)"
        let index = try AddressConfigurator.index(of: interface, operation: operation)
        var request = NetlinkRequest(type: UInt16(RTM_DELNEIGH), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK))
        var neighbour = ndmsg()
        neighbour.ndm_family = UInt8(AF_INET)
        neighbour.ndm_ifindex = Int32(bitPattern: index)
        request.append(neighbour)
        request.appendAttribute(UInt16(NDA_DST), address.value.bigEndian)
        try AddressConfigurator.requestSocket().transact(request, operation: operation, tolerating: [ENOENT])
    }

    // MARK: Dumps

    /// The body (after the header) of every message of an IPv4 dump of `type` (RTM_GETROUTE,
    /// RTM_GETADDR), up to NLMSG_DONE.
    private static func dump(_ type: Int, operation: String) throws(SystemError) -> [[UInt8]] {
        let socket = try AddressConfigurator.requestSocket()
        var request = NetlinkRequest(type: UInt16(type), flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP))
        if type == RTM_GETADDR {
            request.append(ifaddrmsg(ifa_family: UInt8(AF_INET), ifa_prefixlen: 0, ifa_flags: 0, ifa_scope: 0, ifa_index: 0))
        } else {
            var route = rtmsg()
            route.rtm_family = UInt8(AF_INET)
            request.append(route)
        }
        var messages: [[UInt8]] = []
        let failure = try socket.exchange(request, operation: operation) { bytes, sequence -> NetlinkAck? in
            for message in NetlinkMessages(bytes) where message.header.sequence == sequence && message.header.portID == socket.portID {
                switch Int32(message.header.type) {
                case NLMSG_DONE: return NetlinkAck(errno: 0)
                case NLMSG_ERROR: return NetlinkAck(bytes, message) ?? NetlinkAck(errno: EPROTO)
                default: messages.append(Array(bytes[message.body]))
                }
            }
            return nil
        }
        if failure.errno != 0 { throw SystemError(operation: operation, errno: failure.errno, message: failure.message) }
        return messages
    }

}

/// An IPv4 route of a dump, from its body (rtmsg and attributes), read with the shared codec.
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
        for attribute in NetlinkAttributes(body, 12 ..< body.count) {
            let payload = attribute.payload
            switch Int(attribute.type) {
            case Int(RTA_TABLE.rawValue): table = body.exactly(UInt32.self, payload) ?? table
            case Int(RTA_OIF.rawValue): outputIndex = body.exactly(UInt32.self, payload)
            case Int(RTA_PRIORITY.rawValue): metric = body.exactly(UInt32.self, payload) ?? 0
            case Int(RTA_GATEWAY.rawValue): gateway = body.bigEndian(UInt32.self, payload).map { IPv4Address($0) }
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
        guard body.count >= 8, body[0] == UInt8(AF_INET), body[1] <= 32,
              let index = body.uint32(at: 4, within: 0 ..< body.count) else { return nil }
        var local: IPv4Address?
        var peer: IPv4Address?
        for attribute in NetlinkAttributes(body, 8 ..< body.count) {
            guard let address = body.bigEndian(UInt32.self, attribute.payload).map({ IPv4Address($0) }) else { continue }
            if attribute.type == UInt16(IFA_LOCAL) { local = address } else if attribute.type == UInt16(IFA_ADDRESS) { peer = address }
        }
        guard let address = local ?? peer else { return nil }
        self.index = index
        scope = body[3]
        self.address = IPv4Interface(address: address, prefixLength: Int(body[1]))
    }
}
