import FoundationEssentials
import Logging
import StateMachine
@testable import Supervisor
import Testing
import Watchers

/// `vpnsup join`'s effects seam, recorded: answers as the kernel would when all goes well, unless
/// a test scripts otherwise; the resolution's answer (which comes later on Linux) is the test's.
actor RecordingJoinEffects: JoinEffects {
    struct Performed: Sendable {
        var action: JoinAction
        var machine: JoinMachine
    }

    private(set) var performed: [Performed] = []
    var loadResult: JoinEvent
    var failingOverlay: String?
    private let log: SupervisorLog

    init(load: JoinEvent, log: SupervisorLog) {
        loadResult = load
        self.log = log
    }

    func script(failingOverlay message: String?) { failingOverlay = message }

    var actions: [JoinAction] { performed.map(\.action) }

    func perform(_ action: JoinAction, for machine: JoinMachine) async -> [JoinEvent] {
        performed.append(Performed(action: action, machine: machine))
        switch action {
        case .applyFirewall(let policy):
            // As LinuxJoinEffects does: the line waits until the configuration is judged.
            log.log(.info, "committed the client's \(policy) ruleset")
            return [.firewallCommitted(policy)]
        case .loadConfiguration: return [loadResult]
        case .startForwarder: return [.forwarderStarted]
        case .ensureOverlay: return [failingOverlay.map { .overlayFailed($0) } ?? .overlayReady]
        case .ensureRoutes: return [.routesInstalled]
        case .resolveGateway, .forgetGatewayNeighbour, .scheduleTimer, .cancelTimer, .exit: return []
        }
    }
}

/// A whole `vpnsup join` without root: the real interpreter, translator and record, the recording
/// effects; the test posts what the kernel and the resolver would report.
struct JoinWorld {
    let driver: JoinDriver
    let effects: RecordingJoinEffects
    let board: JoinStatusBoard
    let log = RecordingLog()

    static let values = ["GATEWAY": "vpn-gateway.vpn.svc.cluster.local", "GATEWAY_ADDR": "172.30.0.1/15",
                         "POD_CIDRS": "10.244.0.0/16", "CLUSTER_CIDRS": "10.96.0.0/12,192.168.50.0/24"]
    static let setup = JoinSetup(configuration: try! JoinConfiguration(values), clusterDNS: IPv4Address(10, 96, 0, 10),
                                 clusterDNSFromResolvConf: true, podAddress: IPv4Address(10, 244, 1, 10))
    static let gateway = IPv4Address(10, 244, 1, 20)
    static let moved = IPv4Address(10, 244, 3, 20)
    static let gatewayOverlay = IPv4Address(172, 30, 0, 1)

    init(load: JoinEvent = .configurationLoaded(JoinWorld.setup)) {
        let supervisorLog = SupervisorLog(log.logger())
        effects = RecordingJoinEffects(load: load, log: supervisorLog)
        board = JoinStatusBoard(JoinStatus(since: "t0", pid: 1, startedAt: "t0"))
        driver = JoinDriver(machine: JoinMachine(), effects: effects, inbox: JoinInbox(), log: supervisorLog, board: board)
    }

    func start() async { await driver.step(.event(.start)) }
    func event(_ event: JoinEvent) async { await driver.step(.event(event)) }
    func netlink(_ event: NetlinkEvent) async { await driver.step(.netlink(event)) }

    /// From nothing to Joined: the name resolves to `gateway`.
    func join() async {
        await start()
        await event(.gatewayResolved([JoinWorld.gateway]))
    }

    var actions: [JoinAction] { get async { await effects.actions } }
    var machine: JoinMachine { get async { await driver.current } }
    var status: JoinStatus { board.current }
    func actions(since count: Int) async -> [JoinAction] { Array(await actions.dropFirst(count)) }
}

@Suite("vpnsup join scenarios")
struct JoinScenarioTests {
    @Test func theKillSwitchComesFirstThenTheForwarderTheGatewayTheOverlayAndTheRoutes() async throws {
        let world = JoinWorld()
        await world.start()
        #expect(await world.actions == [.applyFirewall(.lockdown), .loadConfiguration, .applyFirewall(.killSwitch),
                                        .startForwarder, .resolveGateway("vpn-gateway.vpn.svc.cluster.local")])
        #expect(world.status.state == "Locating")
        #expect(world.status.policy == "killSwitch")
        // The kill switch committed is ClientKillSwitch's, for the resolver of the pod's resolv.conf.
        let committed = try #require(await world.effects.performed.first { $0.action == .applyFirewall(.killSwitch) })
        #expect(committed.machine.ruleset(for: .killSwitch)
                == JoinWorld.setup.configuration.killSwitch(clusterDNS: IPv4Address(10, 96, 0, 10)).ruleset)

        await world.event(.gatewayResolved([JoinWorld.gateway]))
        #expect(await world.actions(since: 5) == [.ensureOverlay(JoinWorld.gateway), .ensureRoutes])
        #expect(await world.machine.state == .joined)
        #expect(world.status.state == "Joined")
        #expect(world.status.gateway == "10.244.1.20")
        #expect(world.status.overlayAddress == "172.31.1.10/15")
        #expect(world.status.transitions.map(\.to) == ["Locating", "Joined"])
        // The status socket's JSON: `vpnsup health` passes in Joined.
        let decoded = try #require(JoinStatus.decode(world.board.json()))
        #expect(decoded.healthy && decoded.role == "join")
    }

    @Test func theGatewayIsFollowedWhenTheKernelReportsItUnreachable() async throws {
        let world = JoinWorld()
        await world.join()
        let before = await world.actions.count
        // The gateway's overlay address FAILED on vxlan0: the name is asked again.
        await world.netlink(.neighbour(interface: "vxlan0", index: 5, address: JoinWorld.gatewayOverlay, state: .failed))
        #expect(await world.actions(since: before) == [.resolveGateway("vpn-gateway.vpn.svc.cluster.local")])
        #expect(world.status.state == "Following")
        #expect(JoinStatus.decode(world.board.json())?.healthy == false)
        // The same answer: nothing moves; the next failure asks again.
        await world.event(.gatewayResolved([JoinWorld.gateway]))
        #expect(await world.actions.count == before + 1)
        await world.netlink(.neighbour(interface: "vxlan0", index: 5, address: JoinWorld.gatewayOverlay, state: .failed))
        #expect(await world.actions.count == before + 2)
        // A new answer: re-pointed in place, the old neighbour entry forgotten.
        await world.event(.gatewayResolved([JoinWorld.moved]))
        #expect(await world.actions(since: before + 2) == [.ensureOverlay(JoinWorld.moved), .forgetGatewayNeighbour, .ensureRoutes])
        #expect(world.status.state == "Joined")
        #expect(world.status.follows == 1)
        #expect(world.status.lastFollow?.from == "10.244.1.20" && world.status.lastFollow?.to == "10.244.3.20")
        #expect(world.log.written.contains("notice following the gateway: 10.244.1.20 -> 10.244.3.20 (re-pointing vxlan0 in place)"))
        // Other neighbours, and other states of the gateway's, are no news.
        let settled = await world.actions.count
        await world.netlink(.neighbour(interface: "vxlan0", index: 5, address: IPv4Address(172, 31, 2, 10), state: .failed))
        await world.netlink(.neighbour(interface: "eth0", index: 2, address: JoinWorld.gatewayOverlay, state: .failed))
        await world.netlink(.neighbour(interface: "vxlan0", index: 5, address: JoinWorld.gatewayOverlay, state: .stale))
        #expect(await world.actions.count == settled)
    }

    @Test func whatNetlinkReportsMissingIsPutBack() async throws {
        let world = JoinWorld()
        await world.join()
        let overlay = IPv4Interface("172.31.1.10/15")!
        let gateway = JoinWorld.gateway
        func after(_ event: NetlinkEvent) async -> [JoinAction] {
            let before = await world.actions.count
            await world.netlink(event)
            return await world.actions(since: before)
        }
        #expect(await after(.linkRemoved(name: "vxlan0", index: 5)) == [.ensureOverlay(gateway), .ensureRoutes])
        #expect(await after(.link(name: "vxlan0", index: 6, up: false)) == [.ensureOverlay(gateway), .ensureRoutes])
        #expect(await after(.address(interface: "vxlan0", index: 6, address: overlay, added: false)) == [.ensureOverlay(gateway), .ensureRoutes])
        #expect(await after(.route(destination: IPv4Interface("10.96.0.0/12")!.network, gateway: IPv4Address(169, 254, 1, 1),
                                   interfaceIndex: 2, added: false)) == [.ensureRoutes])
        #expect(await after(.route(destination: IPv4Interface("0.0.0.0/0")!.network, gateway: JoinWorld.gatewayOverlay,
                                   interfaceIndex: 6, added: false)) == [.ensureRoutes])
        // Someone else's default route (out of eth0): ours is put in its place again.
        #expect(await after(.route(destination: IPv4Interface("0.0.0.0/0")!.network, gateway: IPv4Address(169, 254, 1, 1),
                                   interfaceIndex: 2, added: true)) == [.ensureRoutes])
        // Not ours: another link, another address, a route we do not keep.
        #expect(await after(.linkRemoved(name: "eth9", index: 9)) == [])
        #expect(await after(.address(interface: "vxlan0", index: 6, address: IPv4Interface("172.31.9.9/15")!, added: false)) == [])
        #expect(await after(.route(destination: IPv4Interface("203.0.113.0/24")!.network, gateway: nil, interfaceIndex: 2, added: false)) == [])
        #expect(await world.machine.state == .joined)
    }

    @Test func aGatewayNameThatDoesNotResolveIsAskedAgainLater() async throws {
        let world = JoinWorld()
        await world.start()
        await world.event(.gatewayResolutionFailed("no such name (NXDOMAIN)"))
        #expect(await world.actions.last == .scheduleTimer(.retry, after: .seconds(1)))
        #expect(world.status.reason == "GATEWAY=vpn-gateway.vpn.svc.cluster.local did not resolve: no such name (NXDOMAIN)")
        // An answer outside POD_CIDRS is never followed.
        await world.event(.timerFired(.retry))
        await world.event(.gatewayResolved([IPv4Address(192, 0, 2, 9)]))
        #expect(await world.actions.suffix(2) == [.resolveGateway("vpn-gateway.vpn.svc.cluster.local"),
                                                  .scheduleTimer(.retry, after: .seconds(2))])
        #expect(world.status.reason == "GATEWAY=vpn-gateway.vpn.svc.cluster.local resolved to 192.0.2.9, outside POD_CIDRS: not following it")
        #expect(!(await world.actions).contains { if case .ensureOverlay = $0 { true } else { false } })
    }

    @Test func aBadConfigurationExits78WithTheLockdownCommittedAndStderrToItself() async throws {
        let message = "GATEWAY_ADDR=172.30.0.1/16 has room for 32768 client addresses in the upper half of 172.30.0.0/16, fewer than the 65536 pod addresses: use a prefix length of 15 or less"
        let world = JoinWorld(load: .configurationRejected(message))
        await world.start()
        #expect(await world.actions == [.applyFirewall(.lockdown), .loadConfiguration, .exit(code: 78, message: message)])
        #expect(await world.driver.exitCode == 78)
        // The held line of the lockdown's commit is never written: the message gets stderr alone.
        #expect(world.log.written.isEmpty, "\(world.log.written)")
        // Accepted, the same line is written once the configuration is judged.
        let good = JoinWorld()
        await good.start()
        #expect(good.log.written.contains("info committed the client's lockdown ruleset"))
    }

    @Test func outsideChangesToTheTableAreRepairedAndSIGTERMLeavesTheKillSwitch() async throws {
        let world = JoinWorld()
        await world.join()
        let before = await world.actions.count
        let flush = NftablesTransaction(table: "inet vpnsup", changes: [NftablesChange(.table, added: false)], portID: 4242,
                                        processID: 4242, processName: "nft")
        await world.driver.step(.nftables(.changed(flush)))
        await world.driver.step(.nftables(.resync))
        #expect(await world.actions(since: before) == [.applyFirewall(.killSwitch), .applyFirewall(.killSwitch)])
        await world.driver.step(.signal(.terminate(15)))
        #expect(await world.actions.last == .exit(code: 0, message: nil))
        // No lockdown on the way out: the kill switch is the pod's for the rest of its life.
        #expect(await world.actions(since: before).filter { $0 == .applyFirewall(.lockdown) }.isEmpty)
        #expect(await world.driver.exitCode == 0)
    }
}

@Suite("The Kubernetes gateway (vpnsup run with POD_CIDRS)")
struct GatewayOverlayScenarioTests {
    static let configuration = try! Configuration(["CONFIG": "/config/client.ovpn", "IP_ADDR": "172.30.0.1/15",
                                                   "LAN_IF": "vxlan0", "WAN_IF": "eth0", "POD_CIDRS": "10.244.0.0/16"])
    static let loaded = LoadedConfiguration(configuration: configuration,
                                            remotes: [Remote(host: "192.0.2.1", port: 1194, transport: .udp)],
                                            credentials: CredentialsToken(generation: 1))

    @Test func theLinkIsCreatedUnderTheLockdownBeforeItsAddressAndRepaired() async throws {
        let world = World(load: .configurationLoaded(Self.loaded))
        await world.start()
        #expect(await world.actions == [.applyFirewall(.lockdown), .loadConfiguration, .ensureOverlayLink, .ensureLANAddress,
                                        .ensureOverlayRoute, .ensurePolicyRouting])
        #expect(world.status.overlay == "vxlan0 vni 30320 port 4789 over eth0, pods 10.244.0.0/16")
        let address = IPv4Interface("172.30.0.1/15")!
        await world.netlink(.address(interface: "vxlan0", index: 7, address: address, added: true))
        #expect(await world.machine.state == .tunnelConnecting)
        // The connecting ruleset admits the overlay from the pod networks on the WAN.
        let connecting = try #require(await world.performed.first { $0.action == .applyFirewall(.connecting) })
        #expect(connecting.machine.ruleset(for: .connecting)?.nftText.contains("iifname \"eth0\" ip saddr 10.244.0.0/16 udp dport 4789 accept") == true)

        // vxlan0 deleted: its address goes first, then the link; both are put back.
        var before = await world.actions.count
        await world.netlink(.address(interface: "vxlan0", index: 7, address: address, added: false))
        await world.netlink(.linkRemoved(name: "vxlan0", index: 7))
        #expect(await world.actions(since: before) == [.ensureOverlayLink, .ensureLANAddress, .ensureOverlayRoute, .ensurePolicyRouting,
                                                       .ensureOverlayLink, .ensureLANAddress, .ensureOverlayRoute, .ensurePolicyRouting])
        #expect(world.log.written.contains("notice overlay link vxlan0 was removed"))
        #expect(await world.machine.state != .killswitched)

        // The pods' route removed: put back. Another route: not ours.
        before = await world.actions.count
        await world.netlink(.route(destination: IPv4Interface("10.244.0.0/16")!.network, gateway: IPv4Address(169, 254, 1, 1),
                                   interfaceIndex: 2, added: false))
        await world.netlink(.route(destination: IPv4Interface("10.96.0.0/12")!.network, gateway: nil, interfaceIndex: 2, added: false))
        #expect(await world.actions(since: before) == [.ensureOverlayRoute])

        // The WAN down and up again: the kernel dropped the routes through it; the pods' is asked for again.
        before = await world.actions.count
        await world.netlink(.link(name: "eth0", index: 2, up: false))
        await world.netlink(.link(name: "eth0", index: 2, up: true))
        #expect(await world.actions(since: before).contains(.ensureOverlayRoute))
    }

    @Test func aLinkThatCannotBeMadeKillsTheSwitchAndIsRetried() async throws {
        let world = World(load: .configurationLoaded(Self.loaded))
        await world.start()
        await world.event(.overlayLinkFailed("create vxlan0: Operation not permitted"))
        #expect(await world.machine.state == .killswitched)
        #expect(world.status.reason == "the overlay link vxlan0 could not be set up: create vxlan0: Operation not permitted")
        let before = await world.actions.count
        await world.event(.timerFired(.retry))
        #expect(await world.actions(since: before) == [.ensureOverlayLink, .scheduleTimer(.retry, after: .seconds(5)),
                                                       .ensureLANAddress, .ensureOverlayRoute, .ensurePolicyRouting])
    }
}
