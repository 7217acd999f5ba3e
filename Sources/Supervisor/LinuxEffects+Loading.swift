import Actions
import FoundationEssentials
import StateMachine
import SystemSupport
import Watchers

// Reading the configuration (at start and on SIGHUP), and the effects that run on threads of
// their own: name resolution and the DNS probe.
//
// Files (CONFIG, CREDENTIALS_FILE, resolv.conf) are read neither on the interpreter nor on the
// effects' thread: each on a thread of its own with a deadline, by the one configuration loader
// (`ConfigurationFile`), which refuses what is not a regular file. The outcome is posted to the
// inbox as an event, like name resolution's, so that a file that never answers (a FIFO, a hung
// network file system) keeps neither the kill switch nor drift repair waiting: the effects go on
// committing and repairing meanwhile. PORT_FWD_FILE is read by its watcher's thread
// (`PortForwardFileSource`), which reads it again whenever it changes.
extension LinuxEffects {
    /// `loadConfiguration`: the environment's values are judged here at once (no I/O); the files
    /// are read in the background, and `configurationLoaded` (or the rejection) follows.
    func startLoading() -> [Event] {
        let base: Configuration
        do {
            base = try Configuration(settings.values)
        } catch {
            return [.configurationRejected(error.description)]
        }
        // With an overlay, LAN_IF is vpnsup's to create.
        let existing = base.overlay == nil ? [("LAN_IF", base.lanInterface)] : []
        for (variable, name) in existing + [("WAN_IF", base.wanInterface)]
        where !AddressConfigurator.interfaceExists(name) {
            return [.interfaceMissing(variable: variable, name: name)]
        }
        let timeout = settings.fileTimeout, values = settings.values
        scope.spawn { [inbox, log] in
            // PORT_FWD_FILE's forwards join PORT_FWD's; the file is watched from now on.
            let forwards = PortForwardFileSource.start(base, inbox: inbox, log: log)
            let event: Event
            switch forwards.result {
            case .failure(let error):
                event = .configurationRejected(error.description)
            case .success(let configuration):
                switch await ConfigurationFiles.load(configuration, values: values, timeout: timeout) {
                case .success(let files): event = await self.finishLoading(files, forwards: forwards.source)
                case .failure(let line):
                    forwards.source?.stop()
                    event = .configurationRejected(line.description)
                }
            }
            inbox.post(.event(event))
            // Only now the netlink watcher's reports, held since it started (HeldUntilOpened).
            self.netlinkReports.open { [inbox] in inbox.post(.netlink($0)) }
        }
        return []
    }

    /// `reloadConfiguration` (SIGHUP): CONFIG (and for OpenVPN the credentials file) again, read
    /// in the background; `configurationReloaded` or `reloadRefused` follows. What cannot be read,
    /// or what the vetting or the remote plan refuses, is refused with the line `run` would exit
    /// with at start; whether the remotes can be used is the machine's to judge.
    func startReloading(_ machine: Machine) -> [Event] {
        guard let configuration = machine.configuration else { return [.reloadRefused("no configuration yet")] }
        let inUse = machine.credentials, kind = machine.tunnelKind
        let timeout = settings.fileTimeout, values = settings.values
        scope.spawn { [inbox] in
            let event: Event
            switch await ConfigurationFiles.reload(configuration, values: values, kind: kind, timeout: timeout) {
            case .success(let tunnel): event = await self.finishReloading(tunnel, inUse: inUse)
            case .failure(let line): event = .reloadRefused(line.description)
            }
            inbox.post(.event(event))
        }
        return []
    }

    /// The files are read and RUNTIME_DIR is prepared: keeps the credentials or the wg-quick
    /// file's keys (the secrets never leave the effects), opens what lives in RUNTIME_DIR (the
    /// status and metrics sockets, the tunnel's control channel) and the netlink watcher, whose
    /// reports the configuration lets the interpreter translate. Judging the remotes (pins, name
    /// resolution) is the machine's.
    private func finishLoading(_ files: ConfigurationFiles.Loaded, forwards: PortForwardFileSource?) -> Event {
        let configuration = files.configuration
        portForwardFile = forwards
        let loaded: LoadedConfiguration
        var wireGuardStatus: WireGuardStatusReader?
        switch files.tunnel {
        case .wireguard(let file):
            if let refusal = claimWireGuardSocket(file.profile.interface) { return .configurationRejected(refusal) }
            let token = keep(file, inUse: nil)
            backend = wireGuard
            wireGuardStatus = WireGuardStatusReader(interface: file.profile.interface, kernelHasWireGuard: probeKernelPlane())
            loaded = LoadedConfiguration(configuration: configuration, remotes: file.profile.remotes,
                                         nameservers: files.nameservers, credentials: token, wireGuard: file.profile)
        case .openvpn(let review, let credentials):
            let token = keep(credentials)
            vettedTexts[token] = review.vetted.text
            loaded = LoadedConfiguration(configuration: configuration, remotes: review.remotes,
                                         nameservers: files.nameservers, credentials: token,
                                         findings: review.vetted.findings, skippedRemotes: review.skipped)
        }
        do {
            try openChannels(configuration, statusGroup: files.statusGroup, wireGuard: wireGuardStatus)
        } catch MetricsResponderError.http(let error) {
            return .configurationRejected("METRICS_LISTEN=\(configuration.metricsListen.map(\.description) ?? "") "
                + "cannot be listened on: \(error)")
        } catch {
            return .configurationRejected("RUNTIME_DIR=\(escapedForDisplay(configuration.runtimeDirectory)): \(error)")
        }
        return .configurationLoaded(loaded)
    }

    private func finishReloading(_ tunnel: ConfigurationFiles.Tunnel, inUse: CredentialsToken?) -> Event {
        switch tunnel {
        case .wireguard(let file):
            let token = keep(file, inUse: inUse)
            return .configurationReloaded(ReloadedConfiguration(remotes: file.profile.remotes, credentials: token,
                                                                wireGuard: file.profile))
        case .openvpn(let review, let credentials):
            let token = keep(credentials)
            vettedTexts[token] = review.vetted.text
            // Only what is in use and what was just read are kept.
            self.credentials = self.credentials.filter { $0.key == token || $0.key == inUse }
            vettedTexts = vettedTexts.filter { $0.key == token || $0.key == inUse }
            return .configurationReloaded(ReloadedConfiguration(remotes: review.remotes, credentials: token,
                                                                findings: review.vetted.findings,
                                                                skippedRemotes: review.skipped))
        }
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

    /// Keeps a wg-quick file (its keys) in the WireGuard backend under a new token, and logs what
    /// the file holds that vpnsup does not apply (the lines wait, as every line does, until the
    /// configuration is accepted).
    private func keep(_ read: ConfigurationFiles.ReadWireGuard, inUse: CredentialsToken?) -> CredentialsToken {
        for note in read.file.notes { log.log(.notice, note) }
        if let warning = WireGuardConfiguration.permissionWarning(path: read.path, mode: read.mode) {
            log.log(.warning, warning)
        }
        return wireGuard.keep(read.file, inUse: inUse)
    }

    /// `wireGuard`: a WireGuard tunnel's link and peers, read by the status too (nil: OpenVPN's tun0).
    private func openChannels(_ configuration: Configuration, statusGroup: UInt32?, wireGuard: WireGuardStatusReader?) throws {
        // Their threads now, not with their first piece of work: the count of threads stays
        // what it is from here on.
        if configuration.probe.server != nil, configuration.probe.interval != nil { try probeThread.start() }
        if wireGuard != nil { try peerReadThread.start() }
        if statusChannel == nil {
            statusChannel = try StatusChannel.listen(at: configuration.runtimeDirectory + "/status.sock",
                                                     group: statusGroup) { [board] in
                // Read on the status thread through a socket of its own: a status request never
                // waits for the interpreter, and shows what the kernel (and wireguard-go) count
                // right now.
                StatusBoard.json(Self.kernelSnapshot(board, wireGuard: wireGuard))
            }
        }
        if metricsResponder == nil {
            metricsResponder = try MetricsEndpoints.start(configuration, statusGroup: statusGroup, ledger: metrics) { [board] in
                Self.kernelSnapshot(board, wireGuard: wireGuard)
            }
        }
        try backend.open(runtimeDirectory: configuration.runtimeDirectory, inbox: inbox)
        // Held until the configuration is posted (`netlinkReports`).
        netlink = try NetlinkWatcher.start(receiver: .calling { [netlinkReports] in netlinkReports.send($0) })
    }

    /// The status with what the kernel counts right now (drops per chain, the tunnel's bytes),
    /// read on the asking thread through sockets of its own: a status request or a scrape never
    /// waits for the interpreter.
    /// A WireGuard tunnel's link is counted instead of tun0, and its peers read from wireguard-go.
    static func kernelSnapshot(_ board: StatusBoard, wireGuard: WireGuardStatusReader?) -> StatusSnapshot {
        let counters = try? Firewall().dropCounters()
        var snapshot = board.current(blocked: counters?.mapValues { BlockedCount(packets: $0.packets, bytes: $0.bytes) },
                                     traffic: LinkTraffic.of(wireGuard?.interface ?? Configuration.tunnelInterface))
        if let wireGuard { wireGuard.read(pid: snapshot.openvpnPID).apply(to: &snapshot) }
        return snapshot
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
            inbox.post(.event(.namesResolved(addresses: outcome.addresses, failures: outcome.failures,
                                             elapsed: ContinuousClock.now - started)))
        }
        do {
            try ReaderThread.start(name: "vpnsup-resolve", work)
        } catch {
            // No thread to be had: block here rather than not resolve.
            work()
        }
    }

    /// One DNS question through the tunnel, on the probe's thread; `probeSucceeded` or
    /// `probeFailed` follows.
    func probe(_ configuration: Configuration?, server: IPv4Address?, device: String) {
        guard let configuration, let server else { return }
        let probe = TunnelProbe(server: server, name: configuration.probe.name,
                                device: device, timeout: configuration.probe.timeout)
        do {
            try probeThread.run { [inbox, metrics] in
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
/// thread of its own within `timeout`, RUNTIME_DIR prepared likewise and meanwhile. A failure is the one line
/// `run` exits 78 with (or a SIGHUP's reload is refused with), naming the variable.
enum ConfigurationFiles {
    struct ReadCredentials: Sendable {
        var credentials: Credentials
        var path: String
        /// Its permission bits, from the file that was read.
        var mode: UInt32
    }

    /// A wg-quick file as read: with its keys (for the backend) and without (`profile`).
    struct ReadWireGuard: Sendable {
        var file: WireGuardConfiguration
        var profile: WireGuardProfile
        var path: String
        var mode: UInt32
    }

    /// CONFIG by its kind: an OpenVPN file vetted and planned, with the credentials; or a
    /// wg-quick file.
    enum Tunnel: Sendable {
        case openvpn(OpenVPNConfigReview, ReadCredentials)
        case wireguard(ReadWireGuard)

        var remotes: [Remote] {
            switch self {
            case .openvpn(let review, _): review.remotes
            case .wireguard(let read): read.profile.remotes
            }
        }
    }

    struct Loaded: Sendable {
        /// With PORT_FWD_FILE's forwards joined to PORT_FWD's.
        var configuration: Configuration
        var tunnel: Tunnel
        var statusGroup: UInt32?
        /// resolv.conf's, read only when a remote names a host.
        var nameservers: [IPv4Address]
    }

    /// The one line for stderr (or the refused reload).
    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    static func load(_ configuration: Configuration, values: [String: String],
                     timeout: Duration) async -> Result<Loaded, Failure> {
        // RUNTIME_DIR is prepared while CONFIG (and the credentials) are read: each on its own
        // thread within its own deadline either way, the two at once rather than one after the
        // other. A refused CONFIG is reported first, as when they were sequential.
        async let runtimeDirectory = prepareRuntimeDirectory(configuration, timeout: timeout)
        let tunnel: Tunnel
        switch await readTunnel(configuration, values: values, kind: nil, timeout: timeout) {
        case .success(let read): tunnel = read
        case .failure(let failure):
            _ = await runtimeDirectory
            return .failure(failure)
        }
        let statusGroup: UInt32?
        switch await runtimeDirectory {
        case .success(let group): statusGroup = group
        case .failure(let failure): return .failure(failure)
        }
        var nameservers: [IPv4Address] = []
        if !RemotePins.hostNames(in: tunnel.remotes).isEmpty {
            switch await ConfigurationFile.read(ResolvConf.path, timeout: timeout) {
            case .success(let contents): nameservers = ResolvConf.nameservers(in: contents.text)
            case .failure: nameservers = ResolvConf.nameservers(in: "") // glibc's default: the local host
            }
        }
        return .success(Loaded(configuration: configuration, tunnel: tunnel, statusGroup: statusGroup,
                               nameservers: nameservers))
    }

    /// SIGHUP: CONFIG again, which must stay the kind of tunnel in use.
    static func reload(_ configuration: Configuration, values: [String: String], kind: TunnelKind,
                       timeout: Duration) async -> Result<Tunnel, Failure> {
        await readTunnel(configuration, values: values, kind: kind, timeout: timeout)
    }

    /// CONFIG read, its kind decided (VPN_TYPE, else its first line), and read as that kind;
    /// with `kind`, a file of another kind is refused.
    private static func readTunnel(_ configuration: Configuration, values: [String: String], kind inUse: TunnelKind?,
                                   timeout: Duration) async -> Result<Tunnel, Failure> {
        let path = configuration.openvpnConfigPath
        let contents: ConfigurationFileContents
        switch await ConfigurationFile.read(path, timeout: timeout) {
        case .success(let read): contents = read
        case .failure(let error): return .failure(Failure(error.line(variable: "CONFIG")))
        }
        let kind: TunnelKind
        do {
            kind = try TunnelKind.resolve(vpnType: values["VPN_TYPE"], configText: contents.text)
        } catch {
            return .failure(Failure(error.description))
        }
        if let inUse, inUse != kind {
            return .failure(Failure("CONFIG=\(escapedForDisplay(path)) is no longer a\(inUse == .wireguard ? " wg-quick" : "n OpenVPN") "
                + "file; restart vpnsup to change the kind of tunnel"))
        }
        switch kind {
        case .wireguard:
            do {
                let file = try WireGuardConfiguration(text: contents.text, path: path)
                let settings = try WireGuardSettings(values)
                return .success(.wireguard(ReadWireGuard(file: file, profile: WireGuardProfile(file, settings: settings),
                                                         path: path, mode: contents.mode)))
            } catch {
                return .failure(Failure("\(error)"))
            }
        case .openvpn:
            let review = OpenVPNConfigReview(text: contents.text, path: path)
            if let refusal = review.refusal { return .failure(Failure(refusal)) }
            return await readCredentials(configuration.credentialsFile, timeout: timeout).map { .openvpn(review, $0) }
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
