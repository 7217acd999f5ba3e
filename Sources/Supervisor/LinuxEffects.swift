import Actions
import FoundationEssentials
import StateMachine
import SystemSupport
import Watchers

/// The effects on Linux: nftables (Firewall), rtnetlink (AddressConfigurator), the tunnel backend,
/// files, the resolver, the DNS probe and timers. An actor on a thread of its own
/// (`EffectsExecutor`): every blocking call runs there, in the order the interpreter asks, and
/// never on the interpreter's actor. What takes long or may hang (reading the configuration
/// files, resolution, the probe) runs on a thread of its own and posts its outcome to the inbox,
/// so the kill switch and drift repair never wait for it.
public actor LinuxEffects: Effects {
    private let executor: EffectsExecutor
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    let settings: RunSettings
    let log: SupervisorLog
    let inbox: Inbox
    let scope: TaskScope
    let board: StatusBoard
    /// The backend of the configuration's kind: OpenVPN's until a wg-quick file is loaded.
    var backend: any TunnelBackend
    let wireGuard: WireGuardBackend
    let metrics: MetricsLedger?
    let timers: TimerThread<TimerID>
    let addresses = AddressConfigurator()

    private var firewalls: FirewallSession?
    var statusChannel: StatusChannel?
    var metricsResponder: MetricsResponder?
    var netlink: NetlinkWatcher?
    /// The netlink watcher's reports on their way to the inbox.
    let netlinkReports = HeldUntilOpened<NetlinkEvent>()
    /// Where the DNS probes run, and WireGuard's handshake reads: each one after another.
    let probeThread = WorkerThread(name: "vpnsup-probe")
    let peerReadThread = WorkerThread(name: "vpnsup-wg-look")
    /// PORT_FWD_FILE, watched and read again while vpnsup runs (LinuxEffects+Forwards).
    var portForwardFile: PortForwardFileSource?
    /// The credentials read, by token; the machine says which are in use.
    var credentials: [CredentialsToken: Credentials] = [:]
    /// The vetted OpenVPN text read with them (it may hold private keys: never in the machine).
    var vettedTexts: [CredentialsToken: String] = [:]
    var credentialsRead = 0

    public init(settings: RunSettings, log: SupervisorLog, inbox: Inbox, scope: TaskScope, board: StatusBoard,
                backend: any TunnelBackend, wireGuard: WireGuardBackend = WireGuardBackend(),
                metrics: MetricsLedger? = nil) throws {
        self.metrics = metrics
        executor = try EffectsExecutor.start(name: "vpnsup-effects")
        timers = try TimerThread.start(name: "vpnsup-timers") { [inbox] id in inbox.post(.event(.timerFired(id))) }
        self.settings = settings
        self.log = log
        self.inbox = inbox
        self.scope = scope
        self.board = board
        self.backend = backend
        self.wireGuard = wireGuard
    }

    /// One job on the effects' thread for the whole decision: the actions run back to back.
    public func perform(_ actions: [Action], for machine: Machine) async -> [PerformedAction<Event>] {
        await PerformedAction.each(actions) { await perform($0, for: machine) }
    }

    public func perform(_ action: Action, for machine: Machine) async -> [Event] {
        switch action {
        case .applyFirewall(let policy):
            guard let ruleset = machine.ruleset(for: policy) else { return [.firewallFailed(policy, "no configuration")] }
            return commit(ruleset, policy: policy)
        case .openNameResolution:
            guard let ruleset = machine.resolvingRuleset else { return [.nameResolutionFailed("no configuration")] }
            do {
                _ = try firewallSession().commit(ruleset)
                return [.nameResolutionOpened]
            } catch {
                return [.nameResolutionFailed("\(error)")]
            }
        case .verifyFirewall(let policy):
            return verify(policy, ruleset: machine.ruleset(for: policy))
        case .readPortForwardFile:
            portForwardFile?.reread(inbox: inbox)
            return []
        case .applyForwardChanges(let diff):
            return applyForwardChanges(diff, for: machine)
        case .loadConfiguration:
            return startLoading()
        case .reloadConfiguration:
            return startReloading(machine)
        case .resolveNames(let names):
            resolve(names, nameservers: machine.nameservers)
            return []
        case .ensureLANAddress:
            guard let configuration = machine.configuration else { return [.addressFailed("no configuration")] }
            do {
                try addresses.setLinkUp(configuration.lanInterface)
                try addresses.ensureAddress(configuration.gateway, on: configuration.lanInterface)
                return [.lanAddressConfigured]
            } catch {
                return [.addressFailed("\(error)")]
            }
        case .ensurePolicyRouting:
            guard let configuration = machine.configuration else { return [.policyRoutingFailed("no configuration")] }
            do {
                try addresses.ensureUnreachableDefault(table: Configuration.routingTable)
                try addresses.ensureRule(inputInterface: configuration.lanInterface, table: Configuration.routingTable,
                                         priority: Configuration.routingRulePriority)
                if machine.tunnelKind == .wireguard { try ensureRouterTrafficRules() }
                return [.policyRoutingInstalled]
            } catch {
                return [.policyRoutingFailed("\(error)")]
            }
        case .ensureOverlayLink:
            return ensureOverlayLink(machine.configuration)
        case .ensureOverlayRoute:
            return ensureOverlayRoute(machine.configuration)
        case .ensureTunnelRoute:
            do {
                try addresses.ensureDefaultRoute(dev: machine.tunnelInterface, table: Configuration.routingTable)
                return [.tunnelRouteInstalled]
            } catch {
                return [.tunnelRouteFailed("\(error)")]
            }
        case .startTunnel:
            guard var plan = machine.tunnelPlan else { return [.tunnelStartFailed("no configuration")] }
            plan.vettedText = machine.credentials.flatMap { vettedTexts[$0] }
            do {
                let pid = try backend.start(plan)
                log.log(.info, "started \(backend.name)" + (pid.map { " (pid \($0))" } ?? ""))
                return [.tunnelStarted(pid: pid)] + (backend.watchesOutput ? [.tunnelOutputWatched] : [])
            } catch {
                return [.tunnelStartFailed("\(error)")]
            }
        case .watchTunnelState: return send(.watchState, machine)
        case .releaseTunnel: return send(.release, machine)
        case .sendCredentials: return send(.sendCredentials, machine)
        case .reconnectTunnel: return send(.reconnect, machine)
        case .answerRemote(let answer): return send(.answerRemote(answer), machine)
        case .stopTunnel:
            if let pid = machine.tunnelPID { backend.stop(pid: pid) }
            return []
        case .killTunnel:
            if let pid = machine.tunnelPID { backend.kill(pid: pid) }
            return []
        case .readTunnelPeers:
            readTunnelPeers(machine)
            return []
        case .forgetTunnelProcess:
            backend.forgetProcess()
            return []
        case .probeTunnel:
            probe(machine.configuration, server: machine.probeServer, device: machine.tunnelInterface)
            return []
        case .scheduleTimer(let id, let delay):
            timers.schedule(id, after: delay)
            return []
        case .cancelTimer(let id):
            timers.cancel(id)
            return []
        case .exit(let code, let message):
            if let message, code != ExitCode.success { StandardError.writeLine(message) }
            statusChannel?.close()
            metricsResponder?.close()
            backend.close()
            portForwardFile?.stop()
            netlink?.stop()
            firewalls?.stop()
            return []
        }
    }

    // MARK: Firewall

    /// The Firewall, created with its first commit, with the nftables monitor (`FirewallSession`).
    func ensureFirewall() throws -> Firewall {
        try firewallSession().ensure()
    }

    private func firewallSession() -> FirewallSession {
        if let firewalls { return firewalls }
        let created = FirewallSession(log: log, receiver: .calling { [inbox] in inbox.post(.nftables($0)) })
        firewalls = created
        return created
    }

    private func commit(_ ruleset: Ruleset, policy: FirewallPolicy) -> [Event] {
        do {
            let started = ContinuousClock.now
            if let generation = try firewallSession().commit(ruleset) {
                log.log(.info, "the \(policy) ruleset committed at start is unchanged (nftables generation \(generation)): "
                    + "not sent again")
                return [.firewallCommitted(policy)]
            }
            let elapsed = ContinuousClock.now - started
            log.log(.info, "committed the \(policy) ruleset in \(SupervisorRecord.milliseconds(elapsed)) ms")
            return [.firewallCommitted(policy)]
        } catch {
            log.log(LogNote(.error, "the \(policy) ruleset was not committed: \(error)"))
            return [.firewallFailed(policy, "\(error)")]
        }
    }

    private func verify(_ policy: FirewallPolicy, ruleset: Ruleset?) -> [Event] {
        guard let firewall = firewalls?.firewall, let ruleset else { return [] }
        var differences: [String]
        do {
            differences = try firewall.differences(from: ruleset)
        } catch {
            differences = ["it could not be read back (\(error))"]
        }
        guard !differences.isEmpty else { return [.firewallIntact(policy)] }
        return [.firewallTampered("table inet vpnsup: notifications were lost and it no longer matches the \(policy) ruleset: "
            + differences.prefix(3).joined(separator: "; "))]
    }

    // MARK: The tunnel

    private func send(_ command: TunnelCommand, _ machine: Machine) -> [Event] {
        let credentials = command == .sendCredentials ? machine.credentials.flatMap { self.credentials[$0] } : nil
        do {
            if let plan = machine.tunnelPlan {
                try backend.send(command, plan: plan, credentials: credentials)
            } else {
                try backend.send(command, credentials: credentials)
            }
            return []
        } catch {
            return [.tunnelCommandFailed(command, "\(error)")]
        }
    }
}
