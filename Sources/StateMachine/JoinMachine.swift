/// `vpnsup join`'s states (a client pod's sidecar, docs/kubernetes.md). Their names are part of
/// the interface: `vpnsup status` prints them, and `vpnsup health` passes in `Joined` only.
public enum JoinState: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// The lockdown is requested and the configuration read.
    case initial = "Init"
    /// The kill switch is committed; the gateway is being found and the overlay built to it.
    case locating = "Locating"
    /// The overlay points at the gateway's pod and the pod's routes lead into it.
    case joined = "Joined"
    /// The kernel reported the gateway unreachable on the overlay: the name is asked again and
    /// the overlay re-pointed if the answer changed. The kill switch holds meanwhile.
    case following = "Following"
    /// SIGTERM: exiting; the kill switch stays committed for the rest of the pod's life.
    case stopping = "Stopping"

    public var description: String { rawValue }
}

/// What the client pod's table `inet vpnsup` holds.
public enum JoinPolicy: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// Loopback only: committed before the configuration is read, and kept when it is bad.
    case lockdown
    /// `ClientKillSwitch`: cluster networks by the underlay, everything else only by the overlay.
    case killSwitch

    public var description: String { rawValue }
}

public enum JoinTimer: String, Hashable, Sendable, CaseIterable {
    /// Try again to find the gateway, or to build the overlay or the routes, after a failure.
    case retry
}

public enum JoinEvent: Hashable, Sendable {
    case start
    /// The configuration was read (the loader's result for `loadConfiguration`).
    case configurationLoaded(JoinSetup)
    /// The configuration is unusable: one line naming the variable and its value.
    case configurationRejected(String)
    /// UNDERLAY_IF names no interface in this network namespace.
    case interfaceMissing(variable: String, name: String)

    case firewallCommitted(JoinPolicy)
    case firewallFailed(JoinPolicy, String)
    /// Someone else changed table `inet vpnsup` (or notifications about it were lost).
    case firewallTampered(String)

    /// The split DNS forwarder listens on 127.0.0.1:53.
    case forwarderStarted
    case forwarderFailed(String)

    /// GATEWAY's addresses, as the cluster resolver answered.
    case gatewayResolved([IPv4Address])
    case gatewayResolutionFailed(String)

    /// The overlay link exists as planned, up, with the pod's overlay address, pointing at the
    /// gateway asked for (`ensureOverlay`'s result).
    case overlayReady
    case overlayFailed(String)
    /// The cluster routes and the default route into the overlay are in place.
    case routesInstalled
    case routesFailed(String)

    /// netlink: the overlay link was removed or set down.
    case overlayLinkLost
    /// netlink: the pod's overlay address left the link.
    case overlayAddressMissing
    /// netlink: a route of the pod's (a cluster network, the default into the overlay) was removed.
    case overlayRouteMissing
    /// netlink: the gateway's overlay address is FAILED in the overlay's neighbour table (the
    /// kernel probed it and nobody answered: the gateway pod is gone or moved).
    case gatewayUnreachable
    /// netlink: the gateway's overlay address is REACHABLE (the kernel has it confirmed).
    case gatewayReachable

    case timerFired(JoinTimer)
    case shutdownRequested
}

public enum JoinAction: Hashable, Sendable {
    case applyFirewall(JoinPolicy)
    /// Read the configuration, the pod's address and resolver; reported as `configurationLoaded`,
    /// `configurationRejected` or `interfaceMissing`.
    case loadConfiguration
    /// Start the split DNS forwarder (`JoinPlan.splitDNS`) on 127.0.0.1:53, its upstream sockets
    /// marked; reported as `forwarderStarted` / `forwarderFailed`.
    case startForwarder
    /// Ask the cluster resolver for GATEWAY's addresses from a marked socket; reported later as
    /// `gatewayResolved` / `gatewayResolutionFailed`.
    case resolveGateway(String)
    /// Create (or repair, or re-point in place) the overlay link towards the gateway's pod at this
    /// address, with the pod's overlay address and short neighbour timers; reported as
    /// `overlayReady` / `overlayFailed`.
    case ensureOverlay(IPv4Address)
    /// Forget the gateway's overlay address in the neighbour table: the next packet asks again,
    /// which is how a new gateway learns where this pod is.
    case forgetGatewayNeighbour
    /// `JoinPlan.routes`; reported as `routesInstalled` / `routesFailed`.
    case ensureRoutes
    case scheduleTimer(JoinTimer, after: Duration)
    case cancelTimer(JoinTimer)
    case exit(code: Int32, message: String?)
}

public struct JoinTimings: Hashable, Sendable {
    /// The first retry after a failure to find the gateway or build the overlay; it doubles up to `retryCap`.
    public var retryBase: Duration
    public var retryCap: Duration

    public init(retryBase: Duration = .seconds(1), retryCap: Duration = .seconds(10)) {
        self.retryBase = retryBase
        self.retryCap = retryCap
    }
}

/// The sidecar's logic: events in, actions out, pure like `Machine`. The kill switch first
/// (the lockdown before the configuration is read, then `ClientKillSwitch` for the pod's whole
/// life), then the forwarder, the gateway's address, the overlay and the routes; afterwards it
/// repairs what netlink reports missing and follows the gateway when the kernel reports it
/// unreachable: the name asked again, the link re-pointed in place when the answer changed.
public struct JoinMachine: Hashable, Sendable {
    enum Phase: Hashable, Sendable {
        case initial(started: Bool, lockdownFailure: String?)
        case locating
        case joined
        case following
        case stopping
    }

    let timings: JoinTimings
    var phase: Phase = .initial(started: false, lockdownFailure: nil)
    public internal(set) var reason: String?
    var requested: JoinPolicy?
    var committed: JoinPolicy?
    /// The configuration as judged; nil until then.
    public internal(set) var plan: JoinPlan?
    /// Where the overlay points (or is being pointed): the gateway's pod IP.
    public internal(set) var gateway: IPv4Address?
    /// The kill switch was committed: what follows it may begin (the forwarder is asked for
    /// then, once: it lives as long as the process).
    var armed = false
    /// A name resolution is in flight: failures meanwhile do not ask again.
    var resolving = false
    var retryPending = false
    var retries = 0

    public init(timings: JoinTimings = JoinTimings()) {
        self.timings = timings
    }

    public var state: JoinState {
        switch phase {
        case .initial: .initial
        case .locating: .locating
        case .joined: .joined
        case .following: .following
        case .stopping: .stopping
        }
    }

    public var requestedPolicy: JoinPolicy? { requested }
    public var committedPolicy: JoinPolicy? { committed }
    public var isConfigured: Bool { plan != nil }

    /// The ruleset `policy` stands for; nil for the kill switch before the configuration is judged.
    public func ruleset(for policy: JoinPolicy) -> Ruleset? {
        switch policy {
        case .lockdown: .lockdown
        case .killSwitch: plan?.killSwitch.ruleset
        }
    }

    public mutating func handle(_ event: JoinEvent) -> [JoinAction] {
        if case .shutdownRequested = event { return shutDown() }
        switch phase {
        case .initial(let started, let lockdownFailure): return handleInitial(event, started: started, lockdownFailure: lockdownFailure)
        case .locating: return handleLocating(event)
        case .joined, .following: return handleJoined(event)
        case .stopping: return []
        }
    }

    // MARK: Phases

    private mutating func handleInitial(_ event: JoinEvent, started: Bool, lockdownFailure: String?) -> [JoinAction] {
        guard started else {
            guard case .start = event else { return [] }
            phase = .initial(started: true, lockdownFailure: nil)
            requested = .lockdown
            return [.applyFirewall(.lockdown), .loadConfiguration]
        }
        switch event {
        case .firewallCommitted(let policy):
            if policy == requested { committed = policy }
            return []
        case .firewallFailed(let policy, let message):
            guard policy == requested else { return [] }
            // Remembered: the configuration decides between 78 and 71.
            phase = .initial(started: true, lockdownFailure: message)
            return []
        case .configurationRejected(let message):
            return [.exit(code: ExitCode.configuration, message: message)]
        case .interfaceMissing(let variable, let name):
            return [.exit(code: ExitCode.configuration, message: "\(variable)=\(name) names no interface in this network namespace")]
        case .configurationLoaded(let setup):
            let plan: JoinPlan
            do {
                plan = try JoinPlan(setup)
            } catch {
                return [.exit(code: ExitCode.configuration, message: error.description)]
            }
            if let lockdownFailure {
                return [.exit(code: ExitCode.unavailable, message: "cannot commit the lockdown ruleset: \(lockdownFailure)")]
            }
            self.plan = plan
            phase = .locating
            requested = .killSwitch
            return [.applyFirewall(.killSwitch)]
        case .firewallTampered:
            return recommit()
        default:
            return []
        }
    }

    private mutating func handleLocating(_ event: JoinEvent) -> [JoinAction] {
        switch event {
        case .firewallCommitted(let policy):
            guard policy == requested else { return [] }
            committed = policy
            // A repair's commit starts nothing.
            guard !armed else { return [] }
            armed = true
            return [.startForwarder] + locate()
        default:
            break
        }
        // Nothing but the kill switch before the kill switch.
        guard armed else {
            switch event {
            case .firewallFailed, .firewallTampered: return handleAlways(event)
            default: return []
            }
        }
        switch event {
        case .gatewayResolved(let addresses):
            resolving = false
            guard let address = choose(addresses) else { return retry() }
            gateway = address
            return [.ensureOverlay(address)]
        case .gatewayResolutionFailed(let message):
            resolving = false
            reason = "\(gatewayName) did not resolve: \(message)"
            return retry()
        case .overlayReady:
            return gateway == nil ? [] : [.ensureRoutes]
        case .routesInstalled:
            guard gateway != nil else { return [] }
            phase = .joined
            reason = nil
            retries = 0
            return cancelRetry()
        case .timerFired(.retry):
            guard retryPending else { return [] }
            retryPending = false
            if let gateway { return [.ensureOverlay(gateway)] }
            return locate()
        default:
            return handleAlways(event)
        }
    }

    private mutating func handleJoined(_ event: JoinEvent) -> [JoinAction] {
        guard let gateway else { return handleAlways(event) }
        switch event {
        case .firewallCommitted(let policy):
            if policy == requested { committed = policy }
            return []
        case .overlayLinkLost, .overlayAddressMissing:
            return [.ensureOverlay(gateway)]
        case .overlayReady, .overlayRouteMissing:
            return [.ensureRoutes]
        case .routesInstalled:
            retries = 0
            return []
        case .gatewayUnreachable:
            phase = .following
            reason = "the gateway \(gateway) does not answer on the overlay"
            guard case .name(let name) = plan?.configuration.gateway, !resolving else { return [] }
            resolving = true
            return [.resolveGateway(name)]
        case .gatewayReachable:
            guard case .following = phase else { return [] }
            phase = .joined
            reason = nil
            return []
        case .gatewayResolved(let addresses):
            resolving = false
            guard let address = choose(addresses) else { return [] }
            guard address != gateway else { return [] }
            // Re-pointed in place: the kernel adds the new destination before it drops the old.
            self.gateway = address
            phase = .joined
            reason = nil
            return [.ensureOverlay(address), .forgetGatewayNeighbour]
        case .gatewayResolutionFailed(let message):
            resolving = false
            reason = "\(gatewayName) did not resolve: \(message)"
            return []
        case .timerFired(.retry):
            guard retryPending else { return [] }
            retryPending = false
            return [.ensureOverlay(gateway)]
        default:
            return handleAlways(event)
        }
    }

    /// What every phase after the configuration answers alike.
    private mutating func handleAlways(_ event: JoinEvent) -> [JoinAction] {
        switch event {
        case .firewallFailed(let policy, let message):
            guard policy == requested else { return [] }
            // The kernel keeps what it held (a commit is all or nothing): the lockdown, or the
            // kill switch when a repair failed. Either way the pod cannot be trusted to the
            // sidecar any longer; its restart starts over from the lockdown.
            return [.exit(code: ExitCode.unavailable, message: "cannot commit the client kill switch: \(message)")]
        case .firewallTampered:
            return recommit()
        case .forwarderFailed(let message):
            return [.exit(code: ExitCode.unavailable, message: "cannot run the pod's DNS forwarder: \(message)")]
        case .overlayFailed(let message):
            reason = "the overlay link could not be set up: \(message)"
            return retry()
        case .routesFailed(let message):
            reason = "the pod's routes could not be set: \(message)"
            return retry()
        default:
            return []
        }
    }

    // MARK: Steps

    private var gatewayName: String { "GATEWAY=\(plan?.configuration.gateway.description ?? "")" }

    /// Finds the gateway: a literal address at once, a name through the cluster resolver.
    private mutating func locate() -> [JoinAction] {
        guard let plan else { return [] }
        switch plan.configuration.gateway {
        case .address(let address):
            gateway = address
            return [.ensureOverlay(address)]
        case .name(let name):
            resolving = true
            return [.resolveGateway(name)]
        }
    }

    /// The first answer the overlay may be carried to; the reason says why there is none.
    private mutating func choose(_ addresses: [IPv4Address]) -> IPv4Address? {
        guard let configuration = plan?.configuration else { return nil }
        if let address = addresses.first(where: { configuration.refusal(ofGatewayAddress: $0) == nil }) { return address }
        reason = addresses.first.flatMap(configuration.refusal(ofGatewayAddress:)) ?? "\(gatewayName) has no IPv4 address"
        return nil
    }

    private mutating func retry() -> [JoinAction] {
        guard !retryPending else { return [] }
        retryPending = true
        let delay = min(timings.retryCap, timings.retryBase * (1 << min(retries, 20)))
        retries += 1
        return [.scheduleTimer(.retry, after: delay)]
    }

    private mutating func cancelRetry() -> [JoinAction] {
        guard retryPending else { return [] }
        retryPending = false
        return [.cancelTimer(.retry)]
    }

    private mutating func recommit() -> [JoinAction] {
        guard let requested else { return [] }
        committed = nil
        return [.applyFirewall(requested)]
    }

    private mutating func shutDown() -> [JoinAction] {
        if case .stopping = phase { return [] }
        let timer = retryPending ? [JoinAction.cancelTimer(.retry)] : []
        retryPending = false
        phase = .stopping
        reason = "shutting down"
        return timer + [.exit(code: ExitCode.success, message: nil)]
    }
}

extension JoinEvent {
    /// A short name for logs, the status and the documentation.
    public var label: String {
        switch self {
        case .start: "start"
        case .configurationLoaded: "configurationLoaded"
        case .configurationRejected: "configurationRejected"
        case .interfaceMissing(let variable, _): "interfaceMissing(\(variable))"
        case .firewallCommitted(let policy): "firewallCommitted(\(policy))"
        case .firewallFailed(let policy, _): "firewallFailed(\(policy))"
        case .firewallTampered: "firewallTampered"
        case .forwarderStarted: "forwarderStarted"
        case .forwarderFailed: "forwarderFailed"
        case .gatewayResolved(let addresses): "gatewayResolved(\(addresses.map(\.description).joined(separator: " ")))"
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
        case .timerFired(let timer): "timerFired(\(timer.rawValue))"
        case .shutdownRequested: "shutdownRequested"
        }
    }
}

extension JoinAction {
    /// A short name for logs and the documentation.
    public var label: String {
        switch self {
        case .applyFirewall(let policy): "applyFirewall(\(policy))"
        case .loadConfiguration: "loadConfiguration"
        case .startForwarder: "startForwarder"
        case .resolveGateway(let name): "resolveGateway(\(name))"
        case .ensureOverlay(let address): "ensureOverlay(\(address))"
        case .forgetGatewayNeighbour: "forgetGatewayNeighbour"
        case .ensureRoutes: "ensureRoutes"
        case .scheduleTimer(let timer, let after): "scheduleTimer(\(timer.rawValue), \(Action.label(after)))"
        case .cancelTimer(let timer): "cancelTimer(\(timer.rawValue))"
        case .exit(let code, let message): message == nil ? "exit(\(code))" : "exit(\(code), message)"
        }
    }
}
