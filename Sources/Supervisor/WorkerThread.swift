import Dispatch
import Synchronization
import SystemSupport

/// A thread of its own that runs what it is handed, one piece at a time, in order: for blocking
/// work that recurs every few seconds (the DNS probe, WireGuard's handshake reads), so that each
/// piece costs a wake-up instead of a thread created and torn down (clone3 and the new thread's
/// set-up were most of the effects' CPU with the probe on). The thread starts with `start()` or
/// the first piece, whichever comes first, and like the effects' own stays for the rest of the
/// process.
final class WorkerThread: Sendable {
    typealias Work = @Sendable () -> Void

    private let name: String
    private let queue = Mutex<(started: Bool, work: [Work])>((false, []))
    private let available = DispatchSemaphore(value: 0)

    init(name: String) { self.name = name }

    /// Starts the thread now, if it has not been started.
    func start() throws(SystemError) {
        try startIfNeeded(queueing: nil)
    }

    /// Queues `work`; throws only when the thread could not be started (then `work` never runs).
    func run(_ work: @escaping Work) throws(SystemError) {
        try startIfNeeded(queueing: work)
        available.signal()
    }

    private func startIfNeeded(queueing work: Work?) throws(SystemError) {
        let start = queue.withLock { queue in
            if let work { queue.work.append(work) }
            defer { queue.started = true }
            return !queue.started
        }
        guard start else { return }
        do {
            try ReaderThread.start(name: name) { [self] in serve() }
        } catch {
            // Nothing ran: the next call tries again.
            queue.withLock { $0 = (false, []) }
            throw error
        }
    }

    private func serve() -> Never {
        while true {
            available.wait()
            let work = queue.withLock { $0.work.removeFirst() }
            work()
        }
    }
}
