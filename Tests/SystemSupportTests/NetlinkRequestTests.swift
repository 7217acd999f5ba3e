import CNetlink
import Testing
@testable import SystemSupport

@Suite struct NetlinkRequestTests {
    /// The bytes of `ip link`'s RTM_GETLINK for one name, laid out as the kernel reads them:
    /// header (length, type, flags, sequence, port), ifinfomsg, then a padded NUL-terminated name.
    @Test func buildsHeaderFamilyHeaderAndPaddedAttributes() {
        var request = NetlinkRequest(type: UInt16(RTM_GETLINK), flags: UInt16(NLM_F_REQUEST))
        request.append(ifinfomsg(ifi_family: UInt8(AF_UNSPEC), __ifi_pad: 0, ifi_type: 0, ifi_index: 7, ifi_flags: 0, ifi_change: 0))
        request.appendAttribute(UInt16(IFLA_IFNAME), string: "tun0")
        request.appendAttribute(UInt16(IFLA_MTU), 1500)
        request.sequence = 0x0102_0304

        let bytes = request.bytes
        #expect(bytes.count == 16 + 16 + 12 + 8)
        #expect(bytes.uint32(at: 0, within: 0 ..< bytes.count) == UInt32(bytes.count))
        #expect(bytes.uint16(at: 4, within: 0 ..< bytes.count) == UInt16(RTM_GETLINK))
        #expect(bytes.uint16(at: 6, within: 0 ..< bytes.count) == UInt16(NLM_F_REQUEST))
        #expect(bytes.uint32(at: 8, within: 0 ..< bytes.count) == 0x0102_0304)
        #expect(bytes.int32(at: 16 + 4, within: 0 ..< bytes.count) == 7)  // ifi_index

        // The codec reads back what the builder wrote.
        let message = try! #require(Array(NetlinkMessages(bytes)).first)
        #expect(message.header.sequence == 0x0102_0304)
        let attributes = Array(NetlinkAttributes(bytes, message.body.lowerBound + 16 ..< message.body.upperBound))
        #expect(attributes.map(\.type) == [UInt16(IFLA_IFNAME), UInt16(IFLA_MTU)])
        #expect(attributes[0].payload.count == 5)  // "tun0" and its NUL; the padding is not payload
        #expect(bytes.cString(in: attributes[0].payload) == "tun0")
        #expect(bytes.uint32(at: attributes[1].payload.lowerBound, within: attributes[1].payload) == 1500)
    }

    @Test func messagesStopAtTheFirstLyingHeader() {
        var first = NetlinkRequest(type: 1, flags: 0)
        first.appendAttribute(1, 42)
        let second = NetlinkRequest(type: 2, flags: 0)
        var bytes = first.bytes + second.bytes
        #expect(NetlinkMessages(bytes).map(\.header.type) == [1, 2])
        // The second header claims more than the buffer holds: it and all after it are dropped.
        bytes.replaceSubrange(first.bytes.count ..< first.bytes.count + 4, with: [0xff, 0xff, 0, 0])
        #expect(NetlinkMessages(bytes).map(\.header.type) == [1])
        for length in 0 ..< bytes.count {
            _ = Array(NetlinkMessages(Array(bytes[..<length])))  // never traps
        }
    }
}
