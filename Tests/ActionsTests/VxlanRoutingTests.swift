import Foundation
import Glibc
import StateMachine
import SystemSupport
import TestSupport
import Testing
import Watchers
@testable import Actions

// Root tests of what the overlay's ends ask of the kernel besides the link, and of the client
// pod's DNS forwarder, each in a fresh network namespace of its own thread (NetworkNamespace).

private func tool(_ name: String) -> String {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(name)" }.first { access($0, X_OK) == 0 } ?? name
}

@discardableResult
private func run(_ name: String, _ arguments: String...) throws -> String {
    let result = try runTool(tool(name), arguments)
    guard result.status == 0 else { throw ToolError(description: "\(name) \(arguments.joined(separator: " ")): \(result.output)") }
    return result.output
}

private func network(_ text: String) -> IPv4Network { IPv4Interface(text)!.network }

/// An underlay as a pod has it: eth0-like with the pod's address and a default route via the
/// CNI's gateway; a vxlan link over it.
private func podUnderlay() throws {
    try run("ip", "link", "set", "lo", "up")
    try run("ip", "link", "add", "underlay0", "type", "veth", "peer", "name", "underlay1")
    try run("ip", "addr", "add", "10.244.1.5/24", "dev", "underlay0")
    try run("ip", "link", "set", "underlay0", "up")
    try run("ip", "link", "set", "underlay1", "up")
    try run("ip", "route", "add", "default", "via", "10.244.1.1", "dev", "underlay0")
}

@Suite("Overlay: routes, addresses and neighbours over rtnetlink (private namespaces)",
       .enabled(if: NamespaceTestEnvironment.canRun, "needs root, nft, ip, unshare and a private network namespace"))
struct VxlanRoutingTests {
    @Test func thePodsNextHopAndAddressAndRoutesByItAndIntoTheOverlay() async throws {
        try await NetworkNamespace.run {
            try podUnderlay()
            #expect(try VxlanRouting.nextHop(of: "underlay0") == IPv4Address(10, 244, 1, 1))
            #expect(try VxlanRouting.addresses(of: "underlay0") == [IPv4Interface("10.244.1.5/24")!])
            #expect(try VxlanRouting.addresses(of: "lo") == [])  // 127.0.0.1 is of host scope

            let link = VxlanLink.Parameters(name: "vxlan0", vni: 30320, port: 4789, underlay: "underlay0",
                                            local: IPv4Address(10, 244, 1, 5), remote: IPv4Address(10, 244, 2, 9), learning: false)
            try VxlanLink.ensure(link)
            try AddressConfigurator().ensureAddress(IPv4Interface("172.31.1.5/15")!, on: "vxlan0")
            try VxlanRouting.replaceRoute(network("10.96.0.0/12"), via: IPv4Address(10, 244, 1, 1), dev: "underlay0")
            try VxlanRouting.replaceRoute(network("10.96.0.0/12"), via: IPv4Address(10, 244, 1, 1), dev: "underlay0")  // again: no error
            try VxlanRouting.replaceRoute(network("0.0.0.0/0"), via: IPv4Address(172, 30, 0, 1), dev: "vxlan0")
            let routes = try run("ip", "-4", "route", "show")
            #expect(routes.contains("default via 172.30.0.1 dev vxlan0 proto static"), "\(routes)")
            #expect(routes.contains("10.96.0.0/12 via 10.244.1.1 dev underlay0 proto static"), "\(routes)")
            #expect(!routes.contains("default via 10.244.1.1"), "the pod's default route replaced: \(routes)")
            // The default route leads into the overlay now (a restarted sidecar finds it so): the
            // underlay's next hop is still known, from the routes by it.
            #expect(try VxlanRouting.nextHop(of: "underlay0") == IPv4Address(10, 244, 1, 1))

            let missing = #expect(throws: NetlinkError.self) { try VxlanRouting.nextHop(of: "underlay1") }
            #expect(missing?.errno == ENETUNREACH)
            #expect(throws: NetlinkError.self) { try VxlanRouting.addresses(of: "nope0") }
        }
    }

    @Test func theOverlaysNeighbourTimersAndForgettingTheGateway() async throws {
        try await NetworkNamespace.run {
            try podUnderlay()
            try VxlanLink.ensure(VxlanLink.Parameters(name: "vxlan0", vni: 30320, port: 4789, underlay: "underlay0",
                                                      remote: IPv4Address(10, 244, 2, 9), learning: false))
            try VxlanRouting.setNeighbourTimers(.gatewayWatch, on: "vxlan0")
            let table = try run("ip", "ntable", "show", "dev", "vxlan0", "name", "arp_cache")
            for setting in ["base_reachable 2000 ", "retrans 500 ", "delay_probe 1000 ", "ucast_probes 3 ", "mcast_probes 3 "] {
                #expect(table.contains(setting), "\(setting) in \(table)")
            }
            // Another link's timers are its own.
            #expect(!(try run("ip", "ntable", "show", "dev", "underlay0", "name", "arp_cache")).contains("retrans 500 "))

            try run("ip", "neigh", "add", "172.30.0.1", "lladdr", "02:76:ac:1e:00:01", "dev", "vxlan0", "nud", "reachable")
            #expect(try run("ip", "neigh", "show", "dev", "vxlan0").contains("172.30.0.1 lladdr 02:76:ac:1e:00:01"))
            try VxlanRouting.forgetNeighbour(IPv4Address(172, 30, 0, 1), on: "vxlan0")
            #expect(try run("ip", "neigh", "show", "dev", "vxlan0") == "")
            try VxlanRouting.forgetNeighbour(IPv4Address(172, 30, 0, 1), on: "vxlan0")  // already gone: no error
        }
    }

    @Test func theLinksMACAndAgeingAreSetReadBackAndReplacedWhenTheyDiffer() async throws {
        try await NetworkNamespace.run {
            try podUnderlay()
            let gateway = OverlayLink(name: "vxlan0", vni: 30320, port: 4789, underlay: "underlay0", local: nil, remote: nil,
                                      learning: true, ageing: GatewayOverlay.clientAgeing,
                                      macAddress: OverlayAddressing.macAddress(for: IPv4Address(172, 30, 0, 1)), address: nil)
            var parameters = VxlanLink.Parameters(gateway)
            #expect(try VxlanLink.ensure(parameters) == .created)
            let details = try run("ip", "-d", "link", "show", "vxlan0")
            #expect(details.contains("link/ether 02:76:ac:1e:00:01 "), "\(details)")
            #expect(details.contains("ageing 432000"), "\(details)")
            let read = try #require(try VxlanLink.current("vxlan0") ?? nil)
            #expect(read.macAddress == [0x02, 0x76, 172, 30, 0, 1] && read.ageing == 432_000)
            #expect(try VxlanLink.ensure(parameters) == .unchanged)
            // A link left by a run with another IP_ADDR: made again with the MAC asked for.
            parameters.macAddress = OverlayAddressing.macAddress(for: IPv4Address(172, 30, 0, 9))
            #expect(try VxlanLink.ensure(parameters) == .replaced)
            #expect(try run("ip", "link", "show", "vxlan0").contains("link/ether 02:76:ac:1e:00:09 "))
            // The kernel reads an ageing of 0 as its default: such a link could never be read back
            // as asked, and is refused rather than replaced again and again.
            parameters.ageing = 0
            let refused = #expect(throws: NetlinkError.self) { try VxlanLink.ensure(parameters) }
            #expect(refused?.message?.contains("the kernel made it") == true, "\(String(describing: refused))")
        }
    }
}

// MARK: - The DNS forwarder

/// A stand-in upstream resolver on `address`:53, UDP and TCP: answers every query with one A
/// record, `answer`, so a test can tell which upstream a query reached. On threads of the
/// calling thread's namespace; `stop()` ends them.
private final class FakeResolver: Sendable {
    private let udp: Int32
    private let tcp: Int32

    init(_ address: IPv4Address, answer: IPv4Address) throws {
        udp = try Self.bound(Int32(SOCK_DGRAM.rawValue), address)
        tcp = try Self.bound(Int32(SOCK_STREAM.rawValue), address)
        guard listen(tcp, 4) == 0 else { throw ToolError(description: "listen: errno \(errno)") }
        try ReaderThread.start(name: "fake-dns-udp") { [udp] in
            defer { close(udp) }
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                var peer = sockaddr_in()
                var length = socklen_t(MemoryLayout<sockaddr_in>.size)
                let count = buffer.withUnsafeMutableBytes { bytes in
                    withUnsafeMutablePointer(to: &peer) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(udp, bytes.baseAddress, bytes.count, 0, $0, &length) }
                    }
                }
                guard count > 0 else { return }
                guard let reply = Self.reply(to: Array(buffer[0..<count]), answer: answer) else { continue }
                _ = reply.withUnsafeBytes { bytes in
                    withUnsafePointer(to: &peer) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(udp, bytes.baseAddress, bytes.count, 0, $0, length) }
                    }
                }
            }
        }
        try ReaderThread.start(name: "fake-dns-tcp") { [tcp] in
            defer { close(tcp) }
            while true {
                let client = accept(tcp, nil, nil)
                guard client >= 0 else { return }
                var prefix = [UInt8](repeating: 0, count: 2)
                if recv(client, &prefix, 2, Int32(MSG_WAITALL)) == 2 {
                    var query = [UInt8](repeating: 0, count: Int(prefix[0]) << 8 | Int(prefix[1]))
                    if recv(client, &query, query.count, Int32(MSG_WAITALL)) == query.count,
                       let reply = Self.reply(to: query, answer: answer) {
                        let framed = [UInt8(reply.count >> 8), UInt8(reply.count & 0xff)] + reply
                        _ = framed.withUnsafeBytes { send(client, $0.baseAddress, $0.count, 0) }
                    }
                }
                close(client)
            }
        }
    }

    func stop() {
        shutdown(udp, Int32(SHUT_RDWR))
        shutdown(tcp, Int32(SHUT_RDWR))
    }

    /// The query's id and question, QR set, one A record for the question's name.
    static func reply(to query: [UInt8], answer: IPv4Address) -> [UInt8]? {
        guard query.count > 12 else { return nil }
        var end = 12
        while end < query.count, query[end] != 0 { end += 1 + Int(query[end]) }
        end += 5  // the root label, QTYPE, QCLASS
        guard end <= query.count else { return nil }
        return [query[0], query[1], 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0] + query[12..<end]
            + [0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4] + answer.octets
    }

    private static func bound(_ type: Int32, _ address: IPv4Address) throws -> Int32 {
        let fd = socket(AF_INET, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_port = UInt16(53).bigEndian
        local.sin_addr.s_addr = address.value.bigEndian
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw ToolError(description: "bind \(address):53: errno \(errno)") }
        return fd
    }
}

@Suite("The client pod's DNS forwarder (private namespaces)",
       .enabled(if: NamespaceTestEnvironment.canRun && access("/usr/bin/dig", X_OK) == 0, "needs root, ip, nft, dig and a private network namespace"))
struct DNSForwarderTests {
    static let split = SplitDNS(clusterDomain: "cluster.local", clusterResolver: IPv4Address(10, 96, 0, 10),
                                gateway: IPv4Address(172, 30, 0, 1), clusterNetworks: [network("10.96.0.0/12"), network("10.244.0.0/16")])

    /// Cluster names (and the cluster's reverse names) reach the cluster resolver, every other
    /// name the gateway, over UDP and TCP, each from a socket with the forwarder's mark (counted
    /// by an nft rule); the answers come back to the asker as the upstream gave them.
    @Test func splitsUDPAndTCPQueriesFromMarkedSockets() async throws {
        try await NetworkNamespace.run {
            try run("ip", "link", "set", "lo", "up")
            try run("ip", "addr", "add", "10.96.0.10/32", "dev", "lo")
            try run("ip", "addr", "add", "172.30.0.1/32", "dev", "lo")
            let cluster = try FakeResolver(IPv4Address(10, 96, 0, 10), answer: IPv4Address(10, 0, 0, 1))
            let gateway = try FakeResolver(IPv4Address(172, 30, 0, 1), answer: IPv4Address(10, 0, 0, 2))
            defer {
                cluster.stop()
                gateway.stop()
            }
            try runTool(tool("nft"), ["-f", "-"], input: """
                table inet counting {
                    chain output {
                        type filter hook output priority 0; policy accept;
                        ip daddr 127.0.0.1 udp dport 53 accept
                        ip daddr 127.0.0.1 tcp dport 53 accept
                        meta mark 0x76706e02 udp dport 53 counter
                        meta mark 0x76706e02 tcp dport 53 counter
                        udp dport 53 counter
                    }
                }
                """)
            let split = Self.split
            let forwarder = try DNSForwarder.start(mark: 0x7670_6e02, timeout: .seconds(1),
                                                   route: { split.upstreamAddress(forQuery: $0) },
                                                   threads: { name, body in (try? ReaderThread.start(name: name, body)) != nil })
            defer { forwarder.stop() }
            func ask(_ name: String, _ options: String...) throws -> String {
                try runTool(tool("dig"), ["+short", "+time=2", "+tries=1", "@127.0.0.1", name, "A"] + options).output
                    .trimmingCharacters(in: .whitespacesAndNewlines)
            }
            #expect(try ask("web.apps.svc.cluster.local") == "10.0.0.1")
            #expect(try ask("echo.lab") == "10.0.0.2")
            #expect(try ask("WEB.Cluster.Local.", "+tcp") == "10.0.0.1")
            #expect(try ask("example.com", "+tcp") == "10.0.0.2")
            #expect(try run("dig", "+short", "+time=2", "+tries=1", "@127.0.0.1", "-x", "10.244.3.7").contains("10.0.0.1"))
            #expect(forwarder.statistics.relayed == 5)
            // Every upstream query was marked: the unmarked counter saw none beyond the marked ones.
            let counters = try run("nft", "list", "chain", "inet", "counting", "output")
            #expect(counters.contains("meta mark 0x76706e02 udp dport 53 counter packets 3 "), "\(counters)")
            #expect(counters.contains("meta mark 0x76706e02 tcp dport 53 counter packets"), "\(counters)")
            #expect(counters.contains("udp dport 53 counter packets 3 "), "\(counters)")
        }
    }

    /// A query it cannot place is dropped, an upstream that does not answer is counted, and the
    /// port taken makes `start` throw.
    @Test func dropsWhatItCannotPlaceAndSaysWhenItCannotListen() async throws {
        try await NetworkNamespace.run {
            try run("ip", "link", "set", "lo", "up")
            let forwarder = try DNSForwarder.start(mark: 0x7670_6e02, timeout: .milliseconds(300),
                                                   route: { _ in IPv4Address(127, 0, 0, 9) },
                                                   threads: { name, body in (try? ReaderThread.start(name: name, body)) != nil })
            defer { forwarder.stop() }
            // Nobody at 127.0.0.9: unanswered, and dig gets nothing.
            _ = try runTool(tool("dig"), ["+short", "+time=1", "+tries=1", "@127.0.0.1", "example.com"])
            #expect(forwarder.statistics.unanswered >= 1)
            let taken = #expect(throws: SystemError.self) {
                try DNSForwarder.start(mark: 0, route: { _ in nil }, threads: { _, _ in true })
            }
            #expect(taken?.description.contains("listen on 127.0.0.1:53/udp") == true)
        }
        let none = try await NetworkNamespace.run {
            try run("ip", "link", "set", "lo", "up")
            let forwarder = try DNSForwarder.start(mark: 0, route: { _ in nil },
                                                   threads: { name, body in (try? ReaderThread.start(name: name, body)) != nil })
            defer { forwarder.stop() }
            _ = try runTool(tool("dig"), ["+short", "+time=1", "+tries=1", "@127.0.0.1", "example.com"])
            return forwarder.statistics
        }
        #expect(none.dropped >= 1 && none.relayed == 0)
    }
}
