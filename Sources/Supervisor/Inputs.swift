import Logging
import StateMachine
import Watchers

/// Everything the interpreter takes in, one at a time, in the order it arrived.
public enum Input: Sendable {
    case signal(SignalEvent)
    case netlink(NetlinkEvent)
    case nftables(NftablesEvent)
    /// The tunnel's control channel, translated by its backend.
    case tunnel(Translation)
    /// An effect's outcome that came later (a timer, a DNS probe, a name resolution).
    case event(Event)
    /// The systemd watchdog's tick: answered only when the interpreter gets to run it.
    case watchdog
}

/// What an input means: events for the machine, lines for the log, facts for the status.
public struct Translation: Sendable, Equatable {
    public var events: [Event]
    public var notes: [LogNote]
    /// What the tunnel reported about its connection (status only: the machine's decisions
    /// come from `events`).
    public var report: TunnelReport?

    public init(events: [Event] = [], notes: [LogNote] = [], report: TunnelReport? = nil) {
        self.events = events
        self.notes = notes
        self.report = report
    }
}

/// One line for the log.
public struct LogNote: Sendable, Equatable {
    public var level: Logger.Level
    public var message: String
    public var metadata: [String: String]
    /// Written even before the configuration is judged (signals, transitions); other lines wait,
    /// so that a bad configuration gets stderr to itself.
    public var immediate: Bool

    public init(_ level: Logger.Level, _ message: String, metadata: [String: String] = [:], immediate: Bool = false) {
        self.level = level
        self.message = message
        self.metadata = metadata
        self.immediate = immediate
    }
}

/// The tunnel's own account of its connection, as the status shows it.
public struct TunnelReport: Sendable, Equatable {
    /// The backend's name for its state (OpenVPN: `CONNECTED`, `RECONNECTING`...).
    public var state: String
    /// Set when connected: the tunnel's address and the server's `address:port`.
    public var tunnelAddress: String?
    public var remote: String?
    public var connected: Bool

    public init(state: String, connected: Bool, tunnelAddress: String? = nil, remote: String? = nil) {
        self.state = state
        self.connected = connected
        self.tunnelAddress = tunnelAddress
        self.remote = remote
    }
}

/// `vpnsup run`'s queue of inputs.
public typealias Inbox = Mailbox<Input>

/// An interpreter's queue of inputs (`Inbox` for `vpnsup run`, `JoinInbox` for `vpnsup join`):
/// watchers, signals, timers and background effects post to it from any thread; the interpreter
/// alone takes from it.
public final class Mailbox<Item: Sendable>: Sendable {
    public let inputs: AsyncStream<Item>
    private let continuation: AsyncStream<Item>.Continuation

    public init() {
        // Unbounded: dropping a process exit or a netlink report would be worse than the memory.
        (inputs, continuation) = AsyncStream.makeStream(of: Item.self, bufferingPolicy: .unbounded)
    }

    public func post(_ input: Item) { continuation.yield(input) }
}

/// Tasks the effects start while the supervisor runs (reading and reloading the files), owned by
/// the run command's task group: `run()` is one child of that group, and runs each job as a child of its
/// own, so cancelling the group cancels them all and waits for them.
public final class TaskScope: Sendable {
    public typealias Job = @Sendable () async -> Void
    private let jobs: AsyncStream<Job>
    private let continuation: AsyncStream<Job>.Continuation

    public init() {
        (jobs, continuation) = AsyncStream.makeStream(of: Job.self, bufferingPolicy: .unbounded)
    }

    public func spawn(_ job: @escaping Job) { continuation.yield(job) }

    /// Runs the jobs until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for await job in jobs {
                group.addTask { await job() }
            }
        }
    }
}
