import StateMachine

// Shared fixtures for the StateMachine tests and the generated documentation:
// the representative events, the scenarios that drive a machine into each state through real
// event sequences (no back doors), and readable names for events and actions.

/// The configuration the scenarios load: the example's environment, one literal remote.
let exampleConfiguration = try! Configuration(["CONFIG": "/config/client.ovpn", "IP_ADDR": "172.22.0.1/24"])
let literalRemotes = LoadedConfiguration(configuration: exampleConfiguration,
                                         remotes: [Remote(host: "192.0.2.1", port: 1194, transport: .udp)],
                                         credentials: CredentialsToken(generation: 1))
/// The same with a remote given by host name, resolved through 192.0.2.53.
let hostNameRemotes = LoadedConfiguration(configuration: exampleConfiguration,
                                          remotes: [Remote(host: "vpn.example.net", port: 1194, transport: .udp)],
                                          nameservers: [IPv4Address(192, 0, 2, 53)],
                                          credentials: CredentialsToken(generation: 1))
let loaded = Event.configurationLoaded(literalRemotes)
/// The Kubernetes gateway's configuration (docs/kubernetes.md): LAN_IF is the overlay's vxlan link.
let overlayConfiguration = try! Configuration(["CONFIG": "/config/client.ovpn", "IP_ADDR": "172.30.0.1/15",
                                               "LAN_IF": "vxlan0", "WAN_IF": "eth0", "POD_CIDRS": "10.244.0.0/16"])
let loadedOverlay = Event.configurationLoaded(LoadedConfiguration(configuration: overlayConfiguration,
                                                                  remotes: literalRemotes.remotes,
                                                                  credentials: CredentialsToken(generation: 1)))
let loadedWithHostNames = Event.configurationLoaded(hostNameRemotes)
let resolved = Event.namesResolved(addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 7)]], failures: [:])
/// SIGHUP's result: another literal remote, new credentials.
let reloaded = Event.configurationReloaded(ReloadedConfiguration(remotes: [Remote(host: "192.0.2.2", port: 1194, transport: .udp)],
                                                                  credentials: CredentialsToken(generation: 2)))
/// The example with PORT_FWD and PORT_FWD_FILE: three forwards in force, TCP and UDP.
let forwardsConfiguration = try! Configuration(["CONFIG": "/config/client.ovpn", "IP_ADDR": "172.22.0.1/24",
                                                "PORT_FWD": "8080:172.22.0.10:80/tcp", "PORT_FWD_FILE": "/etc/vpnsup/forwards"])
    .addingPortForwards(fromFile: "9000:172.22.0.11:9000/udp\n8443:172.22.0.12:443/tcp\n")
let loadedWithForwards = Event.configurationLoaded(LoadedConfiguration(
    configuration: forwardsConfiguration, remotes: [Remote(host: "192.0.2.1", port: 1194, transport: .udp)],
    credentials: CredentialsToken(generation: 1)))
/// PORT_FWD_FILE read again, the same as in force.
let forwardsUnchanged = Event.portForwardsRead(.accepted(forwardsConfiguration.portForwards))
/// PORT_FWD_FILE changed: 8443 gone, 9000 retargeted, 8444 and 9001 new; TCP and UDP maps both stay.
let changedForwards = try! Array(forwardsConfiguration.portForwards.prefix(1))
    + Configuration.portForwards("9000:172.22.0.13:9000/udp 8444:172.22.0.12:443/tcp 9001:172.22.0.13:9001/udp",
                                 lan: forwardsConfiguration.gateway.network)
let forwardsChanged = Event.portForwardsRead(.accepted(changedForwards))
/// What the change is as map elements (no map appears or goes).
let forwardsDiff = PortForwardDiff(from: forwardsConfiguration.portForwards, to: changedForwards)
let forwardsRefused = Event.portForwardsRead(.refused(
    "PORT_FWD_FILE=/etc/vpnsup/forwards:2 has '8081:10.0.0.5:81/tcp', which targets 10.0.0.5, outside the LAN 172.22.0.0/24"))
let forwardsApplied = Event.forwardChangesApplied(forwardsDiff)
let forwardsFailed = Event.forwardChangesFailed(forwardsDiff, "add elements 1-2 of 2 to map udp_forwards: File exists")
let started = Event.tunnelStarted(pid: 4242)
let exited = Event.tunnelProcessExited(.exited(1))
let reconnecting = Event.tunnelDisconnected("OpenVPN reports RECONNECTING")
let waiting = Event.tunnelDisconnected("OpenVPN reports WAIT")
let remoteAsked = Event.remoteRequested(host: "192.0.2.1", port: 1194, proto: "udp")
let commandFailed = Event.tunnelCommandFailed(.release, "OpenVPN is not connected to the management socket")
/// OpenVPN's output ended: with nothing about the configuration, or with its refusal of it.
let outputEnded = Event.tunnelOutputEnded(configurationError: nil)
let optionsErrorLine = "Options error: Unrecognized option or missing or extra parameter(s) in /config/client.ovpn:3: foo-bar (2.6.14)"
let optionsError = Event.tunnelOutputEnded(configurationError: optionsErrorLine)
/// OpenVPN asks about the host name (`>REMOTE:`), and what the name resolves to once it moved.
let hostAsked = Event.remoteRequested(host: "vpn.example.net", port: 1194, proto: "udp")
let moved = Event.namesResolved(addresses: ["vpn.example.net": [IPv4Address(198, 51, 100, 9)]], failures: [:],
                                elapsed: .milliseconds(3))

/// One instance of every `Event` case but WireGuard's (`wireGuardEvents`, which an OpenVPN
/// machine ignores in every state); cases with payloads get representative values.
let representativeEvents: [Event] = [
    .start,
    loaded, loadedWithHostNames,
    .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"),
    .interfaceMissing(variable: "LAN_IF", name: "eth9"),
    .nameResolutionOpened, .nameResolutionFailed("EPERM"), resolved,
    .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
    .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"),
    tampered, .firewallNotificationsLost, .firewallIntact(.up),
    .lanAddressConfigured, .lanAddressPresent, .lanAddressMissing, .addressFailed("EADDRNOTAVAIL"),
    .policyRoutingInstalled, .policyRoutingFailed("EPERM"), .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"),
] + overlayEvents + [
    .tunnelLinkUp, .tunnelLinkDown, .wanLinkUp, .wanLinkDown,
    started, .tunnelStartFailed("ENOENT"), exited,
    .tunnelControlConnected, .tunnelHeld, .credentialsRequested, .authenticationFailed,
    .tunnelConnected, reconnecting, waiting,
    .tunnelFatal("TLS Error: TLS handshake failed"), remoteAsked, commandFailed,
    .tunnelOutputWatched, outputEnded, optionsError,
    .probeSucceeded, .probeFailed("no answer from 10.8.0.1 within 2 s"),
    .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
    .timerFired(.probe), .timerFired(.crashWindow), .timerFired(.tunnelOutput),
    .shutdownRequested,
    .reloadRequested, reloaded, .reloadRefused("CONFIG=/config/new.ovpn has no remote line"),
    forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
]

/// The Kubernetes gateway's overlay events: a router without an overlay ignores them all.
let overlayEvents: [Event] = [
    .overlayLinkReady, .overlayLinkFailed("EEXIST"), .overlayLinkLost,
    .overlayRouteInstalled, .overlayRouteFailed("ENETUNREACH"), .overlayRouteMissing,
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
    case .interfaceMissing: "interfaceMissing"
    case .nameResolutionOpened: "nameResolutionOpened"
    case .nameResolutionFailed: "nameResolutionFailed"
    case .namesResolved: "namesResolved"
    case .firewallCommitted: "firewallCommitted"
    case .firewallFailed: "firewallFailed"
    case .firewallTampered: "firewallTampered"
    case .firewallNotificationsLost: "firewallNotificationsLost"
    case .firewallIntact: "firewallIntact"
    case .lanAddressConfigured: "lanAddressConfigured"
    case .lanAddressPresent: "lanAddressPresent"
    case .lanAddressMissing: "lanAddressMissing"
    case .addressFailed: "addressFailed"
    case .policyRoutingInstalled: "policyRoutingInstalled"
    case .policyRoutingFailed: "policyRoutingFailed"
    case .tunnelRouteInstalled: "tunnelRouteInstalled"
    case .tunnelRouteFailed: "tunnelRouteFailed"
    case .overlayLinkReady: "overlayLinkReady"
    case .overlayLinkFailed: "overlayLinkFailed"
    case .overlayLinkLost: "overlayLinkLost"
    case .overlayRouteInstalled: "overlayRouteInstalled"
    case .overlayRouteFailed: "overlayRouteFailed"
    case .overlayRouteMissing: "overlayRouteMissing"
    case .tunnelLinkUp: "tunnelLinkUp"
    case .tunnelLinkDown: "tunnelLinkDown"
    case .wanLinkUp: "wanLinkUp"
    case .wanLinkDown: "wanLinkDown"
    case .tunnelStarted: "tunnelStarted"
    case .tunnelStartFailed: "tunnelStartFailed"
    case .tunnelProcessExited: "tunnelProcessExited"
    case .tunnelControlConnected: "tunnelControlConnected"
    case .tunnelHeld: "tunnelHeld"
    case .credentialsRequested: "credentialsRequested"
    case .authenticationFailed: "authenticationFailed"
    case .tunnelConnected: "tunnelConnected"
    case .tunnelDisconnected: "tunnelDisconnected"
    case .tunnelFatal: "tunnelFatal"
    case .remoteRequested: "remoteRequested"
    case .tunnelCommandFailed: "tunnelCommandFailed"
    case .tunnelPeersConfigured: "tunnelPeersConfigured"
    case .tunnelPeersRead: "tunnelPeersRead"
    case .tunnelPeersReadFailed: "tunnelPeersReadFailed"
    case .tunnelOutputWatched: "tunnelOutputWatched"
    case .tunnelOutputEnded: "tunnelOutputEnded"
    case .probeSucceeded: "probeSucceeded"
    case .probeFailed: "probeFailed"
    case .timerFired: "timerFired"
    case .shutdownRequested: "shutdownRequested"
    case .reloadRequested: "reloadRequested"
    case .configurationReloaded: "configurationReloaded"
    case .reloadRefused: "reloadRefused"
    case .portForwardsRead: "portForwardsRead"
    case .forwardChangesApplied: "forwardChangesApplied"
    case .forwardChangesFailed: "forwardChangesFailed"
    }
}

let allEventCaseNames: Set<String> = [
    "start", "configurationLoaded", "configurationRejected", "interfaceMissing",
    "nameResolutionOpened", "nameResolutionFailed", "namesResolved",
    "firewallCommitted", "firewallFailed", "firewallTampered", "firewallNotificationsLost", "firewallIntact",
    "lanAddressConfigured", "lanAddressPresent", "lanAddressMissing", "addressFailed",
    "policyRoutingInstalled", "policyRoutingFailed", "tunnelRouteInstalled", "tunnelRouteFailed",
    "overlayLinkReady", "overlayLinkFailed", "overlayLinkLost", "overlayRouteInstalled", "overlayRouteFailed",
    "overlayRouteMissing",
    "tunnelLinkUp", "tunnelLinkDown", "wanLinkUp", "wanLinkDown",
    "tunnelStarted", "tunnelStartFailed", "tunnelProcessExited", "tunnelControlConnected", "tunnelHeld",
    "credentialsRequested", "authenticationFailed", "tunnelConnected", "tunnelDisconnected", "tunnelFatal",
    "remoteRequested", "tunnelCommandFailed", "tunnelOutputWatched", "tunnelOutputEnded",
    "probeSucceeded", "probeFailed", "timerFired",
    "shutdownRequested", "reloadRequested", "configurationReloaded", "reloadRefused",
    "portForwardsRead", "forwardChangesApplied", "forwardChangesFailed",
    "tunnelPeersConfigured", "tunnelPeersRead", "tunnelPeersReadFailed",
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
                                  path: [.start, .firewallCommitted(.lockdown), loaded])
    /// AddressAssigned: netlink confirmed IP_ADDR; the connecting policy is requested, not committed.
    static let addressAssigned = Scenario(name: "AddressAssigned", state: .addressAssigned,
                                          path: initial.path + [.lanAddressPresent])
    /// TunnelConnecting: connecting policy committed, OpenVPN running, its management client connected.
    static let tunnelConnecting = Scenario(name: "TunnelConnecting", state: .tunnelConnecting,
                                           path: addressAssigned.path + [.firewallCommitted(.connecting),
                                                                         started, .tunnelControlConnected])
    /// TunnelUp: CONNECTED, tun0 up, the up policy committed.
    static let tunnelUp = Scenario(name: "TunnelUp", state: .tunnelUp,
                                   path: tunnelConnecting.path + [.tunnelHeld, .credentialsRequested,
                                                                  .tunnelConnected, .tunnelLinkUp,
                                                                  .firewallCommitted(.up)])
    /// Degraded: OpenVPN reported RECONNECTING while up.
    static let degraded = Scenario(name: "Degraded", state: .degraded,
                                   path: tunnelUp.path + [reconnecting])
    /// Killswitched after an authentication failure: lockdown committed, OpenVPN gone.
    static let killswitched = Scenario(name: "Killswitched (auth failure)", state: .killswitched,
                                       path: tunnelConnecting.path + [.authenticationFailed, exited,
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
                                                path: tunnelConnecting.path + [.tunnelConnected])
    /// Degraded because tun0 went down while OpenVPN stays CONNECTED.
    static let degradedLinkDown = Scenario(name: "Degraded (tun0 down)", state: .degraded,
                                           path: tunnelUp.path + [.tunnelLinkDown])

    // MARK: Start-up: the lockdown, the configuration, the host names' resolution

    /// Init just started: the lockdown and the configuration are requested.
    static let starting = Scenario(name: "Init (starting)", state: .initial, path: [.start])
    /// The lockdown was not committed before the configuration was judged.
    static let lockdownFailed = Scenario(name: "Init (lockdown failed)", state: .initial,
                                         path: [.start, .firewallFailed(.lockdown, "EPERM")])
    /// A configuration with a host name arrived before the lockdown's commit: resolution waits.
    static let awaitingLockdown = Scenario(name: "Init (host names, lockdown not yet committed)", state: .initial,
                                           path: [.start, loadedWithHostNames])
    /// The resolving ruleset is requested.
    static let resolutionOpening = Scenario(name: "Init (opening name resolution)", state: .initial,
                                            path: [.start, .firewallCommitted(.lockdown), loadedWithHostNames])
    /// The resolving ruleset is committed; the resolver asks.
    static let resolving = Scenario(name: "Init (resolving host names)", state: .initial,
                                    path: resolutionOpening.path + [.nameResolutionOpened])
    /// Resolved; the lockdown is requested again to close resolution.
    static let closingResolution = Scenario(name: "Init (closing name resolution)", state: .initial,
                                            path: resolving.path + [resolved])
    /// SIGTERM while the resolver asked: the lockdown again, and the exit.
    static let shutDownWhileResolving = Scenario(name: "Killswitched (shut down while resolving)", state: .killswitched,
                                                 path: resolving.path + [.shutdownRequested])

    // MARK: SIGHUP while the files are read

    /// TunnelUp with a SIGHUP's files being read (their outcome comes later).
    static let tunnelUpReloading = Scenario(name: "TunnelUp (reading a SIGHUP's files)", state: .tunnelUp,
                                            path: tunnelUp.path + [.reloadRequested])
    /// ... and another SIGHUP came meanwhile: the files are read again after the outcome.
    static let tunnelUpReloadingAgain = Scenario(name: "TunnelUp (another SIGHUP while reading)", state: .tunnelUp,
                                                 path: tunnelUpReloading.path + [.reloadRequested])

    // MARK: The Kubernetes gateway (POD_CIDRS set: LAN_IF is a vxlan link vpnsup owns)

    /// Init with an overlay: the configuration accepted, the overlay link requested (before its address).
    static let overlayInitial = Scenario(name: "Init (overlay link requested)", state: .initial,
                                         path: [.start, .firewallCommitted(.lockdown), loadedOverlay])
    /// TunnelUp with an overlay.
    static let overlayTunnelUp = Scenario(
        name: "TunnelUp (overlay)", state: .tunnelUp,
        path: overlayInitial.path + [.overlayLinkReady, .lanAddressPresent, .firewallCommitted(.connecting), started,
                                     .tunnelControlConnected, .tunnelHeld, .credentialsRequested, .tunnelConnected,
                                     .tunnelLinkUp, .firewallCommitted(.up)])
    /// Killswitched with an overlay, after a transient failure.
    static let overlayKillswitched = Scenario(
        name: "Killswitched (overlay, transient failure)", state: .killswitched,
        path: overlayInitial.path + [.overlayLinkReady, .lanAddressPresent, .firewallFailed(.connecting, "EPERM"),
                                     .firewallCommitted(.lockdown)])

    /// The overlay scenarios and the ordinary ones whose facts they share, event for event but
    /// the overlay's (`expectedTable(for:)` derives their tables from those).
    static let overlayCounterparts: [Scenario: Scenario] = [
        overlayInitial: initial, overlayTunnelUp: tunnelUp, overlayKillswitched: killswitchedTransient,
    ]

    var hasOverlay: Bool { path.contains(loadedOverlay) }

    // MARK: Port forwards from PORT_FWD_FILE

    /// TunnelConnecting with PORT_FWD and PORT_FWD_FILE's forwards.
    static let tunnelConnectingWithForwards = Scenario(
        name: "TunnelConnecting (PORT_FWD_FILE)", state: .tunnelConnecting,
        path: [.start, .firewallCommitted(.lockdown), loadedWithForwards, .lanAddressPresent,
               .firewallCommitted(.connecting), started, .tunnelControlConnected])
    /// TunnelUp with them: the up ruleset holds their maps.
    static let tunnelUpWithForwards = Scenario(
        name: "TunnelUp (PORT_FWD_FILE)", state: .tunnelUp,
        path: tunnelConnectingWithForwards.path + [.tunnelHeld, .credentialsRequested, .tunnelConnected,
                                                   .tunnelLinkUp, .firewallCommitted(.up)])
    /// The file changed: the change is with the kernel as map element changes, not yet reported.
    static let forwardChangePending = Scenario(
        name: "TunnelUp (PORT_FWD_FILE, element change sent)", state: .tunnelUp,
        path: tunnelUpWithForwards.path + [forwardsChanged])
    // MARK: OpenVPN's output, and host names that move (Machine+Provider.swift)

    /// TunnelConnecting with OpenVPN's output read: its end is judged with what it printed.
    static let outputWatched = Scenario(name: "TunnelConnecting (output read)", state: .tunnelConnecting,
                                        path: addressAssigned.path + [.firewallCommitted(.connecting), started,
                                                                      .tunnelOutputWatched, .tunnelControlConnected])
    /// OpenVPN exited before it first connected; its output has not ended yet.
    static let exitHeld = Scenario(name: "TunnelConnecting (exited, output still open)", state: .tunnelConnecting,
                                   path: outputWatched.path + [exited])
    /// OpenVPN refused its configuration after the tunnel had connected once: waits for SIGHUP.
    static let configurationRefused = Scenario(
        name: "Killswitched (configuration refused after a connection)", state: .killswitched,
        path: outputWatched.path + [.tunnelConnected, exited, optionsError, .firewallCommitted(.lockdown)])
    /// Host names pinned at start; OpenVPN asked for the name and got its address.
    static let hostNameConnecting = Scenario(
        name: "TunnelConnecting (host name, first attempt)", state: .tunnelConnecting,
        path: [.start, .firewallCommitted(.lockdown), loadedWithHostNames, .nameResolutionOpened, resolved,
               .firewallCommitted(.lockdown), .lanAddressPresent, .firewallCommitted(.connecting), started,
               .tunnelControlConnected, .tunnelHeld, hostAsked])
    /// That attempt failed and OpenVPN asks again: every pinned address failed a full round, so
    /// the name is resolved again (the resolving ruleset is requested) before the answer.
    static let reresolutionOpening = Scenario(name: "TunnelConnecting (every address failed: resolving again)",
                                              state: .tunnelConnecting, path: hostNameConnecting.path + [hostAsked])
    /// The resolving ruleset is committed; the resolver asks.
    static let reresolving = Scenario(name: "TunnelConnecting (resolving again)", state: .tunnelConnecting,
                                      path: reresolutionOpening.path + [.nameResolutionOpened])
    /// The name moved: its new address is pinned, the connecting policy with it requested.
    static let reresolutionClosing = Scenario(name: "TunnelConnecting (resolved again, new endpoint requested)",
                                              state: .tunnelConnecting, path: reresolving.path + [moved])

    /// The scenarios of Machine+Provider.swift; in the others, OpenVPN's output is not read.
    static let provider: [Scenario] = [outputWatched, exitHeld, configurationRefused, hostNameConnecting,
                                       reresolutionOpening, reresolving, reresolutionClosing]

    /// One scenario per state, in `State.allCases` order.
    static let perState: [Scenario] = [initial, addressAssigned, tunnelConnecting, tunnelUp, degraded, killswitched]
    /// Every scenario: one per state, plus the variants that reach the other transitions.
    static let all: [Scenario] = [starting, lockdownFailed, awaitingLockdown, resolutionOpening, resolving, closingResolution,
                                  initial, addressAssigned, tunnelConnecting, connectedAwaitingLink, tunnelUp,
                                  tunnelUpReloading, tunnelUpReloadingAgain, degraded, degradedLinkDown, killswitched,
                                  killswitchedTransient, shuttingDown, shutDownWhileResolving, overlayInitial, overlayTunnelUp,
                                  overlayKillswitched,
                                  tunnelConnectingWithForwards, tunnelUpWithForwards, forwardChangePending] + provider

    /// The kernel may hold the resolving ruleset, which only a lockdown commit replaces.
    var resolutionMayBeOpen: Bool { [Scenario.resolutionOpening, .resolving, .closingResolution].contains(self) }
    /// The scenario's next commit of its own policy moves it on (AddressAssigned starts the tunnel,
    /// the lockdown's commit opens or closes name resolution).
    var advancesOnCommit: Bool {
        [Scenario.addressAssigned, .awaitingLockdown, .closingResolution, .reresolutionClosing].contains(self)
    }
    /// OpenVPN's output is read: its process's end waits for the output's.
    var readsOutput: Bool { [Scenario.outputWatched, .exitHeld].contains(self) }
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

func label(_ event: Event) -> String { event.label }

func label(_ action: Action) -> String { action.label }

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
