import Foundation
import Glibc
import StateMachine
import TestSupport
import Testing
@testable import Actions

/// A stream through one forward: the LAN host counts what arrives and answers with the count;
/// the tunnel-side client sends for SECONDS and reports what it sent and what was counted, or the
/// error that broke the connection.
private let sinkScript = """
    import socket, sys
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((sys.argv[1], int(sys.argv[2])))
    server.listen(1)
    print("ready", flush=True)
    connection, peer = server.accept()
    print(f"connected {peer[0]}", flush=True)
    total = 0
    while True:
        data = connection.recv(65536)
        if not data:
            break
        total += len(data)
    connection.sendall(f"{total}\\n".encode())
    connection.close()
    print(f"received {total}", flush=True)
    """

private let streamScript = """
    import socket, sys, time
    host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    chunk = b"x" * 16384
    sent = 0
    try:
        connection = socket.create_connection((host, port), timeout=3)
        print("connected", flush=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            connection.sendall(chunk)
            sent += len(chunk)
            time.sleep(0.002)  # about 8 MB/s: steady, without taking a core from the rest
        connection.shutdown(socket.SHUT_WR)
        counted = int(connection.makefile().readline())
        print(f"ok sent {sent} counted {counted}", flush=True)
    except Exception as error:
        print(f"FAIL after {sent} bytes: {type(error).__name__} {error}", flush=True)
    """

/// Live changes of the forward maps: a diff applied as element deletes and adds in one
/// transaction, 10,000 forwards, a long-lived TCP stream through an unchanged forward unbroken
/// all along, and the table's chains and rules untouched.
@Suite("Firewall: forward changes as map elements (own namespaces)",
       .enabled(if: NamespaceTestEnvironment.canRun && NamespaceTestEnvironment.python != nil,
                "needs root, nft, ip, unshare, python3 and a private network namespace"))
struct ForwardMapEditorTests {
    private static let prefix = "vpnsup-fwedit-"

    @discardableResult
    private func ip(_ arguments: String...) throws -> String {
        let result = try runTool(FirewallTestEnvironment.ip!, arguments)
        guard result.status == 0 else { throw ToolError(description: "ip \(arguments.joined(separator: " ")): \(result.output)") }
        return result.output
    }

    /// `nft -a list table` with what an element change may alter taken out (element lines and
    /// counter values): the table, chains and rules with their kernel handles.
    private func structure(_ router: String) throws -> String {
        let listed = try runTool(FirewallTestEnvironment.ip!, ["netns", "exec", router, "nft", "-a", "list", "table", "inet", "vpnsup"])
        #expect(listed.status == 0, "\(listed.output)")
        var inElements = false
        return listed.output.split(separator: "\n").compactMap { line -> String? in
            if line.contains("elements = {") { inElements = true }
            defer { if inElements && line.contains("}") { inElements = false } }
            if inElements { return nil }
            return String(line.replacing(/counter packets \d+ bytes \d+/, with: "counter"))
        }.joined(separator: "\n")
    }

    /// The forwards the kernel's maps hold, as nft lists them (`PORT/PROTO -> TARGET:PORT`).
    private func listedForwards(_ router: String) throws -> Set<String> {
        var result = Set<String>()
        for transport in TransportProtocol.allCases {
            let listed = try runTool(FirewallTestEnvironment.ip!, ["netns", "exec", router, "nft", "-j", "list", "map", "inet", "vpnsup", "\(transport)_forwards"])
            guard listed.status == 0 else { continue }
            let json = try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [String: Any]
            let objects = json?["nftables"] as? [[String: Any]] ?? []
            let body = objects.compactMap { $0["map"] as? [String: Any] }.first ?? [:]
            for element in body["elem"] as? [[Any]] ?? [] {
                guard element.count == 2, let key = element[0] as? Int,
                      let concat = (element[1] as? [String: Any])?["concat"] as? [Any], concat.count == 2,
                      let target = concat[0] as? String, let port = concat[1] as? Int else { continue }
                result.insert("\(key)/\(transport) -> \(target):\(port)")
            }
        }
        return result
    }

    @Test func diffsApplyAsElementsWhileAStreamThroughAnUnchangedForwardFlows() async throws {
        let original = manyForwards(10_000)
        // The stream's forward: TCP, public 20001 -> 172.30.0.3:1025, in every set below.
        let streamed = original[1]
        #expect(streamed.transport == .tcp)
        // The change: 3,000 forwards gone, 3,000 new ones (other public ports), 1,000 retargeted.
        var edited = Array(original.dropLast(3_000))
        for index in stride(from: 2, to: 2_002, by: 2) {
            edited[index].targetPort &+= 1
        }
        for index in 0..<3_000 {
            let target = IPv4Address(172, 30, 100, UInt8(index % 250 + 2))
            let transport: TransportProtocol = index % 3 == 0 ? .udp : .tcp
            edited.append(PortForward(publicPort: UInt16(40_000 + index), target: target, targetPort: 8000, transport: transport))
        }
        let changed = edited
        #expect(changed.contains(streamed))
        let forward = PortForwardDiff(from: original, to: changed), back = PortForwardDiff(from: changed, to: original)
        #expect(forward.removed.count == 4_000 && forward.added.count == 4_000 && !forward.needsFullCommit)

        var layout = forwardingLayout
        layout.portForwards = original
        let router = "\(Self.prefix)\(getpid())-router", tunnel = "\(Self.prefix)\(getpid())-tunnel"
        let lan = "\(Self.prefix)\(getpid())-lan"
        let work = "/tmp/\(Self.prefix)\(getpid())"
        var daemons: [pid_t] = []
        defer {
            daemons.forEach(stopDaemon)
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
        try ip("-n", lan, "addr", "add", "\(streamed.target)/16", "dev", "lan0")
        for (name, link) in [(router, "tun0"), (router, "eth1"), (tunnel, "wan0"), (lan, "lan0")] {
            try ip("-n", name, "link", "set", link, "up")
        }
        try ip("-n", lan, "route", "add", "default", "via", "172.30.255.1")
        #expect(try runTool(FirewallTestEnvironment.ip!, ["netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"]).status == 0)

        let ruleset = Ruleset.build(.up, for: layout)
        try await NetworkNamespace.run(joining: "/run/netns/\(router)") { try Firewall().commit(ruleset) }
        let before = try structure(router)

        // The stream: 6 s through the forward, started before the first change.
        try sinkScript.write(toFile: "\(work)/sink.py", atomically: true, encoding: .utf8)
        try streamScript.write(toFile: "\(work)/stream.py", atomically: true, encoding: .utf8)
        daemons.append(try startDaemon(FirewallTestEnvironment.ip!, ["netns", "exec", lan, NamespaceTestEnvironment.python!,
                                                                     "\(work)/sink.py", "\(streamed.target)", "\(streamed.targetPort)"],
                                       logPath: "\(work)/sink.log"))
        func log(_ name: String) -> String { (try? String(contentsOfFile: "\(work)/\(name).log", encoding: .utf8)) ?? "" }
        func waitFor(_ name: String, _ texts: String...) async throws {
            let deadline = ContinuousClock.now + .seconds(15)
            while !texts.contains(where: log(name).contains) {
                try #require(ContinuousClock.now < deadline, "\(name) never said any of \(texts): \(log(name))")
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        try await waitFor("sink", "ready")
        let client = try startDaemon(FirewallTestEnvironment.ip!, ["netns", "exec", tunnel, NamespaceTestEnvironment.python!,
                                                                   "\(work)/stream.py", "10.200.0.1", "\(streamed.publicPort)", "6"],
                                     logPath: "\(work)/stream.log")
        daemons.append(client)
        try await waitFor("sink", "connected 10.200.0.2")

        // Four changes, there and back twice, while the stream flows; each one transaction.
        let clock = ContinuousClock()
        let durations = try await NetworkNamespace.run(joining: "/run/netns/\(router)") { () throws -> [Duration] in
            let firewall = try Firewall()
            var durations: [Duration] = []
            for (diff, target) in [(forward, changed), (back, original), (forward, changed), (back, original)] {
                durations.append(try clock.measure { try firewall.applyForwardChanges(diff, expecting: target) })
                usleep(500_000)
            }
            // Finally the changed set, left in place for the checks below.
            durations.append(try clock.measure { try firewall.applyForwardChanges(forward, expecting: changed) })
            return durations
        }
        print("5 diffs of 4,000 deletes and 4,000 adds on 10,000 forwards (incl. read-back): \(durations)")

        try await waitFor("stream", "ok sent", "FAIL")
        let result = log("stream").split(separator: "\n").last.map(String.init) ?? ""
        let numbers = result.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(result.hasPrefix("ok sent"), "the stream through the unchanged forward broke: \(result)")
        #expect(numbers.count == 2 && numbers[0] == numbers[1] && numbers[0] > 1_000_000,
                "every byte sent arrived: \(result) / sink: \(log("sink"))")

        // The kernel holds exactly the changed set, read back by nft; the table, its chains and
        // rules are the same objects (handles) as before the changes.
        #expect(try listedForwards(router) == Set(changed.map(\.description)))
        #expect(try structure(router) == before, "only map elements changed")
        let expected = Ruleset.build(.up, for: { var next = layout; next.portForwards = changed; return next }())
        let differences = try await NetworkNamespace.run(joining: "/run/netns/\(router)") { try Firewall().differences(from: expected) }
        #expect(differences.isEmpty, "\(differences)")
    }

    /// All or nothing: a diff computed from a state the kernel is not in (a forward to delete that
    /// is not there) is refused whole, and the maps stay as they were.
    @Test func aStaleDiffIsRefusedWhole() async throws {
        let forwards = Array(manyForwards(3_000))
        var layout = forwardingLayout
        layout.portForwards = forwards
        let ruleset = Ruleset.build(.up, for: layout)
        let added = PortForward(publicPort: 60_000, target: IPv4Address(172, 30, 0, 9), targetPort: 60_000, transport: .tcp)
        let notThere = PortForward(publicPort: 61_000, target: IPv4Address(172, 30, 0, 9), targetPort: 61_000, transport: .tcp)
        let stale = { var diff = PortForwardDiff(from: forwards, to: forwards + [added]); diff.removed = [notThere]; return diff }()
        let outcome = try await NetworkNamespace.run { () throws -> (refusal: String, kind: String, left: [String], full: String) in
            let firewall = try Firewall()
            try firewall.commit(ruleset)
            var refusal = "accepted", kind = ""
            do {
                try firewall.applyForwardChanges(stale, expecting: forwards + [added])
            } catch let error as FirewallError {
                refusal = error.description
                kind = "\(error.kind)"
            }
            var full = PortForwardDiff(from: forwards, to: forwards)
            full.needsFullCommit = true
            full.added = [added]
            var fullRefusal = "accepted"
            do {
                try firewall.applyForwardChanges(full, expecting: forwards + [added])
            } catch let error as FirewallError {
                fullRefusal = "\(error.kind)"
            }
            return (refusal, kind, try firewall.differences(from: ruleset), fullRefusal)
        }
        #expect(outcome.kind == "rejected", "\(outcome.refusal)")
        #expect(outcome.refusal.contains("delete elements 1-1 of 1 from map tcp_forwards"), "\(outcome.refusal)")
        #expect(outcome.left.isEmpty, "the maps are as committed: \(outcome.left)")
        #expect(outcome.full == "invalidRuleset", "a diff that needs a full commit sends nothing")
    }
}
