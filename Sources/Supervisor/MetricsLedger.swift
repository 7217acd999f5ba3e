import FoundationEssentials
import Prometheus
import StateMachine
import Synchronization

/// The metrics only the stream of events can tell: how many transitions of each kind, OpenVPN
/// restarts, probe failures and latency, the last name resolution. The status snapshot holds none
/// of them (it keeps the last 20 transitions, not counts).
///
/// The driver feeds it: `record(_:from:to:)` once per event it handles, `probeAnswered(after:)`
/// with each answered probe's latency, and `resolved(at:took:)` after each resolution of the
/// remotes' host names. It lives as long as the process and is never persisted: a restart starts
/// every counter at 0, which Prometheus reads as a counter reset. Thread-safe: the driver records
/// while the responder's thread renders.
public final class MetricsLedger: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let restarts: Counter
    private let probeFailures: Counter
    private let probeDuration: DurationHistogram
    /// Whether the tunnel (OpenVPN) has been started once: later starts are restarts.
    private let tunnelStarted = Mutex(false)

    public init() {
        restarts = registry.makeCounter(descriptor: MetricFamily.openvpnRestarts.descriptor, labels: [])
        probeFailures = registry.makeCounter(descriptor: MetricFamily.probeFailures.descriptor, labels: [])
        probeDuration = registry.makeDurationHistogram(descriptor: MetricFamily.probeDuration.descriptor,
                                                       buckets: MetricFamily.probeBuckets)
    }

    /// What one handled event counts for. Pure: the ledger applies it.
    enum Entry: Hashable, Sendable {
        case transition(from: State, to: State)
        case tunnelStarted
        case probeFailed
    }

    static func entries(for event: Event, from: State, to: State) -> [Entry] {
        var entries: [Entry] = from == to ? [] : [.transition(from: from, to: to)]
        switch event {
        case .tunnelStarted: entries.append(.tunnelStarted)
        case .probeFailed: entries.append(.probeFailed)
        default: break
        }
        return entries
    }

    /// Once per event the driver handles, with the machine's state before and after it.
    func record(_ event: Event, from: State, to: State) {
        for entry in Self.entries(for: event, from: from, to: to) {
            switch entry {
            case .transition(let from, let to):
                registry.makeCounter(descriptor: MetricFamily.transitions.descriptor,
                                     labels: [("from", from.rawValue), ("to", to.rawValue)]).increment()
            case .tunnelStarted:
                let again = tunnelStarted.withLock { started in
                    defer { started = true }
                    return started
                }
                if again { restarts.increment() }
            case .probeFailed:
                probeFailures.increment()
            }
        }
    }

    /// A DNS probe through the tunnel was answered after `latency`.
    func probeAnswered(after latency: Duration) {
        probeDuration.record(latency)
    }

    /// The remotes' host names were resolved (successfully or not) at `time`, in `duration`.
    func resolved(at time: Date, took duration: Duration) {
        registry.makeGauge(descriptor: MetricFamily.resolutionTime.descriptor, labels: []).set(time.timeIntervalSince1970)
        registry.makeGauge(descriptor: MetricFamily.resolutionDuration.descriptor, labels: [])
            .set(Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
    }
}
