// WireGuard in the machine. The safety rules are the same as OpenVPN's: wireguard-go is started
// once the connecting policy is committed, and its peers are configured (the tunnel's release)
// only under a committed policy that lets the transport out. What is WireGuard's own: the
// handshake evidence (WireGuard sends no events; `WireGuardHandshakeMonitor` decides when to read
// the handshakes, and the machine keeps it as data), what that evidence means for the states,
// and how a peer that stops answering is recovered: its next pinned address, and after a full
// round of them the host names resolved again.

/// A WireGuard tunnel's data beside the phase.
struct WireGuardTunnel: Hashable, Sendable {
    /// The host names resolved again while the tunnel runs (the policy in use plus marked DNS).
    enum Resolution: Hashable, Sendable {
        /// The policy plus DNS is requested.
        case opening([String])
        /// It is committed; the resolver asks.
        case open([String])
    }

    var monitor: WireGuardHandshakeMonitor
    /// The running wireguard-go serves its UAPI socket (`tunnelHeld`): its peers can be configured.
    var controlReady = false
    /// Which of a host name's pinned addresses the peers use; each recovery moves on to the next.
    var endpointAttempt = 0
    /// Recoveries since the names were last resolved.
    var recoveries = 0
    /// The next configuration of the peers starts the evidence afresh (new keys, peers or
    /// endpoints). Otherwise peers set again while no handshake has happened yet (a DNS probe's
    /// reconnect) keep the monitor's clock, so that it still finds the handshake overdue.
    var freshRound = true
    var resolution: Resolution?

    init(timings: WireGuardHandshakeTimings) {
        monitor = WireGuardHandshakeMonitor(timings: timings)
    }
}

extension Machine {
    // MARK: What the outside may read

    /// OpenVPN, or WireGuard once a wg-quick file is loaded.
    public var tunnelKind: TunnelKind { loaded?.wireGuard == nil ? .openvpn : .wireguard }

    /// The tunnel's link: OpenVPN's tun0, or WireGuard's TUNNEL_IF.
    public var tunnelInterface: String { loaded?.wireGuard?.interface ?? Configuration.tunnelInterface }

    /// The tunnel's name in reasons: "OpenVPN exited with status 1", "wireguard-go ended 5 times...".
    var tunnelName: String { loaded?.wireGuard == nil ? openVPNName : "wireguard-go" }

    /// What WireGuard's handshakes say, while they are watched.
    public var wireGuardEvidence: WireGuardEvidence? { wireGuard.monitor.evidence }

    /// The host names being resolved again while a WireGuard tunnel runs.
    var wireGuardNamesBeingReresolved: [String]? {
        switch wireGuard.resolution {
        case .opening(let names), .open(let names): names
        case nil: nil
        }
    }

    /// The interfaces and pinned endpoints the rulesets are built from.
    var layout: NetworkLayout? {
        guard let configuration, let pinned else { return nil }
        if let profile = loaded?.wireGuard { return configuration.wireGuardLayout(profile, endpoints: pinned.endpoints) }
        return configuration.layout(endpoints: pinned.endpoints)
    }

    /// How the WireGuard device is to be configured now: the file in use and each peer's endpoint.
    var wireGuardPlan: WireGuardPlan? {
        guard let loaded, let profile = loaded.wireGuard, let pinned else { return nil }
        return WireGuardPlan(file: loaded.credentials, endpoints: profile.endpoints(pins: pinned, attempt: wireGuard.endpointAttempt))
    }

    /// While the names are resolved again: the policy requested, plus DNS to the nameservers for
    /// packets carrying the transport mark (the resolver's), and nothing else more.
    var reresolvingRuleset: Ruleset? {
        guard wireGuard.resolution != nil, let loaded, let requested, requested.allowsTransport,
              let ruleset = ruleset(for: requested) else { return nil }
        return ruleset.addingNameResolution(nameservers: loaded.nameservers, wanInterface: loaded.configuration.wanInterface,
                                            mark: Configuration.transportMark)
    }

    /// The tunnel is wanted and may carry traffic (the phases that start, release and watch it).
    var tunnelWanted: Bool {
        switch phase {
        case .tunnelConnecting, .tunnelUp, .degraded: true
        default: false
        }
    }

    // MARK: Events

    /// WireGuard's events, and its own answers to shared ones; nil: the phase handles the event.
    /// With an OpenVPN configuration WireGuard's events mean nothing.
    mutating func handleWireGuard(_ event: Event) -> [Action]? {
        guard let profile = loaded?.wireGuard else {
            switch event {
            case .tunnelPeersConfigured, .tunnelPeersRead, .tunnelPeersReadFailed, .timerFired(.handshakeLook): return []
            default: return nil
            }
        }
        switch event {
        case .tunnelPeersConfigured(let at):
            guard tunnelWanted, session?.started == true else { return [] }
            if !wireGuard.freshRound, wireGuard.monitor.evidence.map(Self.awaitsHandshake) == true { return [] }
            wireGuard.freshRound = false
            // replace_peers dropped the sessions: no connection until the next handshake.
            updateSession { $0.connected = false }
            _ = wireGuard.monitor.handle(.stopped)
            return evidence(wireGuard.monitor.handle(.peersConfigured(profile.publicKeys, at: at)))
        case .timerFired(.handshakeLook):
            return evidence(wireGuard.monitor.handle(.lookDue))
        case .tunnelPeersRead(let samples, let at):
            return evidence(wireGuard.monitor.handle(.sampled(samples, at: at)))
        case .tunnelPeersReadFailed(let why):
            return evidence(wireGuard.monitor.handle(.readFailed(why)))
        case .tunnelHeld:
            // wireguard-go's socket is there; the phase decides whether to release it now.
            if session != nil { wireGuard.controlReady = true }
            return nil
        case .nameResolutionOpened, .nameResolutionFailed, .namesResolved:
            guard wireGuard.resolution != nil else { return nil }
            return reresolve(event)
        case .configurationReloaded(let reload):
            guard tunnelWanted else { return nil }
            return reconfigure(reload)
        case .tunnelOutputWatched, .tunnelOutputEnded, .timerFired(.tunnelOutput):
            // OpenVPN's output is judged for configuration errors; wireguard-go reads no file
            // (vpnsup configures it over UAPI), so its end is judged without it.
            return []
        case .credentialsRequested, .remoteRequested, .authenticationFailed:
            // OpenVPN's questions: wireguard-go asks for no credentials and no remote, and has no
            // authentication step that could fail (a wrong key is a handshake that never comes).
            return []
        default:
            return nil
        }
    }

    /// The evidence stops when the tunnel is no longer wanted or its process is gone, and
    /// re-resolution with it; the look timer is cancelled.
    mutating func settleWireGuard() -> [Action] {
        guard loaded?.wireGuard != nil else { return [] }
        if !tunnelWanted { wireGuard.resolution = nil }
        if session?.started != true { wireGuard.controlReady = false }
        guard wireGuard.monitor.evidence != nil, !(tunnelWanted && session?.started == true) else { return [] }
        return stopEvidence()
    }

    private mutating func stopEvidence() -> [Action] {
        _ = wireGuard.monitor.handle(.stopped)
        wireGuard.freshRound = true
        return [.cancelTimer(.handshakeLook)]
    }

    private static func awaitsHandshake(_ evidence: WireGuardEvidence) -> Bool {
        switch evidence {
        case .connecting, .handshakeOverdue: true
        case .up, .stale: false
        }
    }

    /// The monitor's actions as the machine's.
    private mutating func evidence(_ actions: [WireGuardEvidenceAction]) -> [Action] {
        actions.flatMap { action -> [Action] in
            switch action {
            case .readPeers: [.readTunnelPeers]
            case .scheduleLook(let after): [.scheduleTimer(.handshakeLook, after: after)]
            case .cancelLook: [.cancelTimer(.handshakeLook)]
            case .report(let evidence): judge(evidence)
            }
        }
    }

    /// What the evidence means: a handshake with every peer is the tunnel's connection (TunnelUp
    /// once the link is up); none in time, or an old one while sending, is recovered.
    private mutating func judge(_ evidence: WireGuardEvidence) -> [Action] {
        switch evidence {
        case .connecting:
            return []
        case .up:
            wireGuard.recoveries = 0
            return handleInPhase(.tunnelConnected)
        case .handshakeOverdue(let why):
            reason = why
            return recover()
        case .stale(let why):
            return handleInPhase(.tunnelDisconnected(why)) + recover()
        }
    }

    /// A peer stopped answering (or never did): configure the peers again with each name's next
    /// pinned address; once every address was tried (a full round), resolve the names again first.
    /// Peers given as addresses are simply set again (WireGuard then starts a new handshake).
    private mutating func recover() -> [Action] {
        guard let profile = loaded?.wireGuard, let pinned, wireGuard.controlReady, wireGuard.resolution == nil
        else { return [] }
        wireGuard.freshRound = true
        wireGuard.recoveries += 1
        let names = profile.hostNames
        if !names.isEmpty, wireGuard.recoveries >= profile.roundLength(pins: pinned) {
            wireGuard.recoveries = 0
            wireGuard.resolution = .opening(names)
            return [.openNameResolution]
        }
        wireGuard.endpointAttempt += 1
        return [.reconnectTunnel]
    }

    /// The steps of resolving the names again: open (the policy plus marked DNS), resolve, then
    /// the policy again with the new pins, and the device configured with them.
    private mutating func reresolve(_ event: Event) -> [Action] {
        switch (event, wireGuard.resolution) {
        case (.nameResolutionOpened, .opening(let names)?):
            // The kernel holds the policy plus DNS now, not the policy alone.
            committed = nil
            wireGuard.resolution = .open(names)
            return [.resolveNames(names)]
        case (.nameResolutionFailed, .opening?):
            // A commit is all or nothing: the policy still holds. The pins stay; the peers are set again.
            wireGuard.resolution = nil
            return wireGuard.controlReady ? [.reconnectTunnel] : []
        case (.namesResolved(let addresses, let failures, let elapsed), .open(let names)?):
            wireGuard.resolution = nil
            guard let loaded, let pinned, let requested else { return [] }
            // A name that did not resolve this time keeps the addresses it had.
            var resolved = pinned.resolved
            for (name, list) in addresses where !list.isEmpty { resolved[RemotePins.key(name)] = list }
            let repinned = RemotePins(remotes: loaded.remotes, resolved: resolved)
            self.pinned = repinned
            provider.lastResolution = NameResolution(cause: .everyEndpointFailed, names: names, addresses: addresses,
                                                     failures: failures, elapsed: elapsed, endpoints: repinned.endpoints)
            wireGuard.endpointAttempt = 0
            wireGuard.freshRound = true
            // The policy with the new pins closes resolution; the device follows once it is committed.
            committed = nil
            let ready = wireGuard.controlReady
            updateSession { $0.holdPending = ready }
            return [.applyFirewall(requested)]
        default:
            return []
        }
    }

    /// SIGHUP while the tunnel is wanted: new keys, peers or endpoints reach the running
    /// wireguard-go over UAPI (no restart), after the connecting policy with the new pins is
    /// committed. TunnelUp again on the first handshake under the new configuration.
    private mutating func reconfigure(_ reload: ReloadedConfiguration) -> [Action] {
        guard adopt(reload) else { return [] }
        var actions = wireGuard.monitor.evidence == nil ? [] : stopEvidence()
        wireGuard.freshRound = true
        wireGuard.endpointAttempt = 0
        wireGuard.recoveries = 0
        wireGuard.resolution = nil
        var connecting = Connecting(recovery: recovery)
        connecting.recovery.respawnAttempt = 0
        connecting.recovery.exitsWithoutTunnel = 0
        let ready = wireGuard.controlReady
        updateSession {
            $0.connected = false
            $0.holdPending = ready
        }
        let entered = enter(.tunnelConnecting(connecting))
        actions += entered.isEmpty ? recommit() : entered
        if session == nil {
            // Waiting to be respawned: no backoff for a new configuration.
            actions.append(.cancelTimer(.respawn))
            actions += spawn()
        }
        return actions
    }
}
