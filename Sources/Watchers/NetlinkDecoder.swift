import CNetlink
import StateMachine
import SystemSupport

/// What rtnetlink told us, in vpnsup's terms.
public enum NetlinkEvent: Sendable, Hashable {
    /// RTM_NEWLINK. `up` means administratively up (IFF_UP) *and* carrier present (IFF_LOWER_UP).
    case link(name: String, index: Int32, up: Bool)
    /// RTM_DELLINK, or a link the last re-dump no longer reported, or the old name of a renamed link.
    case linkRemoved(name: String, index: Int32)
    /// RTM_NEWADDR / RTM_DELADDR for IPv4. `interface` is empty when neither a link message nor
    /// an IFA_LABEL has named the index.
    case address(interface: String, index: Int32, address: IPv4Interface, added: Bool)
    /// RTM_NEWROUTE / RTM_DELROUTE for IPv4 unicast routes in the main table. The kernel drops the
    /// routes of a link set down without telling anyone, so the decoder synthesises those removals.
    case route(destination: IPv4Network, gateway: IPv4Address?, interfaceIndex: Int32?, added: Bool)
    /// Everything the initial dump (or a re-dump after lost events) reported has been delivered.
    case synchronized
    /// RTM_NEWNEIGH / RTM_DELNEIGH for an IPv4 neighbour (the watcher reports them only when
    /// started with `neighbours: true`). `interface` is empty when no link message named the index.
    case neighbour(interface: String, index: Int32, address: IPv4Address, state: NeighbourState)
}

/// A neighbour entry's state as the kernel reports it (NUD_*), or its removal.
public enum NeighbourState: String, Sendable, Hashable {
    case incomplete, reachable, stale, delay, probe, failed, noARP, permanent, none
    /// RTM_DELNEIGH: the entry is gone.
    case removed

    /// The state of an RTM_NEWNEIGH's `ndm_state` (the kernel sets one bit at a time).
    init(nud: UInt16) {
        switch Int32(nud) {
        case NUD_INCOMPLETE: self = .incomplete
        case NUD_REACHABLE: self = .reachable
        case NUD_STALE: self = .stale
        case NUD_DELAY: self = .delay
        case NUD_PROBE: self = .probe
        case NUD_FAILED: self = .failed
        case NUD_NOARP: self = .noARP
        case NUD_PERMANENT: self = .permanent
        default: self = .none
        }
    }
}

/// Turns buffers of rtnetlink messages into `NetlinkEvent`s. Pure: no I/O, no C calls, and every
/// length is checked before it is trusted, so arbitrary bytes yield events or nothing, never a trap.
///
/// It remembers each link's name (address messages carry only an index) and the addresses and
/// routes it has reported, so that a re-dump can report what vanished while events were lost.
public struct NetlinkDecoder {
    /// The kinds of dump the watcher asks for, in the order it asks.
    enum DumpKind: CaseIterable { case links, addresses, routes }

    /// One decoded message: an event, or the end / failure of a request the watcher made.
    enum Item: Equatable {
        case event(NetlinkEvent)
        /// `code`: the dump's own errno (NLMSG_DONE carries one; 0 when it succeeded).
        case done(sequence: UInt32, portID: UInt32, interrupted: Bool, code: Int32)
        case error(sequence: UInt32, portID: UInt32, code: Int32)
        case overrun
    }

    private struct RouteKey: Hashable {
        var destination: IPv4Network
        var gateway: IPv4Address?
        var index: Int32?
    }

    private var names: [Int32: String] = [:]
    private var addresses: [Int32: Set<IPv4Interface>] = [:]
    private var routes: Set<RouteKey> = []

    // What the dump in progress has reported; nil when no dump of that kind is running.
    private var seenLinks: Set<Int32>?
    private var seenAddresses: Set<AddressKey>?
    private var seenRoutes: Set<RouteKey>?

    private struct AddressKey: Hashable { var index: Int32; var address: IPv4Interface }

    public init() {}

    /// Decodes every well-formed message in `bytes`; stops at the first malformed header (a
    /// length that lies leaves nothing after it trustworthy), skips malformed bodies.
    public mutating func decode(_ bytes: [UInt8]) -> [NetlinkEvent] {
        decodeItems(bytes).compactMap { if case .event(let event) = $0 { event } else { nil } }
    }

    // MARK: - Dump bookkeeping (the watcher brackets each dump with these)

    mutating func beginDump(_ kind: DumpKind) {
        switch kind {
        case .links: seenLinks = []
        case .addresses: seenAddresses = []
        case .routes: seenRoutes = []
        }
    }

    /// Ends a complete dump: whatever we knew of that kind and the dump did not report is gone.
    mutating func endDump(_ kind: DumpKind) -> [NetlinkEvent] {
        var events: [NetlinkEvent] = []
        switch kind {
        case .links:
            guard let seen = seenLinks else { return [] }
            seenLinks = nil
            for index in names.keys.sorted() where !seen.contains(index) {
                events += forgetLink(index)
            }
        case .addresses:
            guard let seen = seenAddresses else { return [] }
            seenAddresses = nil
            for index in addresses.keys.sorted() {
                for address in addresses[index, default: []].sorted(by: Self.addressOrder)
                where !seen.contains(AddressKey(index: index, address: address)) {
                    addresses[index]?.remove(address)
                    events.append(.address(interface: names[index] ?? "", index: index, address: address, added: false))
                }
                if addresses[index]?.isEmpty == true { addresses[index] = nil }
            }
        case .routes:
            guard let seen = seenRoutes else { return [] }
            seenRoutes = nil
            let stale = routes.subtracting(seen)
            routes.subtract(stale)
            events += stale.sorted(by: Self.routeOrder).map(Self.removal)
        }
        return events
    }

    /// Abandons an interrupted dump without concluding anything from it.
    mutating func abandonDump(_ kind: DumpKind) {
        switch kind {
        case .links: seenLinks = nil
        case .addresses: seenAddresses = nil
        case .routes: seenRoutes = nil
        }
    }

    // MARK: - Messages

    mutating func decodeItems(_ bytes: [UInt8]) -> [Item] {
        var items: [Item] = []
        for message in NetlinkMessages(bytes) {
            let header = message.header
            let body = message.body
            switch header.type {
            case UInt16(NLMSG_DONE):
                // Its payload is the dump's result as a negated errno (absent from old kernels).
                let result = bytes.int32(at: body.lowerBound, within: body) ?? 0
                items.append(.done(sequence: header.sequence, portID: header.portID,
                                   interrupted: header.flags & UInt16(NLM_F_DUMP_INTR) != 0,
                                   code: 0 &- result))
            case UInt16(NLMSG_ERROR):
                // errno 0 is an ACK.
                if let ack = NetlinkAck(bytes, message) {
                    items.append(.error(sequence: header.sequence, portID: header.portID, code: ack.errno))
                }
            case UInt16(NLMSG_OVERRUN):
                items.append(.overrun)
            case UInt16(RTM_NEWLINK), UInt16(RTM_DELLINK):
                items += decodeLink(bytes, body, removed: header.type == UInt16(RTM_DELLINK)).map(Item.event)
            case UInt16(RTM_NEWADDR), UInt16(RTM_DELADDR):
                items += decodeAddress(bytes, body, added: header.type == UInt16(RTM_NEWADDR)).map(Item.event)
            case UInt16(RTM_NEWROUTE), UInt16(RTM_DELROUTE):
                items += decodeRoute(bytes, body, added: header.type == UInt16(RTM_NEWROUTE)).map(Item.event)
            case UInt16(RTM_NEWNEIGH), UInt16(RTM_DELNEIGH):
                items += decodeNeighbour(bytes, body, removed: header.type == UInt16(RTM_DELNEIGH)).map(Item.event)
            default:
                break
            }
        }
        return items
    }

    private mutating func decodeLink(_ bytes: [UInt8], _ body: Range<Int>, removed: Bool) -> [NetlinkEvent] {
        // struct ifinfomsg: family u8, pad u8, type u16, index s32, flags u32, change u32.
        let fixed = 16
        guard body.count >= fixed,
              // Other families (AF_BRIDGE port messages) describe something else: a bridge DELLINK
              // only means the port left the bridge.
              bytes[body.lowerBound] == UInt8(AF_UNSPEC),
              let index = bytes.int32(at: body.lowerBound + 4, within: body),
              let flags = bytes.uint32(at: body.lowerBound + 8, within: body), index > 0
        else { return [] }
        var name: String?
        for attribute in NetlinkAttributes(bytes, body.lowerBound + fixed ..< body.upperBound)
        where attribute.type == UInt16(IFLA_IFNAME) {
            name = bytes.cString(in: attribute.payload)
        }
        if removed {
            return forgetLink(index, reportedName: name)
        }
        guard let name, !name.isEmpty else { return [] }
        seenLinks?.insert(index)
        var events: [NetlinkEvent] = []
        if let old = names[index], old != name {
            // A rename: consumers track links by name, so retire the old one and its addresses.
            for address in (addresses[index] ?? []).sorted(by: Self.addressOrder) {
                events.append(.address(interface: old, index: index, address: address, added: false))
            }
            events.append(.linkRemoved(name: old, index: index))
        }
        let renamed = names[index].map { $0 != name } ?? false
        names[index] = name
        let up = flags & UInt32(IFF_UP) != 0 && flags & vpnsup_iff_lower_up() != 0
        events.append(.link(name: name, index: index, up: up))
        if renamed {
            for address in (addresses[index] ?? []).sorted(by: Self.addressOrder) {
                events.append(.address(interface: name, index: index, address: address, added: true))
            }
        }
        if flags & UInt32(IFF_UP) == 0 {
            // An administratively down link loses its routes silently (no RTM_DELROUTE).
            events += dropRoutes(through: index)
        }
        return events
    }

    private mutating func decodeAddress(_ bytes: [UInt8], _ body: Range<Int>, added: Bool) -> [NetlinkEvent] {
        // struct ifaddrmsg: family u8, prefixlen u8, flags u8, scope u8, index u32.
        let fixed = 8
        guard body.count >= fixed, bytes[body.lowerBound] == UInt8(AF_INET),
              case let prefix = Int(bytes[body.lowerBound + 1]), prefix <= 32,
              let index = bytes.int32(at: body.lowerBound + 4, within: body), index > 0
        else { return [] }
        var local: IPv4Address?
        var peer: IPv4Address?
        var label: String?
        for attribute in NetlinkAttributes(bytes, body.lowerBound + fixed ..< body.upperBound) {
            switch attribute.type {
            case UInt16(IFA_LOCAL): local = bytes.ipv4(attribute.payload)
            case UInt16(IFA_ADDRESS): peer = bytes.ipv4(attribute.payload)
            case UInt16(IFA_LABEL): label = bytes.cString(in: attribute.payload)
            default: break
            }
        }
        // IFA_LOCAL is our end; IFA_ADDRESS is the peer on point-to-point links, else the same.
        guard let address = local ?? peer else { return [] }
        let interface = IPv4Interface(address: address, prefixLength: prefix)
        if added {
            addresses[index, default: []].insert(interface)
            seenAddresses?.insert(AddressKey(index: index, address: interface))
        } else {
            addresses[index]?.remove(interface)
            if addresses[index]?.isEmpty == true { addresses[index] = nil }
            seenAddresses?.remove(AddressKey(index: index, address: interface))
        }
        // The link's name, not the label: a label may be an alias such as "eth0:1".
        let name = names[index] ?? label ?? ""
        return [.address(interface: name, index: index, address: interface, added: added)]
    }

    private mutating func decodeRoute(_ bytes: [UInt8], _ body: Range<Int>, added: Bool) -> [NetlinkEvent] {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type (u8 each), flags u32.
        let fixed = 12
        guard body.count >= fixed, bytes[body.lowerBound] == UInt8(AF_INET),
              case let prefix = Int(bytes[body.lowerBound + 1]), prefix <= 32,
              bytes[body.lowerBound + 7] == UInt8(RTN_UNICAST),
              let flags = bytes.uint32(at: body.lowerBound + 8, within: body),
              flags & UInt32(RTM_F_CLONED) == 0
        else { return [] }
        var table = UInt32(bytes[body.lowerBound + 4])
        var destination = IPv4Address(0)
        var gateway: IPv4Address?
        var index: Int32?
        for attribute in NetlinkAttributes(bytes, body.lowerBound + fixed ..< body.upperBound) {
            switch attribute.type {
            case UInt16(RTA_TABLE.rawValue): table = bytes.uint32(at: attribute.payload.lowerBound, within: attribute.payload) ?? table
            case UInt16(RTA_DST.rawValue): destination = bytes.ipv4(attribute.payload) ?? destination
            case UInt16(RTA_GATEWAY.rawValue): gateway = bytes.ipv4(attribute.payload)
            case UInt16(RTA_OIF.rawValue): index = bytes.int32(at: attribute.payload.lowerBound, within: attribute.payload)
            default: break
            }
        }
        guard table == RT_TABLE_MAIN.rawValue else { return [] }
        let key = RouteKey(destination: IPv4Network(containing: destination, prefixLength: prefix),
                           gateway: gateway, index: index)
        if added {
            routes.insert(key)
            seenRoutes?.insert(key)
        } else {
            routes.remove(key)
            seenRoutes?.remove(key)
        }
        return [.route(destination: key.destination, gateway: gateway, interfaceIndex: index, added: added)]
    }

    private func decodeNeighbour(_ bytes: [UInt8], _ body: Range<Int>, removed: Bool) -> [NetlinkEvent] {
        // struct ndmsg: family u8, pad u8, pad u16, ifindex s32, state u16, flags u8, type u8.
        let fixed = 12
        guard body.count >= fixed, bytes[body.lowerBound] == UInt8(AF_INET),
              let index = bytes.int32(at: body.lowerBound + 4, within: body), index > 0,
              let nud = bytes.uint16(at: body.lowerBound + 8, within: body)
        else { return [] }
        var destination: IPv4Address?
        for attribute in NetlinkAttributes(bytes, body.lowerBound + fixed ..< body.upperBound)
        where attribute.type == UInt16(NDA_DST) {
            destination = bytes.ipv4(attribute.payload)
        }
        guard let destination else { return [] }
        return [.neighbour(interface: names[index] ?? "", index: index, address: destination,
                           state: removed ? .removed : NeighbourState(nud: nud))]
    }

    /// Forgets a link and reports it gone, with any addresses and routes still recorded on it.
    private mutating func forgetLink(_ index: Int32, reportedName: String? = nil) -> [NetlinkEvent] {
        seenLinks?.remove(index)
        guard let name = names.removeValue(forKey: index) ?? reportedName, !name.isEmpty else { return [] }
        var events: [NetlinkEvent] = []
        // The kernel sends RTM_DELADDR before RTM_DELLINK, so this is normally empty.
        for address in (addresses.removeValue(forKey: index) ?? []).sorted(by: Self.addressOrder) {
            events.append(.address(interface: name, index: index, address: address, added: false))
        }
        events += dropRoutes(through: index)
        events.append(.linkRemoved(name: name, index: index))
        return events
    }

    private mutating func dropRoutes(through index: Int32) -> [NetlinkEvent] {
        let gone = routes.filter { $0.index == index }
        routes.subtract(gone)
        return gone.sorted(by: Self.routeOrder).map(Self.removal)
    }

    private static func removal(_ key: RouteKey) -> NetlinkEvent {
        .route(destination: key.destination, gateway: key.gateway, interfaceIndex: key.index, added: false)
    }

    // Deterministic event order for synthesised removals (sets have none).
    private static func addressOrder(_ a: IPv4Interface, _ b: IPv4Interface) -> Bool {
        (a.address, a.prefixLength) < (b.address, b.prefixLength)
    }

    private static func routeOrder(_ a: RouteKey, _ b: RouteKey) -> Bool {
        (a.destination.address, a.destination.prefixLength, a.gateway?.value ?? 0, a.index ?? 0)
            < (b.destination.address, b.destination.prefixLength, b.gateway?.value ?? 0, b.index ?? 0)
    }

}

extension [UInt8] {
    /// An IPv4 address attribute: exactly four bytes in network order.
    func ipv4(_ payload: Range<Int>) -> IPv4Address? {
        guard payload.count == 4, payload.lowerBound >= 0, payload.upperBound <= count else { return nil }
        return IPv4Address(self[payload.lowerBound], self[payload.lowerBound + 1],
                           self[payload.lowerBound + 2], self[payload.lowerBound + 3])
    }
}
