import Actions
import ArgumentParser
import FoundationEssentials
import StateMachine
import Supervisor
import Watchers

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
