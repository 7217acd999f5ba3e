import Actions
import FoundationEssentials
import StateMachine
import SystemSupport
import Watchers

// Reading the configuration (at start and on SIGHUP), and the effects that run on threads of
// their own: name resolution and the DNS probe.
extension LinuxEffects {
    /// Reads and validates the environment's configuration, the OpenVPN file's remotes and the
    /// credentials; prepares RUNTIME_DIR and opens what depends on it (the status socket, the
    /// tunnel's control channel) and the netlink watcher, whose reports the configuration lets
    /// the interpreter translate. Judging the remotes (pins, name resolution) is the machine's.
    func load() -> Event {
        let configuration: Configuration
        do {
            // PORT_FWD_FILE's forwards join PORT_FWD's (live changes: PortForwardDiff).
            configuration = try Configuration(settings.values).loadingPortForwardFile().get()
        } catch {
            return .configurationRejected(error.description)
        }
        for (variable, name) in [("LAN_IF", configuration.lanInterface), ("WAN_IF", configuration.wanInterface)]
        where !AddressConfigurator.interfaceExists(name) {
            return .interfaceMissing(variable: variable, name: name)
        }
        let remotes: [Remote]
        switch readRemotes(configuration.openvpnConfigPath) {
        case .success(let read): remotes = read
        case .failure(let error): return .configurationRejected(error.description)
        }
        let token: CredentialsToken
        switch readCredentials(configuration.credentialsFile) {
        case .success(let read): token = read
        case .failure(let error): return .configurationRejected(error.description)
        }
        var statusGroup: UInt32?
        if let group = configuration.statusGroup {
            guard let id = GroupDatabase.groupID(group) else {
                return .configurationRejected("STATUS_GROUP=\(group): no such group")
            }
            statusGroup = id
        }
        do {
            try RuntimeDirectory.prepare(configuration.runtimeDirectory, statusGroup: statusGroup)
        } catch {
            return .configurationRejected("RUNTIME_DIR=\(configuration.runtimeDirectory) cannot be prepared: \(error)")
        }
        var nameservers: [IPv4Address] = []
        if !RemotePins.hostNames(in: remotes).isEmpty {
            switch TextFile.read(ResolvConf.path) {
            case .success(let text): nameservers = ResolvConf.nameservers(in: text)
            case .failure: nameservers = ResolvConf.nameservers(in: "") // glibc's default: the local host
            }
        }
        do {
            try openChannels(configuration, statusGroup: statusGroup)
        } catch MetricsResponderError.http(let error) {
            return .configurationRejected("METRICS_LISTEN=\(configuration.metricsListen.map(\.description) ?? "") "
                + "cannot be listened on: \(error)")
        } catch {
            return .configurationRejected("RUNTIME_DIR=\(configuration.runtimeDirectory): \(error)")
        }
        return .configurationLoaded(LoadedConfiguration(configuration: configuration, remotes: remotes,
                                                        nameservers: nameservers, credentials: token))
    }

    /// SIGHUP: the credentials file and the OpenVPN configuration again. What cannot be read or
    /// parsed is refused here; whether the remotes can be used is the machine's to judge.
    func reload(_ machine: Machine) -> Event {
        guard let configuration = machine.configuration else { return .reloadRefused("no configuration yet") }
        let remotes: [Remote]
        switch readRemotes(configuration.openvpnConfigPath) {
        case .success(let read): remotes = read
        case .failure(let error): return .reloadRefused(error.description)
        }
        switch readCredentials(configuration.credentialsFile) {
        case .success(let token):
            // Only the credentials in use and the new ones are kept.
            credentials = credentials.filter { $0.key == token || $0.key == machine.credentials }
            return .configurationReloaded(ReloadedConfiguration(remotes: remotes, credentials: token))
        case .failure(let error):
            return .reloadRefused(error.description)
        }
    }

    private func readRemotes(_ path: String) -> Result<[Remote], EffectError> {
        switch TextFile.read(path) {
        case .success(let text):
            let remotes = OpenVPNConfigFile.remotes(in: text)
            return remotes.isEmpty ? .failure(EffectError("CONFIG=\(path) has no remote line")) : .success(remotes)
        case .failure(let error):
            return .failure(EffectError("CONFIG=\(path) cannot be read: \(error)"))
        }
    }

    /// Reads and parses the credentials, keeps them under a new token; the secret never leaves
    /// the effects.
    private func readCredentials(_ path: String) -> Result<CredentialsToken, EffectError> {
        let text: String
        switch TextFile.read(path) {
        case .success(let read): text = read
        case .failure(let error): return .failure(EffectError("CREDENTIALS_FILE=\(path) cannot be read: \(error)"))
        }
        let parsed: Credentials
        do {
            parsed = try Credentials(fileContents: text, path: path)
        } catch {
            return .failure(EffectError(error.description))
        }
        // Logged (once the configuration is accepted, like every line before that) rather than
        // refused: see Credentials.permissionWarning.
        if let mode = TextFile.mode(path), let warning = Credentials.permissionWarning(path: path, mode: mode) {
            log.log(.warning, warning)
        }
        credentialsRead += 1
        let token = CredentialsToken(generation: credentialsRead)
        credentials[token] = parsed
        return .success(token)
    }

    private func openChannels(_ configuration: Configuration, statusGroup: UInt32?) throws {
        if statusChannel == nil {
            statusChannel = try StatusChannel.listen(at: configuration.runtimeDirectory + "/status.sock",
                                                     group: statusGroup) { [board] in
                // Read on the status thread through a socket of its own: a status request never
                // waits for the interpreter, and shows what the kernel counts right now.
                StatusBoard.json(Self.kernelSnapshot(board))
            }
        }
        if metricsResponder == nil {
            metricsResponder = try MetricsEndpoints.start(configuration, statusGroup: statusGroup, ledger: metrics) { [board] in
                Self.kernelSnapshot(board)
            }
        }
        try backend.open(runtimeDirectory: configuration.runtimeDirectory, inbox: inbox, scope: scope)
        let netlink = try NetlinkWatcher.start()
        self.netlink = netlink
        scope.spawn { [inbox] in await inbox.forward(netlink.events) { .netlink($0) } }
    }

    /// The status with what the kernel counts right now (drops per chain, the tunnel's bytes),
    /// read on the asking thread through sockets of its own: a status request or a scrape never
    /// waits for the interpreter.
    static func kernelSnapshot(_ board: StatusBoard) -> StatusSnapshot {
        let counters = try? Firewall().dropCounters()
        return board.current(blocked: counters?.mapValues { BlockedCount(packets: $0.packets, bytes: $0.bytes) },
                             traffic: LinkTraffic.of(Configuration.tunnelInterface))
    }

    // MARK: On threads of their own

    /// Resolves `names` on a thread of its own (bounded by the resolver's budget), so that the
    /// interpreter and the effects go on; `namesResolved` follows.
    func resolve(_ names: [String], nameservers: [IPv4Address]) {
        let resolver = Resolver(nameservers: nameservers, mark: Configuration.transportMark)
        let work: @Sendable () -> Void = { [inbox, log, metrics] in
            let started = ContinuousClock.now
            let outcome = resolver.resolve(names)
            let took = ContinuousClock.now - started
            metrics?.resolved(at: Date(), took: took)
            let elapsed = SupervisorRecord.milliseconds(took)
            let servers = nameservers.map(\.description).joined(separator: ", ")
            let found = names.compactMap { name in
                outcome.addresses[name].map { "\(name) -> \($0.map(\.description).joined(separator: " "))" }
            }
            log.log(.info, "resolved \(found.count) of \(names.count) remote host names in \(elapsed) ms via "
                + "\(servers.isEmpty ? "no nameserver" : servers): \(found.joined(separator: ", "))")
            let failures = names.compactMap { name in outcome.failures[name].map { "\(name) (\($0))" } }
            if !failures.isEmpty {
                log.log(.warning, "remotes whose host name did not resolve are skipped: \(failures.joined(separator: ", "))")
            }
            inbox.post(.event(.namesResolved(addresses: outcome.addresses, failures: outcome.failures)))
        }
        do {
            try ReaderThread.start(name: "vpnsup-resolve", work)
        } catch {
            // No thread to be had: block here rather than not resolve.
            work()
        }
    }

    /// One DNS question through the tunnel, on a thread of its own; `probeSucceeded` or
    /// `probeFailed` follows.
    func probe(_ configuration: Configuration?) {
        guard let configuration, let server = configuration.probe.server else { return }
        let probe = TunnelProbe(server: server, name: configuration.probe.name,
                                device: Configuration.tunnelInterface, timeout: configuration.probe.timeout)
        do {
            try ReaderThread.start(name: "vpnsup-probe") { [inbox, metrics] in
                let measurement = probe.measure()
                if measurement.failure == nil { metrics?.probeAnswered(after: measurement.latency) }
                inbox.post(.event(measurement.failure.map { .probeFailed($0) } ?? .probeSucceeded))
            }
        } catch {
            inbox.post(.event(.probeFailed("no thread for the probe: \(error)")))
        }
    }
}
