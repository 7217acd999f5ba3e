// Init: the lockdown first, then the configuration, then the remotes' host names resolved through
// the resolving ruleset (closed again by the lockdown), then the pins and the LAN address.
extension Machine {
    mutating func handleInitial(_ event: Event, _ starting: Starting) -> [Action] {
        if case .notStarted = starting.step {
            switch event {
            case .start:
                phase = .initial(Starting(step: .loading))
                requested = .lockdown
                return [.applyFirewall(.lockdown), .loadConfiguration]
            case .shutdownRequested:
                return shutDown()
            default:
                // Nothing may touch the network before the lockdown has been requested.
                return []
            }
        }
        switch event {
        case .configurationRejected(let message):
            return isConfigured ? [] : [.exit(code: ExitCode.configuration, message: message)]
        case .interfaceMissing(let variable, let name):
            return isConfigured ? [] : [.exit(code: ExitCode.configuration,
                                              message: "\(variable)=\(name) names no interface in this network namespace")]
        case .configurationLoaded(let configuration):
            guard case .loading = starting.step else { return [] }
            return load(configuration, starting)
        case .nameResolutionOpened:
            guard case .resolving(var resolution) = starting.step, resolution.step == .opening else { return [] }
            // The kernel holds the resolving ruleset now, not the lockdown.
            committed = nil
            resolution.step = .open
            phase = .initial(Starting(step: .resolving(resolution), lockdownFailure: starting.lockdownFailure))
            return [.resolveNames(resolution.names)]
        case .nameResolutionFailed(let message):
            guard case .resolving(let resolution) = starting.step, resolution.step == .opening else { return [] }
            // A commit is all or nothing: the lockdown still holds, and nothing can be resolved.
            let failures = Dictionary(uniqueKeysWithValues: resolution.names.map {
                ($0, "the resolving ruleset was not committed: \(message)")
            })
            return judge(addresses: [:], failures: failures, starting)
        case .namesResolved(let addresses, let failures):
            guard case .resolving(var resolution) = starting.step, resolution.step == .open else { return [] }
            resolution.step = .closing(addresses: addresses, failures: failures)
            phase = .initial(Starting(step: .resolving(resolution), lockdownFailure: starting.lockdownFailure))
            committed = nil
            return [.applyFirewall(.lockdown)]
        case .firewallCommitted(let policy):
            guard noteCommitted(policy) else { return [] }
            return lockdownCommitted(starting)
        case .firewallFailed(let policy, let message):
            guard policy == requested else { return [] }
            return lockdownFailed(message, starting)
        case .lanAddressPresent:
            addressPresent = true
            return isConfigured && committed == .lockdown ? enter(.addressAssigned(Recovery())) : []
        case .addressFailed(let message):
            return isConfigured ? killswitch(.transient, "the LAN address could not be set: \(message)") : []
        case .overlayLinkFailed(let message):
            return isConfigured && overlay != nil ? killswitch(.transient, overlayLinkFailure(message)) : []
        case .configurationReloaded(let reload):
            return adopt(reload) ? recommit() : []
        default:
            return handleCommon(event)
        }
    }

    /// The configuration is read: its host names are resolved first, if it has any.
    private mutating func load(_ configuration: LoadedConfiguration, _ starting: Starting) -> [Action] {
        loaded = configuration
        let names = RemotePins.hostNames(in: configuration.remotes)
        if names.isEmpty {
            return judge(addresses: [:], failures: [:], starting)
        }
        // Without a committed lockdown there is no kill switch to open for resolution.
        if let failure = starting.lockdownFailure {
            return [.exit(code: ExitCode.unavailable, message: "cannot commit the lockdown ruleset: \(failure)")]
        }
        let waitForLockdown = committed != .lockdown
        let resolution = Resolution(names: names, step: waitForLockdown ? .awaitingLockdown : .opening)
        phase = .initial(Starting(step: .resolving(resolution)))
        return waitForLockdown ? [] : [.openNameResolution]
    }

    private mutating func lockdownCommitted(_ starting: Starting) -> [Action] {
        switch starting.step {
        case .resolving(var resolution):
            switch resolution.step {
            case .awaitingLockdown:
                resolution.step = .opening
                phase = .initial(Starting(step: .resolving(resolution), lockdownFailure: starting.lockdownFailure))
                return [.openNameResolution]
            case .closing(let addresses, let failures):
                return judge(addresses: addresses, failures: failures, starting)
            case .opening, .open:
                // A repair of an outside change landed; the resolver carries on (and fails if
                // the lockdown now stands in its way).
                return []
            }
        case .configured:
            // netlink may confirm the address before the lockdown commit reports back.
            return addressPresent ? enter(.addressAssigned(Recovery())) : []
        case .notStarted, .loading:
            return []
        }
    }

    private mutating func lockdownFailed(_ message: String, _ starting: Starting) -> [Action] {
        var starting = starting
        switch starting.step {
        case .loading, .notStarted:
            // Remembered, not acted on: the configuration decides between 78 and 71.
            starting.lockdownFailure = message
            phase = .initial(starting)
            return []
        case .resolving(let resolution):
            switch resolution.step {
            case .awaitingLockdown:
                return [.exit(code: ExitCode.unavailable, message: "cannot commit the lockdown ruleset: \(message)")]
            case .closing(let addresses, let failures):
                // Only marked DNS stays open, but the kill switch is not what it must be.
                starting.lockdownFailure = "closing name resolution: \(message)"
                return judge(addresses: addresses, failures: failures, starting)
            case .opening, .open:
                starting.lockdownFailure = message
                phase = .initial(starting)
                return []
            }
        case .configured:
            return [.exit(code: ExitCode.unavailable, message: "cannot commit the lockdown ruleset: \(message)")]
        }
    }

    /// Judges the loaded configuration with the names' addresses: pins its remotes, or exits 78
    /// (no remote to pin) or 71 (no kill switch).
    private mutating func judge(addresses: [String: [IPv4Address]], failures: [String: String],
                                _ starting: Starting) -> [Action] {
        guard let loaded else { return [] }
        let path = loaded.configuration.openvpnConfigPath
        let names = RemotePins.hostNames(in: loaded.remotes)
        let pins = RemotePins(remotes: loaded.remotes, resolved: addresses)
        if pins.endpoints.isEmpty {
            let message = names.isEmpty
                ? "CONFIG=\(path) has no remote given as an IPv4 address or a host name: "
                    + loaded.remotes.map(\.host).joined(separator: ", ")
                : "CONFIG=\(path) has no remote that resolves to an IPv4 address: "
                    + names.compactMap { name in failures[name].map { "\(name) (\($0))" } }.joined(separator: ", ")
            return [.exit(code: ExitCode.configuration, message: message)]
        }
        if let failure = starting.lockdownFailure {
            return [.exit(code: ExitCode.unavailable, message: "cannot commit the lockdown ruleset: \(failure)")]
        }
        pinned = pins
        phase = .initial(Starting(step: .configured))
        var actions = ensureLAN()
        // The address may have been reported while the names were resolved.
        if addressPresent, committed == .lockdown {
            actions += enter(.addressAssigned(Recovery()))
        }
        return actions
    }

    // MARK: SIGHUP

    /// A reload's remotes with the addresses pinned at start-up, or why they cannot be used: host
    /// names are resolved only at start, so a new one is refused, and so is a file left with no
    /// endpoint.
    public func judge(_ reload: ReloadedConfiguration) -> ReloadVerdict {
        guard let configuration, let pinned else { return .refused("no configuration in use yet") }
        let path = configuration.openvpnConfigPath
        let names = Set(RemotePins.hostNames(in: reload.remotes).map(RemotePins.key))
        let pins = RemotePins(remotes: reload.remotes, resolved: pinned.resolved.filter { names.contains($0.key) })
        let unpinned = pins.unresolved
        guard unpinned.isEmpty else {
            return .refused("CONFIG=\(path) names host(s) not resolved at start (\(unpinned.joined(separator: ", "))); "
                + "restart vpnsup to pin new host names")
        }
        guard !pins.endpoints.isEmpty else { return .refused("CONFIG=\(path) has no remote with an IPv4 address") }
        return .accepted(pins)
    }

    /// Takes the reloaded remotes and credentials into use if `judge` accepts them.
    mutating func adopt(_ reload: ReloadedConfiguration) -> Bool {
        guard case .accepted(let pins) = judge(reload) else { return false }
        pinned = pins
        loaded?.remotes = reload.remotes
        loaded?.credentials = reload.credentials
        return true
    }
}
