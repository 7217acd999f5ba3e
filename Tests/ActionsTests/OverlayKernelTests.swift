import Foundation
import Glibc
import StateMachine
import TestSupport
import Testing
@testable import Actions

// Root tests of the Kubernetes overlay's kernel pieces, each in network namespaces of its own
// (NetworkNamespace threads, `unshare --net` children, or named namespaces made and removed
// here): the vxlan link, and the gateway's and the client's rulesets as nft and the kernel take them.

private func tool(_ name: String) -> String {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(name)" }.first { access($0, X_OK) == 0 } ?? name
}

/// Runs a tool in the calling thread's namespace; its output, or a thrown error when it fails.
@discardableResult
private func run(_ name: String, _ arguments: String...) throws -> String {
    let result = try runTool(tool(name), arguments)
    guard result.status == 0 else { throw ToolError(description: "\(name) \(arguments.joined(separator: " ")): \(result.output)") }
    return result.output
}

private let joinValues: [String: String] = [
    "GATEWAY": "vpn-gateway.vpn.svc.cluster.local", "GATEWAY_ADDR": "172.30.0.1/15",
    "POD_CIDRS": "10.244.0.0/16", "CLUSTER_CIDRS": "10.96.0.0/12,192.168.50.0/24",
]

@Suite("Overlay: vxlan link over rtnetlink (private namespaces)",
       .enabled(if: NamespaceTestEnvironment.canRun, "needs root, nft, ip, unshare and a private network namespace"))
struct VxlanLinkTests {
    /// Create, leave alone, re-point in place, replace on a VNI change, delete: each checked with
    /// `ip -d link` and `bridge fdb`, in a fresh namespace that disappears with its thread.
    @Test func createsRepointsReplacesAndDeletes() async throws {
        try await NetworkNamespace.run {
            try run("ip", "link", "add", "underlay0", "type", "veth", "peer", "name", "underlay1")
            try run("ip", "addr", "add", "10.244.1.5/24", "dev", "underlay0")
            try run("ip", "link", "set", "underlay0", "up")
            var parameters = VxlanLink.Parameters(name: "vxlan0", vni: 30320, port: 4789, underlay: "underlay0",
                                                  local: IPv4Address("10.244.1.5")!, remote: IPv4Address("10.244.2.9")!,
                                                  learning: false)
            #expect(try VxlanLink.current("vxlan0") == .none)
            #expect(try VxlanLink.ensure(parameters) == .created)
            let details = try run("ip", "-d", "link", "show", "vxlan0")
            #expect(details.contains("vxlan id 30320 remote 10.244.2.9 local 10.244.1.5 dev underlay0 "), "\(details)")
            #expect(details.contains("dstport 4789 nolearning"), "\(details)")
            #expect(details.contains(",UP"), "\(details)")
            #expect(try VxlanLink.current("vxlan0")??.satisfies(parameters) == true)
            #expect(try run("bridge", "fdb", "show", "dev", "vxlan0") == "00:00:00:00:00:00 dst 10.244.2.9 via underlay0 self permanent\n")

            #expect(try VxlanLink.ensure(parameters) == .unchanged)
            let index = if_nametoindex("vxlan0")

            // The gateway moved: the same link, one destination, the new one.
            parameters.remote = IPv4Address("10.244.3.4")!
            #expect(try VxlanLink.ensure(parameters) == .repointed)
            #expect(if_nametoindex("vxlan0") == index)
            #expect(try run("bridge", "fdb", "show", "dev", "vxlan0") == "00:00:00:00:00:00 dst 10.244.3.4 via underlay0 self permanent\n")
            try VxlanLink.setRemote(IPv4Address("10.244.1.8")!, on: "vxlan0")
            #expect(try VxlanLink.current("vxlan0")??.remote == IPv4Address("10.244.1.8"))
            try VxlanLink.setRemote(nil, on: "vxlan0")
            #expect(try run("bridge", "fdb", "show", "dev", "vxlan0") == "")

            // A VNI cannot change in place: a new link.
            parameters.vni = 42
            #expect(try VxlanLink.ensure(parameters) == .replaced)
            #expect(try VxlanLink.current("vxlan0")??.satisfies(parameters) == true)
            #expect(try run("ip", "-d", "link", "show", "vxlan0").contains("vxlan id 42 remote 10.244.3.4"))

            // A gateway's link learns and has no default destination.
            let gateway = VxlanLink.Parameters(name: "vxlan1", vni: 42, port: 8472, underlay: "underlay1", learning: true)
            try run("ip", "link", "set", "underlay1", "up")
            #expect(try VxlanLink.ensure(gateway) == .created)
            #expect(try VxlanLink.current("vxlan1")??.satisfies(gateway) == true)
            #expect(!(try run("ip", "-d", "link", "show", "vxlan1")).contains("nolearning"))

            // Not a vxlan link: described as such, and replaced by ensure.
            #expect(try VxlanLink.current("underlay1") == .some(nil))
            try VxlanLink.delete("vxlan1")
            try VxlanLink.delete("vxlan1")  // already gone: no error
            #expect(try VxlanLink.current("vxlan1") == .none)
            try run("ip", "link", "add", "vxlan1", "type", "veth", "peer", "name", "vxlan1p")
            #expect(try VxlanLink.ensure(gateway) == .replaced)
            #expect(try VxlanLink.current("vxlan1")??.satisfies(gateway) == true)

            let missing = #expect(throws: NetlinkError.self) {
                try VxlanLink.ensure(VxlanLink.Parameters(name: "vxlan2", vni: 1, port: 4789, underlay: "nope0", learning: false))
            }
            #expect(missing?.errno == ENODEV)
        }
    }

    /// The link's answer parsed from the kernel's own bytes is never trusted when cut short.
    @Test func truncatedAnswersAreNotTrusted() {
        var message: [UInt8] = []
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value) { message += $0 } }
        func attribute(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
            var bytes: [UInt8] = []
            withUnsafeBytes(of: UInt16(4 + payload.count)) { bytes += $0 }
            withUnsafeBytes(of: type) { bytes += $0 }
            bytes += payload
            return bytes + [UInt8](repeating: 0, count: (4 - bytes.count % 4) % 4)
        }
        func u32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }
        let data = attribute(1, u32(7)) + attribute(2, u32(UInt32(0x0af4_0209).bigEndian)) + attribute(3, u32(4))
            + attribute(15, withUnsafeBytes(of: UInt16(4789).bigEndian) { Array($0) }) + attribute(7, [0])
        let info = attribute(1, Array("vxlan".utf8) + [0]) + attribute(2 | 0x8000, data)
        let body = [UInt8](repeating: 0, count: 16) + attribute(18 | 0x8000, info)
        put(UInt32(16 + body.count)); put(UInt16(16)); put(UInt16(0)); put(UInt32(9)); put(UInt32(0))
        message += body
        let parsed = VxlanAttributes.parse(message, sequence: 9)
        #expect(parsed == VxlanAttributes(kind: "vxlan", vni: 7, port: 4789, underlayIndex: 4, local: nil,
                                          remote: IPv4Address("10.244.2.9"), learning: false))
        #expect(VxlanAttributes.parse(message, sequence: 8) == nil)
        for length in 0 ..< message.count {
            #expect(VxlanAttributes.parse(Array(message[..<length]), sequence: 9) == nil)
        }
    }
}

@Suite("Overlay: the gateway's and the client's rulesets in the kernel (private namespaces)",
       .enabled(if: NamespaceTestEnvironment.canRun, "needs root, nft, ip, unshare and a private network namespace"))
struct OverlayRulesetKernelTests {
    static let gatewayLayout = NetworkLayout(
        lanInterface: "vxlan0", wanInterface: "eth0", tunnelInterface: "tun0",
        endpoints: [Endpoint(address: IPv4Address(198, 51, 100, 1), port: 1194, transport: .udp)],
        transportMark: Configuration.transportMark, dns: IPv4Address(10, 8, 0, 1), lanGateway: IPv4Address(172, 30, 0, 1))
    static let overlay = OverlayUnderlay(interface: "eth0", peers: [IPv4Interface("10.244.0.0/16")!.network,
                                                                   IPv4Interface("10.250.0.0/23")!.network], port: 4789)
    static let cases: [String: Ruleset] = [
        "gateway connecting": .build(.connecting, for: gatewayLayout, overlay: overlay),
        "gateway up": .build(.up, for: gatewayLayout, overlay: overlay),
        "client": try! JoinConfiguration(joinValues).killSwitch(clusterDNS: IPv4Address(10, 96, 0, 10)).ruleset,
    ]

    /// `nft -f` of the dry-run text and vpnsup's own libnftnl commit give the same table.
    @Test(arguments: cases.keys.sorted())
    func nftAndTheCommitAgree(name: String) async throws {
        let ruleset = try #require(Self.cases[name])
        let file = "/tmp/vpnsup-overlay-\(getpid())-\(name.replacingOccurrences(of: " ", with: "-")).nft"
        try ruleset.nftText.write(toFile: file, atomically: true, encoding: .utf8)
        defer { unlink(file) }
        let list = "nft list table inet vpnsup"
        let viaNft = try runTool(NamespaceTestEnvironment.unshare!, ["--net", "--", "/bin/sh", "-c", "nft -f \"$1\" && \(list)", "sh", file])
        #expect(viaNft.status == 0, "nft -f: \(viaNft.output)\n\(ruleset.nftText)")
        let viaCommit = try await NetworkNamespace.run { () throws -> String in
            try Firewall().commit(ruleset)
            return try run("sh", "-c", list)
        }
        let normalise = { (text: String) in text.replacing(/counter packets \d+ bytes \d+/, with: "counter") }
        #expect(normalise(viaCommit) == normalise(viaNft.output))
        #expect(viaNft.output.contains("ip daddr 10.244.0.0/16") || name == "client" && viaNft.output.contains("ip daddr 10.96.0.0/12"))
    }

    /// The client's kill switch with real packets, in a pod-like namespace: a query to the
    /// cluster resolver reaches the pod's forwarder on 127.0.0.1:53 instead; the forwarder's
    /// marked query reaches the resolver; unmarked traffic to the internet does not leave eth0
    /// even with a default route there; cluster traffic does.
    @Test func theClientKillSwitchWithRealPackets() throws {
        let python = try #require(NamespaceTestEnvironment.python)
        let tag = "\(getpid() % 100000)"
        let (pod, node) = ("vpkc\(tag)p", "vpkc\(tag)n")
        defer {
            for namespace in [pod, node] {
                // Whatever a failed check left running in them, then the namespaces.
                if let pids = try? run("ip", "netns", "pids", namespace) {
                    for pid in pids.split(separator: "\n").compactMap({ pid_t($0) }) { kill(pid, SIGKILL) }
                }
                _ = try? run("ip", "netns", "del", namespace)
            }
        }
        try run("ip", "netns", "add", pod)
        try run("ip", "netns", "add", node)
        func inPod(_ arguments: String...) throws -> String { try runTool(tool("ip"), ["netns", "exec", pod] + arguments).output }
        try run("ip", "link", "add", "eth0", "netns", pod, "type", "veth", "peer", "name", "cni0", "netns", node)
        for (namespace, link, address) in [(pod, "eth0", "10.244.1.5/24"), (node, "cni0", "10.244.1.1/24")] {
            try run("ip", "-n", namespace, "link", "set", "lo", "up")
            try run("ip", "-n", namespace, "addr", "add", address, "dev", link)
            try run("ip", "-n", namespace, "link", "set", link, "up")
        }
        // The node answers as the cluster resolver (10.96.0.10) and as an internet host (203.0.113.10).
        try run("ip", "-n", node, "addr", "add", "10.96.0.10/32", "dev", "lo")
        try run("ip", "-n", node, "addr", "add", "203.0.113.10/32", "dev", "lo")
        try run("ip", "-n", pod, "route", "add", "default", "via", "10.244.1.1")
        // A datagram echo that says which address answered: on the node (resolver + internet),
        // and the pod's forwarder on 127.0.0.1:53.
        let echo = """
            import socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", int(sys.argv[2])))
            while True:
                data, peer = s.recvfrom(512)
                s.sendto(sys.argv[1].encode(), peer)
            """
        let ask = """
            import socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            if sys.argv[3] != "0":
                s.setsockopt(socket.SOL_SOCKET, 36, int(sys.argv[3]))  # SO_MARK
            s.settimeout(1)
            try:
                s.sendto(b"q", (sys.argv[1], int(sys.argv[2])))
                print(s.recv(512).decode())
            except OSError as e:
                print("no answer:", e)
            """
        let log = "/tmp/vpnsup-overlay-echo-\(tag).log"
        defer { unlink(log) }
        let nodeEcho = try startDaemon(tool("ip"), ["netns", "exec", node, python, "-c", echo, "node", "53"], logPath: log)
        defer { stopDaemon(nodeEcho) }
        let nodeEcho80 = try startDaemon(tool("ip"), ["netns", "exec", node, python, "-c", echo, "node", "80"], logPath: log + "80")
        defer { stopDaemon(nodeEcho80); unlink(log + "80") }
        let forwarder = try startDaemon(tool("ip"), ["netns", "exec", pod, python, "-c", echo, "forwarder", "53"], logPath: log + "fw")
        defer { stopDaemon(forwarder); unlink(log + "fw") }
        /// The answer, asked until one comes (the echoes take a moment to bind) unless `once`.
        func query(_ address: String, _ port: Int, mark: UInt32 = 0, once: Bool = false) throws -> String {
            for _ in 0 ..< 20 {
                let answer = try inPod(python, "-c", ask, address, "\(port)", "\(mark)").trimmingCharacters(in: .whitespacesAndNewlines)
                if once || !answer.hasPrefix("no answer") { return answer }
            }
            return "no answer"
        }
        // Without the kill switch the pod reaches everything by eth0 (so what follows is its doing).
        #expect(try query("203.0.113.10", 80) == "node")

        let killSwitch = try JoinConfiguration(joinValues).killSwitch(clusterDNS: IPv4Address(10, 96, 0, 10))
        let file = "/tmp/vpnsup-overlay-client-\(tag).nft"
        try killSwitch.ruleset.nftText.write(toFile: file, atomically: true, encoding: .utf8)
        defer { unlink(file) }
        _ = try inPod("nft", "-f", file)
        #expect(try inPod("nft", "list", "table", "inet", "vpnsup").contains("chain nat_output"))

        #expect(try query("10.96.0.10", 53) == "forwarder")  // an app's query: redirected
        #expect(try query("203.0.113.10", 53) == "forwarder")  // any resolver: redirected
        #expect(try query("10.96.0.10", 53, mark: ClientKillSwitch.DNSForwarding.defaultMark) == "node")  // the forwarder's own
        #expect(try query("203.0.113.10", 80, once: true).hasPrefix("no answer"))  // the internet: not by eth0
        #expect(try query("10.96.0.10", 80) == "node")  // a service: directly
        let dropped = try inPod("nft", "list", "chain", "inet", "vpnsup", "output")
        #expect(dropped.contains(/counter packets [1-9]\d* bytes \d+ drop\n\t}/), "\(dropped)")
    }
}
