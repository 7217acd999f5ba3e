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
