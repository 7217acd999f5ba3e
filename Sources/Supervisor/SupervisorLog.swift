import Logging
import Synchronization

/// The log, held back until the configuration is judged: a bad configuration must get stderr to
/// itself (one line, exit 78), so what is logged before (the lockdown's commit, name resolution)
/// waits, and is written once the machine accepts the configuration (`open`), or never. Lines
/// marked immediate (signals, transitions) are written at once.
public final class SupervisorLog: Sendable {
    public let logger: Logger
    private let held = Mutex<(open: Bool, lines: [LogNote])>((false, []))

    public init(_ logger: Logger) {
        self.logger = logger
    }

    public func log(_ note: LogNote) {
        let now = note.immediate || held.withLock { state in
            if !state.open { state.lines.append(note) }
            return state.open
        }
        if now { write(note) }
    }

    public func log(_ level: Logger.Level, _ message: String) {
        log(LogNote(level, message))
    }

    /// The configuration is accepted: what waited is written, and nothing waits from now on.
    public func open() {
        let lines = held.withLock { state in
            defer { state = (true, []) }
            return state.open ? [] : state.lines
        }
        lines.forEach(write)
    }

    private func write(_ note: LogNote) {
        logger.log(level: note.level, "\(note.message)",
                   metadata: note.metadata.isEmpty ? nil : note.metadata.mapValues { .string($0) },
                   source: logger.label)
    }
}
