import Actions
import FoundationEssentials
import StateMachine
import Watchers

// Reading the configuration (at start and on SIGHUP), and the effects that run on threads of
// their own: name resolution and the DNS probe.
extension LinuxEffects {
    /// Reads and validates the environment's configuration, then CONFIG by its kind: an OpenVPN
    /// file's remotes and the credentials, or a wg-quick file (its keys kept by the WireGuard
    /// backend, which is then the one in use); prepares RUNTIME_DIR and opens what depends on it (the status socket, the
    /// tunnel's control channel) and the netlink watcher, whose reports the configuration lets
    /// the interpreter translate. Judging the remotes (pins, name resolution) is the machine's.
    func load() -> Event {
        let base: Configuration
        do {
            base = try Configuration(settings.values)
        } catch {
            return .configurationRejected(error.description)
        }
        // PORT_FWD_FILE's forwards join PORT_FWD's; the file is watched from now on.
        let forwards = PortForwardFileSource.start(base, inbox: inbox, log: log)
        let configuration: Configuration
        switch forwards.result {
        case .success(let withFile): configuration = withFile
        case .failure(let error): return .configurationRejected(error.description)
        }
        portForwardFile = forwards.source
        // With an overlay, LAN_IF is vpnsup's to create.
        let existing = configuration.overlay == nil ? [("LAN_IF", configuration.lanInterface)] : []
        for (variable, name) in existing + [("WAN_IF", configuration.wanInterface)]
        where !AddressConfigurator.interfaceExists(name) {
            return .interfaceMissing(variable: variable, name: name)
        }
        let remotes: [Remote]
        var findings: [OpenVPNConfigFinding] = []
        var skippedRemotes: [RemotePlan.Entry] = []
        let token: CredentialsToken
        var wireGuardProfile: WireGuardProfile?
        var wireGuardStatus: WireGuardStatusReader?
        switch tunnelKind(configuration) {
        case .failure(let error):
            return .configurationRejected(error.description)
        case .success(.wireguard):
            switch readWireGuard(configuration, inUse: nil) {
            case .success(let read):
                (remotes, token, wireGuardProfile) = (read.profile.remotes, read.token, read.profile)
                if let refusal = claimWireGuardSocket(read.profile.interface) { return .configurationRejected(refusal) }
                backend = wireGuard
                wireGuardStatus = WireGuardStatusReader(interface: read.profile.interface, kernelHasWireGuard: probeKernelPlane())
            case .failure(let error):
                return .configurationRejected(error.description)
            }
        case .success(.openvpn):
            let review: OpenVPNConfigReview
            switch readOpenVPNConfig(configuration.openvpnConfigPath) {
            case .success(let read): review = read
            case .failure(let error): return .configurationRejected(error.description)
            }
            (remotes, findings, skippedRemotes) = (review.remotes, review.vetted.findings, review.skipped)
            switch readCredentials(configuration.credentialsFile) {
            case .success(let read): token = read
            case .failure(let error): return .configurationRejected(error.description)
            }
            vettedTexts[token] = review.vetted.text
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
            try openChannels(configuration, statusGroup: statusGroup, wireGuard: wireGuardStatus)
        } catch let error as MetricsResponderError {
            return .configurationRejected("METRICS_LISTEN=\(configuration.metricsListen.map(\.description) ?? "") "
                + "cannot be listened on: \(error)")
        } catch {
            return .configurationRejected("RUNTIME_DIR=\(configuration.runtimeDirectory): \(error)")
        }
        return .configurationLoaded(LoadedConfiguration(configuration: configuration, remotes: remotes,
                                                        nameservers: nameservers, credentials: token,
                                                        wireGuard: wireGuardProfile, findings: findings,
                                                        skippedRemotes: skippedRemotes))
    }

    /// SIGHUP: the credentials file and the OpenVPN configuration again. What cannot be read, or
    /// what the vetting or the remote plan refuses, is refused here with the line `run` would
    /// exit with at start; whether the remotes can be used with the pins is the machine's to judge.
    func reload(_ machine: Machine) -> Event {
        guard let configuration = machine.configuration else { return .reloadRefused("no configuration yet") }
        if machine.tunnelKind == .wireguard { return reloadWireGuard(configuration, machine) }
        let review: OpenVPNConfigReview
        switch readOpenVPNConfig(configuration.openvpnConfigPath) {
        case .success(let read): review = read
        case .failure(let error): return .reloadRefused(error.description)
        }
        switch readCredentials(configuration.credentialsFile) {
        case .success(let token):
            vettedTexts[token] = review.vetted.text
            // Only what is in use and what was just read are kept.
            credentials = credentials.filter { $0.key == token || $0.key == machine.credentials }
            vettedTexts = vettedTexts.filter { $0.key == token || $0.key == machine.credentials }
            return .configurationReloaded(ReloadedConfiguration(remotes: review.remotes, credentials: token,
                                                                findings: review.vetted.findings,
                                                                skippedRemotes: review.skipped))
        case .failure(let error):
            return .reloadRefused(error.description)
        }
    }

    /// The OpenVPN file, vetted and planned (`OpenVPNConfigReview`, as `rules` and `check` read it).
    private func readOpenVPNConfig(_ path: String) -> Result<OpenVPNConfigReview, EffectError> {
        switch TextFile.read(path) {
        case .success(let text):
            let review = OpenVPNConfigReview(text: text, path: path)
            if let refusal = review.refusal { return .failure(EffectError(refusal)) }
            return .success(review)
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

    /// `wireGuard`: a WireGuard tunnel's link and peers, read by the status too (nil: OpenVPN's tun0).
    private func openChannels(_ configuration: Configuration, statusGroup: UInt32?, wireGuard: WireGuardStatusReader?) throws {
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
        try backend.open(runtimeDirectory: configuration.runtimeDirectory, inbox: inbox, scope: scope)
        let netlink = try NetlinkWatcher.start()
        self.netlink = netlink
        scope.spawn { [inbox] in await inbox.forward(netlink.events) { .netlink($0) } }
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

    /// One DNS question through the tunnel, on a thread of its own; `probeSucceeded` or
    /// `probeFailed` follows.
    func probe(_ configuration: Configuration?, server: IPv4Address?, device: String) {
        guard let configuration, let server else { return }
        let probe = TunnelProbe(server: server, name: configuration.probe.name,
                                device: device, timeout: configuration.probe.timeout)
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
