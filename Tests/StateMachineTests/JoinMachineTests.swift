import StateMachine
import Testing

// `vpnsup join`'s machine: every scenario × every representative event against a table written
// out by hand, as for the router's machine (TransitionTableTests); each table partitions the
// events into rows and ignored ones, and the partition is checked.

let joinValues = ["GATEWAY": "vpn-gateway.vpn.svc.cluster.local", "GATEWAY_ADDR": "172.30.0.1/15",
                  "POD_CIDRS": "10.244.0.0/16", "CLUSTER_CIDRS": "10.96.0.0/12,192.168.50.0/24"]
let joinSetup = JoinSetup(configuration: try! JoinConfiguration(joinValues), clusterDNS: IPv4Address(10, 96, 0, 10),
                          clusterDNSFromResolvConf: true, podAddress: IPv4Address(10, 244, 1, 10))
let joinLoaded = JoinEvent.configurationLoaded(joinSetup)
let gatewayName = "vpn-gateway.vpn.svc.cluster.local"
let firstGateway = IPv4Address(10, 244, 1, 20)
let movedGateway = IPv4Address(10, 244, 3, 20)
/// An answer outside POD_CIDRS: never followed.
let outsideAnswer = JoinEvent.gatewayResolved([IPv4Address(192, 0, 2, 9)])
private let joinRejected = "GATEWAY= is required: the gateway's headless Service name, e.g. vpn-gateway.vpn.svc.cluster.local"

let representativeJoinEvents: [JoinEvent] = [
    .start, joinLoaded, .configurationRejected(joinRejected), .interfaceMissing(variable: "UNDERLAY_IF", name: "eth9"),
    .firewallCommitted(.lockdown), .firewallCommitted(.killSwitch), .firewallFailed(.lockdown, "EPERM"),
    .firewallFailed(.killSwitch, "EPERM"), .firewallTampered("table inet vpnsup: table deleted by nft (pid 42)"),
    .forwarderStarted, .forwarderFailed("listen on 127.0.0.1:53/udp: Address already in use"),
    .gatewayResolved([firstGateway]), .gatewayResolved([movedGateway]), outsideAnswer,
    .gatewayResolutionFailed("no such name (NXDOMAIN)"),
    .overlayReady, .overlayFailed("EEXIST"), .routesInstalled, .routesFailed("ENETUNREACH"),
    .overlayLinkLost, .overlayAddressMissing, .overlayRouteMissing, .gatewayUnreachable, .gatewayReachable,
    .timerFired(.retry), .shutdownRequested,
]

func joinCaseName(_ event: JoinEvent) -> String {
    switch event {
    case .start: "start"
    case .configurationLoaded: "configurationLoaded"
    case .configurationRejected: "configurationRejected"
    case .interfaceMissing: "interfaceMissing"
    case .firewallCommitted: "firewallCommitted"
    case .firewallFailed: "firewallFailed"
    case .firewallTampered: "firewallTampered"
    case .forwarderStarted: "forwarderStarted"
    case .forwarderFailed: "forwarderFailed"
    case .gatewayResolved: "gatewayResolved"
    case .gatewayResolutionFailed: "gatewayResolutionFailed"
    case .overlayReady: "overlayReady"
    case .overlayFailed: "overlayFailed"
    case .routesInstalled: "routesInstalled"
    case .routesFailed: "routesFailed"
    case .overlayLinkLost: "overlayLinkLost"
    case .overlayAddressMissing: "overlayAddressMissing"
    case .overlayRouteMissing: "overlayRouteMissing"
    case .gatewayUnreachable: "gatewayUnreachable"
    case .gatewayReachable: "gatewayReachable"
    case .timerFired: "timerFired"
    case .shutdownRequested: "shutdownRequested"
    }
}

/// A named way of reaching a join state from a new machine, through events only.
struct JoinScenario: Hashable, Sendable, CustomStringConvertible {
    var name: String
    var state: JoinState
    var path: [JoinEvent]
    var description: String { name }

    func machine() -> JoinMachine {
        var machine = JoinMachine()
        for event in path { _ = machine.handle(event) }
        return machine
    }

    static let notStarted = JoinScenario(name: "Init (not started)", state: .initial, path: [])
    /// The lockdown and the configuration are requested.
    static let starting = JoinScenario(name: "Init (starting)", state: .initial, path: [.start])
    static let lockdownFailed = JoinScenario(name: "Init (lockdown failed)", state: .initial,
                                             path: [.start, .firewallFailed(.lockdown, "EPERM")])
    /// The configuration is judged; the kill switch requested, not yet committed.
    static let locating = JoinScenario(name: "Locating (kill switch requested)", state: .locating,
                                       path: [.start, .firewallCommitted(.lockdown), joinLoaded])
    /// The kill switch committed: the forwarder and the gateway's name are asked for.
    static let resolving = JoinScenario(name: "Locating (resolving the gateway)", state: .locating,
                                        path: locating.path + [.firewallCommitted(.killSwitch)])
    /// The gateway's address known: the overlay is being built.
    static let building = JoinScenario(name: "Locating (building the overlay)", state: .locating,
                                       path: resolving.path + [.forwarderStarted, .gatewayResolved([firstGateway])])
    /// The name did not resolve: a retry is scheduled.
    static let retrying = JoinScenario(name: "Locating (retry scheduled)", state: .locating,
                                       path: resolving.path + [.forwarderStarted, .gatewayResolutionFailed("no such name (NXDOMAIN)")])
    static let joined = JoinScenario(name: "Joined", state: .joined,
                                     path: building.path + [.overlayReady, .routesInstalled])
    /// The gateway stopped answering: its name is being asked again.
    static let following = JoinScenario(name: "Following (asking again)", state: .following,
                                        path: joined.path + [.gatewayUnreachable])
    /// The name still answers the old address: waiting for the next failure.
    static let followingAnswered = JoinScenario(name: "Following (same answer)", state: .following,
                                                path: following.path + [.gatewayResolved([firstGateway])])
    static let stopping = JoinScenario(name: "Stopping", state: .stopping, path: joined.path + [.shutdownRequested])

    static let all: [JoinScenario] = [notStarted, starting, lockdownFailed, locating, resolving, building, retrying,
                                      joined, following, followingAnswered, stopping]
}

struct JoinRow: Sendable {
    var event: JoinEvent
    var next: JoinState
    var actions: [JoinAction]
    init(_ event: JoinEvent, _ next: JoinState, _ actions: [JoinAction]) {
        self.event = event
        self.next = next
        self.actions = actions
    }
}

private let stop = JoinAction.exit(code: 0, message: nil)
private let retryIn1s = JoinAction.scheduleTimer(.retry, after: .seconds(1))
private let killSwitchFailed = JoinAction.exit(code: 71, message: "cannot commit the client kill switch: EPERM")
private let forwarderFailed = JoinAction.exit(code: 71, message: "cannot run the pod's DNS forwarder: listen on 127.0.0.1:53/udp: Address already in use")

/// What each scenario does with each event; every event not in `rows` changes nothing.
func joinRows(for scenario: JoinScenario) -> [JoinRow] {
    let start: [JoinRow] = [
        JoinRow(joinLoaded, .locating, [.applyFirewall(.killSwitch)]),
        JoinRow(.configurationRejected(joinRejected), .initial, [.exit(code: 78, message: joinRejected)]),
        JoinRow(.interfaceMissing(variable: "UNDERLAY_IF", name: "eth9"), .initial,
                [.exit(code: 78, message: "UNDERLAY_IF=eth9 names no interface in this network namespace")]),
        JoinRow(.firewallTampered("table inet vpnsup: table deleted by nft (pid 42)"), .initial, [.applyFirewall(.lockdown)]),
        JoinRow(.shutdownRequested, .stopping, [stop]),
    ]
    // Once the kill switch is requested: a failed commit ends the sidecar, a change is repaired.
    let killSwitch: [JoinRow] = [
        JoinRow(.firewallFailed(.killSwitch, "EPERM"), scenario.state, [killSwitchFailed]),
        JoinRow(.firewallTampered("table inet vpnsup: table deleted by nft (pid 42)"), scenario.state, [.applyFirewall(.killSwitch)]),
    ]
    // Once armed: the forwarder's failure ends the sidecar; an overlay or route failure retries.
    let armed = killSwitch + [
        JoinRow(.forwarderFailed("listen on 127.0.0.1:53/udp: Address already in use"), scenario.state, [forwarderFailed]),
        JoinRow(.overlayFailed("EEXIST"), scenario.state, [retryIn1s]),
        JoinRow(.routesFailed("ENETUNREACH"), scenario.state, [retryIn1s]),
        JoinRow(.shutdownRequested, .stopping, [stop]),
    ]
    // Joined or following: repairs, and a changed answer re-points the overlay in place.
    let repairs = armed + [
        JoinRow(.overlayLinkLost, scenario.state, [.ensureOverlay(firstGateway)]),
        JoinRow(.overlayAddressMissing, scenario.state, [.ensureOverlay(firstGateway)]),
        JoinRow(.overlayReady, scenario.state, [.ensureRoutes]),
        JoinRow(.overlayRouteMissing, scenario.state, [.ensureRoutes]),
        JoinRow(.gatewayResolved([movedGateway]), .joined, [.ensureOverlay(movedGateway), .forgetGatewayNeighbour]),
    ]
    switch scenario {
    case .notStarted:
        return [
            JoinRow(.start, .initial, [.applyFirewall(.lockdown), .loadConfiguration]),
            JoinRow(.shutdownRequested, .stopping, [stop]),
        ]
    case .starting:
        return start
    case .lockdownFailed:
        // A good configuration without a lockdown: 71. A bad one still gets its 78.
        return start.filter { $0.event != joinLoaded } + [
            JoinRow(joinLoaded, .initial, [.exit(code: 71, message: "cannot commit the lockdown ruleset: EPERM")]),
        ]
    case .locating:
        // Nothing but the kill switch before the kill switch.
        return killSwitch + [
            JoinRow(.firewallCommitted(.killSwitch), .locating, [.startForwarder, .resolveGateway(gatewayName)]),
            JoinRow(.shutdownRequested, .stopping, [stop]),
        ]
    case .resolving:
        return armed + [
            JoinRow(.gatewayResolved([firstGateway]), .locating, [.ensureOverlay(firstGateway)]),
            JoinRow(.gatewayResolved([movedGateway]), .locating, [.ensureOverlay(movedGateway)]),
            JoinRow(outsideAnswer, .locating, [retryIn1s]),
            JoinRow(.gatewayResolutionFailed("no such name (NXDOMAIN)"), .locating, [retryIn1s]),
        ]
    case .building:
        return armed + [
            JoinRow(.gatewayResolved([firstGateway]), .locating, [.ensureOverlay(firstGateway)]),
            JoinRow(.gatewayResolved([movedGateway]), .locating, [.ensureOverlay(movedGateway)]),
            JoinRow(outsideAnswer, .locating, [retryIn1s]),
            JoinRow(.gatewayResolutionFailed("no such name (NXDOMAIN)"), .locating, [retryIn1s]),
            JoinRow(.overlayReady, .locating, [.ensureRoutes]),
            JoinRow(.routesInstalled, .joined, []),
        ]
    case .retrying:
        // The retry already scheduled covers any further failure.
        return armed.filter { ![JoinEvent.overlayFailed("EEXIST"), .routesFailed("ENETUNREACH"), .shutdownRequested].contains($0.event) } + [
            JoinRow(.timerFired(.retry), .locating, [.resolveGateway(gatewayName)]),
            JoinRow(.gatewayResolved([firstGateway]), .locating, [.ensureOverlay(firstGateway)]),
            JoinRow(.gatewayResolved([movedGateway]), .locating, [.ensureOverlay(movedGateway)]),
            JoinRow(.shutdownRequested, .stopping, [.cancelTimer(.retry), stop]),
        ]
    case .joined:
        return repairs + [
            JoinRow(.gatewayUnreachable, .following, [.resolveGateway(gatewayName)]),
        ]
    case .following:
        // One question at a time: a further failure waits for the answer.
        return repairs + [
            JoinRow(.gatewayReachable, .joined, []),
        ]
    case .followingAnswered:
        return repairs + [
            JoinRow(.gatewayUnreachable, .following, [.resolveGateway(gatewayName)]),
            JoinRow(.gatewayReachable, .joined, []),
        ]
    case .stopping:
        return []
    default:
        Issue.record("no rows for \(scenario.name)")
        return []
    }
}

@Suite("vpnsup join: every state × every event")
struct JoinMachineTableTests {
    @Test func representativeEventsCoverEveryEventCase() {
        let names = Set(representativeJoinEvents.map(joinCaseName))
        #expect(names.count == 22, "every JoinEvent case has a representative: \(names.sorted())")
        #expect(Set(representativeJoinEvents).count == representativeJoinEvents.count)
        for policy in JoinPolicy.allCases {
            #expect(representativeJoinEvents.contains(.firewallCommitted(policy)))
            #expect(representativeJoinEvents.contains(.firewallFailed(policy, "EPERM")))
        }
    }

    @Test(arguments: JoinScenario.all)
    func scenariosReachTheirState(_ scenario: JoinScenario) {
        #expect(scenario.machine().state == scenario.state)
    }

    @Test(arguments: JoinScenario.all)
    func rowsNameEachEventOnce(_ scenario: JoinScenario) {
        let events = joinRows(for: scenario).map(\.event)
        #expect(Set(events).count == events.count, "\(scenario.name): an event twice")
        #expect(Set(events).isSubset(of: Set(representativeJoinEvents)), "\(scenario.name): an event not representative")
    }

    @Test(arguments: JoinScenario.all)
    func everyEventInEveryState(_ scenario: JoinScenario) {
        let rows = joinRows(for: scenario)
        for event in representativeJoinEvents {
            var machine = scenario.machine()
            let actions = machine.handle(event)
            if let row = rows.first(where: { $0.event == event }) {
                #expect(machine.state == row.next, "\(scenario.name) + \(event.label): state")
                #expect(actions == row.actions, "\(scenario.name) + \(event.label): actions")
            } else {
                #expect(machine.state == scenario.state, "\(scenario.name) + \(event.label) should change nothing")
                #expect(actions == [], "\(scenario.name) + \(event.label) should emit nothing")
            }
        }
    }
}
