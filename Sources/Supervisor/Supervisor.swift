import Actions
import FoundationEssentials
import Logging
import StateMachine
import SystemSupport
import Watchers

/// Everything `vpnsup run` was given, before validation.
public struct RunSettings: Sendable {
    /// Configuration values keyed by their environment names (flags already merged in).
    public var values: [String: String]
    /// Passed to OpenVPN after vpnsup's own options.
    public var openvpnArguments: [String]
    public var openvpnExecutable: String
    public var timings: Timings
    /// How long a configuration file (or RUNTIME_DIR's preparation) may take before it counts
    /// as unreadable: a local file takes microseconds.
    public var fileTimeout: Duration

    public init(values: [String: String], openvpnArguments: [String] = [], openvpnExecutable: String = "openvpn",
                timings: Timings = Timings(), fileTimeout: Duration = ConfigurationFile.defaultTimeout) {
        self.values = values
        self.openvpnArguments = openvpnArguments
        self.openvpnExecutable = openvpnExecutable
        self.timings = timings
        self.fileTimeout = fileTimeout
    }
}

/// The supervisor on Linux: the machine, the interpreter and the Linux effects with the OpenVPN
/// backend, put together.
public enum LinuxSupervisor {
    /// Runs until the machine exits; returns the exit code. Signals come through `signals`, which
    /// the signal watcher posts into (started by the caller with every handled signal blocked).
    public static func run(_ settings: RunSettings, logger: Logger, signals: HeldUntilOpened<SignalEvent>) async -> Int32 {
        let log = SupervisorLog(logger)
        let inbox = Inbox()
        let scope = TaskScope()
        let board = StatusBoard(startedAt: Date())
        let backend = OpenVPNBackend(executable: settings.openvpnExecutable, extraArguments: settings.openvpnArguments, log: log)
        let metrics = MetricsLedger()
        let effects: LinuxEffects
        do {
            effects = try LinuxEffects(settings: settings, log: log, inbox: inbox, scope: scope, board: board, backend: backend,
                                       metrics: metrics)
        } catch {
            // No thread for the effects: the kill switch cannot be armed.
            StandardError.writeLine("cannot start the effects thread: \(error)")
            return ExitCode.unavailable
        }
        let driver = Driver(machine: Machine(timings: settings.timings, seed: UInt64.random(in: .min ... .max)),
                            effects: effects, inbox: inbox, log: log, board: board, notifier: ServiceNotifier(), metrics: metrics)
        signals.open { [inbox] in inbox.post(.signal($0)) }
        return await driver.run(scope: scope, watchdog: ServiceNotifier.watchdogInterval())
    }
}
