import Dispatch
import Synchronization
import SystemSupport

/// A thread of its own that runs what it is handed, one piece at a time, in order: for blocking
/// work that recurs every few seconds (the DNS probe, WireGuard's handshake reads), so that each
/// piece costs a wake-up instead of a thread created and torn down (clone3 and the new thread's
/// set-up were most of the effects' CPU with the probe on). The thread starts with the first
/// piece and, like the effects' own, stays for the rest of the process.
final class WorkerThread: Sendable {
    typealias Work = @Sendable () -> Void

    private let name: String
    private let queue = Mutex<(started: Bool, work: [Work])>((false, []))
    private let available = DispatchSemaphore(value: 0)

    init(name: String) { self.name = name }

    /// Queues `work`; throws only when the thread could not be started (then `work` never runs).
    func run(_ work: @escaping Work) throws(SystemError) {
        let start = queue.withLock { queue in
            queue.work.append(work)
            defer { queue.started = true }
            return !queue.started
        }
        if start {
            do {
                try ReaderThread.start(name: name) { [self] in serve() }
            } catch {
                // Nothing ran: the next call tries again.
                queue.withLock { $0 = (false, []) }
                throw error
            }
        }
        available.signal()
    }

    private func serve() -> Never {
        while true {
            available.wait()
            let work = queue.withLock { $0.work.removeFirst() }
            work()
        }
    }
}
