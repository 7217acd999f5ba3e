import Logging
import StateMachine
import Supervisor
import Synchronization
import Watchers

/// The effects seam's fake: records every action with the machine that decided it, and answers
/// as the kernel and OpenVPN would when all goes well, unless a test scripts otherwise. Outcomes
/// that come later on Linux (timers, probes, resolution) are the test's to deliver, as inputs.
actor RecordingEffects: Effects {
    struct Performed: Sendable {
        var action: Action
        var machine: Machine
    }

    private(set) var performed: [Performed] = []
    /// What `loadConfiguration` reports.
    var loadResult: Event
    /// What `reloadConfiguration` reports.
    var reloadResult: Event = .reloadRefused("no reload scripted")
    /// Whether loading and reloading report later, as LinuxEffects does (it reads the files off
    /// the interpreter and the effects): the test then posts the outcome when it likes.
    var loadReportsLater = false
    var reloadReportsLater = false
    /// Policies whose commit fails, with the error.
    var failingCommits: [FirewallPolicy: String] = [:]
    /// Control commands that cannot be sent.
    var failingCommands: Set<TunnelCommand> = []
    /// What reading the table back finds.
    var verifyResult: (FirewallPolicy) -> Event = { .firewallIntact($0) }
    /// Why the next forward map changes fail, if they do.
    var failingForwardChanges: String?
    /// As the OpenVPN backend: the tunnel's output is read, its end reported by the test.
    var watchesOutput = false
    private var nextPID: Int32 = 100
    private let log: SupervisorLog

    init(load: Event, log: SupervisorLog) {
        loadResult = load
        self.log = log
    }

    func script(reload: Event) { reloadResult = reload }
    func script(loadReportsLater: Bool = true, reloadReportsLater: Bool = true) {
        self.loadReportsLater = loadReportsLater
        self.reloadReportsLater = reloadReportsLater
    }
    func script(failingCommit policy: FirewallPolicy, _ message: String) { failingCommits[policy] = message }
    func script(failing command: TunnelCommand) { failingCommands.insert(command) }
    func script(verify: @escaping @Sendable (FirewallPolicy) -> Event) { verifyResult = verify }
    func script(failingForwardChanges message: String?) { failingForwardChanges = message }
    func scriptWatchingOutput() { watchesOutput = true }

    var actions: [Action] { performed.map(\.action) }
    /// The actions as the interpreter handed them over: one decision's at a time.
    private(set) var handOvers: [[Action]] = []

    func perform(_ actions: [Action], for machine: Machine) async -> [PerformedAction<Event>] {
        handOvers.append(actions)
        var outcomes: [PerformedAction<Event>] = []
        for action in actions {
            outcomes.append(PerformedAction(results: await perform(action, for: machine), elapsed: .zero))
        }
        return outcomes
    }

    func perform(_ action: Action, for machine: Machine) async -> [Event] {
        performed.append(Performed(action: action, machine: machine))
        switch action {
        case .applyFirewall(let policy):
            if let message = failingCommits[policy] { return [.firewallFailed(policy, message)] }
            // As LinuxEffects does: the line waits until the configuration is judged.
            log.log(.info, "committed the \(policy) ruleset")
            return [.firewallCommitted(policy)]
        case .openNameResolution: return [.nameResolutionOpened]
        case .loadConfiguration: return loadReportsLater ? [] : [loadResult]
        case .reloadConfiguration: return reloadReportsLater ? [] : [reloadResult]
        case .ensureLANAddress: return [.lanAddressConfigured]
        case .ensurePolicyRouting: return [.policyRoutingInstalled]
        case .ensureTunnelRoute: return [.tunnelRouteInstalled]
        case .ensureOverlayLink: return [.overlayLinkReady]
        case .ensureOverlayRoute: return [.overlayRouteInstalled]
        case .verifyFirewall(let policy): return [verifyResult(policy)]
        case .startTunnel:
            nextPID += 1
            return [.tunnelStarted(pid: nextPID - 1)] + (watchesOutput ? [.tunnelOutputWatched] : [])
        case .watchTunnelState: return sent(.watchState)
        case .releaseTunnel: return sent(.release)
        case .sendCredentials: return sent(.sendCredentials)
        case .reconnectTunnel: return sent(.reconnect)
        case .answerRemote(let answer): return sent(.answerRemote(answer))
        case .applyForwardChanges(let diff):
            if let message = failingForwardChanges { return [.forwardChangesFailed(diff, message)] }
            return [.forwardChangesApplied(diff)]
        case .resolveNames, .probeTunnel, .stopTunnel, .killTunnel, .forgetTunnelProcess, .scheduleTimer, .cancelTimer, .exit,
             .readPortForwardFile, .readTunnelPeers:
            // Later on Linux: the test delivers the outcome (`portForwardsRead`, the peers read).
            return []
        }
    }

    private func sent(_ command: TunnelCommand) -> [Event] {
        failingCommands.contains(command) ? [.tunnelCommandFailed(command, "OpenVPN is not connected to the management socket")] : []
    }
}

/// systemd's side, recorded.
final class RecordingNotifier: ServiceNotifying {
    private let messages = Mutex<[String]>([])
    var sent: [String] { messages.withLock { $0 } }
    func ready() { messages.withLock { $0.append("READY=1") } }
    func status(_ text: String) { messages.withLock { $0.append("STATUS=\(text)") } }
    func stopping() { messages.withLock { $0.append("STOPPING=1") } }
    func watchdog() { messages.withLock { $0.append("WATCHDOG=1") } }
}

/// The log, recorded line by line.
final class RecordingLog: Sendable {
    private let lines = Mutex<[String]>([])
    var written: [String] { lines.withLock { $0 } }

    func logger() -> Logger {
        Logger(label: "vpnsup") { _ in Handler(log: self) }
    }

    fileprivate func append(_ line: String) { lines.withLock { $0.append(line) } }

    private struct Handler: LogHandler {
        let log: RecordingLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            log.append("\(event.level) \(event.message)")
        }
    }
}
