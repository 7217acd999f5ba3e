import StateMachine
import Testing

// Every scenario (one per state, plus variants: CONNECTED awaiting tun0, Degraded by tun0 down,
// Killswitched by a transient failure, Killswitched while shutting down) × every
// representative event, against a table written out by hand. Each scenario's events are
// partitioned into `rows` (what happens) and `ignored` (no state change, no action); the
// partition itself is checked, so a row cannot be forgotten.

private let retry = Action.scheduleTimer(.retry, after: .seconds(5))
private let respawn = Action.scheduleTimer(.respawn, after: .milliseconds(250))
private let stopDeadline = Action.scheduleTimer(.stopDeadline, after: .milliseconds(1500))
/// The first OpenVPN exit opens the window in which five make a crash loop.
private let crashWindow = Action.scheduleTimer(.crashWindow, after: .seconds(60))
private let exitSuccess = Action.exit(code: 0, message: nil)
private let lockdown = Action.applyFirewall(.lockdown)
/// What every failure that kills the switch does while OpenVPN runs.
private let killswitchTransientRunning: [Action] = [lockdown, .cancelTimer(.respawn), .stopOpenVPN, retry]
private let killswitchAuthRunning: [Action] = [lockdown, .cancelTimer(.respawn), .stopOpenVPN]
private let shutdownRunning: [Action] = [lockdown, .cancelTimer(.respawn), .cancelTimer(.retry), .stopOpenVPN, stopDeadline]

struct ExpectedRow: Sendable {
    var event: Event
    var next: State
    var actions: [Action]
    init(_ event: Event, _ next: State, _ actions: [Action]) {
        self.event = event
        self.next = next
        self.actions = actions
    }
}

struct ExpectedTable: Sendable {
    var rows: [ExpectedRow]
    var ignored: [Event]
}

func expectedTable(for scenario: Scenario) -> ExpectedTable {
    switch scenario {
    case .initial:
        return ExpectedTable(rows: [
            ExpectedRow(.reloadRequested, .initial, [.reloadConfiguration]),
            ExpectedRow(.configurationReloaded, .initial, [lockdown]),
            // The kernel lost the committed ruleset (outside change): commit it again, in every state.
            ExpectedRow(tampered, .initial, [lockdown]),
            ExpectedRow(.firewallFailed(.lockdown, "EPERM"), .initial,
                        [.exit(code: 71, message: "cannot commit the lockdown ruleset: EPERM")]),
            ExpectedRow(.lanAddressPresent, .addressAssigned, [.applyFirewall(.connecting)]),
            ExpectedRow(.lanAddressMissing, .initial, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, [.cancelTimer(.respawn), retry]),
            ExpectedRow(.shutdownRequested, .killswitched, [.cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
        ], ignored: [
            .timerFired(.probe), .timerFired(.crashWindow), .probeSucceeded, .probeFailed("no answer from 10.8.0.1 within 2 s"),
            .reloadRefused("CONFIG=/config/new.ovpn has no remote line"), .wanLinkUp, .wanLinkDown,
            .start, .configurationLoaded,
            .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"),
            .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
            .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"),
            .tunnelLinkUp, .tunnelLinkDown,
            .openvpnStarted, .openvpnSpawnFailed("ENOENT"), .openvpnExited(.exited(1)),
            .managementConnected, .openvpnHold, .credentialsRequested, .credentialsRejected,
            .openvpnState(.connected), .openvpnState(.reconnecting), .openvpnState(.wait),
            .openvpnFatal("TLS Error: TLS handshake failed"),
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
        ])

    case .addressAssigned:
        return ExpectedTable(rows: [
            ExpectedRow(.reloadRequested, .addressAssigned, [.reloadConfiguration]),
            ExpectedRow(.configurationReloaded, .addressAssigned, [.applyFirewall(.connecting)]),
            ExpectedRow(tampered, .addressAssigned, [.applyFirewall(.connecting)]),
            ExpectedRow(.firewallCommitted(.connecting), .tunnelConnecting, [.spawnOpenVPN]),
            ExpectedRow(.firewallFailed(.connecting, "EPERM"), .killswitched, [lockdown, .cancelTimer(.respawn), retry]),
            ExpectedRow(.lanAddressMissing, .addressAssigned, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, [lockdown, .cancelTimer(.respawn), retry]),
            ExpectedRow(.shutdownRequested, .killswitched, [lockdown, .cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
        ], ignored: [
            .timerFired(.probe), .timerFired(.crashWindow), .probeSucceeded, .probeFailed("no answer from 10.8.0.1 within 2 s"),
            .reloadRefused("CONFIG=/config/new.ovpn has no remote line"), .wanLinkUp, .wanLinkDown,
            .start, .configurationLoaded,
            .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"),
            .firewallCommitted(.lockdown), .firewallCommitted(.up),
            .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.up, "EPERM"),
            .lanAddressPresent, .tunnelLinkUp, .tunnelLinkDown,
            .openvpnStarted, .openvpnSpawnFailed("ENOENT"), .openvpnExited(.exited(1)),
            .managementConnected, .openvpnHold, .credentialsRequested, .credentialsRejected,
            .openvpnState(.connected), .openvpnState(.reconnecting), .openvpnState(.wait),
            .openvpnFatal("TLS Error: TLS handshake failed"),
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
        ])

    case .tunnelConnecting:
        return ExpectedTable(rows: [
            ExpectedRow(.reloadRequested, .tunnelConnecting, [.reloadConfiguration]),
            ExpectedRow(.configurationReloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopOpenVPN]),
            ExpectedRow(tampered, .tunnelConnecting, [.applyFirewall(.connecting)]),
            ExpectedRow(.firewallFailed(.connecting, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.lanAddressMissing, .tunnelConnecting, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.openvpnExited(.exited(1)), .tunnelConnecting, [crashWindow, respawn]),
            ExpectedRow(.managementConnected, .tunnelConnecting, [.requestStateNotifications]),
            ExpectedRow(.openvpnHold, .tunnelConnecting, [.releaseHold]),
            ExpectedRow(.credentialsRequested, .tunnelConnecting, [.sendCredentials]),
            ExpectedRow(.credentialsRejected, .killswitched, killswitchAuthRunning),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
        ], ignored: [
            .timerFired(.probe), .timerFired(.crashWindow), .probeSucceeded, .probeFailed("no answer from 10.8.0.1 within 2 s"),
            .reloadRefused("CONFIG=/config/new.ovpn has no remote line"), .wanLinkUp, .wanLinkDown,
            .start, .configurationLoaded,
            .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"),
            .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
            .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.up, "EPERM"),
            .lanAddressPresent, .tunnelLinkUp, .tunnelLinkDown,
            .openvpnStarted, .openvpnSpawnFailed("ENOENT"),
            .openvpnState(.connected), .openvpnState(.reconnecting), .openvpnState(.wait),
            .openvpnFatal("TLS Error: TLS handshake failed"),
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
        ])

    case .connectedAwaitingLink:
        return ExpectedTable(rows: [
            ExpectedRow(.reloadRequested, .tunnelConnecting, [.reloadConfiguration]),
            ExpectedRow(.configurationReloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopOpenVPN]),
            ExpectedRow(tampered, .tunnelConnecting, [.applyFirewall(.connecting)]),
            ExpectedRow(.firewallFailed(.connecting, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.lanAddressMissing, .tunnelConnecting, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.tunnelLinkUp, .tunnelUp, [.applyFirewall(.up)]),
            ExpectedRow(.openvpnExited(.exited(1)), .tunnelConnecting, [crashWindow, respawn]),
            ExpectedRow(.managementConnected, .tunnelConnecting, [.requestStateNotifications]),
            ExpectedRow(.openvpnHold, .tunnelConnecting, [.releaseHold]),
            ExpectedRow(.credentialsRequested, .tunnelConnecting, [.sendCredentials]),
            ExpectedRow(.credentialsRejected, .killswitched, killswitchAuthRunning),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
        ], ignored: [
            .timerFired(.probe), .timerFired(.crashWindow), .probeSucceeded, .probeFailed("no answer from 10.8.0.1 within 2 s"),
            .reloadRefused("CONFIG=/config/new.ovpn has no remote line"), .wanLinkUp, .wanLinkDown,
            .start, .configurationLoaded,
            .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"),
            .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
            .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.up, "EPERM"),
            .lanAddressPresent, .tunnelLinkDown,
            .openvpnStarted, .openvpnSpawnFailed("ENOENT"),
            .openvpnState(.connected), .openvpnState(.reconnecting), .openvpnState(.wait),
            .openvpnFatal("TLS Error: TLS handshake failed"),
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
        ])

    case .degradedLinkDown:
        return ExpectedTable(rows: [
            ExpectedRow(.reloadRequested, .degraded, [.reloadConfiguration]),
            ExpectedRow(.configurationReloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopOpenVPN]),
            ExpectedRow(tampered, .degraded, [.applyFirewall(.up)]),
            ExpectedRow(.firewallFailed(.up, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.lanAddressMissing, .degraded, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.tunnelLinkUp, .tunnelUp, []),
            ExpectedRow(.openvpnExited(.exited(1)), .tunnelConnecting, [.applyFirewall(.connecting), crashWindow, respawn]),
            ExpectedRow(.managementConnected, .degraded, [.requestStateNotifications]),
            ExpectedRow(.openvpnHold, .degraded, [.releaseHold]),
            ExpectedRow(.credentialsRequested, .degraded, [.sendCredentials]),
            ExpectedRow(.credentialsRejected, .killswitched, killswitchAuthRunning),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
        ], ignored: [
            .timerFired(.probe), .timerFired(.crashWindow), .probeSucceeded, .probeFailed("no answer from 10.8.0.1 within 2 s"),
            .reloadRefused("CONFIG=/config/new.ovpn has no remote line"), .wanLinkUp, .wanLinkDown,
            .start, .configurationLoaded,
            .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"),
            .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
            .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"),
            .lanAddressPresent, .tunnelLinkDown,
            .openvpnStarted, .openvpnSpawnFailed("ENOENT"),
            .openvpnState(.connected), .openvpnState(.reconnecting), .openvpnState(.wait),
            .openvpnFatal("TLS Error: TLS handshake failed"),
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
        ])

    case .tunnelUp:
        return ExpectedTable(rows: [
            ExpectedRow(.reloadRequested, .tunnelUp, [.reloadConfiguration]),
            ExpectedRow(.configurationReloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopOpenVPN]),
            // The WAN is gone: the tunnel cannot carry anything until it is back.
            ExpectedRow(.wanLinkDown, .degraded, []),
            ExpectedRow(tampered, .tunnelUp, [.applyFirewall(.up)]),
            ExpectedRow(.firewallFailed(.up, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.lanAddressMissing, .tunnelUp, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            // The tunnel device gone under a running OpenVPN: only a reconnect reopens it.
            ExpectedRow(.tunnelLinkDown, .degraded, [.reconnectOpenVPN]),
            ExpectedRow(.openvpnExited(.exited(1)), .tunnelConnecting, [.applyFirewall(.connecting), crashWindow, respawn]),
            ExpectedRow(.managementConnected, .tunnelUp, [.requestStateNotifications]),
            ExpectedRow(.openvpnHold, .tunnelUp, [.releaseHold]),
            ExpectedRow(.credentialsRequested, .tunnelUp, [.sendCredentials]),
            ExpectedRow(.credentialsRejected, .killswitched, killswitchAuthRunning),
            ExpectedRow(.openvpnState(.reconnecting), .degraded, []),
            ExpectedRow(.openvpnState(.wait), .degraded, []),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
        ], ignored: [
            .timerFired(.probe), .timerFired(.crashWindow), .probeSucceeded, .probeFailed("no answer from 10.8.0.1 within 2 s"),
            .reloadRefused("CONFIG=/config/new.ovpn has no remote line"), .wanLinkUp,
            .start, .configurationLoaded,
            .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"),
            .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
            .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"),
            .lanAddressPresent, .tunnelLinkUp,
            .openvpnStarted, .openvpnSpawnFailed("ENOENT"),
            .openvpnState(.connected),
            .openvpnFatal("TLS Error: TLS handshake failed"),
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
        ])

    case .degraded:
        return ExpectedTable(rows: [
            ExpectedRow(.reloadRequested, .degraded, [.reloadConfiguration]),
            ExpectedRow(.configurationReloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopOpenVPN]),
            ExpectedRow(tampered, .degraded, [.applyFirewall(.up)]),
            ExpectedRow(.firewallFailed(.up, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.lanAddressMissing, .degraded, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.openvpnExited(.exited(1)), .tunnelConnecting, [.applyFirewall(.connecting), crashWindow, respawn]),
            ExpectedRow(.managementConnected, .degraded, [.requestStateNotifications]),
            ExpectedRow(.openvpnHold, .degraded, [.releaseHold]),
            ExpectedRow(.credentialsRequested, .degraded, [.sendCredentials]),
            ExpectedRow(.credentialsRejected, .killswitched, killswitchAuthRunning),
            ExpectedRow(.openvpnState(.connected), .tunnelUp, []),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
        ], ignored: [
            .timerFired(.probe), .timerFired(.crashWindow), .probeSucceeded, .probeFailed("no answer from 10.8.0.1 within 2 s"),
            .reloadRefused("CONFIG=/config/new.ovpn has no remote line"), .wanLinkUp, .wanLinkDown,
            .start, .configurationLoaded,
            .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"),
            .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
            .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"),
            .lanAddressPresent, .tunnelLinkUp, .tunnelLinkDown,
            .openvpnStarted, .openvpnSpawnFailed("ENOENT"),
            .openvpnState(.reconnecting), .openvpnState(.wait),
            .openvpnFatal("TLS Error: TLS handshake failed"),
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
        ])

    case .killswitched:
        return ExpectedTable(rows: [
            ExpectedRow(.reloadRequested, .killswitched, [.reloadConfiguration]),
            // New credentials: the authentication failure no longer holds the machine.
            ExpectedRow(.configurationReloaded, .addressAssigned, [.cancelTimer(.retry), .applyFirewall(.connecting)]),
            ExpectedRow(tampered, .killswitched, [lockdown]),
            // An authentication failure waits for new credentials: a later lockdown failure must
            // not turn it into a transient failure that the retry timer leaves (see
            // RegressionTests.authFailureStaysSticky), so no `retry` is scheduled.
            ExpectedRow(.firewallFailed(.lockdown, "EPERM"), .killswitched, [.cancelTimer(.respawn)]),
            ExpectedRow(.lanAddressMissing, .killswitched, [.ensureLANAddress]),
            ExpectedRow(.shutdownRequested, .killswitched, [.cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
        ], ignored: [
            .timerFired(.probe), .timerFired(.crashWindow), .probeSucceeded, .probeFailed("no answer from 10.8.0.1 within 2 s"),
            .reloadRefused("CONFIG=/config/new.ovpn has no remote line"), .wanLinkUp, .wanLinkDown,
            .start, .configurationLoaded,
            .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"),
            .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
            .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"),
            .lanAddressPresent, .addressFailed("EADDRNOTAVAIL"), .tunnelLinkUp, .tunnelLinkDown,
            .openvpnStarted, .openvpnSpawnFailed("ENOENT"), .openvpnExited(.exited(1)),
            .managementConnected, .openvpnHold, .credentialsRequested, .credentialsRejected,
            .openvpnState(.connected), .openvpnState(.reconnecting), .openvpnState(.wait),
            .openvpnFatal("TLS Error: TLS handshake failed"),
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
        ])

    case .killswitchedTransient:
        return ExpectedTable(rows: [
            ExpectedRow(.reloadRequested, .killswitched, [.reloadConfiguration]),
            ExpectedRow(.configurationReloaded, .addressAssigned, [.cancelTimer(.retry), .applyFirewall(.connecting)]),
            ExpectedRow(tampered, .killswitched, [lockdown]),
            ExpectedRow(.firewallFailed(.lockdown, "EPERM"), .killswitched, [.cancelTimer(.respawn), retry]),
            ExpectedRow(.lanAddressPresent, .addressAssigned, [.applyFirewall(.connecting)]),
            ExpectedRow(.lanAddressMissing, .killswitched, [.ensureLANAddress]),
            ExpectedRow(.timerFired(.retry), .addressAssigned, [.applyFirewall(.connecting)]),
            ExpectedRow(.shutdownRequested, .killswitched, [.cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
        ], ignored: [
            .timerFired(.probe), .timerFired(.crashWindow), .probeSucceeded, .probeFailed("no answer from 10.8.0.1 within 2 s"),
            .reloadRefused("CONFIG=/config/new.ovpn has no remote line"), .wanLinkUp, .wanLinkDown,
            .start, .configurationLoaded,
            .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"),
            .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
            .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"),
            .addressFailed("EADDRNOTAVAIL"), .tunnelLinkUp, .tunnelLinkDown,
            .openvpnStarted, .openvpnSpawnFailed("ENOENT"), .openvpnExited(.exited(1)),
            .managementConnected, .openvpnHold, .credentialsRequested, .credentialsRejected,
            .openvpnState(.connected), .openvpnState(.reconnecting), .openvpnState(.wait),
            .openvpnFatal("TLS Error: TLS handshake failed"),
            .timerFired(.respawn), .timerFired(.stopDeadline),
        ])

    case .shuttingDown:
        return ExpectedTable(rows: [
            // The lockdown must hold until the exit, whoever removed it.
            ExpectedRow(tampered, .killswitched, [lockdown]),
            // Only the end of OpenVPN (or its spawn) and the stop deadline matter now.
            ExpectedRow(.openvpnSpawnFailed("ENOENT"), .killswitched, [.cancelTimer(.stopDeadline), exitSuccess]),
            ExpectedRow(.openvpnExited(.exited(1)), .killswitched, [.cancelTimer(.stopDeadline), exitSuccess]),
            ExpectedRow(.timerFired(.stopDeadline), .killswitched, [.killOpenVPN]),
        ], ignored: [
            .timerFired(.probe), .timerFired(.crashWindow), .probeSucceeded, .probeFailed("no answer from 10.8.0.1 within 2 s"),
            .reloadRefused("CONFIG=/config/new.ovpn has no remote line"), .wanLinkUp,
            .wanLinkDown, .reloadRequested, .configurationReloaded,
            .start, .configurationLoaded,
            .configurationRejected("IP_ADDR=garbage is not an IPv4 address with prefix length"),
            .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
            .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"),
            .lanAddressPresent, .lanAddressMissing, .addressFailed("EADDRNOTAVAIL"), .tunnelLinkUp, .tunnelLinkDown,
            .openvpnStarted, .managementConnected, .openvpnHold, .credentialsRequested, .credentialsRejected,
            .openvpnState(.connected), .openvpnState(.reconnecting), .openvpnState(.wait),
            .openvpnFatal("TLS Error: TLS handshake failed"),
            .timerFired(.respawn), .timerFired(.retry), .shutdownRequested,
        ])

    default:
        Issue.record("no expected table for \(scenario.name)")
        return ExpectedTable(rows: [], ignored: [])
    }
}

@Suite("Every state × every event")
struct TransitionTableTests {
    @Test func representativeEventsCoverEveryEventCase() {
        #expect(Set(representativeEvents.map(caseName)) == allEventCaseNames)
        #expect(Set(representativeEvents).count == representativeEvents.count)
        for policy in FirewallPolicy.allCases {
            #expect(representativeEvents.contains(.firewallCommitted(policy)))
            #expect(representativeEvents.contains { if case .firewallFailed(policy, _) = $0 { true } else { false } })
        }
        for timer in TimerID.allCases {
            #expect(representativeEvents.contains(.timerFired(timer)))
        }
    }

    @Test(arguments: State.allCases)
    func scenariosReachTheirState(_ state: State) {
        #expect(machine(in: state).state == state)
        #expect(machine(in: state).requestedPolicy == state.policy)
    }

    @Test func extraScenariosReachKillswitched() {
        #expect(Scenario.killswitchedTransient.machine().state == .killswitched)
        #expect(Scenario.shuttingDown.machine().state == .killswitched)
        #expect(Scenario.shuttingDown.machine().shuttingDown)
        #expect(Scenario.perState.map(\.state) == State.allCases)
        #expect(Scenario.connectedAwaitingLink.machine().state == .tunnelConnecting)
        #expect(Scenario.degradedLinkDown.machine().state == .degraded)
    }

    @Test(arguments: Scenario.all)
    func tableIsAPartitionOfTheEvents(_ scenario: Scenario) {
        let table = expectedTable(for: scenario)
        let listed = table.rows.map(\.event) + table.ignored
        #expect(listed.count == representativeEvents.count, "\(scenario.name): every event exactly once")
        #expect(Set(listed) == Set(representativeEvents), "\(scenario.name): every event exactly once")
    }

    @Test(arguments: Scenario.all)
    func everyEventInEveryState(_ scenario: Scenario) {
        let table = expectedTable(for: scenario)
        for row in table.rows {
            var machine = scenario.machine()
            let actions = machine.handle(row.event)
            #expect(machine.state == row.next, "\(scenario.name) + \(label(row.event)): state")
            #expect(actions == row.actions, "\(scenario.name) + \(label(row.event)): actions")
        }
        for event in table.ignored {
            var machine = scenario.machine()
            let actions = machine.handle(event)
            #expect(machine.state == scenario.state, "\(scenario.name) + \(label(event)) should change nothing")
            #expect(actions == [], "\(scenario.name) + \(label(event)) should emit nothing")
        }
    }
}
