import StateMachine
import Testing

// The WireGuard scenarios (Scenario.wireGuard) × every event, WireGuard's included, against rows
// written out by hand. Every event a scenario's rows do not list must change nothing and emit
// nothing, so a forgotten row fails as surely as a wrong one.

private let retry = Action.scheduleTimer(.retry, after: .seconds(5))
private let respawn = Action.scheduleTimer(.respawn, after: .milliseconds(250))
private let crashWindow = Action.scheduleTimer(.crashWindow, after: .seconds(60))
private let stopDeadline = Action.scheduleTimer(.stopDeadline, after: .milliseconds(1500))
private let lockdown = Action.applyFirewall(.lockdown)
/// The handshake monitor stops with the tunnel.
private let stopLooking = Action.cancelTimer(.handshakeLook)
private func look(_ after: Duration) -> Action { .scheduleTimer(.handshakeLook, after: after) }

/// Every event the WireGuard tables cover: the shared ones, WireGuard's, and a SIGHUP that
/// reads a new wg-quick file.
let wireGuardTableEvents = representativeEvents + wireGuardEvents + [wireGuardReloaded]

/// What the tunnel's phases answer alike, whatever the evidence; `watching`: the handshake
/// monitor runs, and stops when the tunnel ends.
private func runningRows(_ policy: FirewallPolicy, watching: Bool) -> [ExpectedRow] {
    let stop: [Action] = watching ? [stopLooking] : []
    return [
        ExpectedRow(.firewallFailed(policy, "EPERM"), .killswitched, [lockdown, .cancelTimer(.respawn), .stopTunnel, retry] + stop),
        ExpectedRow(tampered, nil, [.applyFirewall(policy)]),
        ExpectedRow(.firewallNotificationsLost, nil, [.verifyFirewall(policy)]),
        ExpectedRow(.lanAddressConfigured, nil, [.ensurePolicyRouting]),
        ExpectedRow(.lanAddressMissing, nil, [.ensureLANAddress]),
        ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, [lockdown, .cancelTimer(.respawn), .stopTunnel, retry] + stop),
        ExpectedRow(.tunnelControlConnected, nil, [.watchTunnelState]),
        ExpectedRow(commandFailed, nil, [.stopTunnel]),
        ExpectedRow(.shutdownRequested, .killswitched,
                    [lockdown, .cancelTimer(.respawn), .cancelTimer(.retry), .stopTunnel, stopDeadline] + stop),
        ExpectedRow(.reloadRequested, nil, [.reloadConfiguration]),
    ] + (policy == .up ? [
        // PORT_FWD_FILE's first forwards (this configuration has none): their maps come with the
        // whole up ruleset, as over OpenVPN.
        ExpectedRow(forwardsUnchanged, nil, [.applyFirewall(.up)]),
        ExpectedRow(forwardsChanged, nil, [.applyFirewall(.up)]),
    ] : [])
}

/// While the handshakes are watched: a look reads them; what a read finds is the monitor's to judge.
private func watchingRows(handshake: (State?, [Action]), noHandshake: [Action], readFailed: [Action],
                          configured: [Action]) -> [ExpectedRow] {
    [
        ExpectedRow(handshakeLook, nil, [.readTunnelPeers]),
        ExpectedRow(handshakeRead, handshake.0, handshake.1),
        ExpectedRow(noHandshakeRead, nil, noHandshake),
        ExpectedRow(peersReadFailed, nil, readFailed),
    ] + (configured.isEmpty ? [] : [ExpectedRow(peersConfigured, nil, configured)])
}

func expectedWireGuardRows(for scenario: Scenario) -> [ExpectedRow] {
    switch scenario {
    case .wgStarted:
        return runningRows(.connecting, watching: false) + [
            ExpectedRow(.tunnelLinkUp, nil, [.ensureTunnelRoute]),
            ExpectedRow(exited, nil, [.forgetTunnelProcess, crashWindow, respawn]),
            // The socket appeared: the device is configured at once (the policy is committed).
            ExpectedRow(.tunnelHeld, nil, [.releaseTunnel]),
            ExpectedRow(peersConfigured, nil, [look(.milliseconds(100))]),
            // New keys or endpoints: the policy with the new pins first; the release follows the socket.
            ExpectedRow(wireGuardReloaded, nil, [.applyFirewall(.connecting)]),
        ]

    case .wgConfigured:
        return runningRows(.connecting, watching: true) + [
            ExpectedRow(.tunnelLinkUp, nil, [.ensureTunnelRoute]),
            ExpectedRow(exited, nil, [.forgetTunnelProcess, crashWindow, respawn, stopLooking]),
            ExpectedRow(.tunnelHeld, nil, [.releaseTunnel]),
            ExpectedRow(wireGuardReloaded, nil, [stopLooking, .applyFirewall(.connecting)]),
        ] + watchingRows(
            // Connected; TunnelUp waits for the link. The next look when the handshake would turn 180 s.
            handshake: (nil, [look(.seconds(180))]),
            // Overdue: the peer is set again (a literal endpoint: no name to resolve), looked at every 5 s.
            noHandshake: [.reconnectTunnel, look(.seconds(5))],
            readFailed: [look(.seconds(1))],
            // The same peers again while none answered: the monitor keeps its clock (no row).
            configured: [])

    case .wgOverdue:
        return runningRows(.connecting, watching: true) + [
            ExpectedRow(.tunnelLinkUp, nil, [.ensureTunnelRoute]),
            ExpectedRow(exited, nil, [.forgetTunnelProcess, crashWindow, respawn, stopLooking]),
            ExpectedRow(.tunnelHeld, nil, [.releaseTunnel]),
            ExpectedRow(wireGuardReloaded, nil, [stopLooking, .applyFirewall(.connecting)]),
        ] + watchingRows(
            handshake: (nil, [look(.seconds(180))]),
            // Still overdue: reported once, recovered once.
            noHandshake: [look(.seconds(5))],
            readFailed: [look(.seconds(5))],
            // The peer set again after the recovery: a new round, watched afresh.
            configured: [look(.milliseconds(100))])

    case .wgUp:
        return runningRows(.up, watching: true) + [
            ExpectedRow(.policyRoutingInstalled, nil, [.ensureTunnelRoute]),
            ExpectedRow(.tunnelLinkUp, nil, [.ensureTunnelRoute]),
            ExpectedRow(.tunnelLinkDown, .degraded, [.reconnectTunnel]),
            ExpectedRow(.wanLinkDown, .degraded, []),
            ExpectedRow(exited, .tunnelConnecting, [.forgetTunnelProcess, .applyFirewall(.connecting), crashWindow, respawn, stopLooking]),
            ExpectedRow(.tunnelHeld, nil, [.releaseTunnel]),
            ExpectedRow(reconnecting, .degraded, []),
            ExpectedRow(waiting, .degraded, []),
            ExpectedRow(wireGuardReloaded, .tunnelConnecting, [stopLooking, .applyFirewall(.connecting)]),
            // The DNS probe asks the file's DNS (no DNS or PROBE_SERVER set), as for OpenVPN.
            ExpectedRow(.timerFired(.probe), nil, [.probeTunnel, .scheduleTimer(.probe, after: .seconds(10))]),
        ] + watchingRows(
            handshake: (nil, [look(.seconds(180))]),
            // No handshake listed while up: suspect, looked at again after the grace.
            noHandshake: [look(.seconds(10))],
            readFailed: [look(.seconds(5))],
            configured: [look(.milliseconds(100))])

    case .wgStale:
        return runningRows(.up, watching: true) + [
            ExpectedRow(.policyRoutingInstalled, nil, [.ensureTunnelRoute]),
            ExpectedRow(.tunnelLinkUp, nil, [.ensureTunnelRoute]),
            ExpectedRow(exited, .tunnelConnecting, [.forgetTunnelProcess, .applyFirewall(.connecting), crashWindow, respawn, stopLooking]),
            ExpectedRow(.tunnelHeld, nil, [.releaseTunnel]),
            ExpectedRow(.tunnelConnected, .tunnelUp, []),
            ExpectedRow(wireGuardReloaded, .tunnelConnecting, [stopLooking, .applyFirewall(.connecting)]),
        ] + watchingRows(
            // A fresh handshake: the tunnel carries again.
            handshake: (.tunnelUp, [look(.seconds(180))]),
            noHandshake: [look(.seconds(5))],
            readFailed: [look(.seconds(5))],
            configured: [look(.milliseconds(100))])

    case .wgReresolving:
        return runningRows(.up, watching: true) + [
            ExpectedRow(.policyRoutingInstalled, nil, [.ensureTunnelRoute]),
            ExpectedRow(.tunnelLinkUp, nil, [.ensureTunnelRoute]),
            ExpectedRow(exited, .tunnelConnecting, [.forgetTunnelProcess, .applyFirewall(.connecting), crashWindow, respawn, stopLooking]),
            // The new pins: the policy alone again (closing resolution); the device follows its commit.
            ExpectedRow(resolved, nil, [.applyFirewall(.up)]),
            ExpectedRow(.tunnelConnected, .tunnelUp, []),
            ExpectedRow(wireGuardReloaded, .tunnelConnecting, [stopLooking, .applyFirewall(.connecting)]),
        ] + watchingRows(
            handshake: (.tunnelUp, [look(.seconds(180))]),
            noHandshake: [look(.seconds(5))],
            readFailed: [look(.seconds(5))],
            configured: [look(.milliseconds(100))])

    default:
        Issue.record("no expected rows for \(scenario.name)")
        return []
    }
}

extension ExpectedRow {
    /// `next` nil: the scenario's own state.
    init(_ event: Event, _ next: State?, _ actions: [Action]) {
        self.init(event, next ?? .initial, actions)
        keepsState = next == nil
    }
}

@Suite("WireGuard: every state × every event")
struct TransitionTableWireGuardTests {
    @Test func scenariosReachTheirState() {
        for scenario in Scenario.wireGuard {
            let machine = scenario.machine()
            #expect(machine.state == scenario.state, "\(scenario.name)")
            #expect(machine.tunnelKind == .wireguard)
        }
    }

    @Test(arguments: Scenario.wireGuard)
    func rowsNameEventsOnceEach(_ scenario: Scenario) {
        let events = expectedWireGuardRows(for: scenario).map(\.event)
        #expect(Set(events).count == events.count, "\(scenario.name): an event in two rows")
        #expect(Set(events).isSubset(of: Set(wireGuardTableEvents)), "\(scenario.name): a row for an event the table does not drive")
    }

    @Test(arguments: Scenario.wireGuard)
    func everyEventInEveryState(_ scenario: Scenario) {
        let rows = expectedWireGuardRows(for: scenario)
        for row in rows {
            var machine = scenario.machine()
            let actions = machine.handle(row.event)
            #expect(machine.state == (row.keepsState ? scenario.state : row.next), "\(scenario.name) + \(label(row.event)): state")
            #expect(actions == row.actions, "\(scenario.name) + \(label(row.event)): actions \(label(actions))")
        }
        for event in wireGuardTableEvents where !rows.contains(where: { $0.event == event }) {
            var machine = scenario.machine()
            let actions = machine.handle(event)
            #expect(machine.state == scenario.state, "\(scenario.name) + \(label(event)) should change nothing")
            #expect(actions == [], "\(scenario.name) + \(label(event)) should emit nothing, emitted \(label(actions))")
        }
    }
}
