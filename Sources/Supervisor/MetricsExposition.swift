import FoundationEssentials
import Prometheus
import StateMachine

/// Every metric vpnsup exposes: its name, type and help. The exposition, docs/operations.md and
/// the tests all go by this list.
public enum MetricFamily: String, CaseIterable, Sendable {
    // From the status snapshot, at each scrape.
    case state = "vpnsup_state"
    case stateSeconds = "vpnsup_state_seconds"
    case startTime = "vpnsup_start_time_seconds"
    case firewallPolicy = "vpnsup_firewall_policy"
    case firewallRepairs = "vpnsup_firewall_repairs_total"
    case firewallRepairDuration = "vpnsup_firewall_repair_last_duration_seconds"
    case droppedPackets = "vpnsup_dropped_packets_total"
    case droppedBytes = "vpnsup_dropped_bytes_total"
    case tunnelReceiveBytes = "vpnsup_tunnel_receive_bytes_total"
    case tunnelTransmitBytes = "vpnsup_tunnel_transmit_bytes_total"
    case openvpnRunning = "vpnsup_openvpn_running"
    case openvpnReconnects = "vpnsup_openvpn_reconnects_total"
    case portForwards = "vpnsup_port_forwards"
    case reloads = "vpnsup_reloads_total"
    case reloadLastSuccessful = "vpnsup_reload_last_successful"
    case probeConsecutiveFailures = "vpnsup_probe_consecutive_failures"
    case probeLastSuccess = "vpnsup_probe_last_success"
    case resolutionAddresses = "vpnsup_resolution_last_addresses"
    // From the ledger the driver feeds (MetricsLedger).
    case transitions = "vpnsup_transitions_total"
    case openvpnRestarts = "vpnsup_openvpn_restarts_total"
    case probeFailures = "vpnsup_probe_failures_total"
    case probeDuration = "vpnsup_probe_duration_seconds"
    case resolutionTime = "vpnsup_resolution_last_timestamp_seconds"
    case resolutionDuration = "vpnsup_resolution_last_duration_seconds"

    enum Kind: String { case counter, gauge, histogram }

    var kind: Kind {
        if rawValue.hasSuffix("_total") { return .counter }
        return self == .probeDuration ? .histogram : .gauge
    }

    /// Whether the driver's ledger, not the status snapshot, is where the values come from.
    var fromLedger: Bool {
        switch self {
        case .transitions, .openvpnRestarts, .probeFailures, .probeDuration, .resolutionTime, .resolutionDuration: true
        default: false
        }
    }

    var help: String {
        switch self {
        case .state: "1 for the supervisor's current state, 0 for the five others"
        case .stateSeconds: "Seconds since the current state was entered"
        case .startTime: "When the supervisor started, in seconds since the Unix epoch"
        case .firewallPolicy: "1 for the firewall policy last committed (lockdown, connecting, up), 0 for the others"
        case .firewallRepairs: "Outside changes to table inet vpnsup undone by committing the policy again"
        case .firewallRepairDuration: "Seconds the last repair's re-commit took (transaction and read-back)"
        case .droppedPackets: "Packets the kill switch's counted drops have dropped, per filter chain, as the kernel counts them (reset by each commit)"
        case .droppedBytes: "Bytes the kill switch's counted drops have dropped, per filter chain, as the kernel counts them (reset by each commit)"
        case .tunnelReceiveBytes: "Bytes received through tun0, as the kernel counts them (absent without tun0)"
        case .tunnelTransmitBytes: "Bytes sent through tun0, as the kernel counts them (absent without tun0)"
        case .openvpnRunning: "1 while an OpenVPN process runs under the supervisor"
        case .openvpnReconnects: "signal SIGUSR1 sent to OpenVPN because the tunnel stopped carrying traffic"
        case .portForwards: "Port forwards applied (one per public port and protocol)"
        case .reloads: "SIGHUP reloads accepted"
        case .reloadLastSuccessful: "1 when the last SIGHUP reload was accepted, 0 when it was refused"
        case .probeConsecutiveFailures: "DNS probe failures in a row"
        case .probeLastSuccess: "1 when the last DNS probe through the tunnel was answered, 0 when it failed"
        case .resolutionAddresses: "Addresses the remotes' host names resolved to and are pinned at"
        case .transitions: "State transitions, by the state left and the state entered"
        case .openvpnRestarts: "OpenVPN processes started after the first"
        case .probeFailures: "DNS probes through the tunnel that got no answer"
        case .probeDuration: "Seconds from asking to the answer, of DNS probes through the tunnel that were answered"
        case .resolutionTime: "When the remotes' host names were last resolved, in seconds since the Unix epoch"
        case .resolutionDuration: "Seconds the last resolution of the remotes' host names took"
        }
    }

    /// Bucket bounds of `vpnsup_probe_duration_seconds`: a tunnel's round trip, up to the longest timeout.
    static let probeBuckets: [Duration] = [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                                           .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                                           .seconds(2.5), .seconds(5), .seconds(10)]

    var descriptor: MetricNameDescriptor {
        MetricNameDescriptor(metricName: rawValue, unitName: "", helpText: help)
    }
}

/// The Prometheus text exposition: what `vpnsup metrics` prints and `GET /metrics` returns.
enum MetricsExposition {
    /// The exposition of `snapshot` (the status, with the kernel's counters read for this scrape)
    /// at `now`, plus the ledger's families when there is a ledger. Families sorted by name.
    static func render(_ snapshot: StatusSnapshot, now: Date, ledger: MetricsLedger? = nil) -> [UInt8] {
        let registry = PrometheusCollectorRegistry()
        project(snapshot, now: now, into: registry)
        var text = registry.emitToBuffer()
        ledger?.registry.emit(into: &text)
        return sortedByFamily(text)
    }

    /// The snapshot's values as metrics. Families whose value the snapshot does not hold (no
    /// tun0, no probe, no reload yet...) are left out rather than shown as 0.
    static func project(_ s: StatusSnapshot, now: Date, into registry: PrometheusCollectorRegistry) {
        func gauge(_ family: MetricFamily, _ value: Double, labels: [(String, String)] = []) {
            registry.makeGauge(descriptor: family.descriptor, labels: labels).set(value)
        }
        func counter(_ family: MetricFamily, _ value: UInt64, labels: [(String, String)] = []) {
            registry.makeCounter(descriptor: family.descriptor, labels: labels).increment(by: Int64(clamping: value))
        }
        for state in State.allCases {
            gauge(.state, state.rawValue == s.state ? 1 : 0, labels: [("state", state.rawValue)])
        }
        if let since = timestamp(s.since) {
            gauge(.stateSeconds, max(0, now.timeIntervalSince(since)))
        }
        if let started = timestamp(s.startedAt) {
            gauge(.startTime, started.timeIntervalSince1970)
        }
        for policy in FirewallPolicy.allCases {
            gauge(.firewallPolicy, policy.rawValue == s.policy ? 1 : 0, labels: [("policy", policy.rawValue)])
        }
        counter(.firewallRepairs, UInt64(max(0, s.firewallRepairs ?? 0)))
        if let repair = s.lastRepair {
            gauge(.firewallRepairDuration, repair.milliseconds / 1000)
        }
        for (chain, count) in s.blocked ?? [:] {
            counter(.droppedPackets, count.packets, labels: [("chain", chain)])
            counter(.droppedBytes, count.bytes, labels: [("chain", chain)])
        }
        if let received = s.bytesIn { counter(.tunnelReceiveBytes, received) }
        if let sent = s.bytesOut { counter(.tunnelTransmitBytes, sent) }
        gauge(.openvpnRunning, s.openvpnPID == nil ? 0 : 1)
        counter(.openvpnReconnects, UInt64(max(0, s.reconnects ?? 0)))
        if let forwards = s.portForwards { gauge(.portForwards, Double(forwards.count)) }
        counter(.reloads, UInt64(max(0, s.reloads ?? 0)))
        if let reload = s.lastReload { gauge(.reloadLastSuccessful, reload.accepted ? 1 : 0) }
        if let probe = s.probe {
            gauge(.probeConsecutiveFailures, Double(probe.consecutiveFailures))
            if let result = probe.lastResult { gauge(.probeLastSuccess, result == "answered" ? 1 : 0) }
        }
        if let resolved = s.resolvedRemotes {
            gauge(.resolutionAddresses, Double(resolved.values.reduce(0) { $0 + $1.count }))
        }
    }

    /// The status's timestamps (`2026-11-28T08:30:04.877Z`).
    static func timestamp(_ text: String) -> Date? {
        try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text)
    }

    /// swift-prometheus writes families in its dictionary's order, which changes from run to run;
    /// people and diffs read a stable order: families by name, and the samples of a counter or
    /// gauge by their labels (a histogram's samples keep their bucket order).
    static func sortedByFamily(_ text: [UInt8]) -> [UInt8] {
        var families: [(name: String, lines: [Substring])] = []
        for line in String(decoding: text, as: UTF8.self).split(separator: "\n") {
            if line.hasPrefix("# HELP ") || families.isEmpty {
                let name = line.split(separator: " ", maxSplits: 3).dropFirst(2).first.map(String.init) ?? ""
                families.append((name, [line]))
            } else {
                families[families.count - 1].lines.append(line)
            }
        }
        var result = ""
        for family in families.sorted(by: { $0.name < $1.name }) {
            let header = family.lines.prefix { $0.hasPrefix("#") }
            var samples = Array(family.lines.dropFirst(header.count))
            if !header.contains(where: { $0.hasPrefix("# TYPE ") && $0.hasSuffix(" histogram") }) { samples.sort() }
            for line in header + samples { result += line + "\n" }
        }
        return Array(result.utf8)
    }
}
