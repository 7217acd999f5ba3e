import Foundation
import StateMachine
import Testing
import TestSupport
@testable import Actions
import SystemSupport

@Suite struct AddressConfiguratorTests {
    // MARK: - Unprivileged: these change nothing

    @Test func interfaceExistsByName() {
        #expect(AddressConfigurator.interfaceExists("lo"))
        #expect(!AddressConfigurator.interfaceExists("vpnsup-nope0"))
        #expect(!AddressConfigurator.interfaceExists("a-name-longer-than-ifnamsiz"))
        #expect(!AddressConfigurator.interfaceExists(""))
    }

    @Test func missingInterfaceIsENODEV() {
        let configurator = AddressConfigurator()
        let error = #expect(throws: NetlinkError.self) {
            try configurator.ensureAddress(IPv4Interface("10.99.0.1/24")!, on: "vpnsup-nope0")
        }
        #expect(error?.errno == ENODEV)
        #expect(error?.description == "add 10.99.0.1/24 to vpnsup-nope0: No such device")
        let upError = #expect(throws: NetlinkError.self) { try configurator.setLinkUp("vpnsup-nope0") }
        #expect(upError?.errno == ENODEV)
    }

    @Test func errorDescriptionCarriesTheKernelText() {
        let error = NetlinkError(operation: "add 10.0.0.1/24 to eth1", errno: EINVAL, message: "Invalid prefix length")
        #expect(error.description == "add 10.0.0.1/24 to eth1: Invalid argument (Invalid prefix length)")
    }

    // MARK: - Parsing the kernel's answer (hand-built bytes)

    @Test func parsesAPlainAck() {
        let ack = Wire.error(errno: 0, sequence: 5, portID: 42)
        #expect(NetlinkAck.parse(ack, sequence: 5, portID: 42) == NetlinkAck(errno: 0, message: nil))
        #expect(NetlinkAck.parse(ack, sequence: 6, portID: 42) == nil)  // another request's answer
        #expect(NetlinkAck.parse(ack, sequence: 5, portID: 43) == nil)
    }

    @Test func parsesErrnoAndExtendedAckText() {
        let capped = Wire.error(errno: -EEXIST, sequence: 1, portID: 7, flags: 0x100 | 0x200,
                                attributes: Wire.attribute(1, Array("Address already assigned".utf8) + [0]))
        #expect(NetlinkAck.parse(capped, sequence: 1, portID: 7)
                == NetlinkAck(errno: EEXIST, message: "Address already assigned"))
        // Without NETLINK_CAP_ACK the request's payload is echoed before the attributes.
        let echoed = Wire.error(errno: -EINVAL, sequence: 2, portID: 7, flags: 0x200, echoedPayload: [UInt8](repeating: 9, count: 10),
                                attributes: Wire.attribute(4, [0, 0, 0, 0]) + Wire.attribute(1, Array("bad".utf8) + [0]))
        #expect(NetlinkAck.parse(echoed, sequence: 2, portID: 7) == NetlinkAck(errno: EINVAL, message: "bad"))
        // An answer after an unrelated message in the same buffer.
        let other = Wire.error(errno: 0, sequence: 99, portID: 7)
        #expect(NetlinkAck.parse(other + capped, sequence: 1, portID: 7)?.errno == EEXIST)
    }

    @Test func malformedAnswersAreIgnoredNotTrusted() {
        var ack = Wire.error(errno: -EPERM, sequence: 3, portID: 1, flags: 0x200,
                             attributes: Wire.attribute(1, Array("text".utf8)))
        for length in 0 ..< ack.count {
            _ = NetlinkAck.parse(Array(ack[..<length]), sequence: 3, portID: 1)  // must not trap
        }
        ack.replaceSubrange(0 ..< 4, with: Wire.bytes(UInt32(0xffff_ffff)))
        #expect(NetlinkAck.parse(ack, sequence: 3, portID: 1) == nil)
        ack.replaceSubrange(0 ..< 4, with: Wire.bytes(UInt32(0)))
        #expect(NetlinkAck.parse(ack, sequence: 3, portID: 1) == nil)
        // An errno of Int32.min must not overflow on negation.
        #expect(NetlinkAck.parse(Wire.error(errno: Int32.min, sequence: 3, portID: 1), sequence: 3, portID: 1)?.errno == Int32.min)
        // An echoed length that points past the message.
        let lying = Wire.error(errno: -EPERM, sequence: 4, portID: 1, flags: 0x200, echoedLength: 5000,
                               attributes: Wire.attribute(1, Array("x".utf8)))
        #expect(NetlinkAck.parse(lying, sequence: 4, portID: 1) == NetlinkAck(errno: EPERM, message: nil))
    }

    // MARK: - Root, inside a private network namespace

    @Test(.enabled(if: isolatedRootNetns, "needs root in a private network namespace (unshare --net)"))
    func ensuresAddressAndLinkUpIdempotently() throws {
        let (name, peer) = ("vnla0", "vnla1")
        _ = try? run("ip", "link", "del", name)
        try run("ip", "link", "add", name, "type", "veth", "peer", "name", peer)
        defer { _ = try? run("ip", "link", "del", name) }
        #expect(AddressConfigurator.interfaceExists(name))

        let configurator = AddressConfigurator()
        try configurator.ensureAddress(IPv4Interface("10.78.0.1/24")!, on: name)
        try configurator.ensureAddress(IPv4Interface("10.78.0.1/24")!, on: name)  // EEXIST: success
        let addresses = try run("ip", "-4", "-o", "addr", "show", "dev", name)
        #expect(addresses.components(separatedBy: "inet 10.78.0.1/24 brd 10.78.0.255 ").count == 2, "\(addresses)")

        // A /32 gets no broadcast address.
        try configurator.ensureAddress(IPv4Interface("10.79.0.9/32")!, on: name)
        let host = try run("ip", "-4", "-o", "addr", "show", "dev", name)
        #expect(host.contains("inet 10.79.0.9/32 scope global"), "\(host)")

        try configurator.setLinkUp(peer)
        try configurator.setLinkUp(name)
        try configurator.setLinkUp(name)
        let link = try run("ip", "-o", "link", "show", name)
        #expect(link.contains(",UP,LOWER_UP>"), "\(link)")

        try run("ip", "link", "del", name)
        #expect(!AddressConfigurator.interfaceExists(name))
        #expect(!AddressConfigurator.interfaceExists(peer))
    }

    /// vpnsup's policy routing: what arrives on the LAN is routed by its own table, which holds
    /// only the tunnel and `unreachable`, even though the main table has a default via the WAN.
    /// veths and a tun stand in for eth1, eth0 and tun0 (names of their own: suites share this namespace).
    @Test(.enabled(if: isolatedRootNetns, "needs root in a private network namespace (unshare --net)"))
    func policyRoutingSendsLANTrafficIntoTheTunnelOrNowhere() throws {
        let (lan, wan, tunnel) = ("vnpr-lan", "vnpr-wan", "vnpr-tun")
        let table = Configuration.routingTable
        let priority = Configuration.routingRulePriority
        func cleanUp() {
            for link in [lan, wan, tunnel] { _ = try? run("ip", "link", "del", link) }
            while (try? run("ip", "rule", "del", "iif", lan, "table", "\(table)")) != nil {}
            _ = try? run("ip", "route", "flush", "table", "\(table)")
        }
        cleanUp()
        defer { cleanUp() }
        for link in [lan, wan] {  // veth pairs: up with carrier once both ends are up
            try run("ip", "link", "add", link, "type", "veth", "peer", "name", link + "p")
            try run("ip", "link", "set", link + "p", "up")
            try run("ip", "link", "set", link, "up")
        }
        try run("ip", "tuntap", "add", "dev", tunnel, "mode", "tun")  // no carrier without OpenVPN: still routable
        try run("ip", "link", "set", tunnel, "up")
        try run("ip", "addr", "add", "172.22.0.1/24", "dev", lan)
        try run("ip", "addr", "add", "203.0.113.2/24", "dev", wan)
        try run("ip", "route", "add", "default", "via", "203.0.113.1", "dev", wan)
        try run("sysctl", "-qw", "net.ipv4.conf.\(lan).forwarding=1")
        func routeFromLAN() -> String {
            do { return try run("ip", "route", "get", "198.51.100.1", "iif", lan, "from", "172.22.0.10") }
            catch { return "\(error)" }
        }
        // Plain Linux routing: out by the WAN. This is the leak the table closes.
        #expect(routeFromLAN().contains("dev \(wan)"), "\(routeFromLAN())")

        let configurator = AddressConfigurator()
        for _ in 0 ..< 2 {  // the second round meets EEXIST everywhere: success, no duplicates
            try configurator.ensureUnreachableDefault(table: table)
            try configurator.ensureRule(inputInterface: lan, table: table, priority: priority)
            try configurator.ensureDefaultRoute(dev: tunnel, table: table)
        }
        let rules = try run("ip", "-4", "rule", "show")
        #expect(rules.components(separatedBy: "\(priority):\tfrom all iif \(lan) lookup \(table)").count == 2, "\(rules)")
        let routes = try run("ip", "-4", "route", "show", "table", "\(table)")
        #expect(routes == "default dev \(tunnel) proto static scope link linkdown \nunreachable default proto static metric 4294967295 \n",
                "\(routes)")
        #expect(routeFromLAN().contains("dev \(tunnel) table \(table)"), "\(routeFromLAN())")
        // The router itself is still reached from the LAN: `local` comes first.
        #expect(try run("ip", "route", "get", "172.22.0.1", "iif", lan, "from", "172.22.0.10").hasPrefix("local 172.22.0.1 "))

        // Tunnel gone: the kernel drops its route; LAN traffic is unreachable, not sent by the WAN.
        try run("ip", "link", "del", tunnel)
        #expect(try run("ip", "-4", "route", "show", "table", "\(table)").hasPrefix("unreachable default"))
        #expect(routeFromLAN().contains("No route to host"), "\(routeFromLAN())")
        let missing = #expect(throws: NetlinkError.self) { try configurator.ensureDefaultRoute(dev: tunnel, table: table) }
        #expect(missing?.interfaceMissingOrDown == true)

        // Back, but down: refused until it is up; then the route is added again.
        try run("ip", "tuntap", "add", "dev", tunnel, "mode", "tun")
        let down = #expect(throws: NetlinkError.self) { try configurator.ensureDefaultRoute(dev: tunnel, table: table) }
        #expect(down?.errno == ENETDOWN && down?.interfaceMissingOrDown == true)
        try configurator.setLinkUp(tunnel)
        try configurator.ensureDefaultRoute(dev: tunnel, table: table)
        #expect(routeFromLAN().contains("dev \(tunnel) table \(table)"), "\(routeFromLAN())")
    }
}

// MARK: - Helpers

/// Hand-built NLMSG_ERROR messages (kernel ABI numbers written out).
private enum Wire {
    static func bytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }
    static func padded(_ bytes: [UInt8]) -> [UInt8] { bytes + [UInt8](repeating: 0, count: (4 - bytes.count % 4) % 4) }

    static func attribute(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        padded(bytes(UInt16(4 + payload.count)) + bytes(type) + payload)
    }

    /// struct nlmsgerr (errno, the request's header) then, uncapped, the request's payload, then TLVs.
    static func error(errno: Int32, sequence: UInt32, portID: UInt32, flags: UInt16 = 0x100,
                      echoedPayload: [UInt8] = [], echoedLength: UInt32? = nil, attributes: [UInt8] = []) -> [UInt8] {
        let request = bytes(echoedLength ?? UInt32(16 + echoedPayload.count)) + bytes(UInt16(20)) + bytes(UInt16(0x5))
            + bytes(sequence) + bytes(portID)
        let body = bytes(errno) + request + padded(echoedPayload) + attributes
        return padded(bytes(UInt32(16 + body.count)) + bytes(UInt16(2)) + bytes(flags) + bytes(sequence) + bytes(portID) + body)
    }
}

/// Root, in the network namespace `make test` made for the tests: only then may tests change links.
private let isolatedRootNetns = IsolatedNetworkNamespace.isRootInside

private struct CommandFailed: Error, CustomStringConvertible { let description: String }

/// Runs `command` (looked up on the sbin/bin paths) and returns its output; throws if it fails.
/// posix_spawn, not Foundation's Process: in a fresh namespace `lo` is down, Foundation cannot
/// make its loopback wake-up socket, and Process.waitUntilExit never returns.
@discardableResult
private func run(_ command: String, _ arguments: String...) throws -> String {
    let path = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(command)" }
        .first { access($0, X_OK) == 0 } ?? command
    var pipeEnds: [Int32] = [0, 0]
    guard pipe(&pipeEnds) == 0 else { throw CommandFailed(description: "pipe: errno \(errno)") }
    _ = fcntl(pipeEnds[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(pipeEnds[1], F_SETFD, FD_CLOEXEC)
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 2)
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid = pid_t()
    let spawned = posix_spawn(&pid, path, &actions, nil, argv, environ)
    close(pipeEnds[1])
    defer { close(pipeEnds[0]) }
    guard spawned == 0 else { throw CommandFailed(description: "\(command): spawn errno \(spawned)") }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(pipeEnds[0], $0.baseAddress, $0.count) }
        if count > 0 { output += chunk[..<count] } else if count == 0 || errno != EINTR { break }
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0, errno == EINTR {}
    let text = String(decoding: output, as: UTF8.self)
    guard status == 0 else {  // 0: exited normally with status 0
        throw CommandFailed(description: "\(command) \(arguments.joined(separator: " ")) (wait status \(status)): \(text)")
    }
    return text
}

@Suite struct LinkTrafficTests {
    /// RTM_NEWLINK: nlmsghdr, ifinfomsg, then attributes; IFLA_STATS64 holds rx/tx bytes at 16/24.
    static func newLink(sequence: UInt32, stats: (UInt64, UInt64)?) -> [UInt8] {
        var stats64 = [UInt8](repeating: 0, count: 16)
        if let (received, sent) = stats { stats64 += Wire.bytes(received) + Wire.bytes(sent) + [UInt8](repeating: 0, count: 160) }
        let attributes = Wire.attribute(3, Array("tun0".utf8) + [0]) + (stats == nil ? [] : Wire.attribute(23, stats64))
        let body = [UInt8](repeating: 0, count: 16) + attributes
        return Wire.bytes(UInt32(16 + body.count)) + Wire.bytes(UInt16(16)) + Wire.bytes(UInt16(0))
            + Wire.bytes(sequence) + Wire.bytes(UInt32(0)) + body
    }

    @Test func readsTheByteCountersOfTheAnswer() {
        let reply = Self.newLink(sequence: 9, stats: (123_456_789_012, 42))
        #expect(LinkTraffic.parse(reply, sequence: 9) == LinkTraffic(received: 123_456_789_012, sent: 42))
        #expect(LinkTraffic.parse(reply, sequence: 10) == nil)  // another request's answer
        #expect(LinkTraffic.parse(Self.newLink(sequence: 9, stats: nil), sequence: 9) == nil)
        #expect(LinkTraffic.parse(Wire.error(errno: -ENODEV, sequence: 9, portID: 0), sequence: 9) == nil)
        for length in 0 ..< reply.count {
            #expect(LinkTraffic.parse(Array(reply[..<length]), sequence: 9) == nil)  // cut short: never trusted
        }
    }

    @Test func noSuchLinkHasNoCounters() {
        #expect(LinkTraffic.of("vpnsup-nope0") == nil)
        #expect(LinkTraffic.of("") == nil)
    }

    /// The kernel's own counters through a veth pair: a ping's bytes show on both ends.
    @Test(.enabled(if: isolatedRootNetns, "needs root in a private network namespace (unshare --net)"))
    func countsWhatTheKernelCounts() throws {
        let (name, peer) = ("vnlt-a", "vnlt-b")
        _ = try? run("ip", "link", "del", name)
        defer { _ = try? run("ip", "link", "del", name) }
        try run("ip", "link", "add", name, "type", "veth", "peer", "name", peer)
        try run("ip", "addr", "add", "10.77.0.1/30", "dev", name)
        try run("ip", "link", "set", peer, "up")
        try run("ip", "link", "set", name, "up")
        // A fixed neighbour: the echo requests leave at once, no ARP first (and nobody answers).
        try run("ip", "neigh", "replace", "10.77.0.2", "lladdr", "02:00:00:00:77:02", "dev", name)
        let before = try #require(LinkTraffic.of(name))
        _ = try? run("ping", "-c", "3", "-i", "0.2", "-W", "1", "10.77.0.2")
        let after = try #require(LinkTraffic.of(name))
        #expect(after.sent >= before.sent + 3 * 98)  // three echo requests: 84 bytes of IP, 14 of Ethernet
        let peerTraffic = try #require(LinkTraffic.of(peer))
        #expect(peerTraffic.received >= 3 * 98)
    }
}
