import StateMachine

// Shared fixtures for the StateMachine tests and the generated documentation:
// the representative events, the scenarios that drive a machine into each state through real
// event sequences (no back doors), and readable names for events and actions.

/// One instance of every `Event` case; cases with payloads get representative values.
let representativeEvents: [Event] = [
    .start,
    .configurationLoaded,
    .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"),
    .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
    .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"),
    .lanAddressPresent, .lanAddressMissing, .addressFailed("EADDRNOTAVAIL"),
    .tunnelLinkUp, .tunnelLinkDown,
    .openvpnStarted, .openvpnSpawnFailed("ENOENT"), .openvpnExited(.exited(1)),
    .managementConnected, .openvpnHold, .credentialsRequested, .credentialsRejected,
    .openvpnState(.connected), .openvpnState(.reconnecting), .openvpnState(.wait),
    .openvpnFatal("TLS Error: TLS handshake failed"),
    .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
    .timerFired(.probe), .timerFired(.crashWindow),
    .shutdownRequested,
    tampered,
    .wanLinkUp, .wanLinkDown,
    .probeSucceeded, .probeFailed("no answer from 10.8.0.1 within 2 s"),
    .reloadRequested, .configurationReloaded, .reloadRefused("CONFIG=/config/new.ovpn has no remote line"),
]

/// The nftables monitor's report of an outside change to table inet vpnsup.
let tampered = Event.firewallTampered("table inet vpnsup: rule deleted in chain forward (handle 7) by nft (pid 4242)")

/// The name of an event's case. The switch is exhaustive on purpose: adding an `Event` case
/// breaks this file until the new case gets a representative above.
func caseName(_ event: Event) -> String {
    switch event {
    case .start: "start"
    case .configurationLoaded: "configurationLoaded"
    case .configurationRejected: "configurationRejected"
    case .firewallCommitted: "firewallCommitted"
    case .firewallFailed: "firewallFailed"
    case .lanAddressPresent: "lanAddressPresent"
    case .lanAddressMissing: "lanAddressMissing"
    case .addressFailed: "addressFailed"
    case .tunnelLinkUp: "tunnelLinkUp"
    case .tunnelLinkDown: "tunnelLinkDown"
    case .openvpnStarted: "openvpnStarted"
    case .openvpnSpawnFailed: "openvpnSpawnFailed"
    case .openvpnExited: "openvpnExited"
    case .managementConnected: "managementConnected"
    case .openvpnHold: "openvpnHold"
    case .credentialsRequested: "credentialsRequested"
    case .credentialsRejected: "credentialsRejected"
    case .openvpnState: "openvpnState"
    case .openvpnFatal: "openvpnFatal"
    case .timerFired: "timerFired"
    case .shutdownRequested: "shutdownRequested"
    case .firewallTampered: "firewallTampered"
    case .wanLinkUp: "wanLinkUp"
    case .wanLinkDown: "wanLinkDown"
    case .probeSucceeded: "probeSucceeded"
    case .probeFailed: "probeFailed"
    case .reloadRequested: "reloadRequested"
    case .configurationReloaded: "configurationReloaded"
    case .reloadRefused: "reloadRefused"
    }
}

let allEventCaseNames: Set<String> = [
    "start", "configurationLoaded", "configurationRejected", "firewallCommitted", "firewallFailed",
    "lanAddressPresent", "lanAddressMissing", "addressFailed", "tunnelLinkUp", "tunnelLinkDown",
    "openvpnStarted", "openvpnSpawnFailed", "openvpnExited", "managementConnected", "openvpnHold",
    "credentialsRequested", "credentialsRejected", "openvpnState", "openvpnFatal", "timerFired",
    "shutdownRequested", "firewallTampered", "wanLinkUp", "wanLinkDown", "probeSucceeded", "probeFailed",
    "reloadRequested", "configurationReloaded", "reloadRefused",
]

/// A named way of reaching a state from a new machine, through events only.
struct Scenario: Hashable, Sendable, CustomStringConvertible {
    var name: String
    var state: State
    var path: [Event]

    var description: String { name }

    func machine() -> Machine {
        var machine = Machine(timings: .exact)
        for event in path { _ = machine.handle(event) }
        return machine
    }

    /// Init: the lockdown is committed, the configuration loaded, the LAN address requested.
    static let initial = Scenario(name: "Init", state: .initial,
                                  path: [.start, .firewallCommitted(.lockdown), .configurationLoaded])
    /// AddressAssigned: netlink confirmed IP_ADDR; the connecting policy is requested, not committed.
    static let addressAssigned = Scenario(name: "AddressAssigned", state: .addressAssigned,
                                          path: initial.path + [.lanAddressPresent])
    /// TunnelConnecting: connecting policy committed, OpenVPN running, its management client connected.
    static let tunnelConnecting = Scenario(name: "TunnelConnecting", state: .tunnelConnecting,
                                           path: addressAssigned.path + [.firewallCommitted(.connecting),
                                                                         .openvpnStarted, .managementConnected])
    /// TunnelUp: CONNECTED, tun0 up, the up policy committed.
    static let tunnelUp = Scenario(name: "TunnelUp", state: .tunnelUp,
                                   path: tunnelConnecting.path + [.openvpnHold, .credentialsRequested,
                                                                  .openvpnState(.connected), .tunnelLinkUp,
                                                                  .firewallCommitted(.up)])
    /// Degraded: OpenVPN reported RECONNECTING while up.
    static let degraded = Scenario(name: "Degraded", state: .degraded,
                                   path: tunnelUp.path + [.openvpnState(.reconnecting)])
    /// Killswitched after an authentication failure: lockdown committed, OpenVPN gone.
    static let killswitched = Scenario(name: "Killswitched (auth failure)", state: .killswitched,
                                       path: tunnelConnecting.path + [.credentialsRejected, .openvpnExited(.exited(1)),
                                                                      .firewallCommitted(.lockdown)])
    /// Killswitched after a transient failure (the connecting ruleset was not committed): retried on a timer.
    static let killswitchedTransient = Scenario(
        name: "Killswitched (transient failure)", state: .killswitched,
        path: addressAssigned.path + [.firewallFailed(.connecting, "EPERM"), .firewallCommitted(.lockdown)])
    /// Killswitched while shutting down: SIGTERM sent to OpenVPN, waiting for it to exit.
    static let shuttingDown = Scenario(name: "Killswitched (shutting down)", state: .killswitched,
                                       path: tunnelConnecting.path + [.shutdownRequested])

    /// TunnelConnecting with OpenVPN CONNECTED, waiting for tun0 to come up.
    static let connectedAwaitingLink = Scenario(name: "TunnelConnecting (CONNECTED, tun0 not up yet)", state: .tunnelConnecting,
                                                path: tunnelConnecting.path + [.openvpnState(.connected)])
    /// Degraded because tun0 went down while OpenVPN stays CONNECTED.
    static let degradedLinkDown = Scenario(name: "Degraded (tun0 down)", state: .degraded,
                                           path: tunnelUp.path + [.tunnelLinkDown])

    /// One scenario per state, in `State.allCases` order.
    static let perState: [Scenario] = [initial, addressAssigned, tunnelConnecting, tunnelUp, degraded, killswitched]
    /// Every scenario: one per state, plus the variants that reach the other transitions.
    static let all: [Scenario] = [initial, addressAssigned, tunnelConnecting, connectedAwaitingLink, tunnelUp,
                                  degraded, degradedLinkDown, killswitched, killswitchedTransient, shuttingDown]
}

/// A machine driven into `state` from `.start` through real events.
func machine(in state: State) -> Machine {
    let scenario = Scenario.perState.first { $0.state == state }!
    let machine = scenario.machine()
    precondition(machine.state == state, "\(scenario.name) reached \(machine.state)")
    return machine
}

/// Feeds `events`, returning every action emitted, in order.
@discardableResult
func feed(_ machine: inout Machine, _ events: [Event]) -> [Action] {
    events.flatMap { machine.handle($0) }
}

/// What one event did to a machine in a scenario.
struct Transition: Hashable, Sendable {
    var scenario: Scenario
    var event: Event
    var next: State
    var actions: [Action]

    var isNoOp: Bool { next == scenario.state && actions.isEmpty }
}

/// Drives every scenario × representative event on a fresh copy of the scenario's machine.
func allTransitions(_ scenarios: [Scenario] = Scenario.all) -> [Transition] {
    scenarios.flatMap { scenario in
        representativeEvents.map { event in
            var machine = scenario.machine()
            let actions = machine.handle(event)
            return Transition(scenario: scenario, event: event, next: machine.state, actions: actions)
        }
    }
}

// MARK: - Readable names (tables, docs, failure messages)

func label(_ event: Event) -> String {
    switch event {
    case .firewallCommitted(let policy): "firewallCommitted(\(policy))"
    case .firewallFailed(let policy, _): "firewallFailed(\(policy))"
    case .openvpnState(let state): "openvpnState(\(state.name))"
    case .openvpnExited(let status): "openvpnExited(\(status))"
    case .timerFired(let timer): "timerFired(\(timer.rawValue))"
    default: caseName(event)
    }
}

func label(_ action: Action) -> String {
    switch action {
    case .applyFirewall(let policy): "applyFirewall(\(policy))"
    case .loadConfiguration: "loadConfiguration"
    case .ensureLANAddress: "ensureLANAddress"
    case .spawnOpenVPN: "spawnOpenVPN"
    case .requestStateNotifications: "requestStateNotifications"
    case .releaseHold: "releaseHold"
    case .sendCredentials: "sendCredentials"
    case .stopOpenVPN: "stopOpenVPN"
    case .killOpenVPN: "killOpenVPN"
    case .reconnectOpenVPN: "reconnectOpenVPN"
    case .probeTunnel: "probeTunnel"
    case .reloadConfiguration: "reloadConfiguration"
    case .scheduleTimer(let timer, let after): "scheduleTimer(\(timer.rawValue), \(label(after)))"
    case .cancelTimer(let timer): "cancelTimer(\(timer.rawValue))"
    case .exit(let code, let message): message == nil ? "exit(\(code))" : "exit(\(code), message)"
    }
}

func label(_ duration: Duration) -> String {
    let (seconds, attoseconds) = duration.components
    let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
    return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
}

func label(_ actions: [Action]) -> String {
    actions.isEmpty ? "—" : actions.map(label).joined(separator: ", ")
}

// MARK: - Example layouts

/// The layout the documentation shows: LAN eth1 with the gateway 172.22.0.1, WAN eth0, tun0,
/// one UDP endpoint.
let exampleLayout = NetworkLayout(
    lanInterface: "eth1", wanInterface: "eth0", tunnelInterface: "tun0",
    endpoints: [Endpoint(address: IPv4Address(192, 0, 2, 1), port: 1194, transport: .udp)],
    transportMark: Configuration.transportMark, lanGateway: IPv4Address(172, 22, 0, 1))

extension Timings {
    /// The product's timings without jitter, so that tests can name every delay.
    static let exact = Timings(jitter: 0)
}
