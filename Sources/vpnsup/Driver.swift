import Actions
import FoundationEssentials
import Logging
import StateMachine
import Watchers

/// Everything `vpnsup run` was given, before validation.
struct RunSettings: Sendable {
    /// Configuration values keyed by their environment names (flags already merged in).
    var values: [String: String]
    /// Passed to OpenVPN after vpnsup's own options.
    var openvpnArguments: [String]
    var openvpnExecutable = "openvpn"
    var timings = Timings()
}

/// Owns the state machine: merges every watcher's events, runs the actions the machine returns,
/// and feeds their results back as events. Actions run one at a time, in order.
actor Driver {
    private var machine: Machine
    private let settings: RunSettings
    private let logger: Logger
    private let status: StatusBoard
    private let notifier = ServiceNotifier()
    /// READY=1 goes out once, when the tunnel first comes up.
    private var readySent = false
    /// Sends WATCHDOG=1 through the actor: a wedged driver stops the pings.
    private var watchdogTask: Task<Void, Never>?

    private var firewall: Firewall?
    private var firewallUnavailable: String?
    private var configuration: Configuration?
    private var deferredLog: Logger.Message?
    private var endpoints: [Endpoint] = []
    /// The remotes with their resolved addresses: answers OpenVPN's `>REMOTE:` queries.
    private var pins = RemotePins(remotes: [])
    /// The resolving ruleset is committed: name resolution is open until the lockdown is back.
    private var resolutionOpen = false
    /// The policy the kernel holds, as far as this process committed it.
    private var committedPolicy: FirewallPolicy?
    private var credentials: Credentials?
    private let addresses = AddressConfigurator()

    private var management: ManagementChannel?
    /// STATUS_GROUP resolved to its id at start-up (nil: the status socket is root's only).
    private var statusGroupID: UInt32?
    private var statusChannel: StatusChannel?
    private var netlink: NetlinkWatcher?
    private var nftables: NftablesMonitor?
    /// The outside change being repaired while its `firewallTampered` event is handled.
    private var repairing: String?
    private var repairs = 0
    /// Lines logged before the configuration is judged wait for it (see `log`).
    private var deferredLogs: [(Logger.Level, Logger.Message)] = []
    private var openvpnPID: Int32?
    /// As netlink last reported the WAN link (for the log).
    private var wanUp = true
    private var reconnects = 0
    private var reloads = 0
    private var probeFailures = 0
    private var timers: [TimerID: Task<Void, Never>] = [:]
    private var watcherTasks: [Task<Void, Never>] = []

    private var queue: [Event] = []
    private var draining = false
    private var exited: CheckedContinuation<Int32, Never>?

    init(settings: RunSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
        var timings = settings.timings
        // The machine exists before the configuration is judged; a bad one never gets this far.
        if let probe = (try? Configuration(settings.values))?.probe, let interval = probe.effectiveInterval {
            timings.probeInterval = interval
            timings.probeFailures = probe.failures
        }
        machine = Machine(timings: timings, seed: UInt64.random(in: .min ... .max))
        status = StatusBoard(startedAt: Date())
    }

    /// Runs until the machine asks to exit; returns the exit code. The first thing it does is
    /// commit the lockdown, before the configuration is read.
    func run(signals: SignalWatcher) async -> Int32 {
        watcherTasks.append(Task { [weak self] in
            for await signal in signals.events { await self?.received(signal) }
        })
        notifier.status("\(machine.state)")
        startWatchdog()
        return await withCheckedContinuation { continuation in
            exited = continuation
            feed(.start)
        }
    }

    // MARK: Events

    func feed(_ event: Event) {
        queue.append(event)
        guard !draining else { return }
        draining = true
        defer { draining = false }
        while !queue.isEmpty {
            let next = queue.removeFirst()
            let before = machine.state
            let actions = machine.handle(next)
            if machine.state != before {
                transitioned(from: before, to: machine.state, cause: next)
            }
            for action in actions {
                if let result = perform(action) { queue.append(result) }
                if exited == nil { return }
            }
        }
    }

    private func transitioned(from: State, to: State, cause: Event) {
        let reason = machine.reason.map { " (\($0))" } ?? ""
        logger.notice("\(from) -> \(to) on \(cause.label)\(reason)",
                      metadata: ["from": "\(from)", "to": "\(to)", "event": "\(cause.label)"])
        status.transition(from: from, to: to, cause: cause.label, reason: machine.reason)
        notifier.status("\(to)\(reason)")
        if to == .tunnelUp && !readySent {
            readySent = true
            notifier.ready()
        }
    }

    /// A timer, not a check of state: every half interval the task calls into the actor, which
    /// pings only when it gets to run.
    private func startWatchdog() {
        guard let interval = ServiceNotifier.watchdogInterval() else { return }
        log(.info, "systemd watchdog: WATCHDOG=1 every \(Self.milliseconds(interval / 2)) ms")
        watchdogTask = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval / 2)
                guard !Task.isCancelled, let self else { return }
                await self.watchdogTick()
            }
        }
    }

    private func watchdogTick() {
        guard exited != nil else { return }
        notifier.watchdog()
    }

    private func received(_ signal: SignalEvent) {
        switch signal {
        case .terminate(let number):
            logger.notice("signal \(number): shutting down")
            feed(.shutdownRequested)
        case .reload:
            logger.notice("SIGHUP: reloading the credentials and the OpenVPN configuration")
            feed(.reloadRequested)
        case .childExited(let pid, let exitStatus):
            if pid == openvpnPID {
                openvpnPID = nil
                status.update { $0.openvpnPID = nil }
                logger.notice("OpenVPN (pid \(pid)) \(exitStatus)")
                feed(.openvpnExited(exitStatus))
            } else {
                logger.debug("reaped pid \(pid): \(exitStatus)")
            }
        }
    }

    private func received(_ event: NetlinkEvent) {
        guard let configuration else { return }
        switch event {
        case .address(let interface, _, let address, let added) where interface == configuration.lanInterface
            && address.address == configuration.gateway.address:
            feed(added ? .lanAddressPresent : .lanAddressMissing)
        case .link(let name, _, let up) where name == Configuration.tunnelInterface:
            // The kernel dropped the table's tunnel route when tun0 went down or away.
            if up { ensureTunnelRoute(quietIfDown: false) }
            feed(up ? .tunnelLinkUp : .tunnelLinkDown)
        case .linkRemoved(let name, _) where name == Configuration.tunnelInterface:
            feed(.tunnelLinkDown)
        case .link(let name, _, let up) where name == configuration.wanInterface:
            if up != wanUp {
                wanUp = up
                logger.notice("WAN \(name) is \(up ? "up" : "down")")
            }
            feed(up ? .wanLinkUp : .wanLinkDown)
        case .linkRemoved(let name, _) where name == configuration.wanInterface:
            wanUp = false
            logger.notice("WAN \(name) was removed")
            feed(.wanLinkDown)
        default:
            break
        }
    }

    private func received(_ event: ManagementChannelEvent) {
        switch event {
        case .connected:
            feed(.managementConnected)
        case .disconnected:
            logger.info("OpenVPN's management connection closed")
        case .refusedPeer(let peer, let reason):
            logger.warning("management socket: refused a connection from \(peer): \(reason)")
        case .message(let message):
            received(message)
        }
    }

    private func received(_ message: ManagementMessage) {
        switch message {
        case .hold:
            feed(.openvpnHold)
        case .passwordNeeded(let type) where type == "Auth":
            feed(.credentialsRequested)
        case .passwordNeeded(let type):
            logger.error("OpenVPN asks for a '\(type)' password, which vpnsup does not hold")
        case .passwordVerificationFailed:
            feed(.credentialsRejected)
        case .state(let record):
            status.update {
                $0.openvpnState = record.state.name
                if record.state == .connected {
                    $0.tunnelAddress = record.tunnelIPv4.isEmpty ? nil : record.tunnelIPv4
                    $0.remote = record.remoteAddress.isEmpty ? nil : "\(record.remoteAddress):\(record.remotePort)"
                }
            }
            logger.info("OpenVPN state \(record.state.name) \(record.detail)")
            feed(.openvpnState(record.state))
        case .remote(let host, let port, let proto):
            // Answered here: a query about the pinned endpoints, not a change of state.
            let answer = pins.answer(host: host, port: port, proto: proto)
            logger.info("OpenVPN asks for remote \(host) \(port.map(String.init) ?? "?") \(proto): \(answer.command)")
            _ = sendManagement(answer.command)
        case .byteCount:
            break // never asked for: the status reads tun0's counters from the kernel instead
        case .fatal(let text):
            logger.error("OpenVPN fatal: \(text)")
            feed(.openvpnFatal(text))
        case .error(let text):
            logger.warning("OpenVPN management error: \(text)")
        case .malformed(let text):
            logger.warning("unparseable management line: \(text.prefix(200))")
        default:
            logger.trace("management: \(message)")
        }
    }

    // MARK: Actions

    /// Runs one action; returns the event that reports its outcome, if any.
    private func perform(_ action: Action) -> Event? {
        switch action {
        case .applyFirewall(let policy):
            return applyFirewall(policy)
        case .loadConfiguration:
            return loadConfiguration()
        case .ensureLANAddress:
            guard let configuration else { return .addressFailed("no configuration") }
            do {
                try addresses.setLinkUp(configuration.lanInterface)
                try addresses.ensureAddress(configuration.gateway, on: configuration.lanInterface)
            } catch {
                return .addressFailed("\(error)")
            }
            ensurePolicyRouting(configuration)
            return nil // netlink confirms
        case .spawnOpenVPN:
            return spawnOpenVPN()
        case .requestStateNotifications:
            return sendManagement("state on all")
        case .reconnectOpenVPN:
            reconnects += 1
            status.update { $0.reconnects = reconnects }
            logger.notice("asking OpenVPN to reconnect (signal SIGUSR1, reconnect \(reconnects))")
            return sendManagement("signal SIGUSR1")
        case .probeTunnel:
            guard let configuration, let server = configuration.probe.server else { return nil }
            let probe = TunnelProbe(server: server, name: configuration.probe.name,
                                    device: Configuration.tunnelInterface, timeout: configuration.probe.timeout)
            Task { [weak self] in
                let failure = await probe.runOnOwnThread()
                await self?.probed(failure)
            }
            return nil
        case .reloadConfiguration:
            return reloadConfiguration()
        case .releaseHold:
            return sendManagement("hold release")
        case .sendCredentials:
            guard let credentials,
                  let user = managementQuoted(credentials.username),
                  let password = managementQuoted(credentials.password) else {
                return .openvpnFatal("credentials cannot be sent")
            }
            return sendManagement("username \"Auth\" \(user)") ?? sendManagement("password \"Auth\" \(password)")
        case .stopOpenVPN:
            if let openvpnPID { Spawner.terminate(pid: openvpnPID) }
            return nil
        case .killOpenVPN:
            if let openvpnPID { Spawner.kill(pid: openvpnPID) }
            return nil
        case .scheduleTimer(let id, let delay):
            timers[id]?.cancel()
            timers[id] = Task { [weak self] in
                try? await Task.sleep(for: delay)
                guard !Task.isCancelled else { return }
                await self?.timerFired(id)
            }
            return nil
        case .cancelTimer(let id):
            timers.removeValue(forKey: id)?.cancel()
            return nil
        case .exit(let code, let message):
            // SIGTERM while resolving: the lockdown, not the resolving ruleset, must stay.
            if resolutionOpen { _ = closeResolution() }
                        if let message, code != ExitCode.success { StandardError.writeLine(message) }
            watchdogTask?.cancel()
            watchdogTask = nil
            notifier.stopping()
            statusChannel?.close()
            management?.close()
            netlink?.stop()
            nftables?.stop()
            exited?.resume(returning: code)
            exited = nil
            return nil
        }
    }

    private func probed(_ failure: String?) {
        guard exited != nil else { return }
        probeFailures = failure == nil ? 0 : probeFailures + 1
        let now = StatusBoard.timestamp(Date())
        status.update {
            $0.probe?.lastAt = now
            $0.probe?.lastResult = failure ?? "answered"
            $0.probe?.consecutiveFailures = probeFailures
        }
        if let failure {
            logger.warning("DNS probe through \(Configuration.tunnelInterface) failed (\(probeFailures) in a row): \(failure)")
            feed(.probeFailed(failure))
        } else {
            logger.debug("DNS probe through \(Configuration.tunnelInterface) answered")
            feed(.probeSucceeded)
        }
    }

    /// SIGHUP: reads the credentials file and the OpenVPN configuration again. Whatever is wrong
    /// with them is refused, and the ones in use stay. The environment cannot change, and host
    /// names are resolved only at start (the pinned endpoints), so a new host name is refused too.
    private func reloadConfiguration() -> Event {
        guard let configuration else { return .reloadRefused("no configuration yet") }
        func refuse(_ message: String) -> Event {
            logger.error("SIGHUP: reload refused, the configuration in use stays: \(message)")
            let at = StatusBoard.timestamp(Date())
            status.update { $0.lastReload = .init(at: at, accepted: false, message: message) }
            return .reloadRefused(message)
        }
        let configPath = configuration.openvpnConfigPath
        let configText: String
        switch TextFile.read(configPath) {
        case .success(let text): configText = text
        case .failure(let error): return refuse("CONFIG=\(configPath) cannot be read: \(error)")
        }
        let remotes = OpenVPNConfigFile.remotes(in: configText)
        guard !remotes.isEmpty else { return refuse("CONFIG=\(configPath) has no remote line") }
        let newCredentials: Credentials
        switch TextFile.read(configuration.credentialsFile) {
        case .success(let text):
            do {
                newCredentials = try Credentials(fileContents: text, path: configuration.credentialsFile)
            } catch {
                return refuse(error.description)
            }
            warnIfCredentialsAreShared(configuration.credentialsFile)
        case .failure(let error):
            return refuse("CREDENTIALS_FILE=\(configuration.credentialsFile) cannot be read: \(error)")
        }
        let names = RemotePins.hostNames(in: remotes)
        let unpinned = names.filter { pins.resolved[$0] == nil }
        guard unpinned.isEmpty else {
            return refuse("CONFIG=\(configPath) names host(s) not resolved at start (\(unpinned.joined(separator: ", "))); "
                + "restart vpnsup to pin new host names")
        }
        let newPins = RemotePins(remotes: remotes, resolved: pins.resolved.filter { names.contains($0.key) })
        guard !newPins.endpoints.isEmpty else {
            return refuse("CONFIG=\(configPath) has no remote with an IPv4 address")
        }
        credentials = newCredentials
        pins = newPins
        endpoints = newPins.endpoints
        reloads += 1
        let message = "\(newPins.endpoints.count) endpoint(s): \(newPins.endpoints.map(\.description).joined(separator: ", "))"
        logger.notice("SIGHUP: reloaded the credentials and \(configPath), \(message)")
        let at = StatusBoard.timestamp(Date())
        status.update {
            $0.endpoints = newPins.endpoints.map(\.description)
            $0.reloads = reloads
            $0.lastReload = .init(at: at, accepted: true, message: message)
        }
        return .configurationReloaded
    }

    private func timerFired(_ id: TimerID) {
        timers[id] = nil
        feed(.timerFired(id))
    }

    private func applyFirewall(_ policy: FirewallPolicy) -> Event {
        do {
            if firewall == nil {
                let created = try Firewall()
                firewall = created
                // Before the first commit: nothing done to the table from then on goes unseen.
                startNftablesMonitor(ignoring: created.portID)
            }
            let ruleset = policy == .lockdown
                ? Ruleset.lockdown
                : Ruleset.build(policy, for: configuration!.layout(endpoints: endpoints))
            let clock = ContinuousClock()
            let started = clock.now
            try firewall!.commit(ruleset)
            let elapsed = clock.now - started
            committedPolicy = policy
            status.update { $0.policy = policy.rawValue }
            let line: Logger.Message = "committed the \(policy) ruleset in \(Self.milliseconds(elapsed)) ms"
            // Until the configuration is judged, a bad one must get stderr to itself: one line.
            if configuration == nil { deferredLog = line } else { logger.info(line) }
            if let change = repairing {
                repairing = nil
                repairs += 1
                let repair = StatusSnapshot.Repair(at: StatusBoard.timestamp(Date()), change: change, policy: policy.rawValue,
                                                   milliseconds: Double(Self.milliseconds(elapsed)) ?? 0)
                status.update {
                    $0.firewallRepairs = repairs
                    $0.lastRepair = repair
                }
                log(.notice, "repaired table inet vpnsup: re-committed the \(policy) ruleset in \(Self.milliseconds(elapsed)) ms (repair \(repairs))")
            }
            return .firewallCommitted(policy)
        } catch {
            logger.error("the \(policy) ruleset was not committed: \(error)")
            return .firewallFailed(policy, "\(error)")
        }
    }

    // MARK: Policy routing

    /// Defence in depth under the kill switch: whatever nftables holds (even nothing, for the
    /// moments before a repair), what arrives on the LAN interface is routed by vpnsup's table
    /// alone, which knows only tun0 and `unreachable`. Idempotent; runs with every LAN address
    /// step. A failure is logged, not fatal: the nftables kill switch still stands.
    private func ensurePolicyRouting(_ configuration: Configuration) {
        let table = Configuration.routingTable
        do {
            try addresses.ensureUnreachableDefault(table: table)
            try addresses.ensureRule(inputInterface: configuration.lanInterface, table: table,
                                     priority: Configuration.routingRulePriority)
        } catch {
            logger.error("policy routing for \(configuration.lanInterface) is not in place: \(error)")
            return
        }
        ensureTunnelRoute(quietIfDown: true)
    }

    /// `default dev tun0` in vpnsup's table. The kernel refuses it while tun0 is missing or down
    /// and removes it when tun0 goes down or away; the next `tunnelLinkUp` adds it again.
    private func ensureTunnelRoute(quietIfDown: Bool) {
        do {
            try addresses.ensureDefaultRoute(dev: Configuration.tunnelInterface, table: Configuration.routingTable)
        } catch where quietIfDown && error.interfaceMissingOrDown {
            return
        } catch {
            logger.warning("LAN traffic stays unreachable while tun0 has no route in table \(Configuration.routingTable): \(error)")
        }
    }

    // MARK: Drift repair

    private func startNftablesMonitor(ignoring portID: UInt32) {
        do {
            let monitor = try NftablesMonitor.start(table: Ruleset.tableName, ignoring: [portID])
            nftables = monitor
            if !monitor.filteredInKernel {
                log(.warning, "the nftables monitor filters vpnsup's own commits in user space only")
            }
            watcherTasks.append(Task { [weak self] in
                for await event in monitor.events { await self?.received(event) }
            })
        } catch {
            log(.warning, "outside changes to table inet vpnsup will not be noticed: nftables monitor: \(error)")
        }
    }

    private func received(_ event: NftablesEvent) {
        switch event {
        case .changed(let transaction):
            let policy = machine.requestedPolicy.map { "the \($0) ruleset" } ?? "nothing"
            log(.notice, "\(transaction.description); re-committing \(policy)")
            repair(transaction.description)
        case .resync:
            // Our own commits never reach the monitor, so this was outside activity: check the
            // table rather than re-commit blindly.
            guard let firewall, let policy = machine.requestedPolicy, let ruleset = ruleset(for: policy) else { return }
            var differences: [String]
            do {
                differences = try firewall.differences(from: ruleset)
            } catch {
                differences = ["it could not be read back (\(error))"]
            }
            guard !differences.isEmpty else {
                log(.info, "nftables notifications were lost; table inet vpnsup still holds the \(policy) ruleset")
                return
            }
            let change = "table inet vpnsup: notifications were lost and it no longer matches the \(policy) ruleset: "
                + differences.prefix(3).joined(separator: "; ")
            log(.notice, "\(change); re-committing the \(policy) ruleset")
            repair(change)
        }
    }

    private func repair(_ change: String) {
        // feed() runs the re-commit before it returns (the actor does not suspend in between),
        // so applyFirewall sees which change it repairs.
        repairing = change
        feed(.firewallTampered(change))
        repairing = nil
    }

    private func ruleset(for policy: FirewallPolicy) -> Ruleset? {
        if policy == .lockdown { return .lockdown }
        return configuration.map { Ruleset.build(policy, for: $0.layout(endpoints: endpoints)) }
    }

    /// Logs now or, until the configuration is judged (a bad one must get stderr to itself),
    /// once it has been accepted.
    private func log(_ level: Logger.Level, _ message: Logger.Message) {
        if configuration == nil { deferredLogs.append((level, message)) } else { logger.log(level: level, message) }
    }

    private static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let micro = seconds * 1_000_000 + attoseconds / 1_000_000_000_000
        return "\(micro / 1000).\(String(micro % 1000 + 1000).dropFirst())"
    }

    /// Logged (once the configuration is accepted, like every log line before that) rather than
    /// refused: see Credentials.permissionWarning.
    private func warnIfCredentialsAreShared(_ path: String) {
        if let mode = TextFile.mode(path), let warning = Credentials.permissionWarning(path: path, mode: mode) {
            log(.warning, "\(warning)")
        }
    }

    private func loadConfiguration() -> Event? {
        let configuration: Configuration
        do {
            configuration = try Configuration(settings.values)
        } catch {
            return .configurationRejected(error.description)
        }
        for (variable, name) in [("LAN_IF", configuration.lanInterface), ("WAN_IF", configuration.wanInterface)]
        where !AddressConfigurator.interfaceExists(name) {
            return .configurationRejected("\(variable)=\(name) names no interface in this network namespace")
        }
        let configPath = configuration.openvpnConfigPath
        let configText: String
        switch TextFile.read(configPath) {
        case .success(let text): configText = text
        case .failure(let error): return .configurationRejected("CONFIG=\(configPath) cannot be read: \(error)")
        }
        let remotes = OpenVPNConfigFile.remotes(in: configText)
        guard !remotes.isEmpty else {
            return .configurationRejected("CONFIG=\(configPath) has no remote line")
        }
        let credentialsText: String
        switch TextFile.read(configuration.credentialsFile) {
        case .success(let text): credentialsText = text
        case .failure(let error):
            return .configurationRejected("CREDENTIALS_FILE=\(configuration.credentialsFile) cannot be read: \(error)")
        }
        do {
            credentials = try Credentials(fileContents: credentialsText, path: configuration.credentialsFile)
        } catch {
            return .configurationRejected(error.description)
        }
        warnIfCredentialsAreShared(configuration.credentialsFile)
        statusGroupID = nil
        if let group = configuration.statusGroup {
            guard let id = GroupDatabase.groupID(group) else {
                return .configurationRejected("STATUS_GROUP=\(group): no such group")
            }
            statusGroupID = id
        }
        do {
            try RuntimeDirectory.prepare(configuration.runtimeDirectory, statusGroup: statusGroupID)
        } catch {
            return .configurationRejected("RUNTIME_DIR=\(configuration.runtimeDirectory) cannot be prepared: \(error)")
        }
        let names = RemotePins.hostNames(in: remotes)
        // Without a committed lockdown there is no kill switch to open for resolution, and the
        // machine exits 71 once the configuration is loaded anyway.
        guard !names.isEmpty, committedPolicy == .lockdown, let firewall else {
            return finishLoading(configuration, pins: RemotePins(remotes: remotes), requireEndpoint: names.isEmpty)
        }
        return resolve(names, for: configuration, remotes: remotes, firewall: firewall)
    }

    /// Opens name resolution (the resolving ruleset), resolves `names` on a thread of its own so
    /// that signals are still handled, and finishes loading once the lockdown is back.
    private func resolve(_ names: [String], for configuration: Configuration, remotes: [Remote],
                         firewall: Firewall) -> Event? {
        let nameservers: [IPv4Address]
        switch TextFile.read(ResolvConf.path) {
        case .success(let text): nameservers = ResolvConf.nameservers(in: text)
        case .failure: nameservers = ResolvConf.nameservers(in: "") // glibc's default: the local host
        }
        let started = ContinuousClock.now
        do {
            try firewall.commit(.resolving(nameservers: nameservers, wanInterface: configuration.wanInterface,
                                           mark: Configuration.transportMark))
        } catch {
            // A commit is all or nothing: the lockdown still holds, and nothing can be resolved.
            let failures = Dictionary(uniqueKeysWithValues: names.map { ($0, "the resolving ruleset was not committed: \(error)") })
            return finishResolution(ResolverOutcome(failures: failures), names: names, nameservers: nameservers,
                                    started: started, configuration: configuration, remotes: remotes)
        }
        resolutionOpen = true
        let resolver = Resolver(nameservers: nameservers, mark: Configuration.transportMark)
        Task { [weak self] in
            let outcome = await resolver.resolveOnOwnThread(names)
            await self?.resolved(outcome, names: names, nameservers: nameservers, started: started,
                                 configuration: configuration, remotes: remotes)
        }
        return nil
    }

    private func resolved(_ outcome: ResolverOutcome, names: [String], nameservers: [IPv4Address],
                          started: ContinuousClock.Instant, configuration: Configuration, remotes: [Remote]) {
        // Shut down meanwhile: the exit already closed resolution.
        guard exited != nil, resolutionOpen else { return }
        if let failure = closeResolution() {
            // Only marked DNS stays open, but the kill switch is not what it must be: exit 71.
            feed(.firewallFailed(.lockdown, "closing name resolution: \(failure)"))
        }
        feed(finishResolution(outcome, names: names, nameservers: nameservers, started: started,
                              configuration: configuration, remotes: remotes))
    }

    private func finishResolution(_ outcome: ResolverOutcome, names: [String], nameservers: [IPv4Address],
                                  started: ContinuousClock.Instant, configuration: Configuration,
                                  remotes: [Remote]) -> Event {
        let elapsed = Self.milliseconds(ContinuousClock.now - started)
        let pins = RemotePins(remotes: remotes, resolved: outcome.addresses)
        let servers = nameservers.map(\.description).joined(separator: ", ")
        let found = names.compactMap { name in outcome.addresses[name].map { "\(name) -> \($0.map(\.description).joined(separator: " "))" } }
        log(.info, "resolved \(found.count) of \(names.count) remote host names in \(elapsed) ms via \(servers.isEmpty ? "no nameserver" : servers), resolution closed: \(found.joined(separator: ", "))")
        let failures = names.compactMap { name in outcome.failures[name].map { "\(name) (\($0))" } }
        if !failures.isEmpty {
            log(.warning, "remotes whose host name did not resolve are skipped: \(failures.joined(separator: ", "))")
        }
        if pins.endpoints.isEmpty {
            return .configurationRejected("CONFIG=\(configuration.openvpnConfigPath) has no remote that resolves to an IPv4 address: "
                + failures.joined(separator: ", "))
        }
        return finishLoading(configuration, pins: pins, requireEndpoint: true)
    }

    /// Re-commits the lockdown after resolution; returns the error if that failed.
    private func closeResolution() -> String? {
        resolutionOpen = false
        do {
            try firewall?.commit(.lockdown)
            committedPolicy = .lockdown
            return nil
        } catch {
            log(.error, "the lockdown ruleset was not re-committed after name resolution: \(error)")
            return "\(error)"
        }
    }

    private func finishLoading(_ configuration: Configuration, pins: RemotePins, requireEndpoint: Bool) -> Event {
        let endpoints = pins.endpoints
        if endpoints.isEmpty && requireEndpoint {
            return .configurationRejected("CONFIG=\(configuration.openvpnConfigPath) has no remote given as an IPv4 address "
                + "or a host name: \(pins.remotes.map(\.host).joined(separator: ", "))")
        }
        self.configuration = configuration
        self.endpoints = endpoints
        self.pins = pins
        if let deferredLog {
            logger.info(deferredLog)
            self.deferredLog = nil
        }
        for (level, message) in deferredLogs { logger.log(level: level, message) }
        deferredLogs = []
        let unpinned = pins.remotes.filter { $0.endpoint == nil && !$0.isHostName }
        if !unpinned.isEmpty {
            logger.warning("IPv6 remotes are not pinned (the WAN carries IPv4 only) and are skipped: \(unpinned.map(\.description).joined(separator: ", "))")
        }
        status.update {
            $0.endpoints = endpoints.map(\.description)
            $0.resolvedRemotes = pins.resolved.isEmpty ? nil : pins.resolved.mapValues { $0.map(\.description) }
            $0.lanInterface = configuration.lanInterface
            $0.gateway = configuration.gateway.description
            $0.portForwards = configuration.portForwards.map(\.description)
            $0.reconnects = 0
            $0.reloads = 0
            if let server = configuration.probe.server, let interval = configuration.probe.effectiveInterval {
                $0.probe = .init(server: server.description, name: configuration.probe.name,
                                 intervalSeconds: Double(interval.components.seconds), consecutiveFailures: 0)
            }
        }
        if configuration.probe.effectiveInterval == nil {
            logger.info(configuration.probe.server == nil
                ? "no DNS probe: neither DNS nor PROBE_SERVER names a resolver to ask through the tunnel"
                : "no DNS probe: PROBE_INTERVAL=0")
        }
        do {
            try startWatchers(configuration, statusGroup: statusGroupID)
        } catch {
            return .configurationRejected("RUNTIME_DIR=\(configuration.runtimeDirectory): \(error)")
        }
        return .configurationLoaded
    }

    private func startWatchers(_ configuration: Configuration, statusGroup: UInt32?) throws {
        let statusChannel = try StatusChannel.listen(at: configuration.runtimeDirectory + "/status.sock",
                                                     group: statusGroup) { [status] in
            // Read on the status thread through a socket of its own: a status request never waits
            // for the driver, and shows what the kernel counts right now.
            let counters = try? Firewall().dropCounters()
            return status.json(blocked: counters?.mapValues { BlockedCount(packets: $0.packets, bytes: $0.bytes) },
                               traffic: LinkTraffic.of(Configuration.tunnelInterface))
        }
        self.statusChannel = statusChannel
        let management = try ManagementChannel.listen(at: managementSocketPath(configuration))
        self.management = management
        watcherTasks.append(Task { [weak self] in
            for await event in management.events { await self?.received(event) }
        })
        let netlink = try NetlinkWatcher.start()
        self.netlink = netlink
        watcherTasks.append(Task { [weak self] in
            for await event in netlink.events { await self?.received(event) }
        })
    }

    private func managementSocketPath(_ configuration: Configuration) -> String {
        configuration.runtimeDirectory + "/management.sock"
    }

    private func spawnOpenVPN() -> Event {
        guard let configuration else { return .openvpnSpawnFailed("no configuration") }
        var arguments = [
            "--config", configuration.openvpnConfigPath,
            "--dev", Configuration.tunnelInterface, "--dev-type", "tun",
            // vpnsup listens and OpenVPN connects: no start-up race, and OpenVPN exits when its supervisor goes.
            "--management", managementSocketPath(configuration), "unix", "--management-client",
            "--management-hold", "--management-query-passwords", "--auth-user-pass", "--auth-nocache",
            // Only packets with this mark may leave by the WAN.
            "--mark", String(Configuration.transportMark),
            // Kernel data-channel offload bypasses the socket the mark is set on; keep it in user space.
            "--disable-dco",
        ]
        if pins.remotes.contains(where: { $0.endpoint == nil }) {
            // OpenVPN asks before using each remote: a host name gets a pinned address, since its
            // own DNS would be dropped; an unpinned remote is skipped. Only when a name needs it:
            // OpenVPN waits for the answer in one-second ticks, adding a second to every attempt.
            arguments.append("--management-query-remote")
        }
        arguments += settings.openvpnArguments
        do {
            let pid = try Spawner.spawn(executable: settings.openvpnExecutable, arguments: arguments,
                                        environment: ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
            openvpnPID = pid
            status.update { $0.openvpnPID = pid }
            logger.info("started OpenVPN (pid \(pid))")
            return .openvpnStarted
        } catch {
            return .openvpnSpawnFailed("\(error)")
        }
    }

    private func sendManagement(_ command: String) -> Event? {
        do {
            try management?.send(command)
            return nil
        } catch {
            logger.warning("management command failed: \(error)")
            return nil
        }
    }
}

extension Event {
    /// A short name for logs and status.
    var label: String {
        switch self {
        case .start: "start"
        case .configurationLoaded: "configurationLoaded"
        case .configurationRejected: "configurationRejected"
        case .firewallCommitted(let p): "firewallCommitted(\(p))"
        case .firewallFailed(let p, _): "firewallFailed(\(p))"
        case .lanAddressPresent: "lanAddressPresent"
        case .lanAddressMissing: "lanAddressMissing"
        case .addressFailed: "addressFailed"
        case .tunnelLinkUp: "tunnelLinkUp"
        case .tunnelLinkDown: "tunnelLinkDown"
        case .openvpnStarted: "openvpnStarted"
        case .openvpnSpawnFailed: "openvpnSpawnFailed"
        case .openvpnExited(let s): "openvpnExited(\(s))"
        case .managementConnected: "managementConnected"
        case .openvpnHold: "openvpnHold"
        case .credentialsRequested: "credentialsRequested"
        case .credentialsRejected: "credentialsRejected"
        case .openvpnState(let s): "openvpnState(\(s.name))"
        case .openvpnFatal: "openvpnFatal"
        case .timerFired(let t): "timerFired(\(t.rawValue))"
        case .shutdownRequested: "shutdownRequested"
        case .firewallTampered: "firewallTampered"
        case .wanLinkUp: "wanLinkUp"
        case .wanLinkDown: "wanLinkDown"
        case .probeSucceeded: "probeSucceeded"
        case .probeFailed: "probeFailed"
        case .reloadRequested: "reloadRequested"
        case .configurationReloaded: "configurationReloaded"
        case .reloadRefused: "reloadRefused"
        }
    }
}
