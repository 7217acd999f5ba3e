import Foundation
import StateMachine
import Testing
@testable import Supervisor
import TestSupport


@Suite("Metrics exposition")
struct MetricsExpositionTests {
    static let now = Date(timeIntervalSince1970: 1_795_000_100.25)

    /// A router in TunnelUp with everything the status can hold.
    static var fullSnapshot: StatusSnapshot {
        var s = StatusSnapshot(since: "2026-11-18T11:06:40.000Z", pid: 42, startedAt: "2026-11-18T11:05:00.500Z")
        s.state = "TunnelUp"
        s.policy = "up"
        s.firewallRepairs = 3
        s.lastRepair = .init(at: "2026-11-18T09:47:00.000Z", change: "table deleted by nft (pid 7)", policy: "up", milliseconds: 3.5)
        s.blocked = ["input": .init(packets: 1, bytes: 60), "forward": .init(packets: 12, bytes: 840),
                     "output": .init(packets: 0, bytes: 0), "egress": .init(packets: 2, bytes: 152)]
        s.bytesIn = 48213
        s.bytesOut = 20411
        s.openvpnPID = 8593
        s.reconnects = 2
        s.portForwards = ["8080/tcp -> 172.22.0.10:80", "8080/udp -> 172.22.0.10:80", "2222/tcp -> 172.22.0.11:22"]
        s.reloads = 1
        s.lastReload = .init(at: "2026-11-18T09:48:00.000Z", accepted: false, message: "CONFIG=/config/x cannot be read")
        s.probe = .init(server: "10.8.0.1", name: "example.com", intervalSeconds: 10, lastAt: "2026-11-18T09:48:10.000Z",
                        lastResult: "answered", consecutiveFailures: 0)
        s.resolvedRemotes = ["vpn.example": ["198.51.100.1", "198.51.100.2"], "backup.example": ["203.0.113.5"]]
        return s
    }

    @Test func theSnapshotsValues() throws {
        let metrics = parse(MetricsExposition.render(Self.fullSnapshot, now: Self.now))
        for state in State.allCases {
            #expect(metrics.value(.state, ["state": state.rawValue]) == (state == .tunnelUp ? 1 : 0), "\(state)")
        }
        let since = try #require(MetricsExposition.timestamp("2026-11-18T11:06:40.000Z"))
        #expect(since.timeIntervalSince1970 == 1_795_000_000)
        #expect(metrics.value(.stateSeconds) == 100.25)
        #expect(metrics.value(.startTime) == 1_794_999_900.5)
        #expect(metrics.value(.firewallPolicy, ["policy": "up"]) == 1)
        #expect(metrics.value(.firewallPolicy, ["policy": "lockdown"]) == 0)
        #expect(metrics.value(.firewallPolicy, ["policy": "connecting"]) == 0)
        #expect(metrics.value(.firewallRepairs) == 3)
        #expect(metrics.value(.firewallRepairDuration) == 0.0035)
        #expect(metrics.value(.droppedPackets, ["chain": "forward"]) == 12)
        #expect(metrics.value(.droppedBytes, ["chain": "forward"]) == 840)
        #expect(metrics.value(.droppedPackets, ["chain": "egress"]) == 2)
        #expect(metrics.value(.droppedBytes, ["chain": "input"]) == 60)
        #expect(metrics.value(.droppedPackets, ["chain": "output"]) == 0)
        #expect(metrics.value(.tunnelReceiveBytes) == 48213)
        #expect(metrics.value(.tunnelTransmitBytes) == 20411)
        #expect(metrics.value(.openvpnRunning) == 1)
        #expect(metrics.value(.openvpnReconnects) == 2)
        #expect(metrics.value(.portForwards) == 3)
        #expect(metrics.value(.reloads) == 1)
        #expect(metrics.value(.reloadLastSuccessful) == 0)
        #expect(metrics.value(.probeConsecutiveFailures) == 0)
        #expect(metrics.value(.probeLastSuccess) == 1)
        #expect(metrics.value(.resolutionAddresses) == 3)
        // Without a ledger, no event-fed family is shown (rather than a 0 nobody counted).
        for family in MetricFamily.allCases where family.fromLedger {
            #expect(!metrics.has(family), "\(family.rawValue)")
        }
        for family in MetricFamily.allCases where !family.fromLedger {
            #expect(metrics.has(family), "\(family.rawValue)")
        }
    }

    @Test func whatTheSnapshotDoesNotHoldIsLeftOut() {
        // Just started: no configuration, no policy, no tun0, no probe, no reload, no host names.
        let snapshot = StatusSnapshot(since: "2026-11-18T11:06:40.000Z", pid: 42, startedAt: "2026-11-18T11:06:40.000Z")
        let metrics = parse(MetricsExposition.render(snapshot, now: Self.now))
        #expect(metrics.value(.state, ["state": "Init"]) == 1)
        #expect(metrics.samples.filter { $0.name == MetricFamily.firewallPolicy.rawValue }.allSatisfy { $0.value == 0 })
        #expect(metrics.value(.firewallRepairs) == 0)
        #expect(metrics.value(.openvpnRunning) == 0)
        #expect(metrics.value(.openvpnReconnects) == 0)
        #expect(metrics.value(.reloads) == 0)
        for family: MetricFamily in [.firewallRepairDuration, .droppedPackets, .droppedBytes, .tunnelReceiveBytes,
                                     .tunnelTransmitBytes, .portForwards, .reloadLastSuccessful, .probeConsecutiveFailures,
                                     .probeLastSuccess, .resolutionAddresses] {
            #expect(!metrics.has(family), "\(family.rawValue)")
        }
        var probing = snapshot
        probing.probe = .init(server: "10.8.0.1", name: "example.com", intervalSeconds: 10, lastAt: "t",
                              lastResult: "no answer from 10.8.0.1 within 2 s", consecutiveFailures: 2)
        let failing = parse(MetricsExposition.render(probing, now: Self.now))
        #expect(failing.value(.probeLastSuccess) == 0)
        #expect(failing.value(.probeConsecutiveFailures) == 2)
    }

    /// Every family has one HELP and one TYPE line of the kind its name promises; families come
    /// sorted by name, each sample under its own family; names follow Prometheus' conventions.
    @Test func theFormat() throws {
        let ledger = MetricsLedger()
        ledger.record(.lanAddressPresent, from: .initial, to: .addressAssigned)
        ledger.record(.tunnelStarted(pid: 42), from: .addressAssigned, to: .tunnelConnecting)
        ledger.record(.probeFailed("no answer"), from: .tunnelUp, to: .tunnelUp)
        ledger.probeAnswered(after: .milliseconds(30))
        ledger.resolved(at: Self.now, took: .milliseconds(12))
        let text = String(decoding: MetricsExposition.render(Self.fullSnapshot, now: Self.now, ledger: ledger), as: UTF8.self)
        let metrics = ParsedExposition(text)
        #expect(text.hasSuffix("\n"))
        #expect(Set(metrics.families) == Set(MetricFamily.allCases.map(\.rawValue)), "every family, and no other")
        #expect(metrics.families == metrics.families.sorted())
        for family in MetricFamily.allCases {
            #expect(metrics.types[family.rawValue] == family.kind.rawValue, "\(family.rawValue)")
            #expect(metrics.helps[family.rawValue] == family.help)
            #expect(family.rawValue.hasPrefix("vpnsup_"))
            #expect(family.rawValue.allSatisfy { $0.isLowercase || $0 == "_" }, "snake case, no digits: \(family.rawValue)")
            #expect((family.kind == .counter) == family.rawValue.hasSuffix("_total"))
            if family.rawValue.contains("time") || family.rawValue.contains("duration") {
                #expect(family.rawValue.hasSuffix("_seconds"), "times in seconds: \(family.rawValue)")
            }
        }
        // Each sample sits in the block of its own family.
        var current = ""
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# HELP ") { current = String(line.split(separator: " ")[2]) }
            if line.hasPrefix("#") { continue }
            let name = String(line.prefix { $0 != "{" && $0 != " " })
            let family = ["_bucket", "_sum", "_count"].reduce(name) { name, suffix in
                metrics.types[current] == "histogram" && name.hasSuffix(suffix) ? String(name.dropLast(suffix.count)) : name
            }
            #expect(family == current, "\(line) under \(current)")
        }
    }

    /// The status JSON the status socket sends decodes to the snapshot the exposition is made of:
    /// `status --json` and a scrape say the same.
    @Test func theStatusJSONRoundTrips() throws {
        let board = StatusBoard(startedAt: Date(timeIntervalSince1970: 1_795_000_000))
        board.update {
            $0.portForwards = ["8080/tcp -> 172.22.0.10:80"]
            $0.firewallRepairs = 4
        }
        board.update { $0.recordTransition(from: .initial, to: .addressAssigned, cause: "lanAddressPresent", reason: nil, at: StatusBoard.timestamp(Date())) }
        let json = board.json(blocked: ["forward": BlockedCount(packets: 7, bytes: 420)], traffic: nil)
        let snapshot = try JSONDecoder().decode(StatusSnapshot.self, from: Data(json))
        let metrics = parse(MetricsExposition.render(snapshot, now: Date()))
        #expect(metrics.value(.state, ["state": "AddressAssigned"]) == 1)
        #expect(metrics.value(.portForwards) == 1)
        #expect(metrics.value(.firewallRepairs) == 4)
        #expect(metrics.value(.droppedPackets, ["chain": "forward"]) == 7)
        #expect(!metrics.has(.tunnelReceiveBytes))
        let seconds = try #require(metrics.value(.stateSeconds))
        #expect(seconds >= 0 && seconds < 3600)
    }

    @Test func theOrderIsStable() {
        let snapshot = Self.fullSnapshot
        let first = MetricsExposition.render(snapshot, now: Self.now)
        for _ in 0..<5 { #expect(MetricsExposition.render(snapshot, now: Self.now) == first) }
    }

    /// docs/operations.md lists every metric.
    @Test func everyFamilyIsDocumented() throws {
        let doc = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/operations.md"), encoding: .utf8)
        for family in MetricFamily.allCases {
            #expect(doc.contains("`\(family.rawValue)"), "\(family.rawValue) is not in docs/operations.md")
        }
    }
}

@Suite("Metrics ledger")
struct MetricsLedgerTests {
    @Test func whatEachEventCountsFor() {
        #expect(MetricsLedger.entries(for: .lanAddressPresent, from: .initial, to: .addressAssigned)
            == [.transition(from: .initial, to: .addressAssigned)])
        #expect(MetricsLedger.entries(for: .tunnelLinkUp, from: .tunnelUp, to: .tunnelUp) == [], "no transition, nothing else")
        #expect(MetricsLedger.entries(for: .tunnelStarted(pid: 42), from: .addressAssigned, to: .tunnelConnecting)
            == [.transition(from: .addressAssigned, to: .tunnelConnecting), .tunnelStarted])
        #expect(MetricsLedger.entries(for: .tunnelStarted(pid: 42), from: .tunnelConnecting, to: .tunnelConnecting) == [.tunnelStarted])
        #expect(MetricsLedger.entries(for: .probeFailed("no answer"), from: .tunnelUp, to: .degraded)
            == [.transition(from: .tunnelUp, to: .degraded), .probeFailed])
        #expect(MetricsLedger.entries(for: .probeSucceeded, from: .degraded, to: .tunnelUp) == [.transition(from: .degraded, to: .tunnelUp)])
    }

    @Test func countsTransitionsRestartsAndFailures() {
        let ledger = MetricsLedger()
        let fresh = parse(MetricsExposition.render(MetricsExpositionTests.fullSnapshot, now: MetricsExpositionTests.now, ledger: ledger))
        #expect(fresh.value(.openvpnRestarts) == 0)
        #expect(fresh.value(.probeFailures) == 0)
        #expect(fresh.value(MetricFamily.probeDuration.sample("_count")) == 0)
        #expect(!fresh.has(.transitions), "no transition yet, no series")
        #expect(!fresh.has(.resolutionTime) && !fresh.has(.resolutionDuration), "no resolution yet")

        let events: [(Event, State, State)] = [
            (.start, .initial, .initial),
            (.lanAddressPresent, .initial, .addressAssigned),
            (.tunnelStarted(pid: 42), .addressAssigned, .tunnelConnecting),          // the first start
            (.tunnelConnected, .tunnelConnecting, .tunnelUp),
            (.probeFailed("a"), .tunnelUp, .tunnelUp),
            (.probeFailed("b"), .tunnelUp, .tunnelUp),
            (.probeFailed("c"), .tunnelUp, .degraded),
            (.probeSucceeded, .degraded, .tunnelUp),
            (.tunnelProcessExited(.exited(1)), .tunnelUp, .tunnelConnecting),
            (.tunnelStarted(pid: 42), .tunnelConnecting, .tunnelConnecting),         // a restart
            (.tunnelConnected, .tunnelConnecting, .tunnelUp),
            (.tunnelStarted(pid: 42), .tunnelUp, .tunnelUp),                          // another
        ]
        for (event, from, to) in events { ledger.record(event, from: from, to: to) }
        for latency in [Duration.milliseconds(3), .milliseconds(30), .milliseconds(30), .milliseconds(700), .seconds(20)] {
            ledger.probeAnswered(after: latency)
        }
        ledger.resolved(at: Date(timeIntervalSince1970: 1_795_000_000.5), took: .milliseconds(42))

        let metrics = parse(MetricsExposition.render(MetricsExpositionTests.fullSnapshot, now: MetricsExpositionTests.now, ledger: ledger))
        #expect(metrics.value(.transitions, ["from": "Init", "to": "AddressAssigned"]) == 1)
        #expect(metrics.value(.transitions, ["from": "TunnelConnecting", "to": "TunnelUp"]) == 2)
        #expect(metrics.value(.transitions, ["from": "TunnelUp", "to": "Degraded"]) == 1)
        #expect(metrics.value(.transitions, ["from": "Degraded", "to": "TunnelUp"]) == 1)
        #expect(metrics.value(.transitions, ["from": "TunnelUp", "to": "TunnelConnecting"]) == 1)
        #expect(metrics.value(.transitions, ["from": "AddressAssigned", "to": "TunnelConnecting"]) == 1)
        #expect(metrics.samples.filter { $0.name == MetricFamily.transitions.rawValue }.count == 6)
        #expect(metrics.value(.openvpnRestarts) == 2)
        #expect(metrics.value(.probeFailures) == 3)
        // Cumulative buckets: le is the upper bound, inclusive.
        let buckets = metrics.samples.filter { $0.name == "vpnsup_probe_duration_seconds_bucket" }
        let byBound = Dictionary(uniqueKeysWithValues: buckets.map { ($0.labels["le"]!, $0.value) })
        #expect(byBound["0.005"] == 1)
        #expect(byBound["0.025"] == 1)
        #expect(byBound["0.05"] == 3)
        #expect(byBound["0.5"] == 3)
        #expect(byBound["1.0"] == 4)
        #expect(byBound["10.0"] == 4)
        #expect(byBound["+Inf"] == 5)
        #expect(buckets.map(\.value) == buckets.map(\.value).sorted(), "in bucket order")
        #expect(metrics.value(MetricFamily.probeDuration.sample("_count")) == 5)
        #expect(abs((metrics.value(MetricFamily.probeDuration.sample("_sum")) ?? 0) - 20.763) < 1e-9)
        #expect(metrics.value(.resolutionTime) == 1_795_000_000.5)
        #expect(metrics.value(.resolutionDuration) == 0.042)
    }

    @Test func recordsFromManyThreadsAtOnce() async {
        let ledger = MetricsLedger()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    for round in 0..<500 {
                        ledger.record(.probeFailed("x"), from: .tunnelUp, to: .degraded)
                        ledger.probeAnswered(after: .milliseconds(1))
                        if round % 100 == 0 { _ = MetricsExposition.render(MetricsExpositionTests.fullSnapshot, now: Date(), ledger: ledger) }
                    }
                }
            }
        }
        let metrics = parse(MetricsExposition.render(MetricsExpositionTests.fullSnapshot, now: Date(), ledger: ledger))
        #expect(metrics.value(.probeFailures) == 4000)
        #expect(metrics.value(.transitions, ["from": "TunnelUp", "to": "Degraded"]) == 4000)
        #expect(metrics.value(MetricFamily.probeDuration.sample("_count")) == 4000)
    }
}

extension MetricFamily {
    /// A histogram's `_count` / `_sum` series, looked up like a family of its own.
    func sample(_ suffix: String) -> MetricFamily.Series { Series(name: rawValue + suffix) }

    struct Series { var name: String }
}

extension ParsedExposition {
    func value(_ series: MetricFamily.Series) -> Double? {
        samples.first { $0.name == series.name && $0.labels.isEmpty }?.value
    }
}
