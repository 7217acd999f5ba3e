// Configurations as providers publish them (issue 13): what OpenVPN's own output says about the
// configuration (a refusal ends `run` with 78, or kills the switch once exiting is wrong), the
// rounds of connection attempts at the pinned endpoints, and host names resolved again when every
// pinned address failed a full round (providers move their servers).

/// A question the tunnel asked about a remote (OpenVPN's `>REMOTE:host,port,proto`).
public struct RemoteQuestion: Hashable, Sendable {
    public var host: String
    public var port: UInt16?
    public var proto: String

    public init(host: String, port: UInt16?, proto: String) {
        self.host = host
        self.port = port
        self.proto = proto
    }
}

/// One resolution of the remotes' host names, for the status.
public struct NameResolution: Hashable, Sendable {
    public enum Cause: String, Hashable, Sendable {
        /// Before the tunnel first started.
        case startUp = "start-up"
        /// Every pinned address failed to connect for a full round.
        case everyEndpointFailed = "every pinned address failed to connect"
    }

    public var cause: Cause
    public var names: [String]
    /// What each name resolved to this time (a name that did not resolve keeps its old pins).
    public var addresses: [String: [IPv4Address]]
    public var failures: [String: String]
    public var elapsed: Duration
    /// The endpoints pinned afterwards.
    public var endpoints: [Endpoint]

    public init(cause: Cause, names: [String], addresses: [String: [IPv4Address]], failures: [String: String],
                elapsed: Duration, endpoints: [Endpoint]) {
        self.cause = cause
        self.names = names
        self.addresses = addresses
        self.failures = failures
        self.elapsed = elapsed
        self.endpoints = endpoints
    }
}

extension Machine {
    /// What the machine keeps about the provider's configuration, whatever the phase.
    struct ProviderTracking: Hashable, Sendable {
        /// Until the tunnel first connects (or a reload is taken into use), a configuration
        /// OpenVPN refuses ends `run` with 78; afterwards an exit would be wrong.
        var exitOnConfigurationError = true
        var round = AttemptRound()
        var reresolution: Reresolution?
        var lastResolution: NameResolution?
    }

    /// The endpoints handed to the tunnel since it last connected, and whether each attempt failed.
    struct AttemptRound: Hashable, Sendable {
        /// Endpoints whose attempt ended without a connection, in order.
        var failed: [Endpoint] = []
        /// The endpoint of the attempt under way (the last answer).
        var current: Endpoint?

        /// The attempt under way ended without a connection: the tunnel asks for the next remote.
        mutating func attemptFailed() {
            if let current, !failed.contains(current) { failed.append(current) }
            current = nil
        }
    }

    /// The host names resolved again while the tunnel waits for its answer.
    struct Reresolution: Hashable, Sendable {
        enum Step: Hashable, Sendable {
            /// The resolving ruleset is requested.
            case opening
            /// It is committed; the resolver asks.
            case open
            /// The new endpoints are pinned; the ruleset of the policy in force, with them, is
            /// requested (it replaces the resolving ruleset in one transaction).
            case closing
        }

        var names: [String]
        var step: Step
        /// The tunnel's question, answered once the new endpoints are committed.
        var question: RemoteQuestion?
    }

    /// How long the output may stay open after its process ended (a process it left behind).
    static let outputGrace = Duration.seconds(2)

    // MARK: What the outside may read

    /// What the vetting did to the OpenVPN file in use.
    public var openvpnFindings: [OpenVPNConfigFinding] { loaded?.findings ?? [] }

    /// The OpenVPN file's profiles `run` does not use, with why.
    public var skippedRemotes: [RemotePlan.Entry] { loaded?.skippedRemotes ?? [] }

    /// The last resolution of the remotes' host names.
    public var lastResolution: NameResolution? { provider.lastResolution }

    /// The host names being resolved again: OpenVPN's remotes while the tunnel waits for its
    /// answer, or a WireGuard tunnel's peers.
    public var namesBeingReresolved: [String]? { provider.reresolution?.names ?? wireGuardNamesBeingReresolved }

    // MARK: Events

    /// Handles what concerns the provider's configuration before the phase does; nil passes the
    /// event on to the phase.
    mutating func handleProviderEvent(_ event: Event) -> [Action]? {
        switch event {
        case .tunnelOutputWatched:
            guard session != nil else { return [] }
            updateSession { $0.output = .open }
            return []
        case .tunnelProcessExited(let status):
            // The exit is judged with what the output said: wait for its end (the kernel closes
            // the pipe before it reports the exit, but the two reach vpnsup by different threads).
            guard let session, session.output == .open else { return nil }
            guard session.heldExit == nil else { return [] }
            updateSession { $0.heldExit = status }
            return [.scheduleTimer(.tunnelOutput, after: Self.outputGrace)]
        case .tunnelOutputEnded(let error):
            guard let session, session.output == .open else { return [] }
            updateSession { $0.output = .ended(configurationError: error) }
            guard let status = session.heldExit else { return [] }
            return [.cancelTimer(.tunnelOutput)] + handle(.tunnelProcessExited(status))
        case .timerFired(.tunnelOutput):
            guard let session, let status = session.heldExit else { return [] }
            updateSession { $0.output = .ended(configurationError: nil) }
            return handle(.tunnelProcessExited(status))
        case .tunnelConnected:
            if session != nil {
                provider.exitOnConfigurationError = false
                provider.round = AttemptRound()
            }
            return nil
        case .namesResolved(let addresses, let failures, let elapsed):
            if provider.reresolution?.step == .open { return reresolved(addresses, failures, elapsed) }
            if let names = namesBeingResolved, case .initial(let starting) = phase,
               case .resolving(let resolution) = starting.step, resolution.step == .open {
                provider.lastResolution = NameResolution(
                    cause: .startUp, names: names, addresses: addresses, failures: failures, elapsed: elapsed,
                    endpoints: RemotePins(remotes: loaded?.remotes ?? [], resolved: addresses).endpoints)
            }
            return nil
        case .nameResolutionOpened:
            guard var reresolution = provider.reresolution, reresolution.step == .opening else { return nil }
            // The kernel holds the resolving ruleset now, not the policy of the phase.
            committed = nil
            reresolution.step = .open
            provider.reresolution = reresolution
            return [.resolveNames(reresolution.names)]
        case .nameResolutionFailed(let message):
            guard let reresolution = provider.reresolution, reresolution.step == .opening else { return nil }
            // A commit is all or nothing: the policy in force still holds, with the old endpoints.
            provider.reresolution = nil
            provider.lastResolution = NameResolution(
                cause: .everyEndpointFailed, names: reresolution.names, addresses: [:],
                failures: Dictionary(uniqueKeysWithValues: reresolution.names.map { ($0, "the resolving ruleset was not committed: \(message)") }),
                elapsed: .zero, endpoints: pinned?.endpoints ?? [])
            return answer(reresolution.question)
        case .firewallCommitted(let policy):
            guard let reresolution = provider.reresolution, reresolution.step == .closing, policy == requested else { return nil }
            provider.reresolution = nil
            return handleInPhase(event) + answer(reresolution.question)
        case .firewallFailed(let policy, _):
            // The phase kills the switch; the tunnel's question goes with its process.
            if provider.reresolution?.step == .closing, policy == requested { provider.reresolution = nil }
            return nil
        default:
            return nil
        }
    }

    // MARK: The tunnel's questions about its remotes

    /// The answer to `>REMOTE:`. A question after an answer with no connection in between means
    /// that attempt failed; once every pinned endpoint has failed since the tunnel last connected
    /// (a full round), the host names are resolved again before the answer.
    mutating func answerRemote(_ question: RemoteQuestion) -> [Action] {
        guard let pins = pinned else { return [.answerRemote(.skip)] }
        provider.round.attemptFailed()
        if provider.reresolution != nil {
            // A new process asks while the names are resolved: it gets the answer then.
            provider.reresolution?.question = question
            return []
        }
        let names = RemotePins.hostNames(in: pins.remotes)
        let fullRound = !pins.endpoints.isEmpty && pins.endpoints.allSatisfy(provider.round.failed.contains)
        if fullRound, !names.isEmpty, wantsTransport {
            provider.round = AttemptRound()
            provider.reresolution = Reresolution(names: names, step: .opening, question: question)
            return [.openNameResolution]
        }
        return answer(question)
    }

    /// Answers `question` from the pins, noting the endpoint handed out as the attempt under way.
    private mutating func answer(_ question: RemoteQuestion?) -> [Action] {
        guard let question, session != nil, var pins = pinned else { return [] }
        let answer = pins.answer(host: question.host, port: question.port, proto: question.proto)
        pinned = pins
        let transport = OpenVPNProtocol(openVPNName: question.proto)?.transport ?? .udp
        switch answer {
        case .accept:
            provider.round.current = IPv4Address(question.host).map { Endpoint(address: $0, port: question.port ?? 0, transport: transport) }
        case .modify(let address, let port):
            provider.round.current = Endpoint(address: address, port: port, transport: transport)
        case .skip:
            provider.round.current = nil
        }
        return [.answerRemote(answer)]
    }

    /// The phases in which the tunnel is trying to connect, with a policy that lets it out.
    private var wantsTransport: Bool {
        switch phase {
        case .tunnelConnecting, .tunnelUp, .degraded: true
        default: false
        }
    }

    /// The names' new addresses are pinned (a name that did not resolve keeps its old ones), and
    /// the policy in force is committed with them: one transaction replaces the resolving ruleset.
    private mutating func reresolved(_ addresses: [String: [IPv4Address]], _ failures: [String: String],
                                     _ elapsed: Duration) -> [Action] {
        guard var reresolution = provider.reresolution, let pins = pinned else { return [] }
        var merged = pins.resolved
        for (name, found) in addresses where !found.isEmpty { merged[RemotePins.key(name)] = found }
        let repinned = RemotePins(remotes: pins.remotes, resolved: merged)
        pinned = repinned
        provider.lastResolution = NameResolution(cause: .everyEndpointFailed, names: reresolution.names,
                                                 addresses: addresses, failures: failures, elapsed: elapsed,
                                                 endpoints: repinned.endpoints)
        guard let requested else {
            provider.reresolution = nil
            return []
        }
        reresolution.step = .closing
        provider.reresolution = reresolution
        committed = nil
        return [.applyFirewall(requested)]
    }

    // MARK: OpenVPN refused its configuration

    /// OpenVPN stopped on its configuration before it turned to the network. Before the tunnel
    /// first connected (and without a reload), that is `run`'s answer: the lockdown, then exit 78
    /// with the line. Afterwards exiting would be wrong: Killswitched with the line as the reason
    /// until a SIGHUP brings a configuration it accepts. Never a crash-loop retry.
    mutating func configurationRefused(_ error: String, _ status: ExitStatus) -> [Action] {
        let path = configuration?.openvpnConfigPath ?? "?"
        let line = "CONFIG=\(path): \(tunnelName) \(status): \(error)"
        var actions = killswitch(.configuration, line) + [.cancelTimer(.crashWindow)]
        if provider.exitOnConfigurationError {
            actions.append(.exit(code: ExitCode.configuration, message: line))
        }
        return actions
    }
}
