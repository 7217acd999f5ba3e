import Actions
import ArgumentParser
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
enum MetricsEndpoints {
    static let socketName = "metrics.sock"
    /// How long a scrape waits for the status (the status socket answers in well under a millisecond).
    static let statusDeadline: Duration = .seconds(1)

    /// Starts answering. `snapshot` gives the status with the kernel's counters read for the
    /// scrape, nil when there is none yet; `ledger` the event-fed families, when the driver keeps one.
    static func start(_ configuration: Configuration, statusGroup: UInt32?, ledger: MetricsLedger?,
                      snapshot: @escaping @Sendable () -> StatusSnapshot?) throws -> MetricsResponder {
        try MetricsResponder.start(unixPath: configuration.runtimeDirectory + "/" + socketName, group: statusGroup,
                                   http: configuration.metricsListen) {
            snapshot().map { MetricsExposition.render($0, now: Date(), ledger: ledger) }
        }
    }

    /// The status as the status socket at `path` tells it: how the endpoints get it while they
    /// run beside the driver rather than inside it.
    static func statusFromSocket(_ path: String) -> StatusSnapshot? {
        guard let bytes = try? MetricsResponder.fetch(from: path, within: statusDeadline) else { return nil }
        return try? JSONDecoder().decode(StatusSnapshot.self, from: Data(bytes))
    }
}

/// Starts the metrics endpoints for `vpnsup run` beside the driver, until the driver starts them
/// itself (with its StatusBoard and a MetricsLedger it feeds, as MetricsLedger says): they read the
/// status through the status socket, and there is no ledger, so the event-fed families are left out.
enum MetricsBeside {
    /// nil when the configuration is not valid (the driver refuses it: exit 78 with its line). A
    /// valid METRICS_LISTEN that cannot be listened on is refused the same way: the lockdown is
    /// committed, one line names the variable, exit 78.
    static func start(values: [String: String]) -> MetricsResponder? {
        guard let configuration = try? Configuration(values) else { return nil }
        var group: UInt32?
        if let name = configuration.statusGroup {
            guard let id = GroupDatabase.groupID(name) else { return nil }
            group = id
        }
        do {
            try RuntimeDirectory.prepare(configuration.runtimeDirectory, statusGroup: group)
        } catch {
            return nil
        }
        let statusPath = configuration.runtimeDirectory + "/status.sock"
        do {
            return try MetricsEndpoints.start(configuration, statusGroup: group, ledger: nil) {
                MetricsEndpoints.statusFromSocket(statusPath)
            }
        } catch let error as MetricsResponderError {
            refuse("METRICS_LISTEN=\(configuration.metricsListen.map(\.description) ?? "") cannot be listened on: \(error)")
        } catch {
            refuse("RUNTIME_DIR=\(configuration.runtimeDirectory): \(error)")
        }
    }

    /// As the machine refuses a configuration: the lockdown first, then one line and 78 (71 when
    /// the lockdown itself cannot be committed).
    private static func refuse(_ line: String) -> Never {
        do {
            try Firewall().commit(.lockdown)
        } catch {
            StandardError.writeLine("cannot commit the lockdown ruleset: \(error)")
            Termination.exit(StateMachine.ExitCode.unavailable)
        }
        StandardError.writeLine(line)
        Termination.exit(StateMachine.ExitCode.configuration)
    }
}

/// `vpnsup metrics`: the running supervisor's metrics, in the Prometheus text format.
struct MetricsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metrics",
        abstract: "Print the running supervisor's metrics (Prometheus text format; see docs/operations.md)."
    )

    @Option(help: "Directory of vpnsup's sockets. Env: RUNTIME_DIR (default /run/vpnsup).")
    var runtimeDir: String?

    func run() throws {
        let directory = runtimeDir ?? ProcessInfo.processInfo.environment["RUNTIME_DIR"] ?? Configuration.defaultRuntimeDirectory
        let path = directory + "/" + MetricsEndpoints.socketName
        let bytes: [UInt8]
        do {
            bytes = try MetricsResponder.fetch(from: path, within: .seconds(5))
        } catch {
            StandardError.writeLine("vpnsup metrics: no supervisor answers at \(path) (\(error))")
            throw ExitCode(69) // EX_UNAVAILABLE
        }
        guard !bytes.isEmpty else {
            StandardError.writeLine("vpnsup metrics: the supervisor at \(directory) has no status yet")
            throw ExitCode(69)
        }
        print(String(decoding: bytes, as: UTF8.self), terminator: "")
    }
}

extension TunnelProbe {
    /// `measure()` on a thread of its own, as `runOnOwnThread()` runs the probe: the latency for
    /// the ledger comes with the outcome.
    func measureOnOwnThread() async -> TunnelProbe.Measurement {
        await withCheckedContinuation { continuation in
            do {
                try ReaderThread.start(name: "vpnsup-probe") {
                    continuation.resume(returning: self.measure())
                }
            } catch {
                continuation.resume(returning: .init(failure: "no thread for the probe: \(error)", latency: .zero))
            }
        }
    }
}
