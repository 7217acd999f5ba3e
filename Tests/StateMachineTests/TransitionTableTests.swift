import StateMachine
import Testing

// Every scenario (one per state, plus variants: the start-up steps with and without name
// resolution, CONNECTED awaiting tun0, Degraded by tun0 down, Killswitched by a transient
// failure, Killswitched while shutting down) × every representative event, against a table
// written out by hand. Each scenario's events are partitioned into `rows` (what happens) and
// `ignored` (no state change, no action); the partition itself is checked, so a row cannot be
// forgotten.

private let retry = Action.scheduleTimer(.retry, after: .seconds(5))
private let respawn = Action.scheduleTimer(.respawn, after: .milliseconds(250))
private let stopDeadline = Action.scheduleTimer(.stopDeadline, after: .milliseconds(1500))
/// The first OpenVPN exit opens the window in which five make a crash loop.
private let crashWindow = Action.scheduleTimer(.crashWindow, after: .seconds(60))
private let exitSuccess = Action.exit(code: 0, message: nil)
private let lockdown = Action.applyFirewall(.lockdown)
/// What every failure that kills the switch does while OpenVPN runs.
private let killswitchTransientRunning: [Action] = [lockdown, .cancelTimer(.respawn), .stopTunnel, retry]
private let killswitchAuthRunning: [Action] = [lockdown, .cancelTimer(.respawn), .stopTunnel]
private let shutdownRunning: [Action] = [lockdown, .cancelTimer(.respawn), .cancelTimer(.retry), .stopTunnel, stopDeadline]

private let rejectedMessage = "IP_ADDR=garbage is not an IPv4 address with prefix length"
private let rejected = Event.configurationRejected(rejectedMessage)
private let missingInterface = Event.interfaceMissing(variable: "LAN_IF", name: "eth9")
private let fatal = Event.tunnelFatal("TLS Error: TLS handshake failed")
private let noAnswer = Event.probeFailed("no answer from 10.8.0.1 within 2 s")
private let refused = Event.reloadRefused("CONFIG=/config/new.ovpn has no remote line")
/// OpenVPN exited; its output has not ended yet.
private let heldExit = Action.scheduleTimer(.tunnelOutput, after: .seconds(2))
private let refusedByOpenVPN = "CONFIG=/config/client.ovpn: OpenVPN exited with status 1: " + optionsErrorLine

struct ExpectedRow: Sendable {
    var event: Event
    var next: State
    var actions: [Action]
    /// The scenario stays in its state (`next` is not used): rows shared by several states.
    var keepsState = false
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

/// OpenVPN's output events change nothing where the output is not read (every scenario but the
/// provider ones, Machine+Provider.swift): they are ignored there.
private let outputEvents: [Event] = [.tunnelOutputWatched, outputEnded, optionsError, .timerFired(.tunnelOutput)]

func expectedTable(for scenario: Scenario) -> ExpectedTable {
    if let counterpart = Scenario.overlayCounterparts[scenario] {
        return overlayTable(for: scenario, counterpart: expectedTable(for: counterpart))
    }
    // Derived from a counterpart's complete table, which ignores the overlay's and the output's
    // events already.
    if let table = forwardsTable(for: scenario) { return table }
    // A router without an overlay ignores the overlay's events; OpenVPN's output is read only in
    // the provider scenarios.
    var table = tableWritten(for: scenario)
    table.ignored += overlayEvents
    if !Scenario.provider.contains(scenario) { table.ignored += outputEvents }
    // The provider scenarios are connecting or killswitched, whose rulesets hold no forwards: a
    // new set waits for the next up commit.
    if Scenario.provider.contains(scenario) {
        table.ignored += [forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed]
    }
    return table
}
/// The Kubernetes gateway answers every event as the ordinary router with the same facts does,
/// but these: LAN_IF is its link to create and repair before its address, and the pod networks'
/// route is its to keep.
func overlayTable(for scenario: Scenario, counterpart: ExpectedTable) -> ExpectedTable {
    let repairs = [
        ExpectedRow(.lanAddressMissing, scenario.state, [.ensureOverlayLink]),
        ExpectedRow(.overlayLinkReady, scenario.state, [.ensureLANAddress, .ensureOverlayRoute]),
        ExpectedRow(.overlayLinkLost, scenario.state, [.ensureOverlayLink]),
        ExpectedRow(.overlayRouteMissing, scenario.state, [.ensureOverlayRoute]),
    ]
    var overrides: [ExpectedRow]
    switch scenario {
    case .overlayInitial:
        // A link that cannot be made kills the switch as a missing address does.
        overrides = repairs + [ExpectedRow(.overlayLinkFailed("EEXIST"), .killswitched, [.cancelTimer(.respawn), retry])]
    case .overlayTunnelUp:
        overrides = repairs + [ExpectedRow(.overlayLinkFailed("EEXIST"), .killswitched, killswitchTransientRunning)]
    case .overlayKillswitched:
        // The retry timer tries again; meanwhile a failure changes nothing.
        overrides = repairs
    default:
        Issue.record("no overlay table for \(scenario.name)")
        overrides = []
    }
    let replaced = Set(overrides.map(\.event))
    return ExpectedTable(rows: counterpart.rows.filter { !replaced.contains($0.event) } + overrides,
                         ignored: counterpart.ignored.filter { !replaced.contains($0) })
}

private func tableWritten(for scenario: Scenario) -> ExpectedTable {
    switch scenario {
    case .starting:
        return ExpectedTable(rows: [
            // Literal remotes only: pinned at once; the address waits for the lockdown's commit.
            ExpectedRow(loaded, .initial, [.ensureLANAddress]),
            ExpectedRow(rejected, .initial, [.exit(code: 78, message: rejectedMessage)]),
            ExpectedRow(missingInterface, .initial, [.exit(code: 78, message: "LAN_IF=eth9 names no interface in this network namespace")]),
            ExpectedRow(tampered, .initial, [lockdown]),
            ExpectedRow(.firewallNotificationsLost, .initial, [.verifyFirewall(.lockdown)]),
            ExpectedRow(.shutdownRequested, .killswitched, [.cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
        ], ignored: [
            .start, loadedWithHostNames, .nameResolutionOpened, .nameResolutionFailed("EPERM"), resolved,
            .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
            .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"),
            .firewallIntact(.up), .lanAddressConfigured, .lanAddressPresent, .lanAddressMissing,
            .addressFailed("EADDRNOTAVAIL"), .policyRoutingInstalled, .policyRoutingFailed("EPERM"),
            .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp, .tunnelLinkDown, .wanLinkUp,
            .wanLinkDown, started, .tunnelStartFailed("ENOENT"), exited, .tunnelControlConnected, .tunnelHeld,
            .credentialsRequested, .authenticationFailed, .tunnelConnected, reconnecting, waiting, fatal, remoteAsked,
            commandFailed, .probeSucceeded, noAnswer, .timerFired(.respawn), .timerFired(.retry),
            .timerFired(.stopDeadline), .timerFired(.probe), .timerFired(.crashWindow), .reloadRequested, reloaded,
            refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .lockdownFailed:
        return ExpectedTable(rows: [
            // A good configuration without a kill switch: 71. A bad one still gets its 78.
            ExpectedRow(loaded, .initial, [.exit(code: 71, message: "cannot commit the lockdown ruleset: EPERM")]),
            ExpectedRow(loadedWithHostNames, .initial, [.exit(code: 71, message: "cannot commit the lockdown ruleset: EPERM")]),
            ExpectedRow(rejected, .initial, [.exit(code: 78, message: rejectedMessage)]),
            ExpectedRow(missingInterface, .initial, [.exit(code: 78, message: "LAN_IF=eth9 names no interface in this network namespace")]),
            ExpectedRow(tampered, .initial, [lockdown]),
            ExpectedRow(.firewallNotificationsLost, .initial, [.verifyFirewall(.lockdown)]),
            ExpectedRow(.shutdownRequested, .killswitched, [.cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
        ], ignored: [
            .start, .nameResolutionOpened, .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown),
            .firewallCommitted(.connecting), .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"),
            .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"), .firewallIntact(.up),
            .lanAddressConfigured, .lanAddressPresent, .lanAddressMissing, .addressFailed("EADDRNOTAVAIL"),
            .policyRoutingInstalled, .policyRoutingFailed("EPERM"), .tunnelRouteInstalled,
            .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp, .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), exited, .tunnelControlConnected, .tunnelHeld, .credentialsRequested,
            .authenticationFailed, .tunnelConnected, reconnecting, waiting, fatal, remoteAsked, commandFailed,
            .probeSucceeded, noAnswer, .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
            .timerFired(.probe), .timerFired(.crashWindow), .reloadRequested, reloaded, refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .awaitingLockdown:
        return ExpectedTable(rows: [
            ExpectedRow(rejected, .initial, [.exit(code: 78, message: rejectedMessage)]),
            ExpectedRow(missingInterface, .initial, [.exit(code: 78, message: "LAN_IF=eth9 names no interface in this network namespace")]),
            // Name resolution opens only over a committed lockdown.
            ExpectedRow(.firewallCommitted(.lockdown), .initial, [.openNameResolution]),
            // No lockdown, nothing to open for resolution: 71.
            ExpectedRow(.firewallFailed(.lockdown, "EPERM"), .initial, [.exit(code: 71, message: "cannot commit the lockdown ruleset: EPERM")]),
            ExpectedRow(tampered, .initial, [lockdown]),
            ExpectedRow(.firewallNotificationsLost, .initial, [.verifyFirewall(.lockdown)]),
            ExpectedRow(.shutdownRequested, .killswitched, [.cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, .nameResolutionOpened, .nameResolutionFailed("EPERM"), resolved,
            .firewallCommitted(.connecting), .firewallCommitted(.up), .firewallFailed(.connecting, "EPERM"),
            .firewallFailed(.up, "EPERM"), .firewallIntact(.up), .lanAddressConfigured, .lanAddressPresent,
            .lanAddressMissing, .addressFailed("EADDRNOTAVAIL"), .policyRoutingInstalled,
            .policyRoutingFailed("EPERM"), .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp,
            .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started, .tunnelStartFailed("ENOENT"), exited,
            .tunnelControlConnected, .tunnelHeld, .credentialsRequested, .authenticationFailed, .tunnelConnected,
            reconnecting, waiting, fatal, remoteAsked, commandFailed, .probeSucceeded, noAnswer,
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline), .timerFired(.probe),
            .timerFired(.crashWindow), .reloadRequested, reloaded, refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .resolutionOpening:
        return ExpectedTable(rows: [
            ExpectedRow(rejected, .initial, [.exit(code: 78, message: rejectedMessage)]),
            ExpectedRow(missingInterface, .initial, [.exit(code: 78, message: "LAN_IF=eth9 names no interface in this network namespace")]),
            ExpectedRow(.nameResolutionOpened, .initial, [.resolveNames(["vpn.example.net"])]),
            // The lockdown still holds and nothing can be resolved: no remote is left, 78.
            ExpectedRow(.nameResolutionFailed("EPERM"), .initial, [.exit(code: 78, message: "CONFIG=/config/client.ovpn has no remote that resolves to an IPv4 address: vpn.example.net (the resolving ruleset was not committed: EPERM)")]),
            ExpectedRow(tampered, .initial, [lockdown]),
            ExpectedRow(.firewallNotificationsLost, .initial, [.verifyFirewall(.lockdown)]),
            ExpectedRow(.shutdownRequested, .killswitched, [lockdown, .cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, resolved, .firewallCommitted(.lockdown),
            .firewallCommitted(.connecting), .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"),
            .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"), .firewallIntact(.up),
            .lanAddressConfigured, .lanAddressPresent, .lanAddressMissing, .addressFailed("EADDRNOTAVAIL"),
            .policyRoutingInstalled, .policyRoutingFailed("EPERM"), .tunnelRouteInstalled,
            .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp, .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), exited, .tunnelControlConnected, .tunnelHeld, .credentialsRequested,
            .authenticationFailed, .tunnelConnected, reconnecting, waiting, fatal, remoteAsked, commandFailed,
            .probeSucceeded, noAnswer, .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
            .timerFired(.probe), .timerFired(.crashWindow), .reloadRequested, reloaded, refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .resolving:
        return ExpectedTable(rows: [
            ExpectedRow(rejected, .initial, [.exit(code: 78, message: rejectedMessage)]),
            ExpectedRow(missingInterface, .initial, [.exit(code: 78, message: "LAN_IF=eth9 names no interface in this network namespace")]),
            // Resolved: the lockdown closes resolution again before anything is pinned.
            ExpectedRow(resolved, .initial, [lockdown]),
            ExpectedRow(tampered, .initial, [lockdown]),
            ExpectedRow(.firewallNotificationsLost, .initial, [.verifyFirewall(.lockdown)]),
            // SIGTERM while resolving: the lockdown replaces the resolving ruleset before the exit.
            ExpectedRow(.shutdownRequested, .killswitched, [lockdown, .cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, .nameResolutionOpened, .nameResolutionFailed("EPERM"),
            .firewallCommitted(.lockdown), .firewallCommitted(.connecting), .firewallCommitted(.up),
            .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"),
            .firewallIntact(.up), .lanAddressConfigured, .lanAddressPresent, .lanAddressMissing,
            .addressFailed("EADDRNOTAVAIL"), .policyRoutingInstalled, .policyRoutingFailed("EPERM"),
            .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp, .tunnelLinkDown, .wanLinkUp,
            .wanLinkDown, started, .tunnelStartFailed("ENOENT"), exited, .tunnelControlConnected, .tunnelHeld,
            .credentialsRequested, .authenticationFailed, .tunnelConnected, reconnecting, waiting, fatal, remoteAsked,
            commandFailed, .probeSucceeded, noAnswer, .timerFired(.respawn), .timerFired(.retry),
            .timerFired(.stopDeadline), .timerFired(.probe), .timerFired(.crashWindow), .reloadRequested, reloaded,
            refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .closingResolution:
        return ExpectedTable(rows: [
            ExpectedRow(rejected, .initial, [.exit(code: 78, message: rejectedMessage)]),
            ExpectedRow(missingInterface, .initial, [.exit(code: 78, message: "LAN_IF=eth9 names no interface in this network namespace")]),
            // Closed: the remotes are pinned and the configuration accepted.
            ExpectedRow(.firewallCommitted(.lockdown), .initial, [.ensureLANAddress]),
            // Only marked DNS stays open, but the kill switch is not what it must be: 71.
            ExpectedRow(.firewallFailed(.lockdown, "EPERM"), .initial, [.exit(code: 71, message: "cannot commit the lockdown ruleset: closing name resolution: EPERM")]),
            ExpectedRow(tampered, .initial, [lockdown]),
            ExpectedRow(.firewallNotificationsLost, .initial, [.verifyFirewall(.lockdown)]),
            ExpectedRow(.shutdownRequested, .killswitched, [lockdown, .cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, .nameResolutionOpened, .nameResolutionFailed("EPERM"), resolved,
            .firewallCommitted(.connecting), .firewallCommitted(.up), .firewallFailed(.connecting, "EPERM"),
            .firewallFailed(.up, "EPERM"), .firewallIntact(.up), .lanAddressConfigured, .lanAddressPresent,
            .lanAddressMissing, .addressFailed("EADDRNOTAVAIL"), .policyRoutingInstalled,
            .policyRoutingFailed("EPERM"), .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp,
            .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started, .tunnelStartFailed("ENOENT"), exited,
            .tunnelControlConnected, .tunnelHeld, .credentialsRequested, .authenticationFailed, .tunnelConnected,
            reconnecting, waiting, fatal, remoteAsked, commandFailed, .probeSucceeded, noAnswer,
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline), .timerFired(.probe),
            .timerFired(.crashWindow), .reloadRequested, reloaded, refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .initial:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallFailed(.lockdown, "EPERM"), .initial, [.exit(code: 71, message: "cannot commit the lockdown ruleset: EPERM")]),
            // The kernel lost the committed ruleset (outside change): commit it again, in every state.
            ExpectedRow(tampered, .initial, [lockdown]),
            // Notifications about the table were lost: read it back before repairing anything.
            ExpectedRow(.firewallNotificationsLost, .initial, [.verifyFirewall(.lockdown)]),
            // Policy routing follows every LAN address step.
            ExpectedRow(.lanAddressConfigured, .initial, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressPresent, .addressAssigned, [.applyFirewall(.connecting)]),
            ExpectedRow(.lanAddressMissing, .initial, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, [.cancelTimer(.respawn), retry]),
            ExpectedRow(.shutdownRequested, .killswitched, [.cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
            ExpectedRow(.reloadRequested, .initial, [.reloadConfiguration]),
            ExpectedRow(reloaded, .initial, [lockdown]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"),
            .firewallIntact(.up), .policyRoutingInstalled, .policyRoutingFailed("EPERM"), .tunnelRouteInstalled,
            .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp, .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), exited, .tunnelControlConnected, .tunnelHeld, .credentialsRequested,
            .authenticationFailed, .tunnelConnected, reconnecting, waiting, fatal, remoteAsked, commandFailed,
            .probeSucceeded, noAnswer, .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
            .timerFired(.probe), .timerFired(.crashWindow), refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .addressAssigned:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallCommitted(.connecting), .tunnelConnecting, [.startTunnel]),
            ExpectedRow(.firewallFailed(.connecting, "EPERM"), .killswitched, [lockdown, .cancelTimer(.respawn), retry]),
            ExpectedRow(tampered, .addressAssigned, [.applyFirewall(.connecting)]),
            ExpectedRow(.firewallNotificationsLost, .addressAssigned, [.verifyFirewall(.connecting)]),
            ExpectedRow(.lanAddressConfigured, .addressAssigned, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .addressAssigned, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, [lockdown, .cancelTimer(.respawn), retry]),
            ExpectedRow(.shutdownRequested, .killswitched, [lockdown, .cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
            ExpectedRow(.reloadRequested, .addressAssigned, [.reloadConfiguration]),
            ExpectedRow(reloaded, .addressAssigned, [.applyFirewall(.connecting)]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.up),
            .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.up, "EPERM"), .firewallIntact(.up),
            .lanAddressPresent, .policyRoutingInstalled, .policyRoutingFailed("EPERM"), .tunnelRouteInstalled,
            .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp, .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), exited, .tunnelControlConnected, .tunnelHeld, .credentialsRequested,
            .authenticationFailed, .tunnelConnected, reconnecting, waiting, fatal, remoteAsked, commandFailed,
            .probeSucceeded, noAnswer, .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
            .timerFired(.probe), .timerFired(.crashWindow), refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .tunnelConnecting:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallFailed(.connecting, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(tampered, .tunnelConnecting, [.applyFirewall(.connecting)]),
            ExpectedRow(.firewallNotificationsLost, .tunnelConnecting, [.verifyFirewall(.connecting)]),
            ExpectedRow(.lanAddressConfigured, .tunnelConnecting, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .tunnelConnecting, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            // The tunnel's route in vpnsup's routing table, whenever tun0 comes up while it is wanted.
            ExpectedRow(.tunnelLinkUp, .tunnelConnecting, [.ensureTunnelRoute]),
            ExpectedRow(exited, .tunnelConnecting, [.forgetTunnelProcess, crashWindow, respawn]),
            ExpectedRow(.tunnelControlConnected, .tunnelConnecting, [.watchTunnelState]),
            ExpectedRow(.tunnelHeld, .tunnelConnecting, [.releaseTunnel]),
            ExpectedRow(.credentialsRequested, .tunnelConnecting, [.sendCredentials]),
            ExpectedRow(.authenticationFailed, .killswitched, killswitchAuthRunning),
            // The pins answer OpenVPN's question about a remote (a literal pinned one: ACCEPT).
            ExpectedRow(remoteAsked, .tunnelConnecting, [.answerRemote(.accept)]),
            // A tunnel that cannot be talked to is stopped; its end takes the usual way (respawn).
            ExpectedRow(commandFailed, .tunnelConnecting, [.stopTunnel]),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
            ExpectedRow(.reloadRequested, .tunnelConnecting, [.reloadConfiguration]),
            ExpectedRow(reloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopTunnel]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.up, "EPERM"),
            .firewallIntact(.up), .lanAddressPresent, .policyRoutingInstalled, .policyRoutingFailed("EPERM"),
            .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), .tunnelConnected, reconnecting, waiting, fatal, .probeSucceeded, noAnswer,
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline), .timerFired(.probe),
            .timerFired(.crashWindow), refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .connectedAwaitingLink:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallFailed(.connecting, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(tampered, .tunnelConnecting, [.applyFirewall(.connecting)]),
            ExpectedRow(.firewallNotificationsLost, .tunnelConnecting, [.verifyFirewall(.connecting)]),
            ExpectedRow(.lanAddressConfigured, .tunnelConnecting, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .tunnelConnecting, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.tunnelLinkUp, .tunnelUp, [.ensureTunnelRoute, .applyFirewall(.up)]),
            ExpectedRow(exited, .tunnelConnecting, [.forgetTunnelProcess, crashWindow, respawn]),
            ExpectedRow(.tunnelControlConnected, .tunnelConnecting, [.watchTunnelState]),
            ExpectedRow(.tunnelHeld, .tunnelConnecting, [.releaseTunnel]),
            ExpectedRow(.credentialsRequested, .tunnelConnecting, [.sendCredentials]),
            ExpectedRow(.authenticationFailed, .killswitched, killswitchAuthRunning),
            ExpectedRow(remoteAsked, .tunnelConnecting, [.answerRemote(.accept)]),
            ExpectedRow(commandFailed, .tunnelConnecting, [.stopTunnel]),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
            ExpectedRow(.reloadRequested, .tunnelConnecting, [.reloadConfiguration]),
            ExpectedRow(reloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopTunnel]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.up, "EPERM"),
            .firewallIntact(.up), .lanAddressPresent, .policyRoutingInstalled, .policyRoutingFailed("EPERM"),
            .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), .tunnelConnected, reconnecting, waiting, fatal, .probeSucceeded, noAnswer,
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline), .timerFired(.probe),
            .timerFired(.crashWindow), refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .tunnelUp:
        return tunnelUpTable(reload: .idle)
    case .tunnelUpReloading:
        return tunnelUpTable(reload: .reading)
    case .tunnelUpReloadingAgain:
        return tunnelUpTable(reload: .readingThenAgain)

    case .degraded:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallFailed(.up, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(tampered, .degraded, [.applyFirewall(.up)]),
            ExpectedRow(.firewallNotificationsLost, .degraded, [.verifyFirewall(.up)]),
            ExpectedRow(.lanAddressConfigured, .degraded, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .degraded, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.policyRoutingInstalled, .degraded, [.ensureTunnelRoute]),
            ExpectedRow(.tunnelLinkUp, .degraded, [.ensureTunnelRoute]),
            ExpectedRow(exited, .tunnelConnecting, [.forgetTunnelProcess, .applyFirewall(.connecting), crashWindow, respawn]),
            ExpectedRow(.tunnelControlConnected, .degraded, [.watchTunnelState]),
            ExpectedRow(.tunnelHeld, .degraded, [.releaseTunnel]),
            ExpectedRow(.credentialsRequested, .degraded, [.sendCredentials]),
            ExpectedRow(.authenticationFailed, .killswitched, killswitchAuthRunning),
            ExpectedRow(.tunnelConnected, .tunnelUp, []),
            ExpectedRow(remoteAsked, .degraded, [.answerRemote(.accept)]),
            ExpectedRow(commandFailed, .degraded, [.stopTunnel]),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
            ExpectedRow(.reloadRequested, .degraded, [.reloadConfiguration]),
            ExpectedRow(reloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopTunnel]),
            // The first forwards of a protocol: its map and the rule that looks it up come with the
            // whole up ruleset (this configuration has none).
            ExpectedRow(forwardsUnchanged, .degraded, [.applyFirewall(.up)]),
            ExpectedRow(forwardsChanged, .degraded, [.applyFirewall(.up)]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"),
            .firewallIntact(.up), .lanAddressPresent, .policyRoutingFailed("EPERM"), .tunnelRouteInstalled,
            .tunnelRouteFailed("ENETDOWN"), .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), reconnecting, waiting, fatal, .probeSucceeded, noAnswer,
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline), .timerFired(.probe),
            .timerFired(.crashWindow), refused,
            forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .degradedLinkDown:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallFailed(.up, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(tampered, .degraded, [.applyFirewall(.up)]),
            ExpectedRow(.firewallNotificationsLost, .degraded, [.verifyFirewall(.up)]),
            ExpectedRow(.lanAddressConfigured, .degraded, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .degraded, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.tunnelLinkUp, .tunnelUp, [.ensureTunnelRoute]),
            ExpectedRow(exited, .tunnelConnecting, [.forgetTunnelProcess, .applyFirewall(.connecting), crashWindow, respawn]),
            ExpectedRow(.tunnelControlConnected, .degraded, [.watchTunnelState]),
            ExpectedRow(.tunnelHeld, .degraded, [.releaseTunnel]),
            ExpectedRow(.credentialsRequested, .degraded, [.sendCredentials]),
            ExpectedRow(.authenticationFailed, .killswitched, killswitchAuthRunning),
            ExpectedRow(remoteAsked, .degraded, [.answerRemote(.accept)]),
            ExpectedRow(commandFailed, .degraded, [.stopTunnel]),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
            ExpectedRow(.reloadRequested, .degraded, [.reloadConfiguration]),
            ExpectedRow(reloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopTunnel]),
            // The first forwards of a protocol: its map and the rule that looks it up come with the
            // whole up ruleset (this configuration has none).
            ExpectedRow(forwardsUnchanged, .degraded, [.applyFirewall(.up)]),
            ExpectedRow(forwardsChanged, .degraded, [.applyFirewall(.up)]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"),
            .firewallIntact(.up), .lanAddressPresent, .policyRoutingInstalled, .policyRoutingFailed("EPERM"),
            .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), .tunnelConnected, reconnecting, waiting, fatal, .probeSucceeded, noAnswer,
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline), .timerFired(.probe),
            .timerFired(.crashWindow), refused,
            forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .killswitched:
        return ExpectedTable(rows: [
            // An authentication failure waits for new credentials: a later lockdown failure must
            // not turn it into a transient failure that the retry timer leaves (see
            // RegressionTests.authFailureStaysSticky), so no `retry` is scheduled.
            ExpectedRow(.firewallFailed(.lockdown, "EPERM"), .killswitched, [.cancelTimer(.respawn)]),
            ExpectedRow(tampered, .killswitched, [lockdown]),
            ExpectedRow(.firewallNotificationsLost, .killswitched, [.verifyFirewall(.lockdown)]),
            ExpectedRow(.lanAddressConfigured, .killswitched, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .killswitched, [.ensureLANAddress]),
            ExpectedRow(.shutdownRequested, .killswitched, [.cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
            ExpectedRow(.reloadRequested, .killswitched, [.reloadConfiguration]),
            // New credentials: the authentication failure no longer holds the machine.
            ExpectedRow(reloaded, .addressAssigned, [.cancelTimer(.retry), .applyFirewall(.connecting)]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"),
            .firewallIntact(.up), .lanAddressPresent, .addressFailed("EADDRNOTAVAIL"), .policyRoutingInstalled,
            .policyRoutingFailed("EPERM"), .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp,
            .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started, .tunnelStartFailed("ENOENT"), exited,
            .tunnelControlConnected, .tunnelHeld, .credentialsRequested, .authenticationFailed, .tunnelConnected,
            reconnecting, waiting, fatal, remoteAsked, commandFailed, .probeSucceeded, noAnswer,
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline), .timerFired(.probe),
            .timerFired(.crashWindow), refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .killswitchedTransient:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallFailed(.lockdown, "EPERM"), .killswitched, [.cancelTimer(.respawn), retry]),
            ExpectedRow(tampered, .killswitched, [lockdown]),
            ExpectedRow(.firewallNotificationsLost, .killswitched, [.verifyFirewall(.lockdown)]),
            ExpectedRow(.lanAddressConfigured, .killswitched, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressPresent, .addressAssigned, [.applyFirewall(.connecting)]),
            ExpectedRow(.lanAddressMissing, .killswitched, [.ensureLANAddress]),
            ExpectedRow(.timerFired(.retry), .addressAssigned, [.applyFirewall(.connecting)]),
            ExpectedRow(.shutdownRequested, .killswitched, [.cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
            ExpectedRow(.reloadRequested, .killswitched, [.reloadConfiguration]),
            ExpectedRow(reloaded, .addressAssigned, [.cancelTimer(.retry), .applyFirewall(.connecting)]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"),
            .firewallIntact(.up), .addressFailed("EADDRNOTAVAIL"), .policyRoutingInstalled,
            .policyRoutingFailed("EPERM"), .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp,
            .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started, .tunnelStartFailed("ENOENT"), exited,
            .tunnelControlConnected, .tunnelHeld, .credentialsRequested, .authenticationFailed, .tunnelConnected,
            reconnecting, waiting, fatal, remoteAsked, commandFailed, .probeSucceeded, noAnswer,
            .timerFired(.respawn), .timerFired(.stopDeadline), .timerFired(.probe), .timerFired(.crashWindow),
            refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .shuttingDown:
        return ExpectedTable(rows: [
            // The lockdown must hold until the exit, whoever removed it.
            ExpectedRow(tampered, .killswitched, [lockdown]),
            ExpectedRow(.firewallNotificationsLost, .killswitched, [.verifyFirewall(.lockdown)]),
            // Only the end of OpenVPN (or its spawn) and the stop deadline matter now.
            ExpectedRow(.tunnelStartFailed("ENOENT"), .killswitched, [.cancelTimer(.stopDeadline), exitSuccess]),
            ExpectedRow(exited, .killswitched, [.cancelTimer(.stopDeadline), exitSuccess]),
            ExpectedRow(.timerFired(.stopDeadline), .killswitched, [.killTunnel]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"),
            .firewallFailed(.up, "EPERM"), .firewallIntact(.up), .lanAddressConfigured, .lanAddressPresent,
            .lanAddressMissing, .addressFailed("EADDRNOTAVAIL"), .policyRoutingInstalled,
            .policyRoutingFailed("EPERM"), .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp,
            .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started, .tunnelControlConnected, .tunnelHeld,
            .credentialsRequested, .authenticationFailed, .tunnelConnected, reconnecting, waiting, fatal, remoteAsked,
            commandFailed, .probeSucceeded, noAnswer, .timerFired(.respawn), .timerFired(.retry), .timerFired(.probe),
            .timerFired(.crashWindow), .shutdownRequested, .reloadRequested, reloaded, refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])

    case .shutDownWhileResolving:
        return ExpectedTable(rows: [
            ExpectedRow(tampered, .killswitched, [lockdown]),
            ExpectedRow(.firewallNotificationsLost, .killswitched, [.verifyFirewall(.lockdown)]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"),
            .firewallFailed(.up, "EPERM"), .firewallIntact(.up), .lanAddressConfigured, .lanAddressPresent,
            .lanAddressMissing, .addressFailed("EADDRNOTAVAIL"), .policyRoutingInstalled,
            .policyRoutingFailed("EPERM"), .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp,
            .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started, .tunnelStartFailed("ENOENT"), exited,
            .tunnelControlConnected, .tunnelHeld, .credentialsRequested, .authenticationFailed, .tunnelConnected,
            reconnecting, waiting, fatal, remoteAsked, commandFailed, .probeSucceeded, noAnswer,
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline), .timerFired(.probe),
            .timerFired(.crashWindow), .shutdownRequested, .reloadRequested, reloaded, refused,
            forwardsUnchanged, forwardsChanged, forwardsRefused, forwardsApplied, forwardsFailed,
        ])
    case .outputWatched:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallFailed(.connecting, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(tampered, .tunnelConnecting, [.applyFirewall(.connecting)]),
            ExpectedRow(.firewallNotificationsLost, .tunnelConnecting, [.verifyFirewall(.connecting)]),
            ExpectedRow(.lanAddressConfigured, .tunnelConnecting, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .tunnelConnecting, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.tunnelLinkUp, .tunnelConnecting, [.ensureTunnelRoute]),
            // The exit waits for the output's end: it is judged with what OpenVPN printed.
            ExpectedRow(exited, .tunnelConnecting, [heldExit]),
            ExpectedRow(.tunnelHeld, .tunnelConnecting, [.releaseTunnel]),
            ExpectedRow(remoteAsked, .tunnelConnecting, [.answerRemote(.accept)]),
            ExpectedRow(.tunnelControlConnected, .tunnelConnecting, [.watchTunnelState]),
            ExpectedRow(.credentialsRequested, .tunnelConnecting, [.sendCredentials]),
            ExpectedRow(.authenticationFailed, .killswitched, killswitchAuthRunning),
            ExpectedRow(commandFailed, .tunnelConnecting, [.stopTunnel]),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
            ExpectedRow(.reloadRequested, .tunnelConnecting, [.reloadConfiguration]),
            ExpectedRow(reloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopTunnel]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.up, "EPERM"),
            .firewallIntact(.up), .lanAddressPresent, .policyRoutingInstalled, .policyRoutingFailed("EPERM"),
            .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), .tunnelConnected, reconnecting, waiting, fatal, .tunnelOutputWatched,
            outputEnded, optionsError, .probeSucceeded, noAnswer, .timerFired(.respawn), .timerFired(.retry),
            .timerFired(.stopDeadline), .timerFired(.probe), .timerFired(.crashWindow), .timerFired(.tunnelOutput),
            refused,
        ])
    case .exitHeld:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallFailed(.connecting, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(tampered, .tunnelConnecting, [.applyFirewall(.connecting)]),
            ExpectedRow(.firewallNotificationsLost, .tunnelConnecting, [.verifyFirewall(.connecting)]),
            ExpectedRow(.lanAddressConfigured, .tunnelConnecting, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .tunnelConnecting, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.tunnelLinkUp, .tunnelConnecting, [.ensureTunnelRoute]),
            ExpectedRow(.tunnelHeld, .tunnelConnecting, [.releaseTunnel]),
            ExpectedRow(remoteAsked, .tunnelConnecting, [.answerRemote(.accept)]),
            // Nothing about the configuration: a crash like any other, respawned after the backoff.
            ExpectedRow(outputEnded, .tunnelConnecting, [.cancelTimer(.tunnelOutput), .forgetTunnelProcess, crashWindow, respawn]),
            // OpenVPN refused its configuration before the tunnel ever connected: the lockdown, then exit 78 with its line; no respawn.
            ExpectedRow(optionsError, .killswitched, [.cancelTimer(.tunnelOutput), .forgetTunnelProcess, lockdown, .cancelTimer(.respawn), .cancelTimer(.crashWindow), .exit(code: 78, message: refusedByOpenVPN)]),
            // The output stayed open (a process OpenVPN left behind): the exit is judged without it.
            ExpectedRow(.timerFired(.tunnelOutput), .tunnelConnecting, [.forgetTunnelProcess, crashWindow, respawn]),
            ExpectedRow(.tunnelControlConnected, .tunnelConnecting, [.watchTunnelState]),
            ExpectedRow(.credentialsRequested, .tunnelConnecting, [.sendCredentials]),
            ExpectedRow(.authenticationFailed, .killswitched, killswitchAuthRunning),
            ExpectedRow(commandFailed, .tunnelConnecting, [.stopTunnel]),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
            ExpectedRow(.reloadRequested, .tunnelConnecting, [.reloadConfiguration]),
            ExpectedRow(reloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopTunnel]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.up, "EPERM"),
            .firewallIntact(.up), .lanAddressPresent, .policyRoutingInstalled, .policyRoutingFailed("EPERM"),
            .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), exited, .tunnelConnected, reconnecting, waiting, fatal,
            .tunnelOutputWatched, .probeSucceeded, noAnswer, .timerFired(.respawn), .timerFired(.retry),
            .timerFired(.stopDeadline), .timerFired(.probe), .timerFired(.crashWindow), refused,
        ])
    case .configurationRefused:
        return ExpectedTable(rows: [
            // Like a rejected password, a refused configuration waits for SIGHUP: no retry is armed.
            ExpectedRow(.firewallFailed(.lockdown, "EPERM"), .killswitched, [.cancelTimer(.respawn)]),
            ExpectedRow(tampered, .killswitched, [lockdown]),
            ExpectedRow(.firewallNotificationsLost, .killswitched, [.verifyFirewall(.lockdown)]),
            ExpectedRow(.lanAddressConfigured, .killswitched, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .killswitched, [.ensureLANAddress]),
            ExpectedRow(.shutdownRequested, .killswitched, [.cancelTimer(.respawn), .cancelTimer(.retry), exitSuccess]),
            ExpectedRow(.reloadRequested, .killswitched, [.reloadConfiguration]),
            // A reloaded configuration lifts it.
            ExpectedRow(reloaded, .addressAssigned, [.cancelTimer(.retry), .applyFirewall(.connecting)]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.connecting, "EPERM"), .firewallFailed(.up, "EPERM"),
            .firewallIntact(.up), .lanAddressPresent, .addressFailed("EADDRNOTAVAIL"), .policyRoutingInstalled,
            .policyRoutingFailed("EPERM"), .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkUp,
            .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started, .tunnelStartFailed("ENOENT"), exited,
            .tunnelControlConnected, .tunnelHeld, .credentialsRequested, .authenticationFailed, .tunnelConnected,
            reconnecting, waiting, fatal, remoteAsked, commandFailed, .tunnelOutputWatched, outputEnded, optionsError,
            .probeSucceeded, noAnswer, .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
            .timerFired(.probe), .timerFired(.crashWindow), .timerFired(.tunnelOutput), refused,
        ])
    case .hostNameConnecting:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallFailed(.connecting, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(tampered, .tunnelConnecting, [.applyFirewall(.connecting)]),
            ExpectedRow(.firewallNotificationsLost, .tunnelConnecting, [.verifyFirewall(.connecting)]),
            ExpectedRow(.lanAddressConfigured, .tunnelConnecting, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .tunnelConnecting, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.tunnelLinkUp, .tunnelConnecting, [.ensureTunnelRoute]),
            ExpectedRow(exited, .tunnelConnecting, [.forgetTunnelProcess, crashWindow, respawn]),
            ExpectedRow(.tunnelHeld, .tunnelConnecting, [.releaseTunnel]),
            // OpenVPN asks again without having connected: the name's only address failed, a full round; resolved again before the answer.
            ExpectedRow(remoteAsked, .tunnelConnecting, [.openNameResolution]),
            ExpectedRow(.tunnelControlConnected, .tunnelConnecting, [.watchTunnelState]),
            ExpectedRow(.credentialsRequested, .tunnelConnecting, [.sendCredentials]),
            ExpectedRow(.authenticationFailed, .killswitched, killswitchAuthRunning),
            ExpectedRow(commandFailed, .tunnelConnecting, [.stopTunnel]),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
            ExpectedRow(.reloadRequested, .tunnelConnecting, [.reloadConfiguration]),
            ExpectedRow(reloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopTunnel]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.up, "EPERM"),
            .firewallIntact(.up), .lanAddressPresent, .policyRoutingInstalled, .policyRoutingFailed("EPERM"),
            .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), .tunnelConnected, reconnecting, waiting, fatal, .tunnelOutputWatched,
            outputEnded, optionsError, .probeSucceeded, noAnswer, .timerFired(.respawn), .timerFired(.retry),
            .timerFired(.stopDeadline), .timerFired(.probe), .timerFired(.crashWindow), .timerFired(.tunnelOutput),
            refused,
        ])
    case .reresolutionOpening:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallFailed(.connecting, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(tampered, .tunnelConnecting, [.applyFirewall(.connecting)]),
            ExpectedRow(.firewallNotificationsLost, .tunnelConnecting, [.verifyFirewall(.connecting)]),
            ExpectedRow(.lanAddressConfigured, .tunnelConnecting, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .tunnelConnecting, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.tunnelLinkUp, .tunnelConnecting, [.ensureTunnelRoute]),
            ExpectedRow(.nameResolutionOpened, .tunnelConnecting, [.resolveNames(["vpn.example.net"])]),
            // Not opened: the connecting ruleset still holds, and OpenVPN gets the old address.
            ExpectedRow(.nameResolutionFailed("EPERM"), .tunnelConnecting, [.answerRemote(.modify(IPv4Address(198, 51, 100, 7), port: 1194))]),
            ExpectedRow(exited, .tunnelConnecting, [.forgetTunnelProcess, crashWindow, respawn]),
            ExpectedRow(.tunnelHeld, .tunnelConnecting, [.releaseTunnel]),
            ExpectedRow(.tunnelControlConnected, .tunnelConnecting, [.watchTunnelState]),
            ExpectedRow(.credentialsRequested, .tunnelConnecting, [.sendCredentials]),
            ExpectedRow(.authenticationFailed, .killswitched, killswitchAuthRunning),
            ExpectedRow(commandFailed, .tunnelConnecting, [.stopTunnel]),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
            ExpectedRow(.reloadRequested, .tunnelConnecting, [.reloadConfiguration]),
            ExpectedRow(reloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopTunnel]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, resolved, .firewallCommitted(.lockdown),
            .firewallCommitted(.connecting), .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"),
            .firewallFailed(.up, "EPERM"), .firewallIntact(.up), .lanAddressPresent, .policyRoutingInstalled,
            .policyRoutingFailed("EPERM"), .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkDown,
            .wanLinkUp, .wanLinkDown, started, .tunnelStartFailed("ENOENT"), .tunnelConnected, reconnecting, waiting,
            fatal, remoteAsked, .tunnelOutputWatched, outputEnded, optionsError, .probeSucceeded, noAnswer,
            .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline), .timerFired(.probe),
            .timerFired(.crashWindow), .timerFired(.tunnelOutput), refused,
        ])
    case .reresolving:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallFailed(.connecting, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(tampered, .tunnelConnecting, [.applyFirewall(.connecting)]),
            ExpectedRow(.firewallNotificationsLost, .tunnelConnecting, [.verifyFirewall(.connecting)]),
            ExpectedRow(.lanAddressConfigured, .tunnelConnecting, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .tunnelConnecting, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.tunnelLinkUp, .tunnelConnecting, [.ensureTunnelRoute]),
            // Resolved: the connecting ruleset with the name's addresses replaces the resolving one in one commit.
            ExpectedRow(resolved, .tunnelConnecting, [.applyFirewall(.connecting)]),
            ExpectedRow(exited, .tunnelConnecting, [.forgetTunnelProcess, crashWindow, respawn]),
            ExpectedRow(.tunnelControlConnected, .tunnelConnecting, [.watchTunnelState]),
            ExpectedRow(.credentialsRequested, .tunnelConnecting, [.sendCredentials]),
            ExpectedRow(.authenticationFailed, .killswitched, killswitchAuthRunning),
            ExpectedRow(commandFailed, .tunnelConnecting, [.stopTunnel]),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
            ExpectedRow(.reloadRequested, .tunnelConnecting, [.reloadConfiguration]),
            ExpectedRow(reloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopTunnel]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
            .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.up, "EPERM"),
            .firewallIntact(.up), .lanAddressPresent, .policyRoutingInstalled, .policyRoutingFailed("EPERM"),
            .tunnelRouteInstalled, .tunnelRouteFailed("ENETDOWN"), .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), .tunnelHeld, .tunnelConnected, reconnecting, waiting, fatal, remoteAsked,
            .tunnelOutputWatched, outputEnded, optionsError, .probeSucceeded, noAnswer, .timerFired(.respawn),
            .timerFired(.retry), .timerFired(.stopDeadline), .timerFired(.probe), .timerFired(.crashWindow),
            .timerFired(.tunnelOutput), refused,
        ])
    case .reresolutionClosing:
        return ExpectedTable(rows: [
            ExpectedRow(.firewallFailed(.connecting, "EPERM"), .killswitched, killswitchTransientRunning),
            ExpectedRow(tampered, .tunnelConnecting, [.applyFirewall(.connecting)]),
            ExpectedRow(.firewallNotificationsLost, .tunnelConnecting, [.verifyFirewall(.connecting)]),
            ExpectedRow(.lanAddressConfigured, .tunnelConnecting, [.ensurePolicyRouting]),
            ExpectedRow(.lanAddressMissing, .tunnelConnecting, [.ensureLANAddress]),
            ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
            ExpectedRow(.tunnelLinkUp, .tunnelConnecting, [.ensureTunnelRoute]),
            // Committed with the new address: OpenVPN gets it.
            ExpectedRow(.firewallCommitted(.connecting), .tunnelConnecting, [.answerRemote(.modify(IPv4Address(198, 51, 100, 9), port: 1194))]),
            ExpectedRow(exited, .tunnelConnecting, [.forgetTunnelProcess, crashWindow, respawn]),
            ExpectedRow(.tunnelControlConnected, .tunnelConnecting, [.watchTunnelState]),
            ExpectedRow(.credentialsRequested, .tunnelConnecting, [.sendCredentials]),
            ExpectedRow(.authenticationFailed, .killswitched, killswitchAuthRunning),
            ExpectedRow(commandFailed, .tunnelConnecting, [.stopTunnel]),
            ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
            ExpectedRow(.reloadRequested, .tunnelConnecting, [.reloadConfiguration]),
            ExpectedRow(reloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopTunnel]),
        ], ignored: [
            .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
            .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.up),
            .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.up, "EPERM"), .firewallIntact(.up),
            .lanAddressPresent, .policyRoutingInstalled, .policyRoutingFailed("EPERM"), .tunnelRouteInstalled,
            .tunnelRouteFailed("ENETDOWN"), .tunnelLinkDown, .wanLinkUp, .wanLinkDown, started,
            .tunnelStartFailed("ENOENT"), .tunnelHeld, .tunnelConnected, reconnecting, waiting, fatal, remoteAsked,
            .tunnelOutputWatched, outputEnded, optionsError, .probeSucceeded, noAnswer, .timerFired(.respawn),
            .timerFired(.retry), .timerFired(.stopDeadline), .timerFired(.probe), .timerFired(.crashWindow),
            .timerFired(.tunnelOutput), refused,
        ])
    default:
        Issue.record("no expected table for \(scenario.name)")
        return ExpectedTable(rows: [], ignored: [])
    }
}

/// TunnelUp, and TunnelUp while a SIGHUP's files are read (a second SIGHUP then waits for the
/// outcome, and reads them again after it).
private enum ReloadStep { case idle, reading, readingThenAgain }

private func tunnelUpTable(reload: ReloadStep) -> ExpectedTable {
    var table = ExpectedTable(rows: [
        ExpectedRow(.firewallFailed(.up, "EPERM"), .killswitched, killswitchTransientRunning),
        ExpectedRow(tampered, .tunnelUp, [.applyFirewall(.up)]),
        ExpectedRow(.firewallNotificationsLost, .tunnelUp, [.verifyFirewall(.up)]),
        ExpectedRow(.lanAddressConfigured, .tunnelUp, [.ensurePolicyRouting]),
        ExpectedRow(.lanAddressMissing, .tunnelUp, [.ensureLANAddress]),
        ExpectedRow(.addressFailed("EADDRNOTAVAIL"), .killswitched, killswitchTransientRunning),
        // tun0 is up: its route goes into the routing table just installed.
        ExpectedRow(.policyRoutingInstalled, .tunnelUp, [.ensureTunnelRoute]),
        ExpectedRow(.tunnelLinkUp, .tunnelUp, [.ensureTunnelRoute]),
        // The tunnel device gone under a running OpenVPN: only a reconnect reopens it.
        ExpectedRow(.tunnelLinkDown, .degraded, [.reconnectTunnel]),
        // The WAN is gone: the tunnel cannot carry anything until it is back.
        ExpectedRow(.wanLinkDown, .degraded, []),
        ExpectedRow(exited, .tunnelConnecting, [.forgetTunnelProcess, .applyFirewall(.connecting), crashWindow, respawn]),
        ExpectedRow(.tunnelControlConnected, .tunnelUp, [.watchTunnelState]),
        ExpectedRow(.tunnelHeld, .tunnelUp, [.releaseTunnel]),
        ExpectedRow(.credentialsRequested, .tunnelUp, [.sendCredentials]),
        ExpectedRow(.authenticationFailed, .killswitched, killswitchAuthRunning),
        ExpectedRow(reconnecting, .degraded, []),
        ExpectedRow(waiting, .degraded, []),
        ExpectedRow(remoteAsked, .tunnelUp, [.answerRemote(.accept)]),
        ExpectedRow(commandFailed, .tunnelUp, [.stopTunnel]),
        ExpectedRow(.shutdownRequested, .killswitched, shutdownRunning),
        ExpectedRow(.reloadRequested, .tunnelUp, [.reloadConfiguration]),
        ExpectedRow(reloaded, .tunnelConnecting, [.applyFirewall(.connecting), .stopTunnel]),
        // The first forwards of a protocol: its map and the rule that looks it up come with the
        // whole up ruleset (this configuration has none).
        ExpectedRow(forwardsUnchanged, .tunnelUp, [.applyFirewall(.up)]),
        ExpectedRow(forwardsChanged, .tunnelUp, [.applyFirewall(.up)]),
    ], ignored: [
        .start, loaded, loadedWithHostNames, rejected, missingInterface, .nameResolutionOpened,
        .nameResolutionFailed("EPERM"), resolved, .firewallCommitted(.lockdown), .firewallCommitted(.connecting),
        .firewallCommitted(.up), .firewallFailed(.lockdown, "EPERM"), .firewallFailed(.connecting, "EPERM"),
        .firewallIntact(.up), .lanAddressPresent, .policyRoutingFailed("EPERM"), .tunnelRouteInstalled,
        .tunnelRouteFailed("ENETDOWN"), .wanLinkUp, started, .tunnelStartFailed("ENOENT"), .tunnelConnected,
        fatal, .probeSucceeded, noAnswer, .timerFired(.respawn), .timerFired(.retry), .timerFired(.stopDeadline),
        .timerFired(.probe), .timerFired(.crashWindow), refused,
        forwardsRefused, forwardsApplied, forwardsFailed,
    ])
    guard reload != .idle else { return table }
    let again: [Action] = reload == .readingThenAgain ? [.reloadConfiguration] : []
    // A SIGHUP while reading: remembered, nothing done until the reading's outcome is in.
    table.rows.removeAll { $0.event == .reloadRequested }
    table.ignored.append(.reloadRequested)
    table.rows = table.rows.map { row in
        row.event == reloaded ? ExpectedRow(reloaded, row.next, row.actions + again) : row
    }
    guard !again.isEmpty else { return table }
    table.ignored.removeAll { $0 == refused }
    table.rows.append(ExpectedRow(refused, .tunnelUp, again))
    return table
}

@Suite("Every state × every event")
struct TransitionTableTests {
    @Test func representativeEventsCoverEveryEventCase() {
        let events = representativeEvents + wireGuardEvents
        #expect(Set(events.map(caseName)) == allEventCaseNames)
        #expect(Set(events).count == events.count)
        for policy in FirewallPolicy.allCases {
            #expect(representativeEvents.contains(.firewallCommitted(policy)))
            #expect(representativeEvents.contains { if case .firewallFailed(policy, _) = $0 { true } else { false } })
        }
        for timer in TimerID.allCases {
            #expect(events.contains(.timerFired(timer)))
        }
    }

    @Test(arguments: Scenario.all)
    func wireGuardEventsMeanNothingToOpenVPN(_ scenario: Scenario) {
        for event in wireGuardEvents {
            var machine = scenario.machine()
            let before = machine
            #expect(machine.handle(event) == [], "\(scenario.name) + \(label(event))")
            #expect(machine == before, "\(scenario.name) + \(label(event))")
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
