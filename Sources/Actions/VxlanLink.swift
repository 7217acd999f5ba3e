import CNetlink
import Glibc
import StateMachine
import SystemSupport

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
    public static func ensure(_ parameters: Parameters) throws(SystemError) -> Outcome {
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
    private static func verify(_ parameters: Parameters) throws(SystemError) {
        let operation = "create \(parameters)"
        switch try current(parameters.name) {
        case .some(.some(let created)) where created.satisfies(parameters):
            return
        case .some(.some(let created)):
            throw SystemError(operation: operation, errno: EINVAL, message: "the kernel made it \(created)")
        default:
            throw SystemError(operation: operation, errno: ENODEV, message: "it cannot be read back")
        }
    }

    /// Sets the default destination (the all-zero FDB entry) in place; nil removes it.
    public static func setRemote(_ remote: IPv4Address?, on name: String) throws(SystemError) {
        let operation = "point \(name) at \(remote?.description ?? "nothing")"
        var request = NetlinkRequest.link(RTM_NEWLINK, index: try AddressConfigurator.index(of: name, operation: operation))
        request.appendNested(UInt16(IFLA_LINKINFO)) { info in
            info.appendAttribute(UInt16(IFLA_INFO_KIND), string: "vxlan")
            info.appendNested(UInt16(IFLA_INFO_DATA)) { data in
                data.appendAttribute(UInt16(IFLA_VXLAN_GROUP), (remote?.value ?? 0).bigEndian)
            }
        }
        try AddressConfigurator.requestSocket().transact(request, operation: operation)
    }

    /// Deletes the link; a missing one is no error.
    public static func delete(_ name: String) throws(SystemError) {
        let operation = "delete \(name)"
        var request = NetlinkRequest.link(RTM_DELLINK)
        request.appendAttribute(UInt16(IFLA_IFNAME), string: name)
        try AddressConfigurator.requestSocket().transact(request, operation: operation, tolerating: [ENODEV])
    }

    /// The link called `name`: nil when there is none, `.some(nil)` when it is not a vxlan link
    /// (or one this type cannot describe, such as an IPv6 underlay).
    public static func current(_ name: String) throws(SystemError) -> Parameters?? {
        let operation = "read \(name)"
        guard !name.isEmpty, name.utf8.count < Int(IFNAMSIZ) else { throw SystemError(operation: operation, errno: EINVAL) }
        let socket = try AddressConfigurator.requestSocket()
        var request = NetlinkRequest.link(RTM_GETLINK, acknowledged: false)
        request.appendAttribute(UInt16(IFLA_IFNAME), string: name)
        let answer = try socket.exchange(request, operation: operation) { bytes, sequence -> LinkAnswer? in
            if let link = VxlanAttributes.parse(bytes, sequence: sequence) { return .link(link) }
            return NetlinkAck.parse(bytes, sequence: sequence, portID: socket.portID).map(LinkAnswer.ack)
        }
        switch answer {
        case .ack(let ack) where ack.errno == ENODEV: return .none
        case .ack(let ack): throw SystemError(operation: operation, errno: ack.errno == 0 ? EPROTO : ack.errno, message: ack.message)
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

    private static func create(_ parameters: Parameters) throws(SystemError) {
        let operation = "create \(parameters)"
        guard !parameters.name.isEmpty, parameters.name.utf8.count < Int(IFNAMSIZ),
              (1...0xff_ffff).contains(parameters.vni), parameters.port != 0,
              parameters.macAddress.map({ $0.count == 6 }) ?? true else {
            throw SystemError(operation: operation, errno: EINVAL)
        }
        let underlay = try AddressConfigurator.index(of: parameters.underlay, operation: operation)
        var request = NetlinkRequest.link(RTM_NEWLINK, flags: NLM_F_CREATE | NLM_F_EXCL, up: true)
        request.appendAttribute(UInt16(IFLA_IFNAME), string: parameters.name)
        if let mac = parameters.macAddress { request.appendAttribute(UInt16(IFLA_ADDRESS), bytes: mac) }
        request.appendNested(UInt16(IFLA_LINKINFO)) { info in
            info.appendAttribute(UInt16(IFLA_INFO_KIND), string: "vxlan")
            info.appendNested(UInt16(IFLA_INFO_DATA)) { data in
                data.appendAttribute(UInt16(IFLA_VXLAN_ID), parameters.vni)
                data.appendAttribute(UInt16(IFLA_VXLAN_LINK), underlay)
                data.appendAttribute(UInt16(IFLA_VXLAN_PORT), u16: parameters.port.bigEndian)
                data.appendAttribute(UInt16(IFLA_VXLAN_LEARNING), u8: parameters.learning ? 1 : 0)
                if let local = parameters.local { data.appendAttribute(UInt16(IFLA_VXLAN_LOCAL), local.value.bigEndian) }
                if let remote = parameters.remote { data.appendAttribute(UInt16(IFLA_VXLAN_GROUP), remote.value.bigEndian) }
                if let ageing = parameters.ageing { data.appendAttribute(UInt16(IFLA_VXLAN_AGEING), ageing) }
            }
        }
        try AddressConfigurator.requestSocket().transact(request, operation: operation)
    }


    private static func interfaceName(_ index: UInt32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(IFNAMSIZ))
        guard if_indextoname(index, &buffer) != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The vxlan attributes of an RTM_NEWLINK answer, read with the shared codec (every length checked).
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
        guard let attributes = NetlinkAttributes(linkAnswerIn: bytes, sequence: sequence) else { return nil }
        var result = VxlanAttributes()
        for attribute in attributes {
            if attribute.type == UInt16(IFLA_ADDRESS), attribute.payload.count == 6 { result.macAddress = Array(bytes[attribute.payload]) }
            guard attribute.type == UInt16(IFLA_LINKINFO) else { continue }
            for info in NetlinkAttributes(bytes, attribute.payload) {
                if info.type == UInt16(IFLA_INFO_KIND) {
                    result.kind = bytes.cString(in: info.payload)
                } else if info.type == UInt16(IFLA_INFO_DATA) {
                    result.readData(bytes, info.payload)
                }
            }
        }
        return result
    }

    private mutating func readData(_ bytes: [UInt8], _ range: Range<Int>) {
        for attribute in NetlinkAttributes(bytes, range) {
            let payload = attribute.payload
            switch Int(attribute.type) {
            case Int(IFLA_VXLAN_ID): vni = bytes.exactly(UInt32.self, payload)
            case Int(IFLA_VXLAN_LINK): underlayIndex = bytes.exactly(UInt32.self, payload)
            case Int(IFLA_VXLAN_PORT): port = bytes.bigEndian(UInt16.self, payload)
            case Int(IFLA_VXLAN_LEARNING) where !payload.isEmpty: learning = bytes[payload.lowerBound] != 0
            case Int(IFLA_VXLAN_AGEING): ageing = bytes.exactly(UInt32.self, payload)
            case Int(IFLA_VXLAN_LOCAL): local = Self.address(bytes.bigEndian(UInt32.self, payload))
            case Int(IFLA_VXLAN_GROUP): remote = Self.address(bytes.bigEndian(UInt32.self, payload))
            default: break
            }
        }
    }

    /// 0.0.0.0 is the kernel's "none".
    private static func address(_ value: UInt32?) -> IPv4Address? {
        value.flatMap { $0 == 0 ? nil : IPv4Address($0) }
    }
}
