import Actions
import FoundationEssentials
import StateMachine
import SystemSupport
import Watchers

// Reading the configuration (at start and on SIGHUP), and the effects that run on threads of
// their own: name resolution and the DNS probe.
//
// Files (CONFIG, CREDENTIALS_FILE, PORT_FWD_FILE, resolv.conf) are read neither on the
// interpreter nor on the effects' thread: each on a thread of its own with a deadline, by the
// one configuration loader (`ConfigurationFile`), which refuses what is not a regular file. The
// outcome is posted to the inbox as an event, like name resolution's, so that a file that never
// answers (a FIFO, a hung network file system) keeps neither the kill switch nor drift repair
// waiting: the effects go on committing and repairing meanwhile.
extension LinuxEffects {
    /// `loadConfiguration`: the environment's values are judged here at once (no I/O); the files
    /// are read in the background, and `configurationLoaded` (or the rejection) follows.
    func startLoading() -> [Event] {
        let configuration: Configuration
        do {
            configuration = try Configuration(settings.values)
        } catch {
            return [.configurationRejected(error.description)]
        }
        // With an overlay, LAN_IF is vpnsup's to create.
        let existing = configuration.overlay == nil ? [("LAN_IF", configuration.lanInterface)] : []
        for (variable, name) in existing + [("WAN_IF", configuration.wanInterface)]
        where !AddressConfigurator.interfaceExists(name) {
            return [.interfaceMissing(variable: variable, name: name)]
        }
        let timeout = settings.fileTimeout
        scope.spawn { [inbox] in
            let event: Event
            switch await ConfigurationFiles.load(configuration, timeout: timeout) {
            case .success(let files): event = await self.finishLoading(files)
            case .failure(let line): event = .configurationRejected(line.description)
            }
            inbox.post(.event(event))
        }
        return []
    }

    /// `reloadConfiguration` (SIGHUP): the credentials file and the OpenVPN configuration again,
    /// read in the background; `configurationReloaded` or `reloadRefused` follows. What cannot be
    /// read or parsed is refused; whether the remotes can be used is the machine's to judge.
    func startReloading(_ machine: Machine) -> [Event] {
        guard let configuration = machine.configuration else { return [.reloadRefused("no configuration yet")] }
        let inUse = machine.credentials
        let timeout = settings.fileTimeout
        scope.spawn { [inbox] in
            let event: Event
            switch await ConfigurationFiles.reload(configuration, timeout: timeout) {
            case .success(let files): event = await self.finishReloading(files, inUse: inUse)
            case .failure(let line): event = .reloadRefused(line.description)
            }
            inbox.post(.event(event))
        }
        return []
    }

    /// The files are read and RUNTIME_DIR is prepared: keeps the credentials (the secret never
    /// leaves the effects), opens what lives in RUNTIME_DIR (the status and metrics sockets, the
    /// tunnel's control channel) and the netlink watcher, whose reports the configuration lets
    /// the interpreter translate. Judging the remotes (pins, name resolution) is the machine's.
    private func finishLoading(_ files: ConfigurationFiles.Loaded) -> Event {
        let configuration = files.configuration
        let token = keep(files.credentials)
        do {
            try openChannels(configuration, statusGroup: files.statusGroup)
        } catch MetricsResponderError.http(let error) {
            return .configurationRejected("METRICS_LISTEN=\(configuration.metricsListen.map(\.description) ?? "") "
                + "cannot be listened on: \(error)")
        } catch {
            return .configurationRejected("RUNTIME_DIR=\(escapedForDisplay(configuration.runtimeDirectory)): \(error)")
        }
        return .configurationLoaded(LoadedConfiguration(configuration: configuration, remotes: files.remotes,
                                                        nameservers: files.nameservers, credentials: token))
    }

    private func finishReloading(_ files: ConfigurationFiles.Reloaded, inUse: CredentialsToken?) -> Event {
        let token = keep(files.credentials)
        // Only the credentials in use and the new ones are kept.
        credentials = credentials.filter { $0.key == token || $0.key == inUse }
        return .configurationReloaded(ReloadedConfiguration(remotes: files.remotes, credentials: token))
    }

    /// Keeps credentials under a new token, and warns (once the configuration is accepted, like
    /// every line before that) rather than refuses a file others can read: see
    /// Credentials.permissionWarning.
    private func keep(_ read: ConfigurationFiles.ReadCredentials) -> CredentialsToken {
        if let warning = Credentials.permissionWarning(path: read.path, mode: read.mode) {
            log.log(.warning, warning)
        }
        credentialsRead += 1
        let token = CredentialsToken(generation: credentialsRead)
        credentials[token] = read.credentials
        return token
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

/// The files `run` reads, read and parsed off the interpreter and the effects: each file on a
/// thread of its own within `timeout`, RUNTIME_DIR prepared likewise. A failure is the one line
/// `run` exits 78 with (or a SIGHUP's reload is refused with), naming the variable.
enum ConfigurationFiles {
    struct ReadCredentials: Sendable {
        var credentials: Credentials
        var path: String
        /// Its permission bits, from the file that was read.
        var mode: UInt32
    }

    struct Loaded: Sendable {
        /// With PORT_FWD_FILE's forwards joined to PORT_FWD's.
        var configuration: Configuration
        var remotes: [Remote]
        var credentials: ReadCredentials
        var statusGroup: UInt32?
        /// resolv.conf's, read only when a remote names a host.
        var nameservers: [IPv4Address]
    }

    struct Reloaded: Sendable {
        var remotes: [Remote]
        var credentials: ReadCredentials
    }

    /// The one line for stderr (or the refused reload).
    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    static func load(_ configuration: Configuration, timeout: Duration) async -> Result<Loaded, Failure> {
        var configuration = configuration
        if let file = configuration.portForwardFile {
            // PORT_FWD_FILE's forwards join PORT_FWD's (live changes: PortForwardDiff). The
            // watcher's bound, so that a file read at start is read the same way later.
            switch await ConfigurationFile.read(file, limit: FileWatcher.maximumSize, timeout: timeout) {
            case .success(let contents):
                do {
                    configuration = try configuration.addingPortForwards(fromFile: contents.text)
                } catch {
                    return .failure(Failure(error.description))
                }
            case .failure(let error):
                return .failure(Failure(error.line(variable: "PORT_FWD_FILE")))
            }
        }
        let remotes: [Remote]
        switch await readRemotes(configuration.openvpnConfigPath, timeout: timeout) {
        case .success(let read): remotes = read
        case .failure(let failure): return .failure(failure)
        }
        let credentials: ReadCredentials
        switch await readCredentials(configuration.credentialsFile, timeout: timeout) {
        case .success(let read): credentials = read
        case .failure(let failure): return .failure(failure)
        }
        let statusGroup: UInt32?
        switch await prepareRuntimeDirectory(configuration, timeout: timeout) {
        case .success(let group): statusGroup = group
        case .failure(let failure): return .failure(failure)
        }
        var nameservers: [IPv4Address] = []
        if !RemotePins.hostNames(in: remotes).isEmpty {
            switch await ConfigurationFile.read(ResolvConf.path, timeout: timeout) {
            case .success(let contents): nameservers = ResolvConf.nameservers(in: contents.text)
            case .failure: nameservers = ResolvConf.nameservers(in: "") // glibc's default: the local host
            }
        }
        return .success(Loaded(configuration: configuration, remotes: remotes, credentials: credentials,
                               statusGroup: statusGroup, nameservers: nameservers))
    }

    static func reload(_ configuration: Configuration, timeout: Duration) async -> Result<Reloaded, Failure> {
        let remotes: [Remote]
        switch await readRemotes(configuration.openvpnConfigPath, timeout: timeout) {
        case .success(let read): remotes = read
        case .failure(let failure): return .failure(failure)
        }
        return await readCredentials(configuration.credentialsFile, timeout: timeout)
            .map { Reloaded(remotes: remotes, credentials: $0) }
    }

    private static func readRemotes(_ path: String, timeout: Duration) async -> Result<[Remote], Failure> {
        switch await ConfigurationFile.read(path, timeout: timeout) {
        case .success(let contents):
            let remotes = OpenVPNConfigFile.remotes(in: contents.text)
            return remotes.isEmpty ? .failure(Failure("CONFIG=\(escapedForDisplay(path)) has no remote line")) : .success(remotes)
        case .failure(let error):
            return .failure(Failure(error.line(variable: "CONFIG")))
        }
    }

    private static func readCredentials(_ path: String, timeout: Duration) async -> Result<ReadCredentials, Failure> {
        switch await ConfigurationFile.read(path, timeout: timeout) {
        case .success(let contents):
            do {
                let credentials = try Credentials(fileContents: contents.text, path: path)
                return .success(ReadCredentials(credentials: credentials, path: path, mode: contents.mode))
            } catch {
                return .failure(Failure(error.description))
            }
        case .failure(let error):
            return .failure(Failure(error.line(variable: "CREDENTIALS_FILE")))
        }
    }

    /// STATUS_GROUP looked up and RUNTIME_DIR prepared (`RuntimeDirectory`), on a thread of their
    /// own within `timeout`: both may read what a network file system or directory service holds.
    /// Returns the status group's id.
    private static func prepareRuntimeDirectory(_ configuration: Configuration,
                                                timeout: Duration) async -> Result<UInt32?, Failure> {
        let directory = configuration.runtimeDirectory, group = configuration.statusGroup
        let prepared: Result<UInt32?, Failure>?
        do {
            prepared = try await ReaderThread.value(name: "vpnsup-rundir", timeout: timeout) { () -> Result<UInt32?, Failure> in
                var statusGroup: UInt32?
                if let group {
                    guard let id = GroupDatabase.groupID(group) else {
                        return .failure(Failure("STATUS_GROUP=\(escapedForDisplay(group)): no such group"))
                    }
                    statusGroup = id
                }
                do {
                    try RuntimeDirectory.prepare(directory, statusGroup: statusGroup)
                } catch {
                    return .failure(Failure("RUNTIME_DIR=\(escapedForDisplay(directory)) cannot be prepared: \(error)"))
                }
                return .success(statusGroup)
            }
        } catch {
            return .failure(Failure("RUNTIME_DIR=\(escapedForDisplay(directory)) cannot be prepared: \(error)"))
        }
        return prepared ?? .failure(Failure("RUNTIME_DIR=\(escapedForDisplay(directory)) cannot be prepared: "
            + "no answer within \(timeout) (a hung file system?)"))
    }
}
