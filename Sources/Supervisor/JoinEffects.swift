import Actions
import FoundationEssentials
import Logging
import StateMachine
import Synchronization
import SystemSupport
import Watchers

/// `vpnsup join`'s effects on Linux: the client kill switch (Firewall), the split DNS forwarder,
/// the gateway's name through the cluster resolver, the overlay link, its neighbour timers and
/// the pod's routes (rtnetlink), timers. Like `LinuxEffects`, an actor on a thread of its own;
/// the name resolution runs on another and posts its outcome.
public actor LinuxJoinEffects: JoinEffects {
    private let executor: EffectsExecutor
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private let values: [String: String]
    private let log: SupervisorLog
    private let inbox: JoinInbox
    private let board: JoinStatusBoard
    private let timers: TimerThread<JoinTimer>
    private var firewalls: FirewallSession?
    private var forwarder: DNSForwarder?
    private let forwarderSlot = ForwarderSlot()
    private var statusChannel: StatusChannel?
    private var netlink: NetlinkWatcher?

    public init(values: [String: String], log: SupervisorLog, inbox: JoinInbox, board: JoinStatusBoard) throws {
        executor = try EffectsExecutor.start(name: "vpnsup-effects")
        timers = try TimerThread.start(name: "vpnsup-timers") { [inbox] id in inbox.post(.event(.timerFired(id))) }
        self.values = values
        self.log = log
        self.inbox = inbox
        self.board = board
    }

    public func perform(_ action: JoinAction, for machine: JoinMachine) async -> [JoinEvent] {
        switch action {
        case .applyFirewall(let policy):
            guard let ruleset = machine.ruleset(for: policy) else { return [.firewallFailed(policy, "no configuration")] }
            do {
                if let generation = try firewallSession().commit(ruleset) {
                    log.log(.info, "the client's \(policy) ruleset committed at start is unchanged (nftables generation \(generation))")
                } else {
                    log.log(.info, "committed the client's \(policy) ruleset")
                }
                return [.firewallCommitted(policy)]
            } catch {
                return [.firewallFailed(policy, "\(error)")]
            }
        case .loadConfiguration:
            return [load()]
        case .startForwarder:
            guard let plan = machine.plan else { return [.forwarderFailed("no configuration")] }
            return startForwarder(plan)
        case .resolveGateway(let name):
            guard let plan = machine.plan else { return [.gatewayResolutionFailed("no configuration")] }
            resolve(name, through: plan.setup.clusterDNS, mark: plan.killSwitch.dns.mark)
            return []
        case .ensureOverlay(let gateway):
            guard let plan = machine.plan else { return [.overlayFailed("no configuration")] }
            return ensureOverlay(plan, towards: gateway)
        case .forgetGatewayNeighbour:
            guard let plan = machine.plan else { return [] }
            do {
                try VxlanRouting.forgetNeighbour(plan.gatewayOverlayAddress, on: plan.configuration.overlayInterface)
            } catch {
                log.log(.warning, "\(error)")
            }
            return []
        case .ensureRoutes:
            guard let plan = machine.plan else { return [.routesFailed("no configuration")] }
            return ensureRoutes(plan)
        case .scheduleTimer(let id, let delay):
            timers.schedule(id, after: delay)
            return []
        case .cancelTimer(let id):
            timers.cancel(id)
            return []
        case .exit(let code, let message):
            if let message, code != ExitCode.success { StandardError.writeLine(message) }
            // The kill switch stays committed: the kernel keeps the table for the pod's life.
            forwarder?.stop()
            statusChannel?.close()
            netlink?.stop()
            firewalls?.stop()
            return []
        }
    }

    private func firewallSession() -> FirewallSession {
        if let firewalls { return firewalls }
        let created = FirewallSession(log: log, receiver: .calling { [inbox] in inbox.post(.nftables($0)) })
        firewalls = created
        return created
    }

    // MARK: Loading

    /// The environment's configuration, then what only the pod can tell: its underlay's address
    /// and, unless CLUSTER_DNS is set, resolv.conf's nameserver. Opens the status socket and the
    /// netlink watcher (neighbours included: the gateway's failures are how a move is noticed).
    private func load() -> JoinEvent {
        let configuration: JoinConfiguration
        do {
            configuration = try JoinConfiguration(values)
        } catch {
            return .configurationRejected(error.description)
        }
        let underlay = configuration.underlayInterface
        guard AddressConfigurator.interfaceExists(underlay) else {
            return .interfaceMissing(variable: "UNDERLAY_IF", name: underlay)
        }
        let podAddress: IPv4Address
        do {
            guard let address = try VxlanRouting.addresses(of: underlay).first?.address else {
                return .configurationRejected("UNDERLAY_IF=\(escapedForDisplay(underlay)) has no IPv4 address: the pod's own address is needed for its overlay address")
            }
            podAddress = address
        } catch {
            return .configurationRejected("UNDERLAY_IF=\(escapedForDisplay(underlay)): \(error)")
        }
        var clusterDNS = configuration.clusterDNS
        let fromResolvConf = clusterDNS == nil
        if clusterDNS == nil {
            let text = (try? TextFile.read(ResolvConf.path).get()) ?? ""
            clusterDNS = ResolvConf.nameservers(in: text).first
        }
        guard let clusterDNS else {
            return .configurationRejected("CLUSTER_DNS= is unset and \(ResolvConf.path) names no nameserver")
        }
        do {
            try RuntimeDirectory.prepare(configuration.runtimeDirectory)
            try openChannels(configuration)
        } catch {
            return .configurationRejected("RUNTIME_DIR=\(escapedForDisplay(configuration.runtimeDirectory)) cannot be prepared: \(error)")
        }
        return .configurationLoaded(JoinSetup(configuration: configuration, clusterDNS: clusterDNS,
                                              clusterDNSFromResolvConf: fromResolvConf, podAddress: podAddress))
    }

    private func openChannels(_ configuration: JoinConfiguration) throws {
        if statusChannel == nil {
            statusChannel = try StatusChannel.listen(at: configuration.runtimeDirectory + "/status.sock") { [board, forwarderSlot] in
                // Read on the status thread through sockets of its own: a status request never
                // waits for the interpreter or the effects.
                let counters = try? Firewall().dropCounters()
                return board.json(dns: forwarderSlot.counts,
                                  blocked: counters?.mapValues { BlockedCount(packets: $0.packets, bytes: $0.bytes) })
            }
        }
        if netlink == nil {
            netlink = try NetlinkWatcher.start(neighbours: true, receiver: .calling { [inbox] in inbox.post(.netlink($0)) })
        }
    }

    // MARK: The forwarder and the gateway's name

    private func startForwarder(_ plan: JoinPlan) -> [JoinEvent] {
        let split = plan.splitDNS
        do {
            let started = try DNSForwarder.start(address: plan.killSwitch.dns.forwarder, mark: plan.killSwitch.dns.mark,
                                                 route: { split.upstreamAddress(forQuery: $0) },
                                                 threads: { name, body in (try? ReaderThread.start(name: name, body)) != nil })
            forwarder = started
            forwarderSlot.set(started)
            log.log(.info, "DNS forwarder on \(plan.killSwitch.dns.forwarder):53: \(split.clusterDomain) and the cluster's "
                + "reverse zones to \(split.clusterResolver), every other name to the gateway \(split.gateway)")
            return [.forwarderStarted]
        } catch {
            return [.forwarderFailed("\(error)")]
        }
    }

    /// Asks the cluster resolver from a marked socket (the kill switch lets only those through),
    /// on a thread of its own; `gatewayResolved` or `gatewayResolutionFailed` follows.
    private func resolve(_ name: String, through server: IPv4Address, mark: UInt32) {
        let resolver = Resolver(nameservers: [server], mark: mark, timeout: .seconds(1), attempts: 2, budget: .seconds(3))
        let work: @Sendable () -> Void = { [inbox] in
            let outcome = resolver.resolve([name])
            if let addresses = outcome.addresses[name] {
                inbox.post(.event(.gatewayResolved(addresses)))
            } else {
                inbox.post(.event(.gatewayResolutionFailed(outcome.failures[name] ?? "no answer")))
            }
        }
        do {
            try ReaderThread.start(name: "vpnsup-resolve", work)
        } catch {
            work()
        }
    }

    // MARK: The overlay and the routes

    private func ensureOverlay(_ plan: JoinPlan, towards gateway: IPv4Address) -> [JoinEvent] {
        let link = plan.link(towards: gateway)
        let parameters = VxlanLink.Parameters(link)
        do {
            let outcome = try VxlanLink.ensure(parameters)
            if outcome != .unchanged { log.log(.info, "overlay link \(outcome): \(parameters)") }
            try VxlanRouting.setNeighbourTimers(.gatewayWatch, on: link.name)
            if let address = link.address { try AddressConfigurator().ensureAddress(address, on: link.name) }
            return [.overlayReady]
        } catch {
            return [.overlayFailed("\(error)")]
        }
    }

    private func ensureRoutes(_ plan: JoinPlan) -> [JoinEvent] {
        let routes = plan.routes
        do {
            let nextHop = try VxlanRouting.nextHop(of: routes.underlay)
            // The cluster's networks first: they never enter the overlay, even for an instant.
            for network in routes.clusterNetworks {
                try VxlanRouting.replaceRoute(network, via: nextHop, dev: routes.underlay)
            }
            try VxlanRouting.replaceRoute(IPv4Network(containing: IPv4Address(0), prefixLength: 0), via: routes.gateway, dev: routes.overlay)
            return [.routesInstalled]
        } catch {
            return [.routesFailed("\(error)")]
        }
    }
}

/// The forwarder once started, for the status socket's thread.
private final class ForwarderSlot: Sendable {
    private let forwarder = Mutex<DNSForwarder?>(nil)

    func set(_ started: DNSForwarder) { forwarder.withLock { $0 = started } }

    var counts: JoinStatus.DNS? {
        forwarder.withLock { $0 }.map { forwarder in
            let counts = forwarder.statistics
            return JoinStatus.DNS(relayed: counts.relayed, unanswered: counts.unanswered, dropped: counts.dropped)
        }
    }
}

/// `vpnsup join` on Linux: the join machine, its interpreter and the Linux effects, put together.
public enum LinuxJoin {
    /// Runs until the machine exits; returns the exit code. `values` are the configuration's
    /// variables (GATEWAY, GATEWAY_ADDR, POD_CIDRS...).
    public static func run(values: [String: String], logger: Logger, signals: HeldUntilOpened<SignalEvent>) async -> Int32 {
        let log = SupervisorLog(logger)
        let inbox = JoinInbox()
        let now = StatusBoard.timestamp(Date())
        let board = JoinStatusBoard(JoinStatus(since: now, pid: ProcessIdentity.current, startedAt: now))
        let effects: LinuxJoinEffects
        do {
            effects = try LinuxJoinEffects(values: values, log: log, inbox: inbox, board: board)
        } catch {
            StandardError.writeLine("cannot start the effects thread: \(error)")
            return ExitCode.unavailable
        }
        let driver = JoinDriver(machine: JoinMachine(), effects: effects, inbox: inbox, log: log, board: board)
        signals.open { [inbox] in inbox.post(.signal($0)) }
        return await driver.run()
    }
}
