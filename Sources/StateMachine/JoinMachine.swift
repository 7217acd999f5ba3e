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
