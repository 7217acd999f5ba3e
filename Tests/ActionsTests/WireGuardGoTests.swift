import Foundation
import Glibc
import StateMachine
import SystemSupport
import TestSupport
import Testing
import Watchers
@testable import Actions

// The WireGuard pieces against real wireguard-go processes (Debian's), in the test's private
// namespace and in namespaces the tests create and delete: spawn, the socket watcher, the UAPI
// client, the link, the handshake monitor on real counters, and the kill switch with
// wireguard-go's marked transport. Interface names are unique on the machine (wireguard-go's
// socket directory is shared by every namespace): "vsw", this process's pid in base 36, a role.

enum WireGuardTestEnvironment {
    static let wireguardGo = Spawner.resolve("wireguard-go", searchPath: Spawner.defaultSearchPath)
    static let wg = Spawner.resolve("wg", searchPath: Spawner.defaultSearchPath)
    static var canRun: Bool { NamespaceTestEnvironment.canRun && wireguardGo != nil && wg != nil }

    static func name(_ role: String) -> String { "vsw" + String(getpid(), radix: 36) + role }

    /// A key pair from `wg genkey` / `wg pubkey` (base64).
    static func keyPair() throws -> (privateKey: String, publicKey: String) {
        func key(in output: String) -> String? {
            output.split(separator: "\n").map(String.init).first { WireGuardKey(base64: $0) != nil }
        }
        let generated = try runTool(wg!, ["genkey"])
        guard let privateKey = key(in: generated.output) else { throw ToolError(description: "wg genkey: \(generated.output)") }
        let derived = try runTool(wg!, ["pubkey"], input: privateKey + "\n")
        guard let publicKey = key(in: derived.output) else { throw ToolError(description: "wg pubkey: \(derived.output)") }
        return (privateKey, publicKey)
    }

    /// wireguard-go for `name`, started as vpnsup starts it, in the calling thread's namespace:
    /// the socket claimed, the watcher armed, the spawn, the wait. Returns the pid and how long
    /// the socket took to appear.
    static func start(_ name: String) throws -> (pid: Int32, ready: Duration) {
        try WireGuardGo.claimSocket(interface: name)
        let watcher = try WireGuardSocketWatcher(interface: name)
        let clock = ContinuousClock()
        let start = clock.now
        let pid = try WireGuardGo.spawn(interface: name, executable: wireguardGo!)
        let outcome = try watcher.wait(until: start + .seconds(10))
        guard outcome == .appeared else {
            stopDaemon(pid)
            throw ToolError(description: "wireguard-go \(name): socket \(outcome)")
        }
        return (pid, clock.now - start)
    }

    /// Runs the handshake monitor on real time and real counters until the evidence is `up` (or
    /// `limit` passes); returns the evidence reports and how long it took.
    static func awaitHandshake(_ client: WireGuardUAPIClient, peers: [WireGuardKey],
                               limit: Duration = .seconds(10)) -> (reports: [WireGuardEvidence], elapsed: Duration) {
        var monitor = WireGuardHandshakeMonitor()
        let clock = ContinuousClock()
        let start = clock.now
        var reports: [WireGuardEvidence] = []
        var actions = monitor.handle(.peersConfigured(peers, at: wallClock()))
        while clock.now - start < limit {
            reports += actions.compactMap { if case .report(let evidence) = $0 { evidence } else { nil } }
            if reports.last == .up { break }
            var next: [WireGuardEvidenceAction] = []
            for action in actions {
                switch action {
                case .scheduleLook(let after):
                    Thread.sleep(forTimeInterval: Double(after.components.seconds) + Double(after.components.attoseconds) / 1e18)
                    next += monitor.handle(.lookDue)
                case .readPeers:
                    do {
                        let status = try client.status()
                        next += monitor.handle(.sampled(status.peers.map(WireGuardPeerSample.init), at: wallClock()))
                    } catch {
                        next += monitor.handle(.readFailed("\(error)"))
                    }
                case .report, .cancelLook: break
                }
            }
            actions = next
        }
        return (reports, clock.now - start)
    }

    /// CLOCK_REALTIME, the clock WireGuard stamps handshakes with.
    static func wallClock() -> Duration {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return .seconds(now.tv_sec) + .nanoseconds(now.tv_nsec)
    }

    /// Whether a wireguard-go for `name` runs anywhere on the machine (by its command line: a
    /// reaped pid may already be another process's).
    static func running(_ name: String) -> Bool {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.contains { entry in
            guard entry.allSatisfy(\.isNumber),
                  let cmdline = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return false }
            return String(decoding: cmdline, as: UTF8.self).hasSuffix("\0-f\0\(name)\0")
        }
    }
}

private func wgQuick(privateKey: String, address: String, listenPort: UInt16, peer: String,
                     endpoint: String, allowedIPs: String) throws -> WireGuardConfiguration {
    try WireGuardConfiguration(text: """
        [Interface]
        PrivateKey = \(privateKey)
        Address = \(address)
        ListenPort = \(listenPort)
        [Peer]
        PublicKey = \(peer)
        Endpoint = \(endpoint)
        AllowedIPs = \(allowedIPs)
        """, path: "test.conf")
}

@Suite("WireGuard: wireguard-go, UAPI, link", .serialized,
       .enabled(if: WireGuardTestEnvironment.canRun, "needs root in a private network namespace, nft, ip, wireguard-go and wg"))
struct WireGuardGoTests {
    /// Two devices over loopback: each spawned and waited for as vpnsup does, configured over
    /// UAPI (the client with vpnsup's request: fwmark, keepalive), then handshaking.
    @Test func spawnConfigureAndHandshake() async throws {
        let clientName = WireGuardTestEnvironment.name("c"), serverName = WireGuardTestEnvironment.name("s")
        let clientKeys = try WireGuardTestEnvironment.keyPair(), serverKeys = try WireGuardTestEnvironment.keyPair()
        let clientPort = UInt16(40000 + getpid() % 10000), serverPort = clientPort &+ 1
        var pids: [Int32] = []
        defer {
            for pid in pids { stopDaemon(pid) }
            #expect(!WireGuardTestEnvironment.running(clientName) && !WireGuardTestEnvironment.running(serverName))
            _ = try? WireGuardGo.claimSocket(interface: clientName)
            _ = try? WireGuardGo.claimSocket(interface: serverName)
        }
        let server = try WireGuardTestEnvironment.start(serverName)
        pids.append(server.pid)
        let client = try WireGuardTestEnvironment.start(clientName)
        pids.append(client.pid)
        print("wireguard-go's UAPI socket appeared \(server.ready) and \(client.ready) after the spawn")
        #expect(AddressConfigurator.interfaceExists(clientName), "the link exists once the socket does")

        let serverConfig = try wgQuick(privateKey: serverKeys.privateKey, address: "10.77.0.1/24", listenPort: serverPort,
                                       peer: clientKeys.publicKey, endpoint: "127.0.0.1:\(clientPort)", allowedIPs: "10.77.0.2/32")
        let clientConfig = try wgQuick(privateKey: clientKeys.privateKey, address: "10.77.0.2/32", listenPort: clientPort,
                                       peer: serverKeys.publicKey, endpoint: "127.0.0.1:\(serverPort)", allowedIPs: "0.0.0.0/0")
        let serverUAPI = WireGuardUAPIClient(interface: serverName, expectedPID: server.pid)
        let clientUAPI = WireGuardUAPIClient(interface: clientName, expectedPID: client.pid)
        let pins = RemotePins(remotes: clientConfig.remotes)
        _ = try serverUAPI.send(.device(serverConfig, endpoints: serverConfig.peerEndpoints(pins: RemotePins(remotes: serverConfig.remotes)),
                                        fwmark: 0, defaultKeepalive: nil))
        let addresses = AddressConfigurator()
        for name in [serverName, clientName] { try addresses.setLinkUp(name) }
        try WireGuardLink.setMTU(1380, on: clientName)
        _ = try clientUAPI.send(.device(clientConfig, endpoints: clientConfig.peerEndpoints(pins: pins), fwmark: Configuration.transportMark))

        let serverKey = try #require(WireGuardKey(base64: serverKeys.publicKey))
        let (reports, elapsed) = WireGuardTestEnvironment.awaitHandshake(clientUAPI, peers: [serverKey])
        print("first handshake seen \(elapsed) after configuring (evidence: \(reports))")
        #expect(reports == [.connecting, .up])

        let status = try clientUAPI.status()
        #expect(status.fwmark == Configuration.transportMark)
        #expect(status.listenPort == clientPort)
        let peer = try #require(status.peer(serverKey))
        #expect(peer.endpoint == "127.0.0.1:\(serverPort)")
        #expect(peer.persistentKeepalive == 25, "vpnsup's default keepalive")
        #expect(peer.allowedIPs == ["0.0.0.0/0"])
        #expect(peer.lastHandshake != nil && peer.sentBytes > 0 && peer.receivedBytes > 0)
        // What one look costs (a figure for docs/wireguard.md, not a limit).
        let clock = ContinuousClock()
        let looks = 200
        let spent = try clock.measure { for _ in 0..<looks { _ = try clientUAPI.status() } }
        print("one UAPI get (connect, request, answer of 1 peer, parse): \(spent / looks) on average over \(looks)")
        let link = try runTool(FirewallTestEnvironment.ip!, ["-o", "link", "show", "dev", clientName])
        #expect(link.output.contains(" mtu 1380 "), "\(link.output)")

        // The private key is in no argument and no environment variable of wireguard-go.
        let privateHex = try #require(WireGuardKey(base64: clientKeys.privateKey)).hex
        for file in ["cmdline", "environ"] {
            let text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: "/proc/\(client.pid)/\(file)")), as: UTF8.self)
            #expect(!text.contains(clientKeys.privateKey) && !text.contains(privateHex), "\(file)")
            #expect(file != "cmdline" || text == "\(WireGuardTestEnvironment.wireguardGo!)\0-f\0\(clientName)\0")
        }

        // A request for one device never reaches another one's socket.
        #expect(throws: WireGuardUAPIError(interface: clientName, reason: .foreignDevice(pid: client.pid))) {
            try WireGuardUAPIClient(interface: clientName, expectedPID: server.pid).status()
        }
        // A live socket is never claimed (or removed) from under its device.
        #expect(throws: WireGuardSocketClaimError(path: clientUAPI.socketPath, reason: .inUse(pid: client.pid))) {
            try WireGuardGo.claimSocket(interface: clientName)
        }
        #expect(try clientUAPI.status().peers.count == 1, "still served after the refused claim")

        // SIGKILL: the link goes with the process, the socket file stays behind, stale; a claim
        // removes it; a request then finds no device.
        stopDaemon(client.pid)
        pids.removeAll { $0 == client.pid }  // reaped: its pid may now be another process's
        #expect(!AddressConfigurator.interfaceExists(clientName))
        #expect(FileManager.default.fileExists(atPath: clientUAPI.socketPath))
        try WireGuardGo.claimSocket(interface: clientName)
        #expect(!FileManager.default.fileExists(atPath: clientUAPI.socketPath))
        #expect(throws: WireGuardUAPIError(interface: clientName,
                                           reason: .system(SystemError(operation: "connect \(clientUAPI.socketPath)", errno: ENOENT)))) {
            try clientUAPI.status()
        }
    }

    /// What the device says to a bad request comes back as its errno, and the connection's end
    /// does not hang the client.
    @Test func aRefusedRequestIsAnError() throws {
        let name = WireGuardTestEnvironment.name("e")
        let device = try WireGuardTestEnvironment.start(name)
        defer {
            stopDaemon(device.pid)
            _ = try? WireGuardGo.claimSocket(interface: name)
        }
        let keys = try WireGuardTestEnvironment.keyPair()
        // Port 1 twice: the second device line asks for a port this process holds open.
        let holder = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(holder) }
        var address = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: UInt16(47_999 - getpid() % 1000).bigEndian,
                                  sin_addr: in_addr(s_addr: 0), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(holder, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(bound == 0)
        let config = try wgQuick(privateKey: keys.privateKey, address: "10.78.0.2/32", listenPort: UInt16(47_999 - getpid() % 1000),
                                 peer: keys.publicKey, endpoint: "127.0.0.1:9", allowedIPs: "0.0.0.0/0")
        let uapi = WireGuardUAPIClient(interface: name, expectedPID: device.pid)
        try AddressConfigurator().setLinkUp(name)
        #expect(throws: WireGuardUAPIError(interface: name, reason: .answer(.failed(errno: -EADDRINUSE)))) {
            try uapi.send(.device(config, endpoints: config.peerEndpoints(pins: RemotePins(remotes: config.remotes)), fwmark: 1))
        }
        #expect(throws: Never.self, "the device still answers") { try uapi.status() }
    }

    /// This kernel's answer to a `wireguard` link decides the data plane; no link is left behind.
    @Test func theKernelProbe() throws {
        let name = WireGuardTestEnvironment.name("k")
        let kernel = try WireGuardLink.kernelSupportsWireGuard(probingWith: name)
        // Loaded by the probe if the kernel has it as a module.
        #expect(kernel == FileManager.default.fileExists(atPath: "/sys/module/wireguard"))
        #expect(!AddressConfigurator.interfaceExists(name))
        print("kernel wireguard link type: \(kernel ? "yes" : "no (EOPNOTSUPP): the userspace plane")")
    }

    /// The link requests themselves, with a kind every kernel here has (a bridge): create,
    /// refuse a second create, set the MTU, delete, delete again.
    @Test func linkRequests() throws {
        let name = WireGuardTestEnvironment.name("b")
        defer { try? WireGuardLink.deleteLink(name) }
        try WireGuardLink.createLink(name, kind: "bridge")
        #expect(AddressConfigurator.interfaceExists(name))
        #expect(throws: NetlinkError(operation: "create link \(name) of kind bridge", errno: EEXIST)) {
            try WireGuardLink.createLink(name, kind: "bridge")
        }
        try WireGuardLink.setMTU(1280, on: name)
        let link = try runTool(FirewallTestEnvironment.ip!, ["-d", "-o", "link", "show", "dev", name])
        #expect(link.output.contains(" mtu 1280 ") && link.output.contains("bridge"), "\(link.output)")
        try WireGuardLink.deleteLink(name)
        #expect(!AddressConfigurator.interfaceExists(name))
        try WireGuardLink.deleteLink(name)
    }
}

@Suite("WireGuard: the kill switch with wireguard-go (own namespaces)",
       .enabled(if: WireGuardTestEnvironment.canRun && NamespaceTestEnvironment.python != nil,
                "needs root in a private network namespace, nft, ip, python3, wireguard-go and wg"))
struct WireGuardKillSwitchTests {
    private static let prefix = "vpnsup-wgtest-"

    @discardableResult
    private func ip(_ arguments: String...) throws -> String {
        let result = try runTool(FirewallTestEnvironment.ip!, arguments)
        guard result.status == 0 else { throw ToolError(description: "ip \(arguments.joined(separator: " ")): \(result.output)") }
        return result.output
    }

    private func inNamespace(_ name: String, _ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try runTool(FirewallTestEnvironment.ip!, ["netns", "exec", name, tool] + arguments)
    }

    /// Packets that reached the server's WAN side: the tunnel's transport, and everything else.
    private func serverCounters(_ server: String) throws -> (transport: Int, other: Int) {
        let listed = try inNamespace(server, FirewallTestEnvironment.nft!, ["list", "chain", "inet", "wgtest", "pre"])
        let counts = listed.output.matches(of: /counter packets (\d+)/).map { Int($0.1)! }
        guard counts.count == 2 else { throw ToolError(description: "server counters: \(listed.output)") }
        return (counts[0], counts[1])
    }

    /// A router (vpnsup's rulesets and routing, wireguard-go with vpnsup's request), a server
    /// (wireguard-go) and a LAN host. The marked transport passes the kill switch; the LAN reaches
    /// the server's tunnel address and even its WAN address only through the tunnel; unmarked
    /// packets to the endpoint are refused; with wireguard-go SIGKILLed nothing gets out. The
    /// server counts what arrives on its WAN side that is not the transport: zero throughout.
    @Test func onlyTheMarkedTransportLeavesEvenAfterWireGuardGoIsKilled() async throws {
        let router = "\(Self.prefix)\(getpid())-router", server = "\(Self.prefix)\(getpid())-server"
        let lan = "\(Self.prefix)\(getpid())-lan"
        let routerDevice = WireGuardTestEnvironment.name("r"), serverDevice = WireGuardTestEnvironment.name("v")
        var pids: [Int32] = []
        defer {
            for pid in pids { stopDaemon(pid) }
            #expect(!WireGuardTestEnvironment.running(routerDevice) && !WireGuardTestEnvironment.running(serverDevice))
            for name in [router, server, lan] { _ = try? runTool(FirewallTestEnvironment.ip!, ["netns", "del", name]) }
            _ = try? WireGuardGo.claimSocket(interface: routerDevice)
            _ = try? WireGuardGo.claimSocket(interface: serverDevice)
        }
        for name in [router, server, lan] {
            try ip("netns", "add", name)
            try ip("-n", name, "link", "set", "lo", "up")
        }
        try ip("-n", router, "link", "add", "eth0", "type", "veth", "peer", "name", "wan0", "netns", server)
        try ip("-n", router, "link", "add", "eth1", "type", "veth", "peer", "name", "lan0", "netns", lan)
        try ip("-n", router, "addr", "add", "10.203.0.1/24", "dev", "eth0")
        try ip("-n", server, "addr", "add", "10.203.0.2/24", "dev", "wan0")
        try ip("-n", router, "addr", "add", "172.31.0.1/24", "dev", "eth1")
        try ip("-n", lan, "addr", "add", "172.31.0.10/24", "dev", "lan0")
        #expect(try inNamespace(router, "sysctl", ["-qw", "net.ipv4.ip_forward=1"]).status == 0)
        let counting = try runTool(FirewallTestEnvironment.ip!, ["netns", "exec", server, FirewallTestEnvironment.nft!, "-f", "-"], input: """
            table inet wgtest {
                chain pre {
                    type filter hook prerouting priority -300; policy accept;
                    iifname "wan0" udp dport 51820 counter accept
                    iifname "wan0" counter
                }
            }
            """)
        try #require(counting.status == 0, "\(counting.output)")

        let routerKeys = try WireGuardTestEnvironment.keyPair(), serverKeys = try WireGuardTestEnvironment.keyPair()
        let serverConfig = try wgQuick(privateKey: serverKeys.privateKey, address: "10.77.0.1/24", listenPort: 51820,
                                       peer: routerKeys.publicKey, endpoint: "10.203.0.1:51820", allowedIPs: "10.77.0.2/32")
        let routerConfig = try wgQuick(privateKey: routerKeys.privateKey, address: "10.77.0.2/32", listenPort: 51820,
                                       peer: serverKeys.publicKey, endpoint: "10.203.0.2:51820", allowedIPs: "0.0.0.0/0")
        let configuration = try Configuration(["CONFIG": "wg.conf", "IP_ADDR": "172.31.0.1/24", "LAN_IF": "eth1", "WAN_IF": "eth0"])
        let endpoints = routerConfig.peerEndpoints(pins: RemotePins(remotes: routerConfig.remotes))
        let layout = configuration.wireGuardLayout(routerConfig, settings: WireGuardSettings(tunnelInterface: routerDevice),
                                                   endpoints: Array(endpoints.values))
        let table = Configuration.routingTable, priority = Configuration.routingRulePriority

        // As vpnsup does, the router's kill switch is in place before its links come up: the
        // kernel's own IPv6 chatter (DAD, router solicitations, MLD) on eth0 would count as leaks.
        try await NetworkNamespace.run(joining: "/run/netns/\(router)") { try Firewall().commit(Ruleset.build(.connecting, for: layout)) }
        for (name, link) in [(router, "eth0"), (router, "eth1"), (server, "wan0"), (lan, "lan0")] {
            try ip("-n", name, "link", "set", link, "up")
        }
        try ip("-n", lan, "route", "add", "default", "via", "172.31.0.1")

        // The server, as a provider would run it.
        let serverProcess = try await NetworkNamespace.run(joining: "/run/netns/\(server)") { () throws -> Int32 in
            let started = try WireGuardTestEnvironment.start(serverDevice)
            _ = try WireGuardUAPIClient(interface: serverDevice, expectedPID: started.pid)
                .send(.device(serverConfig, endpoints: serverConfig.peerEndpoints(pins: RemotePins(remotes: serverConfig.remotes)),
                              fwmark: 0, defaultKeepalive: nil))
            try AddressConfigurator().ensureAddress(IPv4Interface("10.77.0.1/24")!, on: serverDevice)
            try AddressConfigurator().setLinkUp(serverDevice)
            return started.pid
        }
        pids.append(serverProcess)

        // The router, in the order vpnsup's Machine goes: with the connecting policy committed,
        // wireguard-go, its configuration, the link; the up policy once the handshake is seen.
        let routerProcess = try await NetworkNamespace.run(joining: "/run/netns/\(router)") { () throws -> Int32 in
            let started = try WireGuardTestEnvironment.start(routerDevice)
            let addresses = AddressConfigurator()
            try addresses.ensureUnreachableDefault(table: table)
            try addresses.ensureRule(inputInterface: "eth1", table: table, priority: priority)
            _ = try WireGuardUAPIClient(interface: routerDevice, expectedPID: started.pid)
                .send(.device(routerConfig, endpoints: endpoints, fwmark: Configuration.transportMark))
            try addresses.ensureAddress(IPv4Interface("10.77.0.2/32")!, on: routerDevice)
            try addresses.setLinkUp(routerDevice)
            try addresses.ensureDefaultRoute(dev: routerDevice, table: table)
            return started.pid
        }
        pids.append(routerProcess)

        let serverKey = try #require(WireGuardKey(base64: serverKeys.publicKey))
        let routerUAPI = WireGuardUAPIClient(interface: routerDevice, expectedPID: routerProcess)
        let (reports, elapsed) = WireGuardTestEnvironment.awaitHandshake(routerUAPI, peers: [serverKey])
        print("handshake through the connecting policy after \(elapsed): \(reports)")
        try #require(reports == [.connecting, .up], "the marked transport passes the kill switch")
        try await NetworkNamespace.run(joining: "/run/netns/\(router)") { try Firewall().commit(Ruleset.build(.up, for: layout)) }

        // The LAN through the tunnel: the server's tunnel address, and its WAN address too (the
        // LAN's routing table sends everything into the tunnel).
        let ping = ["-n", "-q", "-c", "3", "-i", "0.2", "-W", "1"]
        #expect(try inNamespace(lan, "ping", ping + ["10.77.0.1"]).status == 0, "LAN -> server's tunnel address")
        #expect(try inNamespace(lan, "ping", ping + ["10.203.0.2"]).status == 0, "LAN -> server's WAN address, via the tunnel")
        // The router's own packets to the endpoint, without the mark: refused by the kill switch.
        let unmarked = try inNamespace(router, NamespaceTestEnvironment.python!, ["-c", """
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.sendto(b"unmarked", ("10.203.0.2", 51820))
                print("sent")
            except PermissionError:
                print("refused")
            """])
        #expect(unmarked.output == "refused\n", "\(unmarked.output)")
        let afterTraffic = try serverCounters(server)
        #expect(afterTraffic.transport > 0)
        #expect(afterTraffic.other == 0, "nothing but the transport on the WAN")
        let peer = try #require(try routerUAPI.status().peer(serverKey))
        #expect(peer.receivedBytes > 0)

        // wireguard-go SIGKILLed: the link and its routes go; the LAN's packets meet the
        // unreachable default and the firewall; still nothing else on the WAN.
        stopDaemon(routerProcess)
        pids.removeAll { $0 == routerProcess }  // reaped: its pid may now be another process's
        #expect(try ip("-n", router, "-o", "link", "show").contains(routerDevice) == false)
        #expect(try inNamespace(lan, "ping", ["-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "10.203.0.2"]).status != 0)
        #expect(try inNamespace(lan, "ping", ["-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "10.77.0.1"]).status != 0)
        let afterKill = try serverCounters(server)
        #expect(afterKill.other == 0, "nothing on the WAN after wireguard-go was killed")
    }
}
