/// The supervisor's states. Their names are part of the interface: `vpnsup status` prints them.
public enum State: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case initial = "Init"
    case addressAssigned = "AddressAssigned"
    case tunnelConnecting = "TunnelConnecting"
    case tunnelUp = "TunnelUp"
    case degraded = "Degraded"
    case killswitched = "Killswitched"

    /// The firewall policy committed while in this state.
    public var policy: FirewallPolicy {
        switch self {
        case .initial, .killswitched: .lockdown
        case .addressAssigned, .tunnelConnecting: .connecting
        case .tunnelUp, .degraded: .up
        }
    }

    public var description: String { rawValue }
}

public enum TimerID: String, Hashable, Sendable, CaseIterable {
    /// Respawn OpenVPN after it exited (exponential backoff).
    case respawn
    /// Leave Killswitched after a failure that may be transient (firewall or address).
    case retry
    /// OpenVPN did not stop on SIGTERM in time during shutdown.
    case stopDeadline
    /// Time to ask the resolver through the tunnel again (the DNS probe).
    case probe
    /// The window in which `crashLoopExits` OpenVPN exits count as a crash loop has passed.
    case crashWindow
    /// Time to read WireGuard's latest handshakes again (`WireGuardHandshakeMonitor` decides when).
    case handshakeLook
    /// The tunnel's process ended but its output did not: judge the end without it.
    case tunnelOutput
}

/// The supervisor's logic: events in, actions out. Pure: no I/O, no clocks; time enters as
/// `timerFired` and leaves as `scheduleTimer`.
///
/// The machine is in one `Phase`, which carries the data that means something only there (the
/// start-up step, the crash-loop counters, the probe failures, why the switch is killed...).
/// Beside it, only what holds in every phase: what the firewall was asked for and holds, what
/// netlink reported about the links, the tunnel process, and the configuration in use.
public struct Machine: Hashable, Sendable {
    let timings: Timings
    /// OpenVPN's name in reasons ("OpenVPN exited with status 1"); see `tunnelName`.
    let openVPNName: String
    var jitterSource: JitterSource

    var phase: Phase = .initial(Starting())
    public internal(set) var reason: String?

    /// The policy last asked for, and the one the kernel holds as far as vpnsup committed it (nil
    /// while it holds something else: nothing yet, the resolving ruleset, or an outside change).
    var requested: FirewallPolicy?
    var committed: FirewallPolicy?

    /// As netlink last reported them.
    var addressPresent = false
    var tunnelLinkUp = false
    var wanUp = true

    var process = TunnelProcess.stopped
    /// Whether a SIGHUP's files are being read (their outcome comes later).
    var reloading = ReloadProgress.idle
    /// A probe timer is scheduled and has not fired.
    var probeTimerPending = false

    /// The configuration as loaded (the environment's, with the remotes), and once judged, the
    /// remotes with their pinned addresses.
    var loaded: LoadedConfiguration?
    var pinned: RemotePins?
    /// Port forwards sent to the kernel as map element changes, not yet reported back.
    var forwardChange: ForwardChange?

    /// A WireGuard tunnel's evidence, endpoint rotation and re-resolution (Machine+WireGuard).
    var wireGuard: WireGuardTunnel
    /// The provider's configuration across phases: OpenVPN's configuration errors, the rounds of
    /// attempts at the pinned endpoints, host names resolved again (Machine+Provider.swift).
    var provider = ProviderTracking()

    public init(timings: Timings = Timings(), seed: UInt64 = 0, tunnelName: String = "OpenVPN") {
        self.timings = timings
        openVPNName = tunnelName
        jitterSource = JitterSource(state: seed)
        wireGuard = WireGuardTunnel(timings: timings.handshakes)
    }

    // MARK: What the outside may read

    public var state: State {
        switch phase {
        case .initial: .initial
        case .addressAssigned: .addressAssigned
        case .tunnelConnecting: .tunnelConnecting
        case .tunnelUp: .tunnelUp
        case .degraded: .degraded
        case .killswitched, .stopping: .killswitched
        }
    }

    /// The policy the machine last asked for (the kernel holds it once `firewallCommitted` arrives).
    public var requestedPolicy: FirewallPolicy? { requested }

    public var shuttingDown: Bool {
        if case .stopping = phase { true } else { false }
    }

    /// The configuration has been judged and accepted: the remotes are pinned.
    public var isConfigured: Bool { pinned != nil }

    /// The configuration as loaded (before name resolution too).
    public var configuration: Configuration? { loaded?.configuration }

    /// The remotes with the addresses pinned for them, once the configuration is accepted.
    public var pins: RemotePins? { pinned }

    /// The credentials in use (the effects layer holds the secret).
    public var credentials: CredentialsToken? { loaded?.credentials }

    /// The tunnel's process, while it runs.
    public var tunnelPID: Int32? {
        // An exit held for the output's end is an exit: the pid may be reused, never signal it.
        if case .live(let session) = process, session.heldExit == nil { session.pid } else { nil }
    }

    /// Whether the tunnel's process lives (started or being started): what it reported about its
    /// connection may still hold. False once it was reaped.
    public var tunnelProcessLive: Bool { session != nil }

    /// The WAN link, as netlink last reported it.
    public var wanLinkUp: Bool { wanUp }

    /// Consecutive DNS probe failures of the tunnel now up (or degraded); 0 otherwise.
    public var probeFailures: Int {
        switch phase {
        case .tunnelUp(let probing), .degraded(let probing): probing.failures
        default: 0
        }
    }

    /// The DNS probe's interval, nil when there is none.
    public var probeInterval: Duration? {
        timings.probeInterval ?? (probeServer == nil ? nil : configuration?.probe.interval)
    }

    /// The resolver the DNS probe asks: PROBE_SERVER, else DNS, else a wg-quick file's first IPv4
    /// `DNS =` (the resolver the LAN is held to); nil: no probe.
    public var probeServer: IPv4Address? {
        configuration?.probe.server ?? loaded?.wireGuard?.dnsServers.first
    }

    /// Failures in a row that degrade the tunnel and reconnect it.
    var probeFailureLimit: Int {
        timings.probeInterval != nil ? timings.probeFailures : (configuration?.probe.failures ?? timings.probeFailures)
    }

    /// The nameservers the remotes' host names are resolved through (resolv.conf's).
    public var nameservers: [IPv4Address] { loaded?.nameservers ?? [] }

    /// The host names being resolved, while the resolving ruleset is open or about to be.
    public var namesBeingResolved: [String]? {
        if case .initial(let starting) = phase, case .resolving(let resolution) = starting.step { resolution.names } else { nil }
    }

    /// The ruleset `policy` stands for with the configuration in use; nil for a policy that needs
    /// a configuration before one is accepted.
    public func ruleset(for policy: FirewallPolicy) -> Ruleset? {
        if policy == .lockdown { return .lockdown }
        guard let layout, let configuration else { return nil }
        return configuration.ruleset(policy, for: layout)
    }

    /// The lockdown plus DNS to the nameservers, for resolving the remotes' host names; while a
    /// WireGuard tunnel's names are resolved again, the policy requested plus that DNS.
    public var resolvingRuleset: Ruleset? {
        guard let loaded else { return nil }
        if let reresolving = reresolvingRuleset { return reresolving }
        return .resolving(nameservers: loaded.nameservers, wanInterface: loaded.configuration.wanInterface,
                          mark: Configuration.transportMark)
    }

    /// How to start the tunnel with the configuration in use.
    public var tunnelPlan: TunnelPlan? {
        guard let configuration, let pinned else { return nil }
        // Skipped profiles must be asked about too, or OpenVPN would try them itself.
        return TunnelPlan(configurationPath: configuration.openvpnConfigPath,
                          runtimeDirectory: configuration.runtimeDirectory,
                          asksForRemotes: loaded?.wireGuard == nil
                              && (pinned.remotes.contains { $0.endpoint == nil }
                                  || (loaded?.skippedRemotes.contains(where: \.needsSkipping) ?? false)),
                          tunnelInterface: tunnelInterface, wireGuard: wireGuardPlan)
    }

    // MARK: Events in, actions out

    public mutating func handle(_ event: Event) -> [Action] {
        // WireGuard's own events, and its answers to shared ones, first; then what concerns the
        // provider's configuration; the evidence stops when the tunnel does, whatever ended it.
        var actions = handleWireGuard(event) ?? handleProviderEvent(event) ?? handleInPhase(event)
        actions += settleWireGuard()
        switch event {
        case .configurationReloaded, .reloadRefused: return actions + reloadRead()
        default: return actions
        }
    }

    /// The phase's handler.
    mutating func handleInPhase(_ event: Event) -> [Action] {
        switch phase {
        case .initial(let starting): handleInitial(event, starting)
        case .addressAssigned(let recovery): handleAddressAssigned(event, recovery)
        case .tunnelConnecting(let connecting): handleConnecting(event, connecting)
        case .tunnelUp(let probing): handleUp(event, probing)
        case .degraded(let probing): handleDegraded(event, probing)
        case .killswitched(let lockout): handleKillswitched(event, lockout)
        case .stopping: handleStopping(event)
        }
    }

    // MARK: SIGHUP

    /// A SIGHUP's reading: files are read off the interpreter, so their outcome comes later, and
    /// a SIGHUP meanwhile must neither start a second reading (whose outcome could arrive first
    /// and be overtaken by the older one's) nor be lost (the files may have changed again).
    enum ReloadProgress: Hashable, Sendable {
        case idle
        case reading
        /// Another SIGHUP came while reading: read again once this reading's outcome is in.
        case readingThenAgain
    }

    /// SIGHUP: read the files again, or once more after the reading under way.
    mutating func requestReload() -> [Action] {
        guard isConfigured, !shuttingDown else { return [] }
        switch reloading {
        case .idle:
            reloading = .reading
            return [.reloadConfiguration] + rereadsForwards
        case .reading, .readingThenAgain:
            reloading = .readingThenAgain
            return []
        }
    }

    /// A reading's outcome was handled: the SIGHUP that came meanwhile reads the files again.
    private mutating func reloadRead() -> [Action] {
        let again = reloading == .readingThenAgain
        reloading = .idle
        return again ? requestReload() : []
    }

    // MARK: Shared steps

    /// Moves to `next`, asking for its policy when it differs from the one last requested.
    mutating func enter(_ next: Phase) -> [Action] {
        phase = next
        if next.keepsReason == false { reason = nil }
        let policy = state.policy
        guard policy != requested else { return [] }
        requested = policy
        return [.applyFirewall(policy)]
    }

    /// The kernel no longer holds the committed policy: ask for the requested one again, although
    /// it was committed. Until it is, nothing that needs it (the hold release) proceeds.
    mutating func recommit() -> [Action] {
        guard let requested else { return [] }
        committed = nil
        return [.applyFirewall(requested)]
    }

    /// Notifications were lost: read the table back before repairing anything.
    func verify() -> [Action] {
        requested.map { [.verifyFirewall($0)] } ?? []
    }

    /// The committed policy is the one requested and lets the tunnel's transport out.
    var transportCommitted: Bool {
        guard let committed else { return false }
        return committed == requested && committed.allowsTransport
    }

    /// A firewall result for the policy last requested: the kernel holds it (or failed to).
    /// Returns false for a superseded request.
    mutating func noteCommitted(_ policy: FirewallPolicy) -> Bool {
        guard policy == requested else { return false }
        committed = policy
        return true
    }

    mutating func jittered(_ delay: Duration) -> Duration {
        guard timings.jitter > 0 else { return delay }
        return delay - delay * (timings.jitter * jitterSource.next())
    }

    /// The events every phase but shutdown answers alike (after its own handler passed them on).
    mutating func handleCommon(_ event: Event) -> [Action] {
        switch event {
        case .firewallTampered:
            return recommit()
        case .firewallNotificationsLost:
            return verify()
        case .lanAddressMissing:
            addressPresent = false
            return isConfigured ? ensureLAN() : []
        case .lanAddressPresent:
            addressPresent = true
            return []
        case .lanAddressConfigured:
            return isConfigured ? [.ensurePolicyRouting] : []
        case .policyRoutingInstalled:
            return wantsTunnelRoute ? [.ensureTunnelRoute] : []
        case .tunnelLinkUp:
            tunnelLinkUp = true
            return []
        case .tunnelLinkDown:
            tunnelLinkUp = false
            return []
        case .wanLinkUp:
            return wanCameUp()
        case .wanLinkDown:
            wanUp = false
            return []
        case .timerFired(.probe):
            probeTimerPending = false
            return []
        case .reloadRequested:
            return requestReload()
        case .portForwardsRead, .forwardChangesApplied, .forwardChangesFailed:
            return handleForwards(event)
        case .shutdownRequested:
            return shutDown()
        default:
            return handleOverlay(event) ?? handleTunnelProcess(event)
        }
    }

    /// The tunnel's default route matters while traffic may be routed into it.
    var wantsTunnelRoute: Bool {
        guard tunnelLinkUp else { return false }
        switch phase {
        case .tunnelConnecting, .tunnelUp, .degraded: return true
        default: return false
        }
    }
}
