import FoundationEssentials
import StateMachine
import Watchers

/// Where the metrics of `vpnsup run` can be read: `RUNTIME_DIR/metrics.sock` always (for `vpnsup
/// metrics`), and `GET /metrics` at METRICS_LISTEN when it is set.
///
/// A socket of its own rather than a request on `status.sock`: the status socket's clients (an
/// older `vpnsup status` or `health`, scripts with socat) connect and read without sending a
/// thing, so a request there could only be told apart from them by waiting, and every status
/// would wait. `metrics.sock` keeps the same rules (mode 0600 root, or 0660 root:STATUS_GROUP in
/// the 0710 directory): whoever may read the status may read the metrics, which say no more.
public enum MetricsEndpoints {
    public static let socketName = "metrics.sock"

    /// Starts answering. `snapshot` gives the status with the kernel's counters read for the
    /// scrape; `ledger` the event-fed families.
    static func start(_ configuration: Configuration, statusGroup: UInt32?, ledger: MetricsLedger?,
                      snapshot: @escaping @Sendable () -> StatusSnapshot) throws -> MetricsResponder {
        try MetricsResponder.start(unixPath: configuration.runtimeDirectory + "/" + socketName, group: statusGroup,
                                   http: configuration.metricsListen) {
            MetricsExposition.render(snapshot(), now: Date(), ledger: ledger)
        }
    }
}
