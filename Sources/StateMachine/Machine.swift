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
    /// The WAN interface is up with carrier again.
    case wanLinkUp
    /// The WAN interface went down, lost its carrier or was removed.
    case wanLinkDown
    /// The resolver answered through the tunnel.
    case probeSucceeded
    /// The resolver did not answer through the tunnel (why).
    case probeFailed(String)
    /// SIGHUP: re-read the credentials and the OpenVPN configuration.
    case reloadRequested
    /// The new credentials and configuration were read and are in use from now on.
    case configurationReloaded
    /// The new credentials or configuration were refused; the old ones stay in use.
    case reloadRefused(String)
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
    /// `signal SIGUSR1` over management: OpenVPN drops the connection and connects again.
    case reconnectOpenVPN
    /// Ask the resolver a name through the tunnel; reported as `probeSucceeded` / `probeFailed`.
    case probeTunnel
    /// Re-read the credentials and the OpenVPN configuration; reported as `configurationReloaded`
    /// or `reloadRefused`.
    case reloadConfiguration
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
    /// Each backoff delay is shortened by a random fraction up to this (0...1), so that many
    /// routers restarting together do not retry in lock-step.
    public var jitter: Double
    public var retry: Duration
    public var stopGrace: Duration
    /// This many OpenVPN exits (or failed spawns) without the tunnel coming up, within
    /// `crashLoopWindow`, are a crash loop: Killswitched, then a retry after `crashLoopBackoff`
    /// (doubling per loop, up to `crashLoopCap`). nil: never.
    public var crashLoopExits: Int?
    public var crashLoopWindow: Duration
    public var crashLoopBackoff: Duration
    public var crashLoopCap: Duration
    /// How often the DNS probe asks through the tunnel; nil: no probe.
    public var probeInterval: Duration?
    /// Consecutive probe failures that make TunnelUp Degraded and reconnect OpenVPN.
    public var probeFailures: Int

    public init(respawnBase: Duration = .milliseconds(250), respawnCap: Duration = .seconds(30),
                jitter: Double = 0.2, retry: Duration = .seconds(5), stopGrace: Duration = .milliseconds(1500),
                crashLoopExits: Int? = 5, crashLoopWindow: Duration = .seconds(60),
                crashLoopBackoff: Duration = .seconds(10), crashLoopCap: Duration = .seconds(300),
                probeInterval: Duration? = nil, probeFailures: Int = 3) {
        self.respawnBase = respawnBase
        self.respawnCap = respawnCap
        self.jitter = min(max(jitter, 0), 1)
        self.retry = retry
        self.stopGrace = stopGrace
        self.crashLoopExits = crashLoopExits.map { max(1, $0) }
        self.crashLoopWindow = crashLoopWindow
        self.crashLoopBackoff = crashLoopBackoff
        self.crashLoopCap = crashLoopCap
        self.probeInterval = probeInterval
        self.probeFailures = max(1, probeFailures)
    }
}

/// SplitMix64: a small deterministic generator, so that jitter keeps the machine pure and
/// repeatable (the driver seeds it).
struct JitterSource: Hashable, Sendable {
    var state: UInt64

    /// A fraction in [0, 1).
    mutating func next() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(UInt64(1) << 53)
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
        /// OpenVPN kept exiting: retried after a growing delay.
        case crashLoop
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
    var wanUp = true
    /// Consecutive DNS probe failures.
    var probeFailures = 0
    var probeScheduled = false
    /// OpenVPN exits since the tunnel was last up, within the current crash window.
    var exitsWithoutTunnel = 0
    /// Crash loops since the tunnel was last up (their backoff doubles).
    var crashLoops = 0
    /// OpenVPN is being stopped to start again with a reloaded configuration.
    var restartAfterExit = false
    var jitterSource: JitterSource

    public init(timings: Timings = Timings(), seed: UInt64 = 0) {
        self.timings = timings
        jitterSource = JitterSource(state: seed)
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
            guard state == .tunnelUp else { return [] }
            // OpenVPN reopens its tun device only when it connects again; when the device was
            // deleted from outside it would otherwise go on reading a dead descriptor.
            return degrade("the tunnel interface went down") + (openvpn == .running ? [.reconnectOpenVPN] : [])

        case .openvpnStarted:
            guard openvpn == .starting else { return [] }
            openvpn = .running
            return []

        case .openvpnSpawnFailed(let message):
            guard openvpn == .starting else { return [] }
            openvpn = .stopped
            reason = "OpenVPN could not be started: \(message)"
            return state == .tunnelConnecting ? afterOpenVPNEnded() : []

        case .openvpnExited(let status):
            guard openvpn != .stopped else { return [] }
            openvpn = .stopped
            connected = false
            holdPending = false
            if restartAfterExit, state == .tunnelConnecting {
                // Stopped to start again with a reloaded configuration: no backoff.
                restartAfterExit = false
                return spawn()
            }
            restartAfterExit = false
            switch state {
            case .tunnelUp, .degraded:
                var actions = enter(.tunnelConnecting)
                reason = "OpenVPN \(status)"
                actions += afterOpenVPNEnded()
                return actions
            case .tunnelConnecting:
                reason = "OpenVPN \(status)"
                return afterOpenVPNEnded()
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
                // A new connection: the old one's probe failures say nothing about it.
                probeFailures = 0
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
            guard state == .killswitched, failure == .transient || failure == .crashLoop else { return [] }
            exitsWithoutTunnel = 0
            if addressPresent {
                failure = nil
                return enter(.addressAssigned)
            }
            return [.ensureLANAddress, .scheduleTimer(.retry, after: timings.retry)]

        case .timerFired(.stopDeadline):
            return []

        case .timerFired(.crashWindow):
            exitsWithoutTunnel = 0
            return []

        case .timerFired(.probe):
            probeScheduled = false
            guard let interval = timings.probeInterval, tunnelRunning,
                  state == .tunnelUp || state == .degraded else { return [] }
            probeScheduled = true
            return [.probeTunnel, .scheduleTimer(.probe, after: interval)]

        case .probeSucceeded:
            guard state == .tunnelUp || state == .degraded else { return [] }
            probeFailures = 0
            return connectedAndUp()

        case .probeFailed(let why):
            guard state == .tunnelUp || state == .degraded, tunnelRunning, wanUp else { return [] }
            probeFailures += 1
            guard probeFailures % timings.probeFailures == 0 else { return [] }
            // Every `probeFailures` failures in a row: the tunnel carries nothing; OpenVPN,
            // which may not have noticed, connects again.
            var actions: [Action] = []
            if state == .tunnelUp {
                actions += degrade("the DNS probe failed \(probeFailures) times in a row: \(why)")
            } else {
                reason = "the DNS probe failed \(probeFailures) times in a row: \(why)"
            }
            actions.append(.reconnectOpenVPN)
            return actions

        case .wanLinkDown:
            wanUp = false
            return state == .tunnelUp ? degrade("the WAN link is down") : []

        case .wanLinkUp:
            wanUp = true
            return connectedAndUp()

        case .reloadRequested:
            return configured ? [.reloadConfiguration] : []

        case .reloadRefused:
            return []

        case .configurationReloaded:
            return reloaded()

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
        let delay = jittered(min(timings.respawnCap, timings.respawnBase * (1 << min(respawnAttempt, 20))))
        respawnAttempt += 1
        return [.scheduleTimer(.respawn, after: delay)]
    }

    /// OpenVPN says CONNECTED and tun0 is up.
    private var tunnelRunning: Bool { connected && tunnelLinkUp }

    private mutating func connectedAndUp() -> [Action] {
        guard tunnelRunning, wanUp, probeFailures < timings.probeFailures,
              state == .tunnelConnecting || state == .degraded else { return [] }
        respawnAttempt = 0
        exitsWithoutTunnel = 0
        crashLoops = 0
        probeFailures = 0
        var actions = enter(.tunnelUp)
        if let interval = timings.probeInterval, !probeScheduled {
            probeScheduled = true
            actions.append(.scheduleTimer(.probe, after: interval))
        }
        return actions
    }

    /// OpenVPN exited or could not be started while the tunnel is wanted: respawn after a
    /// backoff, unless this makes a crash loop.
    private mutating func afterOpenVPNEnded() -> [Action] {
        guard let limit = timings.crashLoopExits else { return scheduleRespawn() }
        exitsWithoutTunnel += 1
        if exitsWithoutTunnel >= limit {
            let window = timings.crashLoopWindow
            exitsWithoutTunnel = 0
            let delay = jittered(min(timings.crashLoopCap, timings.crashLoopBackoff * (1 << min(crashLoops, 20))))
            crashLoops += 1
            var actions = killswitch(.crashLoop, "crash loop: OpenVPN ended \(limit) times within \(window) without bringing the tunnel up")
            actions += [.cancelTimer(.crashWindow), .scheduleTimer(.retry, after: delay)]
            return actions
        }
        var actions: [Action] = []
        if exitsWithoutTunnel == 1 { actions.append(.scheduleTimer(.crashWindow, after: timings.crashLoopWindow)) }
        return actions + scheduleRespawn()
    }

    /// New credentials and configuration are in use: whatever held the machine back because of
    /// the old ones is lifted, OpenVPN starts again with the new ones, and the ruleset (endpoints,
    /// DNS, forwards) is committed again.
    private mutating func reloaded() -> [Action] {
        switch state {
        case .initial, .addressAssigned:
            return recommit()
        case .killswitched:
            failure = nil
            exitsWithoutTunnel = 0
            crashLoops = 0
            respawnAttempt = 0
            var actions: [Action] = [.cancelTimer(.retry)]
            if addressPresent, committed == .lockdown {
                actions += enter(.addressAssigned)
            } else {
                actions.append(.ensureLANAddress)
                actions += recommit()
            }
            return actions
        case .tunnelConnecting, .tunnelUp, .degraded:
            respawnAttempt = 0
            exitsWithoutTunnel = 0
            var actions = enter(.tunnelConnecting)
            if actions.isEmpty { actions = recommit() }
            switch openvpn {
            case .stopped:
                actions.append(.cancelTimer(.respawn))
                actions += spawn()
            case .starting, .running:
                restartAfterExit = true
                connected = false
                actions.append(.stopOpenVPN)
            }
            return actions
        }
    }

    private mutating func jittered(_ delay: Duration) -> Duration {
        guard timings.jitter > 0 else { return delay }
        return delay - delay * (timings.jitter * jitterSource.next())
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
