import StateMachine
import Testing
@testable import Watchers

/// Hand-built rtnetlink messages. The numbers are the kernel's ABI, written out independently of
/// the headers the decoder uses, so a wrong constant there shows up here.
private enum Wire {
    static let newLink: UInt16 = 16, delLink: UInt16 = 17
    static let newAddr: UInt16 = 20, delAddr: UInt16 = 21
    static let newRoute: UInt16 = 24, delRoute: UInt16 = 25
    static let newNeigh: UInt16 = 28, delNeigh: UInt16 = 29
    static let done: UInt16 = 3, error: UInt16 = 2
    static let up: UInt32 = 0x1, lowerUp: UInt32 = 0x10000
    static let inet: UInt8 = 2, inet6: UInt8 = 10, bridge: UInt8 = 7

    static func bytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

    static func padded(_ bytes: [UInt8]) -> [UInt8] { bytes + [UInt8](repeating: 0, count: (4 - bytes.count % 4) % 4) }

    static func attribute(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        padded(bytes(UInt16(4 + payload.count)) + bytes(type) + payload)
    }

    static func string(_ type: UInt16, _ text: String) -> [UInt8] { attribute(type, Array(text.utf8) + [0]) }

    static func message(_ type: UInt16, flags: UInt16 = 0, sequence: UInt32 = 0, portID: UInt32 = 0,
                        _ body: [UInt8]) -> [UInt8] {
        padded(bytes(UInt32(16 + body.count)) + bytes(type) + bytes(flags) + bytes(sequence) + bytes(portID) + body)
    }

    static func link(_ type: UInt16 = newLink, index: Int32, flags: UInt32 = 0, name: String?,
                     family: UInt8 = 0) -> [UInt8] {
        let info = [family, 0] + bytes(UInt16(1)) + bytes(index) + bytes(flags) + bytes(UInt32(0xffff_ffff))
        return message(type, info + (name.map { string(3, $0) } ?? []))  // IFLA_IFNAME = 3
    }

    static func address(_ type: UInt16 = newAddr, index: UInt32, prefix: UInt8, local: [UInt8]? = nil,
                        peer: [UInt8]? = nil, label: String? = nil, family: UInt8 = inet) -> [UInt8] {
        var body = [family, prefix, 0x80, 0] + bytes(index)
        if let peer { body += attribute(1, peer) }           // IFA_ADDRESS
        if let local { body += attribute(2, local) }         // IFA_LOCAL
        if let label { body += string(3, label) }            // IFA_LABEL
        return message(type, body)
    }

    static func route(_ type: UInt16 = newRoute, destination: [UInt8]?, prefix: UInt8, oif: UInt32?,
                      gateway: [UInt8]? = nil, table: UInt8 = 254, routeType: UInt8 = 1) -> [UInt8] {
        var body = [inet, prefix, 0, 0, table, 2, 0, routeType] + bytes(UInt32(0))
        if let destination { body += attribute(1, destination) }  // RTA_DST
        if let oif { body += attribute(4, bytes(oif)) }           // RTA_OIF
        if let gateway { body += attribute(5, gateway) }          // RTA_GATEWAY
        return message(type, body)
    }

    /// struct ndmsg (family, pads, ifindex, state, flags, type) and NDA_DST.
    static func neighbour(_ type: UInt16 = newNeigh, index: Int32, state: UInt16, destination: [UInt8]?,
                          family: UInt8 = inet) -> [UInt8] {
        var body = [family, 0, 0, 0] + bytes(index) + bytes(state) + [0, 1]
        if let destination { body += attribute(1, destination) }  // NDA_DST
        return message(type, body)
    }
}

private func interface(_ text: String) -> IPv4Interface { IPv4Interface(text)! }
private func network(_ text: String) -> IPv4Network { IPv4Interface(text)!.network }

@Suite struct NetlinkDecoderTests {
    @Test func newLinkReportsNameIndexAndUpOnlyWithCarrier() {
        var decoder = NetlinkDecoder()
        #expect(decoder.decode(Wire.link(index: 3, flags: Wire.up | Wire.lowerUp, name: "eth0"))
                == [.link(name: "eth0", index: 3, up: true)])
        #expect(decoder.decode(Wire.link(index: 3, flags: Wire.up, name: "eth0"))
                == [.link(name: "eth0", index: 3, up: false)])
        #expect(decoder.decode(Wire.link(index: 3, flags: Wire.lowerUp, name: "eth0"))
                == [.link(name: "eth0", index: 3, up: false)])
    }

    @Test func delLinkReportsRemovalByKnownOrGivenName() {
        var decoder = NetlinkDecoder()
        _ = decoder.decode(Wire.link(index: 4, name: "tun0"))
        // A DELLINK without IFLA_IFNAME still names the link the decoder knows.
        #expect(decoder.decode(Wire.link(Wire.delLink, index: 4, name: nil)) == [.linkRemoved(name: "tun0", index: 4)])
        #expect(decoder.decode(Wire.link(Wire.delLink, index: 9, name: "eth9")) == [.linkRemoved(name: "eth9", index: 9)])
        #expect(decoder.decode(Wire.link(Wire.delLink, index: 10, name: nil)) == [])
    }

    @Test func bridgePortMessagesAreNotLinkChanges() {
        var decoder = NetlinkDecoder()
        _ = decoder.decode(Wire.link(index: 5, flags: Wire.up | Wire.lowerUp, name: "veth5"))
        #expect(decoder.decode(Wire.link(Wire.delLink, index: 5, name: "veth5", family: Wire.bridge)) == [])
        #expect(decoder.decode(Wire.link(index: 5, name: "veth5", family: Wire.bridge)) == [])
    }

    @Test func renameRetiresTheOldName() {
        var decoder = NetlinkDecoder()
        _ = decoder.decode(Wire.link(index: 6, name: "eth1"))
        _ = decoder.decode(Wire.address(index: 6, prefix: 24, local: [172, 22, 0, 1]))
        #expect(decoder.decode(Wire.link(index: 6, name: "lan")) == [
            .address(interface: "eth1", index: 6, address: interface("172.22.0.1/24"), added: false),
            .linkRemoved(name: "eth1", index: 6),
            .link(name: "lan", index: 6, up: false),
            .address(interface: "lan", index: 6, address: interface("172.22.0.1/24"), added: true),
        ])
    }

    @Test func addressesTakeTheLinkNameAndPreferTheLocalAddress() {
        var decoder = NetlinkDecoder()
        _ = decoder.decode(Wire.link(index: 2, name: "eth1"))
        #expect(decoder.decode(Wire.address(index: 2, prefix: 24, local: [172, 22, 0, 1], peer: [172, 22, 0, 1],
                                            label: "eth1:gw"))
                == [.address(interface: "eth1", index: 2, address: interface("172.22.0.1/24"), added: true)])
        // Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL our end.
        #expect(decoder.decode(Wire.address(index: 2, prefix: 32, local: [10, 8, 0, 6], peer: [10, 8, 0, 5]))
                == [.address(interface: "eth1", index: 2, address: interface("10.8.0.6/32"), added: true)])
        #expect(decoder.decode(Wire.address(Wire.delAddr, index: 2, prefix: 24, local: [172, 22, 0, 1]))
                == [.address(interface: "eth1", index: 2, address: interface("172.22.0.1/24"), added: false)])
        // Only IFA_ADDRESS present.
        #expect(decoder.decode(Wire.address(index: 2, prefix: 16, peer: [192, 168, 1, 1]))
                == [.address(interface: "eth1", index: 2, address: interface("192.168.1.1/16"), added: true)])
    }

    @Test func addressesOfUnknownLinksUseTheLabelOrNothing() {
        var decoder = NetlinkDecoder()
        #expect(decoder.decode(Wire.address(index: 7, prefix: 24, local: [10, 0, 0, 1], label: "eth7"))
                == [.address(interface: "eth7", index: 7, address: interface("10.0.0.1/24"), added: true)])
        #expect(decoder.decode(Wire.address(index: 8, prefix: 24, local: [10, 0, 1, 1]))
                == [.address(interface: "", index: 8, address: interface("10.0.1.1/24"), added: true)])
    }

    @Test func ignoresWhatIsNotAnIPv4Address() {
        var decoder = NetlinkDecoder()
        let v6 = [UInt8](repeating: 0xfe, count: 16)
        #expect(decoder.decode(Wire.address(index: 2, prefix: 64, local: v6, family: Wire.inet6)) == [])
        #expect(decoder.decode(Wire.address(index: 2, prefix: 33, local: [10, 0, 0, 1])) == [])
        #expect(decoder.decode(Wire.address(index: 2, prefix: 24, local: [10, 0, 0, 1, 9])) == [])
        #expect(decoder.decode(Wire.address(index: 2, prefix: 24)) == [])
        #expect(decoder.decode(Wire.address(index: 0, prefix: 24, local: [10, 0, 0, 1])) == [])
    }

    @Test func decodesSeveralMessagesInOneBuffer() {
        var decoder = NetlinkDecoder()
        let buffer = Wire.link(index: 2, flags: Wire.up | Wire.lowerUp, name: "eth0")
            + Wire.address(index: 2, prefix: 24, local: [192, 0, 2, 10])
            + Wire.message(Wire.done, flags: 2, sequence: 1, Wire.bytes(Int32(0)))
        #expect(decoder.decode(buffer) == [
            .link(name: "eth0", index: 2, up: true),
            .address(interface: "eth0", index: 2, address: interface("192.0.2.10/24"), added: true),
        ])
    }

    @Test func routesInTheMainTableOnly() {
        var decoder = NetlinkDecoder()
        #expect(decoder.decode(Wire.route(destination: [172, 22, 0, 0], prefix: 24, oif: 3))
                == [.route(destination: network("172.22.0.0/24"), gateway: nil, interfaceIndex: 3, added: true)])
        #expect(decoder.decode(Wire.route(destination: nil, prefix: 0, oif: 2, gateway: [192, 0, 2, 1]))
                == [.route(destination: network("0.0.0.0/0"), gateway: IPv4Address(192, 0, 2, 1),
                           interfaceIndex: 2, added: true)])
        #expect(decoder.decode(Wire.route(destination: [172, 22, 0, 1], prefix: 32, oif: 3, table: 255,
                                          routeType: 2)) == [])  // local table, RTN_LOCAL
        #expect(decoder.decode(Wire.route(destination: [10, 0, 0, 0], prefix: 40, oif: 3)) == [])
        #expect(decoder.decode(Wire.route(Wire.delRoute, destination: [172, 22, 0, 0], prefix: 24, oif: 3))
                == [.route(destination: network("172.22.0.0/24"), gateway: nil, interfaceIndex: 3, added: false)])
    }

    @Test func linkSetDownDropsItsRoutesAndDelLinkItsState() {
        var decoder = NetlinkDecoder()
        _ = decoder.decode(Wire.link(index: 3, flags: Wire.up | Wire.lowerUp, name: "tun0"))
        _ = decoder.decode(Wire.route(destination: [10, 8, 0, 0], prefix: 24, oif: 3))
        _ = decoder.decode(Wire.route(destination: [10, 9, 0, 0], prefix: 24, oif: 4))
        // The kernel flushes a downed link's routes without RTM_DELROUTE.
        #expect(decoder.decode(Wire.link(index: 3, name: "tun0")) == [
            .link(name: "tun0", index: 3, up: false),
            .route(destination: network("10.8.0.0/24"), gateway: nil, interfaceIndex: 3, added: false),
        ])
        _ = decoder.decode(Wire.address(index: 3, prefix: 24, local: [10, 8, 0, 6]))
        #expect(decoder.decode(Wire.link(Wire.delLink, index: 3, name: "tun0")) == [
            .address(interface: "tun0", index: 3, address: interface("10.8.0.6/24"), added: false),
            .linkRemoved(name: "tun0", index: 3),
        ])
    }

    @Test func aCompleteRedumpReportsWhatVanished() {
        var decoder = NetlinkDecoder()
        _ = decoder.decode(Wire.link(index: 1, flags: Wire.up | Wire.lowerUp, name: "lo"))
        _ = decoder.decode(Wire.link(index: 2, flags: Wire.up | Wire.lowerUp, name: "eth0"))
        _ = decoder.decode(Wire.link(index: 3, name: "tun0"))
        _ = decoder.decode(Wire.address(index: 2, prefix: 24, local: [192, 0, 2, 10]))
        _ = decoder.decode(Wire.address(index: 2, prefix: 24, local: [192, 0, 2, 11]))
        _ = decoder.decode(Wire.route(destination: [192, 0, 2, 0], prefix: 24, oif: 2))

        // Events were lost; the re-dump no longer has tun0, one address and the route.
        decoder.beginDump(.links)
        _ = decoder.decode(Wire.link(index: 1, flags: Wire.up | Wire.lowerUp, name: "lo"))
        _ = decoder.decode(Wire.link(index: 2, flags: Wire.up | Wire.lowerUp, name: "eth0"))
        #expect(decoder.endDump(.links) == [.linkRemoved(name: "tun0", index: 3)])
        decoder.beginDump(.addresses)
        _ = decoder.decode(Wire.address(index: 2, prefix: 24, local: [192, 0, 2, 11]))
        #expect(decoder.endDump(.addresses)
                == [.address(interface: "eth0", index: 2, address: interface("192.0.2.10/24"), added: false)])
        decoder.beginDump(.routes)
        #expect(decoder.endDump(.routes)
                == [.route(destination: network("192.0.2.0/24"), gateway: nil, interfaceIndex: 2, added: false)])
        // An interrupted dump concludes nothing.
        decoder.beginDump(.links)
        decoder.abandonDump(.links)
        #expect(decoder.endDump(.links) == [])
    }

    @Test func reportsDoneAndErrorsToTheWatcher() {
        var decoder = NetlinkDecoder()
        let buffer = Wire.message(Wire.done, flags: 0x2 | 0x10, sequence: 7, portID: 99, Wire.bytes(Int32(0)))
            + Wire.message(Wire.done, flags: 0x2, sequence: 6, portID: 99, Wire.bytes(Int32(-105)))
            + Wire.message(Wire.done, flags: 0x2, sequence: 5, portID: 99, [])  // kernels before 4.x sent no errno
            + Wire.message(Wire.error, sequence: 8, portID: 99, Wire.bytes(Int32(-16)) + [UInt8](repeating: 0, count: 16))
            + Wire.message(Wire.error, sequence: 9, portID: 99, Wire.bytes(Int32.min))
            + Wire.message(Wire.error, sequence: 10, portID: 99, [1, 2])  // too short for an errno
        #expect(decoder.decodeItems(buffer) == [
            .done(sequence: 7, portID: 99, interrupted: true, code: 0),
            .done(sequence: 6, portID: 99, interrupted: false, code: 105),
            .done(sequence: 5, portID: 99, interrupted: false, code: 0),
            .error(sequence: 8, portID: 99, code: 16),
            .error(sequence: 9, portID: 99, code: Int32.min),
        ])
    }

    // MARK: - Malformed input

    @Test func everyTruncationYieldsAPrefixOfTheEvents() {
        let buffer = Wire.link(index: 2, flags: Wire.up | Wire.lowerUp, name: "eth0")
            + Wire.address(index: 2, prefix: 24, local: [192, 0, 2, 10], label: "eth0")
            + Wire.route(destination: [192, 0, 2, 0], prefix: 24, oif: 2)
        var reference = NetlinkDecoder()
        let all = reference.decode(buffer)
        #expect(all.count == 3)
        for length in 0 ... buffer.count {
            var decoder = NetlinkDecoder()
            let events = decoder.decode(Array(buffer[..<length]))
            #expect(Array(all.prefix(events.count)) == events, "cut at \(length)")
        }
    }

    @Test func lyingLengthsAreRejected() {
        var decoder = NetlinkDecoder()
        var message = Wire.link(index: 2, name: "eth0")
        for length: UInt32 in [0, 1, 15, UInt32(message.count) + 1, 0xffff_ffff] {
            message.replaceSubrange(0 ..< 4, with: Wire.bytes(length))
            #expect(decoder.decode(message) == [], "nlmsg_len \(length)")
        }
        // An attribute claiming more than its message holds is dropped, so is the nameless link.
        var attribute = Wire.link(index: 2, name: "eth0")
        attribute.replaceSubrange(32 ..< 34, with: Wire.bytes(UInt16(200)))
        #expect(decoder.decode(attribute) == [])
        // Zero-length attribute: must not loop forever.
        attribute.replaceSubrange(32 ..< 34, with: Wire.bytes(UInt16(0)))
        #expect(decoder.decode(attribute) == [])
        // A body shorter than its fixed header.
        #expect(decoder.decode(Wire.message(Wire.newLink, [0, 0, 1, 0])) == [])
        #expect(decoder.decode(Wire.message(Wire.newAddr, [2, 24])) == [])
        #expect(decoder.decode(Wire.message(Wire.newRoute, [2, 24, 0, 0])) == [])
        #expect(decoder.decode([]) == [])
    }

    @Test func garbageNeverTraps() {
        var random = SplitMix64(seed: 0x5eed)
        let valid = Wire.link(index: 2, flags: Wire.up | Wire.lowerUp, name: "eth0")
            + Wire.address(index: 2, prefix: 24, local: [192, 0, 2, 10], label: "eth0")
            + Wire.route(destination: [192, 0, 2, 0], prefix: 24, oif: 2, gateway: [192, 0, 2, 1])
            + Wire.message(Wire.error, Wire.bytes(Int32(-1)))
        var decoder = NetlinkDecoder()
        for round in 0 ..< 20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                // Pure noise, of every small length.
                bytes = (0 ..< Int(random.next() % 200)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            } else {
                // Valid messages with a few bytes flipped: reaches far deeper than noise.
                bytes = valid
                for _ in 0 ..< 1 + Int(random.next() % 4) {
                    bytes[Int(random.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: random.next())
                }
            }
            _ = decoder.decodeItems(bytes)
        }
    }
}

/// A small deterministic generator, so a failing round can be replayed.
private struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

}

extension NetlinkDecoderTests {
    @Test func neighboursReportTheirStateOnTheLinkByName() {
        var decoder = NetlinkDecoder()
        _ = decoder.decode(Wire.link(index: 7, flags: Wire.up | Wire.lowerUp, name: "vxlan0"))
        let gateway = IPv4Address(172, 30, 0, 1)
        // NUD_FAILED 0x20, NUD_REACHABLE 0x02, NUD_STALE 0x04, NUD_INCOMPLETE 0x01, NUD_PERMANENT 0x80.
        #expect(decoder.decode(Wire.neighbour(index: 7, state: 0x20, destination: [172, 30, 0, 1]))
                == [.neighbour(interface: "vxlan0", index: 7, address: gateway, state: .failed)])
        #expect(decoder.decode(Wire.neighbour(index: 7, state: 0x02, destination: [172, 30, 0, 1]))
                == [.neighbour(interface: "vxlan0", index: 7, address: gateway, state: .reachable)])
        #expect(decoder.decode(Wire.neighbour(index: 7, state: 0x04, destination: [172, 30, 0, 1]))
                == [.neighbour(interface: "vxlan0", index: 7, address: gateway, state: .stale)])
        #expect(decoder.decode(Wire.neighbour(index: 7, state: 0x01, destination: [172, 30, 0, 1]))
                == [.neighbour(interface: "vxlan0", index: 7, address: gateway, state: .incomplete)])
        #expect(decoder.decode(Wire.neighbour(index: 7, state: 0x80, destination: [172, 30, 0, 1]))
                == [.neighbour(interface: "vxlan0", index: 7, address: gateway, state: .permanent)])
        #expect(decoder.decode(Wire.neighbour(Wire.delNeigh, index: 7, state: 0x04, destination: [172, 30, 0, 1]))
                == [.neighbour(interface: "vxlan0", index: 7, address: gateway, state: .removed)])
        // An index no link message named: reported without a name.
        #expect(decoder.decode(Wire.neighbour(index: 9, state: 0x20, destination: [10, 0, 0, 1]))
                == [.neighbour(interface: "", index: 9, address: IPv4Address(10, 0, 0, 1), state: .failed)])
    }

    @Test func neighboursOfOtherFamiliesOrWithoutADestinationAreSkipped() {
        var decoder = NetlinkDecoder()
        // AF_BRIDGE: an FDB entry, not an IPv4 neighbour; IPv6 neighbours; no NDA_DST; a cut body.
        #expect(decoder.decode(Wire.neighbour(index: 7, state: 0x80, destination: [1, 2, 3, 4, 5, 6], family: Wire.bridge)) == [])
        #expect(decoder.decode(Wire.neighbour(index: 7, state: 0x20, destination: [UInt8](repeating: 0, count: 16), family: Wire.inet6)) == [])
        #expect(decoder.decode(Wire.neighbour(index: 7, state: 0x20, destination: nil)) == [])
        #expect(decoder.decode(Wire.message(Wire.newNeigh, [Wire.inet, 0, 0, 0, 7, 0])) == [])
        // A destination that is not four bytes is no IPv4 address.
        #expect(decoder.decode(Wire.neighbour(index: 7, state: 0x20, destination: [172, 30, 0])) == [])
    }
}
