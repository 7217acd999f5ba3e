import Foundation
import Glibc
import StateMachine
import TestSupport
import Testing
@testable import Actions

// Kernel tests that never touch the test process's own network namespace: the libnftnl commit
// runs on a thread of its own in a fresh namespace (NetworkNamespace), nft in `unshare --net`
// children, and the forwarding test in named namespaces it creates and deletes. So they need no
// serialisation with other suites, and each starts from an empty ruleset.

enum NamespaceTestEnvironment {
    static let unshare: String? = ["/usr/bin/unshare", "/bin/unshare"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let python: String? = ["/usr/bin/python3", "/usr/local/bin/python3"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// The same guard as the other kernel tests (root, nft, a private namespace to run in, so a
    /// mistake here cannot cut this machine off), plus the tools these tests drive.
    static var canRun: Bool { FirewallTestEnvironment.canRun && FirewallTestEnvironment.ip != nil && unshare != nil }
}

/// Lists table inet vpnsup as text, then as bytecode.
private let listScript = "nft list table inet vpnsup && echo '--- bytecode' && nft --debug=netlink list table inet vpnsup"

/// A listing with what legitimately differs between two namespaces removed: counter values, rule
/// handles and positions, and the (hash) order in which map elements are dumped.
private func normalised(_ output: String) -> String {
    var lines: [String] = []
    var elements: [String] = []
    for line in output.split(separator: "\n", omittingEmptySubsequences: false) {
        var text = String(line)
            .replacing(/counter packets \d+ bytes \d+/, with: "counter")
            .replacing(/counter pkts \d+ bytes \d+/, with: "counter")
        if text.hasPrefix("\telement ") {
            elements.append(text)
            continue
        }
        lines += elements.sorted()
        elements = []
        if let match = text.wholeMatch(of: /(inet vpnsup \S+)(?: \d+)*/) { text = String(match.1) }
        lines.append(text)
    }
    lines += elements.sorted()
    return lines.joined(separator: "\n")
}

private func temporaryPath(_ suffix: String) -> String {
    "/tmp/vpnsup-fwtest-\(getpid())-\(UUID().uuidString.prefix(8))\(suffix)"
}

@Suite("Firewall: nft -f and the libnftnl commit agree (private namespaces)",
       .enabled(if: NamespaceTestEnvironment.canRun, "needs root, nft, ip, unshare and a private network namespace"))
struct FirewallEquivalenceTests {
    static let cases: [String: Ruleset] = [
        "lockdown": .lockdown,
        "connecting": .build(.connecting, for: forwardingLayout),
        "up with DNS and forwards": .build(.up, for: forwardingLayout),
        "up without DNS or forwards": .build(.up, for: NetworkLayout(
            lanInterface: "eth1", wanInterface: "eth0", tunnelInterface: "tun0",
            endpoints: forwardingLayout.endpoints, transportMark: 0x5650)),
        // 2,000 TCP forwards: more than one element message for that map.
        "up with 3,000 forwards": {
            var layout = forwardingLayout
            layout.portForwards = manyForwards(3_000)
            return .build(.up, for: layout)
        }(),
    ]

    /// The dry run (`Ruleset.nftText` through `nft -f`) and the real commit produce the same
    /// table, as nft lists it and as bytecode.
    @Test(arguments: cases.keys.sorted())
    func nftTextAndLibnftnlCommitListIdentically(name: String) async throws {
        let ruleset = try #require(Self.cases[name])
        let file = temporaryPath(".nft")
        try ruleset.nftText.write(toFile: file, atomically: true, encoding: .utf8)
        defer { unlink(file) }

        let viaNft = try runTool(NamespaceTestEnvironment.unshare!,
                                 ["--net", "--", "/bin/sh", "-c", "nft -f \"$1\" && " + listScript, "sh", file])
        #expect(viaNft.status == 0, "nft -f of the \(name) ruleset: \(viaNft.output)\n\(ruleset.nftText)")

        let ownNamespace = NetworkNamespace.current
        let viaFirewall = try await NetworkNamespace.run { () throws -> (namespace: String?, status: Int32, output: String) in
            try Firewall().commit(ruleset)
            let listed = try runTool("/bin/sh", ["-c", listScript])
            return (NetworkNamespace.current, listed.status, listed.output)
        }
        #expect(viaFirewall.namespace != nil && viaFirewall.namespace != ownNamespace, "the commit ran in a namespace of its own")
        #expect(viaFirewall.status == 0, "\(viaFirewall.output)")

        let expected = normalised(viaNft.output), actual = normalised(viaFirewall.output)
        #expect(actual == expected, "\(name)")
        // Line by line too, so a failure names the line.
        let expectedLines = Set(expected.split(separator: "\n")), actualLines = Set(actual.split(separator: "\n"))
        for line in expectedLines.subtracting(actualLines).sorted() { Issue.record("\(name): only nft -f has: \(line)") }
        for line in actualLines.subtracting(expectedLines).sorted() { Issue.record("\(name): only the commit has: \(line)") }
        // Something real was compared: both chains and, where there are forwards, their elements.
        #expect(expected.contains("chain output {"))
        #expect(expected.contains("--- bytecode"))
        if name == "up with DNS and forwards" {
            #expect(expected.contains("map tcp_forwards {") && expected.contains("8080 : 172.22.0.10 . 80"))
            #expect(expected.contains("\telement 0000901f  : 0a0016ac 00005000 0 [end]"))
        }
        let elementLines = expected.split(separator: "\n").filter { $0.hasPrefix("\telement ") }.count
        #expect(elementLines == ruleset.maps.map(\.entries.count).reduce(0, +))
    }
}

// MARK: - 10,000 port forwards, committed and followed by real packets

/// One forward of the sample: what the client sends to, and where the listener expects it.
private struct Probe: CustomStringConvertible {
    var transport: TransportProtocol
    var publicPort: UInt16
    var target: IPv4Address
    var targetPort: UInt16

    var description: String { "\(transport) \(publicPort) \(target) \(targetPort)" }
}

/// Listens on every target of the probe file (lines "transport publicPort target targetPort"),
/// logs each connection or datagram with its source, and answers "ok <payload>".
private let listenerScript = """
    import selectors, socket, sys
    log = open(sys.argv[2], "a", buffering=1)
    selector = selectors.DefaultSelector()
    for line in open(sys.argv[1]):
        transport, _, address, port = line.split()
        kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, int(port)))
        if transport == "tcp":
            sock.listen(8)
        selector.register(sock, selectors.EVENT_READ, (transport, address, port))
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            transport, address, port = key.data
            if transport == "tcp":
                conn, peer = key.fileobj.accept()
                conn.settimeout(3)
                data = conn.recv(100)
                conn.sendall(b"ok " + data)
                conn.close()
            else:
                data, peer = key.fileobj.recvfrom(100)
                key.fileobj.sendto(b"ok " + data, peer)
            log.write(f"{transport} {address}:{port} from {peer[0]} {data.decode()}\\n")
    """

/// Sends a token to the router's tunnel-side address on each public port of the probe file and
/// prints "transport publicPort REPLY" or "transport publicPort FAIL reason".
private let clientScript = """
    import socket, sys
    router, timeout = sys.argv[2], float(sys.argv[3])
    for line in open(sys.argv[1]):
        transport, public, _, _ = line.split()
        token = f"token-{transport}-{public}".encode()
        try:
            if transport == "tcp":
                sock = socket.create_connection((router, int(public)), timeout=timeout)
                sock.sendall(token)
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.settimeout(timeout)
                sock.connect((router, int(public)))
                sock.send(token)
            reply = sock.recv(100).decode()
            print(f"{transport} {public} {reply}", flush=True)
        except Exception as error:
            print(f"{transport} {public} FAIL {type(error).__name__}", flush=True)
    """

@Suite("Firewall: 10,000 port forwards (own namespaces)",
       .enabled(if: NamespaceTestEnvironment.canRun && NamespaceTestEnvironment.python != nil,
                "needs root, nft, ip, unshare, python3 and a private network namespace"))
struct FirewallForwardingTests {
    private static let prefix = "vpnsup-fwtest-"

    /// Namespaces left by an earlier run that died before its clean-up (its pid is gone).
    private static func removeLeftovers() throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
        for name in names where name.hasPrefix(prefix) {
            let pid = name.dropFirst(prefix.count).split(separator: "-").first.flatMap { pid_t($0) }
            if let pid, pid != getpid(), kill(pid, 0) != 0 && errno == ESRCH {
                try runTool(FirewallTestEnvironment.ip!, ["netns", "del", name])
            }
        }
    }

    @discardableResult
    private func ip(_ arguments: String...) throws -> String {
        let result = try runTool(FirewallTestEnvironment.ip!, arguments)
        guard result.status == 0 else { throw ToolError(description: "ip \(arguments.joined(separator: " ")): \(result.output)") }
        return result.output
    }

    /// Right after a large insert the kernel resizes the map's hash table, and a dump taken
    /// meanwhile can repeat or skip elements; the read-back must not mistake that for a failed
    /// commit. (It did, about one commit in five with 15,000 elements in one map, in the release
    /// build of vpnsup-bench; a debug build reads back later and rarely meets the resize, so this
    /// guards the path more than it reproduces the race.)
    @Test func largeMapsVerifyRightAfterTheirCommit() async throws {
        var layout = forwardingLayout
        layout.portForwards = manyForwards(45_000)
        let ruleset = Ruleset.build(.up, for: layout)
        #expect(ruleset.maps.map(\.entries.count) == [15_000, 30_000])
        let commits = try await NetworkNamespace.run { () throws -> Int in
            let firewall = try Firewall()
            for _ in 0..<4 {
                try firewall.deleteTable()
                try firewall.commit(ruleset)
            }
            return try firewall.differences(from: ruleset).isEmpty ? 4 : 0
        }
        #expect(commits == 4)
    }

    @Test func tenThousandForwardsCommitAndForward() async throws {
        try Self.removeLeftovers()
        let forwards = manyForwards(10_000)
        var layout = forwardingLayout
        layout.portForwards = forwards
        let ruleset = Ruleset.build(.up, for: layout)

        // Router (eth1 = LAN, tun0 = tunnel side, both veths), a tunnel-side peer, a LAN host.
        let router = "\(Self.prefix)\(getpid())-router", tunnel = "\(Self.prefix)\(getpid())-tunnel"
        let lan = "\(Self.prefix)\(getpid())-lan"
        let work = temporaryPath("")
        var listener: pid_t?
        defer {
            if let listener { stopDaemon(listener) }
            for name in [router, tunnel, lan] { _ = try? runTool(FirewallTestEnvironment.ip!, ["netns", "del", name]) }
            _ = try? FileManager.default.removeItem(atPath: work)
        }
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        for name in [router, tunnel, lan] {
            try ip("netns", "add", name)
            try ip("-n", name, "link", "set", "lo", "up")
        }
        try ip("-n", router, "link", "add", "tun0", "type", "veth", "peer", "name", "wan0", "netns", tunnel)
        try ip("-n", router, "link", "add", "eth1", "type", "veth", "peer", "name", "lan0", "netns", lan)
        try ip("-n", router, "addr", "add", "10.200.0.1/24", "dev", "tun0")
        try ip("-n", router, "addr", "add", "172.30.255.1/16", "dev", "eth1")
        try ip("-n", tunnel, "addr", "add", "10.200.0.2/24", "dev", "wan0")
        for (name, link) in [(router, "tun0"), (router, "eth1"), (tunnel, "wan0"), (lan, "lan0")] {
            try ip("-n", name, "link", "set", link, "up")
        }
        #expect(try runTool(FirewallTestEnvironment.ip!, ["netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"]).status == 0)

        // 20 forwards spread over the list, both transports; each target address lives on the LAN host.
        let sample = stride(from: 0, to: forwards.count, by: 500).map { index in
            Probe(transport: forwards[index].transport, publicPort: forwards[index].publicPort,
                  target: forwards[index].target, targetPort: forwards[index].targetPort)
        }
        #expect(sample.count == 20)
        #expect(Set(sample.map(\.transport)) == [.tcp, .udp])
        for target in Set(sample.map(\.target)) {
            try ip("-n", lan, "addr", "add", "\(target)/16", "dev", "lan0")
        }
        try ip("-n", lan, "route", "add", "default", "via", "172.30.255.1")

        // Commit in the router's namespace, timed.
        let clock = ContinuousClock()
        let elapsed = try await NetworkNamespace.run(joining: "/run/netns/\(router)") { () throws -> Duration in
            let firewall = try Firewall()
            return try clock.measure { try firewall.commit(ruleset) }
        }
        print("commit of `up` with 10,000 forwards (incl. read-back) in a fresh namespace: \(elapsed)")

        // Every entry is in the kernel, as nft reads it.
        for map in ruleset.maps {
            let listed = try runTool(FirewallTestEnvironment.ip!, ["netns", "exec", router, "nft", "-j", "list", "map", "inet", "vpnsup", map.name])
            try #require(listed.status == 0, "\(listed.output)")
            let json = try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [String: Any]
            let objects = json?["nftables"] as? [[String: Any]] ?? []
            let body = try #require(objects.compactMap { $0["map"] as? [String: Any] }.first)
            #expect(body["type"] as? String == "inet_service")
            #expect(body["map"] as? String == "ipv4_addr . inet_service")
            let elements = body["elem"] as? [[Any]] ?? []
            let listedEntries = Set(elements.compactMap { element -> String? in
                guard element.count == 2, let key = element[0] as? Int,
                      let concat = (element[1] as? [String: Any])?["concat"] as? [Any], concat.count == 2,
                      let target = concat[0] as? String, let port = concat[1] as? Int else { return nil }
                return "\(key) : \(target) . \(port)"
            })
            #expect(elements.count == map.entries.count, "\(map.name)")
            #expect(listedEntries == Set(map.entries.map(\.nftText)), "\(map.name)")
        }
        #expect(ruleset.maps.map(\.entries.count).reduce(0, +) == 10_000)

        // Packets: the LAN host listens on each sampled target; the tunnel side sends to the public port.
        let probes = "\(work)/probes", log = "\(work)/listener.log", ready = "\(work)/listener.out"
        try sample.map { "\($0)\n" }.joined().write(toFile: probes, atomically: true, encoding: .utf8)
        try listenerScript.write(toFile: "\(work)/listener.py", atomically: true, encoding: .utf8)
        try clientScript.write(toFile: "\(work)/client.py", atomically: true, encoding: .utf8)
        listener = try startDaemon(FirewallTestEnvironment.ip!, ["netns", "exec", lan, NamespaceTestEnvironment.python!,
                                                                 "\(work)/listener.py", probes, log], logPath: ready)
        let deadline = clock.now + .seconds(10)
        while (try? String(contentsOfFile: ready, encoding: .utf8))?.contains("ready") != true {
            try #require(clock.now < deadline, "listener did not start: \((try? String(contentsOfFile: ready, encoding: .utf8)) ?? "")")
            try await Task.sleep(for: .milliseconds(20))
        }

        let client = try runTool(FirewallTestEnvironment.ip!, ["netns", "exec", tunnel, NamespaceTestEnvironment.python!,
                                                               "\(work)/client.py", probes, "10.200.0.1", "3"])
        #expect(client.status == 0, "\(client.output)")
        let replies = client.output.split(separator: "\n").map(String.init)
        let received = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        for probe in sample {
            #expect(replies.contains("\(probe.transport) \(probe.publicPort) ok token-\(probe.transport)-\(probe.publicPort)"),
                    "no reply through forward \(probe): \(client.output)")
            // It reached the target itself, from the tunnel side's address (DNAT only, no masquerade).
            #expect(received.contains("\(probe.transport) \(probe.target):\(probe.targetPort) from 10.200.0.2 token-\(probe.transport)-\(probe.publicPort)\n"),
                    "\(probe) not received: \(received)")
        }

        // Controls, each given 1 s: a public port that is not forwarded reaches nothing, and the
        // tunnel side cannot reach a listening LAN target directly (routed, not DNATed): the
        // forward chain admits new flows from the tunnel only when a forward rewrote them.
        let direct = try #require(sample.first { $0.transport == .tcp })
        try ip("-n", tunnel, "route", "add", "172.30.0.0/16", "via", "10.200.0.1")
        try "tcp 19999 - -\n".write(toFile: probes, atomically: true, encoding: .utf8)
        let unforwarded = try runTool(FirewallTestEnvironment.ip!, ["netns", "exec", tunnel, NamespaceTestEnvironment.python!,
                                                                    "\(work)/client.py", probes, "10.200.0.1", "1"])
        #expect(unforwarded.output == "tcp 19999 FAIL TimeoutError\n", "\(unforwarded.output)")
        try "tcp \(direct.targetPort) - -\n".write(toFile: probes, atomically: true, encoding: .utf8)
        let routed = try runTool(FirewallTestEnvironment.ip!, ["netns", "exec", tunnel, NamespaceTestEnvironment.python!,
                                                               "\(work)/client.py", probes, "\(direct.target)", "1"])
        #expect(routed.output == "tcp \(direct.targetPort) FAIL TimeoutError\n", "\(routed.output)")
        let after = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(after.split(separator: "\n").count == sample.count, "only the forwarded probes arrived: \(after)")
    }
}
