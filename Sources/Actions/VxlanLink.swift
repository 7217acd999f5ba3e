import CMnl
import Glibc
import StateMachine

/// The overlay's vxlan link (docs/kubernetes.md), over rtnetlink: created with its VNI, port,
/// underlay device and local address, address learning off on clients, and the default
/// destination (the all-zero FDB entry: where frames for any MAC go) set to the gateway's pod IP.
/// Re-pointing that destination when the gateway moves is one RTM_NEWLINK changing
/// IFLA_VXLAN_GROUP, which the kernel applies in place (it adds the new destination, then removes
/// the old, under one lock): never a moment without a destination; at most a frame sent to both
/// gateways. The kernel refuses to change a VNI or a port, so a link that differs in
/// those is deleted and created again.
public struct VxlanLink: Sendable {
    public struct Parameters: Hashable, Sendable, CustomStringConvertible {
        public var name: String
        public var vni: UInt32
        public var port: UInt16
        /// The underlay device (a pod's eth0): the encapsulated packets leave by it.
        public var underlay: String
        /// The source address of the encapsulated packets (the pod's IP); nil: chosen by routing.
        public var local: IPv4Address?
        /// The default destination: where frames for unknown MACs go (the gateway's pod IP).
        public var remote: IPv4Address?
        /// Learn remote MACs from received frames (the gateway: its clients); off on clients,
        /// which send to the default destination only.
        public var learning: Bool
        /// The link's MAC address (`OverlayAddressing.macAddress`); nil: the kernel's choice, and
        /// any MAC will do when an existing link is compared.
        public var macAddress: [UInt8]?
        /// Seconds a learned destination is kept unused (the kernel takes 0 for its default, 300).
        /// nil: the kernel's default, and any value will do when an existing link is compared.
        public var ageing: UInt32?

        public init(name: String, vni: UInt32, port: UInt16, underlay: String, local: IPv4Address? = nil,
                    remote: IPv4Address? = nil, learning: Bool, macAddress: [UInt8]? = nil, ageing: UInt32? = nil) {
            self.name = name
            self.vni = vni
            self.port = port
            self.underlay = underlay
            self.local = local
            self.remote = remote
            self.learning = learning
            self.macAddress = macAddress
            self.ageing = ageing
        }

        /// The link an overlay's end wants (`JoinPlan.link(towards:)`, `GatewayOverlay.link`).
        public init(_ link: OverlayLink) {
            self.init(name: link.name, vni: link.vni, port: link.port, underlay: link.underlay, local: link.local,
                      remote: link.remote, learning: link.learning, macAddress: link.macAddress, ageing: link.ageing)
        }

        public var description: String {
            "\(name) vni \(vni) port \(port) dev \(underlay)" + (local.map { " local \($0)" } ?? "")
                + (remote.map { " remote \($0)" } ?? "") + (learning ? "" : " nolearning")
                + (macAddress.map { " address \(VxlanLink.macText($0))" } ?? "") + (ageing.map { " ageing \($0)" } ?? "")
        }

        /// Whether this link, as read from the kernel, is what `wanted` describes (a MAC or an
        /// ageing `wanted` leaves to the kernel is any); the default destination (which can change
        /// in place) is left out with `ignoringRemote`.
        public func satisfies(_ wanted: Parameters, ignoringRemote: Bool = false) -> Bool {
            var mine = self
            if ignoringRemote { mine.remote = wanted.remote }
            if wanted.macAddress == nil { mine.macAddress = nil }
            if wanted.ageing == nil { mine.ageing = nil }
            return mine == wanted
        }
    }

    /// `02:76:ac:1e:00:01`.
    public static func macText(_ address: [UInt8]) -> String {
        address.map { byte in
            let text = String(byte, radix: 16)
            return text.count == 1 ? "0" + text : text
        }.joined(separator: ":")
    }

    /// What `ensure` did.
    public enum Outcome: Hashable, Sendable {
        case created, unchanged, repointed, replaced
    }

    /// Makes the link `parameters` describe exist, up: created when missing, re-pointed in place
    /// when only the default destination differs, deleted and created again when anything else
    /// does (or a link of that name is not a vxlan link).
    @discardableResult
    public static func ensure(_ parameters: Parameters) throws -> Outcome {
        switch try current(parameters.name) {
        case .none:
            try create(parameters)
            try verify(parameters)
            return .created
        case .some(.some(let existing)) where existing.satisfies(parameters):
            try AddressConfigurator().setLinkUp(parameters.name)
            return .unchanged
        case .some(.some(let existing)) where existing.satisfies(parameters, ignoringRemote: true):
            try setRemote(parameters.remote, on: parameters.name)
            try AddressConfigurator().setLinkUp(parameters.name)
            return .repointed
        case .some:
            try delete(parameters.name)
            try create(parameters)
            try verify(parameters)
            return .replaced
        }
    }

    /// A link just created reads back as asked; otherwise the next `ensure` would replace it again
    /// (and its removal would be reported as a lost link, to be ensured again...).
    private static func verify(_ parameters: Parameters) throws {
        let operation = "create \(parameters)"
        switch try current(parameters.name) {
        case .some(.some(let created)) where created.satisfies(parameters):
            return
        case .some(.some(let created)):
            throw NetlinkError(operation: operation, errno: EINVAL, message: "the kernel made it \(created)")
        default:
            throw NetlinkError(operation: operation, errno: ENODEV, message: "it cannot be read back")
        }
    }

    /// Sets the default destination (the all-zero FDB entry) in place; nil removes it.
    public static func setRemote(_ remote: IPv4Address?, on name: String) throws {
        let operation = "point \(name) at \(remote?.description ?? "nothing")"
        let index = try index(of: name, operation: operation)
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: []) { header in
            putLinkHeader(header, type: RTM_NEWLINK, flags: 0, index: index)
            let info = mnl_attr_nest_start(header, UInt16(IFLA_LINKINFO))
            mnl_attr_put_strz(header, UInt16(IFLA_INFO_KIND), "vxlan")
            let data = mnl_attr_nest_start(header, UInt16(IFLA_INFO_DATA))
            mnl_attr_put_u32(header, UInt16(IFLA_VXLAN_GROUP), (remote?.value ?? 0).bigEndian)
            mnl_attr_nest_end(header, data)
            mnl_attr_nest_end(header, info)
        }
    }

    /// Deletes the link; a missing one is no error.
    public static func delete(_ name: String) throws {
        let operation = "delete \(name)"
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: [ENODEV]) { header in
            putLinkHeader(header, type: RTM_DELLINK, flags: 0, index: 0)
            mnl_attr_put_strz(header, UInt16(IFLA_IFNAME), name)
        }
    }

    /// The link called `name`: nil when there is none, `.some(nil)` when it is not a vxlan link
    /// (or one this type cannot describe, such as an IPv6 underlay).
    public static func current(_ name: String) throws -> Parameters?? {
        let operation = "read \(name)"
        guard !name.isEmpty, name.utf8.count < Int(IFNAMSIZ) else { throw NetlinkError(operation: operation, errno: EINVAL) }
        let socket = try RouteRequestSocket(operation: operation)
        let answer = try socket.exchange(operation: operation, build: { header in
            putLinkHeader(header, type: RTM_GETLINK, flags: 0, index: 0, acknowledged: false)
            mnl_attr_put_strz(header, UInt16(IFLA_IFNAME), name)
        }, answer: { bytes, sequence -> LinkAnswer? in
            if let link = VxlanAttributes.parse(bytes, sequence: sequence) { return .link(link) }
            return NetlinkAck.parse(bytes, sequence: sequence, portID: socket.portID).map(LinkAnswer.ack)
        })
        switch answer {
        case .ack(let ack) where ack.errno == ENODEV: return .none
        case .ack(let ack): throw NetlinkError(operation: operation, errno: ack.errno == 0 ? EPROTO : ack.errno, message: ack.message)
        case .link(let link):
            guard link.kind == "vxlan", let vni = link.vni, let port = link.port, let underlayIndex = link.underlayIndex,
                  let underlay = interfaceName(underlayIndex) else { return .some(nil) }
            return .some(Parameters(name: name, vni: vni, port: port, underlay: underlay, local: link.local,
                                    remote: link.remote, learning: link.learning, macAddress: link.macAddress,
                                    ageing: link.ageing))
        }
    }

    // MARK: Requests

    private enum LinkAnswer { case link(VxlanAttributes), ack(NetlinkAck) }

    private static func create(_ parameters: Parameters) throws {
        let operation = "create \(parameters)"
        guard !parameters.name.isEmpty, parameters.name.utf8.count < Int(IFNAMSIZ),
              (1...0xff_ffff).contains(parameters.vni), parameters.port != 0,
              parameters.macAddress.map({ $0.count == 6 }) ?? true else {
            throw NetlinkError(operation: operation, errno: EINVAL)
        }
        let underlay = try index(of: parameters.underlay, operation: operation)
        let socket = try RouteRequestSocket(operation: operation)
        try socket.transact(operation: operation, tolerating: []) { header in
            putLinkHeader(header, type: RTM_NEWLINK, flags: NLM_F_CREATE | NLM_F_EXCL, index: 0, up: true)
            mnl_attr_put_strz(header, UInt16(IFLA_IFNAME), parameters.name)
            if let mac = parameters.macAddress { mnl_attr_put(header, UInt16(IFLA_ADDRESS), mac.count, mac) }
            let info = mnl_attr_nest_start(header, UInt16(IFLA_LINKINFO))
            mnl_attr_put_strz(header, UInt16(IFLA_INFO_KIND), "vxlan")
            let data = mnl_attr_nest_start(header, UInt16(IFLA_INFO_DATA))
            mnl_attr_put_u32(header, UInt16(IFLA_VXLAN_ID), parameters.vni)
            mnl_attr_put_u32(header, UInt16(IFLA_VXLAN_LINK), underlay)
            mnl_attr_put_u16(header, UInt16(IFLA_VXLAN_PORT), parameters.port.bigEndian)
            mnl_attr_put_u8(header, UInt16(IFLA_VXLAN_LEARNING), parameters.learning ? 1 : 0)
            if let local = parameters.local { mnl_attr_put_u32(header, UInt16(IFLA_VXLAN_LOCAL), local.value.bigEndian) }
            if let remote = parameters.remote { mnl_attr_put_u32(header, UInt16(IFLA_VXLAN_GROUP), remote.value.bigEndian) }
            if let ageing = parameters.ageing { mnl_attr_put_u32(header, UInt16(IFLA_VXLAN_AGEING), ageing) }
            mnl_attr_nest_end(header, data)
            mnl_attr_nest_end(header, info)
        }
    }

    private static func putLinkHeader(_ header: UnsafeMutablePointer<nlmsghdr>, type: Int, flags: Int32, index: UInt32,
                                      up: Bool = false, acknowledged: Bool = true) {
        header.pointee.nlmsg_type = UInt16(type)
        header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | (acknowledged ? NLM_F_ACK : 0) | flags)
        let message = mnl_nlmsg_put_extra_header(header, MemoryLayout<ifinfomsg>.size)!
            .assumingMemoryBound(to: ifinfomsg.self)
        message.pointee.ifi_family = UInt8(AF_UNSPEC)
        message.pointee.ifi_index = Int32(bitPattern: index)
        if up {
            message.pointee.ifi_flags = UInt32(IFF_UP)
            message.pointee.ifi_change = UInt32(IFF_UP)
        }
    }

    private static func index(of interface: String, operation: String) throws -> UInt32 {
        let index = if_nametoindex(interface)
        guard index != 0 else { throw NetlinkError(operation: operation, errno: errno == 0 ? ENODEV : errno) }
        return index
    }

    private static func interfaceName(_ index: UInt32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(IFNAMSIZ))
        guard if_indextoname(index, &buffer) != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The vxlan attributes of an RTM_NEWLINK answer, read by hand with every length checked.
struct VxlanAttributes: Equatable {
    var kind: String?
    var vni: UInt32?
    var port: UInt16?
    var underlayIndex: UInt32?
    var local: IPv4Address?
    var remote: IPv4Address?
    var learning = true
    var macAddress: [UInt8]?
    var ageing: UInt32?

    /// The RTM_NEWLINK answer to `sequence` in `bytes`; nil for anything else or cut short.
    static func parse(_ bytes: [UInt8], sequence: UInt32) -> VxlanAttributes? {
        let headerSize = 16, linkInfoSize = 16
        var offset = 0
        while let length = bytes.u32(offset).map(Int.init), length >= headerSize, length <= bytes.count - offset {
            let end = offset + length
            if bytes.u16(offset + 4) == UInt16(RTM_NEWLINK), bytes.u32(offset + 8) == sequence {
                guard end >= offset + headerSize + linkInfoSize else { return nil }
                var result = VxlanAttributes()
                for (type, start, stop) in attributes(bytes, from: offset + headerSize + linkInfoSize, to: end) {
                    if type == UInt16(IFLA_ADDRESS), stop - start == 6 { result.macAddress = Array(bytes[start ..< stop]) }
                    guard type == UInt16(IFLA_LINKINFO) else { continue }
                    for (infoType, infoStart, infoStop) in attributes(bytes, from: start, to: stop) {
                        if infoType == UInt16(IFLA_INFO_KIND) {
                            result.kind = String(decoding: bytes[infoStart ..< infoStop].prefix { $0 != 0 }, as: UTF8.self)
                        } else if infoType == UInt16(IFLA_INFO_DATA) {
                            result.readData(bytes, from: infoStart, to: infoStop)
                        }
                    }
                }
                return result
            }
            offset += (length + 3) & ~3
        }
        return nil
    }

    private mutating func readData(_ bytes: [UInt8], from start: Int, to stop: Int) {
        for (type, start, stop) in Self.attributes(bytes, from: start, to: stop) {
            let size = stop - start
            switch Int(type) {
            case Int(IFLA_VXLAN_ID) where size == 4: vni = bytes.u32(start, end: stop)
            case Int(IFLA_VXLAN_LINK) where size == 4: underlayIndex = bytes.u32(start, end: stop)
            case Int(IFLA_VXLAN_PORT) where size == 2: port = bytes.u16(start, end: stop).map { UInt16(bigEndian: $0) }
            case Int(IFLA_VXLAN_LEARNING) where size >= 1: learning = bytes[start] != 0
            case Int(IFLA_VXLAN_AGEING) where size == 4: ageing = bytes.u32(start, end: stop)
            case Int(IFLA_VXLAN_LOCAL) where size == 4:
                local = bytes.u32(start, end: stop).map { IPv4Address(UInt32(bigEndian: $0)) }.flatMap { $0.value == 0 ? nil : $0 }
            case Int(IFLA_VXLAN_GROUP) where size == 4:
                remote = bytes.u32(start, end: stop).map { IPv4Address(UInt32(bigEndian: $0)) }.flatMap { $0.value == 0 ? nil : $0 }
            default: break
            }
        }
    }

    /// (type without the nested/byte-order flags, payload start, payload end) of each attribute.
    private static func attributes(_ bytes: [UInt8], from start: Int, to end: Int) -> [(UInt16, Int, Int)] {
        var result: [(UInt16, Int, Int)] = []
        var offset = start
        while let length = bytes.u16(offset, end: end).map(Int.init), length >= 4, length <= end - offset,
              let type = bytes.u16(offset + 2, end: end) {
            result.append((type & 0x3fff, offset + 4, offset + length))
            offset += (length + 3) & ~3
        }
        return result
    }
}

// fileprivate: other files in this module have their own byte helpers (H2 folds them into one).
fileprivate extension [UInt8] {
    func u16(_ offset: Int, end: Int? = nil) -> UInt16? { load(offset, end: end) }
    func u32(_ offset: Int, end: Int? = nil) -> UInt32? { load(offset, end: end) }

    private func load<T: FixedWidthInteger>(_ offset: Int, end: Int?) -> T? {
        let limit = Swift.min(end ?? count, count)
        guard offset >= 0, offset <= limit - MemoryLayout<T>.size else { return nil }
        return withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
    }
}
