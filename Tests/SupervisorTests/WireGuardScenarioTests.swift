import StateMachine
@testable import Supervisor
import Testing
import Watchers

/// The whole supervisor with a wg-quick configuration, through the recording effects: the
/// backend's reports arrive as wireguard-go's would (its socket, the peers configured), the
/// handshakes as the effects would read them.
@Suite("Supervisor scenarios: WireGuard")
struct WireGuardScenarioTests {
    static let serverKey = WireGuardKey(bytes: Array(repeating: 9, count: WireGuardKey.byteCount))!
    static let profile = WireGuardProfile(
        interface: "wg0", peers: [.init(publicKey: serverKey, endpoint: WireGuardEndpoint("vpn.example.net:51820")!)],
        dnsServers: [IPv4Address(10, 64, 0, 1)])
    static let loaded = LoadedConfiguration(configuration: World.configuration, remotes: profile.remotes,
                                            nameservers: [IPv4Address(192, 0, 2, 53)], credentials: CredentialsToken(generation: 1),
                                            wireGuard: profile)
    static let configuredAt: Duration = .seconds(1_800_000_000)

    static func read(handshakeAfter: Duration?, at: Duration) -> Event {
        .tunnelPeersRead([WireGuardPeerSample(publicKey: serverKey, lastHandshake: handshakeAfter.map { configuredAt + $0 }, sentBytes: 92)],
                         at: configuredAt + at)
    }

    /// From nothing to wireguard-go released: the name resolved and pinned, the address, the
    /// connecting policy, wireguard-go, its socket, the device configured.
    static func configured() async -> World {
        let world = World(load: .configurationLoaded(loaded))
        await world.start()
        await world.event(.namesResolved(addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 7)]], failures: [:]))
        await world.addressAppears()
        // wireguard-go's socket appeared (WireGuardBackend's report), then the device was configured.
        await world.post(.tunnel(Translation(events: [.tunnelControlConnected, .tunnelHeld])))
        await world.post(.tunnel(Translation(events: [.tunnelPeersConfigured(at: configuredAt)])))
        return world
    }

    @Test func startUpToTunnelUp() async throws {
        let world = await Self.configured()
        let actions = await world.actions
        let connecting = try #require(actions.index(of: .applyFirewall(.connecting)))
        let start = try #require(actions.index(of: .startTunnel))
        let link = try #require(actions.index(of: .watchTunnelState))
        let release = try #require(actions.index(of: .releaseTunnel))
        #expect(connecting < start && start < link && link < release, "\(actions.map(\.label))")
        let plan = try #require(await world.performed.first { $0.action == .releaseTunnel }?.machine.tunnelPlan)
        #expect(plan.tunnelInterface == "wg0")
        #expect(plan.wireGuard?.endpoints == [Self.serverKey: Endpoint(address: IPv4Address(198, 51, 100, 7), port: 51820, transport: .udp)])
        #expect(actions.last == .scheduleTimer(.handshakeLook, after: .milliseconds(100)))
        #expect(world.status.wireGuard?.evidence == "connecting")

        await world.event(.timerFired(.handshakeLook))
        #expect(await world.actions.last == .readTunnelPeers)
        await world.event(Self.read(handshakeAfter: .milliseconds(80), at: .milliseconds(120)))
        #expect(await world.machine.state == .tunnelConnecting, "the link is not up yet")
        // OpenVPN's tun0 means nothing to a WireGuard router; its own link does.
        await world.tunnelLink(up: true)
        #expect(await world.machine.state == .tunnelConnecting)
        await world.netlink(.link(name: "wg0", index: 12, up: true))
        #expect(await world.machine.state == .tunnelUp)
        #expect(world.notifier.sent.contains("READY=1"))
        #expect(world.status.state == "TunnelUp")
        #expect(world.status.wireGuard == WireGuardStatus(interface: "wg0", plane: "userspace", evidence: "up",
                                                          configuredEndpoints: [Self.serverKey.base64: "198.51.100.7:51820"]))
        #expect(world.status.endpoints == ["198.51.100.7:51820/udp"])
        #expect(world.log.written.contains("info WireGuard handshakes: up"))
        // The ruleset committed for TunnelUp names the link and pins the resolved endpoint.
        let up = try #require(await world.performed.last { $0.action == .applyFirewall(.up) }?.machine.ruleset(for: .up))
        #expect(up.nftText.contains("oifname \"wg0\" masquerade"))
        #expect(up.nftText.contains("ip daddr 198.51.100.7 udp dport 51820 accept"))
    }

    /// No handshake: the status says why while still connecting, systemd too, and the peer is
    /// set again (the log says so).
    @Test func anOverdueHandshakeIsInTheStatus() async throws {
        let world = await Self.configured()
        await world.event(.timerFired(.handshakeLook))
        await world.event(Self.read(handshakeAfter: nil, at: .seconds(21)))
        let why = "no handshake with peer CQkJCQkJ… 21 s after configuring it (wrong key, server down or transport blocked?)"
        #expect(world.status.state == "TunnelConnecting")
        #expect(world.status.reason == why)
        #expect(world.notifier.sent.last == "STATUS=TunnelConnecting (\(why))")
        #expect(world.status.wireGuard?.evidence == "handshake overdue: \(why)")
        // One address pinned for the name: a full round, so the name is resolved again.
        #expect(await world.actions.contains(.openNameResolution))
        #expect(world.log.written.contains("notice resolving vpn.example.net again: no peer answered on any pinned address"))
        #expect(world.log.written.contains("warning WireGuard handshakes: handshake overdue: \(why)"))
    }

    @Test func wireguardGosEndIsNamedAndItIsStartedAgain() async throws {
        let world = await Self.configured()
        let pid = try #require(await world.machine.tunnelPID)
        await world.signal(.childExited(pid: pid, status: .signaled(9)))
        #expect(world.log.written.contains("notice wireguard-go (pid \(pid)) was killed by signal 9"))
        #expect(await world.actions.suffix(3) == [.scheduleTimer(.crashWindow, after: .seconds(60)),
                                                  .scheduleTimer(.respawn, after: .milliseconds(250)), .cancelTimer(.handshakeLook)])
        await world.event(.timerFired(.respawn))
        #expect(await world.actions.last == .startTunnel)
        #expect(await world.machine.tunnelPID != pid)
    }

    @Test func sighupSaysWhatItReloads() async {
        let world = await Self.configured()
        await world.signal(.reload)
        #expect(world.log.written.contains("notice SIGHUP: reloading the WireGuard configuration"))
        #expect(await world.actions.last == .reloadConfiguration)
    }
}
