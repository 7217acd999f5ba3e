import Logging
import StateMachine

/// What systemd is told besides the watchdog.
public enum ServiceNotice: Hashable, Sendable {
    /// `STATUS=`: the state and why.
    case status(String)
    /// `READY=1`: the tunnel came up for the first time.
    case ready
}

/// The supervisor's account of itself, for `vpnsup status`, the log and systemd: a projection of
/// the machine and of the events it handled and the actions it took. Pure (the interpreter passes
/// the time in); it decides nothing, and what it shows of a decision (the state, the probe's
/// failures in a row, the pinned endpoints, the tunnel's process) is read from the machine, so
/// the two cannot disagree.
public struct SupervisorRecord: Sendable {
    public private(set) var snapshot: StatusSnapshot
    private var readySent = false
    private var reconnects = 0
    private var reloads = 0
    private var repairs = 0
    private var forwardsChanges = 0
    /// The forwards the status lists, kept to format them again only when they change (there
    /// may be 10,000, and the status is refreshed on every event).
    private var listedForwards: [PortForward]?
    private var resolutions = 0
    /// Outside changes whose repair (a commit of the policy) is under way, oldest first.
    private var repairing: [(change: String, policy: FirewallPolicy)] = []
    /// The `>REMOTE:` question being answered.
    private var remoteAsked: (host: String, port: UInt16?, proto: String)?
    /// The tunnel's last account of its connection, and the process that gave it: shown while
    /// that process lives, dropped with it.
    private var report: (report: TunnelReport, pid: Int32?)?

    public init(_ snapshot: StatusSnapshot) {
        self.snapshot = snapshot
    }

    /// The machine went from `before` to `after` on `event`, emitting `actions`.
    public mutating func handled(_ event: Event, before: Machine, after: Machine, actions: [Action],
                                 at now: String) -> (notes: [LogNote], notices: [ServiceNotice]) {
        var notes: [LogNote] = []
        var notices: [ServiceNotice] = []
        if before.state != after.state {
            let reason = after.reason.map { " (\($0))" } ?? ""
            notes.append(LogNote(.notice, "\(before.state) -> \(after.state) on \(event.label)\(reason)",
                                 metadata: ["from": "\(before.state)", "to": "\(after.state)", "event": event.label],
                                 immediate: true))
            snapshot.recordTransition(from: before.state, to: after.state, cause: event.label, reason: after.reason, at: now)
            notices.append(.status("\(after.state)\(reason)"))
            if after.state == .tunnelUp, !readySent {
                readySent = true
                notices.append(.ready)
            }
        } else if before.reason != after.reason, after.reason != nil {
            // Why, learnt within a state (WireGuard's overdue handshake while connecting).
            snapshot.reason = after.reason
            notices.append(.status("\(after.state) (\(after.reason ?? ""))"))
        }
        if let evidence = after.wireGuardEvidence, evidence != before.wireGuardEvidence {
            notes.append(LogNote(evidence == .up || evidence == .connecting ? .info : .warning, "WireGuard handshakes: \(evidence)"))
        }
        if !before.isConfigured, after.isConfigured {
            notes += accepted(after)
        }
        notes += narrate(event, before: before, after: after, actions: actions, at: now)
        notes += narrateProvider(event, before: before, after: after, actions: actions, at: now)
        for action in actions {
            switch action {
            case .applyFirewall(let policy):
                if case .firewallTampered(let change) = event { repairing.append((change, policy)) }
            case .reconnectTunnel:
                reconnects += 1
                snapshot.reconnects = reconnects
                notes.append(LogNote(.notice, after.tunnelKind == .wireguard
                    ? "setting the WireGuard peers again (reconnect \(reconnects))"
                    : "asking OpenVPN to reconnect (signal SIGUSR1, reconnect \(reconnects))"))
            case .openNameResolution where after.isConfigured && after.tunnelKind == .wireguard:
                notes.append(LogNote(.notice, "resolving \(after.namesBeingReresolved?.joined(separator: ", ") ?? "the peers' names") "
                    + "again: no peer answered on any pinned address"))
            case .answerRemote(let answer):
                if let asked = remoteAsked {
                    notes.append(LogNote(.info, "OpenVPN asks for remote \(asked.host) \(asked.port.map(String.init) ?? "?") \(asked.proto): \(answer.command)"))
                }
            default:
                break
            }
        }
        remoteAsked = nil
        refresh(from: after)
        return (notes, notices)
    }

    /// An action was performed: `results` came back, after `elapsed`.
    public mutating func performed(_ action: Action, results: [Event], elapsed: Duration, at now: String) -> [LogNote] {
        if case .applyForwardChanges(let diff) = action {
            return appliedForwards(diff, results: results, elapsed: elapsed, at: now)
        }
        guard case .applyFirewall(let policy) = action, let index = repairing.firstIndex(where: { $0.policy == policy })
        else { return [] }
        let change = repairing.remove(at: index).change
        guard results.contains(.firewallCommitted(policy)) else { return [] }
        repairs += 1
        let milliseconds = Self.milliseconds(elapsed)
        snapshot.firewallRepairs = repairs
        snapshot.lastRepair = .init(at: now, change: change, policy: policy.rawValue, milliseconds: Double(milliseconds) ?? 0)
        return [LogNote(.notice, "repaired table inet vpnsup: re-committed the \(policy) ruleset in \(milliseconds) ms (repair \(repairs))")]
    }

    /// The tunnel's own account of its connection, given by the tunnel `machine` runs.
    public mutating func observed(_ report: TunnelReport, by machine: Machine) {
        self.report = (report, machine.tunnelPID)
        refresh(from: machine)
    }

    // MARK: -

    /// The configuration was just accepted: what is worth saying about it.
    private mutating func accepted(_ machine: Machine) -> [LogNote] {
        var notes: [LogNote] = []
        guard let configuration = machine.configuration, let pins = machine.pins else { return notes }
        notes += Self.findingNotes(machine.openvpnFindings, path: configuration.openvpnConfigPath)
        for entry in machine.skippedRemotes {
            notes.append(LogNote(entry.needsSkipping ? .warning : .info, "CONFIG=\(configuration.openvpnConfigPath): \(entry)"))
        }
        let unpinned = pins.remotes.filter { $0.endpoint == nil && !$0.isHostName }
        if machine.tunnelKind == .wireguard, !unpinned.isEmpty {
            notes.append(LogNote(.warning, "IPv6 remotes are not pinned (the WAN carries IPv4 only) and are skipped: "
                + unpinned.map(\.description).joined(separator: ", ")))
        }
        if machine.probeInterval == nil {
            notes.append(LogNote(.info, machine.probeServer == nil
                ? "no DNS probe: neither DNS nor PROBE_SERVER names a resolver to ask through the tunnel"
                : "no DNS probe: PROBE_INTERVAL=0"))
        }
        snapshot.reconnects = reconnects
        snapshot.reloads = reloads
        return notes
    }

    /// Log lines about an event that are not a transition.
    private mutating func narrate(_ event: Event, before: Machine, after: Machine, actions: [Action], at now: String) -> [LogNote] {
        switch event {
        case .firewallCommitted(let policy):
            // What the kernel holds now, superseded or not.
            snapshot.policy = policy.rawValue
            return []
        case .firewallTampered(let change):
            let policy = after.requestedPolicy.map { "the \($0) ruleset" } ?? "nothing"
            return [LogNote(.notice, "\(change); re-committing \(policy)")]
        case .firewallIntact(let policy):
            return [LogNote(.info, "nftables notifications were lost; table inet vpnsup still holds the \(policy) ruleset")]
        case .policyRoutingFailed(let message):
            let lan = after.configuration?.lanInterface ?? "the LAN"
            return [LogNote(.error, "policy routing for \(lan) is not in place: \(message)")]
        case .overlayRouteFailed(let message):
            let overlay = after.configuration?.overlay
            return [LogNote(.error, "\(overlay?.settings.podNetworks.map(\.description).joined(separator: ", ") ?? "POD_CIDRS") not routed by "
                + "\(overlay?.underlay ?? "the WAN"): answers to the overlay's clients would go into the tunnel: \(message)")]
        case .tunnelRouteFailed(let message):
            return [LogNote(.warning, "LAN traffic stays unreachable while \(after.tunnelInterface) has no route in table "
                + "\(Configuration.routingTable): \(message)")]
        case .tunnelCommandFailed(let command, let message):
            let tunnel = after.tunnelKind == .wireguard ? "wireguard-go" : "OpenVPN"
            let channel = after.tunnelKind == .wireguard ? "wireguard-go's \(command.label)" : "management command \(command.label)"
            return [LogNote(.warning, "\(channel) failed: \(message)" + (actions.contains(.stopTunnel) ? "; stopping \(tunnel)" : ""))]
        case .remoteRequested(let host, let port, let proto):
            remoteAsked = (host, port, proto)
            return []
        case .probeSucceeded, .probeFailed:
            return probed(event, before: before, after: after, at: now)
        case .configurationReloaded(let reload):
            switch before.judge(reload) {
            case .accepted(let pins):
                reloads += 1
                let message = "\(pins.endpoints.count) endpoint(s): \(pins.endpoints.map(\.description).joined(separator: ", "))"
                snapshot.reloads = reloads
                snapshot.lastReload = .init(at: now, accepted: true, message: message)
                let path = after.configuration?.openvpnConfigPath ?? "the configuration"
                return [LogNote(.notice, "SIGHUP: reloaded the credentials and \(path), \(message)")]
            case .refused(let message):
                return refused(message, at: now)
            }
        case .reloadRefused(let message):
            return refused(message, at: now)
        case .portForwardsRead(let reading):
            return forwardsRead(reading, before: before, after: after, actions: actions, at: now)
        case .forwardChangesFailed(_, let message):
            let fallback = actions.contains(.applyFirewall(.up)) ? "; committing the whole up ruleset with them instead" : ""
            snapshot.lastForwardsChange?.message += ", which failed: \(message)\(fallback)"
            return [LogNote(.warning, "the forward maps could not be changed in place: \(message)\(fallback)")]
        default:
            return []
        }
    }

    /// PORT_FWD_FILE read again: refused (the forwards in force stay), unchanged, or accepted and
    /// on its way into force as the machine decided (map elements, the whole up ruleset, or the
    /// next up commit).
    private mutating func forwardsRead(_ reading: PortForwardReading, before: Machine, after: Machine,
                                       actions: [Action], at now: String) -> [LogNote] {
        let path = after.configuration?.portForwardFile ?? "PORT_FWD_FILE"
        let inForce = before.forwardsBeingApplied ?? before.portForwards
        switch reading {
        case .refused(let message):
            snapshot.lastForwardsChange = .init(at: now, accepted: false, message: message)
            return [LogNote(.error, "PORT_FWD_FILE refused, the \(inForce.count) forwards in force stay: \(message)")]
        case .accepted(let forwards):
            let diff = PortForwardDiff(from: inForce, to: forwards)
            guard !diff.isEmpty else {
                snapshot.lastForwardsChange = .init(at: now, accepted: true, message: "unchanged: \(forwards.count) forwards")
                return [LogNote(.info, "\(path) read again: unchanged, \(forwards.count) forwards")]
            }
            forwardsChanges += 1
            snapshot.forwardsChanges = forwardsChanges
            let how = if actions.contains(.applyForwardChanges(diff)) {
                "applying them as map element changes"
            } else if actions.contains(.applyFirewall(.up)) {
                "committing the whole up ruleset with them (a forward map appears or goes)"
            } else {
                "in force from the next up commit (the \(after.requestedPolicy.map { "\($0)" } ?? "lockdown") ruleset holds no forwards)"
            }
            let message = "\(forwards.count) forwards (\(diff.removed.count) removed, \(diff.added.count) added): \(how)"
            snapshot.lastForwardsChange = .init(at: now, accepted: true, message: message)
            return [LogNote(.notice, "\(path) changed: \(message)")]
        }
    }

    private mutating func appliedForwards(_ diff: PortForwardDiff, results: [Event], elapsed: Duration,
                                          at now: String) -> [LogNote] {
        guard results.contains(.forwardChangesApplied(diff)) else { return [] }
        let milliseconds = Self.milliseconds(elapsed)
        snapshot.lastForwardsChange?.message += ", done in \(milliseconds) ms"
        return [LogNote(.notice, "applied \(diff.removed.count) forward deletes and \(diff.added.count) adds to the maps "
            + "in one transaction in \(milliseconds) ms")]
    }

    private mutating func refused(_ message: String, at now: String) -> [LogNote] {
        snapshot.lastReload = .init(at: now, accepted: false, message: message)
        return [LogNote(.error, "SIGHUP: reload refused, the configuration in use stays: \(message)")]
    }

    private mutating func probed(_ event: Event, before: Machine, after: Machine, at now: String) -> [LogNote] {
        let tunnel = after.tunnelInterface
        snapshot.probe?.lastAt = now
        switch event {
        case .probeFailed(let why):
            snapshot.probe?.lastResult = why
            let count = after.probeFailures > before.probeFailures
                ? "\(after.probeFailures) in a row" : "not counted: the tunnel is not running or the WAN is down"
            return [LogNote(.warning, "DNS probe through \(tunnel) failed (\(count)): \(why)")]
        default:
            snapshot.probe?.lastResult = "answered"
            return [LogNote(.debug, "DNS probe through \(tunnel) answered")]
        }
    }

    /// What the status shows of the machine itself.
    private mutating func refresh(from machine: Machine) {
        snapshot.openvpnPID = machine.tunnelPID
        // What the tunnel said holds only while the process that said it lives: after its end
        // (or for its successor, until it speaks) the state, address and remote are not shown.
        if let report, !(machine.tunnelProcessLive && machine.tunnelPID == report.pid) { self.report = nil }
        snapshot.openvpnState = report?.report.state
        snapshot.tunnelAddress = report?.report.tunnelAddress
        snapshot.remote = report?.report.remote
        guard let configuration = machine.configuration, let pins = machine.pins else { return }
        if machine.tunnelKind == .wireguard {
            let endpoints = machine.tunnelPlan?.wireGuard?.endpoints ?? [:]
            snapshot.wireGuard = WireGuardStatus(
                interface: machine.tunnelInterface, plane: "userspace",
                evidence: machine.wireGuardEvidence?.description,
                configuredEndpoints: Dictionary(uniqueKeysWithValues: endpoints.map { ($0.key.base64, "\($0.value.address):\($0.value.port)") }))
        }
        let path = configuration.openvpnConfigPath
        snapshot.findings = machine.openvpnFindings.map {
            StatusSnapshot.Finding(file: path, line: $0.line, directive: $0.directive, action: $0.action.rawValue,
                                   replacement: $0.replacement, level: $0.level.rawValue, reason: $0.reason)
        }
        snapshot.skippedRemotes = machine.skippedRemotes.isEmpty ? nil : machine.skippedRemotes.map(\.description)
        snapshot.endpoints = pins.endpoints.map(\.description)
        snapshot.resolvedRemotes = pins.resolved.isEmpty ? nil : pins.resolved.mapValues { $0.map(\.description) }
        snapshot.lanInterface = configuration.lanInterface
        snapshot.gateway = configuration.gateway.description
        if listedForwards != machine.portForwards {
            listedForwards = machine.portForwards
            snapshot.portForwards = machine.portForwards.map(\.description)
        }
        snapshot.overlay = configuration.overlay.map { overlay in
            "\(overlay.interface) vni \(overlay.settings.vni) port \(overlay.settings.port) over \(overlay.underlay), pods "
                + overlay.settings.podNetworks.map(\.description).joined(separator: ", ")
        }
        snapshot.portForwardFile = configuration.portForwardFile
        if let server = machine.probeServer, let interval = machine.probeInterval {
            if snapshot.probe == nil {
                snapshot.probe = .init(server: server.description, name: configuration.probe.name,
                                       intervalSeconds: Double(interval.components.seconds), consecutiveFailures: 0)
            }
            snapshot.probe?.consecutiveFailures = machine.probeFailures
        }
    }

    // MARK: Provider configurations

    /// Each finding of the vetting, once, at its level: `CONFIG=/config/vpn.ovpn:6: up /x: dropped: ...`.
    static func findingNotes(_ findings: [OpenVPNConfigFinding], path: String) -> [LogNote] {
        findings.map { finding in
            let level: Logger.Level = switch finding.level {
            case .notice: .notice
            case .warning: .warning
            case .error: .error
            }
            return LogNote(level, finding.located(in: path))
        }
    }

    /// What the provider's side of the machine did: a reload's new findings, the host names
    /// resolved again, the last resolution for the status.
    private mutating func narrateProvider(_ event: Event, before: Machine, after: Machine, actions: [Action],
                                          at now: String) -> [LogNote] {
        var notes: [LogNote] = []
        if case .configurationReloaded = event, let path = after.configuration?.openvpnConfigPath,
           after.openvpnFindings != before.openvpnFindings {
            let new = after.openvpnFindings.filter { !before.openvpnFindings.contains($0) }
            notes += Self.findingNotes(new, path: path)
        }
        if case .remoteRequested = event, let names = after.namesBeingReresolved, before.namesBeingReresolved == nil {
            let endpoints = before.pins?.endpoints.map(\.description).joined(separator: ", ") ?? "-"
            notes.append(LogNote(.notice, "every pinned address failed to connect since the tunnel was last up (\(endpoints)): "
                + "resolving \(names.joined(separator: ", ")) again"))
        }
        if let resolution = after.lastResolution, resolution != before.lastResolution {
            resolutions += 1
            let milliseconds = Self.milliseconds(resolution.elapsed)
            snapshot.resolutions = resolutions
            snapshot.lastResolution = .init(
                at: now, cause: resolution.cause.rawValue, names: resolution.names,
                addresses: resolution.addresses.mapValues { $0.map(\.description) },
                failures: resolution.failures.isEmpty ? nil : resolution.failures,
                milliseconds: Double(milliseconds) ?? 0, endpoints: resolution.endpoints.map(\.description))
            if resolution.cause == .everyEndpointFailed {
                let before = before.pins?.endpoints ?? []
                let changed = before == resolution.endpoints ? "the same endpoints" : "now \(resolution.endpoints.map(\.description).joined(separator: ", "))"
                let found = resolution.names.map { name in
                    resolution.addresses[name].map { "\(name) -> \($0.map(\.description).joined(separator: " "))" }
                        ?? "\(name) (\(resolution.failures[name] ?? "no answer"); its pins stay)"
                }
                notes.append(LogNote(.notice, "resolved again in \(milliseconds) ms: \(found.joined(separator: ", ")); \(changed)"))
            }
        }
        return notes
    }

    static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let micro = seconds * 1_000_000 + attoseconds / 1_000_000_000_000
        return "\(micro / 1000).\(String(micro % 1000 + 1000).dropFirst())"
    }
}
