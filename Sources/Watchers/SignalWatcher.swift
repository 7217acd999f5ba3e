import Glibc
import StateMachine
import Synchronization
import SystemSupport

public enum SignalEvent: Sendable, Hashable {
    /// SIGTERM or SIGINT: shut down.
    case terminate(Int32)
    /// SIGHUP.
    case reload
    /// A child (or an orphan re-parented to PID 1) ended and has been reaped.
    case childExited(pid: Int32, status: ExitStatus)
}

/// Receives vpnsup's signals on a dedicated thread, with every handled signal blocked everywhere.
///
/// Blocked signals stay pending until the watcher thread takes them with sigwait(2), which is how
/// a PID 1 gets SIGTERM at all: the kernel drops default-action signals sent to a namespace's init,
/// but never blocked ones. (sigwait rather than a signalfd: `<sys/signalfd.h>` is not in Swift's
/// Glibc module; the semantics are the same.) On each SIGCHLD it reaps every exited child with
/// `waitpid(-1, WNOHANG)` until none is left, because SIGCHLDs coalesce and PID 1 inherits orphans.
/// It is therefore the process's only reaper: nothing else may wait for children.
public final class SignalWatcher: Sendable {
    /// SIGTERM, SIGINT, SIGHUP, SIGCHLD.
    public static let handledSignals: [Int32] = [SIGTERM, SIGINT, SIGHUP, SIGCHLD]

    /// Unbounded: a child's exit must never be dropped. Empty when the watcher was started with a
    /// receiver.
    public let events: AsyncStream<SignalEvent>
    private let thread = Mutex<pthread_t?>(nil)
    private static let started = Atomic(false)
    /// The watcher thread's kernel id: while it waits in sigwait the kernel shows its signals as
    /// unblocked, which `threadsNotBlocking` must not count.
    private static let watcherThreadID = Atomic<Int32>(0)

    /// Blocks `handledSignals` in the calling thread. Call it first thing in `main`, before any
    /// thread or task exists, so every thread inherits the mask; a thread that leaves them unblocked
    /// takes them instead of the watcher (SIGCHLD is then lost, SIGHUP kills the process).
    public static func blockHandledSignals() { block(handledSignals) }

    /// Blocks `signals` in the calling thread (and the threads it creates afterwards).
    public static func block(_ signals: [Int32]) {
        var set = signalSet(signals)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Starts the watcher thread; once per process. `signals` is a subset of `handledSignals`
    /// (tests leave out SIGTERM/SIGINT so the test runner keeps its own). The watcher thread has
    /// them blocked from its start even if the caller did not block them. With a `receiver`, the
    /// events go to it on the watcher's thread (it must not block: it holds up the reaping).
    @discardableResult
    public static func start(signals: [Int32] = handledSignals,
                             receiver: EventSink<SignalEvent>? = nil) throws(SystemError) -> SignalWatcher {
        precondition(signals.allSatisfy(handledSignals.contains), "SignalWatcher handles only \(handledSignals)")
        precondition(!started.exchange(true, ordering: .relaxed), "SignalWatcher.start called twice")
        let (stream, sink) = receiver.map { (EventSink<SignalEvent>.none, $0) } ?? EventSink.stream()
        let watcher = SignalWatcher(events: stream)
        // The new thread inherits the creator's mask: block the signals around its creation, so
        // it holds them blocked from its first instruction and none sent after start() escapes it.
        var set = signalSet(signals)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &set, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        try ReaderThread.start(name: "vpnsup-signals") { [watcher] in
            var set = signalSet(signals)
            watcher.thread.withLock { $0 = pthread_self() }
            watcherThreadID.store(currentThreadID(), ordering: .relaxed)
            while true {
                var number: Int32 = 0
                guard sigwait(&set, &number) == 0 else { continue }
                if number == SIGCHLD {
                    reapAll { _ = sink.deliver(.childExited(pid: $0, status: $1)) }
                } else if let event = event(for: number) {
                    _ = sink.deliver(event)
                }
            }
        }
        return watcher
    }

    private init(events: AsyncStream<SignalEvent>) { self.events = events }

    /// Sends `signal` to the watcher thread alone. For tests: in a test runner, other threads do
    /// not block the signals and could take a process-wide one.
    func raiseOnWatcherThread(_ signal: Int32) {
        pthread_kill(runningThread(), signal)
    }

    /// The watcher thread, once it runs. It records itself as its first step; this waits out that
    /// instant (tests only).
    func runningThread() -> pthread_t {
        while true {
            if let thread = thread.withLock({ $0 }) { return thread }
            sched_yield()
        }
    }

    /// Threads of this process, besides the watcher's own, that do not block all of `signals`
    /// (from /proc/self/task/*/status): empty when `blockHandledSignals()` ran early enough.
    /// For a start-up self-check.
    public static func threadsNotBlocking(_ signals: [Int32] = handledSignals) -> [Int32] {
        let wanted = signals.filter { (1...64).contains($0) }.reduce(UInt64(0)) { $0 | (1 << UInt64($1 - 1)) }
        guard let directory = opendir("/proc/self/task") else { return [] }
        defer { closedir(directory) }
        var result: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let tid = Int32(name), tid != watcherThreadID.load(ordering: .relaxed) else { continue }
            // No status: the thread ended meanwhile.
            if let blocked = blockedMask(thread: tid), blocked & wanted != wanted { result.append(tid) }
        }
        return result.sorted()
    }

    /// gettid(2) is not in Swift's Glibc module; /proc/thread-self links to `<pid>/task/<tid>`.
    private static func currentThreadID() -> Int32 {
        var buffer = [CChar](repeating: 0, count: 64)
        let count = readlink("/proc/thread-self", &buffer, buffer.count - 1)
        guard count > 0 else { return 0 }
        let link = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return link.split(separator: "/").last.flatMap { Int32($0) } ?? 0
    }

    private static func blockedMask(thread: Int32) -> UInt64? {
        guard let fd = try? retryingInterrupts("open", { open("/proc/self/task/\(thread)/status", O_RDONLY | O_CLOEXEC) }) else {
            return nil
        }
        let file = OwnedDescriptor(fd)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while let count = try? retryingInterrupts("read", { chunk.withUnsafeMutableBytes { read(file.rawValue, $0.baseAddress, $0.count) } }),
              count > 0 {
            bytes += chunk[0..<count]
        }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("SigBlk:") {
            return UInt64(line.dropFirst("SigBlk:".count).drop { $0 == "\t" || $0 == " " }, radix: 16)
        }
        return nil
    }

    private static func signalSet(_ signals: [Int32]) -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in signals { sigaddset(&set, signal) }
        return set
    }

    /// The event for a signal other than SIGCHLD.
    static func event(for signal: Int32) -> SignalEvent? {
        switch signal {
        case SIGHUP: .reload
        case SIGTERM, SIGINT: .terminate(signal)
        default: nil
        }
    }

    /// Reaps until no exited child is left (0: some still run; ECHILD: none at all).
    private static func reapAll(_ report: (Int32, ExitStatus) -> Void) {
        var status: Int32 = 0
        while let pid = try? retryingInterrupts("waitpid", { waitpid(-1, &status, WNOHANG) }), pid > 0 {
            if let exit = ExitStatus(waitStatus: status) { report(pid, exit) }
        }
    }

}
