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
}

public enum Event: Hashable, Sendable {
    case start
    case configurationLoaded
    case configurationRejected(String)
    case firewallCommitted(FirewallPolicy)
    case firewallFailed(FirewallPolicy, String)
    /// netlink shows IP_ADDR on the LAN interface.
    case lanAddressPresent
    case lanAddressMissing
    case addressFailed(String)
    /// The tunnel interface exists and is up with carrier.
    case tunnelLinkUp
    /// The tunnel interface went down or was removed.
    case tunnelLinkDown
    case openvpnStarted
    case openvpnSpawnFailed(String)
    case openvpnExited(ExitStatus)
    case managementConnected
    case openvpnHold
    case credentialsRequested
    case credentialsRejected
    case openvpnState(OpenVPNState)
    case openvpnFatal(String)
    case timerFired(TimerID)
    case shutdownRequested
    /// Someone else changed or removed table `inet vpnsup` (the nftables monitor says what), or
    /// notifications were lost and the table no longer reads back as committed. The kernel no
    /// longer holds what was committed: the policy is requested again.
    case firewallTampered(String)
}

public enum Action: Hashable, Sendable {
    case applyFirewall(FirewallPolicy)
    case loadConfiguration
    /// Put IP_ADDR on the LAN interface and bring it up; netlink confirms.
    case ensureLANAddress
    case spawnOpenVPN
    case requestStateNotifications
    case releaseHold
    case sendCredentials
    /// SIGTERM to OpenVPN.
    case stopOpenVPN
    /// SIGKILL to OpenVPN.
    case killOpenVPN
    case scheduleTimer(TimerID, after: Duration)
    case cancelTimer(TimerID)
    case exit(code: Int32, message: String?)
}

/// sysexits(3) codes `vpnsup run` ends with.
public enum ExitCode {
    public static let success: Int32 = 0
    /// EX_OSERR: the kill switch could not be armed.
    public static let unavailable: Int32 = 71
    /// EX_CONFIG: bad configuration.
    public static let configuration: Int32 = 78
}

public struct Timings: Hashable, Sendable {
    public var respawnBase: Duration
    public var respawnCap: Duration
    public var retry: Duration
    public var stopGrace: Duration

    public init(respawnBase: Duration = .milliseconds(250), respawnCap: Duration = .seconds(30),
                retry: Duration = .seconds(5), stopGrace: Duration = .milliseconds(1500)) {
        self.respawnBase = respawnBase
        self.respawnCap = respawnCap
        self.retry = retry
        self.stopGrace = stopGrace
    }
}

/// The supervisor's logic: events in, actions out. Pure: no I/O, no clocks; time enters as
/// `timerFired` and leaves as `scheduleTimer`.
public struct Machine: Hashable, Sendable {
    public private(set) var state: State = .initial
    /// Why the machine is in its state, when that is worth saying (Degraded, Killswitched).
    public private(set) var reason: String?

    enum OpenVPNPhase: Hashable, Sendable { case stopped, starting, running }
    enum Failure: Hashable, Sendable {
        case authentication
        /// Firewall or address failure: retried on a timer.
        case transient
        case shutdown
    }

    let timings: Timings
    var started = false
    var configured = false
    var lockdownFailure: String?
    var requested: FirewallPolicy?
    var committed: FirewallPolicy?
    var addressPresent = false
    var openvpn = OpenVPNPhase.stopped
    var connected = false
    var tunnelLinkUp = false
    var holdPending = false
    var respawnAttempt = 0
    var failure: Failure?

    public init(timings: Timings = Timings()) {
        self.timings = timings
    }

    /// The policy the machine last asked for (the kernel holds it once `firewallCommitted` arrives).
    public var requestedPolicy: FirewallPolicy? { requested }
    public var shuttingDown: Bool { failure == .shutdown }

    public mutating func handle(_ event: Event) -> [Action] {
        if failure == .shutdown { return handleWhileStopping(event) }
        // Nothing may touch the network before the lockdown has been requested.
        if !started, event != .start, event != .shutdownRequested { return [] }
        switch event {
        case .start:
            guard !started else { return [] }
            started = true
            requested = .lockdown
            return [.applyFirewall(.lockdown), .loadConfiguration]

        case .configurationRejected(let message):
            guard state == .initial, !configured else { return [] }
            return [.exit(code: ExitCode.configuration, message: message)]

        case .configurationLoaded:
            guard state == .initial, !configured else { return [] }
            configured = true
            if let lockdownFailure {
                return [.exit(code: ExitCode.unavailable, message: "cannot commit the lockdown ruleset: \(lockdownFailure)")]
            }
            return [.ensureLANAddress]

        case .firewallCommitted(let policy):
            guard policy == requested else { return [] } // superseded by a later request
            committed = policy
            var actions: [Action] = []
            // netlink may confirm the address before the lockdown commit reports back.
            if state == .initial, policy == .lockdown, configured, lockdownFailure == nil, addressPresent {
                actions += enter(.addressAssigned)
            }
            if state == .addressAssigned, policy == .connecting {
                actions += enter(.tunnelConnecting)
                actions += spawn()
            }
            if holdPending, policy.allowsTransport {
                holdPending = false
                actions.append(.releaseHold)
            }
            return actions

        case .firewallFailed(let policy, let message):
            guard policy == requested else { return [] }
            if state == .initial, !configured {
                lockdownFailure = message
                return []
            }
            if state == .initial {
                return [.exit(code: ExitCode.unavailable, message: "cannot commit the lockdown ruleset: \(message)")]
            }
            return killswitch(.transient, "the \(policy) ruleset was not committed: \(message)")

        case .lanAddressPresent:
            addressPresent = true
            if state == .initial, configured, committed == .lockdown {
                return enter(.addressAssigned)
            }
            if state == .killswitched, failure == .transient, committed == .lockdown {
                failure = nil
                return enter(.addressAssigned)
            }
            return []

        case .lanAddressMissing:
            addressPresent = false
            return configured ? [.ensureLANAddress] : []

        case .addressFailed(let message):
            guard configured, state != .killswitched else { return [] }
            return killswitch(.transient, "the LAN address could not be set: \(message)")

        case .tunnelLinkUp:
            tunnelLinkUp = true
            return connectedAndUp()

        case .tunnelLinkDown:
            tunnelLinkUp = false
            return state == .tunnelUp ? degrade("the tunnel interface went down") : []

        case .openvpnStarted:
            guard openvpn == .starting else { return [] }
            openvpn = .running
            return []

        case .openvpnSpawnFailed(let message):
            guard openvpn == .starting else { return [] }
            openvpn = .stopped
            reason = "OpenVPN could not be started: \(message)"
            return state == .tunnelConnecting ? scheduleRespawn() : []

        case .openvpnExited(let status):
            guard openvpn != .stopped else { return [] }
            openvpn = .stopped
            connected = false
            holdPending = false
            switch state {
            case .tunnelUp, .degraded:
                var actions = enter(.tunnelConnecting)
                reason = "OpenVPN \(status)"
                actions += scheduleRespawn()
                return actions
            case .tunnelConnecting:
                reason = "OpenVPN \(status)"
                return scheduleRespawn()
            case .initial, .addressAssigned, .killswitched:
                return []
            }

        case .managementConnected:
            return openvpn == .stopped ? [] : [.requestStateNotifications]

        case .openvpnHold:
            guard openvpn != .stopped, state != .killswitched else { return [] }
            if let committed, committed == requested, committed.allowsTransport {
                return [.releaseHold]
            }
            holdPending = true
            return []

        case .credentialsRequested:
            guard openvpn != .stopped, state != .killswitched else { return [] }
            return [.sendCredentials]

        case .credentialsRejected:
            guard openvpn != .stopped else { return [] }
            return killswitch(.authentication, "authentication failed: the server rejected the credentials")

        case .openvpnState(let openvpnState):
            guard openvpn != .stopped else { return [] }
            if openvpnState == .connected {
                connected = true
                return connectedAndUp()
            }
            connected = false
            return state == .tunnelUp ? degrade("OpenVPN reports \(openvpnState.name)") : []

        case .openvpnFatal(let message):
            guard openvpn != .stopped else { return [] }
            reason = "OpenVPN: \(message)"
            return []

        case .timerFired(.respawn):
            guard state == .tunnelConnecting, openvpn == .stopped else { return [] }
            return spawn()

        case .timerFired(.retry):
            guard state == .killswitched, failure == .transient else { return [] }
            if addressPresent {
                failure = nil
                return enter(.addressAssigned)
            }
            return [.ensureLANAddress, .scheduleTimer(.retry, after: timings.retry)]

        case .timerFired(.stopDeadline):
            return []

        case .firewallTampered:
            return recommit()

        case .shutdownRequested:
            var actions = enter(.killswitched)
            failure = .shutdown
            reason = "shutting down"
            actions += [.cancelTimer(.respawn), .cancelTimer(.retry)]
            if openvpn == .stopped {
                actions.append(.exit(code: ExitCode.success, message: nil))
            } else {
                actions += [.stopOpenVPN, .scheduleTimer(.stopDeadline, after: timings.stopGrace)]
            }
            return actions
        }
    }

    /// After SIGTERM: the lockdown is requested; wait for OpenVPN to go, then exit.
    private mutating func handleWhileStopping(_ event: Event) -> [Action] {
        switch event {
        case .firewallCommitted(let policy) where policy == requested:
            committed = policy
            return []
        case .openvpnStarted where openvpn == .starting:
            openvpn = .running
            return [.stopOpenVPN]
        case .openvpnExited, .openvpnSpawnFailed:
            guard openvpn != .stopped else { return [] }
            openvpn = .stopped
            return [.cancelTimer(.stopDeadline), .exit(code: ExitCode.success, message: nil)]
        case .timerFired(.stopDeadline):
            return openvpn == .stopped ? [] : [.killOpenVPN]
        case .firewallTampered:
            // The lockdown must hold until the very end, whoever removed it.
            return recommit()
        default:
            return []
        }
    }

    /// Moves to `next`, asking for its policy when it differs from the one last requested.
    private mutating func enter(_ next: State) -> [Action] {
        state = next
        if next != .killswitched, next != .degraded { reason = nil }
        guard next.policy != requested else { return [] }
        requested = next.policy
        return [.applyFirewall(next.policy)]
    }

    /// The kernel no longer holds the committed policy: ask for the requested one again, although
    /// it was committed. Until it is, nothing that needs it (the hold release) proceeds.
    private mutating func recommit() -> [Action] {
        guard let requested else { return [] }
        committed = nil
        return [.applyFirewall(requested)]
    }

    private mutating func spawn() -> [Action] {
        guard openvpn == .stopped else { return [] }
        openvpn = .starting
        connected = false
        return [.spawnOpenVPN]
    }

    private mutating func scheduleRespawn() -> [Action] {
        let delay = min(timings.respawnCap, timings.respawnBase * (1 << min(respawnAttempt, 20)))
        respawnAttempt += 1
        return [.scheduleTimer(.respawn, after: delay)]
    }

    private mutating func connectedAndUp() -> [Action] {
        guard connected, tunnelLinkUp, state == .tunnelConnecting || state == .degraded else { return [] }
        respawnAttempt = 0
        return enter(.tunnelUp)
    }

    private mutating func degrade(_ why: String) -> [Action] {
        let actions = enter(.degraded)
        reason = why
        return actions
    }

    private mutating func killswitch(_ kind: Failure, _ why: String) -> [Action] {
        // Rejected credentials wait for new ones: a later transient failure must not arm a retry
        // that would replay them (and risk an account lock-out).
        let kind = failure == .authentication ? .authentication : kind
        var actions = enter(.killswitched)
        failure = kind
        reason = why
        holdPending = false
        actions.append(.cancelTimer(.respawn))
        if openvpn != .stopped { actions.append(.stopOpenVPN) }
        if kind == .transient { actions.append(.scheduleTimer(.retry, after: timings.retry)) }
        return actions
    }
}
